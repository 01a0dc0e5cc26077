"""`RLStage`: the MiniMind half of the RL fronts (PPO, GRPO), shared by trainer/train_ppo.py and train_grpo.py.

What lives where (memory): the trainable module is an `model.value_head.RLPolicy` — the actor and,
for PPO, its critic (a separate `ValueModel`, or `--critic shared`: a value head on the actor's
backbone) — with AdamW state for every trainable parameter. The frozen *reference* (the starting
checkpoint; only when a KL term is on) and the *reward model* (`--reward_model_path`; none with the
exact-match rule) are engine companions: same device and dtype as the policy, eval mode, no
gradients, no optimizer state, not in the resume state. The generation engine's KV cache lives only
while a rollout decodes. So PPO holds at most 2 trained + 2 frozen models, GRPO 1 + 2.

Starting weights: `--init_weight` / `--model_path` (default `{out_dir}/full_sft_{hidden}[_moe].pth`);
RL from random weights is refused. The checkpoint `{stem}.pth` is the actor's own MiniMind
checkpoint (it loads anywhere a model does) plus the critic for PPO; a resume rebuilds both from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model.value_head import (
    ValueModel,
    rl_policy_from_payload,
    rl_policy_payload,
    value_model_from_payload,
    with_critic,
)
from parallel.sampling import SamplingParams
from parallel_data.prompt_dataset import PromptDataset
from trainer.engine.stage import Companion
from trainer.minimind import MiniMindStage, checkpoint_overrides, load_companion_checkpoint
from trainer.rollouts import RewardModelScore, exact_match

log = logging.getLogger("parallelmind")


class RLStage(MiniMindStage):
    """Policy, companions, prompts and reward of an RL front; the front adds its rollout and loss hook."""

    warm_start_from = "full_sft"

    def __init__(self, reward=None):
        """reward: a callable `(ctx, completions) -> [N] tensor` replacing the flag-selected one (tests, toys)."""
        super().__init__()
        self.custom_reward = reward
        self._reward_model: ValueModel | None = None

    # --- what the front decides -----------------------------------------------------------------------
    def critic_mode(self, args) -> str | None:
        """None (GRPO: no critic), "separate" or "shared" (PPO)."""
        return None

    def uses_reference(self, args) -> bool:
        return False

    # --- model --------------------------------------------------------------------------------------------
    def _init_checkpoint(self, args) -> str | None:
        init = super()._init_checkpoint(args)
        if init is None:
            raise SystemExit(f"{self.name} starts from a trained model: pass --init_weight (--model_path) FILE; "
                             "RL from random weights has nothing to improve on")
        return init

    def build_model(self, args, tokenizer, *, resume: bool):
        if not resume:
            actor, info = super().build_model(args, tokenizer, resume=False)
            init = self._load_reward_model(args, tokenizer) if args.reward_model_path and self.critic_mode(args) \
                else None
            return with_critic(actor, self.critic_mode(args), init).train(), info
        path = str(Path(args.out_dir) / f"{self.checkpoint_stem(args)}.pth")
        try:
            policy = rl_policy_from_payload(self._payload(path), source=path, overrides=checkpoint_overrides(args),
                                            critic_mode=self.critic_mode(args))
        except ValueError as e:
            raise SystemExit(f"cannot resume from {path}: {e}") from None
        meta = self._payload(path).get("meta", {})
        self._payloads.clear()
        return policy.train(), {"step": meta.get("step"), "save_id": meta.get("save_id"), "from": path}

    def checkpoint_payload(self, model, tokenizer, meta: dict) -> dict:
        return rl_policy_payload(model, tokenizer, meta)

    # --- companions ---------------------------------------------------------------------------------------
    def build_companions(self, args, tokenizer, policy) -> dict[str, Companion]:
        out = {}
        if self.uses_reference(args):
            init = self._init_checkpoint(args)
            if not Path(init).is_file():
                raise SystemExit(f"the reference model is the starting checkpoint {init}, which does not exist")
            out["reference"] = Companion(load_companion_checkpoint(init, args, "reference model", tokenizer))
        if args.reward_model_path and self.custom_reward is None:
            out["reward"] = Companion(self._load_reward_model(args, tokenizer))
        self._reward_model = None
        return out

    def _load_reward_model(self, args, tokenizer) -> ValueModel:
        """The reward model of --reward_model_path, read once per run (it also starts a separate critic); it
        reads the policy's token ids, so it must share the policy's tokenizer."""
        if self._reward_model is None:
            self._reward_model = load_companion_checkpoint(args.reward_model_path, args, "reward model", tokenizer,
                                                           build=value_model_from_payload)
        return self._reward_model

    # --- data, reward, sampling ---------------------------------------------------------------------------
    def uses_answers(self, args) -> bool:
        """The exact-match rule needs each record's `answer`; a reward model (or a custom reward) does not."""
        return self.custom_reward is None and not args.reward_model_path

    def build_dataset(self, args, tokenizer):
        return PromptDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset, hf_subset=args.hf_subset,
                             hf_split=args.hf_split, max_samples=args.max_samples, max_seq_len=args.max_seq_len,
                             val_samples=args.val_samples, seed=args.seed, require_answer=self.uses_answers(args),
                             strict_data=args.strict_data)

    def reward(self, args):
        if self.custom_reward is not None:
            return self.custom_reward
        return RewardModelScore() if args.reward_model_path else exact_match

    @staticmethod
    def sampling(args) -> SamplingParams:
        return SamplingParams(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)

    @staticmethod
    def eos_id(tokenizer) -> int:
        """The token an answer ends with: ChatML's `<|im_end|>` (the end of an assistant turn), else EOS."""
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != getattr(tokenizer, "unk_token_id", None):
            return im_end
        if tokenizer.eos_token_id is None:
            raise SystemExit("the tokenizer has no EOS token: an answer could never end")
        return int(tokenizer.eos_token_id)
