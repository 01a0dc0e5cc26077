"""Benchmark parallel generation against ordinary decoding of the same prompts with the same model.

Model: the tiny MiniMind config (hidden 256, 4 layers, 8 heads, 2 KV heads, vocab 6400; random
seeded weights, eval mode; fp32 on CPU, bf16 on CUDA). Prompts: N distinct token-id prompts of 16-32
tokens. Every branch generates exactly --new_tokens tokens (EOS disabled: `eos_token_ids=[]` for the
engine, `min_new_tokens == max_new_tokens` for `generate`), greedy. Rows, for N in (1, 4, 16):

* ``columnar``: `ParallelGenerator(mask_mode="columnar")`, one sample of N branches, one forward per step;
* ``isolated``: the same with mask_mode="isolated" (branches see only their own tokens);
* ``columnar_right_aligned`` (for scale): columnar with `align_to="right"`: every branch starts generating
  at the same time, so no prompt token is fed after the prefill (left alignment feeds the tails of
  longer prompts one time column per step, alongside the generated tokens of shorter ones);
* ``sequential``: one prompt at a time with a KV cache, the faster of MiniMind's `model.generate`
  (``sequential_hf``) and the engine with one branch per call (``sequential_engine``), both reported;
* ``batched``: the N prompts left-padded as ONE batch through `model.generate(input_ids,
  attention_mask=...)`, i.e. ordinary batched causal decoding of the same model.

Shared-context workload: one 512-token context + 8 questions of ~12 tokens, --new_tokens per answer:
``columnar`` / ``isolated`` = one sample ``{"main": context, "branches": questions}`` (the context is
prefilled once), ``batched`` = 8 sequences ``context + question`` left-padded through `model.generate`.

Continuous batching: 8 one-branch isolated samples, sample i joining a running `GenerationSession`
before decode step 8 i (``joining``), against the same 8 added at once (``together``) and one at a time
(``sequential_engine``).

Each repeat runs every row once, alternating rows (the order rotates per repeat), after one warm-up
run of each row; a timed run of a short row repeats the call until --min_tokens tokens were generated
(N = 1: 4 calls) and counts the time per call. Reported: generated tokens/s (N x new_tokens / wall time, prefill included), median
over --repeats, and ratios of the medians. The JSON also holds an ``env`` block, the reference numbers
of the public ParallelMind implementation and the project's targets, and ``agreement``: the share of
generated tokens of the isolated engine that equal one-prompt-at-a-time decoding (greedy; they differ
only on float near-ties), which shows the rows compute the same thing.

Usage (from the repo root):

    python scripts/bench_generate.py                          # full run (~2-4 minutes on 2 CPU cores)
    python -m scripts.bench_generate --quick                  # tiny sizes: a smoke run in a few seconds
    python scripts/bench_generate.py --repeats 7 --threads 2 --out out/bench_generate.json
    python scripts/bench_generate.py --device cuda            # bf16 on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evaluation.benchmarking import (
    add_benchmark_args,
    agreement,
    bench_device,
    emit_json,
    environment,
    loadavg,
    make_prompts,
    tokens_summary,
)
from trainer.args import add_branch_counts_arg, nonneg_int, positive_int
from trainer.cli import ArgParser, cli_main, make_parser

# Numbers of the public ParallelMind implementation on the same kind of 2-core CPU machine,
# tokens/s at N = 16 branches, 64 new tokens each.
REFERENCE = {"columnar_n16_tokens_per_s": 215.0, "sequential_n16_tokens_per_s": 385.0,
             "batched_n16_tokens_per_s": 2380.0}
TARGETS = {"columnar_vs_batched_n16_min": 0.8, "columnar_vs_sequential_n16_min": 4.0,
           "shared_parallel_vs_batched_min": 2.0}
TINY = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, vocab_size=6400)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- workload ---------------------------------------------------------------------------------------

def build_model(device: torch.device, dtype: torch.dtype, quick: bool, seed: int = 0):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    torch.manual_seed(seed)
    # untied head: a random model with tied embeddings tends to echo its input
    model = MiniMindForCausalLM(MiniMindConfig(**(QUICK if quick else TINY), tie_word_embeddings=False))
    return model.to(device=device, dtype=dtype).eval()




def left_pad(seqs: list[list[int]], device: torch.device, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (`[N, Lmax]` ids, `[N, Lmax]` attention mask), padded on the left."""
    m = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (m - len(s)) + s for s in seqs], dtype=torch.long, device=device)
    am = torch.tensor([[0] * (m - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long, device=device)
    return ids, am


def hf_generate(model, seqs: list[list[int]], new_tokens: int, device: torch.device) -> list[list[int]]:
    """Ordinary (batched when len(seqs) > 1) greedy causal decoding with `model.generate`.

    The cache is passed explicitly, as a plain DynamicCache, so every row of the comparison uses the same
    cache type.
    """
    from transformers.cache_utils import DynamicCache

    ids, am = left_pad(seqs, device)
    out = model.generate(ids, attention_mask=am, do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=0, past_key_values=DynamicCache())
    gen = out[:, ids.shape[1]:]
    assert gen.shape[1] == new_tokens, gen.shape
    return gen.tolist()


def engine_generate(gen, sample: dict, new_tokens: int) -> list[list[int]]:
    res = gen.generate([sample], eos_token_ids=[], max_new_tokens=new_tokens)[0].branches
    assert all(r.num_new_tokens == new_tokens for r in res)
    return [r.token_ids for r in res]


def _timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def run_rows(rows: dict, repeats: int, device: torch.device, calls: int = 1) -> tuple[dict, dict]:
    """Warm up every row once, then `repeats` rounds timing each row once (order rotated per round).

    A timed sample runs the row `calls` times back to back (short rows are otherwise too noisy).
    -> ({row: [seconds per call, one per sample]}, {row: output of the last call})
    """
    names = list(rows)
    outputs = {name: rows[name]() for name in names}  # warm-up (and the outputs for the agreement check)
    times: dict[str, list[float]] = {name: [] for name in names}

    def sample(fn):
        out = None
        for _ in range(calls):
            out = fn()
        return out

    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            dt, outputs[name] = _timed(lambda fn=rows[name]: sample(fn), device)
            times[name].append(dt / calls)
    return times, outputs


# --- benchmarks -------------------------------------------------------------------------------------

def bench_branches(model, device, ns, new_tokens, repeats, prompt_len, seed, min_tokens: int = 0) -> dict:
    from model.parallel_generation import ParallelGenerator

    columnar = ParallelGenerator(model, None, mask_mode="columnar")
    columnar_right = ParallelGenerator(model, None, mask_mode="columnar", align_to="right")
    isolated = ParallelGenerator(model, None, mask_mode="isolated")
    vocab = model.config.vocab_size
    out: dict = {}
    for n in ns:
        prompts = make_prompts(n, *prompt_len, vocab, seed + n)
        sample = {"branches": prompts}
        rows = {
            "columnar": lambda s=sample: engine_generate(columnar, s, new_tokens),
            "isolated": lambda s=sample: engine_generate(isolated, s, new_tokens),
            "columnar_right_aligned": lambda s=sample: engine_generate(columnar_right, s, new_tokens),
            "sequential_hf": lambda p=prompts: [hf_generate(model, [x], new_tokens, device)[0] for x in p],
            "sequential_engine": lambda p=prompts: [engine_generate(isolated, {"branches": [x]}, new_tokens)[0]
                                                    for x in p],
            "batched": lambda p=prompts: hf_generate(model, p, new_tokens, device),
        }
        calls = max(1, -(-min_tokens // (n * new_tokens)))
        times, outputs = run_rows(rows, repeats, device, calls)
        res = {name: tokens_summary(t, n * new_tokens, calls) for name, t in times.items()}
        best = max(("sequential_hf", "sequential_engine"), key=lambda k: res[k]["tokens_per_s"])
        res["sequential"] = {**res[best], "source": best}
        res["prompt_tokens"] = [len(p) for p in prompts]
        res["agreement"] = {"isolated_vs_sequential_hf": agreement(outputs["isolated"], outputs["sequential_hf"]),
                            "batched_vs_sequential_hf": agreement(outputs["batched"], outputs["sequential_hf"]),
                            "sequential_engine_vs_hf": agreement(outputs["sequential_engine"],
                                                                 outputs["sequential_hf"])}
        out[str(n)] = res
    return out


def bench_shared(model, device, context_len, n_questions, question_len, new_tokens, repeats, seed) -> dict:
    from model.parallel_generation import ParallelGenerator

    vocab = model.config.vocab_size
    context = make_prompts(1, context_len, context_len, vocab, seed)[0]
    questions = make_prompts(n_questions, question_len - 2, question_len + 2, vocab, seed + 1)
    sample = {"main": context, "branches": questions}
    columnar = ParallelGenerator(model, None, mask_mode="columnar")
    isolated = ParallelGenerator(model, None, mask_mode="isolated")
    rows = {
        "columnar": lambda: engine_generate(columnar, sample, new_tokens),
        "isolated": lambda: engine_generate(isolated, sample, new_tokens),
        "batched": lambda: hf_generate(model, [context + q for q in questions], new_tokens, device),
    }
    times, outputs = run_rows(rows, repeats, device)
    res: dict = {name: tokens_summary(t, n_questions * new_tokens) for name, t in times.items()}
    res["config"] = {"context_tokens": len(context), "questions": n_questions,
                     "question_tokens": [len(q) for q in questions], "new_tokens": new_tokens}
    res["note"] = ("isolated answers see the context and their own question only, like batched decoding, but "
                   "with 2D RoPE a question's branch coordinate differs from the context's, so its tokens are not "
                   "expected to equal plain causal decoding (agreement < 1 is no error)")
    res["agreement"] = {"isolated_vs_batched": agreement(outputs["isolated"], outputs["batched"])}
    return res


def session_generate(gen, prompts: list[list[int]], new_tokens: int, gap: int) -> list[list[int]]:
    """Continuous batching: prompt i joins a running session before decode step i * gap."""
    session = gen.session(stream_text=False)
    handles, step = [], 0
    while len(handles) < len(prompts) or not session.idle:
        while len(handles) < len(prompts) and len(handles) * gap <= step:
            handles.append(session.add({"branches": [prompts[len(handles)]]}, eos_token_ids=[],
                                       max_new_tokens=new_tokens))
        session.step()
        step += 1
    assert all(h.result.branches[0].num_new_tokens == new_tokens for h in handles)
    return [h.result.branches[0].token_ids for h in handles]


def bench_joining(model, device, n, new_tokens, repeats, prompt_len, seed, gap) -> dict:
    from model.parallel_generation import ParallelGenerator

    prompts = make_prompts(n, *prompt_len, model.config.vocab_size, seed + 100)
    isolated = ParallelGenerator(model, None, mask_mode="isolated")
    rows = {
        "joining": lambda: session_generate(isolated, prompts, new_tokens, gap),
        "together": lambda: session_generate(isolated, prompts, new_tokens, 0),
        "sequential_engine": lambda: [engine_generate(isolated, {"branches": [x]}, new_tokens)[0] for x in prompts],
    }
    times, outputs = run_rows(rows, repeats, device)
    res: dict = {name: tokens_summary(t, n * new_tokens) for name, t in times.items()}
    res["config"] = {"samples": n, "joins_every_steps": gap, "new_tokens": new_tokens}
    res["agreement"] = {"joining_vs_sequential_engine": agreement(outputs["joining"], outputs["sequential_engine"])}
    return res


def ratios(branches: dict, shared: dict) -> dict:
    def r(a: float, b: float) -> float:
        return round(a / b, 3)

    out = {"columnar_vs_batched": {}, "columnar_vs_sequential": {}, "isolated_vs_batched": {},
           "isolated_vs_sequential": {}}
    for n, res in branches.items():
        for mode in ("columnar", "isolated"):
            out[f"{mode}_vs_batched"][n] = r(res[mode]["tokens_per_s"], res["batched"]["tokens_per_s"])
            out[f"{mode}_vs_sequential"][n] = r(res[mode]["tokens_per_s"], res["sequential"]["tokens_per_s"])
    if shared:
        out["shared_context_vs_batched"] = {m: r(shared[m]["tokens_per_s"], shared["batched"]["tokens_per_s"])
                                            for m in ("columnar", "isolated")}
    return out


def targets_met(rat: dict, n_big: str) -> dict:
    if n_big not in rat["columnar_vs_batched"]:
        return {}
    return {
        "columnar_vs_batched_n16": rat["columnar_vs_batched"][n_big] >= TARGETS["columnar_vs_batched_n16_min"],
        "columnar_vs_sequential_n16": rat["columnar_vs_sequential"][n_big] >= TARGETS["columnar_vs_sequential_n16_min"],
        "shared_parallel_vs_batched": (rat.get("shared_context_vs_batched", {}).get("columnar", 0.0)
                                       >= TARGETS["shared_parallel_vs_batched_min"]),
    }


# --- entry point ------------------------------------------------------------------------------------

def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_generate")
    add_benchmark_args(p, repeats=5, quick_repeats=1, seed=0, device="cpu")
    w = p.add_argument_group("workload")
    w.add_argument("--new_tokens", type=positive_int, default=None,
                   help="new tokens per branch (default 64; --quick: 8)")
    add_branch_counts_arg(w, default=None, help="comma-separated N values (default 1,4,16; --quick: 1,2)")
    w.add_argument("--no_shared", action="store_true", help="skip the shared-context workload")
    w.add_argument("--min_tokens", type=nonneg_int, default=None,
                   help="a timed run repeats a row until it generated at least this many tokens (N = 1: 4 calls; "
                        "default 256, --quick: 0)")
    return p



@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:

    device, dtype = bench_device(args)
    quick = args.quick
    new_tokens = args.new_tokens or (8 if quick else 64)
    ns = args.branches or ([1, 2] if quick else [1, 4, 16])
    repeats = args.repeats
    min_tokens = args.min_tokens if args.min_tokens is not None else (0 if quick else 256)
    prompt_len = (4, 8) if quick else (16, 32)
    shared_cfg = (32, 2, 6) if quick else (512, 8, 12)  # context tokens, questions, question tokens

    model = build_model(device, dtype, quick, args.seed)
    result: dict = {
        "config": {"model": {k: getattr(model.config, k) for k in TINY}, "dtype": str(dtype).replace("torch.", ""),
                   "new_tokens": new_tokens, "branches": ns, "prompt_tokens": list(prompt_len), "repeats": repeats,
                   "min_tokens_per_run": min_tokens,
                   "warmup": 1, "greedy": True, "eos": "disabled", "quick": quick,
                   "shared_context": None if args.no_shared else
                   {"context_tokens": shared_cfg[0], "questions": shared_cfg[1],
                    "question_tokens": shared_cfg[2]}},
        "env": environment(device, dtype),
        "reference": REFERENCE, "targets": TARGETS,
    }
    t0 = time.perf_counter()
    with torch.inference_mode():
        branches = bench_branches(model, device, ns, new_tokens, repeats, prompt_len, args.seed,
                                  min_tokens)
        shared = {} if args.no_shared else bench_shared(model, device, *shared_cfg, new_tokens, repeats, args.seed)
        joining = bench_joining(model, device, 2 if quick else 8, new_tokens, repeats, prompt_len, args.seed,
                                2 if quick else 8)
    result["branches"] = branches
    result["shared_context"] = shared
    result["continuous"] = joining
    result["ratios"] = rat = ratios(branches, shared)
    rat["continuous_joining_vs_together"] = round(joining["joining"]["tokens_per_s"] /
                                                  joining["together"]["tokens_per_s"], 3)
    rat["continuous_joining_vs_sequential"] = round(joining["joining"]["tokens_per_s"] /
                                                    joining["sequential_engine"]["tokens_per_s"], 3)
    result["targets_met"] = targets_met(rat, str(max(ns)) if max(ns) == 16 else "16")
    result["env"]["loadavg_end"] = loadavg()
    result["env"]["wall_s"] = round(time.perf_counter() - t0, 1)
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
