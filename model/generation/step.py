"""`decode_step`: the only place the model runs while generating (prefill and decode steps alike).

A step is pure apart from the KV cache it appends to: given the step's inputs and the sampling
settings of the positions it samples, it returns their logits and the sampled tokens. Within a
decode window only the token ids, the positions and the mask's key length change from step to
step, which makes it the unit to hand to `torch.compile` or a CUDA graph.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from parallel.rope2d import Interleaved2DRoPE
from parallel.sampling import SamplingTensors, sample_next

# Config fields of models whose logits are not just `lm_head(hidden)`: those take full model logits.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@dataclass
class StepInputs:
    """One forward's inputs: `[B, Q]` ids, `[B, 1, Q, L + Q]` mask, `[B, Q, 3]` positions
    (branch coordinate, time, flat index), and the `[N]` (row, column) positions whose logits are
    needed (None, None: every position, row-major)."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None


@dataclass
class StepSampling:
    """How the `[N]` sampled positions draw their tokens."""

    params: SamplingTensors  # [N]
    seen: torch.Tensor | None = None  # [N, V] bool, for the repetition penalty
    generators: list[torch.Generator | None] | None = None  # each sampled row's own stream (None: all greedy)


@contextlib.contextmanager
def eval_mode(model, *, every_module: bool = True):
    """The model in eval mode for the block, its modes restored after. Walking the modules costs
    ~1 ms, so nothing is switched when nothing is in training mode, and `every_module=False` (once
    per decode step) looks at the top module's flag only."""
    switch = any(m.training for m in model.modules()) if every_module else model.training
    was_training = model.training
    if switch:
        model.eval()
    try:
        yield
    finally:
        if switch:
            model.train(was_training)



def split_head(model) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """(decoder, output head) when logits are exactly `head(decoder(...).last_hidden_state)`, else (None, None)."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # PEFT
    cfg = getattr(base, "config", None)
    if any(getattr(cfg, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return None, None
    get_dec, get_head = getattr(base, "get_decoder", None), getattr(base, "get_output_embeddings", None)
    if not callable(get_dec) or not callable(get_head):
        return None, None
    try:
        decoder, head = get_dec(), get_head()
    except Exception:  # noqa: BLE001 - no standard split: use the model's own logits
        return None, None
    if decoder is None or decoder is base or head is None:
        return None, None
    return decoder, head


class ModelRunner:
    """How the engine calls a model: `[B, Q]` tokens in, float logits `[N, V]` at the needed positions out.

    The output head runs on the N needed hidden states only (never on `[B, Q, V]`), through the
    decoder / head split when it is exact and `logits_to_keep` otherwise. Models with 2D RoPE
    (MiniMind, patched Hugging Face models) get `[B, Q, 3]` positions; any other model gets the time
    `[B, Q]`, which is exact only where every branch coordinate is 0 (`takes_2d_positions` False).
    """

    def __init__(self, model):
        self.model = model
        self.decoder, self.head = split_head(model)
        rotary = [m for m in model.modules() if isinstance(m, Interleaved2DRoPE)]
        self.takes_2d_positions = bool(rotary)
        # the rotary angle reads the flat index (the `reference` scheme): decoding must be time-synchronous
        self.reads_flat_index = any(bool(m.coefficients[2].any()) for m in rotary)

    @property
    def vocab_size(self) -> int:
        """Width of the logits."""
        head = self.head
        if head is None:
            base = self.model.get_base_model() if callable(getattr(self.model, "get_base_model", None)) else self.model
            head = base.get_output_embeddings() if callable(getattr(base, "get_output_embeddings", None)) else None
        weight = getattr(head, "weight", None)
        if weight is not None:
            return int(weight.shape[0])
        return int(self.model.config.vocab_size)

    def __call__(self, inputs: StepInputs, cache) -> torch.Tensor:
        pos = inputs.positions if self.takes_2d_positions else inputs.positions[..., 1]
        kw = dict(input_ids=inputs.ids, attention_mask=inputs.mask, position_ids=pos, past_key_values=cache,
                  use_cache=True)
        rows, cols = inputs.rows, inputs.cols
        if self.decoder is not None:
            out = self.decoder(**kw)
            h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # MiniMind: a tuple
            return self.head(h.reshape(-1, h.shape[-1]) if rows is None else h[rows, cols]).float()
        if rows is None:
            logits = self.model(**kw).logits
            return logits.reshape(-1, logits.shape[-1]).float()
        keep, where = torch.unique(cols, return_inverse=True)
        logits = self.model(**kw, logits_to_keep=keep).logits  # [B, U, V]
        return logits[rows, where].float()


def decode_step(runner: ModelRunner, inputs: StepInputs, cache, sampling: StepSampling | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward over `inputs` against `cache` (appended to), then sampling of the needed positions.

    -> (`[N, V]` float logits, `[N]` sampled tokens); no sampling (None) when the step feeds prompt
    tokens only.
    """
    logits = runner(inputs, cache)
    if sampling is None:
        return logits, None
    tokens = sample_next(logits, sampling.params, seen=sampling.seen, generators=sampling.generators)
    return logits, tokens
