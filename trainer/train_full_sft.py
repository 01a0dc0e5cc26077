"""Parallel supervised fine-tuning of MiniMind: several conversations per sample, loss on assistant turns.

Run from the repo root (see README.md, "2. Supervised Fine-Tuning"):

    python trainer/train_full_sft.py --data_path dataset/sft_demo.jsonl --init_weight out/pretrain_512.pth \\
        --max_branches_per_sample 8 --batch_size 4
    torchrun --nproc_per_node 8 trainer/train_full_sft.py ... --ddp

Starts from --init_weight (default {out_dir}/pretrain_{hidden}[_moe].pth), loaded strictly with its own
config; `--init_weight none` starts from random weights. Writes {out_dir}/full_sft_{hidden}[_moe].pth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_minimind_train_args
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_full_sft")
    add_minimind_train_args(p, default_data="dataset/sft_demo.jsonl", kind="conversations", default_branches=4,
                            batch_size=16, epochs=2, lr=5e-7, wandb_project="MiniMind-Full-SFT")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from parallel_data.parallel_dataset import ParallelSFTDataset  # noqa: E402
from trainer.engine import run  # noqa: E402
from trainer.minimind import MiniMindStage, stem_from_args  # noqa: E402


class SFTStage(MiniMindStage):
    """Cross-entropy on the assistant turns (the dataset's labels), warm-started from the pretrained model."""

    name = "full_sft"

    def default_init(self, args) -> str | None:
        return str(Path(args.out_dir) / f"{stem_from_args('pretrain', args)}.pth")

    def build_dataset(self, args, tokenizer):
        return ParallelSFTDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                  hf_subset=args.hf_subset, hf_split=args.hf_split, max_samples=args.max_samples,
                                  max_seq_len=args.max_seq_len, val_samples=args.val_samples, seed=args.seed,
                                  fmt=args.format, strict_data=args.strict_data)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, SFTStage())


if __name__ == "__main__":
    sys.exit(main())
