"""Benchmark the training pipeline: data-pipeline samples/s and train_pretrain tokens/s (JSON output).

    python scripts/bench_train.py --out out/bench_train.json
    python scripts/bench_train.py --quick            # a smoke run

1. `data`: the real batch stream (JSONL source -> tokenisation -> branch grouping -> vectorised layout with
   labels), no model: samples/s, texts/s and batches/s, median over repeats.
2. `train`: `trainer/train_pretrain.py` itself (the shared engine, DataLoader worker included) on the tiny
   config (hidden 256, 4 layers, 8 heads, 2 KV heads) with 4 samples x 4 branches per step, fp32 on CPU
   (bf16 on CUDA); tokens/s read from its metrics JSONL (median of the logged windows after warm-up).
   With --also_26m on a GPU, the 26M config (512 hidden, 8 layers) in bf16 as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from evaluation.benchmarking import add_benchmark_args
from trainer.cli import ArgParser, cli_main, make_parser

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "256", "--num_hidden_layers", "4", "--num_attention_heads", "8", "--num_key_value_heads", "2"]
BIG = ["--hidden_size", "512", "--num_hidden_layers", "8", "--num_attention_heads", "8", "--num_key_value_heads", "2"]


def ensure_data(quick: bool, tmp: Path) -> Path:
    """The bundled pretraining corpus (built if missing); --quick uses a small one in a temporary folder."""
    if quick:
        from parallel_data.demo.corpus import build_pretrain

        path = tmp / "pretrain_small.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in build_pretrain(7, 600)))
        return path
    path = ROOT / "dataset" / "pretrain_demo.jsonl"
    from model.tokenizer import DEFAULT_TOKENIZER_DIR
    from parallel_data.demo.corpus import corpus_is_current

    if not corpus_is_current(ROOT / "dataset", DEFAULT_TOKENIZER_DIR / "tokenizer.json"):  # missing or stale
        subprocess.run([sys.executable, "scripts/build_demo_data.py"], cwd=ROOT, check=True)
    return path


def bench_data(path: Path, repeats: int, batches: int) -> dict:
    from model.tokenizer import load_tokenizer
    from parallel_data.parallel_dataset import ParallelPretrainDataset
    from parallel_data.stream import GroupingConfig, ParallelBatchStream

    tok = load_tokenizer()
    ds = ParallelPretrainDataset(tok, data_path=str(path), max_seq_len=256)
    grouping = GroupingConfig(batch_size=8, min_branches=1, max_branches=16, batch_by_samples=True)
    rates = []
    for r in range(repeats):
        stream = ParallelBatchStream(ds, grouping, dict(tokenizer=tok, branch_stride=128, random_time_offset=True),
                                     rank=0, world_size=1, epochs=1, seed=r)
        n_s = n_t = 0
        t0 = time.perf_counter()
        for i, b in enumerate(stream):
            n_s += b["num_samples"]
            n_t += b["num_texts"]
            if i + 1 >= batches:
                break
        dt = time.perf_counter() - t0
        rates.append((n_s / dt, n_t / dt, (i + 1) / dt))
    return {"samples_per_s": statistics.median(x[0] for x in rates),
            "texts_per_s": statistics.median(x[1] for x in rates),
            "batches_per_s": statistics.median(x[2] for x in rates), "repeats": repeats, "batches_per_repeat": batches,
            "setting": "8 samples per batch, 1..16 branches each, max_seq_len 256, random time offsets, 1 process"}


def bench_train(path: Path, model_flags: list[str], steps: int, device: str, dtype: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "trainer/train_pretrain.py", "--data_path", str(path), "--out_dir", out, *model_flags,
               "--batch_size", "4", "--batch_by_samples", "--branches_per_sample", "4", "--max_seq_len", "256",
               "--max_steps", str(steps), "--log_interval", "2", "--save_interval", "100000", "--num_workers", "1",
               "--device", device, "--dtype", dtype]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"train_pretrain failed:\n{r.stderr[-2000:]}")
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in (Path(out) / f"pretrain_{model_flags[1]}_metrics.jsonl").read_text()
                .splitlines() if x.strip()]
    windows = [m["tokens_per_s"] for m in recs if "tokens_per_s" in m][1:]  # skip the warm-up window
    return {"tokens_per_s": statistics.median(windows), "windows": windows, "steps": steps, "wall_s": round(wall, 1),
            "command": " ".join(["python", *cmd[1:]]).replace(str(path), "dataset/pretrain_demo.jsonl")}


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_train")
    add_benchmark_args(p, repeats=5, quick_repeats=2, steps=24, quick_steps=5, threads=False)
    p.add_argument("--also_26m", action="store_true", help="also the 26M config (GPU, bf16)")
    return p



@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from evaluation.benchmarking import emit_json, environment
    from model.device import resolve_device

    args.device = str(resolve_device(args.device))
    tmp = tempfile.TemporaryDirectory()
    path = ensure_data(args.quick, Path(tmp.name))
    res = {"data": bench_data(path, args.repeats, 5 if args.quick else 60)}
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    res["train_tiny"] = bench_train(path, TINY if not args.quick else
                                    ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
                                     "--num_key_value_heads", "2"], args.steps, args.device, dtype)
    if args.also_26m:
        res["train_26m"] = bench_train(path, BIG, args.steps, args.device, "bfloat16")
    res["env"] = environment(args.device)
    emit_json(res, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
