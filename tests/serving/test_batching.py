"""Continuous batching of branches on a live server: concurrent requests share decode steps, a request that
arrives while another decodes joins it between steps and leaves when done, and each answer is what the
request returns alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.serving.conftest import MODEL, start_live

GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
LONG = 240  # tokens of the long request: it runs far longer than the short one's round trip
PROMPTS = ["the quick brown fox", "a lazy dog", "seven small birds", "numbers and owls", "rivers in the east",
           "a song of time", "mountains and rain", "parallel answers"]


def test_concurrent_requests_share_decode_steps(live):
    client = live.openai()
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=16, **GREEDY).choices[0].text
             for p in PROMPTS]
    aclient = live.async_openai()

    async def main():
        try:
            return await asyncio.gather(*(aclient.completions.create(model=MODEL, prompt=p, max_tokens=16, **GREEDY)
                                          for p in PROMPTS))
        finally:
            await aclient.close()
    steps0 = live.engine.steps
    out = asyncio.run(main())
    steps = live.engine.steps - steps0
    assert [r.choices[0].text for r in out] == alone
    # one request at a time needs 8 x 16 forwards (a prefill, then one step per further token); together the
    # 8 requests decode in the same steps (16 + one prefill step per arrival when they arrive together; the
    # bound leaves room for arrivals spread over a busy machine's scheduling)
    assert steps < len(PROMPTS) * 16 // 2, steps


@pytest.fixture(scope="module")
def one_at_a_time(tiny_loaded):
    """--max_running_requests 1: the baseline of scripts/bench_serve.py."""
    srv = start_live(tiny_loaded, key=None, max_running=1)
    yield srv
    srv.stop()


@pytest.mark.parametrize("mode", ["batched", "one_at_a_time"])
def test_a_request_joins_a_running_one_and_leaves_first(mode, request):
    """Shipped: a short request joins a long one's batch and is answered first. With --max_running_requests 1
    it waits until the long one is done. Both answers equal each request alone."""
    live = request.getfixturevalue("live" if mode == "batched" else "one_at_a_time")
    client = live.openai()
    long_alone = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=LONG, **GREEDY).choices[0].text
    short_alone = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=4, **GREEDY).choices[0].text
    started, pieces = threading.Event(), []

    def long_request():
        stream = live.openai().completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=LONG, stream=True,
                                                  **GREEDY)
        for chunk in stream:
            pieces.extend(c.text for c in chunk.choices)
            if len(pieces) >= 3:
                started.set()

    t = threading.Thread(target=long_request)
    t.start()
    try:
        assert started.wait(60)
        short = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=4, **GREEDY)
        still_running = live.engine.stats()["running_requests"]  # the long request, if it is still decoding
    finally:
        t.join(120)
    assert short.choices[0].text == short_alone and short.choices[0].finish_reason == "length"
    assert "".join(pieces) == long_alone
    assert still_running == (1 if mode == "batched" else 0)
