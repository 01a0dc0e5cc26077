"""Parallel pretraining of MiniMind with 2D RoPE: many branches per sample, one columnar sequence.

Run from the repo root (see README.md, "1. Pre-training"):

    python trainer/train_pretrain.py --data_path dataset/pretrain_demo.jsonl --hidden_size 256 \\
        --num_hidden_layers 4 --max_branches_per_sample 8 --batch_by_samples --batch_size 4
    python -m trainer.train_pretrain ...
    torchrun --nproc_per_node 8 trainer/train_pretrain.py ... --ddp

Writes {out_dir}/pretrain_{hidden}[_moe].pth (self-contained checkpoint), a resume state next to it
and {out_dir}/pretrain_{hidden}[_moe]_metrics.jsonl. Everything generic lives in trainer/engine.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.parallel_dataset import ParallelPretrainDataset
from trainer.args import add_branch_args, add_data_args, add_model_args, add_train_args
from trainer.engine import Stage, run
from trainer.minimind import build_minimind, init_weight_path, stem_for, stem_from_args, tokenizer_for

STAGE = "pretrain"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add_branch_args(p, default_branches=8)
    add_data_args(p, default_data="dataset/pretrain_demo.jsonl")
    add_train_args(p, epochs=1, batch_size=32, lr=5e-4, wandb_project="MiniMind-Pretrain")
    return p.parse_args(argv)


def _checkpoint(args, resume_from: bool) -> str | None:
    if resume_from:
        return str(Path(args.out_dir) / f"{stem_from_args(STAGE, args)}.pth")
    return init_weight_path(args, default=None)


def build_dataset(args, tokenizer):
    return ParallelPretrainDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                   hf_subset=args.hf_subset, hf_split=args.hf_split, text_column=args.text_column,
                                   max_samples=args.max_samples, chunk_length=args.chunk_length,
                                   max_seq_len=args.max_seq_len, val_samples=args.val_samples, seed=args.seed)


def main(argv=None) -> int:
    args = parse_args(argv)
    stage = Stage(
        name=STAGE,
        checkpoint_stem=stem_for(STAGE),
        load_tokenizer=lambda a: tokenizer_for(a, _checkpoint(a, a.resume)),
        build_model=lambda a, tok, resume_from: build_minimind(a, tok, checkpoint=_checkpoint(a, resume_from)),
        build_dataset=build_dataset,
    )
    return run(args, stage)


if __name__ == "__main__":
    sys.exit(main())
