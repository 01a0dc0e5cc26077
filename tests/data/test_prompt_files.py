"""Prompt and task files are read by the project's one JSONL / text reader: BOM accepted, errors name file:line."""

import json

import pytest

from evaluation.tasks import read_tasks
from parallel_data.io import DataError
from parallel_data.prompts import PromptSample, collect_samples, read_prompt_file

BOM = "\ufeff"


def test_prompts_file_accepts_a_utf8_bom(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text(BOM + "first prompt\n\nsecond prompt\n", encoding="utf-8")
    assert read_prompt_file(txt) == ["first prompt", "second prompt"]
    sniffed = tmp_path / "p.prompts"  # no .jsonl suffix: the first line says it is JSONL, BOM or not
    sniffed.write_text(BOM + json.dumps({"branches": ["a", "b"], "main": "ctx"}) + "\n" + json.dumps({"prompt": "c"})
                       + "\n", encoding="utf-8")
    got = read_prompt_file(sniffed)
    assert got[0] == PromptSample(["a", "b"], "ctx", f"{sniffed}:1") and got[1] == "c"
    jl = tmp_path / "p.jsonl"
    jl.write_text(BOM + json.dumps({"text": "x||y"}) + "\n", encoding="utf-8")
    assert [g.branches for g in collect_samples(None, str(jl), branches_per_sample=2)] == [["x", "y"]]


@pytest.mark.parametrize("name", ["p.txt", "p.jsonl"])
def test_prompts_file_invalid_utf8_names_file_and_line(tmp_path, name):
    p = tmp_path / name
    first = json.dumps({"prompt": "fine"}) if name.endswith(".jsonl") else "fine"
    p.write_bytes(first.encode() + b"\n" + b"caf\xe9\n")
    with pytest.raises(DataError, match=rf"{name}:2: not valid UTF-8"):
        read_prompt_file(p)


def test_prompts_file_errors(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match=r"e\.txt: is empty \(no prompts\)"):
        read_prompt_file(empty)
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(DataError, match=r"b\.jsonl:2: field 'prompt': empty prompt"):
        read_prompt_file(bad)
    with pytest.raises(FileNotFoundError, match="prompts file .* does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


def test_tasks_file_uses_the_same_reader(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(BOM + json.dumps({"prompt": "1 + 1 =", "answer": "2"}) + "\n\n", encoding="utf-8")
    assert read_tasks(p) == [{"prompt": "1 + 1 =", "answer": "2", "context": "", "kind": "task"}]
    p.write_bytes(json.dumps({"prompt": "q", "answer": "a"}).encode() + b'\n{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: not valid UTF-8"):
        read_tasks(p)
    p.write_text(json.dumps({"prompt": "q"}) + "\n")
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'answer'"):
        read_tasks(p)
    p.write_text("\n")
    with pytest.raises(DataError, match=r"is empty \(no tasks\)"):
        read_tasks(p)
    with pytest.raises(DataError, match="is a directory"):
        read_tasks(tmp_path)
