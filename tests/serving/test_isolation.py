"""Requests never see each other: concurrent requests answer exactly as alone, n samples equal n seeded requests,
the parallel extension equals the engine's own decoding of the sample, and requests share decode steps."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import tiny_minimind

from model.parallel_generation import ParallelGenerator
from serving.work import WorkBuilder
from tests.serving.conftest import MODEL, chat_body, start_live

QUESTIONS = ["the quick brown fox", "seven small birds sing", "numbers plus minus", "a lazy dog",
             "rivers and mountains", "branch parallel time", "question context answer", "jumps over"]


def ask(live, content: str, **kw) -> dict:
    r = live.post("/v1/chat/completions", chat_body(content, **kw))
    assert r.status_code == 200, r.text
    return r.json()


def test_concurrent_greedy_requests_equal_each_alone(live):
    kw = dict(max_tokens=24, temperature=0, ignore_eos=True)
    alone = [ask(live, q, **kw)["choices"][0]["message"]["content"] for q in QUESTIONS]
    steps0 = live.engine.steps
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: ask(live, q, **kw)["choices"][0]["message"]["content"], QUESTIONS))
    steps = live.engine.steps - steps0
    assert together == alone
    # continuous batching: the requests shared decode steps (one request alone takes 24 steps + its prefill)
    assert steps < 0.6 * len(QUESTIONS) * 25, steps


def test_n_samples_equal_n_independent_seeded_requests(live):
    kw = dict(max_tokens=12, temperature=0.9, top_p=0.95, top_k=50)
    r = ask(live, QUESTIONS[0], n=4, seed=100, **kw)
    singles = [ask(live, QUESTIONS[0], n=1, seed=100 + i, **kw) for i in range(4)]
    assert [c["message"]["content"] for c in r["choices"]] == [s["choices"][0]["message"]["content"] for s in singles]
    assert [c["finish_reason"] for c in r["choices"]] == [s["choices"][0]["finish_reason"] for s in singles]
    assert r["usage"]["prompt_tokens"] == singles[0]["usage"]["prompt_tokens"]
    assert r["usage"]["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)


def test_n_samples_share_one_prefill(live):
    """n choices are n branches of one sample: one prompt prefill (one row), not n."""
    fed = []
    emb = live.server.generator.model.get_input_embeddings()
    hook = emb.register_forward_hook(lambda m, a, o: fed.append(tuple(a[0].shape)))
    try:
        r = ask(live, QUESTIONS[1], n=6, seed=3, temperature=1.0, max_tokens=4, ignore_eos=True)
    finally:
        hook.remove()
    prompt = r["usage"]["prompt_tokens"]
    assert fed[0] == (1, prompt - 1 + 6)  # the prompt once (its last token in each of the 6 branches)
    assert all(s[0] == 1 and s[1] <= 6 for s in fed[1:])


def test_parallel_extension_equals_the_engine(live, tiny_loaded):
    """`parallel` with the columnar mask: the messages are the main, each question a branch of one sample."""
    tok = tiny_loaded.tokenizer
    body = {"model": MODEL, "messages": [{"role": "system", "content": "context about owls"}],
            "parallel": {"branches": QUESTIONS[:3], "mask": "columnar"}, "max_tokens": 10, "temperature": 0,
            "ignore_eos": True}
    r = live.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    out = r.json()
    render = lambda m, g: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g)  # noqa: E731
    sample = {"main": render(body["messages"], False),
              "branches": [render([{"role": "user", "content": q}], True) for q in QUESTIONS[:3]]}
    gen = ParallelGenerator(tiny_loaded.model, tok, mask_mode="columnar")
    assert gen.branch_stride == tiny_loaded.branch_stride == 16  # read from the checkpoint
    ref = gen.generate([sample], eos_token_ids=[], max_new_tokens=10)[0]
    assert [c["message"]["content"] for c in out["choices"]] == [b.text for b in ref.branches]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    # isolated: each branch sees the main and itself only
    body["parallel"]["mask"] = "isolated"
    iso = live.post("/v1/chat/completions", body).json()
    gen_iso = ParallelGenerator(tiny_loaded.model, tok, mask_mode="isolated")
    ref_iso = gen_iso.generate([sample], eos_token_ids=[], max_new_tokens=10)[0]
    assert [c["message"]["content"] for c in iso["choices"]] == [b.text for b in ref_iso.branches]
    # completions: the prompt is the main, raw branches
    comp = live.post("/v1/completions", {"model": MODEL, "prompt": "the fox context", "max_tokens": 6,
                                         "temperature": 0, "ignore_eos": True,
                                         "parallel": {"branches": ["q one", "q two"]}}).json()
    ref_c = gen.generate([{"main": "the fox context", "branches": ["q one", "q two"]}], eos_token_ids=[],
                         max_new_tokens=6)[0]
    assert [c["text"] for c in comp["choices"]] == [b.text for b in ref_c.branches]


def test_parallel_streams_every_branch(live):
    import json

    body = {"model": MODEL, "prompt": "the fox context", "max_tokens": 5, "temperature": 0, "ignore_eos": True,
            "stream": True, "parallel": {"branches": ["q one", "q two", "q three"], "mask": "columnar"}}
    r = live.post("/v1/completions", body)
    events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    full = live.post("/v1/completions", {**body, "stream": False}).json()
    for i in range(3):
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == full["choices"][i]["text"]
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["length"]


@pytest.fixture(scope="module")
def reference_scheme_live(tiny_tokenizer):
    """A model whose 2D-RoPE scheme reads the flat index: no prefix sharing, n samples of one branch instead."""
    from model.loading import LoadedModel

    model = tiny_minimind(seed=9, vocab_size=len(tiny_tokenizer), rope_2d_scheme="reference")
    loaded = LoadedModel(model, tiny_tokenizer, "minimind", 16, "reference", 0.5, "rope", "memory")
    srv = start_live(loaded, key=None)
    yield srv
    srv.stop()


def test_n_samples_without_prefix_sharing(reference_scheme_live):
    live = reference_scheme_live
    assert isinstance(live.server.builder, WorkBuilder) and not live.server.builder.prefix_sharing
    kw = dict(max_tokens=8, temperature=1.0)
    r = ask(live, QUESTIONS[2], n=3, seed=42, **kw)
    singles = [ask(live, QUESTIONS[2], seed=42 + i, **kw)["choices"][0]["message"]["content"] for i in range(3)]
    assert [c["message"]["content"] for c in r["choices"]] == singles
    assert len(set(singles)) == 3
