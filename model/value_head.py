"""Scalar heads on a MiniMind backbone, and the trainable module of the RL stages.

* `ValueModel(lm, value_head)`: one scalar per selected position, from the backbone's final hidden
  state. The reward model scores the last real token of each response; the PPO critic gives a value
  at every target position (the state just before each generated token).
* `RLPolicy(actor, critic=None, value_head=None)`: what PPO and GRPO train. The actor is a plain
  `MiniMindForCausalLM`; PPO adds a critic, either a `ValueModel` of its own (`separate`) or a value
  head on the actor's backbone (`shared`: one forward gives both, one model less in memory). Its
  forward returns per-target log-probabilities, entropies and values in one call, so it goes through
  DDP like any policy.
The policy's log-probabilities are those of `trainer.logprobs` (the output head at the target
positions only, float32 log-softmax), so they compare with a reference model's exactly.

Checkpoints stay self-contained (`torch.load(weights_only=True)`): a reward model is a MiniMind
checkpoint plus `{"head": {"kind": "value", "state_dict": ...}}` (`value_model_payload`); an RL
policy is its actor's checkpoint (it loads as an ordinary model everywhere) plus, for PPO,
`{"critic": ...}` (`rl_policy_payload`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import checkpoint_payload, model_from_payload, model_state_for_saving
from parallel.names import CRITIC_MODES

VALUE_HEAD_KIND = "value"


def new_value_head(hidden_size: int) -> nn.Linear:
    """Linear(hidden -> 1) starting at zero: a new critic predicts 0 (no noise in the first advantages) and a
    new reward model scores every answer alike; the gradients of both losses reach the weights at once."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def backbone_states(lm, input_ids, attention_mask, position_ids, token_mask):
    """-> (hidden, packed, aux): the backbone's final states `[B, T, H]` (or `[1, N, H]` when the pads are
    packed away; `packed` is then the `[B, T]` map of real tokens) and the MoE balance loss."""
    h, _, aux, packed = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 token_mask=token_mask, use_cache=False)
    return h, packed, aux


def rows_at(h: torch.Tensor, packed: torch.Tensor | None, select: torch.Tensor) -> torch.Tensor:
    """Hidden states `[N, H]` at the positions where `select` `[B, T]` is True, in row-major order."""
    if packed is not None:
        return h[0][select[packed]]
    return h[select]


def head_logprobs(lm, states: torch.Tensor, targets: torch.Tensor, entropy: bool):
    """-> (log p(target) `[N]`, entropy `[N]` or None), in float32, from hidden states `[N, H]`; log p is
    computed as `trainer.logprobs.token_logprobs` does (-cross-entropy), so the numbers are the same."""
    logits = lm.lm_head(states).float()
    picked = -F.cross_entropy(logits, targets, reduction="none")
    if not entropy:
        return picked, None
    logp = F.log_softmax(logits, dim=-1)
    return picked, -(logp.exp() * logp).sum(-1)


class ValueModel(nn.Module):
    """A MiniMind backbone with a scalar head (reward model, critic). The LM head stays, unused, so the
    backbone remains an ordinary checkpoint."""

    def __init__(self, lm, value_head: nn.Linear | None = None):
        super().__init__()
        self.lm = lm
        self.value_head = value_head if value_head is not None else new_value_head(lm.config.hidden_size)

    @property
    def config(self):
        return self.lm.config

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.lm.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids, attention_mask, position_ids, token_mask, select) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (values `[N]` float32 at the positions where `select` `[B, T]` is True, row-major; MoE aux loss)."""
        h, packed, aux = backbone_states(self.lm, input_ids, attention_mask, position_ids, token_mask)
        return self.value_head(rows_at(h, packed, select)).squeeze(-1).float(), aux


@dataclass
class PolicyOutput:
    """Per target token (`labels != -100`, row-major): what the RL losses read."""

    logps: torch.Tensor  # [N] log p(target) under the actor, float32
    entropy: torch.Tensor  # [N] entropy of the actor's next-token distribution
    values: torch.Tensor | None  # [N] the critic's value of the state before each target (PPO), else None
    aux_loss: torch.Tensor  # MoE balance loss of the actor (0 for dense models)


class RLPolicy(nn.Module):
    """The trainable module of PPO / GRPO: the actor and, for PPO, its critic (see the module docstring)."""

    def __init__(self, actor, critic: ValueModel | None = None, value_head: nn.Linear | None = None):
        super().__init__()
        if critic is not None and value_head is not None:
            raise ValueError("RLPolicy: give a separate critic or a shared value head, not both")
        self.actor = actor
        self.critic = critic
        self.value_head = value_head

    @property
    def config(self):
        return self.actor.config

    @property
    def critic_mode(self) -> str | None:
        return "separate" if self.critic is not None else "shared" if self.value_head is not None else None

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.actor.gradient_checkpointing_enable(**kwargs)
        if self.critic is not None:
            self.critic.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids, attention_mask, position_ids, token_mask, labels) -> PolicyOutput:
        h, packed, aux = backbone_states(self.actor, input_ids, attention_mask, position_ids, token_mask)
        sel = labels != -100
        states = rows_at(h, packed, sel)
        logps, entropy = head_logprobs(self.actor, states, labels[sel], entropy=True)
        values = None
        if self.value_head is not None:
            values = self.value_head(states).squeeze(-1).float()
        elif self.critic is not None:
            values, _ = self.critic(input_ids, attention_mask, position_ids, token_mask, sel)
        return PolicyOutput(logps, entropy, values, aux)


def with_critic(actor, mode: str | None, init: ValueModel | None = None) -> RLPolicy:
    """An `RLPolicy` around `actor`: no critic (None), a `separate` critic (a copy of `init`, else of the
    actor with a new head) or a `shared` value head (`init`'s head when given)."""
    if mode is None:
        return RLPolicy(actor)
    if mode not in CRITIC_MODES:
        raise ValueError(f"critic mode must be one of {CRITIC_MODES}, got {mode!r}")
    if mode == "shared":
        head = copy.deepcopy(init.value_head) if init is not None else new_value_head(actor.config.hidden_size)
        return RLPolicy(actor, value_head=head)
    critic = copy.deepcopy(init) if init is not None else ValueModel(copy.deepcopy(actor))
    critic.lm.train()
    return RLPolicy(actor, critic=critic)


# --- checkpoints ---------------------------------------------------------------------------------------

def _head_state(head: nn.Linear) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


def value_model_payload(model: ValueModel, tokenizer=None, meta: dict | None = None) -> dict:
    """A reward model checkpoint: the backbone's MiniMind checkpoint plus the value head."""
    out = checkpoint_payload(model.lm, tokenizer=tokenizer, meta=meta)
    out["head"] = {"kind": VALUE_HEAD_KIND, "state_dict": _head_state(model.value_head)}
    return out


def is_value_payload(payload: dict) -> bool:
    return isinstance(payload.get("head"), dict) and payload["head"].get("kind") == VALUE_HEAD_KIND


def _head_from_state(state: dict, hidden_size: int, source) -> nn.Linear:
    head = nn.Linear(hidden_size, 1)
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{source}: the value head does not fit the model ({' '.join(str(e).split())[:200]})") from None
    return head


def value_model_from_payload(payload: dict, *, source, overrides: dict | None = None) -> ValueModel:
    """Rebuild a `ValueModel` from a payload read by `model.checkpoint.read_checkpoint` (strict)."""
    if not is_value_payload(payload):
        raise ValueError(f"{source} is not a reward model checkpoint (it has no value head): train one with "
                         "trainer/train_reward_model.py")
    lm = model_from_payload(payload, source=source, overrides=overrides)
    return ValueModel(lm, _head_from_state(payload["head"]["state_dict"], lm.config.hidden_size, source))


def rl_policy_payload(policy: RLPolicy, tokenizer=None, meta: dict | None = None) -> dict:
    """The actor's own checkpoint (loads as an ordinary model) plus the critic PPO resumes with."""
    out = checkpoint_payload(policy.actor, tokenizer=tokenizer, meta=meta)
    if policy.critic is not None:
        out["critic"] = {"mode": "separate", "config": policy.critic.config.to_dict(),
                         "model_state_dict": model_state_for_saving(policy.critic.lm),
                         "head": _head_state(policy.critic.value_head)}
    elif policy.value_head is not None:
        out["critic"] = {"mode": "shared", "head": _head_state(policy.value_head)}
    return out


def rl_policy_from_payload(payload: dict, *, source, overrides: dict | None = None,
                           critic_mode: str | None = None) -> RLPolicy:
    """Rebuild the `RLPolicy` saved by `rl_policy_payload`; its critic must be of `critic_mode`."""
    actor = model_from_payload(payload, source=source, overrides=overrides)
    saved = payload.get("critic")
    saved_mode = saved.get("mode") if isinstance(saved, dict) else None
    if saved_mode != critic_mode:
        raise ValueError(f"{source} holds {'a ' + saved_mode if saved_mode else 'no'} critic, but this run uses "
                         f"{'a ' + critic_mode if critic_mode else 'none'}")
    if saved_mode == "shared":
        return RLPolicy(actor, value_head=_head_from_state(saved["head"], actor.config.hidden_size, source))
    if saved_mode == "separate":
        lm = model_from_payload({"format": payload["format"], "config": saved["config"],
                                 "model_state_dict": saved["model_state_dict"]}, source=f"{source} (critic)")
        return RLPolicy(actor, critic=ValueModel(lm, _head_from_state(saved["head"], lm.config.hidden_size, source)))
    return RLPolicy(actor)
