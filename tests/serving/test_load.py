"""Bounded load on a live server: 32 concurrent streaming clients, no lost or mixed-up answers; clients that
abandon their streams free their branches at once and the server keeps answering."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.serving.conftest import MODEL

PROMPTS = [f"question {i}: the quick brown fox and {w}" for i, w in enumerate(
    ["owls", "rivers", "seven birds", "numbers", "mountains", "a lazy dog", "parallel time", "answers"])]
KW = {"max_tokens": 12, "temperature": 0, "extra_body": {"ignore_eos": True}}


def test_32_concurrent_streaming_clients(live):
    client = live.openai()
    expected = {p: client.completions.create(model=MODEL, prompt=p, **KW).choices[0].text for p in PROMPTS}
    aclient = live.async_openai()
    sem = asyncio.Semaphore(32)
    active, peak = 0, 0

    async def one(i: int) -> tuple[str, str, list]:
        nonlocal active, peak
        prompt = PROMPTS[i % len(PROMPTS)]
        async with sem:
            active += 1
            peak = max(peak, active)
            stream = await aclient.completions.create(model=MODEL, prompt=prompt, stream=True, **KW)
            text, finishes, ids = [], [], set()
            async for chunk in stream:
                ids.add(chunk.id)
                for c in chunk.choices:
                    assert c.index == 0
                    text.append(c.text)
                    if c.finish_reason:
                        finishes.append(c.finish_reason)
            active -= 1
            assert len(ids) == 1
            return prompt, "".join(text), finishes

    async def main():
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(64))), timeout=120)
        finally:
            await aclient.close()
    results = asyncio.run(main())
    assert len(results) == 64 and peak == 32
    for prompt, text, finishes in results:
        assert text == expected[prompt], prompt
        assert finishes == ["length"]
    assert live.engine.stats()["running_requests"] == 0


def test_abandoned_streams_free_their_branches(live):
    body = {"model": MODEL, "prompt": "the quick brown fox", "max_tokens": 256, "temperature": 0, "ignore_eos": True,
            "stream": True}

    async def abandon(client: httpx.AsyncClient):
        async with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    return  # leave after the first chunk: the connection closes

    async def main():
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=live.url, headers=live.headers(), timeout=30, limits=limits) as client:
            await asyncio.gather(*(abandon(client) for _ in range(20)))
    steps0 = live.engine.steps
    asyncio.run(main())
    t0 = time.monotonic()
    r = live.post("/v1/completions", {"model": MODEL, "prompt": "a lazy dog", "max_tokens": 4}, timeout=5)
    assert r.status_code == 200 and time.monotonic() - t0 < 5
    deadline = time.monotonic() + 5
    while live.engine.stats()["running_requests"] or live.engine.session.num_rows:
        assert time.monotonic() < deadline, live.engine.stats()
        time.sleep(0.05)
    assert live.engine.stats()["waiting_requests"] == 0
    # the 20 streams of 256 tokens were cancelled, not decoded to the end
    assert live.engine.steps - steps0 < 200, live.engine.steps - steps0
