"""Batch inference with a Hugging Face causal LM (+ LoRA) or a MiniMind model: a JSONL of samples in, every branch's output out.

    python scripts/parallel_inference_hf_lora.py --base_model out/models/SmolLM2-135M-Instruct \\
        --data_path prompts.jsonl --out_path out/results.jsonl --no_patch_rope
    python scripts/parallel_inference_hf_lora.py --base_model <folder> --lora_path out/lora/hf_lora_hf_final.pth \\
        --data_path prompts.jsonl --out_path out/results.jsonl --batch_size 16
    torchrun --nproc_per_node 8 scripts/parallel_inference_hf_lora.py --base_model <folder> \\
        --lora_path out/lora/x.pth --data_path data.jsonl --out_path out/results.jsonl \\
        --batch_size 8 --batch_by_samples --max_branches_per_sample 12 --min_branches_per_sample 2

Input, one record per line: {"main", "branches"} or {"branches"} (a sample, decoded whole), or {"text"}
(also {"prompt"} / {"question"}, or a plain text file): one prompt, grouped with the next ones into
samples of --branches_per_sample, or of a seeded random size in [--min_branches_per_sample,
--max_branches_per_sample]. Output: one JSON record per input record, in input order, with the input
fields plus "line", and "outputs" / "finish_reasons" / "num_new_tokens" (one per branch) for a sample,
"output" / "finish_reason" / "num_new_tokens" / "sample" / "branch" for a prompt
(parallel_data/batch_inference.py). The output is written atomically, and an existing one is kept
unless --overwrite is given.

Decoding is the parallel engine (model/parallel_generation.py): every branch of a sample gets one
token per forward, with the columnar mask (branches see each other's earlier tokens) or the isolated
one (a branch sees the main and itself). The 2D-RoPE settings (scheme, ratio, stride, mask) come with
the adapter or the model; flags given anyway are checked against them (a contradiction is an error),
except --branch_stride: a different stride only moves the branch coordinates, so it is used as given,
with a warning naming the trained one. A batch holds --batch_size
branches (samples with --batch_by_samples).

--branch_stride 0 is prefix sharing (isolated mask): the main is prefilled once and every branch
continues it with plain 1D positions, so ANY base model answers "main + branch" exactly as causal
decoding does. --no_patch_rope keeps a model's own rotary module: the same decoding, for a plain base
model. Non-zero branch coordinates (the default 128, columnar decoding) need a model tuned for them.

Under torchrun every rank reads the whole input and makes the same plan of batches; rank r decodes
batches r, r + W, ...; rank 0 gathers and writes everything in input order, so a run on W processes
writes exactly what one process writes (greedy, or sampling: branch j of the plan uses seed + j).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser, refuse_overwrite

PROG = "parallel_inference_hf_lora"


def build_parser() -> ArgParser:
    p = make_parser(__doc__, PROG)
    flags.add_source_args(p, hf=False, text_column=False, required=True,
                          data_help="JSONL: {main, branches} | {branches} | {text} per line (or a text file, one "
                                    "prompt per line)",
                          max_samples_help="decode only the first N records (0 = all)")
    flags.add_model_source_args(p)
    g = p.add_argument_group("prompts")
    flags.add_chat_template_arg(g, default=False, help="wrap each branch as a user turn of the tokenizer's chat "
                                                       "template (a main becomes the system turn)")
    flags.add_default_system_arg(g)
    flags.add_rope_args(p, prefix_sharing=True, patch_rope=True)
    flags.add_mask_args(p, default=None)
    flags.add_branch_args(p, default_branches=4, batch_size=16, inference=True)
    flags.add_decoding_args(p, max_new_tokens=512, batch_groups=None)
    flags.add_runtime_args(p, seed=0, distributed=True)
    flags.add_output_args(p, out_path=True, required=True,
                          out_path_help="JSONL, one record per input record, in input order (written atomically)")
    flags.add_overwrite_arg(p, "replace an existing --out_path")
    p.add_check(_check_model_and_rope)
    p.add_check(lambda a: flags.check_default_system(a, a.chat_template))
    p.add_check(_check_paths, paths=True)
    return p


def _check_model_and_rope(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        raise UsageError("give the model: --base_model FOLDER (a Hugging Face model, optionally with --lora_path) "
                         "or --model_path (a MiniMind checkpoint or saved folder)")
    if args.patch_rope is not False:
        return
    # a plain base model: each branch decodes main + branch with 1D positions (prefix sharing)
    if args.mask_mode == "columnar":
        raise UsageError("--no_patch_rope keeps 1D positions, so branches cannot be told apart under --mask columnar; "
                         "use --mask isolated (the default with --no_patch_rope)")
    if args.branch_stride not in (None, 0):
        raise UsageError(f"--branch_stride {args.branch_stride} needs 2D RoPE, but --no_patch_rope keeps 1D positions "
                         "(every branch coordinate is 0)")
    for name in ("rope_2d_ratio", "rope_2d_scheme", "pe"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name} would be ignored: --no_patch_rope keeps the model's own rotary module")
    args.branch_stride, args.mask_mode = 0, "isolated"


def _check_paths(args) -> None:
    if args.model_path is not None and Path(args.model_path).is_file() and args.patch_rope is not None:
        raise UsageError("--patch_rope/--no_patch_rope apply to Hugging Face models (--base_model); a MiniMind "
                         "checkpoint carries its own position encoding")
    refuse_overwrite(args.out_path, "--out_path", args.overwrite)


# --- the run ------------------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _decoding_settings(args, loaded) -> tuple[str, int]:
    """(mask mode, branch stride) to decode with: prefix sharing for a plain model or --branch_stride 0,
    else the model's own settings (a --mask flag was checked against them when the model loaded)."""
    from model.rope_settings import is_patched

    if loaded.kind == "hf" and not is_patched(loaded.model):
        if args.mask_mode == "columnar" or args.branch_stride not in (None, 0):
            flag = "--mask columnar" if args.mask_mode == "columnar" else f"--branch_stride {args.branch_stride}"
            raise ValueError(f"{loaded.source} runs without 2D RoPE (its adapter was trained so, or --no_patch_rope): "
                             f"{flag} needs branch coordinates; drop it (every branch then continues its main with "
                             "1D positions)")
        return "isolated", 0
    if args.branch_stride == 0:
        return "isolated", 0
    stride = loaded.branch_stride
    if args.branch_stride is not None and args.branch_stride != stride:
        # a stride only moves the branch coordinates the positions are built with: honoured, with a warning
        _log(f"warning: {loaded.source} was trained with branch_stride={stride}; decoding with --branch_stride "
             f"{args.branch_stride} as given (branch coordinates the model was not trained with)")
        stride = args.branch_stride
    if args.mask_mode is not None:
        return args.mask_mode, stride
    saved = loaded.mask_mode if loaded.kind == "hf" else getattr(loaded.model.config, "mask_mode", "columnar")
    return saved, stride


def _untuned_note(args, loaded, mask: str, stride: int) -> str | None:
    """A line for a base model decoded at non-zero branch coordinates (it was never tuned for them)."""
    if loaded.kind != "hf" or stride == 0 or args.lora_path is not None:
        return None
    cfg = Path(loaded.source) / "config.json"
    if cfg.is_file() and "parallelmind" in json.loads(cfg.read_text()):
        return None
    return (f"note: {loaded.source} carries no 2D-RoPE settings (a base model, not tuned for parallel decoding): "
            f"with --mask {mask} and branch stride {stride} its branches may mix up or ignore the main; "
            "--branch_stride 0 gives exact causal answers from any base model")


def _first_error(error: BaseException | None, device) -> None:
    """Every rank learns whether one failed; the failing rank raises its own error, the others stop too."""
    from trainer.distributed import all_reduce

    failed = all_reduce([1.0 if error is not None else 0.0], "max", device=device)[0]
    if error is not None:
        raise error
    if failed:
        raise SystemExit("stopped: another rank failed (its error is printed above)")


def _prepare(gen, plan_shard, records, args, stride: int) -> list[list[tuple[object, dict]]]:
    """Render (chat template) and tokenise this rank's samples, checking each: -> per batch [(sample, ids)]."""
    from parallel_data.io import DataError
    from parallel_data.prompts import PromptSample, render_sample

    out = []
    for batch in plan_shard:
        items = []
        for s in batch:
            where = f"{args.data_path}:{records[s.records[0]].line}"
            try:
                rendered = render_sample(PromptSample(s.branches, s.main, where), gen.tokenizer, args.chat_template,
                                         args.default_system)
                if not rendered["main"]:
                    del rendered["main"]  # no main: the branches take slots 0..n-1
                ids, _ = gen.tokenize_sample(rendered, s.index, stride)
            except ValueError as e:
                line = records[s.records[0]].line
                raise DataError(str(e).replace(f"sample {s.index}: ", "", 1), path=args.data_path, line=line) from None
            items.append((s, ids))
        out.append(items)
    return out


def _decode(gen, batches, args, params, progress) -> dict[int, list[tuple[str, str, int]]]:
    """Decode this rank's batches, each in a session of its own: -> {sample index: [(text, finish, n)]}."""
    import torch

    results: dict[int, list[tuple[str, str, int]]] = {}
    with torch.no_grad():
        for batch in batches:
            session = gen.session(stream_text=False)
            handles = [(s, session.add(ids, params, max_new_tokens=args.max_new_tokens, stop_strings=args.stop,
                                       seed=args.seed + s.first_branch)) for s, ids in batch]
            while not session.idle:
                session.step()
            for s, h in handles:
                results[s.index] = [(b.text, b.finish_reason, b.num_new_tokens) for b in h.result.branches]
            progress.update(1)
    return results


def run(args, records, plan, dist_info) -> int:
    from tqdm import tqdm

    from model.loading import load_parallel_model
    from model.parallel_generation import ParallelGenerator
    from parallel.sampling import SamplingParams
    from parallel_data.batch_inference import merge_results, output_records
    from parallel_data.io import AtomicJsonlWriter
    from trainer.distributed import barrier, gather_objects

    prefix_sharing = args.branch_stride == 0
    loaded = load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                                 lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                                 device=dist_info.device, dtype=args.dtype, rope_2d_ratio=args.rope_2d_ratio,
                                 rope_2d_scheme=args.rope_2d_scheme, pe=args.pe, patch_rope=args.patch_rope,
                                 mask_mode=None if prefix_sharing else args.mask_mode)  # the stride: see below
    mask, stride = _decoding_settings(args, loaded)
    gen = ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode=mask, branch_stride=stride,
                            align_to=args.align_to)
    shard = plan.shard(dist_info.rank, dist_info.world_size)
    if dist_info.is_main:
        _log(f"model {loaded.source} ({loaded.kind}, scheme={loaded.rope_2d_scheme}, ratio={loaded.rope_2d_ratio}), "
             f"mask {mask}, branch stride {stride}; {len(records)} records -> {len(plan.samples)} samples, "
             f"{plan.num_branches} branches, {len(plan.batches)} batches on {dist_info.world_size} process(es)")
        note = _untuned_note(args, loaded, mask, stride)
        if note:
            _log(note)
    error, prepared = None, []
    try:
        prepared = _prepare(gen, shard, records, args, stride)
    except ValueError as e:  # DataError: a sample the engine cannot lay out, named by file and line
        error = e
    _first_error(error, dist_info.device)
    params = SamplingParams(do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, repetition_penalty=args.repetition_penalty)
    barrier()
    t0 = time.perf_counter()
    with tqdm(total=len(prepared), unit="batch", desc=PROG, disable=None if dist_info.is_main else True) as bar:
        results = _decode(gen, prepared, args, params, bar)
    parts = gather_objects(results, dist_info.is_main)
    seconds = time.perf_counter() - t0
    if not dist_info.is_main:
        return 0
    merged = merge_results(parts, plan)
    out = output_records(records, plan, merged)
    with AtomicJsonlWriter(args.out_path) as w:
        for rec in out:
            w.write(rec)
    tokens = sum(n for outs in merged.values() for _, _, n in outs)
    summary = {"records": len(records), "samples": len(plan.samples), "branches": plan.num_branches,
               "batches": len(plan.batches), "new_tokens": tokens, "world_size": dist_info.world_size,
               "decode_s": round(seconds, 3), "records_per_s": round(len(records) / max(seconds, 1e-9), 3),
               "samples_per_s": round(len(plan.samples) / max(seconds, 1e-9), 3),
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "out_path": str(args.out_path)}
    _log(f"wrote {len(out)} records to {args.out_path}: {tokens} new tokens in {seconds:.2f} s "
         f"({summary['samples_per_s']} samples/s, {summary['tokens_per_s']} tokens/s)")
    _log("summary " + json.dumps(summary))
    return 0


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from parallel_data.batch_inference import plan_batches, read_records

    # the whole input is read and checked on every rank before torch and the model are loaded
    records = read_records(args.data_path, args.max_samples)
    plan = plan_batches(records, batch_size=args.batch_size, batch_by_samples=args.batch_by_samples,
                        branches_per_sample=args.branches_per_sample, min_branches=args.min_branches_per_sample,
                        max_branches=args.max_branches_per_sample, seed=args.seed)
    if args.max_branches_per_sample and not any(s.grouped for s in plan.samples):
        _log("note: every record is a sample already ({branches}); the branches-per-sample flags group single "
             "prompts ({text}) only")
    from trainer.distributed import cleanup, init_distributed

    dist_info = init_distributed(args.device, args.ddp, args.local_rank)
    finished = False
    try:
        rc = run(args, records, plan, dist_info)
        finished = True
        return rc
    finally:
        cleanup(wait=finished)  # after an error: without a barrier, so torchrun can end the others


if __name__ == "__main__":
    sys.exit(main())
