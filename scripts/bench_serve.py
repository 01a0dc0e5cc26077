"""Benchmark the OpenAI-compatible server: continuous batching of branches against one request at a time.

Two servers over the SAME loaded model, each the real app (serving.server.build_server) under uvicorn on
127.0.0.1 (a free port, a background thread of this process), driven over HTTP by asyncio clients:

* ``batched``: the server as shipped (--max_running_requests 0): concurrent requests join the running batch
  and decode in the same forwards; n choices are n branches of one sample sharing the prompt;
* ``serial``: the same server with --max_running_requests 1: one request is decoded at a time, the rest
  wait their turn (what the MiniMind / MiniLLM servers do).

Workloads (every request greedy, `ignore_eos`, exactly --max_new_tokens tokens per choice, distinct token-id
prompts of 16-32 tokens sent to /v1/completions):

* concurrency C in --concurrency (default 1, 8, 32): C clients, --requests requests in all, each client
  sending its next request when its previous one is answered;
* ``n8``: one request with n = --n (8) samples (temperature 1, seed s: choice i uses seed s + i) of a
  --n_prompt_tokens (256) token prompt (``n_one_request``, batched server), against the same --n
  samples asked as --n independent requests with seeds s + i, on the batched server (``n_independent``,
  no prefix sharing: every request prefills the prompt) and on the serial server (``n_serial``).
  ``n_equals_independent`` says whether the n choices equal the independent requests' texts.

Each repeat runs every row once, the order rotating per repeat, after one warm-up run of each row.
Reported per row: requests/s and generated tokens/s (completion tokens from `usage` / wall time, prefill
and HTTP included), median over --repeats, and the ratios batched / serial of the medians. The clients
run in the same process as the server (the GIL is shared, so the HTTP side costs both rows alike).

Usage (from the repo root):

    python scripts/bench_serve.py --threads 1                       # tiny MiniMind (random weights), minutes
    python scripts/bench_serve.py --quick                           # smoke run in seconds (numbers meaningless)
    python scripts/bench_serve.py --hf_base_model out/models/SmolLM2-135M-Instruct --max_new_tokens 16 \\
        --repeats 3 --out_path out/bench_serve_smollm2.json       # the real-model row
    python scripts/bench_serve.py --stream                          # streaming requests (SSE), usage chunk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, int_list, make_parser

TINY = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TARGETS = {"batched_vs_serial_c32_min": 5.0}
MODEL = "bench"


# --- the servers ---------------------------------------------------------------------------------------

def load_model(args, workdir: Path):
    """The model to serve: --model_path / --hf_base_model, else a tiny MiniMind with random seeded weights
    saved as a checkpoint (with the repo's tokenizer) and loaded back through model.loading."""
    import torch

    from model.device import resolve_device
    from model.loading import load_parallel_model

    device = resolve_device(args.device)
    if args.model_path or args.hf_base_model:
        return load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                   lora_path=args.lora_path, tokenizer_path=args.tokenizer, device=device)
    from model.checkpoint import save_checkpoint
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from model.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(args.seed)
    # untied head: a random model with tied embeddings tends to echo its input
    model = MiniMindForCausalLM(MiniMindConfig(**(QUICK if args.quick else TINY), vocab_size=len(tok),
                                               tie_word_embeddings=False))
    path = workdir / "bench_minimind.pth"
    save_checkpoint(path, model, tokenizer=tok)
    return load_parallel_model(model_path=str(path), device=device)


def start_servers(loaded, max_prompt: int, max_n: int):
    from serving.app import ServerConfig
    from serving.listen import start_in_thread
    from serving.server import build_server
    from serving.work import Limits

    out = {}
    for name, running in (("batched", 0), ("serial", 1)):
        config = ServerConfig(model_name=MODEL, api_key=None, max_concurrent_requests=4096)
        limits = Limits(max_prompt_tokens=max_prompt, max_tokens=4096, max_n=max_n)
        server = build_server(loaded, config, limits, max_running=running)
        out[name] = (server, start_in_thread(server.app, log_level="error"))
    return out


def stop_servers(servers: dict) -> None:
    for server, running in servers.values():
        running.stop()
        server.engine.close()


# --- the clients ---------------------------------------------------------------------------------------



async def complete(client, body: dict, stream: bool) -> tuple[list[str], int]:
    """One /v1/completions request -> (choice texts by index, completion tokens from usage)."""
    if not stream:
        r = await client.post("/v1/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return [c["text"] for c in sorted(data["choices"], key=lambda c: c["index"])], data["usage"][
            "completion_tokens"]
    texts: dict[int, str] = {}
    usage = None
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for c in chunk["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + c["text"]
            usage = chunk.get("usage") or usage
    return [texts[i] for i in sorted(texts)], usage["completion_tokens"]


async def run_clients(url: str, bodies: list[dict], concurrency: int, stream: bool) -> tuple[float, int, list]:
    """Send `bodies` from `concurrency` clients -> (seconds, completion tokens, texts per body)."""
    import httpx

    todo = list(enumerate(bodies))
    texts: list = [None] * len(bodies)
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker():
            nonlocal tokens
            while todo:
                i, body = todo.pop(0)
                texts[i], n = await complete(client, body, stream)
                tokens += n
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, tokens, texts


def body(prompt: list[int], new_tokens: int, **kw) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True, **kw}


def build_rows(args, urls: dict, vocab: int) -> dict:
    """name -> (server url, request bodies, concurrency)."""
    from evaluation.benchmarking import make_prompts

    rows = {}
    prompts = make_prompts(args.requests, 16, 32, vocab, args.seed)
    for c in args.concurrency:
        for server in ("batched", "serial"):
            rows[f"c{c}_{server}"] = (urls[server], [body(p, args.max_new_tokens) for p in prompts], c)
    if args.n:
        long = make_prompts(1, args.n_prompt_tokens, args.n_prompt_tokens, vocab, args.seed + 1)[0]
        sampled = dict(temperature=1.0, top_p=1.0)
        rows["n_one_request"] = (urls["batched"], [body(long, args.max_new_tokens, n=args.n, seed=args.seed,
                                                        **sampled)], 1)
        independent = [body(long, args.max_new_tokens, seed=args.seed + i, **sampled) for i in range(args.n)]
        rows["n_independent"] = (urls["batched"], independent, args.n)
        rows["n_serial"] = (urls["serial"], independent, args.n)
    return rows


def run_all(rows: dict, repeats: int, stream: bool) -> tuple[dict, dict]:
    """Warm up every row, then `repeats` rounds of every row (order rotating) -> (timings, last texts)."""
    names = list(rows)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    tokens: dict[str, int] = {}
    texts: dict[str, list] = {}
    rounds = [("warm-up", names)] + [(f"repeat {r + 1}/{repeats}", names[r % len(names):] + names[:r % len(names)])
                                     for r in range(repeats)]
    for label, order in rounds:
        for name in order:
            url, bodies, c = rows[name]
            s, n, out = asyncio.run(run_clients(url, bodies, c, stream))
            print(f"bench_serve: {label} {name}: {n} tokens in {s:.2f} s", file=sys.stderr, flush=True)
            if label != "warm-up":
                seconds[name].append(s)
                tokens[name], texts[name] = n, out
    out = {}
    for name in names:
        med = statistics.median(seconds[name])
        n_req = len(rows[name][1])
        out[name] = {"requests": n_req, "concurrency": rows[name][2], "completion_tokens": tokens[name],
                     "median_s": round(med, 4), "min_s": round(min(seconds[name]), 4), "runs": len(seconds[name]),
                     "requests_per_s": round(n_req / med, 2), "tokens_per_s": round(tokens[name] / med, 1)}
    return out, texts


def ratios(rows: dict, concurrency: list[int]) -> dict:
    out = {f"c{c}_batched_vs_serial": round(rows[f"c{c}_batched"]["tokens_per_s"] /
                                            rows[f"c{c}_serial"]["tokens_per_s"], 2) for c in concurrency}
    if concurrency and 1 in concurrency:
        top = max(concurrency)
        out[f"c{top}_batched_vs_c1_serial"] = round(rows[f"c{top}_batched"]["tokens_per_s"] /
                                                    rows["c1_serial"]["tokens_per_s"], 2)
    if "n_one_request" in rows:
        for other in ("n_independent", "n_serial"):
            out[f"n_one_request_vs_{other}"] = round(rows["n_one_request"]["tokens_per_s"] /
                                                     rows[other]["tokens_per_s"], 2)
    return out


# --- entry point ---------------------------------------------------------------------------------------

def build_parser() -> ArgParser:
    from evaluation.benchmarking import add_benchmark_args

    p = make_parser(__doc__, "bench_serve")
    flags.add_model_source_args(p)
    add_benchmark_args(p, repeats=3, quick_repeats=1, seed=0, device="cpu")
    w = p.add_argument_group("workload")
    w.add_argument("--concurrency", type=int_list, default=None,
                   help="comma-separated numbers of concurrent clients (default 1,8,32; --quick: 1,4)")
    w.add_argument("--requests", type=flags.positive_int, default=None,
                   help="requests per concurrency row (default 32; --quick: 4)")
    flags.add_max_new_tokens_arg(w, None, minimum=1, help="generated tokens per choice, exactly (EOS is ignored; "
                                                          "default 32; --quick: 4)")
    w.add_argument("--n", type=flags.nonneg_int, default=8, help="samples of the n row (0: no n row)")
    w.add_argument("--n_prompt_tokens", type=flags.positive_int, default=None,
                   help="prompt tokens of the n row (default 256; --quick: 32)")
    flags.add_stream_arg(w, False, "streaming requests (server-sent events)")
    p.add_check(_resolve)
    return p


def _resolve(args) -> None:
    q = args.quick
    args.concurrency = args.concurrency or ([1, 4] if q else [1, 8, 32])
    args.requests = args.requests or (4 if q else 32)
    args.max_new_tokens = args.max_new_tokens or (4 if q else 32)
    args.n_prompt_tokens = args.n_prompt_tokens or (32 if q else 256)
    if max(args.concurrency) > args.requests:
        raise flags.UsageError(f"--concurrency {max(args.concurrency)} is more than --requests {args.requests}: "
                               "some clients would send nothing")


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    import torch

    from evaluation.benchmarking import emit_json, environment, loadavg

    torch.set_num_threads(args.threads or torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        loaded = load_model(args, Path(tmp))
        max_prompt = max(32, args.n_prompt_tokens)
        servers = start_servers(loaded, max_prompt, max(args.n, 1))
        try:
            urls = {name: running.url for name, (_, running) in servers.items()}
            rows = build_rows(args, urls, min(len(loaded.tokenizer), loaded.model.config.vocab_size))
            result = {"config": {"model": loaded.source, "kind": loaded.kind, "new_tokens": args.max_new_tokens,
                                 "requests": args.requests, "concurrency": args.concurrency, "n": args.n,
                                 "n_prompt_tokens": args.n_prompt_tokens, "prompt_tokens": [16, 32],
                                 "stream": args.stream, "repeats": args.repeats, "warmup": 1, "greedy": True,
                                 "eos": "ignored", "quick": args.quick},
                      "env": environment(next(loaded.model.parameters()).device), "targets": TARGETS}
            timings, texts = run_all(rows, args.repeats, args.stream)
        finally:
            stop_servers(servers)
    result["rows"] = timings
    result["ratios"] = rat = ratios(timings, args.concurrency)
    if args.n:
        result["n_equals_independent"] = texts["n_one_request"][0] == [t[0] for t in texts["n_independent"]]
        result["n_serial_equals_independent"] = texts["n_serial"] == texts["n_independent"]
    result["concurrent_equals_serial"] = all(texts[f"c{c}_batched"] == texts[f"c{c}_serial"]
                                             for c in args.concurrency)
    if 32 in args.concurrency:
        result["targets_met"] = {"batched_vs_serial_c32": rat["c32_batched_vs_serial"] >=
                                 TARGETS["batched_vs_serial_c32_min"]}
    result["env"]["loadavg_end"] = loadavg()
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
