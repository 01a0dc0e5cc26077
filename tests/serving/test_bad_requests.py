"""Bad requests of every kind: the documented status, an OpenAI error body naming the parameter, and the
server keeps serving."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.serving.conftest import MODEL, chat_body, start_live

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def comp(**kw):
    return {"model": MODEL, "prompt": "the fox", **kw}


# (id, path, body (dict) or raw bytes, status, code, param)
CASES = [
    ("malformed-json", CHAT, b'{"messages": [', 400, "invalid_json", None),
    ("not-an-object", CHAT, b"[1, 2]", 400, "invalid_json", None),
    ("nan-literal", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400,
     "invalid_json", None),
    ("invalid-utf8", CHAT, b'{"messages": "\xff\xfe"}', 400, "invalid_json", None),
    ("empty-body", CHAT, b"", 400, "invalid_json", None),
    ("missing-messages", CHAT, {"model": MODEL}, 400, "invalid_value", "messages"),
    ("empty-messages", CHAT, {"model": MODEL, "messages": []}, 400, "invalid_value", "messages"),
    ("bad-role", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value", "messages.0.role"),
    ("image-part", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "invalid_value", "messages.0.content"),
    ("prompt-a-dict", COMP, comp(prompt={"text": "x"}), 400, "invalid_value", "prompt"),
    ("branch-a-number", CHAT, chat_body("hi", parallel={"branches": [5]}), 400, "invalid_value", "parallel.branches.0"),
    ("messages-not-a-list", CHAT, {"messages": "hi"}, 400, "invalid_value", "messages"),
    ("unknown-parameter", CHAT, chat_body("hi", tools=[{"type": "function"}]), 400, "unsupported_parameter", "tools"),
    ("response-format", CHAT, chat_body("hi", response_format={"type": "json_object"}), 400, "unsupported_parameter",
     "response_format"),
    ("temperature-too-high", CHAT, chat_body("hi", temperature=3), 400, "invalid_value", "temperature"),
    ("temperature-a-string", CHAT, chat_body("hi", temperature="hot"), 400, "invalid_value", "temperature"),
    ("top-p-zero", CHAT, chat_body("hi", top_p=0), 400, "invalid_value", "top_p"),
    ("top-k-negative", CHAT, chat_body("hi", top_k=-5), 400, "invalid_value", "top_k"),
    ("n-zero", CHAT, chat_body("hi", n=0), 400, "invalid_value", "n"),
    ("n-above-max", CHAT, chat_body("hi", n=9), 400, "invalid_value", "n"),
    ("max-tokens-zero", CHAT, chat_body("hi", max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("max-tokens-above-limit", CHAT, chat_body("hi", max_tokens=257), 400, "invalid_value", "max_tokens"),
    ("max-tokens-disagree", CHAT, chat_body("hi", max_tokens=3, max_completion_tokens=4), 400, "invalid_value", "max_tokens"),
    ("prompt-too-long", CHAT, chat_body("the quick brown fox " * 80), 400, "context_length_exceeded", "messages"),
    ("stream-options-without-stream", CHAT, chat_body("hi", stream_options={"include_usage": True}), 400,
     "invalid_value", "stream_options"),
    ("top-logprobs-without-logprobs", CHAT, chat_body("hi", top_logprobs=2), 400, "invalid_value", "top_logprobs"),
    ("top-logprobs-too-many", CHAT, chat_body("hi", logprobs=True, top_logprobs=21), 400, "invalid_value",
     "top_logprobs"),
    ("presence-penalty", CHAT, chat_body("hi", presence_penalty=0.5), 400, "invalid_value", "presence_penalty"),
    ("seed-negative", CHAT, chat_body("hi", seed=-1), 400, "invalid_value", "seed"),
    ("stop-too-many", CHAT, chat_body("hi", stop=["a"] * 17), 400, "invalid_value", "stop"),
    ("stop-empty-string", CHAT, chat_body("hi", stop=[""]), 400, "invalid_value", "stop"),
    ("unknown-model", CHAT, chat_body("hi") | {"model": "gpt-4"}, 404, "model_not_found", "model"),
    ("parallel-with-n", CHAT, chat_body("hi", n=2, parallel={"branches": ["a", "b"]}), 400, "invalid_value", "n"),
    ("parallel-bad-mask", CHAT, chat_body("hi", parallel={"branches": ["a"], "mask": "diagonal"}), 400,
     "invalid_value", "parallel.mask"),
    ("parallel-too-many-branches", CHAT, chat_body("hi", parallel={"branches": ["q"] * 9}), 400, "invalid_value",
     "parallel.branches"),
    ("parallel-no-branches", CHAT, chat_body("hi", parallel={"branches": []}), 400, "invalid_value",
     "parallel.branches"),
    ("completion-missing-prompt", COMP, {"model": MODEL}, 400, "invalid_value", "prompt"),
    ("completion-empty-prompt", COMP, comp(prompt=""), 400, "invalid_value", "prompt"),
    ("completion-empty-list", COMP, comp(prompt=[]), 400, "invalid_value", "prompt"),
    ("completion-token-out-of-vocab", COMP, comp(prompt=[1, 2, 999999]), 400, "invalid_value", "prompt"),
    ("completion-suffix", COMP, comp(suffix="x"), 400, "invalid_value", "suffix"),
    ("completion-best-of", COMP, comp(best_of=3), 400, "invalid_value", "best_of"),
    ("completion-logprobs-too-many", COMP, comp(logprobs=50), 400, "invalid_value", "logprobs"),
    ("completion-too-many-prompts", COMP, comp(prompt=["a"] * 5, n=2), 400, "invalid_value", "n"),
    ("completion-parallel-needs-a-string", COMP, comp(prompt=["a", "b"], parallel={"branches": ["x"]}), 400,
     "invalid_value", "prompt"),
    ("frequency-penalty", COMP, comp(frequency_penalty=1), 400, "invalid_value", "frequency_penalty"),
]


def _send(live, path, body, headers=None):
    if isinstance(body, bytes):
        return live.post(path, content=body, headers={"Content-Type": "application/json", **(headers or {})})
    return live.post(path, body, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_bad_request(live, case):
    _, path, body, status, code, param = case
    r = _send(live, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert err["code"] == code, err
    assert err["param"] == param, err


def test_the_server_stays_up_after_every_bad_request(live):
    for _, path, body, *_ in CASES:
        _send(live, path, body)
    assert live.get("/health").json()["status"] == "ok"
    r = live.post(CHAT, chat_body("hi", max_tokens=3))
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_body_too_large_is_413(live):
    big = json.dumps(chat_body("x" * (70 * 1024))).encode()
    r = _send(live, CHAT, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is checked while reading
        for _ in range(80):
            yield b" " * 1024
    r = httpx.post(live.base + "/chat/completions", content=chunks(), headers=live.headers())
    assert r.status_code == 413


def test_unknown_routes_and_methods(live):
    r = live.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = live.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = live.get("/v1/models/other")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert live.get("/demo").status_code == 404  # the page is served only with --web_demo


def test_missing_and_malformed_authorization(live):
    for headers in ({"Authorization": ""}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"},
                    {"Authorization": f"Bearer {live.key}x"}):
        r = httpx.post(live.base + "/chat/completions", json=chat_body("hi"), headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", headers
    assert httpx.get(live.base + "/models").status_code == 401


LONG = 4096  # max_tokens of the request a client abandons


@pytest.fixture(scope="module")
def one_slot(tiny_loaded):
    srv = start_live(tiny_loaded, key=None, max_concurrent=1, max_tokens=LONG)
    yield srv
    srv.stop()


def test_too_many_concurrent_requests_is_429(one_slot):
    body = {"model": MODEL, "prompt": "the fox", "max_tokens": 256, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.Client(base_url=one_slot.url, timeout=30) as client, client.stream("POST", COMP, json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        busy = one_slot.post(COMP, comp(max_tokens=2))
        assert busy.status_code == 429
        assert busy.json()["error"] == {"message": busy.json()["error"]["message"], "type": "rate_limit_error",
                                        "param": None, "code": "too_many_requests"}
    deadline = time.monotonic() + 5  # the stream was closed: its slot comes back
    while one_slot.post(COMP, comp(max_tokens=2)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_failing_step_is_a_500_and_the_engine_recovers(one_slot):
    engine = one_slot.engine
    real = type(engine.session).step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device error")
        return real(self)
    type(engine.session).step = flaky
    try:
        r = one_slot.post(COMP, comp(max_tokens=3))
        assert r.status_code == 500 and "simulated device error" in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "server_error"
        ok = one_slot.post(COMP, comp(max_tokens=3))
        assert ok.status_code == 200, ok.text
        assert one_slot.get("/health").status_code == 200
    finally:
        type(engine.session).step = real


def test_a_dead_engine_is_503_on_health_and_requests(tiny_loaded):
    srv = start_live(tiny_loaded, key=None)
    try:
        session_cls = type(srv.engine.session)
        real = session_cls.step

        def broken(self):
            raise RuntimeError("the device is gone")
        session_cls.step = broken
        try:
            for _ in range(3):  # MAX_CONSECUTIVE_FAILURES steps in a row stop the engine
                r = srv.post(COMP, comp(max_tokens=2))
                assert r.status_code in (500, 503)
        finally:
            session_cls.step = real
        deadline = time.monotonic() + 5
        while srv.engine.alive:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        h = srv.get("/health")
        assert h.status_code == 503 and h.json()["error"]["code"] == "engine_unavailable"
        r = srv.post(COMP, comp(max_tokens=2))
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        assert srv.get("/v1/models").status_code == 200  # the HTTP side still answers
    finally:
        srv.stop()


def test_a_client_that_leaves_a_non_streaming_request_cancels_it(one_slot):
    # LONG tokens take seconds even on a fast machine; the client leaves after 0.3 s
    body = {"model": MODEL, "prompt": "the fox", "max_tokens": LONG, "temperature": 0, "ignore_eos": True}
    done = threading.Event()

    def leave_early():
        try:
            httpx.post(one_slot.url + COMP, json=body, timeout=0.3)
        except httpx.TimeoutException:
            pass
        done.set()
    steps0 = one_slot.engine.steps
    t = threading.Thread(target=leave_early)
    t.start()
    t.join(10)
    deadline = time.monotonic() + 5
    while one_slot.engine.stats()["running_requests"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert done.is_set() and one_slot.engine.steps - steps0 < LONG
