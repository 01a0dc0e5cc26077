"""Data I/O library (parallel_data.io / formats / hub_datasets) and the data tools in scripts/."""

from __future__ import annotations

import csv
import json
import pickle
import re
import time

import pytest
from data_files import SFT_INPUTS, STANDARD, read_jsonl, run_script, write_lines

import model.hub
import model.tokenizer
from parallel_data import io as pio
from parallel_data.formats import (
    detect_format,
    detect_text_column,
    extract_text,
    normalize_conversation,
    resolve_text_column,
)
from parallel_data.hub_datasets import iter_hf_rows, open_hf_dataset
from parallel_data.io import (
    AtomicJsonlWriter,
    DataError,
    ReadStats,
    iter_csv_rows,
    iter_json_records,
    iter_jsonl,
    require_field,
    write_jsonl_atomic,
)
from scripts import convert_dataset

# ---------------------------------------------------------------------------------------------- io


def test_data_error_message_and_attributes():
    e = DataError("expected a list, got str", path="dataset/x.jsonl", line=17, field="conversations")
    assert str(e) == "dataset/x.jsonl:17: field 'conversations': expected a list, got str"
    assert (e.path, e.line, e.field, e.reason) == ("dataset/x.jsonl", 17, "conversations", "expected a list, got str")
    assert isinstance(e, ValueError)
    assert str(DataError("is empty", path="a.jsonl")) == "a.jsonl: is empty"
    e2 = pickle.loads(pickle.dumps(e))
    assert (str(e2), e2.line, e2.field) == (str(e), 17, "conversations")


def test_require_field():
    assert require_field({"a": [1]}, "a", list, "f.jsonl", 3) == [1]
    with pytest.raises(DataError, match=r"f\.jsonl:3: field 'a': expected a list, got str"):
        require_field({"a": "x"}, "a", list, "f.jsonl", 3)
    with pytest.raises(DataError, match=r"field 'b': missing"):
        require_field({"a": "x"}, "b", str, "f.jsonl", 3)
    with pytest.raises(DataError, match="expected an int, got bool"):
        require_field({"a": True}, "a", int)


def test_iter_jsonl_streams_counts_and_locates_errors(tmp_path):
    p = write_lines(tmp_path / "x.jsonl", [{"a": 1}, "", "   ", {"a": 2}, '{"a": 3', {"a": 4}])
    stats = ReadStats()
    with pytest.raises(DataError) as ei:
        list(iter_jsonl(p, stats=stats))
    assert ei.value.line == 5 and ei.value.path == str(p) and "x.jsonl:5:" in str(ei.value)

    stats = ReadStats()
    got = list(iter_jsonl(p, skip_bad=True, stats=stats))
    assert got == [(1, {"a": 1}), (4, {"a": 2}), (6, {"a": 4})]
    assert (stats.read, stats.skipped_bad, stats.blank) == (3, 1, 2)
    assert len(stats.errors) == 1 and "x.jsonl:5" in stats.errors[0]
    assert list(iter_jsonl(p, start_line=5)) == [(6, {"a": 4})]

    arr = write_lines(tmp_path / "arr.jsonl", [{"a": 1}, [1, 2]])
    with pytest.raises(DataError, match=r"arr\.jsonl:2: expected a JSON object per line, got list"):
        list(iter_jsonl(arr))


def test_iter_jsonl_empty_missing_and_all_bad(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: is empty"):
        list(iter_jsonl(empty))
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))
    bad = write_lines(tmp_path / "bad.jsonl", ["{", "[}"])
    with pytest.raises(DataError, match="no valid records: all 2 were malformed"):
        list(iter_jsonl(bad, skip_bad=True, stats=ReadStats()))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(latin))


def test_iter_json_records(tmp_path):
    records = [{"text": f"doc {i}\nline two", "n": i * 1.5} for i in range(20)] + ["plain", 12345, None]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(records, indent=2), encoding="utf-8")
    got = list(iter_json_records(p))
    assert [v for _, v in got] == records
    lines = p.read_text().splitlines()
    for line_no, value in got[:3]:
        assert lines[line_no - 1].strip() in ("{", json.dumps(value))
    one = tmp_path / "one.json"
    one.write_text('{"text": "only"}')
    assert list(iter_json_records(one)) == [(1, {"text": "only"})]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        list(iter_json_records(bad))
    for text in ("[]", ""):
        bad.write_text(text)
        with pytest.raises(DataError, match="is empty"):
            list(iter_json_records(bad))


def test_iter_csv_rows(tmp_path):
    p = tmp_path / "a.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"], ["1", "hello"], ["2", "two\nlines"], [], ["3", "x", "extra"]])
    with pytest.raises(DataError, match=r"a\.csv:6: row has 3 fields, the header has 2"):
        list(iter_csv_rows(p))
    stats = ReadStats()
    assert list(iter_csv_rows(p, skip_bad=True, stats=stats)) == [(2, {"id": "1", "text": "hello"}),
                                                                  (3, {"id": "2", "text": "two\nlines"})]
    assert (stats.read, stats.skipped_bad, stats.blank) == (2, 1, 1)


def test_iter_jsonl_lines_is_the_one_parser(tmp_path):
    # numbered lines in any order (a shuffled block), a BOM on a line, blank lines, errors at their own number
    lines = [(7, b'{"a": 1}\n'), (3, b"\n"), (5, '\ufeff{"a": 2}'.encode()), (9, b'{"a": \n')]
    stats = ReadStats()
    got = list(pio.iter_jsonl_lines(lines, "f.jsonl", skip_bad=True, stats=stats))
    assert got == [(7, {"a": 1}), (5, {"a": 2})]
    assert (stats.read, stats.blank, stats.skipped_bad) == (2, 1, 1) and stats.errors[0].startswith("f.jsonl:9:")
    with pytest.raises(DataError, match=r"^f\.jsonl:9: malformed JSON: Expecting value \(column 7\)$"):
        list(pio.iter_jsonl_lines(lines, "f.jsonl"))
    with pytest.raises(DataError, match=r"^f\.jsonl:2: not valid UTF-8"):
        list(pio.iter_jsonl_lines([(1, b"{}"), (2, b'{"a": "\xff"}')], "f.jsonl"))
    with pytest.raises(DataError, match=r"f\.jsonl:4: expected a JSON object per line, got null"):
        list(pio.iter_jsonl_lines([(4, b"null")], "f.jsonl"))


def test_csv_unterminated_quote_names_its_line(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('id,text\n1,hello\n2,"an open quote\n3,swallowed\n4,too\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"q\.csv:3: unterminated quote"):
        list(iter_csv_rows(p))
    with pytest.raises(DataError, match=r"q\.csv:3: unterminated quote"):  # not skippable: the rest is unknown
        list(iter_csv_rows(p, skip_bad=True, stats=ReadStats()))
    last = tmp_path / "last.csv"
    last.write_text('id,text\n1,"a ""quoted"" word"\n2,"two\nlines"\n3,"open', encoding="utf-8")
    with pytest.raises(DataError, match=r"last\.csv:5: unterminated quote"):
        list(iter_csv_rows(last))
    fine = tmp_path / "fine.csv"
    fine.write_text('id,text\n1,"a ""quoted"" word"\n2,"two\nlines"\n3,no newline at the end', encoding="utf-8")
    assert [r["text"] for _, r in iter_csv_rows(fine)] == ['a "quoted" word', "two\nlines", "no newline at the end"]


def test_a_directory_is_reported_as_a_directory(tmp_path):
    from parallel_data.parallel_dataset import make_source
    from parallel_data.prompts import read_prompt_file

    for read in (lambda p: list(iter_jsonl(p)), lambda p: list(iter_csv_rows(p)), lambda p: list(iter_json_records(p)),
                 read_prompt_file, lambda p: make_source(data_path=str(p), hf_dataset=None)):
        with pytest.raises(DataError, match=r"is a directory, expected a file"):
            read(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_source(data_path=str(tmp_path / "missing.jsonl"), hf_dataset=None)


def test_write_jsonl_atomic(tmp_path):
    out = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl_atomic(out, ({"i": i, "s": "é"} for i in range(3))) == 3
    assert read_jsonl(out) == [{"i": i, "s": "é"} for i in range(3)]
    assert "é" in out.read_text(encoding="utf-8")  # ensure_ascii=False

    def failing():
        yield {"i": 0}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(out, failing())
    assert read_jsonl(out) == [{"i": i, "s": "é"} for i in range(3)]  # untouched
    fresh = tmp_path / "fresh.jsonl"
    with pytest.raises(RuntimeError), AtomicJsonlWriter(fresh) as w:
        w.write({"a": 1})
        raise RuntimeError("boom")
    assert not fresh.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["sub"]  # no temp files left behind
    assert [x.name for x in out.parent.iterdir()] == ["out.jsonl"]


# ----------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt", sorted(SFT_INPUTS))
def test_normalize_each_format(fmt):
    obj = SFT_INPUTS[fmt]
    assert detect_format(obj) == fmt
    expected = [dict(m) for m in STANDARD]
    if fmt == "alpaca":
        expected[1]["content"] = "what is\n2 + 3?"
    assert normalize_conversation(obj) == expected
    assert normalize_conversation(obj, fmt) == expected


def test_normalize_variants():
    assert normalize_conversation({"question": "q", "answer": "a"}) == [{"role": "user", "content": "q"},
                                                                       {"role": "assistant", "content": "a"}]
    assert normalize_conversation({"instruction": "do it", "input": "", "output": "done"})[0] == \
        {"role": "user", "content": "do it"}
    sg = {"conversations": [{"from": "user", "value": "u"}, {"from": "assistant", "value": "a"}]}
    assert [m["role"] for m in normalize_conversation(sg)] == ["user", "assistant"]


@pytest.mark.parametrize("obj, fragment", [
    ({"conversations": "hello"}, "field 'conversations': expected a list, got str"),
    ({"conversations": [{"role": "robot", "content": "x"}]}, "field 'conversations[0].role': unknown role 'robot'"),
    ({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
     "field 'conversations[1].content': empty content of an assistant turn"),
    ({"conversations": [{"role": "user", "content": "q"}]}, "no assistant turn"),
    ({"conversations": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
     "field 'conversations[0].content': expected a str, got int"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
     "field 'conversations[1].from': unknown role 'bot'"),
    ({"instruction": "q", "output": ""}, "field 'output': empty content of an assistant turn"),
    ({"prompt": "q", "response": None}, "field 'response': expected a str, got null"),
    ({"title": "x"}, "unknown conversation format"),
])
def test_normalize_errors_name_the_field(obj, fragment):
    with pytest.raises(DataError) as ei:
        normalize_conversation(obj, path="d.jsonl", line=4)
    assert str(ei.value).startswith("d.jsonl:4: ")
    assert fragment in str(ei.value)


def test_extract_text_and_columns():
    assert extract_text({"text": "t", "content": "c"}) == "t"
    assert extract_text({"document": "d"}) == "d"
    assert extract_text({"body": "b"}, text_column="body") == "b"
    assert extract_text({"conversations": STANDARD[1:]}) == "user: what is 2 + 3?\nassistant: the answer is 5."
    assert extract_text({"sentence": "s"}) == "s"
    with pytest.raises(DataError, match="field 'text': expected a str, got list"):
        extract_text({"text": ["x"]})
    with pytest.raises(DataError, match="no text found"):
        extract_text({"id": 1})
    assert detect_text_column(["id", "Sentence", "prompt"]) == "prompt"
    assert detect_text_column(["id", "Sentence"]) == "Sentence"
    assert detect_text_column(["id", "url"]) is None
    assert resolve_text_column(["id", "Text"]) == "Text"
    assert resolve_text_column(["instruction", "input", "output"]) is None  # a conversation, not "input"
    assert resolve_text_column(["only"]) == "only"
    with pytest.raises(DataError, match="pass --text-column"):
        resolve_text_column(["id", "url"])
    with pytest.raises(DataError, match="field 'body': no such column"):
        resolve_text_column(["id", "url"], "body")


# ------------------------------------------------------------------------------------ hub_datasets

def test_hub_name_offline_fails_fast_with_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    with pytest.raises(DataError) as ei:
        open_hf_dataset("someone/missing-dataset")
    assert time.perf_counter() - t0 < 2.0
    assert "'someone/missing-dataset' is not a local path" in str(ei.value)
    assert "offline" in str(ei.value)

    # not forced offline, but no route to the Hub: same, with the reason
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(model.hub, "_probe", lambda timeout=3.0: False)
    t0 = time.perf_counter()
    out = tmp_path / "out.jsonl"
    rc = convert_dataset.main(["--hf-dataset", "someone/missing-dataset", "-o", str(out), "--mode", "pretrain"])
    assert rc == 2 and time.perf_counter() - t0 < 2.0
    assert not out.exists()


def test_cli_hub_name_offline(tmp_path):
    out = tmp_path / "out.jsonl"
    t0 = time.perf_counter()
    r = run_script("convert_dataset", "--hf-dataset", "someone/missing-dataset", "-o", out, "--mode", "pretrain",
                   env_extra={"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")})
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr
    assert "someone/missing-dataset" in r.stderr and "not a local path" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert elapsed < 10  # interpreter start included; the failure itself is immediate (test above)
    assert not out.exists()


@pytest.mark.parametrize("streaming", [True, False])
def test_open_hf_dataset_local_files(tmp_path, streaming):
    cache = tmp_path / "cache"
    j = write_lines(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    rows = [r for _, r in iter_hf_rows(open_hf_dataset(j, streaming=streaming, cache_dir=cache), "a")]
    assert rows == [{"text": "one"}, {"text": "two"}]
    t = tmp_path / "a.txt"
    t.write_text("x\ny\n")
    assert [r["text"] for _, r in iter_hf_rows(open_hf_dataset(t, streaming=streaming, cache_dir=cache), "t")] == \
        ["x", "y"]
    d = tmp_path / "folder"
    d.mkdir()
    write_lines(d / "train.jsonl", [{"text": "in folder"}])
    assert [r for _, r in iter_hf_rows(open_hf_dataset(d, streaming=streaming, cache_dir=cache), "d")] == \
        [{"text": "in folder"}]
    with pytest.raises(DataError, match="unknown extension '.xyz'"):
        open_hf_dataset(write_lines(tmp_path / "a.xyz", ["x"]), cache_dir=cache)


# ----------------------------------------------------------------------------------- convert_dataset

@pytest.mark.parametrize("fmt", sorted(SFT_INPUTS))
def test_convert_dataset_sft_each_format(tmp_path, fmt):
    src = write_lines(tmp_path / "in.jsonl", [SFT_INPUTS[fmt], SFT_INPUTS[fmt]])
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["--input", str(src), "--output", str(out), "--mode", "sft", "--format", fmt]) == 0
    recs = read_jsonl(out)
    assert len(recs) == 2 and set(recs[0]) == {"conversations"}
    assert recs[0]["conversations"] == normalize_conversation(SFT_INPUTS[fmt])
    assert [m["role"] for m in recs[0]["conversations"]] == ["system", "user", "assistant"]


def test_convert_dataset_sft_json_array_auto_mixed(tmp_path):
    src = tmp_path / "mixed.json"
    src.write_text(json.dumps(list(SFT_INPUTS.values())), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "sft"]) == 0
    assert len(read_jsonl(out)) == len(SFT_INPUTS)


def test_convert_dataset_pretrain_inputs(tmp_path):
    texts = ["first sample", "second, with a comma", "third \"quoted\""]
    cases = {}
    txt = tmp_path / "a.txt"
    txt.write_text(texts[0] + "\n\n" + texts[1] + "\n" + texts[2] + "\n", encoding="utf-8")
    cases["txt"] = txt
    c = tmp_path / "a.csv"
    with open(c, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"]] + [[str(i), t] for i, t in enumerate(texts)])
    cases["csv"] = c
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"text": t} for t in texts]), encoding="utf-8")
    cases["json array"] = arr
    cases["jsonl"] = write_lines(tmp_path / "a.jsonl", [{"content": t} for t in texts])
    for name, src in cases.items():
        out = tmp_path / f"out_{src.suffix[1:]}.jsonl"
        assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "pretrain"]) == 0, name
        assert read_jsonl(out) == [{"text": t} for t in texts], name
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"document": "a single object"}), encoding="utf-8")
    out = tmp_path / "out_obj.jsonl"
    assert convert_dataset.main(["-i", str(obj), "-o", str(out), "--mode", "pretrain"]) == 0
    assert read_jsonl(out) == [{"text": "a single object"}]


def test_convert_dataset_text_column_max_samples_and_aliases(tmp_path, capsys):
    c = tmp_path / "a.csv"
    with open(c, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["title", "body"]] + [[f"t{i}", f"body {i}"] for i in range(5)])
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["-i", str(c), "-o", str(out), "--mode", "pretrain"]) == 2  # ambiguous columns
    assert "pass --text-column" in capsys.readouterr().err
    assert convert_dataset.main(["-i", str(c), "-o", str(out), "--mode", "pretrain", "--text_column", "body",
                                 "--max_samples", "3"]) == 0
    assert read_jsonl(out) == [{"text": f"body {i}"} for i in range(3)]
    assert "stopped at --max-samples 3" in capsys.readouterr().out


def test_convert_dataset_hf_local(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    src = write_lines(tmp_path / "alpaca.jsonl", [SFT_INPUTS["alpaca"]] * 3)
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["--hf_dataset", str(src), "-o", str(out), "--mode", "sft", "--max-samples", "2"]) == 0
    assert read_jsonl(out) == [{"conversations": normalize_conversation(SFT_INPUTS["alpaca"])}] * 2
    assert convert_dataset.main(["--hf-dataset", str(src), "-o", str(out), "--mode", "pretrain"]) == 0
    assert read_jsonl(out)[0]["text"].startswith("system: be brief\nuser: what is\n2 + 3?")


def test_convert_dataset_cli_and_bad_inputs(tmp_path):
    src = write_lines(tmp_path / "sg.jsonl", [SFT_INPUTS["sharegpt"]])
    out = tmp_path / "out.jsonl"
    r = run_script("convert_dataset", "-i", src, "-o", out, "--mode", "sft", "--format", "sharegpt")
    assert r.returncode == 0, r.stderr
    assert "read 1 records" in r.stdout and "wrote 1 sft records" in r.stdout
    assert read_jsonl(out) == [{"conversations": STANDARD}]

    unknown = tmp_path / "data.parquetx"
    unknown.write_text("x")
    r = run_script("convert_dataset", "-i", unknown, "-o", tmp_path / "u.jsonl", "--mode", "pretrain")
    assert r.returncode == 2 and "unknown input extension '.parquetx'" in r.stderr
    assert not (tmp_path / "u.jsonl").exists()


def test_convert_dataset_exactly_one_source(tmp_path, capsys):
    assert convert_dataset.main(["-i", "a.jsonl", "--hf-dataset", "x/y", "-o", str(tmp_path / "o.jsonl"),
                                 "--mode", "sft"]) == 2
    assert "--input a.jsonl and --hf-dataset x/y both name the data" in capsys.readouterr().err
    assert convert_dataset.main(["-o", str(tmp_path / "o.jsonl"), "--mode", "sft"]) == 2
    assert "give the data: --input FILE or --hf-dataset NAME" in capsys.readouterr().err


BAD_CASES = {
    "malformed json": ([{"conversations": STANDARD}, '{"conversations": [', {"conversations": STANDARD}],
                       r"in\.jsonl:2: malformed JSON"),
    "missing field": ([{"conversations": STANDARD}, {"instruction": "q"}], r"in\.jsonl:2: unknown conversation format"),
    "empty assistant": ([{"conversations": STANDARD}, {"conversations": STANDARD[:2] + [
        {"role": "assistant", "content": ""}]}], r"in\.jsonl:2: field 'conversations\[2\]\.content': empty content"),
    "empty file": (["", ""], r"in\.jsonl: is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_convert_dataset_bad_input_exit_2_no_output(tmp_path, capsys, case):
    lines, pattern = BAD_CASES[case]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "sft"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(pattern, err), err
    assert not out.exists()  # atomic: nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_convert_dataset_missing_text_field_pretrain(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [{"text": "ok"}, {"id": 3}])
    out = tmp_path / "out.jsonl"
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "pretrain"]) == 2
    assert "in.jsonl:2: no text found" in capsys.readouterr().err
    src = write_lines(tmp_path / "in.jsonl", [{"text": "ok"}, {"text": 3}])
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "pretrain"]) == 2
    assert "in.jsonl:2: field 'text': expected a str, got int" in capsys.readouterr().err
    assert not out.exists()


def test_convert_dataset_skip_bad_counts(tmp_path, capsys):
    lines = [{"conversations": STANDARD}, "{not json", {"conversations": STANDARD[:2]},  # no assistant turn
             "", {"messages": STANDARD}, {"conversations": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": " "}]}]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    existing = "old content\n"
    out.write_text(existing)
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "sft"]) == 2
    assert out.read_text() == existing  # a failed conversion leaves the old output untouched
    capsys.readouterr()
    assert convert_dataset.main(["-i", str(src), "-o", str(out), "--mode", "sft", "--skip_bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 3 bad" in captured.out and "1 blank" in captured.out and "wrote 2 sft records" in captured.out
    assert "in.jsonl:2" in captured.err and "in.jsonl:3" in captured.err
    assert len(read_jsonl(out)) == 2
