"""The trainers' guarantees: nothing overwritten unasked, one run per output, resume refuses changed runs,
no run without targets, signals save and exit 130/143, a full disk keeps a consistent checkpoint pair."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model.checkpoint as mc
import trainer.engine.checkpointer as ckpt_mod
from parallel_data.demo.corpus import build_pretrain
from trainer import train_pretrain
from trainer.engine.lock import RunLock
from trainer.engine.trainer import Trainer

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--num_key_value_heads", "2"]


def write_jsonl(path, records):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return write_jsonl(d / "pretrain.jsonl", [{"text": t} for t in build_pretrain(11, 60)])


def args_for(data, out, *extra, steps=4):
    return [*TINY, "--data_path", str(data), "--out_dir", str(out), "--batch_size", "3", "--batch_by_samples",
            "--max_branches_per_sample", "3", "--max_seq_len", "64", "--max_steps", str(steps), "--log_interval", "1",
            "--save_interval", "2", "--num_workers", "0", "--learning_rate", "1e-3", *extra]


def losses(out):
    recs = [json.loads(x) for x in (Path(out) / "pretrain_64_metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r and not r.get("summary")}


def weights(out):
    return torch.load(Path(out) / "pretrain_64.pth", weights_only=True)["model_state_dict"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted 4-step run: what every interrupted and resumed run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference")
    assert train_pretrain.main(args_for(corpus, out)) == 0
    return {"losses": losses(out), "weights": weights(out)}


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def refused(rc: int, capsys) -> str:
    """A refused run: exit status 2 and ONE line on stderr; -> the message after "error: "."""
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and "error: " in lines[-1], lines
    return lines[-1].split("error: ", 1)[1]


# --- 1. never overwrite a run unasked; one run per output ----------------------------------------------
def test_an_existing_checkpoint_is_continued_or_replaced_never_silently_overwritten(corpus, reference, tmp_path, capsys):
    assert train_pretrain.main(args_for(corpus, tmp_path, steps=2)) == 0
    before = snapshot(tmp_path)
    assert re.search("already holds pretrain_64.pth.*--resume.*--overwrite",
                     refused(train_pretrain.main(args_for(corpus, tmp_path, steps=1)), capsys))
    assert snapshot(tmp_path) == before  # nothing written, not even the metrics
    assert re.search("give one",
                     refused(train_pretrain.main(args_for(corpus, tmp_path, "--resume", "--overwrite")), capsys))
    assert train_pretrain.main(args_for(corpus, tmp_path, "--overwrite")) == 0
    assert losses(tmp_path) == reference["losses"]
    assert re.search("no checkpoint .* to continue",
                     refused(train_pretrain.main(args_for(corpus, tmp_path / "empty", "--resume")), capsys))


def test_a_second_run_on_the_same_outputs_fails_at_once_naming_the_holder(corpus, tmp_path, capsys):
    tmp_path.mkdir(exist_ok=True)
    held = RunLock(tmp_path / "pretrain_64.lock")
    held.acquire()
    try:
        assert re.search(f"in use: another run \\(pid {os.getpid()} ",
                         refused(train_pretrain.main(args_for(corpus, tmp_path)), capsys))
    finally:
        held.release()
    assert not (tmp_path / "pretrain_64.pth").exists() and not (tmp_path / "pretrain_64.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(corpus, tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / "pretrain_64.lock").write_text(json.dumps({"pid": pid, "host": "h", "started": "then"}))
    assert train_pretrain.main(args_for(corpus, tmp_path, steps=1)) == 0
    assert f"stale lock {tmp_path / 'pretrain_64.lock'} of pid {pid}" in capsys.readouterr().err
    assert not (tmp_path / "pretrain_64.lock").exists()  # released at the end


# --- 2. a resume refuses changed data and settings ---------------------------------------------------
def test_resume_refuses_changed_settings_and_data_unless_overridden(corpus, tmp_path, capsys):
    data = Path(write_jsonl(tmp_path / "d.jsonl", [json.loads(x) for x in Path(corpus).read_text().splitlines()]))
    out = tmp_path / "run"
    assert train_pretrain.main(args_for(data, out, "--stop_after_steps", "2")) == 0
    msg = refused(train_pretrain.main(args_for(data, out, "--resume", "--learning_rate", "0.1", "--batch_size", "4")),
                  capsys)
    assert "batch_size 3 -> 4" in msg and "learning_rate 0.001 -> 0.1" in msg and "\n" not in msg
    with data.open("a") as f:
        f.write(json.dumps({"text": "one more record"}) + "\n")
    assert re.search("data: size",
                     refused(train_pretrain.main(args_for(data, out, "--resume")), capsys))
    assert "--resume_override bogus: not a setting" in refused(
        train_pretrain.main(args_for(data, out, "--resume", "--resume_override", "bogus")), capsys)
    assert losses(out).keys() == {1, 2}  # none of the refused resumes wrote anything
    capsys.readouterr()
    assert train_pretrain.main(args_for(data, out, "--resume", "--learning_rate", "0.002", "--resume_override",
                                        "learning_rate", "--resume_override", "data")) == 0
    err = capsys.readouterr().err
    assert "learning_rate 0.001 -> 0.002 (accepted by --resume_override)" in err
    assert "data: size" in err and sorted(losses(out)) == [1, 2, 3, 4]


# --- 3. no targets: an error, never a random-weights checkpoint or a nan ----------------------------
def test_a_run_without_any_target_is_an_error_and_writes_no_checkpoint(tmp_path, capsys):
    no_targets = write_jsonl(tmp_path / "offset.jsonl", [{"text": t, "answer_offset": 10_000}
                                                         for t in build_pretrain(3, 30)])
    msg = refused(train_pretrain.main(args_for(no_targets, tmp_path / "a")), capsys)
    assert "no target token" in msg and msg.startswith(no_targets)
    assert not (tmp_path / "a" / "pretrain_64.pth").exists()
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n   \n")
    assert re.search("no training data|has no records",
                     refused(train_pretrain.main(args_for(blank, tmp_path / "b", steps=0)), capsys))
    assert re.search("no training data|has no records",
                     refused(train_pretrain.main(args_for(blank, tmp_path / "c", steps=3)), capsys))
    assert not list(tmp_path.glob("*/pretrain_64.pth"))


def test_a_validation_set_without_targets_is_an_error_before_training(tmp_path, capsys):
    from parallel_data.sources import LocalJsonlSource

    # answer_offset 10 leaves targets, 99 (past max_seq_len) none; equal widths keep the seeded split the same
    texts = build_pretrain(5, 40)
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"text": t, "answer_offset": 10} for t in texts])
    held_out = {line for _, line in LocalJsonlSource(path, seed=1337, val_samples=6).iter_val()}
    write_jsonl(path, [{"text": t, "answer_offset": 99 if i + 1 in held_out else 10} for i, t in enumerate(texts)])
    assert re.search(r"validation set \(--val_samples 6 held-out records\) has no target",
                     refused(train_pretrain.main(args_for(path, tmp_path / "out", "--val_samples", "6",
                                                          "--val_interval", "1")), capsys))
    assert not (tmp_path / "out" / "pretrain_64.pth").exists()
    assert not (tmp_path / "out" / "pretrain_64_metrics.jsonl").exists()


def test_evaluate_loss_refuses_batches_without_targets():
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from trainer.loss import evaluate_loss

    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               num_key_value_heads=1, vocab_size=64))
    ids = torch.randint(3, 60, (1, 6))
    t = torch.arange(6)[None]
    batch = {"input_ids": ids, "token_mask": torch.ones(1, 6, dtype=torch.bool), "labels": torch.full((1, 6), -100),
             "time_ids": t, "branch_ids": torch.ones(1, 6, dtype=torch.long),
             "position_ids": torch.stack([torch.zeros_like(t), t, t], -1), "num_label_tokens": 0}
    with pytest.raises(ValueError, match="no target tokens in the 1 evaluated batches"):
        evaluate_loss(model, [batch], torch.device("cpu"), mask_mode="columnar")
    batch["labels"] = torch.cat([ids[:, 1:], torch.full((1, 1), -100)], 1)
    with torch.no_grad():
        model.model.embed_tokens.weight[0, 0] = float("nan")
        model.model.embed_tokens.weight[ids[0, 0], 0] = float("nan")
    with pytest.raises(ValueError, match="the evaluated loss is nan over 5 target tokens"):
        evaluate_loss(model, [batch], torch.device("cpu"), mask_mode="columnar")


# --- 7. signals: save, then exit 130 / 143; a second signal during the save loses nothing ------------
def test_sigterm_saves_and_exits_143_and_the_resume_is_exact(corpus, reference, tmp_path, monkeypatch):
    real_step = Trainer.train_step

    def step_then_signal(self):
        outcome = real_step(self)
        if self.state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return outcome

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert train_pretrain.main(args_for(corpus, tmp_path, "--save_interval", "100")) == 143
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed again
    st = torch.load(tmp_path / "pretrain_64_resume.pth", weights_only=True)
    assert st["train_state"]["step"] == 3  # the flag is read when step 3 starts: step 3 completes, then the save
    assert train_pretrain.main(args_for(corpus, tmp_path, "--resume")) == 0
    assert losses(tmp_path) == reference["losses"] and same_weights(weights(tmp_path), reference["weights"])


def test_a_second_ctrl_c_during_the_save_does_not_lose_it(corpus, reference, tmp_path, monkeypatch):
    real_step, real_write = Trainer.train_step, ckpt_mod.write_torch_file
    calls = []

    def step_then_sigint(self):
        outcome = real_step(self)
        if self.state.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return outcome

    def write_with_sigint(obj, path):
        calls.append(path)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, in the middle of writing the pair
        real_write(obj, path)

    monkeypatch.setattr(Trainer, "train_step", step_then_sigint)
    monkeypatch.setattr(ckpt_mod, "write_torch_file", write_with_sigint)
    assert train_pretrain.main(args_for(corpus, tmp_path, "--save_interval", "100")) == 130
    monkeypatch.undo()
    assert len(calls) == 2  # model file and resume state, both written in full
    st = torch.load(tmp_path / "pretrain_64_resume.pth", weights_only=True)
    meta = torch.load(tmp_path / "pretrain_64.pth", weights_only=True)["meta"]
    assert st["save_id"] == meta["save_id"] and st["train_state"]["step"] == 2
    assert train_pretrain.main(args_for(corpus, tmp_path, "--resume")) == 0
    assert losses(tmp_path) == reference["losses"]


# --- 8. disk full: the disk and the space are named; the previous pair stays consistent ------------------
def test_disk_full_mid_save_names_the_disk_and_keeps_the_previous_pair(corpus, reference, tmp_path, monkeypatch, capsys):
    real_write = mc._RecordingWriter.write
    writes = {"resume": 0}

    def failing_write(self, data):
        # the resume state of the second save (step 4) hits a full disk after its first bytes
        if ".pretrain_64_resume.pth." in self.f.name and writes["resume"] == 1:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        return real_write(self, data)

    real_save = ckpt_mod.Checkpointer.save

    def counting_save(self, payload, resume):
        try:
            real_save(self, payload, resume)
        finally:
            writes["resume"] += 1

    monkeypatch.setattr(mc._RecordingWriter, "write", failing_write)
    monkeypatch.setattr(ckpt_mod.Checkpointer, "save", counting_save)
    msg = refused(train_pretrain.main(args_for(corpus, tmp_path)), capsys)
    monkeypatch.undo()
    assert msg.startswith(f"disk full: writing {tmp_path / 'pretrain_64.pth'} needs about ") and "MiB on the disk " \
        "mounted at" in msg and "free" in msg and "the checkpoint pair of step 2 is intact" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain_64.pth", "pretrain_64_metrics.jsonl",
                                                          "pretrain_64_resume.pth"]  # no temporary files left
    assert torch.load(tmp_path / "pretrain_64_resume.pth", weights_only=True)["train_state"]["step"] == 2
    assert train_pretrain.main(args_for(corpus, tmp_path, "--resume")) == 0
    assert losses(tmp_path) == reference["losses"] and same_weights(weights(tmp_path), reference["weights"])


def test_too_little_space_is_refused_before_writing(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mc, "free_bytes", lambda folder: 1000)
    assert re.search(r"disk full: .* needs about [\d.]+ MiB .* 0.0 MiB free.*no checkpoint was",
                     refused(train_pretrain.main(args_for(corpus, tmp_path, steps=2)), capsys))
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_a_crash_between_the_renames_leaves_a_resumable_pair(corpus, reference, tmp_path, monkeypatch, crash_after):
    """Kill the save of step 4 after each of its renames: --resume always finds a matching pair."""
    real_replace, renames = os.replace, []

    class Crash(BaseException):
        pass

    def replace(src, dst):
        real_replace(src, dst)
        renames.append(dst)
        if len(renames) == 3 + crash_after:  # the step-2 save made 2 renames (no previous resume state yet)
            raise Crash

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(Crash):
        train_pretrain.main(args_for(corpus, tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "pretrain_64_resume.prev.pth").exists()
    assert train_pretrain.main(args_for(corpus, tmp_path, "--resume")) == 0
    assert losses(tmp_path) == reference["losses"] and same_weights(weights(tmp_path), reference["weights"])
    assert not (tmp_path / "pretrain_64_resume.prev.pth").exists()
