"""The model component: the policy being trained and its frozen companions, placed alike.

The policy is built by the stage, narrowed to its trainable parameters (`Stage.select_trainable`),
moved to the device and wrapped in DDP when distributed (`wrapped` is what forwards go through,
`raw` what the optimizer and the checkpoint see). Companions (`Stage.build_companions`) get the
policy's device and dtype, eval mode and no gradients; they run under the same autocast as the
policy. Under DDP they are not wrapped: they have no gradients to synchronise, and every rank holds
the same copy.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainer.distributed import DistInfo
from trainer.engine.stage import Companion, Stage

log = logging.getLogger("parallelmind")


class ModelComponent:
    def __init__(self, stage: Stage, args, tokenizer, dist: DistInfo, *, resume: bool):
        model, self.info = stage.build_model(args, tokenizer, resume=resume)
        stage.select_trainable(model)
        if not any(p.requires_grad for p in model.parameters()):
            raise SystemExit(f"{stage.name}: the stage selected no trainable parameters")
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.to(dist.device)
        model.train()
        self.raw: nn.Module = model
        self.wrapped: nn.Module = model
        self.dist = dist
        self.specs: dict[str, Companion] = stage.build_companions(args, tokenizer, model)
        dtype = next(model.parameters()).dtype
        for spec in self.specs.values():
            spec.model.to(device=dist.device, dtype=dtype).eval().requires_grad_(False)
        self.companions: dict[str, nn.Module] = {name: c.model for name, c in self.specs.items()}

    def wrap(self) -> None:
        """DDP around the policy (one broadcast of rank 0's weights); identity when not distributed."""
        d = self.dist
        if d.enabled:
            self.wrapped = DDP(self.raw, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                               find_unused_parameters=bool(getattr(self.raw.config, "use_moe", False)))

    def parameter_counts(self) -> tuple[int, int]:
        """(all parameters, trainable parameters) of the policy."""
        params = list(self.raw.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def drop_released_companions(self) -> None:
        """Forget the companions a stage removed from `companions` while building its loss hook (a reference
        whose log-probabilities were precomputed): they are no longer held, so their memory is freed."""
        for name in [n for n in self.specs if n not in self.companions]:
            log.info("companion %r released (no longer needed for training)", name)
            del self.specs[name]

    def changing_companions_state(self) -> dict[str, dict]:
        """State dicts of the companions whose weights change during the run (they go into the resume state)."""
        return {name: {k: v.detach().cpu().clone() for k, v in c.model.state_dict().items()}
                for name, c in self.specs.items() if c.changes}

    def load_companions_state(self, states: dict[str, dict]) -> None:
        for name, sd in states.items():
            if name not in self.specs:
                raise SystemExit(f"--resume: the saved run has a companion model {name!r} this stage does not build")
            self.specs[name].model.load_state_dict(sd)


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
