"""`<think>...</think>` in a chat answer: the reasoning goes to `reasoning_content`, the rest to `content`.

Works on streamed text: a tag split over several pieces ("<th", "ink>") is held back until it is
complete or cannot be one, so every piece lands in exactly one of the two fields and their
concatenations equal the split of the whole answer.

    split = ThinkSplitter(inside=prompt_opens_thinking(prompt))
    for piece in pieces: reasoning, content = split.feed(piece)
    reasoning, content = split.flush()
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_thinking(prompt: str) -> bool:
    """A chat template that ends the generation prompt inside `<think>` (Qwen3-style) starts the answer
    in the reasoning."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for h in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-h:]):
            return h
    return 0


class ThinkSplitter:
    """Routes streamed text to (reasoning, content); see the module docstring."""

    def __init__(self, inside: bool = False):
        self.state = "think" if inside else "start"  # start: the answer may still open with <think>
        self.buf = ""
        self.strip_newlines = inside  # drop the newlines right after a tag

    def feed(self, piece: str) -> tuple[str, str]:
        self.buf += piece
        reasoning, content = [], []
        while self.buf:
            if self.state == "start":
                lead = self.buf.lstrip()
                if lead.startswith(OPEN):
                    self.buf, self.state, self.strip_newlines = lead[len(OPEN):], "think", True
                    continue
                if OPEN.startswith(lead):  # could still become <think>
                    break
                self.state = "answer"
                continue
            if self.strip_newlines:
                self.buf = self.buf.lstrip("\n")
                if not self.buf:
                    break
                self.strip_newlines = False
            if self.state == "think":
                at = self.buf.find(CLOSE)
                if at >= 0:
                    reasoning.append(self.buf[:at])
                    self.buf, self.state, self.strip_newlines = self.buf[at + len(CLOSE):], "answer", True
                    continue
                keep = _partial_tag(self.buf, CLOSE)
                reasoning.append(self.buf[:len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                break
            content.append(self.buf)
            self.buf = ""
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """The text still held back, at the end of the answer."""
        rest, self.buf = self.buf, ""
        if self.strip_newlines:
            rest = rest.lstrip("\n")
        return (rest, "") if self.state == "think" else ("", rest)


def split_reasoning(text: str, inside: bool = False) -> tuple[str | None, str]:
    """The whole answer -> (reasoning or None when there was none, content)."""
    s = ThinkSplitter(inside)
    r1, c1 = s.feed(text)
    r2, c2 = s.flush()
    reasoning = r1 + r2
    had = inside or text.lstrip().startswith(OPEN)
    return (reasoning if had else None), c1 + c2
