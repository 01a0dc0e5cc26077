"""Web demo: type several questions, or one question with n samples, and watch the branches stream side by side.

Run from the repo root, next to a running server (scripts/serve_openai_api.py):

    python scripts/serve_openai_api.py --model_path out/full_sft_512.pth --port 6006 &
    python scripts/web_demo.py --base_url http://127.0.0.1:6006/v1 --port 7860     # open http://127.0.0.1:7860

The page is also served by the server itself: `serve_openai_api.py --web_demo` -> http://127.0.0.1:6006/demo.
Here it is served on its own, and the page's API calls are forwarded to --base_url with --api_key (or
$PARALLELMIND_API_KEY) added, so the key stays out of the browser. Modes: one question with n samples
(one request, n branches sharing the prompt), one request per line (the server batches them), or
the lines as branches of one sample (the `parallel` extension, columnar or isolated mask).
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
    p = make_parser(__doc__, "web_demo")
    flags.add_server_args(p, port=7860, api_key=False)
    flags.add_api_client_args(p, model=False)
    return p


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from serving.demo import create_demo_app
    from serving.listen import bind, run

    sock = bind(args.host, args.port)
    try:
        host, port = sock.getsockname()[:2]
        print(f"web demo at http://{host}:{port}/ (forwarding to {args.base_url})", file=sys.stderr, flush=True)
        run(create_demo_app(args.base_url, args.api_key), sock, log_level=args.log_level)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
