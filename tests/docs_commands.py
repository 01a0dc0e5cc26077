"""The shell commands of the docs (README.md, docs/*.md): extraction, and which entry point each one runs.

A ```bash block holds commands; a line ending in `\\` continues on the next; `#` starts a comment.
A block opened with ```bash runnable is run by tests/scripts/test_docs_commands.py, in document order,
in one sandbox folder (its `dataset/` and `out/` are the sandbox's); every other command is parsed by its
entry point's real parser (flag names, types and choices; no file checks).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.S | re.M)
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
_ASSIGN = re.compile(r"^[A-Za-z_]\w*=")


@dataclass
class Command:
    doc: Path
    line: int  # where the command starts in the doc
    text: str  # one logical line, continuations joined
    runnable: bool
    block: int = 0  # the line of the block's opening fence
    @property
    def argv(self) -> list[str]:
        """The words of the command as the shell splits them (a trailing `# comment` dropped)."""
        return shlex.split(self.text, comments=True)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _logical_lines(block: str, first_line: int):
    """-> (line number, command) per logical line of a bash block."""
    pending, start = "", first_line
    for i, raw in enumerate(block.splitlines()):
        line = raw.rstrip()
        if not pending:
            start = first_line + i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            yield start, text


def doc_commands(docs: list[Path] = DOCS) -> list[Command]:
    out = []
    for doc in docs:
        text = doc.read_text()
        for m in _FENCE.finditer(text):
            if m.group(1) not in ("bash", "sh", "shell"):
                continue
            first = text.count("\n", 0, m.start(3)) + 1
            runnable = "runnable" in m.group(2).split()
            variables: dict[str, str] = {}  # `S="--hidden_size 64 ..."` lines, expanded in later commands
            for n, t in _logical_lines(m.group(3), first):
                words = shlex.split(t, comments=True)
                if len(words) == 1 and _ASSIGN.match(words[0]):
                    name, value = words[0].split("=", 1)
                    variables[name] = value
                    continue
                for name, value in variables.items():
                    t = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, t)
                out.append(Command(doc, n, t, runnable, first - 1))
    return out


def entry_point(argv: list[str]) -> tuple[str, list[str]] | None:
    """`python x.py ...`, `python -m a.b ...`, `torchrun [opts] x.py ...` (env assignments first) ->
    (module name, its arguments); None for anything else (make, curl, bash, pip, ...)."""
    while argv and _ENV.match(argv[0]):
        argv = argv[1:]
    if not argv:
        return None
    if argv[0] in ("python", "python3"):
        rest = argv[1:]
    elif argv[0] == "torchrun":
        rest = argv[1:]
        while rest and rest[0].startswith("-"):  # the launcher's own options and their values
            rest = rest[1:] if "=" in rest[0] or rest[0] == "--standalone" else rest[2:]
    else:
        return None
    if not rest:
        return None
    if rest[0] == "-m" and len(rest) > 1:
        return rest[1], rest[2:]
    if rest[0].endswith(".py"):
        return rest[0][:-3].replace("/", "."), rest[1:]
    return None
