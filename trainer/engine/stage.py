"""What a training stage contributes to the engine: a `Stage` subclass with builders and seams.

A front (trainer/train_*.py) subclasses `Stage` (or `trainer.minimind.MiniMindStage`), fills in the
four builders and overrides only the seams its stage changes:

    builder / seam            default                                   who overrides it
    check_args(args)          nothing                                   inputs checked before anything is written
    checkpoint_stem(args)     (required)                                every model family
    load_tokenizer(args)      (required)
    build_model(args, tok, resume=...)  (required)                      HF full / LoRA fronts
    build_dataset(args, tok)  (required)                                every front
    select_trainable(model)   every parameter trains                    LoRA / PEFT
    build_companions(...)     none                                      DPO (reference), KD (teacher), PPO (reward)
    build_loss(args, comp.)   CrossEntropyLoss(args.mask_mode)          DPO, KD, reward model, PPO, GRPO
    build_rollout(args, tok)  none                                      PPO, GRPO
    evaluate(ctx, dataset)    nothing beyond the held-out loss          reasoning (format accuracy)
    checkpoint_payload(...)   the whole model (model.checkpoint)        LoRA: adapters only
    checkpoint_dir(args)      --out_dir                                 HF fronts: out_dir/lora, out_dir/full
    after_save(...)           nothing                                   HF fronts: step / final exports
    export_patterns(args)     none                                      names of those exports (claimed)

A loss hook that needs a companion only while it is built (a DPO reference whose log-probabilities
are precomputed) deletes it from the `companions` dict it is given; the engine then lets it go.

`Companion` marks a frozen model; `Rollout` turns a batch of prompts into a training batch by
generating with the current weights (`RolloutContext.generator()` is the generation engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from model.checkpoint import checkpoint_payload
from trainer.loss import CrossEntropyLoss, LossFn, autocast_context, token_mask


@dataclass
class Companion:
    """A frozen model beside the policy: a DPO reference, a distillation teacher, a reward model.

    The engine places it on the policy's device and dtype, puts it in eval mode, turns its gradients
    off and keeps it out of the optimizer. `changes=True` (its weights are updated during the run,
    e.g. a reference synced from the policy every N steps) puts its state dict into the resume state.
    """

    model: nn.Module
    changes: bool = False


@dataclass
class RolloutContext:
    """What a rollout sees: the current weights and a seed that a resumed run replays exactly."""

    policy: nn.Module  # the model being trained (unwrapped), weights as of this step
    tokenizer: object
    companions: dict[str, nn.Module]
    mask_mode: str
    branch_stride: int
    step: int  # the optimizer step the rollout feeds (0-based)
    seed: int  # derived from (--seed, rank, step, micro-batch)
    device: torch.device = torch.device("cpu")  # where the policy is
    amp: torch.dtype | None = None  # the training forward's autocast dtype (None: float32)
    validation: bool = False  # a rollout of held-out prompts for validation (decode greedily, no update follows)
    extra: dict = field(default_factory=dict)

    def autocast(self):
        """The training forward's autocast: scoring passes under it give the log-probabilities the loss sees."""
        return autocast_context(self.device, self.amp)

    def generator(self, **kwargs):
        """The generation engine over the current weights (`model.parallel_generation.ParallelGenerator`)."""
        from model.parallel_generation import ParallelGenerator

        return ParallelGenerator(self.policy, self.tokenizer, mask_mode=self.mask_mode,
                                 branch_stride=self.branch_stride, **kwargs)


class Rollout:
    """The rollout phase: one data batch (prompts) -> one training batch for the loss hook.

    Called under `torch.no_grad()` before the step's forward/backward, once per micro-batch. The
    training batch must hold what the stage's `LossFn` reads, including what `count_targets` counts
    (`num_label_tokens` for the default); `num_tokens`, `num_samples`, `num_texts` feed the counters.
    `updates` optimizer updates are taken on each step's rollout batches (PPO epochs, GRPO
    iterations): one step is one rollout followed by that many forward/backward/optimizer updates.
    With a validation set, held-out prompt batches go through the rollout too (`ctx.validation`) and
    the loss hook's metrics on them are the validation metrics.
    """

    updates: int = 1

    def __call__(self, ctx: RolloutContext, batch: dict) -> dict:
        raise NotImplementedError


def samples_from_batch(batch: dict) -> list[dict]:
    """The samples of a collated batch as token ids: `[{"main": [ids] | None, "branches": [[ids], ...]}]`.

    Tokens of each branch come back in time order, pads dropped: the prompts a rollout generates from.
    """
    ids, bids, mask = batch["input_ids"], batch["branch_ids"], token_mask(batch).bool()
    out = []
    for row in range(ids.shape[0]):
        r_ids, r_b = ids[row][mask[row]], bids[row][mask[row]]
        main = r_ids[r_b == 0].tolist() or None
        n = int(r_b.max()) if r_b.numel() else 0
        out.append({"main": main, "branches": [r_ids[r_b == k].tolist() for k in range(1, n + 1)]})
    return out


class Stage:
    """Base class of a training stage (see the module docstring for the builders and seams)."""

    name: str = "stage"
    # flags of this stage that never change the loss trajectory (a resume does not compare them)
    run_only_settings: frozenset[str] = frozenset()
    # the run's stop flag (trainer.engine.interrupt.StopFlag), set by the Trainer: long set-up work in a
    # builder (e.g. precomputing reference log-probabilities) polls `stop.requested` and exits early
    stop = None

    def check_args(self, args) -> None:
        """Checks of the stage's own inputs, run before the out_dir is claimed (nothing written yet); raise
        SystemExit("message") or ValueError / OSError for one clear line. Default: none."""

    # --- builders every stage provides ------------------------------------------------------------
    def checkpoint_stem(self, args) -> str:
        """File stem of the outputs in `checkpoint_dir`: '{stem}.pth', '{stem}_resume.pth', '{stem}_metrics.jsonl'."""
        raise NotImplementedError

    def checkpoint_dir(self, args) -> str:
        """The folder the engine's outputs go to (default --out_dir)."""
        return args.out_dir

    def load_tokenizer(self, args):
        raise NotImplementedError

    def build_model(self, args, tokenizer, *, resume: bool) -> tuple[nn.Module, dict]:
        """-> (model on CPU, info). With resume=True, the weights of '{out_dir}/{stem}.pth', and info carries
        that checkpoint's "step" and "save_id" (its meta) so the engine can pick the matching resume state."""
        raise NotImplementedError

    def build_dataset(self, args, tokenizer):
        """A parallel dataset (parallel_data.parallel_dataset) the engine streams batches from."""
        raise NotImplementedError

    def branch_stride(self, model: nn.Module) -> int:
        """The model's branch coordinate step, for the collators and the generator (a patched HF model
        keeps it in `config.parallelmind`)."""
        cfg = model.config
        return int(getattr(cfg, "branch_stride", None) or (getattr(cfg, "parallelmind", None) or {}).get(
            "branch_stride", 128))

    # --- seams, with the defaults of plain next-token training ------------------------------------
    def select_trainable(self, model: nn.Module) -> None:
        """Set `requires_grad` on what trains (LoRA: freeze the base, train the adapters); default: all."""

    def build_companions(self, args, tokenizer, policy: nn.Module) -> dict[str, Companion]:
        """Frozen models the loss or the rollout needs, by name; built on CPU, placed by the engine."""
        return {}

    def build_loss(self, args, companions: dict[str, nn.Module]) -> LossFn:
        return CrossEntropyLoss(args.mask_mode)

    def build_rollout(self, args, tokenizer) -> Rollout | None:
        return None

    def evaluate(self, ctx: RolloutContext, dataset) -> dict[str, float]:
        """Extra held-out numbers at each validation, logged as `val_<name>` (e.g. the share of generations in
        the expected format); runs on every rank under `torch.no_grad()`, model in eval mode. Default: none."""
        return {}

    def checkpoint_payload(self, model: nn.Module, tokenizer, meta: dict, *,
                           state_dict: dict[str, torch.Tensor] | None = None) -> dict:
        """What '{stem}.pth' holds (torch.load(weights_only=True)-safe); default: the whole model.

        `state_dict` is given when the model is sharded (`--fsdp`): the full state dict gathered from
        every rank, to be saved instead of `model.state_dict()` (which holds this rank's shards only).
        """
        return checkpoint_payload(model, tokenizer=tokenizer, meta=meta, state_dict=state_dict)

    def after_save(self, args, model: nn.Module, tokenizer, payload: dict) -> None:
        """Called on rank 0 after each checkpoint pair is written, with the payload just saved (its
        "meta" says the step and whether it is the final save): extra exports such as the HF fronts'
        `_step{N}` / `_final` adapters and model folders. Default: nothing."""

    def export_patterns(self, args) -> list[str]:
        """Glob patterns (in `checkpoint_dir`) of the files `after_save` writes: an existing match stops a
        new run unless --resume or --overwrite, and --overwrite removes them."""
        return []


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)
