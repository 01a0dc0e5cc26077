"""White-box knowledge distillation of MiniMind: a student learns a frozen teacher's distributions on SFT data.

Run from the repo root (see README.md, "Post-training"):

    python trainer/train_distillation.py --teacher_path out/full_sft_512.pth --init_weight none \\
        --hidden_size 256 --num_hidden_layers 4 --data_path dataset/sft_demo.jsonl
    python -m trainer.train_distillation ...
    torchrun --nproc_per_node 8 trainer/train_distillation.py ... --ddp

The loss at every assistant token is `--alpha` x cross-entropy + (1 - alpha) x T^2 x KL(teacher_T ||
student_T) with T = `--temperature` (trainer/distill.py; `--alpha 0` is pure distillation). The batches
are the usual parallel ones (several conversations per sample as branches); the teacher sees the same
positions and mask, so it must share the student's tokenizer, vocabulary and position settings. The
student starts from --init_weight (alias --model_path; default {out_dir}/full_sft_{hidden}[_moe].pth) or,
with `--init_weight none`, fresh with its own --hidden_size / --num_hidden_layers. Writes
{out_dir}/distill_{hidden}[_moe].pth (the student's size).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_minimind_train_args, check_model_path, positive_float, ratio
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_distillation")
    add_minimind_train_args(p, default_data="dataset/sft_demo.jsonl", kind="conversations", default_branches=4,
                            batch_size=16, epochs=1, lr=5e-4, wandb_project="MiniMind-Distillation")
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher_path", required=True, help="the teacher: a MiniMind .pth checkpoint (frozen)")
    g.add_argument("--alpha", type=ratio, default=0.5, help="weight of the cross-entropy on the labels (default 0.5; "
                                                            "0 = pure distillation)")
    g.add_argument("--temperature", type=positive_float, default=1.5, help="softmax temperature of the KL term")
    p.add_check(lambda a: check_model_path(a.teacher_path, "--teacher_path"), paths=True)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from trainer.distill import DistillLoss, check_teacher  # noqa: E402
from trainer.engine import Companion, run  # noqa: E402
from trainer.minimind import MiniMindStage, load_companion_checkpoint, sft_dataset  # noqa: E402


class DistillationStage(MiniMindStage):
    """A student (warm or fresh) and a frozen teacher; the loss mixes CE and the teacher's soft targets."""

    name = "distill"
    warm_start_from = "full_sft"

    def build_dataset(self, args, tokenizer):
        return sft_dataset(args, tokenizer)

    def build_companions(self, args, tokenizer, policy):
        teacher = load_companion_checkpoint(args.teacher_path, args, "teacher", tokenizer)
        try:
            check_teacher(teacher, policy)
        except ValueError as e:
            raise SystemExit(f"--teacher_path {args.teacher_path}: {e}") from None
        return {"teacher": Companion(teacher)}

    def build_loss(self, args, companions):
        return DistillLoss(args.mask_mode, companions["teacher"], alpha=args.alpha, temperature=args.temperature)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, DistillationStage())


if __name__ == "__main__":
    sys.exit(main())
