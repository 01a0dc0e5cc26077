"""Sources, datasets, grouping and collation: hand-written examples and accounting (every text exactly once)."""

import json
import time
from collections import Counter

import pytest
import torch

from parallel_data.io import DataError
from parallel_data.parallel_collator import (
    BranchGrouper,
    ParallelCollator,
    ParallelPretrainCollator,
    ParallelSFTCollator,
)
from parallel_data.parallel_dataset import ParallelPretrainDataset, ParallelSFTDataset
from parallel_data.sources import LocalJsonlSource, build_block_index
from parallel_data.stream import GroupingConfig, ParallelBatchStream, eval_batches, reshard_states


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write((json.dumps(r) if not isinstance(r, str) else r) + "\n")
    return path


def unit(i):
    return {"input_ids": [100 + i, 200 + i], "answer_offset": 0, "time_offset": 0}


def test_collator_labels_and_branch_counts_on_a_hand_written_example():
    c = ParallelCollator(None, branch_stride=10)
    b = c.collate([{"branches": [unit(1), unit(2)]}, {"main": [7, 8], "branches": [unit(3)]}])
    assert b["input_ids"].tolist() == [[101, 102, 201, 202], [7, 8, 103, 203]]
    assert b["labels"].tolist() == [[201, 202, -100, -100], [-100, -100, 203, -100]]
    assert b["branch_counts"].tolist() == [2, 1] and b["num_label_tokens"] == 3 and b["num_texts"] == 3
    assert b["position_ids"].shape == (2, 4, 3)
    assert b["pos2d"][1].tolist() == [[0, 0], [0, 1], [10, 2], [10, 3]]


@pytest.mark.parametrize("by_samples", [False, True])
@pytest.mark.parametrize("dynamic", [False, True])
def test_grouper_uses_every_text_exactly_once(by_samples, dynamic):
    g = BranchGrouper(batch_size=5, branches_per_sample=3, min_branches=2 if dynamic else 1,
                      max_branches=4 if dynamic else None, batch_by_samples=by_samples, seed=1)
    used = Counter()
    batches = []
    for i in range(103):
        g.push(unit(i))
        while (b := g.pop()) is not None:
            batches.append(b)
    g.flush()
    while (b := g.pop()) is not None:
        batches.append(b)
    for batch in batches:
        for s in batch:
            for u in s["branches"]:
                used[u["input_ids"][0]] += 1
        if by_samples:
            assert len(batch) <= 5
        else:
            assert sum(len(s["branches"]) for s in batch) <= 5 or len(batch) == 1
    assert sorted(used) == [100 + i for i in range(103)] and set(used.values()) == {1}
    sizes = [len(s["branches"]) for batch in batches for s in batch]
    if dynamic:
        assert set(sizes[:-1]) <= {2, 3, 4} and len(set(sizes)) > 1
    else:
        assert set(sizes[:-1]) == {3} and sizes[-1] == 103 % 3  # only the very last sample is short


def test_grouper_state_round_trip_continues_identically():
    def run(g, lo, hi):
        out = []
        for i in range(lo, hi):
            g.push(unit(i))
            while (b := g.pop()) is not None:
                out.append([[u["input_ids"][0] for u in s["branches"]] for s in b])
        return out
    a = BranchGrouper(batch_size=3, min_branches=1, max_branches=4, batch_by_samples=True, seed=5)
    full = run(a, 0, 60)
    b = BranchGrouper(batch_size=3, min_branches=1, max_branches=4, batch_by_samples=True, seed=5)
    first = run(b, 0, 31)
    st = json.loads(json.dumps(b.state_dict()))  # survives serialisation
    c = BranchGrouper(batch_size=3, min_branches=1, max_branches=4, batch_by_samples=True, seed=99)
    c.load_state_dict(st)
    assert first + run(c, 31, 60) == full


def test_seed_style_collators(tiny_tokenizer):
    c = ParallelPretrainCollator(tiny_tokenizer, branches_per_sample=2, random_time_offset=False)
    b = c([{"text": "the quick fox"}, {"text": "a lazy dog"}, {"text": "seven birds"}])
    assert b["branch_counts"].tolist() == [2, 1]  # every record used, the remainder in a smaller sample
    s = ParallelSFTCollator(tiny_tokenizer, branches_per_sample=4)
    b = s([{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}, {"input_ids": [8, 9]}])
    assert b["labels"].tolist() == [[6, -100, 7, 9, -100]] or b["labels"][0].ne(-100).sum() == 3


def test_block_index_and_seeded_split(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}"} for i in range(100)] + [""])
    blocks = build_block_index(p, block_bytes=64)
    assert sum(b.n_lines for b in blocks) == 101 and len(blocks) > 5
    a = LocalJsonlSource(p, seed=3, val_samples=17, block_bytes=64)
    b = LocalJsonlSource(p, seed=3, val_samples=17, block_bytes=64)
    val = [r["text"] for r, _ in a.iter_val()]
    assert len(val) == 17 and val == [r["text"] for r, _ in b.iter_val()]  # identical on every rank
    from parallel_data.sources import Cursor
    train = []
    for s in range(3):  # three streams (ranks) read disjoint shares
        c = Cursor()
        train += [r["text"] for r, _ in a.iter_epoch(c, s, 3)]
    assert sorted(train + val) == sorted(f"t{i}" for i in range(100))
    c2 = LocalJsonlSource(p, seed=4, val_samples=17, block_bytes=64)
    assert [r["text"] for r, _ in c2.iter_val()] != val


def test_bad_records_name_file_line_and_field(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, "{not json", {"text": "x"}])
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p), shuffle=False)
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        list(ds.all_units())
    p2 = write_jsonl(tmp_path / "missing.jsonl", [{"txt": "fine"}])
    with pytest.raises(DataError, match=r"missing.jsonl:1: needs 'text'"):
        list(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p2)).all_units())
    p3 = write_jsonl(tmp_path / "emptybranch.jsonl", [{"main": "ctx", "branches": ["ok", ""]}])
    with pytest.raises(DataError, match=r"emptybranch.jsonl:1: field 'branches\[1\].text': empty text"):
        list(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p3)).all_units())
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="is empty"):
        ParallelPretrainDataset(tiny_tokenizer, data_path=str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ParallelPretrainDataset(tiny_tokenizer, data_path=str(tmp_path / "nope.jsonl"))


def test_grouped_records_keep_answer_offsets(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "g.jsonl", [{"main": "the quick fox", "branches": [
        {"text": "plus minus equals 7", "answer_offset": 3}, "a lazy dog"]}])
    (u,) = list(ParallelPretrainDataset(tiny_tokenizer, data_path=str(p)).all_units())
    assert u["branches"][0]["answer_offset"] == 3 and u["main"]
    batch = ParallelCollator(tiny_tokenizer).collate([u])
    ids = tiny_tokenizer("plus minus equals 7", add_special_tokens=False)["input_ids"]
    b1 = batch["branch_ids"][0] == 1
    assert batch["labels"][0][b1].tolist() == [-100] * 2 + ids[3:] + [-100]  # loss only from the offset on


def test_sft_loss_covers_every_assistant_turn_and_nothing_else(tmp_path, tiny_tokenizer):
    conv = {"conversations": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the fox"},
                              {"role": "assistant", "content": "a dog"}, {"role": "user", "content": "seven"},
                              {"role": "assistant", "content": "birds sing"}]}
    p = write_jsonl(tmp_path / "s.jsonl", [conv, {"messages": conv["conversations"]}])
    units = list(ParallelSFTDataset(tiny_tokenizer, data_path=str(p)).all_units())
    assert len(units) == 2 and units[0] == units[1]  # OpenAI form == standard form
    ids, mask = units[0]["input_ids"], units[0]["loss_mask"]
    trained = tiny_tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "a dog<|im_end|>birds sing<|im_end|>"
    assert tiny_tokenizer.pad_token_id not in ids  # no pads inside a branch


def test_hf_dataset_path_with_local_file_and_packing(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "hf.jsonl", [{"content": "the quick brown fox " * (i % 4 + 1)} for i in range(30)])
    ds = ParallelPretrainDataset(tiny_tokenizer, hf_dataset=str(p), chunk_length=16)
    units = list(ds.all_units())
    lens = [len(u["input_ids"]) for u in units]
    assert set(lens[:-1]) == {16} and 0 < lens[-1] <= 16  # exact chunks, the remainder kept
    total = sum(len(tiny_tokenizer(r["content"], add_special_tokens=False)["input_ids"]) + 1
                for r in (json.loads(x) for x in open(p)))
    assert sum(lens) == total  # nothing dropped, no decode/re-encode drift
    assert tiny_tokenizer.eos_token_id in units[0]["input_ids"]


def test_hub_name_offline_fails_at_once(tiny_tokenizer):
    t0 = time.time()
    with pytest.raises((DataError, FileNotFoundError), match="not a local path"):
        ParallelPretrainDataset(tiny_tokenizer, hf_dataset="HuggingFaceFW/fineweb-edu", max_samples=10)
    assert time.time() - t0 < 2


def test_eval_batches_are_identical_for_any_world_size():
    units = [unit(i) for i in range(23)]
    c = ParallelCollator(None)

    def texts(world):
        out = []
        for r in range(world):
            it, info = eval_batches(iter(units), rank=r, world_size=world, batch_size=2, collator=c, branches=4)
            for b in it:
                out += sorted(b["input_ids"][b["token_mask"]].tolist())
        return sorted(out), info
    one, info1 = texts(1)
    three, info3 = texts(3)
    assert one == three and info1["samples"] == 5 and info1["leftover_texts"] == 3


def test_stream_reshards_without_losing_texts(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "r.jsonl", [{"input_ids": [300 + i, 7]} for i in range(200)])
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p))
    ds.source = LocalJsonlSource(p, block_bytes=200)
    g = GroupingConfig(batch_size=3, branches_per_sample=2, batch_by_samples=True)
    kw = dict(tokenizer=None, branch_stride=4)
    seen, states = Counter(), {}
    for r in range(2):  # two ranks, each stops after 4 batches
        for k, b in enumerate(ParallelBatchStream(ds, g, kw, rank=r, world_size=2, epochs=1, seed=0)):
            ids = b["input_ids"][b["token_mask"]].tolist()
            seen.update(t for t in ids if t >= 300)
            states[b["stream"]] = b["state"]
            if k == 3:
                break
    new = reshard_states(states, 2, 3, ds.source)
    for r in range(3):
        for b in ParallelBatchStream(ds, g, kw, rank=r, world_size=3, epochs=1, seed=0, resume_states=new):
            seen.update(t for t in b["input_ids"][b["token_mask"]].tolist() if t >= 300)
    assert set(seen) == {300 + i for i in range(200)}  # nothing lost (some blocks may repeat, bounded)
    assert sum(seen.values()) < 200 + 3 * 10


def test_stream_carries_time_offsets_seeded(tmp_path, tiny_tokenizer):
    p = write_jsonl(tmp_path / "o.jsonl", [{"text": "the quick brown fox jumps"}] * 12)
    ds = ParallelPretrainDataset(tiny_tokenizer, data_path=str(p))
    g = GroupingConfig(batch_size=2, branches_per_sample=3, batch_by_samples=True)
    kw = dict(tokenizer=tiny_tokenizer, branch_stride=8, random_time_offset=True)
    a = [b["time_ids"] for b in ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=1)]
    b = [b["time_ids"] for b in ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=1)]
    c = [b["time_ids"] for b in ParallelBatchStream(ds, g, kw, rank=0, world_size=1, epochs=1, seed=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))


def test_random_branch_slots_are_sorted_seeded_and_in_range():
    samples = [{"branches": [unit(i) for i in range(3)]}, {"main": [9, 9], "branches": [unit(5), unit(6)]}]
    coords = []
    for seed in (4, 4, 5):
        c = ParallelCollator(None, branch_stride=10, random_branch_slots=8, seed=seed)
        b = c.collate(samples)
        coords.append([sorted({int(x) for x, bid in zip(b["pos2d"][r, :, 0], b["branch_ids"][r]) if bid > 0})
                       for r in range(2)])
    assert coords[0] == coords[1] != coords[2]
    for row, first in zip(coords[0], (0, 10)):
        assert all(first <= x <= first + 70 and x % 10 == 0 for x in row)
    with pytest.raises(ValueError, match="random_branch_slots is 2"):
        ParallelCollator(None, random_branch_slots=2).collate(samples)
