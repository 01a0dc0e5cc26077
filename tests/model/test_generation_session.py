"""Continuous batching: samples joining and leaving a running session decode exactly as they do alone;
cancel frees rows at once; per-branch random streams make n samples of one prompt equal n seeded runs."""

import pytest
import torch
from conftest import load_hf, tiny_minimind

from model.parallel_generation import ParallelGenerator
from parallel.rope2d import patch_model_with_interleaved_2d_rope
from parallel.sampling import SamplingParams

STRIDE = 16
NO_EOS = []
HOT = SamplingParams(do_sample=True, temperature=1.0)


def make_model(kind, tiny_hf_dirs):
    if kind == "minimind":
        return tiny_minimind(seed=3, tie_word_embeddings=False, branch_stride=STRIDE)
    model = load_hf(tiny_hf_dirs[kind])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, branch_stride=STRIDE)
    return model


# (sample, add() keyword arguments): columnar and isolated samples, prefix sharing, a repetition
# penalty, seeded sampling, explicit time offsets, 1 to 5 branches, limits that end rows at different steps
REQUESTS = [
    ({"main": [5, 6, 7, 8], "branches": [[10, 11, 12], [20, 21], [30, 31, 32, 33]]},
     dict(sampling=[SamplingParams(max_new_tokens=n) for n in (7, 3, 5)], mask_mode="columnar")),
    ({"branches": [[40, 41, 42, 43, 44], [50, 51]]}, dict(mask_mode="isolated", max_new_tokens=4)),
    ({"main": [60, 61, 62], "branches": [[63], [63]]},
     dict(mask_mode="isolated", branch_stride=0, sampling=HOT, seed=11, max_new_tokens=6)),
    ({"branches": [[70, 71, 72]]}, dict(sampling=SamplingParams(repetition_penalty=1.5), max_new_tokens=9)),
    ({"main": [80, 81], "branches": [[90], [91, 92], {"input_ids": [93], "time_offset": 2}, [94, 95, 96], [97]]},
     dict(mask_mode="columnar", max_new_tokens=5)),
]


def alone(gen, sample, kw):
    session = gen.session()
    h = session.add(sample, eos_token_ids=NO_EOS, **kw)
    while not session.idle:
        session.step()
    return [b.token_ids for b in h.result.branches]


@pytest.mark.parametrize("kind", ["minimind", "qwen2"])
def test_samples_joining_mid_run_equal_each_alone(tiny_hf_dirs, kind):
    gen = ParallelGenerator(make_model(kind, tiny_hf_dirs), None, branch_stride=STRIDE)
    session = gen.session()
    handles, events, rows = [], [], []
    plan = {0: [0], 2: [1], 5: [2, 3], 6: [4]}  # step -> requests added before it
    step = 0
    while step == 0 or not session.idle:
        for r in plan.get(step, []):
            handles.append(session.add(REQUESTS[r][0], eos_token_ids=NO_EOS, **REQUESTS[r][1]))
        events += session.step()
        rows.append(session.num_rows)
        step += 1
    assert max(rows) >= 3 and rows[-1] == 0  # samples were decoded together, and all of them left
    for h, (sample, kw) in zip(handles, REQUESTS):
        got = [b.token_ids for b in h.result.branches]
        assert got == alone(gen, sample, kw), h.id
        streamed = [[e.token_id for e in events if (e.sample, e.branch) == (h.id, k)] for k in range(len(got))]
        ends = [b.finish_reason for b in h.result.branches]
        assert streamed == got and ends == ["length"] * len(got)
    first = REQUESTS[0][1]["sampling"]
    assert [len(b.token_ids) for b in handles[0].result.branches] == [p.max_new_tokens for p in first]


def test_generate_is_a_session_with_every_sample_added_at_once():
    gen = ParallelGenerator(make_model("minimind", None), None, branch_stride=STRIDE)
    samples = [REQUESTS[0][0], REQUESTS[1][0]]
    res = gen.generate(samples, [REQUESTS[0][1]["sampling"], None], eos_token_ids=NO_EOS, max_new_tokens=4)
    session = gen.session()
    hs = [session.add(samples[0], REQUESTS[0][1]["sampling"], eos_token_ids=NO_EOS, max_new_tokens=4),
          session.add(samples[1], eos_token_ids=NO_EOS, max_new_tokens=4)]
    while not session.idle:
        session.step()
    assert [[b.token_ids for b in r.branches] for r in res] == [[b.token_ids for b in h.result.branches] for h in hs]


def test_cancel_frees_rows_at_once():
    gen = ParallelGenerator(make_model("minimind", None), None, mask_mode="isolated")
    session = gen.session()
    hs = [session.add({"branches": [[10 + i, 11, 12], [20 + i, 21]]}, eos_token_ids=NO_EOS, max_new_tokens=12)
          for i in range(3)]
    queued = session.add({"branches": [[99, 98]]}, eos_token_ids=NO_EOS)
    session.cancel(queued)  # never prefilled
    assert queued.finished and [b.finish_reason for b in queued.result.branches] == ["cancelled"]
    for _ in range(4):
        session.step()
    assert session.num_rows == 3
    session.cancel(hs[1])
    assert session.num_rows == 2 and session._batch.cache.layers[0].keys.shape[0] == 2
    cut = hs[1].result.branches
    assert [b.finish_reason for b in cut] == ["cancelled"] * 2 and all(0 < len(b.token_ids) < 12 for b in cut)
    while not session.idle:
        session.step()
    for i in (0, 2):
        assert [b.token_ids for b in hs[i].result.branches] == alone(gen, hs[i].sample, dict(max_new_tokens=12))
    session.cancel(hs[0])  # already finished: nothing changes
    assert [b.finish_reason for b in hs[0].result.branches] == ["length"] * 2


@pytest.mark.parametrize("kind", ["minimind", "qwen2"])
def test_n_samples_of_one_prompt_equal_n_seeded_runs(tiny_hf_dirs, kind):
    gen = ParallelGenerator(make_model(kind, tiny_hf_dirs), None, mask_mode="isolated", branch_stride=0)
    prompt, n, seed = [17, 42, 99, 5, 230, 11], 4, 123
    session = gen.session()
    shared = session.add(gen.shared_prompt_sample(prompt, n), HOT, seed=seed, eos_token_ids=NO_EOS, max_new_tokens=10)
    other = session.add({"branches": [[3, 4, 5]]}, HOT, seed=seed, eos_token_ids=NO_EOS, max_new_tokens=10)
    while not session.idle:
        session.step()
    got = [b.token_ids for b in shared.result.branches]
    assert got == [alone(gen, {"branches": [prompt]}, dict(sampling=HOT, seed=seed + i, max_new_tokens=10))[0]
                   for i in range(n)]
    assert len({tuple(t) for t in got}) > 1  # the n samples differ from each other
    assert [b.token_ids for b in other.result.branches] == \
        alone(gen, {"branches": [[3, 4, 5]]}, dict(sampling=HOT, seed=seed, max_new_tokens=10))
    # generate(seed=s): the j-th branch of the call samples with seed s + j
    res = gen.generate([{"branches": [prompt]}, gen.shared_prompt_sample(prompt, 2)], HOT, seed=seed,
                       eos_token_ids=NO_EOS, max_new_tokens=10)
    assert [b.token_ids for r in res for b in r.branches] == got[:3]


def test_stop_strings_and_streamed_text_per_sample(tiny_tokenizer):
    model = tiny_minimind(seed=2, tie_word_embeddings=False, vocab_size=len(tiny_tokenizer))
    gen = ParallelGenerator(model, tiny_tokenizer, mask_mode="isolated")
    ref = gen.generate([{"branches": ["the quick brown fox"]}], eos_token_ids=NO_EOS, max_new_tokens=12)
    text = ref[0].branches[0].text
    stop = text[3:5]
    session = gen.session()
    a = session.add({"branches": ["a lazy dog"]}, eos_token_ids=NO_EOS, max_new_tokens=12)
    session.step()
    b = session.add({"branches": ["the quick brown fox"]}, eos_token_ids=NO_EOS, max_new_tokens=12,
                    stop_strings=[stop])
    streamed = {a.id: "", b.id: ""}
    while not session.idle:
        for e in session.step():
            streamed[e.sample] += e.text
    assert b.result.branches[0].finish_reason == "stop" and b.result.branches[0].text == text[:text.find(stop)]
    assert streamed[b.id] == b.result.branches[0].text and streamed[a.id] == a.result.branches[0].text


def test_bad_requests_are_clear_errors():
    gen = ParallelGenerator(make_model("minimind", None), None, branch_stride=STRIDE)
    session = gen.session()
    with pytest.raises(ValueError, match="sample 0: field 'branches'"):
        session.add({"main": [1, 2]})
    with pytest.raises(ValueError, match="sample 0 branch 1: empty"):
        session.add({"branches": [[4], []]})
    with pytest.raises(ValueError, match="isolated"):
        session.add({"branches": [[4]]}, mask_mode="columnar", branch_stride=0)
    with pytest.raises(ValueError, match=r"sampling\[0\]"):
        session.add({"branches": [[4], [5]]}, [SamplingParams()])
    assert session.idle and session.num_rows == 0
    assert torch.is_grad_enabled()


def test_steps_run_in_eval_mode_and_restore_training():
    model = make_model("minimind", None)
    gen = ParallelGenerator(model, None, mask_mode="isolated")
    modes = []
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    model.train()
    session = gen.session()
    session.add({"branches": [[5, 6, 7]]}, eos_token_ids=NO_EOS, max_new_tokens=3)
    while not session.idle:
        session.step()
    hook.remove()
    assert modes == [False, False, False] and model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize("kind", ["minimind", "qwen2"])
def test_isolated_branches_without_a_main_decode_in_rows_of_their_own(tiny_hf_dirs, kind):
    """At stride 0 with no main each isolated branch is a row of its own (a decode step attends over its own
    keys only); every branch still decodes exactly as it does alone, random stream and time offset included."""
    gen = ParallelGenerator(make_model(kind, tiny_hf_dirs), None, mask_mode="isolated", branch_stride=0)
    sample = {"branches": [[40, 41, 42, 43, 44], [50, 51], {"input_ids": [52, 53, 54], "time_offset": 3}, [60]]}
    params = [HOT, SamplingParams(), HOT, SamplingParams(repetition_penalty=1.5)]
    session = gen.session()
    h = session.add(sample, params, seed=5, eos_token_ids=NO_EOS, max_new_tokens=6)
    other = session.add({"branches": [[70, 71], [72]]}, seed=9, eos_token_ids=NO_EOS, max_new_tokens=8)
    session.step()
    assert session.num_rows == 6
    while not session.idle:
        session.step()
    for k, br in enumerate(sample["branches"]):
        one = alone(gen, {"branches": [br]}, dict(sampling=params[k], seed=5 + k, max_new_tokens=6))
        assert h.result.branches[k].token_ids == one[0], k
    assert [len(b.token_ids) for b in other.result.branches] == [8, 8]
    session = gen.session()
    h = session.add(sample, params, seed=5, eos_token_ids=NO_EOS, max_new_tokens=6)
    kept = session.add({"main": [70], "branches": [[71], [72]]}, eos_token_ids=NO_EOS, max_new_tokens=6)
    session.step()
    assert session.num_rows == 5  # the sample with a main keeps its one row
    session.cancel(h)
    assert session.num_rows == 1 and [b.finish_reason for b in h.result.branches] == ["cancelled"] * 4
    while not session.idle:
        session.step()
    assert kept.result is not None and all(b.finish_reason == "length" for b in kept.result.branches)
