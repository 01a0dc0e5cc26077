"""The optimizer component: AdamW over the trainable parameters, the grad scaler, the learning-rate schedule.

Weight decay applies to matrices (dim >= 2) only. The schedule is a linear warm-up to the peak over
`--warmup_iters` steps, then a cosine decay to `peak * --min_lr_ratio` at the schedule's length.
With a sharded model (`--fsdp`) each rank's optimizer holds the state of its shards; `state_dict`
gathers it whole (keyed by parameter name, a collective) and `load_state_dict` hands each rank its part.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio` at `total`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * min_ratio
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


class OptimizerComponent:
    def __init__(self, args, model: nn.Module, device: torch.device, amp: torch.dtype | None, *,
                 sharded: bool = False):
        self.args = args
        self.model = model
        self.sharded = sharded
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate,
                                           betas=(0.9, 0.95), fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def set_lr(self, step: int, total: int) -> float:
        a = self.args
        lr = lr_at(step, total, a.learning_rate, a.warmup_iters, a.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        """Unscale, clip (--grad_clip), step, and clear the gradients."""
        self.scaler.unscale_(self.optimizer)
        if self.args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        """The optimizer and scaler state (sharded: a collective, complete on rank 0 only)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opt = get_optimizer_state_dict(self.model, self.optimizer,
                                           options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            opt = self.optimizer.state_dict()
        return {"optimizer": opt, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
