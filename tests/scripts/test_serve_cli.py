"""The serving entry points as a user runs them: the MiniLLM seed's server command (scripts/serve_openai_api.py),
the terminal chat client with piped input, the standalone web demo, and a clean shutdown on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import tiny_minimind

from model.checkpoint import save_checkpoint
from scripts import chat_openai_api, serve_openai_api, web_demo

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-cli-test"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "PYTHONWARNINGS": "ignore"}
SEED_001 = "--model_path {ckpt} --tokenizer_path {tok} --port {port} --use_moe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url, timeout=1).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def moe_ckpt(tmp_path_factory, tiny_tokenizer, tiny_tokenizer_dir):
    path = tmp_path_factory.mktemp("serve_cli") / "full_sft_64_moe.pth"
    save_checkpoint(path, tiny_minimind(seed=2, vocab_size=len(tiny_tokenizer), use_moe=True), tokenizer=tiny_tokenizer)
    return path


@pytest.fixture(scope="module")
def server(moe_ckpt, tiny_tokenizer_dir):
    """The seed command, plus an API key (from the environment), one thread and the web page."""
    port = free_port()
    args = SEED_001.format(ckpt=moe_ckpt, tok=tiny_tokenizer_dir, port=port).split()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/serve_openai_api.py"), *args, "--threads", "1",
                             "--web_demo", "--max_new_tokens", "16", "--log_level", "warning"],
                            env={**ENV, "PARALLELMIND_API_KEY": KEY}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/health", proc)
        yield url, proc
    finally:
        stop(proc)


def test_seed_command_parses_as_written(moe_ckpt, tiny_tokenizer_dir):
    a = serve_openai_api.build_parser().parse_args(
        SEED_001.format(ckpt=moe_ckpt, tok=tiny_tokenizer_dir, port=6006).split())
    assert (a.model_path, a.tokenizer, a.port, a.use_moe) == (str(moe_ckpt), str(tiny_tokenizer_dir), 6006, True)
    assert a.host == "127.0.0.1"  # safe by default


def test_server_answers_with_the_key_only(server):
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["full_sft_64_moe"]
    r = client.chat.completions.create(model="full_sft_64_moe", messages=[{"role": "user", "content": "hi"}],
                                       n=2, seed=0, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1] and r.usage.completion_tokens <= 32  # --max_new_tokens 16 each
    assert httpx.get(url + "/v1/models").status_code == 401
    page = httpx.get(url + "/demo")
    assert page.status_code == 200 and "ParallelMind" in page.text


def _chat(url: str, stdin: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/chat_openai_api.py"), "--base_url", url + "/v1",
                           "--max_new_tokens", "8", *flags], input=stdin, env={**ENV, "PARALLELMIND_API_KEY": KEY},
                          capture_output=True, text=True, timeout=120)


def test_chat_client_keeps_the_history(server):
    import openai

    url, _ = server
    out = _chat(url, "the quick brown fox\n\n/reset\nseven small birds\nand then\n", "--show_speed")
    assert out.returncode == 0, out.stderr
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)

    def answer(messages):
        return client.chat.completions.create(model="full_sft_64_moe", messages=messages, max_tokens=8,
                                              temperature=0).choices[0].message.content
    a1 = answer([{"role": "user", "content": "the quick brown fox"}])
    # after /reset the history starts again
    a2 = answer([{"role": "user", "content": "seven small birds"}])
    a3 = answer([{"role": "user", "content": "seven small birds"}, {"role": "assistant", "content": a2},
                 {"role": "user", "content": "and then"}])
    assert out.stdout == f"{a1}\n{a2}\n{a3}\n"
    assert out.stderr.count("tokens/s]") == 3


def _chat_in_process(monkeypatch, capsys, url: str, stdin: str, *flags: str) -> tuple[int, str, str]:
    import io

    monkeypatch.setenv("PARALLELMIND_API_KEY", KEY)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = chat_openai_api.main(["--base_url", url + "/v1", "--max_new_tokens", "8", *flags])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_chat_client_sampling_with_a_seed(server, monkeypatch, capsys):
    import openai

    url, _ = server
    rc, out, _ = _chat_in_process(monkeypatch, capsys, url, "hello there\n", "--do_sample", "--temperature", "1.0",
                                  "--top_k", "40", "--seed", "3", "--no_stream")
    assert rc == 0
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    r = client.chat.completions.create(model="full_sft_64_moe", messages=[{"role": "user", "content": "hello there"}],
                                       max_tokens=8, temperature=1.0, top_p=0.85, seed=3, extra_body={"top_k": 40})
    assert out == r.choices[0].message.content + "\n"


def test_chat_client_errors(server, monkeypatch, capsys):
    url, _ = server
    rc, _, err = _chat_in_process(monkeypatch, capsys, url, "hi\n", "--api_key", "wrong")
    assert rc == 2 and "refused the API key" in err and "Traceback" not in err
    # a turn the server refuses is reported in one line, and the chat goes on
    rc, out, err = _chat_in_process(monkeypatch, capsys, url, "x\n", "--max_new_tokens", "100000")
    assert rc == 0 and "max_tokens 100000 is more than" in err
    rc, _, err = _chat_in_process(monkeypatch, capsys, "http://127.0.0.1:1", "hi\n")
    assert rc == 2 and "cannot reach the server" in err


def test_standalone_web_demo_forwards_with_the_key(server):
    url, _ = server
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/web_demo.py"), "--base_url", url + "/v1",
                             "--port", str(port), "--log_level", "warning"],
                            env={**ENV, "PARALLELMIND_API_KEY": KEY}, stderr=subprocess.PIPE, text=True)
    demo = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(demo + "/", proc)
        assert "ParallelMind" in httpx.get(demo + "/").text
        assert httpx.get(demo + "/v1/models").json()["data"][0]["id"] == "full_sft_64_moe"
        body = {"model": "full_sft_64_moe", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
                "temperature": 0}
        via = httpx.post(demo + "/v1/chat/completions", json=body, timeout=60).json()
        direct = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                            timeout=60).json()
        assert via["choices"][0]["message"] == direct["choices"][0]["message"]
        streamed = httpx.post(demo + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text
        assert streamed.rstrip().endswith("data: [DONE]")
        assert httpx.get(demo + "/v1/nope").status_code == 404
    finally:
        assert stop(proc) == 130  # interrupted


def test_entry_points_have_main():
    for module in (serve_openai_api, chat_openai_api, web_demo):
        assert callable(module.main) and module.main.build_parser().prog


def test_ctrl_c_stops_the_server_cleanly(server):
    """Last: stops the module's server. SIGINT -> shutdown, exit status 130 (interrupted), no traceback."""
    url, proc = server
    port = int(url.rsplit(":", 1)[1])
    assert stop(proc) == 130
    err = proc.stderr.read()
    assert "Traceback" not in err and f"at http://127.0.0.1:{port}/v1 (API key required); web demo at" in err
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
