"""eval_model.py (repo root): chat evaluation one at a time vs in parallel, on a tiny local model.

Oracles: one-at-a-time greedy answers equal plain greedy decoding by full recomputation; with the
isolated mask the parallel answers equal the one-at-a-time answers (greedy and sampled).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_minimind

import eval_model
from model.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NEW = 8


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_tokenizer):
    """A tiny model with an untied, large-scale output head: greedy answers differ from prompt to prompt."""
    model = tiny_minimind(seed=3, vocab_size=len(tiny_tokenizer), tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("eval") / "full_sft_64.pth"
    save_checkpoint(path, model, tokenizer=tiny_tokenizer)
    return path, model


def evaluate(path, out, *argv) -> dict:
    assert eval_model.main(["--model_path", str(path), "--max_new_tokens", str(NEW), "--out_path", str(out),
                            *argv]) == 0
    return json.loads(Path(out).with_suffix(".json").read_text())


def greedy_by_recompute(model, tokenizer, text: str) -> str:
    """Plain greedy decoding, every step a full forward over the whole sequence (no cache, 1D positions)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(NEW):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            new.append(nxt)
    return tokenizer.decode(new)


def test_isolated_parallel_equals_one_at_a_time_and_plain_decoding(ckpt, tmp_path, tiny_tokenizer):
    path, model = ckpt
    rep = evaluate(path, tmp_path / "r.md", "--mask", "isolated")
    rows = rep["rows"]
    assert rep["prompts"] == "built-in sft" and len(rows) == 8 and rep["identical"] == 8
    assert all(r["same"] and r["parallel"] == r["one_at_a_time"] for r in rows)
    assert len({r["parallel"]["text"] for r in rows}) > 1  # not one answer for every prompt
    assert rep["modes"]["one_at_a_time"]["calls"] == 8 and rep["modes"]["parallel"]["calls"] == 1
    for r in rows[:3]:
        chat = tiny_tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                                  add_generation_prompt=True)
        assert r["one_at_a_time"]["text"] == greedy_by_recompute(model.eval(), tiny_tokenizer, chat)
    md = (tmp_path / "r.md").read_text()
    assert "**Identical answers: 8 of 8**" in md
    assert sum(line.startswith("| 0.") or line.startswith("| 1.") for line in md.splitlines()) == 8


def test_sampled_isolated_answers_are_batch_invariant(ckpt, tmp_path):
    rep = evaluate(ckpt[0], tmp_path / "s.json", "--mask", "isolated", "--do_sample", "--temperature", "1.5",
                   "--seed", "7", "--branches_per_sample", "3", "--batch_groups", "2")
    assert rep["identical"] == len(rep["rows"]) == 8 and rep["decoding"] == "sampled"
    assert not (tmp_path / "s.md").exists()  # a .json out_path: JSON only
    assert rep["modes"]["parallel"]["calls"] == 2  # 3 samples of 3, 3, 2 prompts, 2 samples per call


def test_columnar_branches_see_each_other_and_the_report_says_so(ckpt, tmp_path):
    rep = evaluate(ckpt[0], tmp_path / "c.md", "--mask", "columnar")
    assert rep["mask"] == "columnar" and rep["identical"] < len(rep["rows"])
    md = (tmp_path / "c.md").read_text()
    assert f"**Identical answers: {rep['identical']} of 8**" in md and "**no**" in md


def test_a_prompts_file_with_a_main_and_the_default_system(ckpt, tmp_path, tiny_tokenizer):
    pf = tmp_path / "p.jsonl"
    pf.write_text(json.dumps({"main": "the fox context", "branches": ["q one", "q two"]}) + "\n"
                  + json.dumps({"prompt": "alone | with a pipe"}) + "\n")
    rep = evaluate(ckpt[0], tmp_path / "f.md", "--prompts_file", str(pf), "--mask", "isolated", "--default_system")
    assert [(r["sample"], r["branch"], r["main"], r["prompt"]) for r in rep["rows"]] == [
        (0, 0, "the fox context", "q one"), (0, 1, "the fox context", "q two"), (1, 0, "", "alone | with a pipe")]
    assert rep["identical"] == 3 and rep["default_system"] == "You are a helpful assistant"
    assert "alone \\| with a pipe" in (tmp_path / "f.md").read_text()  # a pipe does not break the table
    plain = evaluate(ckpt[0], tmp_path / "g.md", "--prompts_file", str(pf), "--mask", "isolated")
    assert plain["rows"][:2] == rep["rows"][:2]  # a main is the system turn: --default_system leaves it alone


def test_pretrain_mode_stdout_report_and_module_run(ckpt, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eval_model", "--mode", "pretrain", "--model_path", str(ckpt[0]),
                           "--max_new_tokens", "3", "--prompts", "the fox||a bird", "seven"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| 0.0 | the fox |" in proc.stdout and "| 0.1 | a bird |" in proc.stdout and "| 1.0 | seven |" in proc.stdout
    assert "identical answers:" in proc.stderr


@pytest.mark.parametrize("argv,expect", [
    (["--mode", "pretrain", "--default_system"], "--default_system only applies with the chat template"),
    (["--do_sample", "--top_p", "2"], "--top_p"),
    (["--temperature", "0.5"], "add --do_sample"),
])
def test_bad_flags(argv, expect, ckpt, tmp_path, capsys):
    assert eval_model.main(["--model_path", str(ckpt[0]), "--out_path", str(tmp_path / "x.md"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1 and not (tmp_path / "x.md").exists()


def test_one_at_a_time_keeps_each_branch_at_its_parallel_coordinate(ckpt, tiny_tokenizer):
    """A branch alone sits at the branch coordinate it has in its sample (slot k + 1 after a main, k without),
    so the modes differ only in what the branch sees (a trained model answers differently at another one)."""
    from evaluation.chat_eval import run_one_at_a_time, run_parallel
    from model.parallel_generation import ParallelGenerator
    from parallel.layout import build_flat_linear_layout
    from parallel.sampling import SamplingParams

    gen = ParallelGenerator(ckpt[1], tiny_tokenizer, mask_mode="isolated", branch_stride=16)
    seen = []
    real = gen.generate
    gen.generate = lambda samples, *a, **kw: seen.append(samples) or real(samples, *a, **kw)
    samples = [{"main": "the fox", "branches": ["q one", "q two", "a bird"]}, {"branches": ["x y", "z"]}]
    kw = dict(max_new_tokens=2, stop=[], seed=0)
    run_one_at_a_time(gen, samples, SamplingParams(), **kw)
    run_parallel(gen, samples, SamplingParams(), batch_groups=2, **kw)
    *alone, together = seen

    def coords(sample_list, row=0):
        lay = build_flat_linear_layout(tiny_tokenizer, sample_list, branch_stride=16)
        bids, pos = lay.branch_ids[row].tolist(), lay.pos2d[row].tolist()
        return {b: p[0] for b, p in zip(bids, pos) if b > 0}

    parallel = [coords(together, 0), coords(together, 1)]
    assert parallel == [{1: 16, 2: 32, 3: 48}, {1: 0, 2: 16}]
    got = [coords(s)[1] for s in alone]  # each alone sample has one branch (id 1)
    assert got == [16, 32, 48, 0, 16]


def test_a_second_run_keeps_the_first_report_unless_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "r.md"
    evaluate(ckpt[0], out, "--mask", "isolated")
    before = (out.read_text(), out.with_suffix(".json").read_text())
    assert eval_model.main(["--model_path", str(ckpt[0]), "--out_path", str(out), "--max_new_tokens", "2"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out.read_text(), out.with_suffix(".json").read_text()) == before
    evaluate(ckpt[0], out, "--mask", "isolated", "--overwrite")
