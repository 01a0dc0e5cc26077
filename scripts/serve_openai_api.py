"""OpenAI-compatible server whose batching is the model's own parallel decoding (chat, completions, streaming).

Run from the repo root (see README.md, "Serving", and docs/SERVING.md):

    python scripts/serve_openai_api.py --model_path out/full_sft_512.pth --port 6006
    python scripts/serve_openai_api.py --model_path out/full_sft_512_moe.pth --tokenizer_path model/ --port 6006 \\
        --use_moe                                            # the MiniLLM seed's server_api.py command
    python scripts/serve_openai_api.py --hf_base_model out/models/SmolLM2-135M-Instruct --lora_path out/lora/x \\
        --api_key "$KEY" --web_demo                          # + the browser page at http://127.0.0.1:6006/demo

    curl http://127.0.0.1:6006/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "Hi"}], "n": 3, "seed": 0, "stream": true}'

Routes: GET /health (no authentication; 503 when the engine has stopped), GET /v1/models,
POST /v1/chat/completions, POST /v1/completions, GET /demo (with --web_demo). Requests that arrive
while others decode join the running batch (continuous batching); n choices of one prompt are n
branches of one sample that share the prompt (prefilled once), choice i sampling with seed + i.
The `parallel` extension (`"parallel": {"branches": [...], "mask": "columnar"}`) decodes several
questions over one shared prompt as branches of one sample, one choice per branch.

Listens on 127.0.0.1 unless --host says otherwise; with --api_key (or $PARALLELMIND_API_KEY) every
route but /health needs `Authorization: Bearer KEY`. The model carries its own 2D-RoPE settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "serve_openai_api")
    flags.add_model_source_args(p)
    flags.add_model_shape_args(p)
    flags.add_rope_args(p)
    flags.add_mask_args(p)
    flags.add_server_args(p, port=6006)
    g = p.add_argument_group("serving")
    flags.add_model_name_arg(g, "the model's name in /v1/models and in requests (default: the checkpoint's file "
                                "or folder name)")
    flags.add_max_new_tokens_arg(g, 512, minimum=1,
                                 help="max_tokens of a request that gives none (cut to what the context leaves)")
    g.add_argument("--web_demo", action="store_true", help="also serve the browser page at /demo")
    flags.add_threads_arg(g, "torch CPU threads for the model (0 = torch's default; 1 is fastest for tiny models)")
    flags.add_server_limit_args(p)
    flags.add_runtime_args(p, seed=None)
    p.add_check(_check_model_given)
    return p


def _check_model_given(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        raise flags.UsageError("which model? pass --model_path (a .pth checkpoint or a saved folder) or "
                               "--hf_base_model (a Hugging Face folder, with --lora_path for an adapter)")
    if args.max_new_tokens > args.max_tokens_limit:
        raise flags.UsageError(f"--max_new_tokens {args.max_new_tokens} is more than --max_tokens_limit "
                               f"{args.max_tokens_limit}")


def default_model_name(args) -> str:
    src = Path(args.model_path or args.hf_base_model)
    name = src.stem if src.is_file() else src.name
    return f"{name}+{Path(args.lora_path).stem}" if args.lora_path else name


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from serving.listen import bind

    sock = bind(args.host, args.port)  # before the model loads: a busy port or a bad host fails at once
    try:
        return serve(args, sock)
    finally:
        sock.close()


def serve(args: argparse.Namespace, sock) -> int:
    import torch

    from model.device import resolve_device
    from model.loading import legacy_config_factory, load_parallel_model, shape_flags
    from serving.app import ServerConfig
    from serving.listen import run
    from serving.protocol import now
    from serving.server import build_server
    from serving.work import Limits

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model, lora_path=args.lora_path,
                                 lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=resolve_device(args.device), dtype=args.dtype,
                                 legacy_config=legacy_config_factory(args), expect=shape_flags(args),
                                 rope_2d_ratio=args.rope_2d_ratio, rope_2d_scheme=args.rope_2d_scheme,
                                 branch_stride=args.branch_stride, pe=args.pe)
    name = args.model_name or default_model_name(args)
    config = ServerConfig(model_name=name, api_key=args.api_key, max_body_bytes=args.max_body_bytes,
                          max_concurrent_requests=args.max_concurrent_requests, web_demo=args.web_demo, created=now())
    limits = Limits(max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens_limit,
                    default_max_tokens=args.max_new_tokens, max_n=args.max_n)
    server = build_server(loaded, config, limits, parallel_mask=args.mask_mode, align_to=args.align_to,
                          max_running=args.max_running_requests)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(f"serving {name} ({loaded.kind}, pe={loaded.pe}, scheme={loaded.rope_2d_scheme}, stride="
          f"{server.generator.branch_stride}, prefix sharing {'on' if server.builder.prefix_sharing else 'off'}) "
          f"at {url}/v1 ({'API key required' if args.api_key else 'no API key'})"
          + (f"; web demo at {url}/demo" if args.web_demo else ""), file=sys.stderr, flush=True)
    if args.host not in flags.LOOPBACK_HOSTS and not args.api_key:
        print(f"serve_openai_api: warning: --host {args.host} accepts connections from other machines and no "
              "--api_key is set: anyone who can reach this port can use the model", file=sys.stderr, flush=True)
    run(server.app, sock, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
