"""LoRA fine-tuning of a Hugging Face causal LM with 2D RoPE on parallel data (README "Fine-tuning HuggingFace Models").

Run from the repo root (a local model folder, or a Hub name when the Hub is reachable):

    python trainer/train_hf_lora.py --base_model out/models/SmolLM2-135M-Instruct \\
        --data_path dataset/sft_512.jsonl --data_mode parallel_sft --batch_size 4 --batch_by_samples \\
        --max_branches_per_sample 4 --min_branches_per_sample 1 --branch_stride 512 --rope_2d_ratio 0.5
    python -m trainer.train_hf_lora ...
    torchrun --nproc_per_node 8 trainer/train_hf_lora.py ... --ddp        # add --fsdp to shard the base model

The base model's rotary module is patched with 2D RoPE (--no_patch_rope keeps it plain) and PEFT LoRA
adapters are trained on every Linear layer of its decoder blocks (--lora_rank; --load_lora continues
an adapter). --data_mode parallel reads text / grouped records, parallel_sft conversations (loss on
the answers only). Writes {out_dir}/lora/{lora_name}_{model_tag}.pth (the latest adapter, continued
with --resume), `..._step{N}.pth` at every --save_interval and `..._final.pth` at the end, each with
a standard PEFT folder beside it; by default out/lora/hf_lora_hf_final.pth. The adapter carries its
2D-RoPE settings: `load_parallel_model(hf_base_model=..., lora_path=...)` needs no training flags.
See docs/HF_FINETUNING.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_hf_train_args
from trainer.cli import stage_front


def hf_stage():
    from trainer.hf import HFStage

    return HFStage(lora=True, name="hf_lora")


def add_args(p) -> None:
    add_hf_train_args(p, lora=True, data_mode="parallel", lora_name="hf_lora", model_tag="hf", epochs=3, lr=1e-4,
                      wandb_project="MiniMind-HF-LoRA")


build_parser, parse_args, main = stage_front(__doc__, "train_hf_lora", add_args, hf_stage)

if __name__ == "__main__":
    sys.exit(main())
