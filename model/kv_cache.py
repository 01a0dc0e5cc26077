"""A transformers-compatible KV cache that grows in place (amortised O(1) appends).

transformers' DynamicCache concatenates the whole history every step (O(L) copy per step, O(L^2)
per generation). `GrowingCache` keeps per-layer buffers with spare capacity and returns views of
the filled part, so attention still sees exactly the cached tokens. It is a `transformers.Cache`,
so MiniMind and Hugging Face models (Llama, Qwen2, Qwen3, ...) accept it as `past_key_values`.
Rows leave (`batch_select_indices`) and join (`extend_rows`) a running cache, which is how the
generation engine admits and retires samples while it decodes.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys/values `[B, H, L, D]` in a buffer that doubles when full."""

    def __init__(self, initial_capacity: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.initial_capacity = initial_capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._kbuf = self._vbuf = None
        self.keys = self.values = None
        self.length = 0
        self.is_initialized = True

    def _reserve(self, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        cap = 0 if self._kbuf is None else self._kbuf.shape[-2]
        if need <= cap:
            return
        new_cap = max(need, 2 * cap, self.initial_capacity)
        kb = key_states.new_empty((*key_states.shape[:-2], new_cap, key_states.shape[-1]))
        vb = value_states.new_empty((*value_states.shape[:-2], new_cap, value_states.shape[-1]))
        if self.length:
            kb[..., :self.length, :] = self._kbuf[..., :self.length, :]
            vb[..., :self.length, :] = self._vbuf[..., :self.length, :]
        self._kbuf, self._vbuf = kb, vb

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self._reserve(self.length + n, key_states, value_states)
        self._kbuf[..., self.length:self.length + n, :] = key_states
        self._vbuf[..., self.length:self.length + n, :] = value_states
        self.length += n
        self.keys = self._kbuf[..., :self.length, :]
        self.values = self._vbuf[..., :self.length, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        self.keys = self.values = None
        self.length = 0
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if self.is_initialized and tokens_to_remove < 0:
            self.length = max(0, self.length + tokens_to_remove)
            self.keys = self._kbuf[..., :self.length, :]
            self.values = self._vbuf[..., :self.length, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._kbuf is not None:
            self._kbuf = self._kbuf[indices]
            self._vbuf = self._vbuf[indices]
            self.keys = self._kbuf[..., :self.length, :]
            self.values = self._vbuf[..., :self.length, :]

    def extend_rows(self, other: GrowingLayer) -> None:
        """Append `other`'s batch rows; the shorter side is padded with zero keys/values (masked by the caller)."""
        if not (self.is_initialized and other.is_initialized) or self._kbuf is None or other._kbuf is None:
            raise ValueError("extend_rows needs two filled caches")
        length = max(self.length, other.length)
        cap = max(self._kbuf.shape[-2], other._kbuf.shape[-2], length)
        bufs = []
        for mine, theirs in ((self._kbuf, other._kbuf), (self._vbuf, other._vbuf)):
            b1 = mine.shape[0]
            buf = mine.new_zeros((b1 + theirs.shape[0], *mine.shape[1:-2], cap, mine.shape[-1]))
            buf[:b1, ..., :self.length, :] = mine[..., :self.length, :]
            buf[b1:, ..., :other.length, :] = theirs[..., :other.length, :]
            bufs.append(buf)
        self._kbuf, self._vbuf = bufs
        self.length = length
        self.keys = self._kbuf[..., :length, :]
        self.values = self._vbuf[..., :length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._kbuf is not None:
            self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
            self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)
            self.keys = self._kbuf[..., :self.length, :]
            self.values = self._vbuf[..., :self.length, :]


class GrowingCache(Cache):
    """Cache of `GrowingLayer`s, created lazily per layer; `initial_capacity` = expected total length."""

    def __init__(self, initial_capacity: int = 256):
        super().__init__(layers=None, layer_class_to_replicate=lambda: GrowingLayer(initial_capacity))

    def extend_rows(self, other: GrowingCache) -> None:
        """Append the batch rows of `other` (e.g. newly prefilled samples), every layer padded to the longer length.

        Padded positions hold zeros: the caller's attention mask must hide them.
        """
        if len(other.layers) != len(self.layers):
            raise ValueError(f"extend_rows: {len(other.layers)} layers vs {len(self.layers)}")
        for mine, theirs in zip(self.layers, other.layers):
            mine.extend_rows(theirs)
