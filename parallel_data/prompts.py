"""Prompt inputs for parallel generation: command-line prompts and prompt files -> groups of branches.

Accepted (one prompt or group per line):
* a text file: one prompt per line;
* JSONL: ``{"branches": [...]}`` (one group), ``{"text": "a||b"}`` (one group, `||`-separated),
  ``{"prompt": ...}`` / ``{"question": ...}`` (single prompts), ``{"main": ..., "branches": [...]}``
  (a shared context with its questions). Branch entries may be strings or ``{"text"/"prompt"}``.
Single prompts are packed into groups of `branches_per_sample` in input order; a command-line prompt
containing `||` is a group of its own (pretrain mode). With a chat template, every branch becomes a
user turn with the assistant generation prompt, and a main becomes the system message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from parallel_data.io import DataError, describe_type


@dataclass
class PromptGroup:
    branches: list[str]
    main: str = ""
    source: str = ""  # file:line or "--prompts"
    ids: list[str] = field(default_factory=list)  # optional per-branch ids from the file


def _branch_text(b, path, line, k) -> str:
    if isinstance(b, str):
        text = b
    elif isinstance(b, dict):
        text = b.get("text", b.get("prompt", b.get("question")))
    else:
        text = None
    if not isinstance(text, str):
        raise DataError(f"expected a string or an object with 'text', got {describe_type(b)}", path=path, line=line,
                        field=f"branches[{k}]")
    if not text.strip():
        raise DataError("empty prompt", path=path, line=line, field=f"branches[{k}]")
    return text


def _split_bars(text: str, where: str) -> list[str]:
    parts = [p.strip() for p in text.split("||")]
    if any(not p for p in parts):
        raise DataError(f"empty branch in {text!r} (check the '||' separators)", path=where)
    return parts


def read_prompt_file(path: str | Path) -> list[PromptGroup | str]:
    """-> groups (from group records) and single prompts (str), in file order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file {p} does not exist")
    raw = p.read_text(encoding="utf-8").splitlines()
    lines = [(i + 1, ln) for i, ln in enumerate(raw) if ln.strip()]
    if not lines:
        raise DataError("is empty (no prompts)", path=p)
    is_jsonl = p.suffix in (".jsonl", ".json") or lines[0][1].lstrip().startswith("{")
    out: list[PromptGroup | str] = []
    for no, ln in lines:
        if not is_jsonl:
            out.append(ln.strip())
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg})", path=p, line=no) from None
        if not isinstance(rec, dict):
            raise DataError(f"expected a JSON object, got {describe_type(rec)}", path=p, line=no)
        where = f"{p}:{no}"
        if "branches" in rec:
            br = rec["branches"]
            if not isinstance(br, list) or not br:
                raise DataError("must be a non-empty list", path=p, line=no, field="branches")
            main = rec.get("main") or ""
            if not isinstance(main, str):
                raise DataError(f"expected a string, got {describe_type(main)}", path=p, line=no, field="main")
            out.append(PromptGroup([_branch_text(b, p, no, k) for k, b in enumerate(br)], main, where))
        elif isinstance(rec.get("text"), str) and "||" in rec["text"]:
            out.append(PromptGroup(_split_bars(rec["text"], where), "", where))
        else:
            key = next((k for k in ("prompt", "question", "text") if k in rec), None)
            if key is None:
                raise DataError("needs 'branches', 'prompt', 'question' or 'text'", path=p, line=no)
            if not isinstance(rec[key], str) or not rec[key].strip():
                raise DataError("empty prompt", path=p, line=no, field=key)
            out.append(rec[key])
    return out


def collect_groups(prompts: list[str] | None, prompts_file: str | None, *, branches_per_sample: int,
                   split_bars: bool = True) -> list[PromptGroup]:
    """Merge `--prompts` and `--prompts_file` into groups (single prompts packed by branches_per_sample)."""
    if branches_per_sample < 1:
        raise ValueError(f"--branches_per_sample must be >= 1, got {branches_per_sample}")
    items: list[PromptGroup | str] = []
    for p in prompts or []:
        if not p.strip():
            raise ValueError("--prompts: an empty prompt")
        items.append(PromptGroup(_split_bars(p, "--prompts"), "", "--prompts") if split_bars and "||" in p else p)
    if prompts_file:
        items.extend(read_prompt_file(prompts_file))
    if not items:
        raise ValueError("no prompts: give --prompts ... or --prompts_file FILE")
    groups, pending = [], []
    for it in items:
        if isinstance(it, PromptGroup):
            if pending:
                groups.append(PromptGroup(pending, "", "prompts"))
                pending = []
            groups.append(it)
            continue
        pending.append(it)
        if len(pending) == branches_per_sample:
            groups.append(PromptGroup(pending, "", "prompts"))
            pending = []
    if pending:
        groups.append(PromptGroup(pending, "", "prompts"))
    return groups


def render_group(group: PromptGroup, tokenizer, chat_template: bool) -> dict:
    """-> a sample dict for the layout / generator (chat-formatted when asked)."""
    if not chat_template:
        return {"main": group.main, "branches": list(group.branches)}
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat_template: this tokenizer has no chat template")

    def render(messages, gen):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    main = render([{"role": "system", "content": group.main}], False) if group.main else ""
    return {"main": main, "branches": [render([{"role": "user", "content": b}], True) for b in group.branches]}
