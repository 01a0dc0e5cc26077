"""The model component: the policy being trained and its frozen companions, placed alike.

The policy is built by the stage, narrowed to its trainable parameters (`Stage.select_trainable`),
moved to the device and wrapped in DDP when distributed (`wrapped` is what forwards go through,
`raw` what the optimizer and the checkpoint see). Companions (`Stage.build_companions`) get the
policy's device and dtype, eval mode and no gradients; they run under the same autocast as the
policy. Under DDP they are not wrapped: they have no gradients to synchronise, and every rank holds
the same copy.

`--fsdp` shards the policy instead of replicating it (FSDP2 `fully_shard`): every block named in the
model's `_no_split_modules` (a Hugging Face model's decoder layers) becomes one unit, then the root;
parameters, gradients and optimizer state are split over the ranks. `sharded` tells the engine;
`full_state_dict()` gathers the whole model on rank 0 (a collective: every rank calls it), so
checkpoints are always complete, never one rank's shard. Every forward of a sharded model is a
collective too, so each rank must run the same number of them (`Trainer.forward_backward` pads).
"""

from __future__ import annotations

import contextlib
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
        self.sharded = bool(getattr(args, "fsdp", False))
        if self.sharded and not dist.enabled:
            raise SystemExit("--fsdp shards the model over the ranks of a torchrun launch, but this is a single "
                             "process (launch with: torchrun --nproc_per_node N ... --fsdp)")
        if not self.sharded:  # fully_shard moves each rank's shard to the device itself
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
        """DDP around the policy (one broadcast of rank 0's weights), or FSDP2 shards with --fsdp;
        identity when not distributed."""
        d = self.dist
        if self.sharded:
            self._shard()
        elif d.enabled:
            self.wrapped = DDP(self.raw, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                               find_unused_parameters=bool(getattr(self.raw.config, "use_moe", False)))

    def _shard(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        block_names = set(getattr(self.raw, "_no_split_modules", None) or ())
        blocks = [m for m in self.raw.modules() if type(m).__name__ in block_names]
        if not blocks:
            raise SystemExit(f"--fsdp: {type(self.raw).__name__} names no blocks to shard (_no_split_modules); "
                             "use DDP for this model")
        self._broadcast_from_rank0()
        mesh = init_device_mesh(self.dist.device.type, (self.dist.world_size,))
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.raw, mesh=mesh)
        log.info("FSDP: %d blocks (%s) and the root sharded over %d ranks", len(blocks), ", ".join(sorted(block_names)),
                 self.dist.world_size)

    def _broadcast_from_rank0(self) -> None:
        """Every rank starts from rank 0's parameters and buffers, as under DDP: each rank keeps its own part
        of its own copy when sharding, so copies that differ (a random initialisation seeded per rank) would
        silently make a model none of the ranks had. One tensor at a time, through the device."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in [*self.raw.parameters(), *self.raw.buffers()]:
                on_device = t.data.to(self.dist.device)
                dist.broadcast(on_device, src=0)
                if on_device is not t.data:
                    t.data.copy_(on_device)

    def grad_sync(self, last: bool):
        """Context for one micro-batch's backward: gradients are reduced over the ranks only on the last one."""
        if last or not self.dist.enabled:
            return contextlib.nullcontext()
        if self.sharded:
            return _fsdp_no_sync(self.raw)
        return self.wrapped.no_sync()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole policy's state dict on CPU, gathered from the shards (collective; complete on rank 0,
        empty elsewhere). Not sharded: the model's own state dict on CPU (this rank)."""
        if not self.sharded:
            return {k: v.detach().cpu() for k, v in self.raw.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

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


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
