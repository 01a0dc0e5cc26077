"""Parallel generation: sampling against HF's processors, engine logits against a full recompute,
parallel greedy decoding against `model.generate` one prompt at a time, finishing rules, seeds."""

import pytest
import torch
from conftest import load_hf, tiny_minimind
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from model.parallel_generation import ParallelGenerator
from parallel.columnar import (
    build_attention_mask,
    build_flat_linear_layout,
    patch_model_with_interleaved_2d_rope,
    to_additive_mask,
)
from parallel.sampling import (
    SamplingParams,
    SamplingTensors,
    apply_repetition_penalty,
    apply_temperature_top_k_top_p,
    sample_next,
    seen_matrix,
)

STRIDE = 16
PROMPTS = [[17, 42, 99, 5, 230, 11, 64], [8, 9, 10], [100, 101, 102, 103, 104]]  # unequal lengths, ids < 256
NO_EOS = []  # random models: never stop on a token unless a test says so


# --- sampling ------------------------------------------------------------------------------------

def test_repetition_penalty_matches_hf():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    ids = torch.randint(0, 50, (4, 12))
    pens = [1.0, 1.3, 0.7, 2.0]
    got = apply_repetition_penalty(logits, seen_matrix(ids, 50), torch.tensor(pens))
    for r, p in enumerate(pens):
        ref = RepetitionPenaltyLogitsProcessor(p)(ids[r:r + 1], logits[r:r + 1].clone())
        torch.testing.assert_close(got[r:r + 1], ref, rtol=0, atol=0)
    # ids form (negative = padding) equals the seen-matrix form
    padded = torch.cat([ids, torch.full((4, 3), -1)], dim=1)
    torch.testing.assert_close(apply_repetition_penalty(logits, padded, torch.tensor(pens)), got)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_top_k_top_p_match_hf(seed):
    g = torch.Generator().manual_seed(seed)
    N, V = 6, 40
    logits = torch.randn(N, V, generator=g) * 2
    rows = [SamplingParams(do_sample=True, temperature=t, top_k=k, top_p=p)
            for t, k, p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.5, 10, 0.5), (1.0, 1, 0.9), (2.0, 0, 0.3)]]
    got = apply_temperature_top_k_top_p(logits, SamplingTensors.from_params(rows))
    for r, p in enumerate(rows):
        ref = logits[r:r + 1].clone()
        ref = TemperatureLogitsWarper(p.temperature)(None, ref)
        if p.top_k:
            ref = TopKLogitsWarper(p.top_k)(None, ref)
        if p.top_p < 1:
            ref = TopPLogitsWarper(p.top_p)(None, ref)
        assert torch.equal(torch.isinf(got[r:r + 1]), torch.isinf(ref)), r
        torch.testing.assert_close(got[r:r + 1], ref)


def test_sample_next_greedy_rows_and_seeds():
    torch.manual_seed(0)
    logits = torch.randn(5, 30)
    ps = SamplingTensors.from_params([SamplingParams(), SamplingParams(do_sample=True, temperature=0.0),
                                      SamplingParams(do_sample=True, top_k=3), SamplingParams(do_sample=True),
                                      SamplingParams(do_sample=True, top_k=1)])
    a = sample_next(logits, ps, torch.Generator().manual_seed(7))
    b = sample_next(logits, ps, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    am = logits.argmax(-1)
    assert a[0] == am[0] and a[1] == am[1] and a[4] == am[4]  # greedy, temperature 0, top-k 1
    assert int(a[2]) in logits[2].topk(3).indices.tolist()
    draws = torch.stack([sample_next(logits, ps, torch.Generator().manual_seed(s))[3] for s in range(20)])
    assert len(set(draws.tolist())) > 1  # really sampled


def test_sampling_params_validation():
    for bad in [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                dict(repetition_penalty=0.0), dict(max_new_tokens=-2)]:
        with pytest.raises(ValueError, match="SamplingParams"):
            SamplingParams(**bad)


# --- engine vs full recompute ----------------------------------------------------------------------

SAMPLES = [
    {"main": [5, 6, 7, 8], "branches": [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32]]},
    {"branches": [[40, 41, 42, 43, 44, 45], [50, 51, 52]]},
]
# different limits per branch: branches finish at different steps, so rows get pad slots and the
# second sample is dropped from the batch before the first one finishes
LIMITS = [[6, 2, 4], [3, 1]]


def make_model(kind: str, tiny_hf_dirs, scheme: str = "additive"):
    if kind == "minimind":
        return tiny_minimind(seed=3, tie_word_embeddings=False, rope_2d_scheme=scheme, branch_stride=STRIDE)
    arch, _, attn = kind.partition("-")
    model = load_hf(tiny_hf_dirs[arch], attn=attn or "sdpa")
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, scheme=scheme, branch_stride=STRIDE)
    return model


def full_recompute_error(model, samples, results, mode, align_to, eager) -> float:
    """Rebuild every sample as a training layout (prompt + fed generated tokens at the times generation
    used) and compare every step's logits with ONE full forward over it (the plain time rule)."""
    lay = build_flat_linear_layout(None, samples, branch_stride=STRIDE, align_to=align_to)
    rebuilt = []
    for b, (smp, g) in enumerate(zip(samples, results)):
        main = smp.get("main") or []
        start = lay.branch_start_time[b].tolist()  # by branch id
        branches = []
        for k, r in enumerate(g.branches):
            # a branch feeds every token it generated except a final one that ended it by length / stop
            fed = r.token_ids if r.finish_reason == "eos" else r.token_ids[:-1]
            branches.append({"input_ids": r.prompt_ids + fed, "time_offset": start[k + 1] - len(main)})
        rebuilt.append({"main": main, "branches": branches})
    full_lay = build_flat_linear_layout(None, rebuilt, branch_stride=STRIDE, align_to="left")
    mask = build_attention_mask(full_lay.time_ids, full_lay.branch_ids, mode)
    if eager:
        mask = to_additive_mask(mask, torch.float32)
    with torch.no_grad():
        full = model(full_lay.input_ids, attention_mask=mask, position_ids=full_lay.position_ids()).logits.float()
    err = 0.0
    for b, g in enumerate(results):
        for k, r in enumerate(g.branches):
            n_steps = r.num_new_tokens + (r.finish_reason == "eos")
            assert r.step_logits.shape[0] == n_steps
            own = torch.nonzero(full_lay.branch_ids[b] == k + 1).squeeze(1)  # time order = flat order
            idx = own[len(r.prompt_ids) - 1: len(r.prompt_ids) - 1 + n_steps]
            err = max(err, (full[b, idx] - r.step_logits).abs().max().item())
    return err


@pytest.mark.parametrize("kind", ["minimind", "qwen2", "llama-eager"])
@pytest.mark.parametrize("mode", ["columnar", "isolated"])
@pytest.mark.parametrize("scheme", ["additive", "reference"])
@pytest.mark.parametrize("align", ["left", "right"])
def test_step_logits_equal_full_recompute(tiny_hf_dirs, kind, mode, scheme, align):
    model = make_model(kind, tiny_hf_dirs, scheme)
    gen = ParallelGenerator(model, None, mask_mode=mode, branch_stride=STRIDE, align_to=align)
    sampling = [[SamplingParams(max_new_tokens=n, do_sample=k == 1, seed=0) for k, n in enumerate(g)] for g in LIMITS]
    res = gen.generate(SAMPLES, sampling, eos_token_ids=NO_EOS, return_step_logits=True)
    assert [[r.num_new_tokens for r in g.branches] for g in res] == LIMITS
    eager = kind.endswith("eager")
    assert full_recompute_error(model, SAMPLES, res, mode, align, eager) <= 1e-4
    if mode == "isolated" or align == "right":  # then no token sees a later forward's token
        assert full_recompute_error(model, SAMPLES, res, mode, align, eager) <= 1e-4


def test_columnar_decoding_is_time_synchronous():
    # With left alignment and unequal prompts a short branch generates (time 6) while a long branch
    # still has prompt tokens at times 7 and 8: those must be fed after, and see, the generated token,
    # exactly as in a training layout of the final sequence. Prefilling the whole prompt (own clocks)
    # would have computed them without it.
    model = make_model("minimind", None)
    gen = ParallelGenerator(model, None, mask_mode="columnar", branch_stride=STRIDE)
    assert gen.synchronous
    res = gen.generate(SAMPLES[:1], eos_token_ids=NO_EOS, max_new_tokens=3, return_step_logits=True)
    assert full_recompute_error(model, SAMPLES[:1], res, "columnar", "left", False) <= 1e-4
    assert not ParallelGenerator(model, None, mask_mode="isolated", branch_stride=STRIDE).synchronous


def test_logits_without_decoder_split_are_the_same(tiny_hf_dirs):
    model = make_model("qwen2", tiny_hf_dirs)
    gen = ParallelGenerator(model, None, branch_stride=STRIDE)
    a = gen.generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=4, return_step_logits=True)
    gen.runner.decoder = gen.runner.head = None  # the model's own logits (logits_to_keep) path
    b = gen.generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=4, return_step_logits=True)
    for ga, gb in zip(a, b):
        for ra, rb in zip(ga.branches, gb.branches):
            assert ra.token_ids == rb.token_ids
            torch.testing.assert_close(ra.step_logits, rb.step_logits, rtol=0, atol=1e-5)


# --- parallel greedy == one prompt at a time -----------------------------------------------------

@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("align", ["left", "right"])
def test_isolated_parallel_greedy_equals_hf_generate(tiny_hf_dirs, arch, align):
    model = load_hf(tiny_hf_dirs[arch])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    gen = ParallelGenerator(model, None, mask_mode="isolated", align_to=align)
    res = gen.generate([{"branches": PROMPTS}], eos_token_ids=NO_EOS, max_new_tokens=8)
    for p, r in zip(PROMPTS, res[0].branches):
        ref = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=8, pad_token_id=0, eos_token_id=None)
        assert r.token_ids == ref[0, len(p):].tolist()
        assert r.finish_reason == "length" and r.prompt_ids == p


def test_isolated_parallel_greedy_equals_minimind_generate():
    model = tiny_minimind(seed=3, tie_word_embeddings=False)
    gen = ParallelGenerator(model, None, mask_mode="isolated")
    res = gen.generate([{"branches": PROMPTS}], eos_token_ids=NO_EOS, max_new_tokens=10)
    res_pen = gen.generate([{"branches": PROMPTS}], SamplingParams(repetition_penalty=1.5), eos_token_ids=NO_EOS,
                           max_new_tokens=10)
    for p, r, rp in zip(PROMPTS, res[0].branches, res_pen[0].branches):
        x = torch.tensor([p])
        ref = model.generate(x, do_sample=False, max_new_tokens=10, pad_token_id=0, eos_token_id=None)
        assert r.token_ids == ref[0, len(p):].tolist()
        ref = model.generate(x, do_sample=False, max_new_tokens=10, pad_token_id=0, eos_token_id=None,
                             repetition_penalty=1.5)
        assert rp.token_ids == ref[0, len(p):].tolist()


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")
def test_peft_wrapped_model_uses_the_adapter(tiny_hf_dirs):
    peft = pytest.importorskip("peft")
    model = make_model("qwen2", tiny_hf_dirs)
    base = ParallelGenerator(model, None).generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=4,
                                                   return_step_logits=True)
    cfg = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, cfg)  # random non-zero adapters, on the head too
    res = ParallelGenerator(wrapped, None).generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=4,
                                                    return_step_logits=True)
    assert full_recompute_error(wrapped, SAMPLES, res, "columnar", "left", False) <= 1e-4
    assert (res[0].branches[0].step_logits[0] - base[0].branches[0].step_logits[0]).abs().max() > 1e-3


def test_groups_in_one_batch_equal_each_group_alone():
    model = tiny_minimind(seed=1, tie_word_embeddings=False, branch_stride=STRIDE)
    gen = ParallelGenerator(model, None)
    samples = [*SAMPLES, {"main": [3, 4], "branches": [[60, 61, 62, 63]]}]
    limits = [[7, 3, 5], [4, 6], [2]]
    sampling = [[SamplingParams(max_new_tokens=n) for n in g] for g in limits]
    together = gen.generate(samples, sampling, eos_token_ids=NO_EOS)
    for smp, s, res in zip(samples, sampling, together):
        alone = gen.generate([smp], [s], eos_token_ids=NO_EOS)[0]
        assert [r.token_ids for r in res.branches] == [r.token_ids for r in alone.branches]
    # output order follows input order
    rev = gen.generate(samples[::-1], sampling[::-1], eos_token_ids=NO_EOS)
    assert [[r.token_ids for r in g.branches] for g in rev] == [[r.token_ids for r in g.branches]
                                                                   for g in together[::-1]]
    assert [r.prompt_ids for r in together[0].branches] == SAMPLES[0]["branches"]


def test_cache_and_history_growth_do_not_change_outputs(monkeypatch):
    import model.generation.session as gs

    model = tiny_minimind(seed=1, tie_word_embeddings=False, branch_stride=STRIDE)
    gen = ParallelGenerator(model, None)
    ref = gen.generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=9, return_step_logits=True)
    monkeypatch.setattr(gs, "CAPACITY_STEPS", 1)  # forces several doublings while decoding
    got = gen.generate(SAMPLES, eos_token_ids=NO_EOS, max_new_tokens=9, return_step_logits=True)
    for gr, gg in zip(ref, got):
        for r, g in zip(gr.branches, gg.branches):
            assert r.token_ids == g.token_ids
            torch.testing.assert_close(r.step_logits, g.step_logits, rtol=0, atol=1e-5)


# --- finishing rules -----------------------------------------------------------------------------

def test_eos_and_length():
    model = tiny_minimind(seed=3, tie_word_embeddings=False)
    gen = ParallelGenerator(model, None, mask_mode="isolated")
    sample = [{"branches": PROMPTS}]
    ref = gen.generate(sample, eos_token_ids=NO_EOS, max_new_tokens=10)[0].branches
    eos = ref[1].token_ids[0]  # branch 1's greedy first token
    res = gen.generate(sample, eos_token_ids={eos}, max_new_tokens=10)[0].branches
    assert res[1].token_ids == [] and res[1].finish_reason == "eos" and res[1].num_new_tokens == 0
    for r, rr in zip(res, ref):  # isolated: the others are unaffected until they meet that token
        cut = rr.token_ids.index(eos) if eos in rr.token_ids else 10
        assert r.token_ids == rr.token_ids[:cut]
        assert r.finish_reason == ("eos" if eos in rr.token_ids else "length")
    assert any(r.num_new_tokens > 0 for r in res)
    zero = gen.generate(sample, [[SamplingParams(max_new_tokens=0), SamplingParams(), SamplingParams()]],
                        eos_token_ids=NO_EOS, max_new_tokens=3)[0].branches
    assert (zero[0].token_ids, zero[0].finish_reason) == ([], "length")
    assert [r.token_ids for r in zero[1:]] == [r.token_ids[:3] for r in ref[1:]]


def test_stop_strings_cut_text_and_stream(tiny_tokenizer):
    model = tiny_minimind(seed=2, tie_word_embeddings=False, vocab_size=len(tiny_tokenizer))
    gen = ParallelGenerator(model, tiny_tokenizer, mask_mode="isolated")
    sample = [{"branches": ["the quick brown fox", "seven small birds sing", "a lazy dog"]}]
    ref = gen.generate(sample, eos_token_ids=NO_EOS, max_new_tokens=12)[0].branches
    text0 = ref[0].text
    assert len(text0) >= 6
    stop = text0[3:5]
    streamed = {}
    res = gen.generate(sample, eos_token_ids=NO_EOS, max_new_tokens=12, stop_strings=[stop],
                       on_step=lambda s, evs: [streamed.__setitem__(e.branch, streamed.get(e.branch, "") + e.text)
                                               for e in evs])[0].branches
    assert res[0].finish_reason == "stop" and res[0].text == text0[:text0.find(stop)]
    for k, (r, rr) in enumerate(zip(res, ref)):
        assert r.prompt == sample[0]["branches"][k]
        assert streamed.get(k, "") == r.text
        assert rr.token_ids[:len(r.token_ids)] == r.token_ids
        if stop in rr.text:
            assert r.finish_reason == "stop" and r.text == rr.text[:rr.text.find(stop)]
        else:
            assert (r.finish_reason, r.token_ids, r.text) == ("length", rr.token_ids, rr.text)


def test_on_step_reports_every_active_branch():
    model = tiny_minimind(seed=3)
    gen = ParallelGenerator(model, None)
    log = []
    res = gen.generate(SAMPLES, [[SamplingParams(max_new_tokens=n) for n in g] for g in LIMITS], eos_token_ids=NO_EOS,
                       on_step=lambda s, evs: log.append((s, [(e.sample, e.branch, e.token_id) for e in evs])))
    steps = [s for s, _ in log]
    assert steps == list(range(len(steps)))  # consecutive, each with at least one event
    # time-synchronous decoding: a branch with a longer prompt starts later, so steps >= the longest answer
    assert max(max(g) for g in LIMITS) <= len(steps) <= max(max(g) for g in LIMITS) + 6
    for g, smp in enumerate(res):
        for k, r in enumerate(smp.branches):
            assert [t for _, evs in log for (gg, kk, t) in evs if (gg, kk) == (g, k)] == r.token_ids


# --- sampling in the engine ----------------------------------------------------------------------

def test_seeds_and_per_branch_params():
    model = tiny_minimind(seed=3, tie_word_embeddings=False)
    gen = ParallelGenerator(model, None, mask_mode="isolated")
    sample = [{"branches": PROMPTS}]
    hot = SamplingParams(do_sample=True, temperature=1.0)

    def toks(res):
        return [r.token_ids for r in res[0].branches]
    a = toks(gen.generate(sample, hot, eos_token_ids=NO_EOS, max_new_tokens=10, seed=0))
    assert a == toks(gen.generate(sample, hot, eos_token_ids=NO_EOS, max_new_tokens=10, seed=0))
    assert a != toks(gen.generate(sample, hot, eos_token_ids=NO_EOS, max_new_tokens=10, seed=1))
    seeded = SamplingParams(do_sample=True, seed=0)  # no seed argument: the params' seed
    assert a == toks(gen.generate(sample, seeded, eos_token_ids=NO_EOS, max_new_tokens=10))
    greedy = toks(gen.generate(sample, eos_token_ids=NO_EOS, max_new_tokens=10))
    mixed = toks(gen.generate(sample, [[SamplingParams(), hot, hot]], eos_token_ids=NO_EOS, max_new_tokens=10,
                              seed=0))
    assert mixed[0] == greedy[0] and mixed[1:] != greedy[1:]


def test_bad_input_is_a_clear_error(tiny_tokenizer):
    model = tiny_minimind(vocab_size=len(tiny_tokenizer))
    gen = ParallelGenerator(model, tiny_tokenizer)
    with pytest.raises(ValueError, match="non-empty list"):
        gen.generate([])
    with pytest.raises(ValueError, match="sample 0: field 'branches'"):
        gen.generate([{"branches": []}])
    with pytest.raises(ValueError, match="empty"):
        gen.generate([{"branches": ["a dog", ""]}])
    with pytest.raises(ValueError, match="sampling"):
        gen.generate([{"branches": ["a dog"]}], [SamplingParams(), SamplingParams()])
    with pytest.raises(ValueError, match="mask mode"):
        ParallelGenerator(model, tiny_tokenizer, mask_mode="diagonal")


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
@pytest.mark.parametrize("scheme", ["additive", "reference"])
def test_time_offsets_and_groups_finishing_at_different_steps(mode, scheme):
    # explicit per-branch start offsets leave columns in which a row feeds nothing or only prompt tokens,
    # and one sample finishes long before the other (it is dropped from the batch mid-decode)
    samples = [{"main": [5, 6, 7], "branches": [{"input_ids": [10, 11], "time_offset": 4}, [20, 21, 22, 23],
                                                {"input_ids": [30], "time_offset": 2}]},
              {"branches": [{"input_ids": [40, 41, 42], "time_offset": 3}, [50]]}]
    limits = [[5, 2, 7], [1, 1]]
    model = make_model("minimind", None, scheme)
    gen = ParallelGenerator(model, None, mask_mode=mode, branch_stride=STRIDE)
    sampling = [[SamplingParams(max_new_tokens=n) for n in g] for g in limits]
    res = gen.generate(samples, sampling, eos_token_ids=NO_EOS, return_step_logits=True)
    assert [[r.num_new_tokens for r in g.branches] for g in res] == limits
    assert full_recompute_error(model, samples, res, mode, "left", False) <= 1e-4
