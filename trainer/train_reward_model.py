"""Bradley-Terry reward model of MiniMind on chosen / rejected pairs, with the prompt computed once per pair.

Run from the repo root (see docs/RL.md):

    python trainer/train_reward_model.py --data_path dataset/dpo_demo.jsonl --init_weight out/full_sft_512.pth
    python -m trainer.train_reward_model ...
    torchrun --nproc_per_node 8 trainer/train_reward_model.py ... --ddp

Data: the preference records of DPO (`{"chosen": [msgs], "rejected": [msgs]}` or `{"prompt", "chosen",
"rejected"}`, parallel_data/preference.py), each pair one sample: the shared prompt once, then both
responses as isolated branches at coordinate 0. A value head (hidden -> 1, starting at zero) on the
backbone scores each response at its last real token; the loss is -log sigmoid(r_chosen - r_rejected)
plus `--center_coef` x (r_chosen + r_rejected)^2 (trainer/reward_model.py). Logs pairwise accuracy,
margin and the mean rewards per pair; with --val_samples every validation prints the pairwise accuracy
on the held-out pairs (val_accuracy). Starts from --init_weight (alias --model_path; default
{out_dir}/full_sft_{hidden}[_moe].pth; `none` for random weights) and writes {out_dir}/rm_{hidden}[_moe].pth:
a MiniMind checkpoint plus the head (`torch.load(weights_only=True)`), which PPO and GRPO read with
--reward_model_path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.args import add_minimind_train_args, nonneg_float
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_reward_model")
    add_minimind_train_args(p, default_data="dataset/dpo_demo.jsonl", kind="pairs", default_branches=2,
                            batch_size=8, epochs=1, lr=1e-5, wandb_project="MiniMind-RM")
    g = p.add_argument_group("reward model")
    g.add_argument("--center_coef", type=nonneg_float, default=0.0,
                   help="weight of the centering term (r_chosen + r_rejected)^2 (default 0: off; TRL uses 0.01)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from model.value_head import ValueModel, is_value_payload, value_model_from_payload, value_model_payload  # noqa: E402
from parallel_data.preference import PreferenceDataset  # noqa: E402
from trainer.engine import run  # noqa: E402
from trainer.minimind import MiniMindStage, checkpoint_overrides  # noqa: E402
from trainer.reward_model import BradleyTerryLoss  # noqa: E402


class RewardModelStage(MiniMindStage):
    """A `ValueModel` on the starting checkpoint's backbone (or a reward model's, head included), pairs as targets."""

    name = "rm"
    warm_start_from = "full_sft"

    def build_dataset(self, args, tokenizer):
        return PreferenceDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                 hf_subset=args.hf_subset, hf_split=args.hf_split, max_samples=args.max_samples,
                                 max_seq_len=args.max_seq_len, val_samples=args.val_samples, seed=args.seed,
                                 layout=args.pair_layout, strict_data=args.strict_data)

    def build_model(self, args, tokenizer, *, resume: bool):
        source = self._weights_source(args, resume)
        if source and Path(source).is_file() and is_value_payload(self._payload(source)):  # resume, or an RM
            payload = self._payload(source)
            try:
                model = value_model_from_payload(payload, source=source, overrides=checkpoint_overrides(args))
            except ValueError as e:
                raise SystemExit(f"cannot start from {source}: {e}") from None
            meta = payload.get("meta", {})
            self._payloads.clear()
            return model.train(), {"step": meta.get("step"), "save_id": meta.get("save_id"), "from": source}
        lm, info = super().build_model(args, tokenizer, resume=resume)
        return ValueModel(lm).train(), info

    def build_loss(self, args, companions):
        return BradleyTerryLoss(args.center_coef)

    def checkpoint_payload(self, model, tokenizer, meta: dict) -> dict:
        return value_model_payload(model, tokenizer, meta)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, RewardModelStage())


if __name__ == "__main__":
    sys.exit(main())
