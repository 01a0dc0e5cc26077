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

from parallel_data.parallel_dataset import ParallelSFTDataset
from trainer.args import add_branch_args, add_data_args, add_model_args, add_train_args
from trainer.engine import run
from trainer.minimind import MiniMindStage, stem_from_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_branch_args(p, default_branches=4)
    add_data_args(p, default_data="dataset/sft_demo.jsonl")
    add_train_args(p, epochs=2, batch_size=16, lr=5e-7, wandb_project="MiniMind-Full-SFT")
    p.add_argument("--format", default="auto", choices=["auto", "standard", "openai", "sharegpt", "alpaca", "simple"],
                   help="conversation format of the data")
    return p.parse_args(argv)


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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.chunk_length:
        raise SystemExit("--chunk-length (token packing) is for pretraining; SFT keeps conversations whole")
    return run(args, SFTStage())


if __name__ == "__main__":
    sys.exit(main())
