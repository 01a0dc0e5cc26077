"""Incremental detokenisation and stop strings for streamed generation."""

from __future__ import annotations

from collections.abc import Sequence


class IncrementalDecoder:
    """Offset-based incremental detokenizer (the TGI / vLLM scheme): each token decodes a short window.

    Text is released only once it no longer ends in an incomplete UTF-8 character, so multi-token
    characters come out whole. Cost per token is independent of the length of the history.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text (possibly "")."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Release the pending text at the end of a generation, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=self.skip_special_tokens)
        full = dec(self.ids[self.prefix_offset:], skip_special_tokens=self.skip_special_tokens)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            delta = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.text += delta
            return delta
        return ""


def find_stop(text: str, start: int, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text[start:]` (as an index into `text`), -1 if none."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    longest = max((len(s) for s in stops), default=0)
    for h in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-h:]
        if any(s.startswith(tail) for s in stops):
            return h
    return 0
