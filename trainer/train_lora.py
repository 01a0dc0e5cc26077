"""LoRA supervised fine-tuning of a MiniMind checkpoint: the base stays frozen, only the adapter trains and is saved.

Run from the repo root (see README.md, "Post-training"):

    python trainer/train_lora.py --data_path dataset/sft_demo.jsonl --init_weight out/full_sft_512.pth \\
        --lora_name lora_identity --lora_rank 8
    python -m trainer.train_lora ...
    torchrun --nproc_per_node 8 trainer/train_lora.py ... --ddp

PEFT LoRA layers (model/model_lora.py) go on every attention and MLP projection of the decoder blocks
(`--lora_target_modules` to choose), scaled by `--lora_alpha` / `--lora_rank`. The data and batches are
those of SFT (several conversations per sample as branches, loss on the assistant turns). Writes
{out_dir}/lora/{lora_name}_{hidden}[_moe].pth, the adapter alone (it loads with
`torch.load(weights_only=True)`, and for generation with
`scripts/parallel_generate.py --model_path <base>.pth --lora_path <that file>`). The base is
--init_weight (alias --model_path; default {out_dir}/full_sft_{hidden}[_moe].pth), also when resuming.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_lora_train_args, add_minimind_train_args
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_lora")
    add_minimind_train_args(p, default_data="dataset/sft_demo.jsonl", kind="conversations", default_branches=4,
                            batch_size=16, epochs=2, lr=1e-4, wandb_project="MiniMind-LoRA")
    add_lora_train_args(p, name="lora_identity", rank=8)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

import torch  # noqa: E402

from model.model_lora import apply_lora, lora_parameters, lora_payload, set_lora_state_dict  # noqa: E402
from trainer.engine import run  # noqa: E402
from trainer.minimind import MiniMindStage, init_weight_path, sft_dataset  # noqa: E402


class LoRAStage(MiniMindStage):
    """The base from --init_weight (always), PEFT adapters on it; the checkpoint holds the adapter only."""

    name = "lora"
    warm_start_from = "full_sft"

    def stem_prefix(self, args) -> str:
        return f"lora/{args.lora_name}"

    def _weights_source(self, args, resume: bool) -> str | None:
        return self._init_checkpoint(args)  # the base: the adapter of a resumed run is loaded on top of it

    def build_model(self, args, tokenizer, *, resume: bool):
        self.base = init_weight_path(args, self.default_init(args))
        if self.base is None:
            raise SystemExit("LoRA adapts an existing model: pass its checkpoint with --init_weight")
        model, _ = super().build_model(args, tokenizer, resume=resume)
        apply_lora(model, args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout,
                   targets=args.lora_target_modules)
        info = {"step": None, "save_id": None, "from": self.base}
        if resume:
            path = Path(args.out_dir) / f"{self.checkpoint_stem(args)}.pth"
            saved = torch.load(path, map_location="cpu", weights_only=True)
            set_lora_state_dict(model, saved["adapter_state_dict"], source=str(path))
            info = {"step": saved["meta"]["step"], "save_id": saved["meta"]["save_id"], "from": str(path)}
        return model, info

    def select_trainable(self, model) -> None:
        model.requires_grad_(False)
        for _, p in lora_parameters(model):
            p.requires_grad_(True)

    def build_dataset(self, args, tokenizer):
        return sft_dataset(args, tokenizer)

    def checkpoint_payload(self, model, tokenizer, meta: dict) -> dict:
        return {**lora_payload(model), "meta": {**meta, "base_model": self.base}}


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, LoRAStage())


if __name__ == "__main__":
    sys.exit(main())
