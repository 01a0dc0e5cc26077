"""Flag groups of the server, its clients and its limits (see trainer.args)."""

from __future__ import annotations

import os

from trainer.cli import (  # the value types and path checks are re-exported for the entry points
    ArgParser,
    BoolFlag,
    UsageError,
    http_url,
    nonneg_int,
    port_number,
    positive_int,
)

API_KEY_ENV = "PARALLELMIND_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_server_args(p: ArgParser, *, port: int, api_key: bool = True) -> None:
    """--host (default 127.0.0.1: this machine only) --port, and --api_key: the key clients must send."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network "
                        "interface, so set --api_key)")
    g.add_argument("--port", type=port_number, default=port, help="TCP port")
    if api_key:
        add_api_key_arg(g, f"clients must send 'Authorization: Bearer KEY' on every route but /health (default: "
                           f"${API_KEY_ENV}; unset: no authentication)")
        p.add_check(_check_api_key)
    g.add_argument("--log_level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                   help="server log level (info: one line per request)")


def add_threads_arg(g, help: str = "torch CPU threads (0 = torch's default)") -> None:
    g.add_argument("--threads", type=nonneg_int, default=0, help=help)


def add_api_key_arg(g, help: str) -> None:
    g.add_argument("--api_key", default=None, help=help)


def add_server_limit_args(p: ArgParser) -> None:
    """What one request may ask for, and how many run at once; each refusal is a 4xx with an OpenAI error body."""
    g = p.add_argument_group("limits (each refusal is a 4xx with an OpenAI error body)")
    g.add_argument("--max_body_bytes", type=positive_int, default=1 << 20, help="request body size (413 above)")
    g.add_argument("--max_prompt_tokens", type=positive_int, default=4096, help="prompt tokens per request (400 above)")
    g.add_argument("--max_tokens_limit", type=positive_int, default=2048,
                   help="the largest max_tokens a request may ask for (400 above)")
    g.add_argument("--max_n", type=positive_int, default=32,
                   help="choices per request: n x prompts, or the branches of a parallel request (400 above)")
    g.add_argument("--max_concurrent_requests", type=positive_int, default=64,
                   help="generation requests in progress at once (429 above)")
    g.add_argument("--max_running_requests", type=nonneg_int, default=0,
                   help="requests decoded together in one batch (0 = all of them; the rest wait their turn; 1 = "
                        "one request at a time)")


def add_api_client_args(p: ArgParser, *, model: bool = True) -> None:
    """Where an OpenAI-compatible server is: --base_url, --api_key (default $PARALLELMIND_API_KEY), --model_name."""
    g = p.add_argument_group("server to talk to")
    g.add_argument("--base_url", "--api_base", dest="base_url", type=http_url, default="http://127.0.0.1:6006/v1",
                   help="the server's /v1 URL")
    add_api_key_arg(g, f"the server's API key (default: ${API_KEY_ENV})")
    if model:
        add_model_name_arg(g, "model to ask for (default: the server's first model)")
    p.add_check(_check_api_key)


def add_stream_arg(g, default: bool, help: str) -> None:
    """--stream / --no_stream: server-sent events instead of one JSON answer."""
    g.add_argument("--stream", action=BoolFlag, default=default, help=help)


def add_model_name_arg(g, help: str) -> None:
    g.add_argument("--model_name", default=None, help=help)


def _check_api_key(args) -> None:
    if args.api_key is None:
        args.api_key = os.environ.get(API_KEY_ENV) or None
    if args.api_key is not None and not args.api_key.strip():
        raise UsageError("--api_key is empty; give a key, or leave the flag out for no authentication")


# --- presets ---------------------------------------------------------------------------------------------

