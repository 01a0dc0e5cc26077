"""Assemble the server from a loaded model and run it with uvicorn (used by scripts/serve_openai_api.py and tests).

    loaded = load_parallel_model(model_path="out/full_sft_512.pth")
    server = build_server(loaded, ServerConfig(model_name="full_sft_512"), Limits())
    sock = bind("127.0.0.1", 6006)        # serving.listen; the CLI binds before the model loads
    run(server.app, sock)                 # until SIGINT / SIGTERM; the engine stops with the app
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from model.parallel_generation import ParallelGenerator
from serving.app import ServerConfig, create_app
from serving.engine import ServingEngine
from serving.work import Limits, WorkBuilder


@dataclass
class Server:
    app: FastAPI
    engine: ServingEngine
    builder: WorkBuilder
    generator: ParallelGenerator


def context_length(model) -> int | None:
    """The longest sequence the model's positions cover (config.max_position_embeddings), if it says."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def build_server(loaded, config: ServerConfig, limits: Limits, *, parallel_mask: str = "columnar",
                 align_to: str = "left", max_running: int = 0) -> Server:
    """The app over a `model.loading.LoadedModel`: the generator (isolated mask for independent requests,
    the model's own branch stride for `parallel` requests), the engine thread (started) and the limits."""
    loaded.model.eval()
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode="isolated", align_to=align_to)
    if limits.context_length is None:
        limits.context_length = context_length(loaded.model)
    engine = ServingEngine(gen, max_running=max_running).start()
    builder = WorkBuilder(gen, limits, parallel_mask=parallel_mask)
    return Server(create_app(engine, builder, config), engine, builder, gen)
