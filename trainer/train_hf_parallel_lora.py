"""LoRA fine-tuning of a Hugging Face model on parallel data (seed 002: docs/HF_FINETUNING.md).

Run from the repo root (a local model folder, or a Hub name when the Hub is reachable):

    python trainer/train_hf_parallel_lora.py --base_model out/models/SmolLM2-135M-Instruct \\
        --data_path dataset/sft_data_parallel.jsonl --lora_rank 8 --rope_2d_ratio 0.5 --batch_size 16 \\
        --epochs 3 --max_seq_len 512 --branches_per_sample 8
    python -m trainer.train_hf_parallel_lora ...
    torchrun --nproc_per_node 4 trainer/train_hf_parallel_lora.py ... --ddp

The same stage as trainer/train_hf_lora.py (trainer/hf.py) with seed 002's defaults: parallel records
(`{"main", "branches"}` or `{"text"}`), one epoch, outputs {out_dir}/lora/{lora_name}_step{N}.pth and
{out_dir}/lora/{lora_name}_final.pth (default hf_parallel_lora_final.pth), each with a PEFT folder
beside it. `auto_pair_indices` stays importable from here for the seed's inference snippet:

    from trainer.train_hf_parallel_lora import auto_pair_indices
    pair_indices = auto_pair_indices(model, ratio=0.5)        # 1-based rotary pairs for the model
    patch_model_with_interleaved_2d_rope(model, pair_indices)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel.columnar import auto_pair_indices
from trainer.args import add_hf_train_args
from trainer.cli import stage_front

__all__ = ["auto_pair_indices", "build_parser", "main"]


def hf_stage():
    from trainer.hf import HFStage

    return HFStage(lora=True, name="hf_parallel_lora")


def add_args(p) -> None:
    add_hf_train_args(p, lora=True, data_mode="parallel", lora_name="hf_parallel_lora", model_tag="", epochs=1,
                      lr=1e-4, wandb_project="MiniMind-HF-Parallel-LoRA")


build_parser, parse_args, main = stage_front(__doc__, "train_hf_parallel_lora", add_args, hf_stage)

if __name__ == "__main__":
    sys.exit(main())
