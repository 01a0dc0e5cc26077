"""Chat evaluation of a checkpoint: built-in or file prompts answered one at a time and in parallel, side by side.

Run from the repo root:

    python eval_model.py --model_path out/full_sft_512.pth                 # the built-in chat prompts
    python eval_model.py --mode pretrain --model_path out/pretrain_512.pth   # built-in completion prompts
    python eval_model.py --model_path out/full_sft_512.pth --prompts "Hi" "Recommend a book" --default_system
    python eval_model.py --mode pretrain --prompts_file dataset/eval_prompts_demo.jsonl \\
        --model_path out/pretrain_512.pth --mask isolated --out_path out/eval/report.md   # + out/eval/report.json
    python eval_model.py --hf_base_model <folder> --lora_path <adapter> --prompts "Hello"

Each prompt is decoded alone ("one at a time": with its sample's main, at the branch coordinate it has in the
sample) and together with the others of its sample ("parallel":
--branches_per_sample single prompts per sample, or a prompts file's own {"main", "branches"} samples,
--batch_groups samples per call). The report lists both answers of every prompt, whether they are the
same, and each mode's tokens/s. With --mask isolated both modes give the same answers (each branch sees
only itself and its main; random streams are per branch, seed + j for the j-th branch); with the
columnar mask (the default of a model trained with it) branches see each other's earlier tokens, so
answers may differ. Without --out_path the markdown report goes to stdout. Exit status 0, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, make_parser, refuse_overwrite


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "eval_model")
    g = p.add_argument_group("prompts (default: the built-in set of --mode)")
    flags.add_prompt_mode_arg(g)
    flags.add_prompts_arg(g, help="prompts instead of the built-in set")
    flags.add_branches_per_sample_arg(g, 4, "single prompts per sample in parallel mode")
    flags.add_chat_template_arg(g, default=None, help="wrap each prompt as a user turn; default: on in sft mode")
    flags.add_default_system_arg(g)
    flags.add_source_args(p, hf=False, text_column=False, max_samples=False, data_aliases=("--prompts_file",),
                          data_flag="--prompts_file", data_help="prompts file instead of the built-in set (the "
                                                                "formats of parallel_generate)")
    flags.add_model_source_args(p)
    flags.add_output_args(p, out_dir="out", out_dir_help="where the default --model_path is looked up",
                          out_dir_is_output=False, out_path=True,
                          out_path_help="the markdown report (+ the same as JSON beside it, .json); a .json path: "
                                        "JSON only (default: markdown to stdout)")
    flags.add_model_shape_args(p)
    flags.add_rope_args(p, prefix_sharing=True)
    flags.add_mask_args(p, default=None)
    flags.add_decoding_args(p, max_new_tokens=64, batch_groups=8)
    flags.add_runtime_args(p, seed=0)
    flags.add_overwrite_arg(p, "replace existing report files")
    p.add_check(lambda a: flags.check_default_system(a, template_on(a)))
    p.add_check(_check_default_model, paths=True)
    p.add_check(_check_reports, paths=True)
    return p


def template_on(args) -> bool:
    return args.mode == "sft" if args.chat_template is None else args.chat_template


def _check_default_model(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        stage = "pretrain" if args.mode == "pretrain" else "full_sft"
        args.model_path = str(Path(args.out_dir) / f"{stage}_{args.hidden_size or 512}{'_moe' if args.use_moe else ''}"
                                                   ".pth")
        flags.check_model_path(args.model_path, "the default --model_path")


def _check_reports(args) -> None:
    if args.out_path:
        from evaluation.chat_eval import report_paths

        for path in report_paths(args.out_path):
            refuse_overwrite(path, "--out_path", args.overwrite)


def load_prompts(args) -> list:
    """-> PromptSamples: --prompts / --prompts_file, else the built-in set of --mode."""
    from evaluation.chat_eval import BUILTIN_PROMPTS
    from parallel_data.prompts import collect_samples

    given = args.prompts or args.data_path
    return collect_samples(args.prompts if given else BUILTIN_PROMPTS[args.mode], args.data_path,
                           branches_per_sample=args.branches_per_sample, split_bars=args.mode == "pretrain")


def run(args) -> int:
    prompts = load_prompts(args)  # read before torch and the model: a bad prompt file fails at once
    from evaluation.benchmarking import loadavg
    from evaluation.chat_eval import compare, report_markdown, write_reports
    from model.device import resolve_device
    from model.loading import legacy_config_factory, load_parallel_model, shape_flags
    from model.parallel_generation import ParallelGenerator, check_branch_stride
    from parallel.sampling import SamplingParams
    from parallel_data.prompts import render_sample

    prefix_sharing = args.branch_stride == 0
    if prefix_sharing:
        check_branch_stride(0, args.mask_mode)
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model, lora_path=args.lora_path,
                                 lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=resolve_device(args.device), dtype=args.dtype,
                                 legacy_config=legacy_config_factory(args), expect=shape_flags(args),
                                 rope_2d_ratio=args.rope_2d_ratio, rope_2d_scheme=args.rope_2d_scheme,
                                 branch_stride=None if prefix_sharing else args.branch_stride, pe=args.pe)
    mask = args.mask_mode or loaded.mask_mode or "columnar"
    stride = 0 if prefix_sharing else loaded.branch_stride
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode=mask, branch_stride=stride,
                            align_to=args.align_to)
    samples = [render_sample(p, loaded.tokenizer, template_on(args), args.default_system) for p in prompts]
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            repetition_penalty=args.repetition_penalty, do_sample=args.do_sample)
    print(f"model {loaded.source} ({loaded.kind}); {len(samples)} sample(s), "
          f"{sum(len(s['branches']) for s in samples)} prompt(s); mask {mask}", file=sys.stderr)
    ev = compare(gen, samples, [(p.main, list(p.branches)) for p in prompts], params,
                 max_new_tokens=args.max_new_tokens, batch_groups=args.batch_groups, seed=args.seed, stop=args.stop)
    header = {"model": loaded.source, "kind": loaded.kind, "mask": mask, "branch_stride": stride,
              "align_to": args.align_to, "chat_template": template_on(args), "default_system": args.default_system,
              "decoding": "sampled" if args.do_sample else "greedy", "max_new_tokens": args.max_new_tokens,
              "seed": args.seed, "prompts": "built-in " + args.mode if not (args.prompts or args.data_path) else
              "given", "loadavg": loadavg()}
    if args.out_path:
        for path in write_reports(ev, header, args.out_path):
            print(f"wrote {path}", file=sys.stderr)
    else:
        print(report_markdown(ev, header))
    m = ev.modes
    print(f"identical answers: {ev.identical}/{len(ev.rows)}; one at a time {m['one_at_a_time'].tokens_per_s:.1f} "
          f"tokens/s, parallel {m['parallel'].tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
