"""The official `openai` client against a live server: chat, completions, streaming, usage, n, seeds, auth."""

from __future__ import annotations

import openai
import pytest

from model.parallel_generation import ParallelGenerator
from parallel.sampling import SamplingParams

MESSAGES = [{"role": "system", "content": "you answer briefly"}, {"role": "user", "content": "the quick brown fox"}]


def test_models_list_and_health(live):
    client = live.openai()
    ids = [m.id for m in client.models.list()]
    assert ids == [live.model]
    assert client.models.retrieve(live.model).id == live.model
    health = live.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_wrong_or_missing_key_is_401_but_health_is_open(live):
    bad = openai.OpenAI(base_url=live.base, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=2)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    import httpx

    r = httpx.post(live.base + "/completions", json={"prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(live.url + "/health").status_code == 200


def test_chat_greedy_equals_the_engine_and_counts_usage(live, tiny_loaded):
    client = live.openai()
    r = client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == live.model
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    # the oracle: the generation engine on the rendered prompt, alone
    tok = tiny_loaded.tokenizer
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    gen = ParallelGenerator(tiny_loaded.model, tok, mask_mode="isolated", branch_stride=0)
    (ref,) = gen.generate([{"branches": [ids]}], SamplingParams(), max_new_tokens=12)[0].branches
    assert choice.message.content == ref.text
    eos = 1 if ref.finish_reason == "eos" else 0
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(ref.token_ids) + eos
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions_text_and_token_prompts(live):
    client = live.openai()
    r = client.completions.create(model=live.model, prompt="seven small birds", max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    ids = live.server.builder.encode("seven small birds")
    r2 = client.completions.create(model=live.model, prompt=ids, max_tokens=6, temperature=0,
                                   extra_body={"ignore_eos": True})
    assert r2.choices[0].text == r.choices[0].text and r2.usage.prompt_tokens == len(ids)
    echo = client.completions.create(model=live.model, prompt="seven small birds", max_tokens=6, temperature=0,
                                     echo=True, extra_body={"ignore_eos": True})
    assert echo.choices[0].text == "seven small birds" + r.choices[0].text
    # several prompts: choices prompt by prompt, each prompt counted once
    many = client.completions.create(model=live.model, prompt=["seven small birds", "a lazy dog"], n=2,
                                     max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text == r.choices[0].text[:len(many.choices[0].text)]
    assert many.usage.prompt_tokens == len(ids) + len(live.server.builder.encode("a lazy dog"))
    assert many.usage.completion_tokens == 16


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_streaming_equals_non_streaming(live, include_usage):
    client = live.openai()
    full = client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=10, temperature=0)
    kw = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=10,
                                                 temperature=0, stream=True, **kw))
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert text == full.choices[0].message.content and finishes == [full.choices[0].finish_reason]
    assert with_choices[-1].choices[0].finish_reason is not None  # the finish comes last
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == full.usage.model_dump()
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None for c in chunks)


def test_completions_streaming(live):
    client = live.openai()
    full = client.completions.create(model=live.model, prompt="the lazy dog", max_tokens=8, temperature=0)
    chunks = list(client.completions.create(model=live.model, prompt="the lazy dog", max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_n3_with_a_seed_is_distinct_and_reproducible(live):
    client = live.openai()

    def ask():
        r = client.chat.completions.create(model=live.model, messages=MESSAGES, n=3, seed=1234, temperature=1.0,
                                           max_tokens=10)
        return r, [c.message.content for c in r.choices]
    r, texts = ask()
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert ask()[1] == texts
    # the prompt is counted once, however large n is
    one = client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=1)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens


def test_n2_streamed_one_finish_reason_per_choice(live):
    client = live.openai()
    chunks = list(client.chat.completions.create(model=live.model, messages=MESSAGES, n=2, seed=7, temperature=1.0,
                                                 max_tokens=8, stream=True))
    full = client.chat.completions.create(model=live.model, messages=MESSAGES, n=2, seed=7, temperature=1.0,
                                          max_tokens=8)
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert mine[0].delta.role == "assistant"
        assert sum(1 for c in mine if c.finish_reason is not None) == 1 and mine[-1].finish_reason is not None
        assert "".join(c.delta.content or "" for c in mine) == full.choices[i].message.content
    assert all(len(c.choices) == 1 for c in chunks)


def test_logprobs_are_the_models_distribution(live, tiny_loaded):
    import torch

    client = live.openai()
    r = client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 5 == r.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy picks the most likely
    # the first token's logprob from a plain forward over the prompt
    tok = tiny_loaded.tokenizer
    ids = tok(tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = tiny_loaded.model(torch.tensor([ids])).logits[0, -1]
    lp = torch.log_softmax(logits.float(), -1)
    assert content[0].logprob == pytest.approx(float(lp.max()), abs=1e-4)
    streamed = list(client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=5, temperature=0,
                                                   logprobs=True, stream=True, extra_body={"ignore_eos": True}))
    lps = [e.logprob for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert lps == pytest.approx([e.logprob for e in content], abs=1e-5)
    comp = client.completions.create(model=live.model, prompt="the fox", max_tokens=3, temperature=0, logprobs=2,
                                     extra_body={"ignore_eos": True})
    lp_c = comp.choices[0].logprobs
    assert len(lp_c.tokens) == len(lp_c.token_logprobs) == len(lp_c.top_logprobs) == 3
    assert "".join(lp_c.tokens) == comp.choices[0].text and lp_c.text_offset[0] == 0


def test_reasoning_content_from_a_thinking_template(live):
    """A template whose generation prompt opens <think> (Qwen3-style): the answer up to </think> is reasoning."""
    tok = live.server.builder.tok
    original = tok.chat_template
    tok.chat_template = original + "{% if add_generation_prompt %}{{ '<think>\\n' }}{% endif %}"
    try:
        client = live.openai()
        r = client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=8, temperature=0,
                                           extra_body={"ignore_eos": True})
        msg = r.choices[0].message
        chunks = list(client.chat.completions.create(model=live.model, messages=MESSAGES, max_tokens=8,
                                                     temperature=0, stream=True, extra_body={"ignore_eos": True}))
    finally:
        tok.chat_template = original
    # the random model never closes the think block: all of it is reasoning
    assert msg.content == "" and msg.reasoning_content and len(msg.reasoning_content) > 0
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == msg.reasoning_content
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks)
