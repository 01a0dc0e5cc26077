"""The bundled verifiable RL prompts (parallel_data/demo/rl_prompts.py) and the RL prompt dataset
(parallel_data/prompt_dataset.py): deterministic, held out from the eval tasks, answers right, records checked."""

from __future__ import annotations

import json
import re

import pytest

from model.tokenizer import load_tokenizer
from parallel_data.demo.corpus import build_eval_tasks, heldout_from_eval
from parallel_data.demo.rl_prompts import build_rl_prompts
from parallel_data.demo.tasks import TASK_KINDS
from parallel_data.io import DataError
from parallel_data.prompt_dataset import PromptDataset


def _check_answer(rec: dict) -> None:
    q, a = rec["prompt"], rec["answer"]
    if rec["kind"] == "arith":
        x, y = (int(n) for n in re.findall(r"\d+", q))
        adds = any(w in q for w in ("plus", "+", "sum", "add", "Add"))
        assert int(a) == (x + y if adds else max(x, y) - min(x, y)), rec
    elif rec["kind"] == "copy":
        assert q.endswith(a), rec
    elif rec["kind"] == "reverse":
        sep = ", " if ", " in a else " "
        assert q.endswith(sep.join(reversed(a.split(sep)))), rec
    elif rec["kind"] == "last":
        assert q.rstrip("?").endswith(" " + a), rec
    elif "letters" in q:  # count the letters of a word
        word = re.search(r"(?:word|does) (\w+)(?:\?| have)", q).group(1)
        assert int(a) == len(word), rec
    else:  # count the items of a list (or one word's occurrences in it)
        listed = q.split(": ", 1)[1].rstrip("?")
        items = listed.split(", " if ", " in listed else " ")
        word = re.match(r"How many times does (\w+) appear", q)
        assert int(a) == (items.count(word.group(1)) if word else len(items)), rec


def test_rl_prompts_are_deterministic_held_out_and_right():
    held = heldout_from_eval(build_eval_tasks(5, 80, 5))
    recs = build_rl_prompts(5, 400, held)
    assert recs == build_rl_prompts(5, 400, held) and recs != build_rl_prompts(6, 400, held)
    assert [r["kind"] for r in recs[:2 * len(TASK_KINDS)]] == list(TASK_KINDS) * 2
    assert not {r["prompt"] for r in recs} & held.questions
    for r in recs:
        assert isinstance(r["answer"], str) and r["answer"].strip()
        _check_answer(r)


def test_prompt_dataset_reads_every_record_format(tmp_path, tiny_tokenizer):
    rows = [{"prompt": "What is 2 plus 3?", "answer": "5"},
            {"conversations": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "placeholder"}], "answer": 7},
            {"messages": [{"role": "user", "content": "Count: a, b"}], "answer": "2"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = PromptDataset(tiny_tokenizer, data_path=str(path), shuffle=False)
    units = list(ds.all_units())
    assert [u["meta"]["answer"] for u in units] == ["5", "7", "2"]
    assert units[1]["meta"]["source"] == f"{path}:2"
    text = tiny_tokenizer.decode(units[1]["input_ids"])
    assert text.endswith("<|im_start|>assistant\n") and "placeholder" not in text and "Be brief." in text


@pytest.mark.parametrize("record, match", [
    ({"prompt": "x"}, "field 'answer': missing"),
    ({"prompt": "x", "answer": [1]}, "field 'answer': must be a string or an integer"),
    ({"prompt": ""}, "field 'prompt': must be a non-empty string"),
    ({"question": "x", "answer": "1"}, "needs 'prompt', 'conversations' or 'messages'"),
    ({"conversations": [{"role": "assistant", "content": "a"}], "answer": "1"}, "needs a non-empty user turn"),
    ({"conversations": [{"role": "robot", "content": "a"}], "answer": "1"}, "field 'conversations[0]'"),
    ({"prompt": "word " * 600, "answer": "1"}, "more than --max_seq_len 64"),
])
def test_prompt_dataset_names_the_bad_record(tmp_path, tiny_tokenizer, record, match):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "answer": "1"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=re.escape(match)) as e:
        list(PromptDataset(tiny_tokenizer, data_path=str(path), max_seq_len=64, shuffle=False).all_units())
    assert f"{path}:2" in str(e.value)


def test_answers_are_optional_with_a_reward_model(tmp_path, tiny_tokenizer):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "no answer here"}) + "\n")
    units = list(PromptDataset(tiny_tokenizer, data_path=str(path), require_answer=False).all_units())
    assert units[0]["meta"]["answer"] is None


def test_bundled_prompts_load_with_the_repo_tokenizer(tmp_path):
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in build_rl_prompts(1234, 200)))
    units = list(PromptDataset(load_tokenizer(), data_path=str(path), max_seq_len=128).all_units())
    assert len(units) == 200 and max(len(u["input_ids"]) for u in units) < 128
