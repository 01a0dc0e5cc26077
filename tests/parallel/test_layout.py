"""Columnar layout builder: hand-written examples and the vectorised code against a brute-force loop."""

import random

import pytest
import torch
from oracles import brute_layout

from parallel.columnar import build_flat_linear_layout


def test_worked_example_no_main():
    # docs/POSITION_ENCODING.md: A=[a0,a1,a2], B=[b0,b1], C=[c0..c3], stride 128
    A, Bb, C = [10, 11, 12], [20, 21], [30, 31, 32, 33]
    lay = build_flat_linear_layout(None, [{"branches": [A, Bb, C]}], branch_stride=128)
    assert lay.input_ids.tolist() == [[10, 20, 30, 11, 21, 31, 12, 32, 33]]
    assert lay.pos2d.tolist() == [[[0, 0], [128, 0], [256, 0], [0, 1], [128, 1], [256, 1], [0, 2], [256, 2],
                                   [256, 3]]]
    assert lay.time_ids.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 3]]
    assert lay.branch_ids.tolist() == [[1, 2, 3, 1, 2, 3, 1, 3, 3]]
    assert lay.labels.tolist() == [[11, 21, 31, 12, -100, 32, -100, 33, -100]]
    meta = lay.metadata[0]
    assert meta.branch_pos1d_end == [6, 4, 8] and meta.background_branch_id == -1
    assert lay.branch_next_time.tolist() == [[-1, 3, 2, 4]]


def test_right_alignment_and_main():
    lay = build_flat_linear_layout(None, [{"main": [1, 2], "branches": [[10, 11, 12], [20]]}], branch_stride=100,
                                   align_to="right")
    # main at times 0,1 (coordinate 0); branch 1 at 2..4 (coordinate 100); branch 2 ends with it at time 4
    assert lay.time_ids.tolist() == [[0, 1, 2, 3, 4, 4]]
    assert lay.input_ids.tolist() == [[1, 2, 10, 11, 12, 20]]
    assert lay.pos2d[0, :, 0].tolist() == [0, 0, 100, 100, 100, 200]
    assert lay.labels.tolist() == [[-100, -100, 11, 12, -100, -100]]  # no loss on main, none after a last token
    assert lay.metadata[0].background_branch_id == 0


def test_answer_offset_and_explicit_time_offset():
    lay = build_flat_linear_layout(None, [{"branches": [{"input_ids": [5, 6, 7, 8], "answer_offset": 2},
                                                        {"input_ids": [9, 10], "time_offset": 3}]}])
    # branch 2 starts at time 3; labels only for targets with branch-local index >= 2 (tokens 7 and 8)
    assert lay.time_ids.tolist() == [[0, 1, 2, 3, 3, 4]]
    assert lay.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert lay.labels.tolist() == [[-100, 7, 8, -100, 10, -100]]


def test_loss_mask_selects_trained_targets():
    # a two-turn conversation: targets 2,3 (first reply) and 6 (second reply) are trained
    lay = build_flat_linear_layout(None, [{"branches": [{"input_ids": [1, 2, 3, 4, 5, 6, 7],
                                                         "loss_mask": [0, 0, 1, 1, 0, 0, 1]}]}])
    assert lay.labels.tolist() == [[-100, 3, 4, -100, -100, 7, -100]]
    with pytest.raises(ValueError, match="loss_mask has 2 entries for 3 tokens"):
        build_flat_linear_layout(None, [{"branches": [{"input_ids": [1, 2, 3], "loss_mask": [1, 1]}]}])


def test_random_offsets_are_seeded_and_bounded():
    samples = [{"branches": [list(range(3, 3 + n)) for n in (4, 6, 2, 5)]}] * 3
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = build_flat_linear_layout(None, samples, random_time_offset=True, generator=g1)
    b = build_flat_linear_layout(None, samples, random_time_offset=True, generator=g2)
    assert torch.equal(a.time_ids, b.time_ids)
    for m in a.metadata:
        for start, length in zip(m.branch_start_y, m.branch_lengths):
            assert 0 <= start <= length  # offset drawn from [0, len]
    c = build_flat_linear_layout(None, samples, random_time_offset=True, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.time_ids, c.time_ids)


def test_truncation_is_counted_and_never_drops_a_branch():
    s = {"main": [1, 2, 3], "branches": [[10, 11, 12, 13], [20, 21, 22]]}
    lay = build_flat_linear_layout(None, [s], max_tokens=7)
    assert lay.input_ids.shape == (1, 7) and lay.truncated_tokens.tolist() == [3]
    assert lay.metadata[0].branch_lengths == [3, 2, 2]  # tails cut at the same column
    padded = build_flat_linear_layout(None, [s, {"branches": [[4]]}], pad_to=9)
    assert padded.input_ids.shape == (2, 9) and padded.truncated_tokens.tolist() == [1, 0]
    with pytest.raises(ValueError, match="remove branch 1 entirely"):
        build_flat_linear_layout(None, [s], max_tokens=4)


def test_text_inputs_use_the_tokenizer(tiny_tokenizer):
    lay = build_flat_linear_layout(tiny_tokenizer, [{"main": "the quick fox", "branches": ["jumps over", "a dog"]}])
    ids = lay.input_ids[0][lay.token_mask[0]]
    main = tiny_tokenizer("the quick fox", add_special_tokens=False)["input_ids"]
    assert ids[: len(main)].tolist() == main
    assert lay.pad_id == tiny_tokenizer.pad_token_id == 0  # id 0 is a valid pad id, not a missing one


@pytest.mark.parametrize("bad,msg", [
    ({"branches": []}, "non-empty list"),
    ({"branches": [[]]}, "empty"),
    ({"branches": [{"answer_offset": 1}]}, "needs one of"),
    ({"branches": [{"input_ids": [1], "answer_offset": -1}]}, "answer_offset"),
    ("text", "expected a dict"),
])
def test_bad_samples_are_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        build_flat_linear_layout(None, [bad])


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_brute_force(seed):
    rng = random.Random(seed)
    samples, api = [], []
    for _ in range(rng.randint(1, 4)):
        main = [rng.randint(3, 99) for _ in range(rng.randint(0, 5))]
        branches = [([rng.randint(3, 99) for _ in range(rng.randint(1, 7))], rng.randint(0, 3))
                    for _ in range(rng.randint(1, 5))]
        samples.append({"main": main, "branches": branches})
        api.append({"main": main, "branches": [{"input_ids": ids, "answer_offset": a} for ids, a in branches]})
    align = rng.choice(["left", "right"])
    stride = rng.choice([1, 16, 128])
    cap = rng.choice([None, 12])
    try:
        lay = build_flat_linear_layout(None, api, branch_stride=stride, align_to=align, max_tokens=cap)
    except ValueError:  # the cap removed a whole branch: the oracle must agree that one would be lost
        ref = brute_layout(samples, stride, align, cap=cap)
        assert any(len(set(r["branch"])) < len(s["branches"]) + bool(s["main"]) for r, s in zip(ref, samples))
        return
    ref = brute_layout(samples, stride, align, cap=cap)
    for b, r in enumerate(ref):
        n = len(r["input_ids"])
        assert lay.input_ids[b, :n].tolist() == r["input_ids"]
        assert lay.time_ids[b, :n].tolist() == r["time"]
        assert lay.branch_ids[b, :n].tolist() == r["branch"]
        assert lay.pos2d[b, :n, 0].tolist() == r["coord"]
        assert lay.pos2d[b, :n, 1].tolist() == r["time"]
        assert lay.labels[b, :n].tolist() == r["labels"]
        assert int(lay.truncated_tokens[b]) == r["dropped"]
        assert (lay.time_ids[b, n:] == -1).all() and (~lay.token_mask[b, n:]).all()
        assert (lay.labels[b, n:] == -100).all()


def test_branch_slots_set_coordinates():
    lay = build_flat_linear_layout(None, [{"main": [1], "branches": [{"input_ids": [5], "branch_slot": 3},
                                                                    {"input_ids": [6], "branch_slot": 7}]}],
                                   branch_stride=10)
    assert lay.pos2d[0, :, 0].tolist() == [0, 30, 70] and lay.branch_coord.tolist() == [[0, 30, 70]]
    with pytest.raises(ValueError, match="belongs to the main"):
        build_flat_linear_layout(None, [{"main": [1], "branches": [{"input_ids": [5], "branch_slot": 0}]}])
    with pytest.raises(ValueError, match="share a branch_slot"):
        build_flat_linear_layout(None, [{"branches": [{"input_ids": [5], "branch_slot": 2},
                                                      {"input_ids": [6], "branch_slot": 2}]}])
