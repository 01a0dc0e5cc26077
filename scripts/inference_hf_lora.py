"""Generate with a Hugging Face causal LM (+ LoRA): one prompt (--mode generate) or an interactive chat (--mode chat).

    python scripts/inference_hf_lora.py --base_model out/models/SmolLM2-135M-Instruct --mode generate \\
        --prompt "What is the capital of France?"
    python scripts/inference_hf_lora.py --base_model <folder> --lora_path out/lora/hf_lora_hf_final.pth --mode chat
    printf 'Hi!\\nAnd then?\\n/exit\\n' | python scripts/inference_hf_lora.py --base_model <folder> --mode chat

The model loads as for batch inference (model/loading.py): a base model folder with an optional adapter
(a PEFT folder, or the .pth / .safetensors a trainer writes); the adapter's 2D-RoPE settings are
re-applied, and flags given anyway are checked against them. One prompt is one branch at coordinate 0,
so a patched model decodes it exactly as the plain model does; --no_patch_rope keeps the model's own
rotary module. Decoding is the parallel generation engine (greedy unless --do_sample), streamed to
the terminal as it is generated.

Chat: each line read from stdin is a user turn; the reply is generated from the whole conversation
(the last --history_turns exchanges, 0 = all) rendered with the tokenizer's chat template. `/reset`
forgets the conversation, `/exit` (or end of input) ends the session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

PROG = "inference_hf_lora"
EXIT_COMMANDS = ("/exit", "/quit")


def build_parser() -> ArgParser:
    p = make_parser(__doc__, PROG)
    g = p.add_argument_group("prompt")
    g.add_argument("--mode", choices=["generate", "chat"], default="chat",
                   help="generate: one --prompt; chat: an interactive conversation on stdin")
    g.add_argument("--prompt", default=None, help="the prompt (--mode generate)")
    flags.add_conversation_args(g, system_help="a system message before the conversation",
                                history_help="chat: earlier exchanges kept in the prompt (0 = all)")
    flags.add_chat_template_arg(g, default=True, help="render the prompt / conversation with the tokenizer's chat "
                                                      "template (--no_chat_template: --prompt as raw text)")
    flags.add_model_source_args(p)
    flags.add_rope_args(p, stride=False, patch_rope=True)
    flags.add_decoding_args(p, max_new_tokens=512, batch_groups=None)
    flags.add_runtime_args(p, seed=0)
    p.add_check(_check_flags)
    return p


def _check_flags(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        raise UsageError("give the model: --base_model FOLDER (optionally with --lora_path) or --model_path")
    if args.mode == "generate":
        if args.prompt is None or not args.prompt.strip():
            raise UsageError("--mode generate needs --prompt TEXT")
        if args.history_turns:
            raise UsageError("--history_turns goes with --mode chat")
    elif args.prompt is not None:
        raise UsageError("--prompt goes with --mode generate; --mode chat reads the conversation from stdin")
    if not args.chat_template and (args.mode == "chat" or args.system is not None):
        raise UsageError(("--mode chat" if args.mode == "chat" else "--system") + " needs the chat template; drop "
                         "--no_chat_template")
    if args.patch_rope is False and (args.rope_2d_ratio is not None or args.rope_2d_scheme is not None):
        raise UsageError("--rope_2d_ratio / --rope_2d_scheme would be ignored: --no_patch_rope keeps the model's own "
                         "rotary module")


class Chat:
    """A conversation with the model: `reply(text)` generates the assistant's turn, streamed to `out`."""

    def __init__(self, gen, args, out=None):
        from parallel.sampling import SamplingParams

        self.gen, self.args, self.out = gen, args, out or sys.stdout
        self.params = SamplingParams(do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p,
                                     top_k=args.top_k, repetition_penalty=args.repetition_penalty)
        self.history: list[dict] = []  # user / assistant messages
        self.turn = 0

    def prompt_text(self, user: str) -> str:
        tok = self.gen.tokenizer
        if not self.args.chat_template:
            return user
        if not getattr(tok, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; pass --no_chat_template (--mode generate)")
        kept = self.history[-2 * self.args.history_turns:] if self.args.history_turns else self.history
        system = [{"role": "system", "content": self.args.system}] if self.args.system else []
        return tok.apply_chat_template([*system, *kept, {"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)

    def reply(self, user: str) -> str:
        session = self.gen.session(stream_text=True)
        handle = session.add({"branches": [self.prompt_text(user)]}, self.params,
                             max_new_tokens=self.args.max_new_tokens, stop_strings=self.args.stop,
                             seed=self.args.seed + self.turn)
        while not session.idle:
            for e in session.step():
                if e.text:
                    self.out.write(e.text)
                    self.out.flush()
        self.out.write("\n")
        self.out.flush()
        text = handle.result.branches[0].text
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        self.turn += 1
        return text


def chat_loop(chat: Chat, lines, out=None) -> int:
    """Read user turns from `lines` until /exit or the end; -> the number of replies."""
    out = out or chat.out
    interactive = lines.isatty()
    out.write("chat: type a message, /reset to forget the conversation, /exit to quit\n")
    replies = 0
    while True:
        if interactive:
            out.write("user> ")
            out.flush()
        line = lines.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            break
        if text == "/reset":
            chat.history.clear()
            out.write("(conversation reset)\n")
            continue
        out.write("assistant> ")
        chat.reply(text)
        replies += 1
    return replies


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    import torch

    from model.device import resolve_device
    from model.loading import load_parallel_model
    from model.parallel_generation import ParallelGenerator

    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                 lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=resolve_device(args.device), dtype=args.dtype,
                                 rope_2d_ratio=args.rope_2d_ratio, rope_2d_scheme=args.rope_2d_scheme,
                                 patch_rope=args.patch_rope)
    print(f"{PROG}: model {loaded.source} ({loaded.kind}" + (f", adapter {args.lora_path}" if args.lora_path else "")
          + f", 2D RoPE ratio {loaded.rope_2d_ratio})", file=sys.stderr, flush=True)
    # one branch without a main sits at coordinate 0: any stride decodes it as the plain model does
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode="isolated")
    chat = Chat(gen, args)
    with torch.no_grad():
        if args.mode == "generate":
            chat.reply(args.prompt)
            return 0
        chat_loop(chat, sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
