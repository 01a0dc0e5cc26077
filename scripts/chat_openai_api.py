"""Terminal chat with an OpenAI-compatible server: streamed answers, conversation history, sampling flags.

Run from the repo root, next to a running server (scripts/serve_openai_api.py):

    python scripts/chat_openai_api.py                                  # http://127.0.0.1:6006/v1, greedy
    python scripts/chat_openai_api.py --base_url http://host:6006/v1 --api_key "$KEY" --do_sample \\
        --temperature 0.8 --top_p 0.9 --seed 0 --system "You are a helpful assistant."
    printf 'Hi\\nTell me more\\n' | python scripts/chat_openai_api.py   # one answer per input line

Each line you type is a user turn; the answer streams in as it is generated and joins the history
(`--history_turns N` keeps the last N exchanges, 0 = all). `/reset` starts a new conversation,
`/exit` (or end of input) quits. Reasoning (`<think>` content, returned as `reasoning_content`) goes
to stderr, the answers to stdout. Greedy decoding unless --do_sample; with --seed the same
conversation gives the same answers.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "chat_openai_api")
    flags.add_api_client_args(p)
    flags.add_decoding_args(p, max_new_tokens=256, batch_groups=None, max_new_tokens_help="max_tokens per answer")
    g = p.add_argument_group("conversation")
    flags.add_conversation_args(g, system_help="system message at the start of every conversation",
                                history_help="earlier exchanges sent with each question (0 = all of them)")
    flags.add_stream_arg(g, True, "stream the answers (--no_stream: wait)")
    g.add_argument("--show_speed", action="store_true", help="print tokens and tokens/s after each answer (stderr)")
    flags.add_seed_arg(g, None, "sampling seed (the same conversation gives the same answers)")
    return p


def request_options(args: argparse.Namespace) -> dict:
    """The sampling flags as request fields (greedy = temperature 0)."""
    opts: dict = {"max_tokens": args.max_new_tokens or None}
    if args.do_sample:
        opts.update(temperature=args.temperature, top_p=args.top_p)
    else:
        opts["temperature"] = 0.0
    extra = {}
    if args.do_sample and args.top_k:
        extra["top_k"] = args.top_k
    if args.repetition_penalty != 1.0:
        extra["repetition_penalty"] = args.repetition_penalty
    if args.stop:
        opts["stop"] = args.stop
    if args.seed is not None:
        opts["seed"] = args.seed
    if extra:
        opts["extra_body"] = extra
    return opts


class Chat:
    def __init__(self, client, model: str, args: argparse.Namespace):
        self.client, self.model, self.args = client, model, args
        self.history: list[dict] = []
        self.opts = request_options(args)

    def messages(self, question: str) -> list[dict]:
        keep = self.history[-2 * self.args.history_turns:] if self.args.history_turns else self.history
        system = [{"role": "system", "content": self.args.system}] if self.args.system else []
        return [*system, *keep, {"role": "user", "content": question}]

    def ask(self, question: str, out=None, err=None) -> str:
        out, err = out or sys.stdout, err or sys.stderr
        t0 = time.perf_counter()
        msgs = self.messages(question)
        if self.args.stream:
            answer, tokens = self._stream(msgs, out, err)
        else:
            r = self.client.chat.completions.create(model=self.model, messages=msgs, **self.opts)
            msg = r.choices[0].message
            reasoning = getattr(msg, "reasoning_content", None)
            if reasoning:
                print(reasoning, file=err)
            answer, tokens = msg.content or "", r.usage.completion_tokens
            out.write(answer)
        out.write("\n")
        out.flush()
        if self.args.show_speed:
            dt = time.perf_counter() - t0
            print(f"[{tokens} tokens, {tokens / max(dt, 1e-9):.1f} tokens/s]", file=err, flush=True)
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return answer

    def _stream(self, msgs, out, err) -> tuple[str, int]:
        stream = self.client.chat.completions.create(model=self.model, messages=msgs, stream=True,
                                                     stream_options={"include_usage": True}, **self.opts)
        parts, tokens = [], 0
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for c in chunk.choices:
                reasoning = getattr(c.delta, "reasoning_content", None)
                if reasoning:
                    err.write(reasoning)
                    err.flush()
                if c.delta.content:
                    parts.append(c.delta.content)
                    out.write(c.delta.content)
                    out.flush()
        return "".join(parts), tokens


def pick_model(client, wanted: str | None) -> str:
    import openai

    try:
        ids = [m.id for m in client.models.list()]
    except openai.AuthenticationError:
        raise ValueError("the server refused the API key (pass --api_key or set $PARALLELMIND_API_KEY)") from None
    except openai.APIConnectionError as e:
        raise OSError(f"cannot reach the server at {client.base_url} ({e.__cause__ or e})") from None
    if wanted is None:
        if not ids:
            raise ValueError(f"the server at {client.base_url} lists no models")
        return ids[0]
    if wanted not in ids:
        raise ValueError(f"--model_name {wanted}: the server serves {', '.join(ids)}")
    return wanted


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    import openai

    for name in ("httpx", "httpx2", "openai"):  # no per-request log lines between the answers
        logging.getLogger(name).setLevel(logging.WARNING)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key or "none", max_retries=0, timeout=600)
    chat = Chat(client, pick_model(client, args.model_name), args)
    tty = sys.stdin.isatty()
    if tty:
        print(f"chatting with {chat.model} at {args.base_url}; /reset starts over, /exit quits", file=sys.stderr)
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            return 0
        question = line.strip()
        if not question:
            continue
        if question == "/exit":
            return 0
        if question == "/reset":
            chat.history.clear()
            continue
        try:
            chat.ask(question)
        except openai.APIStatusError as e:  # one bad turn: say why, keep the conversation
            body = e.body if isinstance(e.body, dict) else {}
            print(f"chat_openai_api: error: {body.get('message', e.message)}", file=sys.stderr, flush=True)
        except openai.APIConnectionError as e:
            raise OSError(f"lost the server at {args.base_url} ({e.__cause__ or e})") from None


if __name__ == "__main__":
    sys.exit(main())
