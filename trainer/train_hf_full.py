"""Full fine-tuning of a Hugging Face causal LM with 2D RoPE on parallel data (README "Fine-tuning HuggingFace Models").

Run from the repo root (a local model folder, or a Hub name when the Hub is reachable):

    python trainer/train_hf_full.py --base_model out/models/SmolLM2-135M-Instruct \\
        --data_path dataset/sft_512.jsonl --data_mode parallel_sft --batch_size 2 --batch_by_samples \\
        --max_branches_per_sample 4 --min_branches_per_sample 1 --branch_stride 512 --rope_2d_ratio 0.5
    python -m trainer.train_hf_full ...
    torchrun --nproc_per_node 8 trainer/train_hf_full.py ... --ddp            # replicas
    torchrun --nproc_per_node 8 trainer/train_hf_full.py ... --ddp --fsdp     # a model too big for one GPU

Every parameter trains (float32 master weights; --dtype sets the autocast compute dtype). --fsdp
shards parameters, gradients and optimizer state over the ranks (FSDP2); checkpoints are gathered
whole. Writes {out_dir}/full/full_{model_tag}.pth (the latest weights, continued with --resume) and
standard Hugging Face folders `full_{model_tag}_step{N}/` at every --save_interval and
`full_{model_tag}_final/` at the end (safetensors, config.json with the 2D-RoPE settings, tokenizer):
`load_parallel_model(model_path=...)` re-patches them, `AutoModelForCausalLM.from_pretrained` gives
the plain model. See docs/HF_FINETUNING.md.
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

    return HFStage(lora=False, name="hf_full")


def add_args(p) -> None:
    add_hf_train_args(p, lora=False, data_mode="parallel", model_tag="hf_full", epochs=3, lr=1e-5,
                      wandb_project="MiniMind-HF-Full")


build_parser, parse_args, main = stage_front(__doc__, "train_hf_full", add_args, hf_stage)

if __name__ == "__main__":
    sys.exit(main())
