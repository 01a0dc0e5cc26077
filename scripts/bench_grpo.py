"""Benchmark GRPO rollouts: G answers to one prompt as ONE shared-prompt sequence vs G separate sequences.

Model: MiniMind2-Small shape (hidden 512, 8 layers, 8 heads, 2 KV heads, vocab 6400), random seeded
weights, fp32 on CPU (bf16 on CUDA). Workload: one prompt of --prompt_tokens random token ids and
--num_generations answers of exactly --answer_tokens tokens each (EOS off), greedy. Rows:

* ``shared_prompt``: what trainer/train_grpo.py does: `ParallelGenerator(mask_mode="isolated",
  branch_stride=0)` on `shared_prompt_sample(prompt, G)`: the prompt is prefilled once, the G answers
  decode as isolated branches of one row;
* ``separate``: the same engine with G one-branch samples of the whole prompt in one call (G rows,
  G prefills of the prompt: ordinary batched decoding);
* ``sequential``: the G sequences one call after another (for scale).

and the scoring forward every GRPO step takes on the rollout (old / reference log-probabilities):
``score_shared`` (one row: the prompt once, G answer branches at coordinate 0, isolated mask) vs
``score_separate`` (G rows of prompt + answer). Each repeat runs every row once, the order rotating;
reported: the median time per row (wall clock), tokens/s, the ratios shared / separate, whether the
shared rows give the same tokens and log-probabilities as the separate ones, and the load average
(the CPU may be shared with other work).

    python scripts/bench_grpo.py                       # G = 8, a 256-token prompt, 32 new tokens
    python -m scripts.bench_grpo --quick               # tiny sizes: a smoke run in seconds
    python scripts/bench_grpo.py --repeats 7 --threads 2 --out out/bench_grpo.json
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evaluation.benchmarking import (
    add_benchmark_args,
    alternating_timings,
    bench_device,
    emit_json,
    environment,
    loadavg,
    summary_ms,
)
from trainer.args import add_num_generations_arg, positive_int
from trainer.cli import ArgParser, cli_main, make_parser

SMALL = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, vocab_size=6400)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
TARGETS = {"shared_vs_separate_rollout_min": 2.0}


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_grpo")
    add_benchmark_args(p, repeats=5, quick_repeats=1, seed=0, device="cpu")
    w = p.add_argument_group("workload")
    add_num_generations_arg(w, 8, "answers per prompt (G)")
    w.add_argument("--prompt_tokens", type=positive_int, default=None, help="prompt tokens (default 256; --quick: 32)")
    w.add_argument("--answer_tokens", type=positive_int, default=None,
                   help="tokens per answer (default 32; --quick: 4)")
    return p


def build_model(device: torch.device, dtype: torch.dtype, quick: bool, seed: int):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    torch.manual_seed(seed)
    model = MiniMindForCausalLM(MiniMindConfig(**(QUICK if quick else SMALL), tie_word_embeddings=False))
    return model.to(device=device, dtype=dtype).eval()


def score_batches(prompt: list[int], answers: list[list[int]], device: torch.device) -> tuple[dict, dict]:
    """The rollout's training batch in the shared-prompt layout, and the same sequences as separate rows."""
    from trainer.rollouts import collate

    shared = collate([{"main": prompt[:-1], "branches": [{"input_ids": prompt[-1:] + a, "answer_offset": 1}
                                                         for a in answers]}], None, 0, device)
    separate = collate([{"branches": [{"input_ids": prompt + a, "answer_offset": len(prompt)}]} for a in answers],
                       None, 0, device)
    return shared, separate


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from model.parallel_generation import ParallelGenerator
    from trainer.rl import TargetSegments
    from trainer.rollouts import logprobs

    device, dtype = bench_device(args)
    G, quick = args.num_generations, args.quick
    prompt_len, new = args.prompt_tokens or (32 if quick else 256), args.answer_tokens or (4 if quick else 32)
    env = environment(device, dtype)  # its load average is the one at the start
    model = build_model(device, dtype, quick, args.seed)
    rng = random.Random(args.seed)
    prompt = [rng.randrange(3, model.config.vocab_size) for _ in range(prompt_len)]
    shared_gen = ParallelGenerator(model, None, mask_mode="isolated", branch_stride=0)
    plain = ParallelGenerator(model, None, mask_mode="isolated", branch_stride=0)

    def tokens(results) -> list[list[int]]:
        return [b.token_ids for r in results for b in r.branches]

    kw = dict(eos_token_ids=[], max_new_tokens=new)
    rows = {"shared_prompt": lambda: tokens(shared_gen.generate([shared_gen.shared_prompt_sample(prompt, G)], **kw)),
            "separate": lambda: tokens(plain.generate([{"branches": [prompt]} for _ in range(G)], **kw)),
            "sequential": lambda: [t for _ in range(G) for t in tokens(plain.generate([{"branches": [prompt]}], **kw))]}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        times, outputs = alternating_timings(rows, args.repeats, sync)
        answers = outputs["separate"]
        shared_b, separate_b = score_batches(prompt, answers, device)
        score = {"score_shared": lambda: logprobs(model, shared_b), "score_separate": lambda: logprobs(model, separate_b)}
        s_times, s_out = alternating_timings(score, args.repeats, sync)
    per_answer = {k: TargetSegments(b["labels"], b["branch_ids"]).pack(s_out[f"score_{k}"].float())
                  for k, b in (("shared", shared_b), ("separate", separate_b))}
    generated = G * new
    res_rows = {name: {**summary_ms(t), "tokens_per_s": round(generated / (summary_ms(t)["median_ms"] / 1e3), 1)}
                for name, t in times.items()}
    res_rows.update({name: summary_ms(t) for name, t in s_times.items()})
    ratio = res_rows["separate"]["median_ms"] / res_rows["shared_prompt"]["median_ms"]
    result = {
        "env": env, "workload": {"num_generations": G, "prompt_tokens": prompt_len,
                                                        "answer_tokens": new, "model": QUICK if quick else SMALL,
                                                        "repeats": args.repeats, "quick": quick},
        "rows": res_rows,
        "ratios": {"rollout_shared_vs_separate": round(ratio, 2),
                   "rollout_shared_vs_sequential": round(res_rows["sequential"]["median_ms"]
                                                         / res_rows["shared_prompt"]["median_ms"], 2),
                   "score_shared_vs_separate": round(res_rows["score_separate"]["median_ms"]
                                                     / res_rows["score_shared"]["median_ms"], 2)},
        "same_tokens": outputs["shared_prompt"] == answers == outputs["sequential"],
        "max_logprob_diff": float((per_answer["shared"] - per_answer["separate"]).abs().max()),
        "targets": TARGETS, "targets_met": {"shared_vs_separate_rollout_min": ratio >= TARGETS[
            "shared_vs_separate_rollout_min"]},
        "loadavg_end": loadavg(),
    }
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
