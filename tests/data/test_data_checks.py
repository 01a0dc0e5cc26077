"""The data pre-pass and the stream's guarantees: exact batch counts, records checked before training,
records without targets reported with file and line, bounded per-batch resume state."""

import json
import logging
import os
import pickle
import re

import pytest
import torch

from parallel_data.io import DataError
from parallel_data.parallel_dataset import ParallelPretrainDataset, ParallelSFTDataset
from parallel_data.prepass import cache_paths, scan_records
from parallel_data.sources import LocalJsonlSource
from parallel_data.stream import GroupingConfig, ParallelBatchStream, count_micro_batches

WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing about rivers".split()


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def text(i, n_words):
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n_words))


def mixed_records(n=60):
    """Short texts, texts far longer than max_seq_len, grouped records, offsets and blank lines."""
    out = []
    for i in range(n):
        if i % 9 == 4:
            out.append({"main": text(i, 3), "branches": [text(i + 1, 4), {"text": text(i + 2, 5), "answer_offset": 1}]})
        elif i % 5 == 0:
            out.append({"text": text(i, 60 + 7 * i)})  # split into several branches
        elif i % 11 == 3:
            out.append("")
        else:
            out.append({"text": text(i, 3 + i % 6)})
    return out


def real_batches(ds, grouping, *, world_size, num_workers, epochs, seed):
    """Micro-batches per rank, counted by running the real streams (each worker is one stream)."""
    per_rank = []
    for rank in range(world_size):
        n = 0
        for wid in range(max(1, num_workers)):
            stream = ParallelBatchStream(ds, grouping, {"tokenizer": ds.tokenizer}, rank=rank * max(1, num_workers)
                                         + wid, world_size=world_size * max(1, num_workers), epochs=epochs, seed=seed)
            n += sum(1 for _ in stream)
        per_rank.append(n)
    return per_rank


GROUPINGS = [
    GroupingConfig(batch_size=4, branches_per_sample=3, batch_by_samples=True),
    GroupingConfig(batch_size=5, branches_per_sample=2),
    GroupingConfig(batch_size=3, min_branches=1, max_branches=4, batch_by_samples=True),
    GroupingConfig(batch_size=7, min_branches=2, max_branches=5),
]


@pytest.mark.parametrize("case", range(len(GROUPINGS)))
def test_count_micro_batches_is_exact_with_split_texts_and_grouped_records(tmp_path, tiny_tokenizer, case):
    p = write_jsonl(tmp_path / "mixed.jsonl", mixed_records())
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), max_seq_len=16, val_samples=5, seed=3)
    ds.source = LocalJsonlSource(p, block_bytes=300, val_samples=5, seed=3)  # many blocks: real shuffling
    world, workers = [(1, 0), (2, 0), (1, 2), (3, 1)][case]
    want = real_batches(ds, GROUPINGS[case], world_size=world, num_workers=workers, epochs=2, seed=5)
    got = [count_micro_batches(ds, GROUPINGS[case], rank=r, world_size=world, num_workers=workers, epochs=2, seed=5)
           for r in range(world)]
    assert got == want
    assert ds.scan.stats.split_texts > 0  # the data does exceed max_seq_len


def test_count_micro_batches_with_packing_and_a_quota(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "pack.jsonl", [{"text": text(i, 5 + i % 13)} for i in range(80)])
    g = GroupingConfig(batch_size=2, branches_per_sample=3, batch_by_samples=True)
    for quota in (None, 7):
        ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), chunk_length=12, max_samples=quota)
        want = real_batches(ds, g, world_size=2, num_workers=0, epochs=1, seed=0)
        got = [count_micro_batches(ds, g, rank=r, world_size=2, num_workers=0, epochs=1, seed=0) for r in range(2)]
        assert got == want


def test_count_micro_batches_for_a_bounded_hub_source(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "hub.jsonl", [{"text": text(i, 4 + (40 if i % 6 == 0 else 0))} for i in range(30)])
    ds = ParallelPretrainDataset(tiny_tokenizer, hf_dataset=str(p), max_seq_len=16, max_samples=24)
    g = GroupingConfig(batch_size=3, branches_per_sample=2, batch_by_samples=True)
    want = real_batches(ds, g, world_size=2, num_workers=0, epochs=2, seed=1)
    assert [count_micro_batches(ds, g, rank=r, world_size=2, num_workers=0, epochs=2, seed=1) for r in range(2)] == want


def test_the_scan_is_cached_beside_the_data_and_never_stale(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "c.jsonl", [{"text": text(i, 4)} for i in range(20)])

    def scan(**kw):
        return scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), **kw))

    first = scan(max_seq_len=16)
    assert not first.cached and first.records == 20
    cached = sorted(x.name for x in tmp_path.iterdir() if ".pm-lengths-" in x.name)
    assert len(cached) == 1 and cached[0].startswith("c.jsonl.pm-lengths-")
    again = scan(max_seq_len=16)
    assert again.cached and again.codes.tolist() == first.codes.tolist()
    assert not scan(max_seq_len=2).cached  # another setting: another key
    with open(p, "a") as f:  # the data changes: the old scans no longer apply
        f.write(json.dumps({"text": text(99, 40)}) + "\n")
    changed = scan(max_seq_len=16)
    assert not changed.cached and changed.records == 21 and changed.codes[-1] > 1


def test_the_scan_falls_back_to_the_cache_folder(tmp_path, tiny_tokenizer, monkeypatch):
    from parallel_data import prepass

    data = tmp_path / "read_only"
    data.mkdir()
    p = write_jsonl(data / "d.jsonl", [{"text": text(i, 4)} for i in range(8)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mkstemp = prepass.tempfile.mkstemp

    def refuse_data_folder(*a, dir=None, **kw):  # what a read-only data folder does (root ignores chmod)
        if dir is not None and os.path.samefile(dir, data):
            raise PermissionError(13, "Permission denied", str(dir))
        return mkstemp(*a, dir=dir, **kw)

    monkeypatch.setattr(prepass.tempfile, "mkstemp", refuse_data_folder)
    s1 = scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p)))
    s2 = scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p)))
    assert not s1.cached and s2.cached
    assert [x.name for x in data.iterdir()] == ["d.jsonl"]
    folder = tmp_path / "cache" / "parallelmind" / "lengths"
    assert len(list(folder.iterdir())) == 1 and cache_paths(str(p), "k" * 64)[1].parent == folder


def test_a_bad_record_is_found_before_the_first_batch(tmp_path, tiny_tokenizer):
    records = [{"text": text(i, 5)} for i in range(60)]
    records[54] = {"txt": "a misspelt field"}
    p = write_jsonl(tmp_path / "bad.jsonl", records)
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p))
    with pytest.raises(DataError, match=r"bad\.jsonl:55: needs 'text', 'content' or 'input_ids'"):
        count_micro_batches(ds, GroupingConfig(batch_size=2), rank=0, world_size=1, num_workers=0, epochs=1, seed=0)
    p.write_text("{}\n" * 0 + "\n \n")
    with pytest.raises(DataError, match=r"is empty|has no records"):
        scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p)))


def test_trainer_reports_a_bad_record_before_training(tmp_path, tiny_tokenizer_dir, capsys):
    from trainer import train_pretrain

    records = [{"text": text(i, 5)} for i in range(60)]
    records[54] = '{"text": "unterminated'
    p = write_jsonl(tmp_path / "bad.jsonl", records)
    out = tmp_path / "out"
    args = ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--num_key_value_heads",
            "1", "--data_path", str(p), "--out_dir", str(out), "--tokenizer", str(tiny_tokenizer_dir),
            "--batch_size", "2", "--num_workers", "0", "--max_seq_len", "32"]
    assert train_pretrain.main(args) == 2  # one line on stderr, exit status 2
    assert re.search(r"bad\.jsonl:55: malformed JSON", capsys.readouterr().err.strip().splitlines()[-1])
    assert not [x for x in out.iterdir() if x.suffix in (".pth", ".jsonl")]  # no step ran, nothing saved


def test_records_without_targets_are_reported_with_file_and_line(tmp_path, tiny_tokenizer, caplog):
    records = [{"text": text(i, 5)} for i in range(12)]
    records[3] = {"text": text(3, 4), "answer_offset": 50}
    records[7] = {"main": "context", "branches": [text(1, 3), {"text": text(2, 3), "answer_offset": 40}]}
    p = write_jsonl(tmp_path / "off.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="parallelmind.data"):
        scan = scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p)))
    assert scan.stats.no_target == 2 and scan.targets > 0
    logged = caplog.text
    assert "off.jsonl:4: field 'answer_offset': answer_offset 50 leaves no target token" in logged
    assert "off.jsonl:8: field 'branches[1].answer_offset'" in logged and "--strict_data" in logged
    strict = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), strict_data=True)
    with pytest.raises(DataError, match=r"off\.jsonl:4: field 'answer_offset': answer_offset 50 leaves no target"):
        scan_records(strict)
    # training counts them too (a Hub stream is not pre-scanned): the stream's stats say how many
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p))
    batches = list(ParallelBatchStream(ds, GroupingConfig(batch_size=4), {"tokenizer": tiny_tokenizer}, rank=0,
                                       world_size=1, epochs=1, seed=0))
    assert batches[-1]["state"]["stats"]["no_target"] == 2


def test_data_without_any_target_is_refused_before_training(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "none.jsonl", [{"text": text(i, 4), "answer_offset": 20} for i in range(5)])
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p))
    with pytest.raises(DataError, match=r"none\.jsonl: gives no target token in any of its 5 records"):
        count_micro_batches(ds, GroupingConfig(batch_size=2), rank=0, world_size=1, num_workers=0, epochs=1, seed=0)


def test_strict_data_rejects_cut_records(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "long.jsonl", [{"text": text(1, 30), "answer_offset": 2}, {"text": text(2, 4)}])
    assert scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), max_seq_len=8)).stats.truncated == 1
    with pytest.raises(DataError, match=r"long\.jsonl:1: .*more than max_seq_len=8; it would be cut"):
        scan_records(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), max_seq_len=8, strict_data=True))
    conv = {"conversations": [{"role": "user", "content": text(1, 30)}, {"role": "assistant", "content": "ok"}]}
    sft = write_jsonl(tmp_path / "sft.jsonl", [conv])
    with pytest.raises(DataError, match=r"sft\.jsonl:1: the conversation is \d+ tokens long"):
        scan_records(ParallelSFTDataset(tiny_tokenizer, data_path=str(sft), max_seq_len=40, strict_data=True))


def test_strict_data_flag_reaches_the_dataset(tmp_path, tiny_tokenizer_dir, capsys):
    from trainer import train_pretrain

    p = write_jsonl(tmp_path / "o.jsonl", [{"text": text(i, 5)} for i in range(6)] + [{"text": "x y", "answer_offset": 9}])
    args = ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--num_key_value_heads",
            "1", "--data_path", str(p), "--out_dir", str(tmp_path / "out"), "--tokenizer", str(tiny_tokenizer_dir),
            "--batch_size", "2", "--num_workers", "0", "--max_seq_len", "32", "--strict_data"]
    assert train_pretrain.main(args) == 2
    assert re.search(r"o\.jsonl:7: field 'answer_offset'", capsys.readouterr().err.strip().splitlines()[-1])


def test_per_batch_state_stays_small_with_a_huge_record_and_resumes_exactly(tmp_path, tiny_tokenizer):
    huge = " ".join(WORDS[k % len(WORDS)] for k in range(25_000))  # ~140 KB on one line
    records = [{"text": text(i, 6)} for i in range(30)]
    records[10] = {"text": huge}
    p = write_jsonl(tmp_path / "huge.jsonl", records)
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), max_seq_len=32, shuffle=False)
    g = GroupingConfig(batch_size=4, branches_per_sample=2, batch_by_samples=True)
    kw = {"tokenizer": tiny_tokenizer, "random_time_offset": True}
    loader = torch.utils.data.DataLoader(ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=0),
                                         batch_size=None, num_workers=0)
    batches = list(loader)  # through the DataLoader's default_convert, as in training
    sizes = [len(pickle.dumps(b["state"])) for b in batches]
    assert len(batches) > 80  # the huge record gives hundreds of branches
    assert max(sizes) < 32_000  # bounded: a few KB whatever the record, not the units waiting in the grouper
    lagging = [k for k, b in enumerate(batches) if b["state"]["skip"] > 0]
    assert lagging and min(b["state"]["skip"] for b in batches) == 0
    for k in (lagging[len(lagging) // 2], lagging[-1], lagging[0] - 1):  # mid-record, its end, and just before it
        resumed = list(ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=0,
                                           resume_states={0: batches[k]["state"]}))
        assert len(resumed) == len(batches) - k - 1
        for a, b in zip(resumed, batches[k + 1:]):
            assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["time_ids"], b["time_ids"])
        assert resumed[-1]["state"]["stats"] == batches[-1]["state"]["stats"]


def test_a_resume_state_holding_a_whole_snapshot_still_resumes(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": text(i, 5)} for i in range(20)])
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), shuffle=False)
    g = GroupingConfig(batch_size=2, branches_per_sample=2, batch_by_samples=True)
    kw = {"tokenizer": tiny_tokenizer}
    batches = list(ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=0))
    st = batches[1]["state"]
    old = {**json.loads(st["anchor"]), "collator": st["collator"]}  # the whole snapshot, carried by every batch
    assert st["skip"] == 0 and "grouper" in old and "cursor" in old
    resumed = list(ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=0, resume_states={0: old}))
    assert [b["input_ids"].tolist() for b in resumed] == [b["input_ids"].tolist() for b in batches[2:]]
