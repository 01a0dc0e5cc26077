"""Benchmark prefix sharing and isolated parallel decoding on a Hugging Face model against HF batched `generate`.

Model: a plain (unpatched) HF causal LM folder (--base_model, e.g. out/models/SmolLM2-135M-Instruct),
or --tiny_model: a random Llama config (hidden 256, 4 layers, 8 heads, 2 KV heads, vocab 6400, untied
head). fp32 on CPU, bf16 on CUDA; greedy; every branch generates exactly --max_new_tokens tokens (EOS
disabled: `eos_token_ids=[]` for the engine, `min_new_tokens == max_new_tokens` for `generate`).

Workloads and rows:

* shared context: one --context_tokens context + --num_questions questions (~12 tokens each).
  ``prefix_shared`` = the engine, one sample ``{"main": context, "branches": questions}``, isolated mask,
  branch stride 0: the context is prefilled once and every question continues it with plain 1D
  positions (exactly causal decoding of context + question); ``batched`` = the questions' sequences
  ``context + question`` left-padded as one batch through `model.generate` (the context computed once
  per question).
* N distinct prompts of 16-32 tokens, N in --branches: ``isolated`` = the engine, one sample of N
  branches (isolated mask, stride 0), one forward per step for all of them; ``batched`` = the N prompts
  left-padded through `model.generate`.

Each repeat runs every row of a workload once, the order rotated per repeat, after one warm-up run
of each row. Reported: generated tokens/s of the median run (tokens / wall time, prefill included),
the ratios of the medians of the same run, and ``agreement``: the share of greedy tokens the rows
share (counted up to each branch's first difference: float near-ties can flip a token), which shows
they compute the same thing. The ``env`` block holds the machine and the load average.

    python scripts/bench_prefix_sharing.py --base_model out/models/SmolLM2-135M-Instruct --threads 1 \\
        --out_path out/bench_prefix_sharing_smollm2.json
    python scripts/bench_prefix_sharing.py --tiny_model --threads 1 --out_path out/bench_prefix_sharing_tiny.json
    python scripts/bench_prefix_sharing.py --quick          # a smoke run in seconds (numbers are meaningless)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

TARGETS = {"prefix_shared_vs_batched_min": 2.0, "isolated_vs_batched_min": 1.0}
TINY = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, vocab_size=6400)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512)


def build_parser() -> ArgParser:
    from evaluation.benchmarking import add_benchmark_args, add_tiny_model_arg

    p = make_parser(__doc__, "bench_prefix_sharing")
    flags.add_model_source_args(p, checkpoint=False, lora=False, tokenizer=False)  # decoded as it is, unpatched
    g = p.add_argument_group("workload")
    add_tiny_model_arg(g, "a random Llama config instead of --base_model")
    flags.add_branch_counts_arg(g, default=[4, 16], help="N of the distinct-prompt workload (comma-separated)")
    g.add_argument("--context_tokens", type=flags.positive_int, default=None, help="shared context (default 512)")
    g.add_argument("--num_questions", dest="questions", type=flags.positive_int, default=None, help="questions on it (default 8)")
    flags.add_max_new_tokens_arg(g, None, minimum=1)  # every branch generates exactly this many (default 32)
    add_benchmark_args(p, repeats=5, quick_repeats=1, seed=0, device="cpu")
    p.add_check(_check)
    return p


def _check(args) -> None:
    if args.quick:
        args.tiny_model = args.tiny_model or args.hf_base_model is None
    if (args.hf_base_model is None) != args.tiny_model:
        raise UsageError("give the model: --base_model FOLDER (a Hugging Face model) or --tiny_model")
    if args.hf_base_model is not None and not (Path(args.hf_base_model) / "config.json").is_file():
        raise UsageError(f"--base_model {args.hf_base_model}: no config.json there (a Hugging Face model folder)")
    small = args.quick
    args.context_tokens = args.context_tokens or (32 if small else 512)
    args.questions = args.questions or (2 if small else 8)
    args.max_new_tokens = args.max_new_tokens or (4 if small else 32)
    if small and args.branches == [4, 16]:
        args.branches = [2]


# --- model and workload -------------------------------------------------------------------------------

def build_model(args, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.hf_base_model is not None:
        from model.loading import load_parallel_model

        loaded = load_parallel_model(hf_base_model=args.hf_base_model, patch_rope=False, device=device,
                                     dtype=str(dtype).replace("torch.", ""))
        return loaded.model.eval(), args.hf_base_model
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(**(QUICK if args.quick else TINY), max_position_embeddings=4096, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval(), "tiny random Llama " + str(
        {k: getattr(cfg, k) for k in TINY})




def hf_batched(model, seqs: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy `model.generate` of the sequences left-padded as one batch: [N] lists of new token ids."""
    import torch
    from transformers.cache_utils import DynamicCache

    m = max(len(s) for s in seqs)
    dev = model.device
    ids = torch.tensor([[0] * (m - len(s)) + s for s in seqs], device=dev)
    am = torch.tensor([[0] * (m - len(s)) + [1] * len(s) for s in seqs], device=dev)
    out = model.generate(ids, attention_mask=am, do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=0, past_key_values=DynamicCache(),
                         top_p=None, top_k=None, temperature=None)[:, m:]
    assert out.shape[1] == new_tokens, out.shape
    return out.tolist()


def engine(gen, sample: dict, new_tokens: int) -> list[list[int]]:
    res = gen.generate([sample], eos_token_ids=[], max_new_tokens=new_tokens)[0].branches
    assert all(r.num_new_tokens == new_tokens for r in res)
    return [r.token_ids for r in res]




def workload(rows: dict, ref: str, other: str, tokens: int, repeats: int, sync, extra: dict) -> dict:
    from evaluation.benchmarking import agreement, alternating_timings, tokens_summary

    times, outputs = alternating_timings(rows, repeats, sync)
    res = {name: tokens_summary(t, tokens) for name, t in times.items()}
    res[f"{other}_vs_{ref}"] = round(res[other]["tokens_per_s"] / res[ref]["tokens_per_s"], 3)
    res["agreement"] = agreement(outputs[other], outputs[ref])
    return {**res, **extra}


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    import torch

    from evaluation.benchmarking import bench_device, emit_json, environment, loadavg, make_prompts
    from model.parallel_generation import ParallelGenerator

    device, dtype = bench_device(args)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model, source = build_model(args, device, dtype)
    gen = ParallelGenerator(model, None, mask_mode="isolated", branch_stride=0)
    vocab, new = model.config.vocab_size, args.max_new_tokens
    result = {"config": {"model": source, "new_tokens": new, "repeats": args.repeats, "branches": args.branches,
                         "context_tokens": args.context_tokens, "questions": args.questions},
              "env": environment(device, dtype), "targets": TARGETS}
    with torch.no_grad():
        context = make_prompts(1, args.context_tokens, args.context_tokens, vocab, args.seed)[0]
        questions = make_prompts(args.questions, 10, 14, vocab, args.seed + 1)
        sample = {"main": context, "branches": questions}
        result["shared_context"] = workload(
            {"prefix_shared": lambda: engine(gen, sample, new),
             "batched": lambda: hf_batched(model, [context + q for q in questions], new)},
            "batched", "prefix_shared", args.questions * new, args.repeats, sync,
            {"question_tokens": [len(q) for q in questions]})
        result["distinct_prompts"] = {}
        for n in args.branches:
            prompts = make_prompts(n, 16, 32, vocab, args.seed + 100 + n)
            result["distinct_prompts"][str(n)] = workload(
                {"isolated": lambda p=prompts: engine(gen, {"branches": p}, new),
                 "batched": lambda p=prompts: hf_batched(model, p, new)},
                "batched", "isolated", n * new, args.repeats, sync, {"prompt_tokens": [len(p) for p in prompts]})
    result["env"]["loadavg_end"] = loadavg()
    result["targets_met"] = {
        "prefix_shared_vs_batched": result["shared_context"]["prefix_shared_vs_batched"]
        >= TARGETS["prefix_shared_vs_batched_min"],
        **{f"isolated_vs_batched_n{n}": r["isolated_vs_batched"] >= TARGETS["isolated_vs_batched_min"]
           for n, r in result["distinct_prompts"].items()}}
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
