"""Benchmark DPO training steps/s: shared-prompt pairs vs separate sequences (JSON output).

    python scripts/bench_dpo.py --out_path out/bench_dpo.json
    python scripts/bench_dpo.py --quick            # a smoke run (numbers are meaningless)

Each pair has a `--prompt_len`-token prompt (default 128) and two `--response_len`-token responses
(default 32), random token ids. One DPO step is what trainer/train_dpo.py does per batch: the policy's
forward and backward, the frozen reference's forward, an AdamW step, on `--pairs` pairs per batch.

* `shared`: one row per pair, the prompt once, chosen and rejected as isolated branches at branch
  coordinate 0 (parallel_data/preference.py): prompt + 2 x response tokens per pair;
* `separate`: chosen and rejected as two plain rows (TRL's concatenated batch): 2 x (prompt + response).

Both rows compute the same loss (checked before timing). Rows alternate (shared, separate, shared, ...);
each timed run is `--steps` steps after one warm-up step; the median over `--repeats` runs is reported,
and the ratio shared / separate is taken within this one run (also per alternated pair of runs,
`paired_ratios`, which a drifting machine load disturbs less). The model is the MiniMind tiny config
(hidden 256, 4 layers; --quick: hidden 64, 2 layers), fp32 on CPU, bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.benchmarking import add_benchmark_args
from trainer.args import positive_int
from trainer.cli import ArgParser, cli_main, make_parser

SHAPES = {"tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2),
          "quick": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)}


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_dpo")
    add_benchmark_args(p, repeats=5, quick_repeats=2, steps=6, quick_steps=2, steps_help="DPO steps per timed run",
                       seed=0)
    g = p.add_argument_group("pairs")
    g.add_argument("--prompt_len", type=positive_int, default=None, help="prompt tokens (default 128; --quick: 32)")
    g.add_argument("--response_len", type=positive_int, default=None,
                   help="tokens of each response (default 32; --quick: 8)")
    g.add_argument("--pairs", type=positive_int, default=None, help="pairs per batch (default 8; --quick: 2)")

    def sizes(args) -> None:
        for k, full, quick in (("prompt_len", 128, 32), ("response_len", 32, 8), ("pairs", 8, 2)):
            if getattr(args, k) is None:
                setattr(args, k, quick if args.quick else full)
    p.add_check(sizes)
    return p


def make_pairs(tok, n: int, prompt_len: int, response_len: int, seed: int) -> list[dict]:
    """`n` shared-layout pair samples of random ids (the main is the prompt but its last token)."""
    import torch

    from parallel_data.preference import layout_pair

    g = torch.Generator().manual_seed(seed)
    low = len(tok.all_special_ids) + 8
    out = []
    for _ in range(n):
        prompt, c, r = (torch.randint(low, len(tok), (k,), generator=g).tolist()
                        for k in (prompt_len, response_len, response_len))
        out.append(layout_pair(prompt + c, prompt_len, prompt + r, prompt_len, "shared"))
    return out


def separate_logps(model, rows: dict):
    """(chosen `[P]`, rejected `[P]`) response log-probs of a batch of plain rows: chosen, rejected, chosen, ..."""
    from trainer.logprobs import per_branch_sum, target_logits, token_logprobs

    logits, labels, _ = target_logits(model, rows, "isolated")
    per = per_branch_sum(token_logprobs(logits, labels), rows)[:, 1]
    return per[0::2], per[1::2]


def separate_loss(policy, reference, rows: dict, beta: float):
    """The DPO loss of a separate-rows batch, summed over its pairs (TRL's concatenated forward)."""
    import torch

    from trainer.preference import dpo_losses

    pol_c, pol_r = separate_logps(policy, rows)
    with torch.no_grad():
        ref_c, ref_r = separate_logps(reference, rows)
    losses = dpo_losses(pol_c, pol_r, ref_c, ref_r, beta=beta)
    return losses.sum(), int(losses.numel())


def time_row(step, name: str, steps: int, sync) -> float:
    step(name)  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(name)
    sync()
    return steps / (time.perf_counter() - t0)


def build_models(tok, shape: dict, device, seed: int):
    """A seeded policy (training) and a frozen reference of the same shape."""
    import torch

    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    cfg = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(seed)
    policy = MiniMindForCausalLM(MiniMindConfig(**cfg)).to(device).train()
    reference = MiniMindForCausalLM(MiniMindConfig(**cfg)).to(device).eval().requires_grad_(False)
    return policy, reference


def summarise(rates: dict[str, list[float]], batches: dict[str, dict]) -> dict:
    """Median steps/s per row, the ratio shared / separate (also per alternated pair) and the batch sizes."""
    res = {name: {"steps_per_s": round(statistics.median(r), 4), "runs": [round(x, 4) for x in r],
                  "rows": int(batches[name]["input_ids"].shape[0]), "seq_len": int(batches[name]["input_ids"].shape[1]),
                  "tokens": int(batches[name]["num_tokens"])} for name, r in rates.items()}
    res["ratio_shared_over_separate"] = round(res["shared"]["steps_per_s"] / res["separate"]["steps_per_s"], 3)
    # each shared run over the separate run right after it: the load drifts less within a pair
    res["paired_ratios"] = [round(a / b, 3) for a, b in zip(rates["shared"], rates["separate"])]
    res["token_ratio_separate_over_shared"] = round(res["separate"]["tokens"] / res["shared"]["tokens"], 3)
    return res


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    import torch

    from evaluation.benchmarking import bench_device, emit_json, environment, loadavg
    from model.tokenizer import load_tokenizer
    from parallel_data.parallel_collator import ParallelCollator
    from parallel_data.preference import pair_rows
    from trainer.loss import autocast_context, to_device
    from trainer.preference import DPOLoss

    load_start = loadavg()
    device, dtype = bench_device(args)
    amp = dtype if device.type == "cuda" else None
    tok = load_tokenizer()
    shape = SHAPES["quick" if args.quick else "tiny"]
    policy, reference = build_models(tok, shape, device, args.seed)
    loss_fn = DPOLoss(reference, beta=0.1)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)

    units = make_pairs(tok, args.pairs, args.prompt_len, args.response_len, args.seed)
    collator = ParallelCollator(tok, branch_stride=policy.config.branch_stride)
    batches = {"shared": to_device(collator.collate(units), device),
               "separate": to_device(collator.collate([r for u in units for r in pair_rows(u)]), device)}

    def loss_of(name: str):
        if name == "shared":
            out = loss_fn(policy, batches[name])
            return out.loss, out.targets
        return separate_loss(policy, reference, batches[name], 0.1)

    def step(name: str) -> None:
        with autocast_context(device, amp):
            loss, n = loss_of(name)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad(), autocast_context(device, amp):  # the same loss from both layouts
        losses = {k: float(loss_of(k)[0]) for k in batches}
    if abs(losses["shared"] - losses["separate"]) > 1e-3 * max(1.0, abs(losses["separate"])):
        raise SystemExit(f"the two layouts disagree: {losses}")
    rates: dict[str, list[float]] = {"shared": [], "separate": []}
    for i in range(args.repeats):  # rows alternate, so drifting machine load hits both alike
        for name in rates:
            rates[name].append(time_row(step, name, args.steps, sync))
            print(f"run {i + 1}/{args.repeats} {name}: {rates[name][-1]:.3f} steps/s", file=sys.stderr, flush=True)
    res = summarise(rates, batches)
    res["setting"] = {"prompt_len": args.prompt_len, "response_len": args.response_len, "pairs": args.pairs,
                      "steps": args.steps, "repeats": args.repeats, "model": shape, "dtype": "bf16" if amp else "fp32",
                      "loss_check": losses}
    res["env"] = {**environment(device), "loadavg_start": load_start, "loadavg_end": loadavg()}
    emit_json(res, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
