"""Live servers for the serving tests: tiny local models behind the real app, on 127.0.0.1, free ports.

Each server runs the real uvicorn server in a background thread of the test process (so a test can
look at the engine), and is always shut down by its fixture's finalizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import tiny_minimind

from model.checkpoint import save_checkpoint
from model.loading import load_parallel_model
from serving.app import ServerConfig
from serving.listen import RunningServer, start_in_thread
from serving.server import Server, build_server
from serving.work import Limits

KEY = "sk-test-key"
MODEL = "tiny-minimind"


@dataclass
class Live:
    running: RunningServer
    server: Server
    key: str | None
    model: str = MODEL
    clients: list = field(default_factory=list)
    _http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def base(self) -> str:
        return self.running.url + "/v1"

    @property
    def engine(self):
        return self.server.engine

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def openai(self, **kw):
        import openai

        client = openai.OpenAI(base_url=self.base, api_key=self.key or "none", max_retries=0, timeout=60, **kw)
        self.clients.append(client)
        return client

    def async_openai(self, **kw):
        import openai

        return openai.AsyncOpenAI(base_url=self.base, api_key=self.key or "none", max_retries=0, timeout=120, **kw)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:  # one client: building one costs more than a request
            self._http = httpx.Client(base_url=self.url, timeout=60)
        return self._http

    def post(self, path: str, json=None, *, content=None, headers=None, timeout: float = 60.0) -> httpx.Response:
        h = {**self.headers(), **(headers or {})}
        return self.http.post(path, json=json, content=content, headers=h, timeout=timeout)

    def get(self, path: str, *, headers=None) -> httpx.Response:
        return self.http.get(path, headers={**self.headers(), **(headers or {})})

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        if self._http is not None:
            self._http.close()
        self.running.stop()
        self.server.engine.close()


def start_live(loaded, *, key: str | None = KEY, model: str = MODEL, max_concurrent: int = 64, max_running: int = 0,
               web_demo: bool = False, **limits) -> Live:
    lim = Limits(**{"max_prompt_tokens": 256, "max_tokens": 256, "default_max_tokens": 16, "max_n": 8, **limits})
    config = ServerConfig(model_name=model, api_key=key, max_body_bytes=64 * 1024,
                          max_concurrent_requests=max_concurrent, web_demo=web_demo)
    server = build_server(loaded, config, lim, max_running=max_running)
    return Live(start_in_thread(server.app), server, key, model)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models decode fastest on one thread, and two threads on a busy 2-core machine spin each other out."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def tiny_ckpt(tmp_path_factory, tiny_tokenizer) -> Path:
    """A MiniMind checkpoint (weights, config, tokenizer with the ChatML template) as training writes it."""
    path = tmp_path_factory.mktemp("serve_ckpt") / "tiny.pth"
    save_checkpoint(path, tiny_minimind(seed=5, vocab_size=len(tiny_tokenizer), tie_word_embeddings=False), tokenizer=tiny_tokenizer)
    return path


@pytest.fixture(scope="package")
def tiny_loaded(tiny_ckpt):
    return load_parallel_model(model_path=str(tiny_ckpt))


@pytest.fixture(scope="package")
def live(tiny_loaded):
    """The shared server: API key required, small limits (see start_live)."""
    srv = start_live(tiny_loaded)
    yield srv
    srv.stop()


def chat_body(content: str, **kw) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **kw}
