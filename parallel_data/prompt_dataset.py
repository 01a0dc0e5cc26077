"""Prompt datasets for the RL stages (PPO, GRPO): records -> chat-rendered prompts with their answers.

Accepted records (one per line of a JSONL file, or rows of a Hugging Face dataset):

    {"prompt": "What is 3 plus 4?", "answer": "7"}
    {"conversations": [{"role": "system" | "user" | "assistant", "content": "..."}, ...], "answer": "7"}
    {"messages": [...], "answer": "7"}                       (OpenAI's name for the same list)

A `prompt` is one user turn; a message list is the conversation so far, and trailing assistant turns
are dropped (MiniMind's RLAIF files end with a placeholder reply). The prompt is rendered with the
tokenizer's chat template and the assistant generation prompt, so the policy continues as the
assistant. `answer` (a string or an integer) is what the exact-match reward compares with; it is
required unless the reward comes from a reward model. A record is one branch unit
`{"input_ids", "answer_offset": 0, "time_offset": 0, "meta": {"answer", "source"}}`; the collator
passes `meta` through to the batch (`branch_meta`), where the rollout reads it. A prompt longer than
`max_seq_len` tokens is an error naming its line (cutting a prompt would drop its question or the
generation prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parallel_data.io import DataError, describe_type
from parallel_data.parallel_dataset import RecordChecks, UnitStats, _ParallelDataset, make_source

PROMPT_ROLES = ("system", "user", "assistant")


def prompt_messages(rec: dict, path, line) -> list[dict]:
    """The conversation a record asks the policy to continue (see the module docstring)."""
    if not isinstance(rec, dict):
        raise DataError(f"expected a JSON object, got {describe_type(rec)}", path=path, line=line)
    if "prompt" in rec:
        text = rec["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"must be a non-empty string, got {describe_type(text)}", path=path, line=line,
                            field="prompt")
        return [{"role": "user", "content": text}]
    key = next((k for k in ("conversations", "messages") if k in rec), None)
    if key is None:
        raise DataError("needs 'prompt', 'conversations' or 'messages'", path=path, line=line)
    msgs = rec[key]
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"must be a non-empty list of messages, got {describe_type(msgs)}", path=path, line=line,
                        field=key)
    out = []
    for i, m in enumerate(msgs):
        where = f"{key}[{i}]"
        if not isinstance(m, dict) or m.get("role") not in PROMPT_ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"expected {{'role': one of {', '.join(PROMPT_ROLES)}, 'content': str}}", path=path,
                            line=line, field=where)
        out.append({"role": m["role"], "content": m["content"]})
    while out and out[-1]["role"] == "assistant":
        out.pop()
    if not out or out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise DataError("needs a non-empty user turn to answer (after dropping trailing assistant turns)", path=path,
                        line=line, field=key)
    return out


def record_answer(rec: dict, path, line, required: bool) -> str | None:
    if "answer" not in rec:
        if required:
            raise DataError("missing: the exact-match reward compares the generated answer with it (or give "
                            "--reward_model_path)", path=path, line=line, field="answer")
        return None
    ans = rec["answer"]
    if isinstance(ans, bool) or not isinstance(ans, (str, int)):
        raise DataError(f"must be a string or an integer, got {describe_type(ans)}", path=path, line=line,
                        field="answer")
    return str(ans)


@dataclass
class PromptUnits:
    """Record -> one branch unit: the rendered prompt's token ids and its `meta` (answer, source)."""

    tokenizer: object
    max_seq_len: int
    path: str
    require_answer: bool = True
    stats: UnitStats = field(default_factory=UnitStats)
    carry: list[int] = field(default_factory=list)  # unused (no packing); kept for a uniform state
    checks: RecordChecks = field(default_factory=RecordChecks)

    def __call__(self, rec: dict, line: int) -> list[dict]:
        self.stats.records += 1
        messages = prompt_messages(rec, self.path, line)
        answer = record_answer(rec, self.path, line, self.require_answer)
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template error on this record's roles: name the record
            raise DataError(f"the chat template failed: {type(e).__name__}: {e}", path=self.path, line=line) from e
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_seq_len:
            raise DataError(f"the prompt is {len(ids)} tokens long, more than --max_seq_len {self.max_seq_len}; "
                            "raise it or shorten the prompt", path=self.path, line=line)
        self.stats.units += 1
        return [{"input_ids": ids, "answer_offset": 0, "time_offset": 0,
                 "meta": {"answer": answer, "source": f"{self.path}:{line}"}}]

    def flush(self) -> list[dict]:
        return []


class PromptDataset(_ParallelDataset):
    """RL prompts: one branch unit per record (see the module docstring)."""

    def __init__(self, tokenizer, *, data_path: str | None = None, hf_dataset: str | None = None,
                 hf_subset: str | None = None, hf_split: str = "train", max_samples: int | None = None,
                 max_seq_len: int = 512, val_samples: int = 0, seed: int = 0, require_answer: bool = True,
                 shuffle: bool = True, strict_data: bool = False):
        source = make_source(data_path=data_path, hf_dataset=hf_dataset, hf_subset=hf_subset, hf_split=hf_split,
                             val_samples=val_samples, max_samples=max_samples, seed=seed, shuffle=shuffle)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("RL prompts are rendered with the chat template, and this tokenizer has none (the repo "
                             "tokenizer in model/ has one)")
        name = hf_dataset or data_path
        self.settings = {"kind": "prompts", "max_seq_len": max_seq_len, "require_answer": require_answer}
        self.tokenizer = tokenizer
        super().__init__(source, lambda: PromptUnits(tokenizer, max_seq_len, name, require_answer), strict_data)
