"""The commands of README.md and docs/*.md: the ```bash runnable blocks run, every other command parses.

Runnable blocks run in document order (DATASET.md builds a small corpus, TRAINING.md trains tiny models on
it, INFERENCE.md uses them) in one sandbox folder: relative paths (`dataset/`, `out/`) are the sandbox's,
the scripts are the repository's. Every command must exit 0 and write the outputs it names. Every other
`python ...` / `torchrun ...` command is parsed by its entry point's real parser (flag names, types and
choices; files and folders are not checked, since they are the reader's).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from docs_commands import DOCS, ROOT, Command, doc_commands, entry_point

RUN_ORDER = ["docs/DATASET.md", "docs/TRAINING.md", "docs/INFERENCE.md"]
PARALLEL_DOCS = {"docs/TRAINING.md", "docs/INFERENCE.md"}  # their blocks are independent of each other
COMMANDS = doc_commands()
RUNNABLE = sorted((c for c in COMMANDS if c.runnable), key=lambda c: (RUN_ORDER.index(str(c.doc.relative_to(ROOT)))
                                                                     if str(c.doc.relative_to(ROOT)) in RUN_ORDER
                                                                     else len(RUN_ORDER), c.line))
OUTPUT_FLAGS = ("--out_path", "--output", "--out_dir", "-o", "--out")


def _parse(c: Command) -> str | None:
    """None when the command parses, else the parser's complaint."""
    module, args = entry_point(c.argv)
    parser = importlib.import_module(module).build_parser()
    try:
        argparse.ArgumentParser.parse_args(parser, args)  # the flags themselves; file checks are skipped
    except SystemExit as e:
        return f"{c.where}: exit {e.code}: {c.text}"
    return None


def test_every_documented_command_parses(capsys):
    checked, failures = 0, []
    for c in COMMANDS:
        ep = entry_point(c.argv)
        if ep is None or "..." in ep[1]:  # not ours (make, curl, bash, pip), or an elided example
            continue
        if not hasattr(importlib.import_module(ep[0]), "build_parser"):
            failures.append(f"{c.where}: {ep[0]} has no build_parser()")
            continue
        failures.append(_parse(c))
        checked += 1
    capsys.readouterr()
    failures = [f for f in failures if f]
    assert not failures, "\n".join(failures)
    assert checked >= 60


def test_runnable_blocks_are_where_they_run():
    assert len(RUNNABLE) >= 10
    for c in RUNNABLE:
        assert str(c.doc.relative_to(ROOT)) in RUN_ORDER, f"{c.where}: a runnable block outside {RUN_ORDER}"
        assert entry_point(c.argv) is not None, f"{c.where}: only python commands run"


def _argv(c: Command) -> list[str]:
    module, args = entry_point(c.argv)
    script = ROOT / (module.replace(".", "/") + ".py")
    head = [sys.executable, str(script)] if "-m" not in c.argv[:2] else [sys.executable, "-m", module]
    return [*head, *args]


def _outputs(c: Command) -> list[str]:
    args = entry_point(c.argv)[1]
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in OUTPUT_FLAGS]


def _run_block(block: list[Command], box: Path, env: dict) -> dict[str, tuple[int, str, float]]:
    """A block's commands one after the other -> where: (exit status or -1 for a missing output, stderr, s)."""
    out = {}
    for c in block:
        t0 = time.perf_counter()
        proc = subprocess.run(_argv(c), cwd=box, env=env, capture_output=True, text=True, timeout=240)
        missing = [p for p in _outputs(c) if not (box / p).exists()]
        tail = proc.stderr[-2000:] + (f"\nmissing outputs: {missing}" if missing else "")
        out[c.where] = (proc.returncode if not missing else -1, tail, time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, tuple[int, str, float]]:
    """Every runnable command in one sandbox: the docs in RUN_ORDER one after the other, the blocks of a doc in
    order, except PARALLEL_DOCS, whose blocks only read what the earlier docs wrote and run two at a time."""
    box = tmp_path_factory.mktemp("docs_sandbox")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1"}
    env.pop("PARALLELMIND_TRACEBACK", None)
    out = {}
    for doc in RUN_ORDER:
        blocks: dict[int, list[Command]] = {}
        for c in RUNNABLE:
            if str(c.doc.relative_to(ROOT)) == doc:
                blocks.setdefault(c.block, []).append(c)
        with ThreadPoolExecutor(2 if doc in PARALLEL_DOCS else 1) as pool:
            for result in pool.map(lambda b: _run_block(b, box, env), blocks.values()):
                out.update(result)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("where", [c.where for c in RUNNABLE])
def test_runnable_command(where, ran):
    rc, tail, _ = ran[where]
    assert rc == 0, f"{where}: exit {rc}\n{tail}"


_PATH = re.compile(r"(?<![\w./-])((?:scripts|trainer|model|parallel|parallel_data|evaluation|serving|docs|tests)/"
                   r"[\w./-]*\w\.(?:py|md|sh|png|jsonl?|jinja))")
PLACEHOLDERS = ("trainer/x.py", "trainer/train_x.py")  # "any trainer" in the prose


def test_every_file_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for m in _PATH.finditer(doc.read_text()):
            p = m.group(1)
            if p not in PLACEHOLDERS and not ((ROOT / p).exists() or (ROOT / "docs" / p).exists()):
                missing.append(f"{doc.relative_to(ROOT)}: {p}")
    assert not missing, "\n".join(missing)


def test_the_license_the_readme_names():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and text.count("\n") >= 200  # the whole text, with the appendix
    assert "[Apache-2.0 License](LICENSE)" in (ROOT / "README.md").read_text()
