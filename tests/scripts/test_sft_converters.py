"""The SFT converters (scripts/convert_sft_to_parallel.py, convert_sft_to_pretrain.py) and split_pretrain_data.py:
offsets that put the loss on exactly the replies, time offsets, bad input, and the scripts run as files and modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from data_files import REPO, SFT_INPUTS, read_jsonl, run_script, write_lines

import model.hub
import model.tokenizer
from parallel_data.formats import conversation_branches, normalize_conversation
from parallel_data.io import DataError
from scripts import convert_sft_to_parallel, convert_sft_to_pretrain, split_pretrain_data

# ---------------------------------------------------------------------------- convert_sft_to_parallel

MULTI = {"conversations": [{"role": "user", "content": "what is 1 + 2?"},
                           {"role": "assistant", "content": "the answer is 3."},
                           {"role": "user", "content": "and 2 + 2?"},
                           {"role": "assistant", "content": "it is 4."}]}


def check_branch(tok, rec: dict, answer: str):
    ids = tok(rec["text"], add_special_tokens=False)["input_ids"]
    off = rec["answer_offset"]
    assert 0 < off < len(ids)
    assert tok.decode(ids[off:]) == answer + "<|im_end|>"  # loss = exactly the reply and its end token
    assert tok.decode(ids[:off]).endswith("<|im_start|>assistant\n")
    assert rec["text"].endswith("<|im_end|>")


def test_sft_to_parallel_offsets(tmp_path, tiny_tokenizer, tiny_tokenizer_dir, capsys):
    src = write_lines(tmp_path / "sft.jsonl", [MULTI, SFT_INPUTS["alpaca"], SFT_INPUTS["sharegpt"]])
    out = tmp_path / "par.jsonl"
    assert convert_sft_to_parallel.main(["--input", str(src), "--output", str(out),
                                         "--tokenizer", str(tiny_tokenizer_dir)]) == 0
    recs = read_jsonl(out)
    assert len(recs) == 4 and all(set(r) == {"text", "answer_offset"} for r in recs)
    check_branch(tiny_tokenizer, recs[0], "the answer is 3.")
    check_branch(tiny_tokenizer, recs[1], "it is 4.")
    assert "the answer is 3." in recs[1]["text"]  # the earlier turns are context of the second branch
    check_branch(tiny_tokenizer, recs[2], "the answer is 5.")
    assert recs[2]["text"].startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nwhat is\n2 + 3?")
    assert "wrote 4 branches from 3 conversations" in capsys.readouterr().out


def test_sft_to_parallel_time_offsets(tmp_path, tiny_tokenizer_dir, capsys):
    src = write_lines(tmp_path / "sft.jsonl", [MULTI] * 10)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        assert convert_sft_to_parallel.main(["--input", str(src), "--output", str(out), "--tokenizer",
                                             str(tiny_tokenizer_dir), "--pad_min", "2", "--pad_max", "5",
                                             "--quiet", "--max_samples", "4"]) == 0
        outs.append(read_jsonl(out))
    assert capsys.readouterr().out == ""
    assert outs[0] == outs[1] and len(outs[0]) == 8  # seeded; 4 conversations x 2 branches
    offsets = [r["time_offset"] for r in outs[0]]
    assert all(2 <= t <= 5 for t in offsets) and len(set(offsets)) > 1
    assert all("<|endoftext|>" not in r["text"] for r in outs[0])  # no pad strings in the text
    for bad in (["--pad_min", "3", "--pad_max", "1"], ["--pad_min", "-1"]):
        assert convert_sft_to_parallel.main(["--input", str(src), "--output", str(tmp_path / "c.jsonl"),
                                             "--tokenizer", str(tiny_tokenizer_dir), *bad]) == 2
    assert "--pad_min" in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()


def test_sft_to_parallel_bad_input_and_skip(tmp_path, tiny_tokenizer_dir, capsys):
    src = write_lines(tmp_path / "sft.jsonl", [MULTI, {"conversations": [{"role": "user", "content": "q"},
                                                                         {"role": "assistant", "content": ""}]},
                                               "{oops", MULTI])
    out = tmp_path / "par.jsonl"
    args = ["--input", str(src), "--output", str(out), "--tokenizer", str(tiny_tokenizer_dir)]
    assert convert_sft_to_parallel.main(args) == 2
    assert "sft.jsonl:2: field 'conversations[1].content': empty content of an assistant turn" in \
        capsys.readouterr().err
    assert not out.exists()
    assert convert_sft_to_parallel.main([*args, "--skip_bad"]) == 0
    assert "skipped 2 bad" in capsys.readouterr().out
    assert len(read_jsonl(out)) == 4


def test_conversation_branches_rejects_non_prefix_template(tiny_tokenizer):
    class Odd:  # renders the history differently when asked for a generation prompt
        chat_template = "x"
        all_special_tokens = ["<|im_end|>"]

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            text = tiny_tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
            return text.replace("user", "USER") if add_generation_prompt else text

        def __call__(self, text, add_special_tokens=False):
            return tiny_tokenizer(text, add_special_tokens=add_special_tokens)

    msgs = normalize_conversation(MULTI)
    assert [off for _, off in conversation_branches(tiny_tokenizer, msgs)]  # the real template works
    with pytest.raises(DataError, match=r"s\.jsonl:9: field 'conversations\[1\]': the chat template renders"):
        conversation_branches(Odd(), msgs, "s.jsonl", 9)


def test_sft_to_parallel_missing_default_tokenizer(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model.tokenizer, "DEFAULT_TOKENIZER_DIR", tmp_path / "no_tokenizer")
    src = write_lines(tmp_path / "sft.jsonl", [MULTI])
    assert convert_sft_to_parallel.main(["--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "default tokenizer" in err and "train_tokenizer.py" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_sft_to_parallel_cli(tmp_path, tiny_tokenizer_dir):
    src = write_lines(tmp_path / "sft.jsonl", [SFT_INPUTS["openai"]])
    out = tmp_path / "par.jsonl"
    r = run_script("convert_sft_to_parallel", "--input", src, "--output", out, "--tokenizer", tiny_tokenizer_dir)
    assert r.returncode == 0, r.stderr
    (rec,) = read_jsonl(out)
    assert rec["text"].endswith("the answer is 5.<|im_end|>") and rec["answer_offset"] > 0


# ----------------------------------------------------------------------------- convert_sft_to_pretrain

def test_sft_to_pretrain(tmp_path, capsys):
    src = write_lines(tmp_path / "sft_mini.jsonl", [MULTI, SFT_INPUTS["simple"], {"conversations": "bad"}])
    assert convert_sft_to_pretrain.main(["--input", str(src)]) == 2
    assert "sft_mini.jsonl:3: field 'conversations': expected a list, got str" in capsys.readouterr().err
    assert convert_sft_to_pretrain.main(["--input", str(src), "--skip_bad", "--log_every", "0"]) == 0
    out = tmp_path / "pretrain_mini.jsonl"  # default name: sft_ -> pretrain_
    assert read_jsonl(out) == [
        {"text": "<|im_start|>what is 1 + 2? the answer is 3. and 2 + 2? it is 4.<|im_end|>"},
        {"text": "<|im_start|>be brief what is 2 + 3? the answer is 5.<|im_end|>"}]
    assert "skipped 1 bad" in capsys.readouterr().out
    out2 = tmp_path / "o.jsonl"
    assert convert_sft_to_pretrain.main(["--input", str(src), "--output", str(out2), "--sep", "|", "--start_token",
                                         "<s>", "--end_token", "</s>", "--max_lines", "1"]) == 0
    assert read_jsonl(out2) == [{"text": "<s>what is 1 + 2?|the answer is 3.|and 2 + 2?|it is 4.</s>"}]


def test_sft_to_pretrain_output_name_and_cli(tmp_path):
    src = write_lines(tmp_path / "chat.jsonl", [MULTI])
    r = run_script("convert_sft_to_pretrain", "--input", src)
    assert r.returncode == 2 and "would overwrite the input" in r.stderr and "pass --output" in r.stderr
    assert src.read_text().strip() == json.dumps(MULTI)
    r = run_script("convert_sft_to_pretrain", "--input", src, "--output", tmp_path / "p.jsonl")
    assert r.returncode == 0, r.stderr
    assert read_jsonl(tmp_path / "p.jsonl")[0]["text"].startswith("<|im_start|>what is 1 + 2?")


# ------------------------------------------------------------------------------- split_pretrain_data

def test_split_pretrain_data(tmp_path, capsys):
    src = write_lines(tmp_path / "p.jsonl", [
        {"text": "<|im_start|>one<|im_end|> <|im_start|>two\nlines<|im_end|>"},
        {"text": "lead <|im_start|>three<|im_end|>\n tail text "},
        {"text": "no markers at all"},
        {"text": "<|im_start|>unterminated"},
        {"text": "   "},
    ])
    out = tmp_path / "s.jsonl"
    assert split_pretrain_data.main(["--input", str(src), "--output", str(out)]) == 0
    assert [r["text"] for r in read_jsonl(out)] == [
        "<|im_start|>one<|im_end|>", "<|im_start|>two\nlines<|im_end|>", "lead", "<|im_start|>three<|im_end|>",
        "tail text", "no markers at all", "<|im_start|>unterminated"]
    summary = capsys.readouterr().out
    assert "3 segments" in summary and "4 pieces of text outside segments" in summary and "1 blank" in summary


def test_split_pretrain_data_bad_and_cli(tmp_path):
    src = write_lines(tmp_path / "p.jsonl", [{"text": "<|im_start|>a<|im_end|>"}, {"txt": "oops"}])
    out = tmp_path / "s.jsonl"
    r = run_script("split_pretrain_data", "--input", src, "--output", out)
    assert r.returncode == 2 and "p.jsonl:2: field 'text': missing" in r.stderr
    assert not out.exists()
    r = run_script("split_pretrain_data", "--input", src, "--output", out, "--skip_bad")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 bad" in r.stdout and read_jsonl(out) == [{"text": "<|im_start|>a<|im_end|>"}]


def test_scripts_run_as_modules(tmp_path):
    src = write_lines(tmp_path / "p.jsonl", [{"text": "<|im_start|>a<|im_end|>"}])
    r = subprocess.run([sys.executable, "-m", "scripts.split_pretrain_data", "--input", str(src), "--output",
                        str(tmp_path / "s.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "scripts.convert_dataset", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--hf-dataset" in r.stdout and "--max-samples" in r.stdout
