"""Small data-file helpers shared by the data-tool tests: write/read JSONL, run a script, SFT inputs in every format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDARD = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is 2 + 3?"},
            {"role": "assistant", "content": "the answer is 5."}]


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def run_script(name: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, f"scripts/{name}.py", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


SFT_INPUTS = {
    "standard": {"conversations": STANDARD},
    "openai": {"messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "what is 2 + 3?"}]},
                            {"role": "assistant", "content": "the answer is 5."}]},
    "sharegpt": {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "what is 2 + 3?"},
                                   {"from": "gpt", "value": "the answer is 5."}]},
    "alpaca": {"instruction": "what is", "input": "2 + 3?", "output": "the answer is 5.", "system": "be brief"},
    "simple": {"prompt": "what is 2 + 3?", "response": "the answer is 5.", "system": "be brief"},
}
