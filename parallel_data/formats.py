"""Normalise SFT records to the standard conversation form, and extract pretraining text.

Standard form (what every trainer and converter consumes)::

    [{"role": "system" | "user" | "assistant", "content": str}, ...]

with at least one assistant turn and non-empty user / assistant contents. Role names are matched
case-insensitively; OpenAI's "developer" role becomes "system". Accepted record formats:

| fmt        | record                                                                                 |
|------------|----------------------------------------------------------------------------------------|
| standard   | {"conversations": [{"role", "content"}, ...]}                                          |
| openai     | {"messages": [{"role", "content"}, ...]} (content may be a list of {"type": "text"} parts) |
| sharegpt   | {"conversations": [{"from": "human"/"user"/"gpt"/"assistant"/"system", "value"}, ...]}  |
| alpaca     | {"instruction", "input"?, "output", "system"?}: user = instruction + "\\n" + input       |
| simple     | {"prompt", "response", "system"?} or {"question", "answer", "system"?}                 |

Every problem is a `DataError` naming the field, e.g. `field 'conversations[3].content': empty content
of an assistant turn`.

Public API:
    FORMATS, ROLES, TEXT_FIELDS, TEXT_COLUMNS
    detect_format(obj, path=None, line=None) -> str
    normalize_conversation(obj, fmt="auto", path=None, line=None) -> list[dict]
    render_conversation_text(messages) -> str
    extract_text(obj, text_column=None, path=None, line=None) -> str
    detect_text_column(column_names) -> str | None
    resolve_text_column(column_names, text_column=None, path=None) -> str | None
    conversation_branches(tokenizer, messages, path=None, line=None) -> list[(text, answer_offset)]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from parallel_data.io import DataError, describe_type, require_field

FORMATS = ("standard", "openai", "sharegpt", "alpaca", "simple")
ROLES = ("system", "user", "assistant")
STANDARD_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
OPENAI_ROLES = {**STANDARD_ROLES, "developer": "system"}  # OpenAI's newer name for the system message
SHAREGPT_ROLES = {**STANDARD_ROLES, "human": "user", "gpt": "assistant"}
TEXT_FIELDS = ("text", "content", "document")  # record fields holding pretraining text, in order
TEXT_COLUMNS = ("text", "content", "document", "sentence", "data", "input", "prompt")  # table columns

_PathLike = str | os.PathLike | None


def detect_format(obj: Any, path: _PathLike = None, line: int | None = None) -> str:
    """Return which of FORMATS `obj` is in; raise DataError when it matches none."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {describe_type(obj)}", path=path, line=line)
    if "conversations" in obj:
        conv = obj["conversations"]
        if isinstance(conv, list) and conv and isinstance(conv[0], dict) and "from" in conv[0] \
                and "role" not in conv[0]:
            return "sharegpt"
        return "standard"  # including malformed lists: normalising reports the exact problem
    if "messages" in obj:
        return "openai"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if ("prompt" in obj and "response" in obj) or ("question" in obj and "answer" in obj):
        return "simple"
    keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
    raise DataError(f"unknown conversation format (record keys: {keys}); expected 'conversations', 'messages', "
                    "'instruction'+'output', 'prompt'+'response' or 'question'+'answer'", path=path, line=line)


def _content_str(value: Any, field: str, path: _PathLike, line: int | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts: [{"type": "text", "text": "..."}, ...]
        parts = []
        for j, part in enumerate(value):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else describe_type(part)
                raise DataError(f"only text content parts are supported, got {kind!r}", path=path, line=line,
                                field=f"{field}[{j}]")
        return "".join(parts)
    raise DataError(f"expected a str, got {describe_type(value)}", path=path, line=line, field=field)


def _messages(obj: dict, key: str, role_key: str, content_key: str, role_map: dict[str, str],
              path: _PathLike, line: int | None) -> list[dict]:
    items = require_field(obj, key, list, path, line)
    if not items:
        raise DataError("empty conversation", path=path, line=line, field=key)
    out = []
    for i, msg in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(msg, dict):
            raise DataError(f"expected an object, got {describe_type(msg)}", path=path, line=line, field=where)
        if role_key not in msg:
            raise DataError(f"missing (message keys: {', '.join(map(repr, msg)) or 'none'})", path=path, line=line,
                            field=f"{where}.{role_key}")
        raw_role = msg[role_key]
        if not isinstance(raw_role, str):
            raise DataError(f"expected a str, got {describe_type(raw_role)}", path=path, line=line,
                            field=f"{where}.{role_key}")
        role = role_map.get(raw_role.strip().lower())
        if role is None:
            known = list(role_map)
            raise DataError(f"unknown role {raw_role!r}; expected one of {', '.join(known)}", path=path, line=line,
                            field=f"{where}.{role_key}")
        if content_key not in msg:
            raise DataError("missing", path=path, line=line, field=f"{where}.{content_key}")
        content = _content_str(msg[content_key], f"{where}.{content_key}", path, line)
        out.append({"role": role, "content": content})
    return out


def _opt_str(obj: dict, key: str, path: _PathLike, line: int | None) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"expected a str, got {describe_type(value)}", path=path, line=line, field=key)
    return value


def _with_system(obj: dict, turns: list[dict], path: _PathLike, line: int | None) -> list[dict]:
    system = _opt_str(obj, "system", path, line)
    return ([{"role": "system", "content": system}] if system.strip() else []) + turns


def _validate(messages: list[dict], fields: list[str], path: _PathLike, line: int | None) -> list[dict]:
    has_assistant = False
    for msg, field in zip(messages, fields):
        if msg["role"] == "system":
            continue
        has_assistant |= msg["role"] == "assistant"
        if not msg["content"].strip():
            raise DataError(f"empty content of {'an assistant' if msg['role'] == 'assistant' else 'a user'} turn",
                            path=path, line=line, field=field)
    if not has_assistant:
        field = fields[0].split("[")[0] if fields else None
        raise DataError("no assistant turn", path=path, line=line, field=field)
    return messages


def normalize_conversation(obj: Any, fmt: str = "auto", path: _PathLike = None,
                           line: int | None = None) -> list[dict]:
    """Convert one SFT record to `[{"role", "content"}, ...]` (new dicts; extra keys are dropped).

    `fmt` is "auto" (per record, with `detect_format`) or one of FORMATS. Raises DataError naming the
    field for wrong types, unknown roles, an empty user / assistant content, or no assistant turn.
    Empty system messages are kept as they are.
    """
    if fmt == "auto":
        fmt = detect_format(obj, path, line)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {describe_type(obj)}", path=path, line=line)

    if fmt in ("standard", "openai", "sharegpt"):
        key = "messages" if fmt == "openai" else "conversations"
        if fmt == "sharegpt":
            msgs = _messages(obj, key, "from", "value", SHAREGPT_ROLES, path, line)
        else:
            roles = OPENAI_ROLES if fmt == "openai" else STANDARD_ROLES
            msgs = _messages(obj, key, "role", "content", roles, path, line)
        return _validate(msgs, [f"{key}[{i}].{'value' if fmt == 'sharegpt' else 'content'}"
                                for i in range(len(msgs))], path, line)

    if fmt == "alpaca":
        instruction = require_field(obj, "instruction", str, path, line)
        extra = _opt_str(obj, "input", path, line)
        output = require_field(obj, "output", str, path, line)
        user = instruction + "\n" + extra if extra.strip() else instruction
        if not user.strip():
            raise DataError("empty content of a user turn (and 'input' is empty too)", path=path, line=line,
                            field="instruction")
        turns = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        msgs = _with_system(obj, turns, path, line)
        return _validate(msgs, ["system"] * (len(msgs) - 2) + ["instruction", "output"], path, line)

    # simple
    q_key, a_key = ("prompt", "response") if "prompt" in obj or "response" in obj else ("question", "answer")
    question = require_field(obj, q_key, str, path, line)
    answer = require_field(obj, a_key, str, path, line)
    msgs = _with_system(obj, [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                        path, line)
    return _validate(msgs, ["system"] * (len(msgs) - 2) + [q_key, a_key], path, line)


def render_conversation_text(messages: Iterable[dict]) -> str:
    """Plain-text rendering used for pretraining: one `role: content` line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _looks_like_conversation(obj: dict) -> bool:
    try:
        detect_format(obj)
        return True
    except DataError:
        return False


def extract_text(obj: Any, text_column: str | None = None, path: _PathLike = None, line: int | None = None) -> str:
    """Pretraining text of one record; may be empty or blank (the caller decides what to do with that).

    With `text_column`, that field must exist and be a string. Otherwise, in order: the first of
    TEXT_FIELDS (`text`, `content`, `document`) present; a conversation in any supported format,
    rendered as `role: content` lines; the first other TEXT_COLUMNS field present. A present text field
    that is not a string is an error (it is never skipped in favour of another field).
    """
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object or string, got {describe_type(obj)}", path=path, line=line)
    if text_column is not None:
        return require_field(obj, text_column, str, path, line)
    for key in TEXT_FIELDS:
        if key in obj:
            return require_field(obj, key, str, path, line)
    if _looks_like_conversation(obj):
        return render_conversation_text(normalize_conversation(obj, "auto", path, line))
    for key in TEXT_COLUMNS:
        if key in obj:
            return require_field(obj, key, str, path, line)
    keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
    raise DataError(f"no text found (record keys: {keys}); expected one of {', '.join(TEXT_FIELDS)}, a conversation, "
                    f"or pass the text column name", path=path, line=line)


def detect_text_column(column_names: Iterable[str]) -> str | None:
    """The first of TEXT_COLUMNS among `column_names` (exact name, then case-insensitive), or None."""
    names = list(column_names)
    for cand in TEXT_COLUMNS:
        if cand in names:
            return cand
    lowered = {n.lower(): n for n in names if isinstance(n, str)}
    for cand in TEXT_COLUMNS:
        if cand in lowered:
            return lowered[cand]
    return None


def resolve_text_column(column_names: Iterable[str], text_column: str | None = None,
                        path: _PathLike = None) -> str | None:
    """Pick the text column of a table (CSV, HF dataset) once, from its column names.

    Returns the column to read, or None when the columns form a conversation (for example Alpaca's
    instruction/input/output), whose rows `extract_text` then renders. Order: the explicit
    `text_column` (which must exist); a TEXT_FIELDS column; a conversation; `detect_text_column`;
    the only column of a one-column table. Raises DataError when nothing fits (nothing is guessed).
    """
    names = [n for n in column_names if isinstance(n, str)]
    shown = ", ".join(repr(n) for n in names[:20]) or "none"
    if text_column is not None:
        if text_column not in names:
            raise DataError(f"no such column (columns: {shown})", path=path, field=text_column)
        return text_column
    lowered = {n.lower(): n for n in names}
    for cand in TEXT_FIELDS:
        if cand in lowered:
            return lowered[cand]
    if _looks_like_conversation(dict.fromkeys(names)):
        return None
    found = detect_text_column(names)
    if found is not None:
        return found
    if len(names) == 1:
        return names[0]
    raise DataError(f"cannot tell which column holds the text (columns: {shown}); pass --text-column", path=path)


def _render(tokenizer, messages: list[dict], generation_prompt: bool, path: _PathLike, line: int | None,
            field: str) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja2 TemplateError raised by the template itself, e.g. on a role order it rejects
        raise DataError(f"the chat template failed: {type(e).__name__}: {e}", path=path, line=line, field=field) from e
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


def conversation_branches(tokenizer, messages: list[dict], path: _PathLike = None,
                          line: int | None = None) -> list[tuple[str, int]]:
    """One `(text, answer_offset)` branch per assistant turn of a normalised conversation.

    `text` is the conversation up to and including that assistant turn, rendered with the tokenizer's
    chat template; a newline the template adds after the final special token (ChatML's `<|im_end|>\n`)
    is dropped, so the branch ends with `<|im_end|>`. `answer_offset` is the number of tokens
    (`add_special_tokens=False`) of the history rendered with `add_generation_prompt=True`, checked to
    be an exact token prefix of `text`: the loss region `tokens[answer_offset:]` is exactly that reply
    and its end token. A template that renders the history differently (for example one that strips
    earlier reasoning) raises DataError instead of producing a wrong offset.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; pass a tokenizer folder with chat_template.jinja")
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    out = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        field = f"conversations[{i}]"
        text = _render(tokenizer, messages[: i + 1], False, path, line, field)
        if text.endswith("\n") and any(text[:-1].endswith(s) for s in specials):
            text = text[:-1]
        prefix = _render(tokenizer, messages[:i], True, path, line, field)
        if not text.startswith(prefix):
            raise DataError("the chat template renders the history differently with add_generation_prompt=True, so "
                            "the answer offset is undefined", path=path, line=line, field=field)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        n = len(prefix_ids)
        if ids[:n] != prefix_ids:
            raise DataError("the rendered prompt is not an exact token prefix of the branch (a token crosses the "
                            "prompt/answer boundary)", path=path, line=line, field=field)
        if n >= len(ids):
            raise DataError("the answer has no tokens", path=path, line=line, field=field)
        out.append((text, n))
    return out
