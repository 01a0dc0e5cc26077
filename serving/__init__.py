"""OpenAI-compatible serving on the parallel generation engine (see docs/SERVING.md).

* `serving.engine`: the engine thread around `ParallelGenerator.session()` (continuous batching of
  branches), jobs and their updates;
* `serving.work`: requests -> session samples (n choices = n branches of one sample sharing the prompt),
  and the per-request limits;
* `serving.protocol`: the OpenAI request models, error body and response pieces;
* `serving.reasoning`: `<think>` -> `reasoning_content`;
* `serving.app`: the FastAPI app (routes, authentication, server-sent events);
* `serving.server`: build everything from the command-line flags and run uvicorn.

Run it with `python scripts/serve_openai_api.py --model_path out/full_sft_512.pth`.
"""
