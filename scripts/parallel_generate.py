"""Parallel generation: every branch of a sample decodes in one forward per step (columnar or isolated).

Run from the repo root (see README.md, "3. Parallel Inference"):

    python scripts/parallel_generate.py --mode pretrain --prompts "Why does the sun rise" "Tell me about owls" \\
        --branches_per_sample 2 --model_path out/pretrain_512.pth --streaming
    python scripts/parallel_generate.py --prompts "Introduce yourself" "Recommend a book" \\
        --model_path out/full_sft_512.pth --chat_template --streaming
    python scripts/parallel_generate.py --prompts "Hi" --model_path out/full_sft_512.pth \\
        --default_system          # MiniLLM's "You are a helpful assistant" system turn first
    python scripts/parallel_generate.py --mode pretrain --prompts_file prompts.jsonl --model_path out/pretrain_512.pth \\
        --out_path out/results.jsonl
    python scripts/parallel_generate.py --hf_base_model <qwen folder> --lora_path out/lora/hf_lora.pth --prompts ...
    python scripts/parallel_generate.py --mode pretrain --hf_base_model <any causal LM folder> --mask isolated \\
        --branch_stride 0 --prompts_file shared.jsonl    # {"main": context, "branches": [questions]}

--branch_stride 0 is prefix sharing (isolated mask only): each sample's main is prefilled once and every
branch continues it with plain 1D positions, so any base model answers each question exactly as causal
decoding of "context + question" would. Non-zero branch coordinates (the checkpoint's stride, columnar
decoding) need a model tuned for them: an untuned base model cannot tell the branches apart and mixes
them up. With --do_sample and --seed s, the j-th branch of the run samples with seed s + j, whatever
--batch_groups is.

The checkpoint carries its own config (hidden size, layers, ratio, stride...); flags that contradict it are
errors. --out_path writes one JSON record per branch ({"sample", "branch", "main", "prompt", "response",
"finish_reason", "num_new_tokens"}), in input order.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel_data.io import AtomicJsonlWriter
from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "parallel_generate")
    g = p.add_argument_group("prompts")
    flags.add_prompt_mode_arg(g)
    flags.add_prompts_arg(g, help="prompts; in pretrain mode 'a||b' is one sample")
    flags.add_branches_per_sample_arg(g, 4, "single prompts per sample")
    flags.add_chat_template_arg(g, default=None, help="wrap each prompt as a user turn (ChatML); default: on in sft "
                                                      "mode, off in pretrain mode")
    flags.add_default_system_arg(g)
    g.add_argument("--max_prompt_length", type=flags.positive_int, default=2048,
                   help="longest prompt (tokens) accepted; longer prompts are an error, never cut silently")
    flags.add_source_args(p, hf=False, text_column=False, max_samples=False, data_aliases=("--prompts_file",),
                          data_flag="--prompts_file",
                          data_help="text lines, or JSONL {branches}|{text: 'a||b'}|{prompt}|{question}|"
                                    "{main, branches}")
    flags.add_model_source_args(p)
    flags.add_output_args(p, out_dir="out", out_dir_help="where the default --model_path is looked up",
                          out_dir_is_output=False, out_path=True,
                          out_path_help="JSONL, one record per branch, in input order (written atomically)")
    o = p.add_argument_group("display")
    o.add_argument("--streaming", action="store_true", help="live view of all branches, updated per token")
    o.add_argument("--print_layout", action="store_true", help="print the first sample's token layout")
    flags.add_model_shape_args(p)
    flags.add_rope_args(p, prefix_sharing=True)
    flags.add_mask_args(p)
    flags.add_decoding_args(p, max_new_tokens=128, batch_groups=8)
    flags.add_runtime_args(p, seed=0)
    p.add_check(_check_prompts)
    p.add_check(_check_default_model, paths=True)
    return p


def _check_prompts(args) -> None:
    if not args.prompts and args.data_path is None:
        raise UsageError("no prompts: pass --prompts TEXT ... or --prompts_file FILE")
    flags.check_default_system(args, args.mode == "sft" if args.chat_template is None else args.chat_template)


def _check_default_model(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        args.model_path = default_model_path(args)
        flags.check_model_path(args.model_path, "the default --model_path")


class StreamView:
    """All branches side by side (or one line each when many), redrawn in place at most ~20 times/s."""

    def __init__(self, titles: list[str], out=sys.stdout):
        self.titles = [" ".join(t.split()) for t in titles]  # one line each: newlines would break the redraw
        self.out = out
        self.texts = [""] * len(titles)
        self.height = 0
        self.last = 0.0
        self.width = shutil.get_terminal_size((120, 24)).columns

    def update(self, index: int, piece: str) -> None:
        self.texts[index] += piece

    def render(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.05:
            return
        self.last = now
        n = len(self.texts)
        if n <= 4:
            colw = max(12, (self.width - 3 * (n - 1)) // n)
            rows = 6
            cols = []
            for t, txt in zip(self.titles, self.texts):
                flat = txt.replace("\n", " ⏎ ")
                wrapped = [flat[i:i + colw] for i in range(0, len(flat), colw)] or [""]
                cols.append([t[:colw].ljust(colw)] + [w.ljust(colw) for w in wrapped[-rows:]] +
                            [" " * colw] * (rows - len(wrapped[-rows:])))
            lines = [" │ ".join(c[i] for c in cols) for i in range(rows + 1)]
        else:
            lines = []
            for t, txt in zip(self.titles, self.texts):
                flat = txt.replace("\n", " ⏎ ")
                room = self.width - len(t) - 2
                lines.append(f"{t}: " + (flat[-room:] if len(flat) > room else flat))
        buf = ("\x1b[F" * self.height) + "".join("\x1b[2K" + ln + "\n" for ln in lines)
        self.out.write(buf)
        self.out.flush()
        self.height = len(lines)


def print_layout(tokenizer, sample: dict, stride: int, align: str) -> None:
    from parallel.layout import build_flat_linear_layout

    lay = build_flat_linear_layout(tokenizer, [sample], branch_stride=max(stride, 1), align_to=align)
    coord = lay.pos2d[0, :, 0] * stride // max(stride, 1)  # stride 0: every coordinate is 0
    print("flat  branch  coord  time  token")
    for i in range(int(lay.token_mask[0].sum())):
        tok = tokenizer.decode([int(lay.input_ids[0, i])]).replace("\n", "\\n")
        print(f"{i:4d}  {int(lay.branch_ids[0, i]):6d}  {int(coord[i]):5d}  {int(lay.time_ids[0, i]):4d}  "
              f"{tok!r}")


def default_model_path(args) -> str:
    stage = "pretrain" if args.mode == "pretrain" else "full_sft"
    return str(Path(args.out_dir) / f"{stage}_{args.hidden_size or 512}{'_moe' if args.use_moe else ''}.pth")


def run(args) -> int:
    from parallel_data.prompts import collect_samples, render_sample

    # the prompts are read before torch and the model are loaded: a bad prompt file fails at once
    prompts = collect_samples(args.prompts, args.data_path, branches_per_sample=args.branches_per_sample,
                              split_bars=args.mode == "pretrain")
    from model.device import resolve_device
    from model.loading import legacy_config_factory, load_parallel_model, shape_flags
    from model.parallel_generation import ParallelGenerator, check_branch_stride
    from parallel.sampling import SamplingParams

    prefix_sharing = args.branch_stride == 0
    if prefix_sharing:
        check_branch_stride(0, args.mask_mode)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            repetition_penalty=args.repetition_penalty, do_sample=args.do_sample)
    use_template = args.mode == "sft" if args.chat_template is None else args.chat_template
    device = resolve_device(args.device)
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model, lora_path=args.lora_path,
                                 lora_rank=args.lora_rank, tokenizer_path=args.tokenizer, device=device,
                                 dtype=args.dtype, legacy_config=legacy_config_factory(args), expect=shape_flags(args),
                                 rope_2d_ratio=args.rope_2d_ratio, rope_2d_scheme=args.rope_2d_scheme,
                                 branch_stride=None if prefix_sharing else args.branch_stride, pe=args.pe)
    tok = loaded.tokenizer
    samples = [render_sample(p, tok, use_template, args.default_system) for p in prompts]
    for p, s in zip(prompts, samples):
        for k, b in enumerate(s["branches"]):
            n = len(tok(s["main"] + b, add_special_tokens=False)["input_ids"]) if s["main"] else \
                len(tok(b, add_special_tokens=False)["input_ids"])
            if n > args.max_prompt_length:
                raise ValueError(f"{p.source}: branch {k} has {n} prompt tokens, more than --max_prompt_length "
                                 f"{args.max_prompt_length}")
    stride = 0 if prefix_sharing else loaded.branch_stride
    gen = ParallelGenerator(loaded.model, tok, mask_mode=args.mask_mode, branch_stride=stride, align_to=args.align_to)
    if args.print_layout:
        print_layout(tok, samples[0], stride, args.align_to)
    print(f"model {loaded.source} ({loaded.kind}, pe={loaded.pe}, scheme={loaded.rope_2d_scheme}, "
          f"ratio={loaded.rope_2d_ratio}, stride={stride}); {len(prompts)} sample(s), "
          f"{sum(len(p.branches) for p in prompts)} branch(es), mask {args.mask_mode}", file=sys.stderr)
    t0, n_tokens = time.perf_counter(), 0
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(AtomicJsonlWriter(args.out_path)) if args.out_path else None
        for start in range(0, len(samples), args.batch_groups):
            batch, batch_prompts = samples[start:start + args.batch_groups], prompts[start:start + args.batch_groups]
            view, on_step = None, None
            if args.streaming:
                titles = [f"[{start + i}.{k}] {' '.join(p.branches[k].split())[-36:]}" for i, p in
                          enumerate(batch_prompts) for k in range(len(p.branches))]
                offsets, acc = [], 0
                for s in batch:
                    offsets.append(acc)
                    acc += len(s["branches"])
                view = StreamView(titles)

                def on_step(step, events, view=view, offsets=offsets):
                    for e in events:
                        if e.text:
                            view.update(offsets[e.sample] + e.branch, e.text)
                    view.render()
            seed = args.seed + sum(len(s["branches"]) for s in samples[:start])  # branch j of the run: seed + j
            results = gen.generate(batch, params, stop_strings=args.stop, max_new_tokens=args.max_new_tokens,
                                   seed=seed, on_step=on_step)
            if view is not None:
                view.render(force=True)
            for i, (p, res) in enumerate(zip(batch_prompts, results)):
                for k, br in enumerate(res.branches):
                    n_tokens += br.num_new_tokens
                    rec = {"sample": start + i, "branch": k, "main": p.main, "prompt": p.branches[k],
                           "response": br.text, "finish_reason": br.finish_reason,
                           "num_new_tokens": br.num_new_tokens}
                    if writer is not None:
                        writer.write(rec)
                    if not args.streaming:
                        print(f"[{start + i}.{k}] {p.branches[k]}\n  -> {br.text!r} ({br.finish_reason})")
    dt = time.perf_counter() - t0
    print(f"{n_tokens} tokens in {dt:.2f} s ({n_tokens / max(dt, 1e-9):.1f} tokens/s)"
          + (f"; wrote {args.out_path}" if args.out_path else ""), file=sys.stderr)
    return 0


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
