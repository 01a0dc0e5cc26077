"""parallel_generate.py, eval_loss.py and eval_tasks.py end to end on tiny local models (no downloads)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_hf, tiny_corpus, tiny_minimind

from model.checkpoint import save_checkpoint
from scripts import eval_loss, eval_tasks, parallel_generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("ckpt")
    model = tiny_minimind(seed=11, vocab_size=len(tiny_tokenizer), rope_2d_ratio=0.25)
    path = d / "pretrain_64.pth"
    save_checkpoint(path, model, tokenizer=tiny_tokenizer)
    return path


@pytest.fixture(scope="module")
def val_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("val") / "val.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_corpus(70, seed=3)))
    return p


def records(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_generate_every_prompt_format_in_input_order(ckpt, tmp_path, capsys):
    pf = tmp_path / "p.jsonl"
    pf.write_text("\n".join(json.dumps(r) for r in [
        {"branches": ["the quick", "a lazy"]}, {"text": "seven birds||plus minus"}, {"prompt": "single one"},
        {"question": "single two"}, {"main": "the fox context", "branches": ["q one", {"text": "q two"}]}]) + "\n")
    out = tmp_path / "o.jsonl"
    rc = parallel_generate.main(["--mode", "pretrain", "--prompts_file", str(pf), "--model_path", str(ckpt),
                                 "--max_new_tokens", "5", "--out_path", str(out), "--branches_per_sample", "2",
                                 "--prompts", "cli one", "cli||two"])
    assert rc == 0
    recs = records(out)
    assert [(r["sample"], r["branch"], r["prompt"]) for r in recs] == [
        (0, 0, "cli one"), (1, 0, "cli"), (1, 1, "two"), (2, 0, "the quick"), (2, 1, "a lazy"),
        (3, 0, "seven birds"), (3, 1, "plus minus"), (4, 0, "single one"), (4, 1, "single two"),
        (5, 0, "q one"), (5, 1, "q two")]
    assert recs[-1]["main"] == "the fox context"
    assert all(r["num_new_tokens"] == 5 and r["finish_reason"] == "length" for r in recs)


def test_generate_text_lines_chat_template_streaming_and_seed(ckpt, tmp_path):
    pf = tmp_path / "p.txt"
    pf.write_text("the quick fox\n\na lazy dog\nseven birds\n")
    outs = []
    for seed in (1, 1, 2):
        out = tmp_path / f"o{len(outs)}.jsonl"
        assert parallel_generate.main(["--prompts_file", str(pf), "--model_path", str(ckpt), "--chat_template",
                                       "--do_sample", "--temperature", "1.0", "--top_p", "1.0", "--seed", str(seed),
                                       "--max_new_tokens", "6", "--streaming", "--out_path", str(out)]) == 0
        outs.append([r["response"] for r in records(out)])
    assert len(outs[0]) == 3 and outs[0] == outs[1] and outs[0] != outs[2]


def test_generate_prefix_sharing_with_branch_stride_zero(ckpt, tmp_path, capsys):
    pf = tmp_path / "shared.jsonl"
    pf.write_text(json.dumps({"main": "the quick brown fox", "branches": [" jumps", " sings", " jumps"]}) + "\n")
    out = tmp_path / "o.jsonl"
    argv = ["--mode", "pretrain", "--prompts_file", str(pf), "--model_path", str(ckpt), "--max_new_tokens", "6",
            "--branch_stride", "0", "--out_path", str(out)]
    assert parallel_generate.main([*argv, "--mask", "isolated", "--print_layout"]) == 0
    recs = records(out)
    assert [r["prompt"] for r in recs] == [" jumps", " sings", " jumps"]
    assert recs[0]["response"] == recs[2]["response"]  # same context + question, same coordinate: same answer
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if re.match(r"\s*\d+\s+\d+\s+\d+\s+\d+\s", ln)]
    assert len(rows) > 4 and {r[2] for r in rows} == {"0"}  # the printed layout: every coordinate is 0
    assert parallel_generate.main(argv) == 2  # columnar (the default): branches would be indistinguishable
    assert "needs --mask isolated" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--prompts_file", "{tmp}/empty.txt"], "is empty"),
    (["--prompts_file", "{tmp}/bad.jsonl"], "bad.jsonl:2: malformed JSON"),
    (["--prompts_file", "{tmp}/missing.txt"], "does not exist"),
    (["--prompts", "x", "--model_path", "{tmp}/nope.pth"], "does not exist"),
    (["--prompts", "x", "--rope_2d_ratio", "0.5"], "trained with rope_2d_ratio=0.25"),
    (["--prompts", "x", "--hidden_size", "128"], "trained with hidden_size=64"),
    (["--prompts", "the quick brown fox jumps", "--max_prompt_length", "2"], "more than --max_prompt_length"),
    ([], "no prompts"),
])
def test_generate_bad_input_is_a_clear_error(ckpt, tmp_path, capsys, argv, msg):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{broken\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--model_path" not in argv:
        argv += ["--model_path", str(ckpt)]
    assert parallel_generate.main(["--mode", "pretrain", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_generate_unknown_flag_values_are_rejected(ckpt, capsys):
    assert parallel_generate.main(["--prompts", "x", "--model_path", str(ckpt), "--mask", "diagonal"]) == 2
    err = capsys.readouterr().err
    assert "argument --mask: invalid choice: 'diagonal'" in err and len(err.strip().splitlines()) == 1


def test_eval_loss_exact_branch_counts_and_outputs(ckpt, val_file, tmp_path):
    prefix = tmp_path / "ev"
    assert eval_loss.main(["--model_path", str(ckpt), "--data_path", str(val_file), "--eval_branches", "1,2,4,8",
                           "--batch_size", "3", "--batch_by_samples", "--out_prefix", str(prefix)]) == 0
    rep = json.loads(prefix.with_suffix(".json").read_text())
    res = rep["results"]
    assert [r["branches"] for r in res] == ["1", "2", "4", "8"]
    assert len({r["tokens"] for r in res}) == 1  # the same texts at every count
    assert rep["texts"] == 64 and rep["texts_left_out"] == 6  # 70 texts -> largest multiple of 8
    assert [r["samples"] for r in res] == [64, 32, 16, 8] and all(r["leftover_texts"] == 0 for r in res)
    assert prefix.with_suffix(".png").stat().st_size > 1000 and prefix.with_suffix(".csv").exists()


@pytest.mark.slow
def test_eval_loss_ddp_equals_one_process(ckpt, val_file, tmp_path):
    common = ["scripts/eval_loss.py", "--model_path", str(ckpt), "--data_path", str(val_file), "--eval_branches",
              "1,4", "--batch_size", "2", "--batch_by_samples"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--out_prefix", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, "--out_prefix", str(tmp_path / "two"), "--ddp"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one.json").read_text())["results"]
    b = json.loads((tmp_path / "two.json").read_text())["results"]
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] and x["samples"] == y["samples"]
        assert abs(x["loss"] - y["loss"]) <= 1e-6 * abs(x["loss"])


def test_eval_loss_hf_model_with_lora(tmp_path, val_file, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = build_tiny_hf("qwen2", tmp_path / "qwen", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(base))
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(str(tmp_path / "adapter"))
    args = ["--hf_base_model", str(base), "--data_path", str(val_file), "--eval_branches", "1,2", "--batch_size",
            "4", "--batch_by_samples"]
    assert eval_loss.main([*args, "--out_prefix", str(tmp_path / "base")]) == 0
    assert eval_loss.main([*args, "--lora_path", str(tmp_path / "adapter"), "--out_prefix", str(tmp_path / "lora")]) == 0
    base_loss = json.loads((tmp_path / "base.json").read_text())["results"][0]["loss"]
    lora_loss = json.loads((tmp_path / "lora.json").read_text())["results"][0]["loss"]
    assert base_loss != lora_loss  # the adapter really changes the model
    assert eval_loss.main([*args, "--lora_path", str(tmp_path / "adapter"), "--lora_rank", "8",
                           "--out_prefix", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "seed_pth"])
def test_model_lora_file_round_trip(tmp_path, tiny_tokenizer, fmt):
    """Files of the earlier `model_lora` (keys `<module>.lora.A.weight` / `.lora.B.weight` on the square layers,
    rank/alpha metadata; the seed's files without it: scaling 1) load through --lora_path and compute
    W x + (alpha / r) B A x: checked against the base model with the update merged into its weights by hand."""
    from safetensors.torch import save_file

    from model.loading import load_parallel_model

    base = build_tiny_hf("llama", tmp_path / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(base))
    ref = load_parallel_model(hf_base_model=str(base)).model
    rank, alpha = 4, (8.0 if fmt != "seed_pth" else 4.0)
    g = torch.Generator().manual_seed(0)
    sd = {}
    with torch.no_grad():
        for name, m in ref.named_modules():
            if isinstance(m, torch.nn.Linear) and m.in_features == m.out_features and name != "lm_head":
                a = torch.randn(rank, m.in_features, generator=g) * 0.05
                b = torch.randn(m.out_features, rank, generator=g) * 0.05
                sd[f"{name}.lora.A.weight"], sd[f"{name}.lora.B.weight"] = a, b
                m.weight += (alpha / rank) * (b @ a)
    assert sd and all(k.split(".")[-4] in ("q_proj", "o_proj") for k in sd)  # the square layers under GQA
    path = tmp_path / ("l.safetensors" if fmt == "safetensors" else "l.pth")
    if fmt == "safetensors":
        save_file(sd, str(path), metadata={"rank": str(rank), "alpha": str(alpha)})
    elif fmt == "pth":
        torch.save({**sd, "__lora_meta__": {"rank": str(rank), "alpha": str(alpha)}}, path)
    else:
        torch.save(sd, path)
    loaded = load_parallel_model(hf_base_model=str(base), lora_path=str(path), lora_rank=4)
    ids = torch.randint(3, 200, (1, 9))
    pos = torch.stack([torch.zeros(1, 9, dtype=torch.long), torch.arange(9)[None]], -1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids, position_ids=pos, use_cache=True).logits,
                                   ref(ids, position_ids=pos, use_cache=True).logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="rank \\[4\\], but --lora_rank 8"):
        load_parallel_model(hf_base_model=str(base), lora_path=str(path), lora_rank=8)


def test_eval_tasks_parallel_vs_sequential(ckpt, tmp_path):
    tf = tmp_path / "tasks.jsonl"
    rows = [{"id": f"a{i}", "kind": "arith", "context": "", "prompt": f"{i} plus {i} =", "answer": str(2 * i)}
            for i in range(8)]
    rows += [{"id": f"f{i}", "kind": "fact", "context": "the fox lives in rivers\n", "prompt": f"question {i}?",
              "answer": "rivers"} for i in range(4)]
    tf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "t.json"
    assert eval_tasks.main(["--model_path", str(ckpt), "--tasks", str(tf), "--branches", "1,2,4", "--max_tasks", "8",
                            "--max_new_tokens", "3", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    modes = {(r["setting"], r["mode"], r["branches"]) for r in rep["rows"]}
    assert ("independent", "sequential", 1) in modes and ("independent", "parallel", 4) in modes
    assert ("shared_context", "parallel", 4) in modes and ("shared_context", "sequential", 4) in modes
    assert all(r["total"] > 0 and 0.0 <= r["accuracy"] <= 1.0 for r in rep["rows"])
    assert out.with_suffix(".png").exists()


def test_eval_tasks_games_cut_and_score(ckpt):
    """Games: for N branches a sample is the game's unscored task (the dealer) + the next N-1 scored tasks;
    only scored tasks count. Oracle: the generator run on exactly those samples."""
    from evaluation.tasks import _game_samples, evaluate_tasks
    from model.loading import load_parallel_model
    from model.parallel_generation import ParallelGenerator
    from parallel.sampling import SamplingParams

    lm = load_parallel_model(model_path=str(ckpt), device="cpu")
    gen = ParallelGenerator(lm.model, lm.tokenizer, mask_mode="columnar", branch_stride=lm.branch_stride)
    games = [[{"id": f"g{g}-d", "kind": "dealer", "context": "", "prompt": f"dealer {g} says seven", "answer": "7",
               "game": f"g{g}", "scored": False}] +
             [{"id": f"g{g}-{j}", "kind": "peer", "context": "", "prompt": f"player {j} asks", "answer": "?",
               "game": f"g{g}"} for j in range(5)] for g in range(2)]
    samples = _game_samples(games, 3, max_tasks=100)
    assert [[t["id"] for t in s] for s in samples] == [["g0-d", "g0-0", "g0-1"], ["g0-d", "g0-2", "g0-3"],
                                                       ["g1-d", "g1-0", "g1-1"], ["g1-d", "g1-2", "g1-3"]]
    out = gen.generate([{"branches": [t["prompt"] for t in s]} for s in samples], SamplingParams(), max_new_tokens=3,
                       stop_strings=["\n"])
    for s, o in zip(samples, out):  # make the first asker of every sample right, and the dealer "right" too
        s[1]["answer"] = o.branches[1].text.split("\n")[0].strip() or "?"
        s[0]["answer"] = o.branches[0].text.split("\n")[0].strip() or "?"
    rows = evaluate_tasks(gen, [t for g in games for t in g], [3], max_tasks=100, max_new_tokens=3,
                          log=lambda m: None)["rows"]
    par = next(r for r in rows if r["setting"] == "game" and r["mode"] == "parallel")
    assert par["branches"] == 3 and par["total"] == 8  # 4 samples x 2 scored; the dealer is never counted
    assert par["correct"] == sum(s[1]["answer"] != "?" for s in samples) + sum(
        s[2]["answer"] == o.branches[2].text.split("\n")[0].strip() for s, o in zip(samples, out))
    seq = next(r for r in rows if r["setting"] == "game" and r["mode"] == "sequential")
    assert seq["total"] == 10  # every scored task alone
    assert _game_samples(games, 1, 100) == []  # no room for a scored task next to the dealer
