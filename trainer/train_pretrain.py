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

from parallel_data.parallel_dataset import ParallelPretrainDataset
from trainer.args import add_branch_args, add_data_args, add_model_args, add_train_args
from trainer.engine import run
from trainer.minimind import MiniMindStage


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_branch_args(p, default_branches=8)
    add_data_args(p, default_data="dataset/pretrain_demo.jsonl")
    add_train_args(p, epochs=1, batch_size=32, lr=5e-4, wandb_project="MiniMind-Pretrain")
    return p.parse_args(argv)


class PretrainStage(MiniMindStage):
    """Next-token cross-entropy on every token of every branch (the engine's default loss)."""

    name = "pretrain"

    def build_dataset(self, args, tokenizer):
        return ParallelPretrainDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                       hf_subset=args.hf_subset, hf_split=args.hf_split, text_column=args.text_column,
                                       max_samples=args.max_samples, chunk_length=args.chunk_length,
                                       max_seq_len=args.max_seq_len, val_samples=args.val_samples, seed=args.seed,
                                       strict_data=args.strict_data)


def main(argv=None) -> int:
    return run(parse_args(argv), PretrainStage())


if __name__ == "__main__":
    sys.exit(main())
