"""scripts/parallel_inference_hf_lora.py and scripts/inference_hf_lora.py end to end on tiny local models.

Oracles: with prefix sharing (--branch_stride 0, or --no_patch_rope) every branch must decode exactly as
Hugging Face `generate` decodes "main + branch" alone; an adapter's outputs equal the engine's on the same
adapted model; a 2-process torchrun run writes the same bytes as one process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_hf, load_hf

from model.model_lora import apply_lora, save_lora
from model.tokenizer import load_tokenizer
from parallel.rope2d import patch_model_with_interleaved_2d_rope
from parallel_data.batch_inference import plan_batches, read_records
from scripts import inference_hf_lora, parallel_inference_hf_lora

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = "the quick brown fox lives near the rivers and the mountains"
RECORDS = [
    {"id": "c", "main": CONTEXT, "branches": [" question one", " the answer is", " seven small"]},
    {"branches": ["a lazy dog", "numbers plus minus equals"]},
    *({"text": t} for t in ("seven birds sing", "the answer", "rivers and", "parallel time", "branch context")),
    {"prompt": "mountains numbers"},
]
NEW = 8


def build_model(arch: str, path: Path, tokenizer) -> Path:
    """A tiny random model with an untied, larger head (so greedy outputs vary), saved with the tokenizer."""
    build_tiny_hf(arch, path, vocab_size=len(tokenizer))
    model = load_hf(path)
    model.config.tie_word_embeddings = False
    torch.manual_seed(1)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.5)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("hfinfer")
    return {arch: build_model(arch, root / arch, tiny_tokenizer) for arch in ("qwen2", "llama")}


def make_adapter(base: Path, path: Path, rank: int = 4, **patch):
    """An adapter the way the trainers write it (apply_lora + save_lora), with random B so that it matters.

    `patch`: 2D-RoPE settings to patch the model with first (saved with the adapter); none: a plain model."""
    model = load_hf(base)
    if patch:
        patch_model_with_interleaved_2d_rope(model, **patch)
    apply_lora(model, rank=rank)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_lora(model, path)
    return model.eval()


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_script(*argv) -> int:
    return parallel_inference_hf_lora.main([str(a) for a in argv])


def branch_outputs(records: list[dict]) -> list[tuple[str, str, str]]:
    """(main, branch prompt, output) of every branch of an output file, in order."""
    out = []
    for r in records:
        if "outputs" in r:
            out += [(r.get("main", ""), b, o) for b, o in zip(r["branches"], r["outputs"])]
        else:
            out.append(("", r.get("text", r.get("prompt")), r["output"]))
    return out


@torch.no_grad()
def causal_reference(model, tok, main: str, branch: str, n: int = NEW) -> str:
    """Greedy `generate` of ids(main) + ids(branch) alone, cut at EOS, decoded as the engine decodes."""
    ids = (tok(main, add_special_tokens=False)["input_ids"] if main else []) + \
        tok(branch, add_special_tokens=False)["input_ids"]
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    x = torch.tensor([ids])
    gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                         eos_token_id=eos, pad_token_id=tok.pad_token_id, top_p=None, top_k=None,
                         temperature=None)[0, len(ids):].tolist()
    if gen and gen[-1] in eos:
        gen = gen[:-1]
    return tok.decode(gen, skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("how", [["--branch_stride", "0"], ["--no_patch_rope"]], ids=["stride0", "no_patch_rope"])
def test_prefix_sharing_equals_causal_decoding(models, tiny_tokenizer, tmp_path, arch, how):
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.jsonl"
    assert run_script("--base_model", models[arch], "--data_path", data, "--out_path", out, "--max_new_tokens", NEW,
                      "--max_branches_per_sample", 3, "--min_branches_per_sample", 1, "--batch_size", 4, *how) == 0
    recs = read_jsonl(out)
    assert [r["line"] for r in recs] == list(range(1, len(RECORDS) + 1))
    assert all(r[k] == v for r, src in zip(recs, RECORDS) for k, v in src.items())  # input fields pass through
    model = load_hf(models[arch])
    got = branch_outputs(recs)
    assert len(got) == 3 + 2 + 6 and len({o for _, _, o in got}) > 5  # outputs differ from branch to branch
    for main, branch, text in got:
        assert text == causal_reference(model, tiny_tokenizer, main, branch), (main, branch)
    grouped = [r for r in recs if "output" in r]  # single prompts: where each was decoded
    assert len({(r["sample"], r["branch"]) for r in grouped}) == 6 and max(r["branch"] for r in grouped) <= 2


def test_plan_groups_prompts_and_keeps_samples_whole(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    records = read_records(path)
    assert len(read_records(path, 3)) == 3
    plan = plan_batches(records, batch_size=2, batch_by_samples=True, branches_per_sample=4, min_branches=1,
                        max_branches=3, seed=0)
    assert [s.branches for s in plan.samples if not s.grouped] == [RECORDS[0]["branches"], RECORDS[1]["branches"]]
    grouped = [s for s in plan.samples if s.grouped]
    assert sum(len(s.branches) for s in grouped) == 6 and all(1 <= len(s.branches) <= 3 for s in grouped)
    assert sorted(i for s in grouped for i in s.records) == [2, 3, 4, 5, 6, 7]  # every prompt once
    assert [s.first_branch for s in plan.samples] == [sum(len(t.branches) for t in plan.samples[:i])
                                                      for i in range(len(plan.samples))]
    shards = [plan.shard(r, 3) for r in range(3)]
    assert sorted(s.index for sh in shards for b in sh for s in b) == list(range(len(plan.samples)))
    assert plan.shard(39, 40) == []  # more ranks than batches: a rank may have nothing to do


def test_adapter_settings_are_reapplied_and_checked(models, tiny_tokenizer, tmp_path, capsys):
    from model.loading import load_parallel_model
    from model.parallel_generation import ParallelGenerator

    base = models["qwen2"]
    make_adapter(base, tmp_path / "lora" / "tuned.pth", rank=4, ratio=0.25, branch_stride=64, mask_mode="isolated")
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS[:3])
    out = tmp_path / "out.jsonl"
    common = ["--base_model", base, "--data_path", data, "--max_new_tokens", NEW, "--batch_size", 1,
              "--batch_by_samples"]
    assert run_script(*common, "--lora_path", tmp_path / "lora" / "tuned.pth", "--out_path", out) == 0
    err = capsys.readouterr().err
    assert "ratio=0.25" in err and "mask isolated, branch stride 64" in err and "note:" not in err
    recs = read_jsonl(out)
    # the oracle: the engine on the same adapted model, each sample alone (as --batch_size 1 --batch_by_samples)
    loaded = load_parallel_model(hf_base_model=str(base), lora_path=str(tmp_path / "lora" / "tuned.pth"))
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode="isolated", branch_stride=64)
    plan = plan_batches(read_records(data), batch_size=1, batch_by_samples=True, branches_per_sample=4)
    expect = [b.text for s in plan.samples for b in gen.generate(
        [{**({"main": s.main} if s.main else {}), "branches": s.branches}], max_new_tokens=NEW)[0].branches]
    assert [o for _, _, o in branch_outputs(recs)] == expect
    # the base model with the same settings gives other answers: the adapter is applied
    assert run_script(*common, "--rope_2d_ratio", 0.25, "--branch_stride", 64, "--mask", "isolated",
                      "--out_path", tmp_path / "base.jsonl") == 0
    assert branch_outputs(read_jsonl(tmp_path / "base.jsonl")) != branch_outputs(recs)
    capsys.readouterr()
    for flag, msg in ((["--rope_2d_ratio", 0.5], "trained with rope_2d_ratio=0.25"),
                      (["--mask", "columnar"], "trained with mask_mode='isolated'"),
                      (["--lora_rank", 8], "--lora_rank 8"), (["--no_patch_rope"], "patch_rope")):
        assert run_script(*common, "--lora_path", tmp_path / "lora" / "tuned.pth", "--out_path",
                          tmp_path / "x.jsonl", *flag) == 2, flag
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (flag, err)
    assert not (tmp_path / "x.jsonl").exists()
    # a different stride is honoured with a warning: the outputs are the engine's at that stride
    assert run_script(*common, "--lora_path", tmp_path / "lora" / "tuned.pth", "--out_path", tmp_path / "s.jsonl",
                      "--branch_stride", 96) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "trained with branch_stride=64" in err and "branch stride 96" in err
    gen96 = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode="isolated", branch_stride=96)
    expect96 = [b.text for s in plan.samples for b in gen96.generate(
        [{**({"main": s.main} if s.main else {}), "branches": s.branches}], max_new_tokens=NEW)[0].branches]
    assert [o for _, _, o in branch_outputs(read_jsonl(tmp_path / "s.jsonl"))] == expect96


def test_adapter_of_a_plain_model_decodes_plainly(models, tiny_tokenizer, tmp_path, capsys):
    """An adapter trained without 2D RoPE: loaded as it was trained, every branch == generate of the adapted model."""
    base = models["llama"]
    adapted = make_adapter(base, tmp_path / "plain_lora")  # a PEFT folder
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS[:4])
    out = tmp_path / "out.jsonl"
    assert run_script("--base_model", base, "--lora_path", tmp_path / "plain_lora", "--data_path", data,
                      "--out_path", out, "--max_new_tokens", NEW) == 0
    assert "mask isolated, branch stride 0" in capsys.readouterr().err
    plain = load_hf(base)
    for main, branch, text in branch_outputs(read_jsonl(out)):
        assert text == causal_reference(adapted, tiny_tokenizer, main, branch)
        assert text != causal_reference(plain, tiny_tokenizer, main, branch) or not text


def test_sampling_max_samples_overwrite_and_chat_template(models, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    base = ["--base_model", models["qwen2"], "--data_path", data, "--max_new_tokens", 6, "--branch_stride", 0]
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run_script(*base, "--do_sample", "--temperature", 1.0, "--top_p", 1.0, "--seed", seed,
                          "--out_path", tmp_path / f"{name}.jsonl") == 0
        runs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert runs["a"] == runs["b"] != runs["c"]
    out = tmp_path / "few.jsonl"
    assert run_script(*base, "--max_samples", 2, "--out_path", out) == 0
    assert len(read_jsonl(out)) == 2
    assert run_script(*base, "--max_samples", 3, "--out_path", out) == 2  # exists: kept
    assert len(read_jsonl(out)) == 2
    assert run_script(*base, "--max_samples", 3, "--out_path", out, "--overwrite", "--chat_template") == 0
    assert len(read_jsonl(out)) == 3


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(models, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) == one process, byte for byte: dynamic branch counts, columnar
    decoding with sampling (per-branch seeds), and a plan with fewer batches than ranks."""
    records = [*RECORDS, *({"text": f"the quick {w}"} for w in ("fox", "dog", "birds", "rivers", "time")),
               {"main": "seven small birds", "branches": ["sing", "plus", "answer", "minus"]}]
    data = write_jsonl(tmp_path / "in.jsonl", records)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name, extra in (("dynamic", ["--max_branches_per_sample", "3", "--batch_size", "3", "--do_sample",
                                     "--temperature", "1.0", "--seed", "7"]),
                        ("one_batch", ["--batch_size", "100", "--batch_by_samples", "--mask", "isolated"])):
        common = ["scripts/parallel_inference_hf_lora.py", "--base_model", str(models["llama"]), "--data_path",
                  str(data), "--max_new_tokens", "6", *extra]
        one = subprocess.run([sys.executable, *common, "--out_path", str(tmp_path / f"{name}_1.jsonl")], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert one.returncode == 0, one.stderr[-3000:]
        two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              *common, "--out_path", str(tmp_path / f"{name}_2.jsonl")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert two.returncode == 0, two.stderr[-3000:]
        assert "on 2 process(es)" in two.stderr
        a, b = (tmp_path / f"{name}_1.jsonl").read_bytes(), (tmp_path / f"{name}_2.jsonl").read_bytes()
        assert a == b, name
        recs = read_jsonl(tmp_path / f"{name}_1.jsonl")
        assert [r["line"] for r in recs] == list(range(1, len(records) + 1))  # none lost, none twice, in order


@pytest.mark.slow
def test_test_parallel_inference_sh(models, tmp_path):
    """The seed's quick check, with a tiny model and adapter: 1 process, then 2 processes compared byte for byte."""
    make_adapter(models["qwen2"], tmp_path / "lora.pth", ratio=0.5)
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "check"), "MAX_NEW_TOKENS": "6"}
    proc = subprocess.run(["bash", "scripts/test_parallel_inference.sh", str(models["qwen2"]), str(tmp_path / "lora.pth"),
                           "", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "byte-identical to the 1-process output" in proc.stderr and "passed" in proc.stderr
    assert len(read_jsonl(tmp_path / "check" / "results_2.jsonl")) == 7
    bad = subprocess.run(["bash", "scripts/test_parallel_inference.sh", str(tmp_path / "nope")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


# --- inference_hf_lora.py ----------------------------------------------------------------------------------

def chat_text(tok, messages) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_generate_mode_equals_generate_of_the_chat_prompt(models, capsys):
    tiny_tokenizer = load_tokenizer(models["llama"])
    model = load_hf(models["llama"])
    rc = inference_hf_lora.main(["--base_model", str(models["llama"]), "--mode", "generate", "--prompt",
                                 "the quick fox", "--max_new_tokens", str(NEW)])
    assert rc == 0
    out = capsys.readouterr().out
    prompt = chat_text(tiny_tokenizer, [{"role": "user", "content": "the quick fox"}])
    assert out == causal_reference(model, tiny_tokenizer, "", prompt) + "\n"
    assert inference_hf_lora.main(["--base_model", str(models["llama"]), "--mode", "generate", "--prompt",
                                   "the quick fox", "--max_new_tokens", str(NEW), "--no_chat_template"]) == 0
    assert capsys.readouterr().out == causal_reference(model, tiny_tokenizer, "", "the quick fox") + "\n"


def test_chat_mode_keeps_history_and_resets(models, tmp_path, capsys, monkeypatch):
    # the tokenizer as the script loads it from the model folder: for a qwen2 folder transformers picks
    # Qwen2Tokenizer, whose pre-tokenizer splits digits, so a reply re-tokenised in the history may differ from
    # the fixture tokenizer's ids
    tiny_tokenizer = load_tokenizer(models["qwen2"])
    adapted = make_adapter(models["qwen2"], tmp_path / "chat.pth")
    monkeypatch.setattr(sys, "stdin", io.StringIO("the quick fox\n\nseven birds\n/reset\nthe quick fox\n/exit\nnot read\n"))
    assert inference_hf_lora.main(["--base_model", str(models["qwen2"]), "--lora_path", str(tmp_path / "chat.pth"),
                                   "--mode", "chat", "--max_new_tokens", str(NEW), "--system", "be brief"]) == 0
    out = capsys.readouterr().out
    sys_msg = [{"role": "system", "content": "be brief"}]
    first = causal_reference(adapted, tiny_tokenizer, "", chat_text(tiny_tokenizer, [
        *sys_msg, {"role": "user", "content": "the quick fox"}]))
    second = causal_reference(adapted, tiny_tokenizer, "", chat_text(tiny_tokenizer, [
        *sys_msg, {"role": "user", "content": "the quick fox"}, {"role": "assistant", "content": first},
        {"role": "user", "content": "seven birds"}]))
    # the history is in the second prompt; /reset forgets it; /exit ends the session
    assert out == ("chat: type a message, /reset to forget the conversation, /exit to quit\n"
                   f"assistant> {first}\nassistant> {second}\n(conversation reset)\nassistant> {first}\n")


def test_seed_003_commands(models, tmp_path, capsys):
    """The commands of seed 003 as written, with local paths (and --max_new_tokens, to keep the test short)."""
    make_adapter(models["qwen2"], tmp_path / "out" / "lora" / "qwen2_lora_final.pth", rank=32, ratio=0.5)
    data = write_jsonl(tmp_path / "test_10k.jsonl", [
        {"main": "shared main-branch content", "branches": ["branch 1", "branch 2", "branch 3"]},
        {"main": "the quick fox", "branches": ["seven", "birds"]}, {"branches": ["rivers", "time", "answer"]}])
    short = ["--max_new_tokens", 4]
    # the torchrun command's flags, on one process (2 processes == 1: test_two_processes_write_what_one_process_writes)
    assert run_script("--base_model", models["qwen2"], "--lora_path", tmp_path / "out" / "lora" / "qwen2_lora_final.pth",
                      "--lora_rank", 32, "--rope_2d_ratio", 0.5, "--data_path", data,
                      "--out_path", tmp_path / "out" / "results_10k.jsonl", "--batch_size", 8, "--batch_by_samples",
                      "--max_branches_per_sample", 12, "--min_branches_per_sample", 2, *short) == 0
    assert "every record is a sample already" in capsys.readouterr().err
    recs = read_jsonl(tmp_path / "out" / "results_10k.jsonl")
    assert [len(r["outputs"]) for r in recs] == [3, 2, 3]
    # single GPU, small data; plain base model, no LoRA, no 2D RoPE
    assert run_script("--base_model", models["qwen2"], "--lora_path", tmp_path / "out" / "lora" / "qwen2_lora_final.pth",
                      "--data_path", data, "--out_path", tmp_path / "out" / "results_100.jsonl", "--batch_size", 16,
                      *short) == 0
    assert read_jsonl(tmp_path / "out" / "results_100.jsonl") == recs  # the same adapter, settings re-applied
    assert run_script("--base_model", models["qwen2"], "--data_path", data, "--out_path",
                      tmp_path / "out" / "results.jsonl", "--no_patch_rope", *short) == 0
    assert "mask isolated, branch stride 0" in capsys.readouterr().err
    assert len(read_jsonl(tmp_path / "out" / "results.jsonl")) == 3
