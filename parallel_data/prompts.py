"""Prompt inputs for parallel generation: command-line prompts and prompt files -> samples of branches.

Accepted (one prompt or sample per line):
* a text file: one prompt per line;
* JSONL: ``{"branches": [...]}`` (one sample), ``{"text": "a||b"}`` (one sample, `||`-separated),
  ``{"prompt": ...}`` / ``{"question": ...}`` (single prompts), ``{"main": ..., "branches": [...]}``
  (a shared context with its questions). Branch entries may be strings or ``{"text"/"prompt"}``.
Single prompts are packed into samples of `branches_per_sample` in input order; a command-line prompt
containing `||` is a sample of its own (pretrain mode). With a chat template, every branch becomes a
user turn with the assistant generation prompt, and a main becomes the system message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from model.tokenizer import with_default_system
from parallel_data.io import DataError, check_input_file, describe_type, iter_jsonl, iter_text_lines


@dataclass
class PromptSample:
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


def _is_jsonl(p: Path) -> bool:
    """.jsonl / .json files, and any file whose first non-blank line (BOM ignored) starts with '{'."""
    if p.suffix.lower() in (".jsonl", ".json"):
        return True
    for _, first in iter_text_lines(p):  # DataError with file:line for invalid UTF-8; "is empty" for no line
        return first.lstrip().startswith("{")
    return False


def read_prompt_file(path: str | Path) -> list[PromptSample | str]:
    """-> samples (from records with branches) and single prompts (str), in file order.

    Read with the project's readers (`parallel_data.io`): UTF-8, a BOM accepted, errors naming file:line.
    """
    return [item for _, _, item in iter_prompt_file(path)]


def iter_prompt_file(path: str | Path) -> Iterator[tuple[int, dict | None, PromptSample | str]]:
    """-> (line number, the JSON record or None for a text line, its sample or single prompt), in file order."""
    p = check_input_file(path, "prompts file")
    try:
        if not _is_jsonl(p):
            for no, line in iter_text_lines(p):
                yield no, None, line.strip()
            return
        for no, rec in iter_jsonl(p):
            yield no, rec, _prompt_record(rec, p, no)
    except DataError as e:
        if e.reason.startswith("is empty"):
            raise DataError("is empty (no prompts)", path=p) from None
        raise


def _prompt_record(rec: dict, p: Path, no: int) -> PromptSample | str:
    where = f"{p}:{no}"
    if "branches" in rec:
        br = rec["branches"]
        if not isinstance(br, list) or not br:
            raise DataError("must be a non-empty list", path=p, line=no, field="branches")
        main = rec.get("main") or ""
        if not isinstance(main, str):
            raise DataError(f"expected a string, got {describe_type(main)}", path=p, line=no, field="main")
        return PromptSample([_branch_text(b, p, no, k) for k, b in enumerate(br)], main, where)
    if isinstance(rec.get("text"), str) and "||" in rec["text"]:
        return PromptSample(_split_bars(rec["text"], where), "", where)
    key = next((k for k in ("prompt", "question", "text") if k in rec), None)
    if key is None:
        raise DataError("needs 'branches', 'prompt', 'question' or 'text'", path=p, line=no)
    if not isinstance(rec[key], str) or not rec[key].strip():
        raise DataError("empty prompt", path=p, line=no, field=key)
    return rec[key]


def collect_samples(prompts: list[str] | None, prompts_file: str | None, *, branches_per_sample: int,
                   split_bars: bool = True) -> list[PromptSample]:
    """Merge `--prompts` and `--prompts_file` into samples (single prompts packed by branches_per_sample)."""
    if branches_per_sample < 1:
        raise ValueError(f"--branches_per_sample must be >= 1, got {branches_per_sample}")
    items: list[PromptSample | str] = []
    for p in prompts or []:
        if not p.strip():
            raise ValueError("--prompts: an empty prompt")
        items.append(PromptSample(_split_bars(p, "--prompts"), "", "--prompts") if split_bars and "||" in p else p)
    if prompts_file:
        items.extend(read_prompt_file(prompts_file))
    if not items:
        raise ValueError("no prompts: give --prompts ... or --prompts_file FILE")
    samples, pending = [], []
    for it in items:
        if isinstance(it, PromptSample):
            if pending:
                samples.append(PromptSample(pending, "", "prompts"))
                pending = []
            samples.append(it)
            continue
        pending.append(it)
        if len(pending) == branches_per_sample:
            samples.append(PromptSample(pending, "", "prompts"))
            pending = []
    if pending:
        samples.append(PromptSample(pending, "", "prompts"))
    return samples


def render_sample(sample: PromptSample, tokenizer, chat_template: bool, default_system: str | None = None) -> dict:
    """-> a sample dict for the layout / generator (chat-formatted when asked).

    With a main, each branch is the rest of the whole conversation `[system: main, user: branch]` after
    the rendered system turn, so main + branch is exactly what the template gives for that conversation
    (templates that add a default system prompt when none leads add it once, to a branch without a main).
    `default_system` (MiniLLM's default system turn, `--default_system`) opens each branch of a sample
    without a main with that system turn; a main is the sample's own system turn and is kept.
    """
    if not chat_template:
        return {"main": sample.main, "branches": list(sample.branches)}
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat_template: this tokenizer has no chat template")

    def render(messages, gen):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    if not sample.main:
        return {"main": "", "branches": [render(with_default_system([{"role": "user", "content": b}], default_system),
                                                True) for b in sample.branches]}
    system = [{"role": "system", "content": sample.main}]
    main = render(system, False)
    branches = []
    for b in sample.branches:
        whole = render([*system, {"role": "user", "content": b}], True)
        if not whole.startswith(main):
            raise ValueError(f"{sample.source or 'a sample'}: the chat template renders the system turn differently "
                             "when a user turn follows it, so the main cannot be shared; pass the context inside "
                             "each branch instead")
        branches.append(whole[len(main):])
    return {"main": main, "branches": branches}
