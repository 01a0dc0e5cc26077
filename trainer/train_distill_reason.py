"""Reasoning distillation of MiniMind: SFT on R1-style `<think>...</think><answer>...</answer>` conversations.

Run from the repo root (see README.md, "Post-training"):

    python trainer/train_distill_reason.py --data_path dataset/reason_demo.jsonl --init_weight out/full_sft_512.pth \\
        --val_samples 64 --val_interval 200
    python -m trainer.train_distill_reason ...
    torchrun --nproc_per_node 8 trainer/train_distill_reason.py ... --ddp

The loss is the SFT cross-entropy on every assistant turn, with `--tag_weight` (default 10) on the tokens of
the four tags (parallel_data/reasoning.py), normalised by the number of target tokens. Each validation
(--val_samples held-out records) also decodes the first `--format_eval_samples` held-out prompts greedily
with the generation engine and logs the share in the R1 format as val_format_accuracy. Starts from
--init_weight (alias --model_path; default {out_dir}/full_sft_{hidden}[_moe].pth) and writes
{out_dir}/reason_{hidden}[_moe].pth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import UsageError, add_max_new_tokens_arg, add_minimind_train_args, nonneg_float, nonneg_int
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser

FORMAT_EVAL = {"format_eval_samples": 32, "max_new_tokens": 256}  # defaults of the format check


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_distill_reason")
    add_minimind_train_args(p, default_data="dataset/reason_demo.jsonl", kind="conversations", default_branches=4,
                            batch_size=8, epochs=1, lr=1e-4, wandb_project="MiniMind-Reason")
    g = p.add_argument_group("reasoning")
    g.add_argument("--tag_weight", type=nonneg_float, default=10.0,
                   help="loss weight of the <think> </think> <answer> </answer> tokens (default 10; 1 = plain SFT)")
    g.add_argument("--format_eval_samples", type=nonneg_int, default=None,
                   help="held-out prompts decoded at each validation to measure format accuracy (default 32; 0 = off)")
    add_max_new_tokens_arg(g, None, minimum=1)
    p.add_check(_check_format_eval)
    return p


def _check_format_eval(args) -> None:
    given = [f"--{k}" for k in FORMAT_EVAL if getattr(args, k) is not None]
    if given and not args.val_samples:
        raise UsageError(f"{given[0]} sets the format check on held-out data, but --val_samples is 0")
    for k, v in FORMAT_EVAL.items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from parallel_data.reasoning import ReasonDataset, heldout_prompts  # noqa: E402
from trainer.engine import run  # noqa: E402
from trainer.minimind import MiniMindStage, sft_dataset  # noqa: E402
from trainer.reasoning import WeightedCrossEntropyLoss, format_accuracy  # noqa: E402


class ReasonStage(MiniMindStage):
    """SFT with weighted tag tokens; format accuracy of greedy generations at each validation."""

    name = "reason"
    run_only_settings = frozenset({"format_eval_samples", "max_new_tokens"})  # evaluation only
    warm_start_from = "full_sft"

    def build_dataset(self, args, tokenizer):
        self.args = args
        return sft_dataset(args, tokenizer, ReasonDataset, tag_weight=args.tag_weight)

    def build_loss(self, args, companions):
        return WeightedCrossEntropyLoss(args.mask_mode)

    def evaluate(self, ctx, dataset) -> dict[str, float]:
        n = self.args.format_eval_samples
        if not n:
            return {}
        if getattr(self, "_prompts", None) is None:  # the held-out prompts, tokenised once
            self._prompts = heldout_prompts(dataset, n)
        return format_accuracy(ctx, self._prompts, max_new_tokens=self.args.max_new_tokens)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, ReasonStage())


if __name__ == "__main__":
    sys.exit(main())
