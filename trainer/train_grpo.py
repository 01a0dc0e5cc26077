"""GRPO of a MiniMind model: G answers per prompt decoded as the branches of ONE shared-prompt sample.

Run from the repo root (see docs/RL.md):

    python trainer/train_grpo.py --data_path dataset/rl_prompts_demo.jsonl --init_weight out/full_sft_512.pth \\
        --num_generations 8 --max_new_tokens 32 --batch_size 4
    python -m trainer.train_grpo ...
    torchrun --nproc_per_node 8 trainer/train_grpo.py ... --ddp

Data: `{"prompt" | "conversations", "answer"}` per line (parallel_data/prompt_dataset.py). Each step,
every prompt of the batch is one sample of --num_generations isolated branches at branch coordinate 0:
the prompt is prefilled once and each branch decodes (and is trained) exactly as the prompt alone
would be. Rewards: exact match with `answer` (default) or --reward_model_path. Advantages are the
rewards minus their group mean, scaled by --scale_rewards; the loss is the clipped surrogate
(--epsilon, --epsilon_high) plus --beta x the k3 KL to the frozen starting model, normalised per
--loss_type (grpo: per answer, then over answers; dapo: over all tokens; dr_grpo: answers x
--max_new_tokens). --num_iterations updates per rollout. Rollouts always come from the current
weights (on-policy); per-branch seeds make them batch-invariant and a resume replays them.
Writes {out_dir}/grpo_{hidden}[_moe].pth (an ordinary MiniMind checkpoint) and its metrics
(reward, reward_std, frac_reward_zero_std, kl, clip_ratio, entropy, completion_length, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel.names import GRPO_LOSS_TYPES, SCALE_REWARDS
from trainer.args import (
    add_beta_arg,
    add_loss_type_arg,
    add_num_generations_arg,
    add_rl_train_args,
    nonneg_float,
    positive_float,
    positive_int,
)
from trainer.cli import ArgParser, UsageError, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_grpo")
    add_rl_train_args(p, default_data="dataset/rl_prompts_demo.jsonl", batch_size=4, branches=None, epochs=1,
                      lr=1e-6, max_new_tokens=64, wandb_project="MiniMind-GRPO")
    g = p.add_argument_group("GRPO")
    add_num_generations_arg(g, 8, "answers per prompt (G, at least 2)")
    add_beta_arg(g, 0.04, "weight of the k3 KL to the starting model (0: no reference model is kept)", zero_ok=True)
    add_loss_type_arg(g, GRPO_LOSS_TYPES, "normalisation: dapo (per token), grpo (per answer), dr_grpo (answers x "
                                          "max_new_tokens)")
    g.add_argument("--scale_rewards", choices=SCALE_REWARDS, default="group",
                   help="divide the centred rewards by the std of the group (default), of the batch, or not at all")
    g.add_argument("--epsilon", type=positive_float, default=0.2, help="lower clipping range of the ratio")
    g.add_argument("--epsilon_high", type=nonneg_float, default=None, help="upper clipping range (default: --epsilon)")
    g.add_argument("--num_iterations", type=positive_int, default=1,
                   help="optimizer updates on each rollout (mu); above 1 the ratio to the rollout's policy is clipped")
    p.add_check(_check_grpo)
    return p


def _check_grpo(args) -> None:
    if args.num_generations < 2:
        raise UsageError(f"--num_generations {args.num_generations}: GRPO compares answers within a group, so it "
                         "needs at least 2")


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from trainer.engine import run  # noqa: E402
from trainer.rl import GRPOLoss  # noqa: E402
from trainer.rl_stage import RLStage  # noqa: E402
from trainer.rollouts import ROLLOUT_MASK, GRPORollout  # noqa: E402


class GRPOStage(RLStage):
    name = "grpo"

    def uses_reference(self, args) -> bool:
        return args.beta > 0

    def build_loss(self, args, companions):
        return GRPOLoss(ROLLOUT_MASK, args.loss_type, args.beta, args.epsilon, args.epsilon_high)

    def build_rollout(self, args, tokenizer):
        return GRPORollout(num_generations=args.num_generations, sampling=self.sampling(args),
                           max_new_tokens=args.max_new_tokens, reward=self.reward(args),
                           scale_rewards=args.scale_rewards, loss_type=args.loss_type, beta=args.beta,
                           num_iterations=args.num_iterations, eos_id=self.eos_id(tokenizer))


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, GRPOStage())


if __name__ == "__main__":
    sys.exit(main())
