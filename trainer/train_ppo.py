"""PPO of a MiniMind model (RLHF): actor + critic, frozen reference and reward model, rollouts from the parallel engine.

Run from the repo root (see docs/RL.md):

    python trainer/train_ppo.py --data_path dataset/rl_prompts_demo.jsonl --init_weight out/full_sft_512.pth \\
        --reward_model_path out/rm_512.pth --max_new_tokens 32 --batch_size 8 --branches_per_sample 4
    python -m trainer.train_ppo ...
    torchrun --nproc_per_node 8 trainer/train_ppo.py ... --ddp

Data: `{"prompt" | "conversations", "answer"?}` per line (parallel_data/prompt_dataset.py). Each step
decodes the batch's prompts with the current weights, --branches_per_sample of them together as the
isolated branches of one sample. Each answer is scored by the reward model (--reward_model_path, a
checkpoint of trainer/train_reward_model.py) or, without one, by exact match with `answer`; the
per-token reward is -kl_coef x KL(actor || reference) plus the score on the last token. Advantages
are GAE (--gamma, --lam) on the critic's values, whitened per micro-batch; the loss is the clipped
surrogate (--cliprange) plus --vf_coef x the clipped value loss (--cliprange_value), taken
--ppo_epochs times on each rollout. The critic is a model of its own, started from the reward model
(or the actor), or with `--critic shared` a value head on the actor's backbone (one model less).
Writes {out_dir}/ppo_actor_{hidden}[_moe].pth: the actor as an ordinary MiniMind checkpoint, with
the critic inside (for --resume). See trainer/rl_stage.py for what lives where in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel.names import CRITIC_MODES, KL_ESTIMATORS
from trainer.args import add_rl_train_args, nonneg_float, positive_float, positive_int, ratio
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_ppo")
    add_rl_train_args(p, default_data="dataset/rl_prompts_demo.jsonl", batch_size=8, branches=4, epochs=1,
                      lr=1e-6, max_new_tokens=64, wandb_project="MiniMind-PPO")
    g = p.add_argument_group("PPO")
    g.add_argument("--ppo_epochs", type=positive_int, default=2, help="optimizer updates on each rollout")
    g.add_argument("--kl_coef", type=nonneg_float, default=0.05,
                   help="per-token KL penalty in the reward (0: no reference model is kept)")
    g.add_argument("--kl_estimator", choices=KL_ESTIMATORS, default="k1", help="KL estimator of the penalty")
    g.add_argument("--gamma", type=ratio, default=1.0, help="discount")
    g.add_argument("--lam", type=ratio, default=0.95, help="GAE lambda")
    g.add_argument("--cliprange", type=positive_float, default=0.2, help="clipping of the policy ratio")
    g.add_argument("--cliprange_value", type=positive_float, default=0.2, help="clipping of the value change")
    g.add_argument("--vf_coef", type=nonneg_float, default=0.1, help="weight of the value loss")
    g.add_argument("--critic", choices=CRITIC_MODES, default="separate",
                   help="separate: a critic model of its own (default); shared: a value head on the actor")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from trainer.engine import run  # noqa: E402
from trainer.rl import PPOLoss  # noqa: E402
from trainer.rl_stage import RLStage  # noqa: E402
from trainer.rollouts import ROLLOUT_MASK, PPORollout  # noqa: E402


class PPOStage(RLStage):
    name = "ppo_actor"

    def critic_mode(self, args) -> str:
        return args.critic

    def uses_reference(self, args) -> bool:
        return args.kl_coef > 0

    def build_loss(self, args, companions):
        return PPOLoss(ROLLOUT_MASK, args.cliprange, args.cliprange_value, args.vf_coef)

    def build_rollout(self, args, tokenizer):
        return PPORollout(sampling=self.sampling(args), max_new_tokens=args.max_new_tokens, reward=self.reward(args),
                          kl_coef=args.kl_coef, kl_estimator=args.kl_estimator, gamma=args.gamma, lam=args.lam,
                          ppo_epochs=args.ppo_epochs, eos_id=self.eos_id(tokenizer))


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, PPOStage())


if __name__ == "__main__":
    sys.exit(main())
