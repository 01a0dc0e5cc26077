"""Parallel pretraining of MiniMind with 2D RoPE: many branches per sample, one columnar sequence.

Run from the repo root (see README.md, "1. Pre-training"):

    python trainer/train_pretrain.py --data_path dataset/pretrain_demo.jsonl --hidden_size 256 \\
        --num_hidden_layers 4 --max_branches_per_sample 8 --batch_by_samples --batch_size 4
    python -m trainer.train_pretrain ...
    torchrun --nproc_per_node 8 trainer/train_pretrain.py ... --ddp

Writes {out_dir}/pretrain_{hidden}[_moe].pth (self-contained checkpoint), a resume state next to it
and {out_dir}/pretrain_{hidden}[_moe]_metrics.jsonl. An existing checkpoint there is continued with
--resume or replaced with --overwrite, never silently. Everything generic lives in trainer/engine/.
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
    p = make_parser(__doc__, "train_pretrain")
    add_minimind_train_args(p, default_data="dataset/pretrain_demo.jsonl", kind="text", default_branches=8,
                            batch_size=32, epochs=1, lr=5e-4, wandb_project="MiniMind-Pretrain")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from parallel_data.parallel_dataset import ParallelPretrainDataset  # noqa: E402
from trainer.engine import run  # noqa: E402
from trainer.minimind import MiniMindStage  # noqa: E402


class PretrainStage(MiniMindStage):
    """Next-token cross-entropy on every token of every branch (the engine's default loss)."""

    name = "pretrain"

    def build_dataset(self, args, tokenizer):
        return ParallelPretrainDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                       hf_subset=args.hf_subset, hf_split=args.hf_split, text_column=args.text_column,
                                       max_samples=args.max_samples, chunk_length=args.chunk_length,
                                       max_seq_len=args.max_seq_len, val_samples=args.val_samples, seed=args.seed,
                                       strict_data=args.strict_data)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, PretrainStage())


if __name__ == "__main__":
    sys.exit(main())
