"""The Hugging Face fine-tuning fronts (trainer/train_hf_lora.py, train_hf_full.py, train_hf_parallel_lora.py)
on tiny random Qwen2, Llama and Qwen3 folders: each runs 3 steps and resumes to the same losses and weights,
writes the seeds' output names, and its outputs load back (PEFT onto the plain base, load_parallel_model with
no training flags, from_pretrained of a full folder); a batch of two samples is exactly two batches of one;
the unit cache (--parallel_cache_dir) gives the same data as the records and is rebuilt whenever the data,
tokenizer or a setting changes; FSDP2 (2 processes, gloo) gives DDP's losses and saves whole weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_hf, load_hf, tiny_corpus

from model.loading import load_parallel_model
from model.model_lora import lora_parameters, read_lora
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import ParallelPretrainDataset, ParallelSFTDataset
from parallel_data.unit_cache import open_unit_cache
from trainer import train_hf_full, train_hf_lora, train_hf_parallel_lora
from trainer.loss import CrossEntropyLoss

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def hf(tmp_path_factory, tiny_tokenizer):
    """Tiny model folders (with the tiny tokenizer saved in them) and the data files."""
    d = tmp_path_factory.mktemp("hf")
    out = {}
    for arch in ("qwen2", "llama", "qwen3"):
        build_tiny_hf(arch, d / arch, vocab_size=len(tiny_tokenizer))
        tiny_tokenizer.save_pretrained(str(d / arch))
        out[arch] = str(d / arch)
    texts = tiny_corpus(60, seed=3)
    grouped = [{"main": texts[i], "branches": texts[i + 1:i + 4]} for i in range(0, 40, 4)] + \
        [{"text": t} for t in texts[40:]]
    out["sft"] = write_jsonl(d / "sft.jsonl", short_sft(40))
    out["text"] = write_jsonl(d / "text.jsonl", [{"text": t} for t in texts])
    out["grouped"] = write_jsonl(d / "grouped.jsonl", grouped)
    return out


def short_sft(n):
    """Short conversations (the tiny tokenizer spends many tokens per word), some with two turns."""
    out = []
    for i in range(n):
        conv = [{"role": "user", "content": f"What is {i} plus {i % 7}?"},
                {"role": "assistant", "content": f"{i} plus {i % 7} equals {i + i % 7}."}]
        if i % 3 == 0:
            conv += [{"role": "user", "content": "And minus one?"}, {"role": "assistant", "content": f"{i + i % 7 - 1}"}]
        out.append({"conversations": conv})
    return out


def metrics(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def losses(path):
    return {m["step"]: m["loss"] for m in metrics(path) if "loss" in m and "summary" not in m}


COMMON = ["--batch_size", "2", "--batch_by_samples", "--max_seq_len", "64", "--max_steps", "3", "--log_interval", "1",
          "--save_interval", "2", "--learning_rate", "1e-3", "--num_workers", "0"]


def lora_args(hf, out, *extra):
    return ["--base_model", hf["qwen2"], "--data_path", hf["sft"], "--data_mode", "parallel_sft",
            "--max_branches_per_sample", "3", "--min_branches_per_sample", "1", "--branch_stride", "512",
            "--align_to", "right", "--rope_2d_ratio", "0.5", "--lora_rank", "4", "--out_dir", str(out), *COMMON,
            "--max_seq_len", "96",
            *extra]


def test_lora_front_resumes_exactly_and_its_adapter_loads_back(hf, tmp_path):
    from peft import PeftModel

    assert train_hf_lora.main(lora_args(hf, tmp_path / "full")) == 0
    lora = tmp_path / "full" / "lora"
    names = {p.name for p in lora.iterdir()}
    assert {"hf_lora_hf.pth", "hf_lora_hf_step2.pth", "hf_lora_hf_step2", "hf_lora_hf_final.pth",
            "hf_lora_hf_final"} <= names
    full = losses(lora / "hf_lora_hf_metrics.jsonl")
    assert sorted(full) == [1, 2, 3]

    split = tmp_path / "split"
    assert train_hf_lora.main(lora_args(hf, split, "--stop_after_steps", "2")) == 0
    assert train_hf_lora.main(lora_args(hf, split, "--resume")) == 0
    assert losses(split / "lora" / "hf_lora_hf_metrics.jsonl") == full  # bit-identical trajectory
    a = read_lora(lora / "hf_lora_hf_final.pth").state_dict
    b = read_lora(split / "lora" / "hf_lora_hf_final.pth").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("gate_proj.lora_B.weight") for k in a)  # every Linear of the blocks, MLP included
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # it trained

    # no training flag repeated: the adapter carries ratio 0.5 and stride 512
    loaded = load_parallel_model(hf_base_model=hf["qwen2"], lora_path=str(lora / "hf_lora_hf_final.pth"))
    assert (loaded.rope_2d_ratio, loaded.branch_stride) == (0.5, 512)
    folder = load_parallel_model(hf_base_model=hf["qwen2"], lora_path=str(lora / "hf_lora_hf_final")).model
    peft = PeftModel.from_pretrained(load_hf(hf["qwen2"]), str(lora / "hf_lora_hf_final")).eval()
    ids = torch.randint(3, 400, (2, 11))
    with torch.no_grad():  # one branch at coordinate 0: the patched model is the plain one
        ref = loaded.model(ids).logits
        assert torch.equal(folder(ids).logits, ref)
        assert torch.allclose(peft(ids).logits, ref, atol=1e-5)


def full_args(hf, out, *extra):
    return ["--base_model", hf["llama"], "--data_path", hf["text"], "--branches_per_sample", "2",
            "--rope_2d_ratio", "0.25", "--branch_stride", "64", "--out_dir", str(out), *COMMON, *extra]


def test_full_front_resumes_exactly_and_writes_hf_folders(hf, tmp_path):
    from transformers import AutoModelForCausalLM

    assert train_hf_full.main(full_args(hf, tmp_path / "a")) == 0
    full = tmp_path / "a" / "full"
    assert {"full_hf_full.pth", "full_hf_full_step2", "full_hf_full_final"} <= {p.name for p in full.iterdir()}
    ref_losses = losses(full / "full_hf_full_metrics.jsonl")
    assert sorted(ref_losses) == [1, 2, 3]
    assert train_hf_full.main(full_args(hf, tmp_path / "b", "--stop_after_steps", "1")) == 0
    assert train_hf_full.main(full_args(hf, tmp_path / "b", "--resume")) == 0
    assert losses(tmp_path / "b" / "full" / "full_hf_full_metrics.jsonl") == ref_losses

    final = full / "full_hf_full_final"
    plain = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    loaded = load_parallel_model(model_path=str(final))
    assert (loaded.rope_2d_ratio, loaded.branch_stride) == (0.25, 64)  # re-patched from config.parallelmind
    base, resumed = load_hf(hf["llama"]), AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "b" / "full" / "full_hf_full_final"))
    sd, sd2 = plain.state_dict(), resumed.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not torch.equal(sd["model.layers.0.mlp.up_proj.weight"], base.state_dict()["model.layers.0.mlp.up_proj.weight"])
    ids = torch.randint(3, 400, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, plain(ids).logits)


def test_parallel_lora_front_uses_the_seed_names_and_grouped_records(hf, tmp_path):
    args = ["--base_model", hf["qwen3"], "--data_path", hf["grouped"], "--branches_per_sample", "4", "--lora_rank",
            "2", "--out_dir", str(tmp_path), *COMMON]
    assert train_hf_parallel_lora.main(args) == 0
    lora = tmp_path / "lora"
    assert {"hf_parallel_lora_step2.pth", "hf_parallel_lora_final.pth", "hf_parallel_lora_final"} <= \
        {p.name for p in lora.iterdir()}
    settings = read_lora(lora / "hf_parallel_lora_final.pth").settings
    assert settings["branch_stride"] == 128 and settings["rope_2d_ratio"] == 0.5  # seed 002's defaults
    # --no_patch_rope: the plain model with each token's time as its position; the adapter says so
    assert train_hf_parallel_lora.main([*args, "--no_patch_rope", "--lora_name", "plain", "--max_steps", "1"]) == 0
    assert read_lora(lora / "plain_final.pth").settings == {"model_type": "qwen3", "patch_rope": False}


def test_batch_of_two_samples_is_two_batches_of_one(hf, tiny_tokenizer):
    """Padding, positions and masks of a batch keep its samples apart: loss sums and targets add up."""
    from parallel.rope2d import patch_model_with_interleaved_2d_rope

    units = list(ParallelSFTDataset(tiny_tokenizer, data_path=hf["sft"]).all_units())
    samples = [{"branches": units[0:3]}, {"branches": units[3:4]}, {"branches": units[4:6]}]
    model = load_hf(hf["qwen2"])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, branch_stride=32)
    loss_fn = CrossEntropyLoss("columnar")
    collate = ParallelCollator(tiny_tokenizer, branch_stride=32, align_to="right").collate
    with torch.no_grad():
        together = loss_fn(model, collate(samples))
        alone = [loss_fn(model, collate([s])) for s in samples]
    assert together.targets == sum(a.targets for a in alone)
    assert torch.allclose(together.loss, sum(a.loss for a in alone), rtol=1e-5)
    # the targets of each branch are its answers: the assistant turns only
    batch = collate(samples[:1])
    records = [json.loads(x) for x in Path(hf["sft"]).read_text().splitlines()[:3]]
    for b, rec in enumerate(records):
        labels = batch["labels"][0][batch["branch_ids"][0] == b + 1]  # branch ids start at 1 (0: the main)
        answers = "".join(m["content"] + "<|im_end|>" for m in rec["conversations"] if m["role"] == "assistant")
        assert tiny_tokenizer.decode(labels[labels != -100].tolist()) == answers


def test_unit_cache_serves_the_same_units_and_is_never_stale(hf, tiny_tokenizer, tmp_path, tiny_tokenizer_dir):
    from model.tokenizer import load_tokenizer

    data = tmp_path / "text.jsonl"
    data.write_text(Path(hf["text"]).read_text())
    cache = tmp_path / "cache"

    def dataset(tok=tiny_tokenizer, **kw):
        return ParallelPretrainDataset(tok, data_path=str(data), **{"max_seq_len": 64, **kw})

    ref = list(dataset().all_units())
    first = dataset()
    c1 = open_unit_cache(first, cache)
    assert list(first.all_units()) == ref
    again = dataset()
    c2 = open_unit_cache(again, cache)
    assert c2.folder == c1.folder and list(again.all_units()) == ref
    assert len(list(cache.iterdir())) == 1
    # any change gives another entry: a setting, the tokenizer, the data file
    open_unit_cache(dataset(max_seq_len=32), cache)
    tok2 = load_tokenizer(tiny_tokenizer_dir)
    tok2.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    open_unit_cache(dataset(tok2), cache)
    assert len(list(cache.iterdir())) == 3
    with open(data, "a") as f:
        f.write(json.dumps({"text": "one more record at the end"}) + "\n")
    changed = dataset()
    c4 = open_unit_cache(changed, cache)
    assert c4.folder not in {c1.folder} and len(list(cache.iterdir())) == 4
    assert list(changed.all_units())[-1] == list(dataset().all_units())[-1]


def test_cached_run_trains_on_the_same_batches(hf, tmp_path, capfd):
    cache = str(tmp_path / "cache")
    assert train_hf_lora.main(lora_args(hf, tmp_path / "plain", "--max_steps", "2")) == 0
    capfd.readouterr()
    runs = {"c1": ([], "building (no entry for this data"), "c2": ([], "loaded from the unit cache"),
            "c3": (["--rebuild_parallel_cache"], "rebuilding (--rebuild_parallel_cache)")}
    for run, (extra, said) in runs.items():
        assert train_hf_lora.main(lora_args(hf, tmp_path / run, "--max_steps", "2", "--parallel_cache_dir", cache,
                                            *extra)) == 0
        assert said in capfd.readouterr().err
    ref = losses(tmp_path / "plain" / "lora" / "hf_lora_hf_metrics.jsonl")
    for run in ("c1", "c2", "c3"):
        assert losses(tmp_path / run / "lora" / "hf_lora_hf_metrics.jsonl") == ref


def _torchrun(args, script):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_fsdp_full_equals_ddp_and_resumes_whole(hf, tmp_path):
    from safetensors.torch import load_file

    _torchrun([*full_args(hf, tmp_path / "ddp"), "--ddp"], "trainer/train_hf_full.py")
    _torchrun([*full_args(hf, tmp_path / "fsdp", "--stop_after_steps", "2"), "--ddp", "--fsdp"],
              "trainer/train_hf_full.py")
    r = _torchrun([*full_args(hf, tmp_path / "fsdp", "--resume"), "--ddp", "--fsdp"], "trainer/train_hf_full.py")
    assert "FSDP: " in r.stderr
    ddp, fsdp = (losses(tmp_path / k / "full" / "full_hf_full_metrics.jsonl") for k in ("ddp", "fsdp"))
    assert sorted(ddp) == sorted(fsdp) == [1, 2, 3]
    assert all(abs(ddp[s] - fsdp[s]) <= 1e-5 * abs(ddp[s]) for s in ddp)
    a = load_file(str(tmp_path / "ddp" / "full" / "full_hf_full_final" / "model.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "full" / "full_hf_full_final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)  # whole, not one rank's shard
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_fsdp_lora_saves_the_whole_adapter(hf, tmp_path):
    for kind, extra in (("ddp", []), ("fsdp", ["--fsdp"])):
        _torchrun([*lora_args(hf, tmp_path / kind, "--max_steps", "2"), "--ddp", *extra], "trainer/train_hf_lora.py")
    ddp, fsdp = (losses(tmp_path / k / "lora" / "hf_lora_hf_metrics.jsonl") for k in ("ddp", "fsdp"))
    assert sorted(ddp) == [1, 2] and all(abs(ddp[s] - fsdp[s]) <= 1e-5 * abs(ddp[s]) for s in ddp)
    a = read_lora(tmp_path / "ddp" / "lora" / "hf_lora_hf_final.pth").state_dict
    b = read_lora(tmp_path / "fsdp" / "lora" / "hf_lora_hf_final.pth").state_dict
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    model = load_parallel_model(hf_base_model=hf["qwen2"],
                                lora_path=str(tmp_path / "fsdp" / "lora" / "hf_lora_hf_final")).model
    assert len(list(lora_parameters(model))) == len(a)


def test_entry_points_run_as_file_and_module():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in ([sys.executable, "trainer/train_hf_lora.py", "--help"],
                [sys.executable, "-m", "trainer.train_hf_full", "--help"],
                [sys.executable, "-m", "trainer.train_hf_parallel_lora", "--help"]):
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "--base_model" in r.stdout and "--parallel_cache_dir" in r.stdout
