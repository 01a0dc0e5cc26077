"""Whole trainer runs on CPU with a tiny config: resume exactness, DDP, strict warm starts, wandb, signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from parallel_data.demo.corpus import build_pretrain, build_sft
from trainer import train_full_sft, train_pretrain

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--num_key_value_heads", "2"]


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {"pretrain": write_jsonl(d / "pretrain.jsonl", [{"text": t} for t in build_pretrain(7, 120)]),
            "sft": write_jsonl(d / "sft.jsonl", build_sft(7, 60))}


def metrics(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def losses(path):
    return {m["step"]: m["loss"] for m in metrics(path) if "loss" in m and "summary" not in m}


def pretrain_args(data, out, *extra):
    return [*TINY, "--data_path", data["pretrain"], "--out_dir", str(out), "--batch_size", "3", "--batch_by_samples",
            "--max_branches_per_sample", "4", "--max_seq_len", "96", "--max_steps", "3", "--log_interval", "1",
            "--save_interval", "100", "--num_workers", "0", "--learning_rate", "1e-3", *extra]


def test_pretrain_resume_continues_the_loss_trajectory_exactly(data, tmp_path):
    assert train_pretrain.main(pretrain_args(data, tmp_path / "full")) == 0
    full = losses(tmp_path / "full" / "pretrain_64_metrics.jsonl")
    assert sorted(full) == [1, 2, 3]

    out = tmp_path / "split"
    assert train_pretrain.main(pretrain_args(data, out, "--stop_after_steps", "2")) == 0
    assert sorted(losses(out / "pretrain_64_metrics.jsonl")) == [1, 2]
    assert train_pretrain.main(pretrain_args(data, out, "--resume")) == 0
    resumed = losses(out / "pretrain_64_metrics.jsonl")
    assert resumed == full  # bit-identical losses at steps 1, 2 and 3
    a = torch.load(tmp_path / "full" / "pretrain_64.pth", weights_only=True)["model_state_dict"]
    b = torch.load(out / "pretrain_64.pth", weights_only=True)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_resume_with_a_dataloader_worker(data, tmp_path):
    args = pretrain_args(data, tmp_path / "w")
    args[args.index("--num_workers") + 1] = "1"
    assert train_pretrain.main([*args, "--stop_after_steps", "1"]) == 0
    assert train_pretrain.main([*args, "--resume"]) == 0
    ref_args = list(args)
    ref_args[ref_args.index("--out_dir") + 1] = str(tmp_path / "ref")
    assert train_pretrain.main(ref_args) == 0
    assert losses(tmp_path / "w" / "pretrain_64_metrics.jsonl") == losses(tmp_path / "ref" / "pretrain_64_metrics.jsonl")


def sft_args(data, out, init, *extra):
    return ["--data_path", data["sft"], "--out_dir", str(out), "--init_weight", str(init), "--batch_size", "2",
            "--batch_by_samples", "--max_branches_per_sample", "3", "--max_seq_len", "200", "--max_steps", "3",
            "--log_interval", "1", "--num_workers", "0", "--learning_rate", "1e-3", *extra]


def test_sft_loads_pretrain_strictly_and_resumes_exactly(data, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert train_pretrain.main(pretrain_args(data, pre)) == 0
    init = pre / "pretrain_64.pth"
    assert train_full_sft.main(sft_args(data, tmp_path / "full", init)) == 0
    full = losses(tmp_path / "full" / "full_sft_64_metrics.jsonl")
    out = tmp_path / "split"
    assert train_full_sft.main(sft_args(data, out, init, "--stop_after_steps", "2")) == 0
    assert train_full_sft.main(sft_args(data, out, init, "--resume")) == 0
    assert losses(out / "full_sft_64_metrics.jsonl") == full
    # the warm start really loaded the weights: one step at learning rate 0 keeps them bit-identical
    frozen = tmp_path / "frozen"
    assert train_full_sft.main(sft_args(data, frozen, init, "--learning_rate", "0", "--max_steps", "1")) == 0
    a = torch.load(init, weights_only=True)["model_state_dict"]
    b = torch.load(frozen / "full_sft_64.pth", weights_only=True)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # default: {out_dir}/pretrain_{hidden}.pth
    assert train_full_sft.main(sft_args(data, pre, init)[:6] + sft_args(data, pre, init)[8:]) == 0
    assert train_full_sft.main(sft_args(data, tmp_path / "x", init, "--hidden_size", "128")) == 2
    assert "trained with hidden_size=64" in capsys.readouterr().err
    assert train_full_sft.main(sft_args(data, tmp_path / "x", tmp_path / "missing.pth")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_validation_intervals(data, tmp_path, capsys):
    args = pretrain_args(data, tmp_path, "--val_samples", "10", "--val_interval", "2", "--val_branches_per_sample", "2")
    assert train_pretrain.main(args) == 0
    recs = metrics(tmp_path / "pretrain_64_metrics.jsonl")
    vals = [r for r in recs if "val_loss" in r and not r.get("summary")]
    assert [v["step"] for v in vals] == [2, 3] and vals[-1].get("final")
    assert all(v["val_loss"] > 0 for v in vals)
    assert train_pretrain.main(pretrain_args(data, tmp_path / "y", "--val_interval", "2")) == 2
    assert "--val_samples is 0" in capsys.readouterr().err


def test_wandb_offline_and_missing_key(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert train_pretrain.main(pretrain_args(data, tmp_path, "--use_wandb", "--wandb_run_name", "t")) == 0
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    t0 = time.time()
    assert train_pretrain.main(pretrain_args(data, tmp_path / "z", "--use_wandb")) == 2
    assert "no W&B API key" in capsys.readouterr().err
    assert time.time() - t0 < 5 and not (tmp_path / "z" / "pretrain_64.pth").exists()


def _run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(data, tmp_path):
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "trainer/train_pretrain.py", *pretrain_args(data, tmp_path), "--ddp"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "weights identical on all 2 ranks" in r.stderr
    assert sorted(losses(tmp_path / "pretrain_64_metrics.jsonl")) == [1, 2, 3]  # both ranks had data


def test_entry_points_run_as_file_and_module():
    for cmd in ([sys.executable, "trainer/train_pretrain.py", "--help"],
                [sys.executable, "-m", "trainer.train_full_sft", "--help"]):
        r = _run(cmd)
        assert r.returncode == 0 and "--max_branches_per_sample" in r.stdout and "--hf-dataset" in r.stdout


@pytest.mark.slow
def test_sigint_saves_a_resumable_checkpoint_and_exits_130(data, tmp_path):
    # Ctrl-C in a terminal reaches the whole process group (DataLoader worker included), twice here
    args = pretrain_args(data, tmp_path)
    args[args.index("--max_steps") + 1] = "400"
    args[args.index("--num_workers") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "trainer/train_pretrain.py", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mfile = tmp_path / "pretrain_64_metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (mfile.exists() and mfile.read_text().count("\n") >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    # on a fast machine the run can finish before the second Ctrl-C; it must still exit 130, one line, saved
    # (tests/trainer/test_guarantees.py sends the second one deterministically during the save)
    assert "Traceback" not in err and "stopping at the next step boundary" in err
    st = torch.load(tmp_path / "pretrain_64_resume.pth", weights_only=True)
    meta = torch.load(tmp_path / "pretrain_64.pth", weights_only=True)["meta"]
    assert 2 <= st["train_state"]["step"] < 400 and "continue with --resume" in err
    assert st["save_id"] == meta["save_id"] and meta["step"] == st["train_state"]["step"]


def test_hub_style_dataset_with_packing_and_max_total_tokens(data, tmp_path):
    # --hf-dataset accepts a local file (read through `datasets`); --chunk-length packs token ids
    args = [*TINY, "--hf-dataset", data["pretrain"], "--max-samples", "40", "--chunk-length", "24",
            "--out_dir", str(tmp_path), "--batch_size", "2", "--batch_by_samples", "--max_branches_per_sample", "4",
            "--max_total_tokens", "64", "--log_interval", "1", "--num_workers", "0"]
    assert train_pretrain.main(args) == 0
    recs = metrics(tmp_path / "pretrain_64_metrics.jsonl")
    summary = recs[-1]
    assert summary["summary"] and summary["data"]["packed_chunks"] == 40  # --max-samples counts chunks
    assert summary["texts_seen"] == 40 and summary["step"] == summary["total_steps"]  # the estimate was exact
    assert summary["truncated_tokens"] > 0  # samples of 3-4 chunks of 24 tokens exceed 64: tails cut, counted


@pytest.mark.slow
def test_resume_with_a_different_world_size(data, tmp_path):
    args = pretrain_args(data, tmp_path)
    args[args.index("--max_steps") + 1] = "6"
    assert train_pretrain.main([*args, "--stop_after_steps", "2"]) == 0
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "trainer/train_pretrain.py", *args, "--resume", "--ddp"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming with 2 data streams instead of 1" in r.stderr
    assert "weights identical on all 2 ranks" in r.stderr
    steps = sorted(losses(tmp_path / "pretrain_64_metrics.jsonl"))
    assert steps[:2] == [1, 2] and steps[-1] > 2  # continued after the saved step


def test_each_checkpoint_file_is_read_once_per_load(data, tmp_path, monkeypatch):
    pre = tmp_path / "pre"
    assert train_pretrain.main(pretrain_args(data, pre, "--max_steps", "1")) == 0
    reads = []
    real_load = torch.load

    def counting_load(f, *a, **kw):
        reads.append(Path(f).name)
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", counting_load)
    out = tmp_path / "sft"
    # warm start: the stem (its config), the tokenizer and the weights all come from one read
    assert train_full_sft.main(sft_args(data, out, pre / "pretrain_64.pth", "--stop_after_steps", "1")) == 0
    assert reads == ["pretrain_64.pth"]
    reads.clear()
    assert train_full_sft.main(sft_args(data, out, pre / "pretrain_64.pth", "--resume")) == 0
    assert sorted(reads) == ["full_sft_64.pth", "full_sft_64_resume.pth", "pretrain_64.pth"]
