"""Benchmark scripts/parallel_inference_hf_lora.py: samples/s on 1 process against 2 processes (torchrun).

Rows, each a fresh run of the real script on the same input (--records prompts of real text, grouped
into samples of --branches_per_sample, --batch_size branches per batch, --max_new_tokens each, greedy):

* ``1proc_1thread``: `python scripts/parallel_inference_hf_lora.py ...` with one torch thread;
* ``1proc_2threads``: the same with two threads (the same cores as two processes, used the other way);
* ``2proc_1thread``: `torchrun --nproc_per_node 2` (gloo on CPU, NCCL on CUDA), one thread per process.

Each repeat runs every row once, the order rotated per repeat. Reported per row: the medians of the
script's own summary (decode seconds: from the first batch to the gathered results, model loading
excluded; samples/s, records/s and new tokens/s over that time) and of the wall time of the whole
command (start-up, model loading and writing included), and the ratios of the medians against
``1proc_1thread``. Every run's output file must be byte-identical to the first one's (a 2-process run
writes exactly what one process writes), or the benchmark fails.

    python scripts/bench_batch_inference.py --base_model out/models/SmolLM2-135M-Instruct \\
        --out_path out/bench_batch_inference_smollm2.json
    python scripts/bench_batch_inference.py --tiny_model --out_path out/bench_batch_inference_tiny.json
    python scripts/bench_batch_inference.py --quick                   # a smoke run (numbers are meaningless)
    python scripts/bench_batch_inference.py --base_model <folder> --device cuda --setups 1proc_1thread
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"1proc_1thread": (1, 1), "1proc_2threads": (1, 2), "2proc_1thread": (2, 1)}
SUBJECTS = ["the capital of France", "how rain forms", "why the sky is blue", "the rules of chess",
            "photosynthesis", "the water cycle", "prime numbers", "the moon's phases", "a healthy breakfast",
            "how bridges carry weight", "the history of paper", "volcanoes", "how a bicycle works",
            "the speed of sound", "honey bees", "the seasons"]
STYLES = ["Explain {} in one sentence.", "Write two short facts about {}.", "What should a child know about {}?",
          "Describe {} simply."]
TINY = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def build_parser() -> ArgParser:
    from evaluation.benchmarking import add_benchmark_args, add_tiny_model_arg

    p = make_parser(__doc__, "bench_batch_inference")
    flags.add_model_source_args(p, checkpoint=False, lora=False, tokenizer=False)
    g = p.add_argument_group("workload")
    add_tiny_model_arg(g, "a random Llama config with the repo's tokenizer (saved to a temporary folder) instead "
                          "of --base_model")
    g.add_argument("--records", type=flags.positive_int, default=None, help="prompts in the input (default 64)")
    flags.add_max_new_tokens_arg(g, None, minimum=1)  # default 32 (--quick: 4)
    g.add_argument("--setups", dest="rows", type=_rows, default=list(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    # the script's own grouping and batch flags, passed on to every run
    flags.add_branch_args(p, default_branches=4, batch_size=8, training=False, inference=True)
    add_benchmark_args(p, repeats=3, quick_repeats=1, threads=False, seed=0, device="cpu")
    p.add_check(_check)
    return p


def _rows(text: str) -> list[str]:
    rows = [r for r in text.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise argparse.ArgumentTypeError(f"unknown row(s) {bad or text!r}; choose from {','.join(ROWS)}")
    return rows


def _check(args) -> None:
    if args.quick and args.hf_base_model is None:
        args.tiny_model = True
    if (args.hf_base_model is None) != args.tiny_model:
        raise UsageError("give the model: --base_model FOLDER (a Hugging Face model) or --tiny_model")
    if args.hf_base_model is not None and not (Path(args.hf_base_model) / "config.json").is_file():
        raise UsageError(f"--base_model {args.hf_base_model}: no config.json there (a Hugging Face model folder)")
    args.records = args.records or (16 if args.quick else 64)
    args.max_new_tokens = args.max_new_tokens or (4 if args.quick else 32)


def grouping_flags(args) -> list[str]:
    """The grouping and batch flags given to the bench, as flags of parallel_inference_hf_lora.py."""
    out = ["--batch_size", str(args.batch_size), "--branches_per_sample", str(args.branches_per_sample)]
    if args.batch_by_samples:
        out.append("--batch_by_samples")
    if args.max_branches_per_sample:
        out += ["--max_branches_per_sample", str(args.max_branches_per_sample),
                "--min_branches_per_sample", str(args.min_branches_per_sample)]
    return out


def write_inputs(path: Path, n: int) -> None:
    lines = [json.dumps({"text": STYLES[(i // len(SUBJECTS)) % len(STYLES)].format(SUBJECTS[i % len(SUBJECTS)])})
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def build_tiny(folder: Path, quick: bool, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from model.tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(**(QUICK if quick else TINY), vocab_size=len(tok), max_position_embeddings=4096,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def run_once(args, row: str, model: str, data: Path, out: Path) -> dict:
    procs, threads = ROWS[row]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc_per_node", str(procs)]
    cmd = [*launcher, str(ROOT / "scripts" / "parallel_inference_hf_lora.py"), "--base_model", model,
           "--data_path", str(data), "--out_path", str(out), "--overwrite", "--branch_stride", "0",
           *grouping_flags(args), "--max_new_tokens", str(args.max_new_tokens), "--seed", str(args.seed), "--device", args.device or "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{row} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    lines = [ln for ln in proc.stderr.splitlines() if "summary {" in ln]
    if not lines:
        raise SystemExit(f"{row}: no summary line in the script's output")
    return {**json.loads(lines[-1].split("summary ", 1)[1]), "wall_s": wall}


def summarise(runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("decode_s", "wall_s")}
    first = runs[0]
    return {"samples_per_s": round(first["samples"] / med["decode_s"], 3),
            "records_per_s": round(first["records"] / med["decode_s"], 3),
            "new_tokens_per_s": round(statistics.median(r["new_tokens"] / r["decode_s"] for r in runs), 1),
            "decode_median_s": round(med["decode_s"], 3), "wall_median_s": round(med["wall_s"], 3),
            "decode_s": [round(r["decode_s"], 3) for r in runs], "wall_s": [round(r["wall_s"], 3) for r in runs],
            "samples": first["samples"], "records": first["records"], "batches": first["batches"]}


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from evaluation.benchmarking import emit_json, environment, loadavg

    with tempfile.TemporaryDirectory(prefix="bench_batch_inference_") as tmp:
        tmp = Path(tmp)
        model = args.hf_base_model
        if model is None:
            model = str(tmp / "tiny")
            build_tiny(Path(model), args.quick, args.seed)
        data = tmp / "in.jsonl"
        write_inputs(data, args.records)
        result = {"config": {"model": args.hf_base_model or f"tiny random Llama {QUICK if args.quick else TINY}",
                             "records": args.records, "grouping": grouping_flags(args),
                             "max_new_tokens": args.max_new_tokens,
                             "repeats": args.repeats, "rows": args.rows, "branch_stride": 0, "mask": "isolated"},
                  "env": environment(args.device or "cpu")}
        runs: dict[str, list[dict]] = {row: [] for row in args.rows}
        reference: bytes | None = None
        for r in range(args.repeats):
            for row in args.rows[r % len(args.rows):] + args.rows[:r % len(args.rows)]:
                out = tmp / f"{row}_{r}.jsonl"
                runs[row].append(run_once(args, row, model, data, out))
                got = out.read_bytes()
                reference = got if reference is None else reference
                if got != reference:
                    raise SystemExit(f"{row} (repeat {r}) wrote other outputs than the first run")
        rows = {row: summarise(v) for row, v in runs.items()}
        base = rows.get("1proc_1thread")
        if base:
            for res in rows.values():
                res["samples_per_s_vs_1proc_1thread"] = round(res["samples_per_s"] / base["samples_per_s"], 3)
                res["wall_vs_1proc_1thread"] = round(res["wall_median_s"] / base["wall_median_s"], 3)
        result["rows"] = rows
        result["outputs_identical"] = True
        result["env"]["loadavg_end"] = loadavg()
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
