"""R1-style reasoning data: conversations whose assistant turns read `<think>...</think><answer>...</answer>`.

    ds = ReasonDataset(tokenizer, data_path="dataset/reason_demo.jsonl", tag_weight=10.0, val_samples=64)
    prompts = heldout_prompts(ds, 32)          # token ids of held-out prompts, up to the assistant's turn
    check_r1_format("<think>\\n7 + 5 = 12\\n</think>\\n<answer>\\n12\\n</answer>")   # True

Records are SFT conversations (any format of parallel_data/formats.py, e.g. MiniMind's
`r1_mix_1024.jsonl`); the loss is on every assistant turn, as in SFT. Each token that overlaps one of
the tags (`R1_TAGS`) gets the loss weight `tag_weight` (`loss_weight` of the unit, `label_weights` of
the batch), every other target weight 1: a tag is a handful of BPE pieces that must come out exactly
for the format to parse. Tags are found in the rendered text and mapped to tokens with the
tokenizer's offsets, so they are found however the tokenizer splits them.

`check_r1_format(text)`: exactly one think block, then exactly one answer block, nothing around them
but white space (the end-of-turn token is not part of the text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parallel_data.formats import conversation_branches, normalize_conversation
from parallel_data.parallel_dataset import ParallelSFTDataset, SFTUnits

R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_TAG_RE = re.compile("|".join(re.escape(t) for t in R1_TAGS))
_R1_FORMAT = re.compile(r"\s*<think>((?:(?!</?think>|</?answer>).)*)</think>\s*"
                        r"<answer>((?:(?!</?think>|</?answer>).)*)</answer>\s*", re.S)


def check_r1_format(text: str) -> bool:
    """True when `text` is one think block followed by one answer block (white space around is allowed)."""
    return _R1_FORMAT.fullmatch(text) is not None


def tag_token_weights(tokenizer, text: str, n_tokens: int, weight: float) -> list[float]:
    """One loss weight per token of `text` (its first `n_tokens`): `weight` where a token overlaps a tag, else 1."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except NotImplementedError:
        raise ValueError("tag weighting needs a fast tokenizer (one that reports token offsets)") from None
    spans = [m.span() for m in _TAG_RE.finditer(text)]
    out = []
    for start, end in offsets[:n_tokens]:
        out.append(weight if any(start < b and end > a for a, b in spans) else 1.0)
    return out


@dataclass
class ReasonUnits(SFTUnits):
    """SFT units with a `loss_weight` of `tag_weight` on the tag tokens."""

    tag_weight: float = 10.0

    def unit_extras(self, text: str, n_tokens: int) -> dict:
        return {"loss_weight": tag_token_weights(self.tokenizer, text, n_tokens, self.tag_weight)}


class ReasonDataset(ParallelSFTDataset):
    """`ParallelSFTDataset` whose units weight the R1 tags (see the module docstring)."""

    def __init__(self, tokenizer, *, tag_weight: float = 10.0, **kwargs):
        super().__init__(tokenizer, **kwargs)
        if not tag_weight >= 0:
            raise ValueError(f"tag_weight must be non-negative, got {tag_weight}")
        name, fmt, max_seq_len = kwargs.get("hf_dataset") or kwargs.get("data_path"), self.settings["fmt"], \
            self.settings["max_seq_len"]
        self.settings = {**self.settings, "kind": "reason", "tag_weight": float(tag_weight)}
        self._builder_factory = lambda: ReasonUnits(tokenizer, max_seq_len, name, fmt, tag_weight=float(tag_weight))


def heldout_prompts(dataset: ParallelSFTDataset, n: int) -> list[list[int]]:
    """Token ids of the first `n` held-out records' prompts: the conversation up to its last assistant turn,
    ending with the generation prompt (what the model continues with its reasoning)."""
    out: list[list[int]] = []
    tok, limit = dataset.tokenizer, dataset.settings["max_seq_len"]
    where = getattr(dataset.source, "path", None) or dataset.source.name
    for rec, line in dataset.source.iter_val():
        if len(out) >= n:
            break
        messages = normalize_conversation(rec, dataset.settings["fmt"], path=where, line=line)
        text, n_prompt = conversation_branches(tok, messages, path=where, line=line)[-1]
        out.append(tok(text, add_special_tokens=False)["input_ids"][:min(n_prompt, limit)])
    return out
