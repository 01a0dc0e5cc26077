"""Benchmark the ParallelMind core engine: layout building, mask memory and the training step.

Prints ONE JSON object on stdout (and writes it to --out if given) with four sections:

* ``layout``: time to build one batch of 8 samples x 16 branches x ~128 tokens (lengths +-25%) WITH
  labels via `build_flat_linear_layout`, from token ids and from text (repo tokenizer in model/),
  median and p90 over --repeats runs after warm-up; the earlier public implementation took 176 ms.
* ``mask_memory``: peak extra RSS to build the boolean [4, 1, 4096, 4096] mask with
  `build_attention_mask`, measured in a fresh subprocess (peak RSS reset through
  /proc/self/clear_refs, else getrusage), plus build time; on CUDA also a compiled FlexAttention
  BlockMask (torch.cuda.max_memory_allocated delta). The original public ParallelMind release peaks at 621 MB.
* ``train_step``: the tiny MiniMind config (hidden 256, 4 layers, 8 heads, 2 KV heads, vocab 6400;
  fp32 on CPU, bf16 autocast on CUDA) on 4 samples x 4 branches x 256 tokens, AdamW,
  forward + loss + backward + step; rows (a) columnar mask + 2D positions (mask construction inside
  the timed step), (b) plain causal SDPA on the same tokens as one flat sequence, alternated
  a, b, a, b, ...; (c) FlexAttention BlockMask on CUDA only. Reports median tokens/s and the ratio.
* ``env``: torch version, threads, device, CPU model, date, load average.

Usage (from the repo root):

    python scripts/bench_columnar.py                      # full run (about a minute on 2 idle CPU cores)
    python -m scripts.bench_columnar --quick              # tiny sizes: a smoke run in a few seconds
    python scripts/bench_columnar.py --threads 2 --steps 12 --repeats 30 --out out/bench_columnar.json
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evaluation.benchmarking import add_benchmark_args, emit_json, environment, loadavg, summary_ms
from trainer.cli import ArgParser, cli_main, make_parser

REPO_ROOT = Path(__file__).resolve().parents[1]

# Numbers of the original public ParallelMind release, measured on the same kind of 2-core machine.
REFERENCE = {
    "layout_ms": 176.0,
    "layout_samples_per_s": 45.0,
    "mask_float_mb": 268.0,
    "mask_peak_mb": 621.0,
    "train_seed_tokens_per_s": 1770.0,
    "train_sdpa_tokens_per_s": 3730.0,
    "train_causal_sdpa_tokens_per_s": 4250.0,
}
TARGETS = {"layout_ms_max": 9.0, "layout_speedup_min": 20.0, "mask_peak_mb_max": 70.0, "train_ratio_min": 0.95}

_WORDS = ("the quick brown fox jumps over a lazy dog while seven small birds sing about rivers mountains numbers "
          "plus minus equals answer question context branch parallel time first second then because so we can "
          "find total each step add take result is are was were one two three four five six seven eight nine ten "
          "apples books people water light house small large tree road city day night").split()


# --- helpers --------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)








# --- 1. layout ------------------------------------------------------------------------------------

def _branch_lengths(rng: random.Random, n_samples: int, n_branches: int, length: int) -> list[list[int]]:
    lo, hi = max(1, int(round(length * 0.75))), max(1, int(round(length * 1.25)))
    return [[rng.randint(lo, hi) for _ in range(n_branches)] for _ in range(n_samples)]


def _id_samples(seed: int, n_samples: int, n_branches: int, length: int, vocab: int = 6400) -> list[dict]:
    rng = random.Random(seed)
    return [{"branches": [[rng.randrange(3, vocab) for _ in range(n)] for n in lens]}
            for lens in _branch_lengths(rng, n_samples, n_branches, length)]


def _text_samples(tokenizer, seed: int, n_samples: int, n_branches: int, length: int) -> tuple[list[dict], int]:
    """Branch texts of about `length` tokens each (+-25%); -> (samples, total tokens)."""
    rng = random.Random(seed)
    # the byte-level pre-tokenizer splits before each space, so " word" costs the same inside any text
    cost = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in _WORDS}
    samples = []
    for lens in _branch_lengths(rng, n_samples, n_branches, length):
        branches = []
        for n in lens:
            words, used = [], 0
            while used < n:
                w = rng.choice(_WORDS)
                words.append(w)
                used += cost[w]
            branches.append(" " + " ".join(words))
        samples.append({"branches": branches})
    texts = [b for smp in samples for b in smp["branches"]]
    return samples, sum(len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"])


def _time_layout(tokenizer, samples, repeats: int, seed: int, warmup: int = 3) -> list[float]:
    from parallel.columnar import build_flat_linear_layout

    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        build_flat_linear_layout(tokenizer, samples, random_time_offset=True, generator=gen)
    gc.collect()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lay = build_flat_linear_layout(tokenizer, samples, random_time_offset=True, generator=gen)
        times.append(time.perf_counter() - t0)
    assert lay.labels.shape == lay.input_ids.shape
    return times


def bench_layout(args) -> dict:
    n_samples, n_branches, length = (2, 4, 16) if args.quick else (8, 16, 128)
    repeats = args.repeats
    samples = _id_samples(0, n_samples, n_branches, length)
    n_tokens = sum(len(b) for s in samples for b in s["branches"])
    out: dict = {
        "config": {"samples": n_samples, "branches": n_branches, "tokens_per_branch": f"{length} +-25%",
                   "tokens_in_batch": n_tokens, "labels": True, "random_time_offset": True,
                   "repeats": repeats, "warmup": 3},
        "reference_ms": REFERENCE["layout_ms"], "target_ms": TARGETS["layout_ms_max"], "rows": {},
    }

    def row(times: list[float], **extra) -> dict:
        r = summary_ms(times)
        r["samples_per_s"] = round(n_samples / (r["median_ms"] / 1e3), 1)
        r["speedup_vs_reference"] = round(REFERENCE["layout_ms"] / r["median_ms"], 1)
        r.update(extra)
        return r

    out["rows"]["ids"] = row(_time_layout(None, samples, repeats, seed=1), threads=torch.get_num_threads())
    # DataLoader workers run torch with one thread; small-tensor work is also steadier that way on a busy box
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
        try:
            out["rows"]["ids_1_thread"] = row(_time_layout(None, samples, repeats, seed=1), threads=1)
        finally:
            torch.set_num_threads(threads)

    try:
        from model.tokenizer import load_tokenizer

        tok = load_tokenizer()
    except (ImportError, OSError, ValueError) as e:
        out["rows"]["text"] = {"skipped": f"no repo tokenizer: {e}"}
    else:
        tsamples, t_tokens = _text_samples(tok, 0, n_samples, n_branches, length)
        out["rows"]["text"] = row(_time_layout(tok, tsamples, repeats, seed=1), threads=threads,
                                  tokens_in_batch=t_tokens, note="includes tokenisation (one batched call)")
        texts = [b for smp in tsamples for b in smp["branches"]]
        times = []
        for i in range(3 + repeats):
            t0 = time.perf_counter()
            tok(texts, add_special_tokens=False)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        out["rows"]["text_tokenizer_only"] = {**summary_ms(times), "note": "the tokenizer call alone, for scale"}
    return out


# --- 2. mask memory ---------------------------------------------------------------------------------

def _rss_kb() -> int:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def mask_memory_child(batch: int, n_branches: int, length: int, repeats: int, threads: int) -> None:
    """Runs in a fresh interpreter: print JSON with the peak extra RSS of building the masks."""
    from parallel.layout import build_flat_linear_layout
    from parallel.masks import build_attention_mask

    if threads > 0:
        torch.set_num_threads(threads)
    lay = build_flat_linear_layout(None, [{"branches": [[7] * length] * n_branches}] * batch)  # T = n * length
    tids, bids = lay.time_ids, lay.branch_ids
    res: dict = {"shape": [batch, 1, tids.shape[1], tids.shape[1]]}
    # warm the code path on a tiny input so first-call allocations do not count
    build_attention_mask(tids[:, :64], bids[:, :64], "columnar")
    build_attention_mask(tids[:, :64], bids[:, :64], "columnar", dtype=torch.float32)
    for name, dtype in (("bool", torch.bool), ("additive_float32", torch.float32)):
        gc.collect()
        base = _rss_kb()
        exact = _reset_peak()
        before_peak = _peak_kb()
        t0 = time.perf_counter()
        mask = build_attention_mask(tids, bids, "columnar", dtype=dtype)
        first = time.perf_counter() - t0
        peak = _peak_kb()
        mask_bytes = mask.numel() * mask.element_size()
        del mask
        gc.collect()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m = build_attention_mask(tids, bids, "columnar", dtype=dtype)
            times.append(time.perf_counter() - t0)
            del m
        res[name] = {
            "peak_extra_mb": round((peak - base) * 1024 / 1e6, 2),
            "mask_tensor_mb": round(mask_bytes / 1e6, 2),
            "overhead_mb": round(((peak - base) * 1024 - mask_bytes) / 1e6, 2),
            "first_build_ms": round(first * 1e3, 2),
            "build": summary_ms(times),
            "peak_method": "VmHWM after /proc/self/clear_refs" if exact else
                           f"ru_maxrss (not reset; peak before {before_peak} KB)",
        }
    print(json.dumps(res))


def bench_mask_memory(args, device: torch.device) -> dict:
    batch, n_branches, length = (2, 4, 64) if args.quick else (4, 16, 256)
    repeats = 3 if args.quick else 5
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from scripts.bench_columnar import mask_memory_child; "
            "mask_memory_child(*map(int, sys.argv[2:]))")
    cmd = [sys.executable, "-c", code, str(REPO_ROOT), str(batch), str(n_branches), str(length), str(repeats),
           str(args.threads or torch.get_num_threads())]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO_ROOT), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"mask memory subprocess failed:\n{proc.stderr[-2000:]}")
    cpu = json.loads(proc.stdout.strip().splitlines()[-1])
    T = n_branches * length
    out = {
        "config": {"batch": batch, "branches": n_branches, "tokens_per_branch": length, "T": T,
                   "mode": "columnar", "measured_in": "fresh subprocess"},
        "reference_float_mask_mb": REFERENCE["mask_float_mb"], "reference_peak_mb": REFERENCE["mask_peak_mb"],
        "target_peak_mb": TARGETS["mask_peak_mb_max"], "cpu": cpu,
    }
    if device.type == "cuda":
        out["cuda_flex"] = _cuda_flex_mask_memory(batch, n_branches, length, device)
    else:
        out["cuda_flex"] = {"skipped": "no CUDA"}
    return out


def _cuda_flex_mask_memory(batch: int, n_branches: int, length: int, device: torch.device) -> dict:
    from parallel.columnar import build_flat_linear_layout, build_flex_block_mask

    lay = build_flat_linear_layout(None, [{"branches": [[7] * length] * n_branches}] * batch, device)
    t0 = time.perf_counter()
    build_flex_block_mask(lay.time_ids, lay.branch_ids, "columnar", compile=True)  # compiles
    _sync(device)
    compile_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    bm = build_flex_block_mask(lay.time_ids, lay.branch_ids, "columnar", compile=True)
    _sync(device)
    build_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) - base
    T = n_branches * length
    return {"peak_extra_mb": round(peak / 1e6, 3), "build_ms": round(build_s * 1e3, 2),
            "first_build_with_compile_s": round(compile_s, 2), "block_size": 128,
            "blocks": [batch, (T + 127) // 128, (T + 127) // 128], "dense_bool_mb": round(batch * T * T / 1e6, 1),
            "sparsity": round(float(bm.sparsity()), 2) if hasattr(bm, "sparsity") else None}


# --- 3. training step --------------------------------------------------------------------------------

def _step_kwargs(kind: str, batch: dict) -> dict:
    """The forward's mask and label arguments for one row (the mask is built inside the timed step)."""
    from parallel.columnar import build_attention_mask, build_flex_block_mask

    lay = batch["layout"]
    if kind == "causal":
        return dict(attention_mask=None, labels=batch["flat_labels"])
    build = build_attention_mask if kind == "columnar" else build_flex_block_mask
    return dict(attention_mask=build(lay.time_ids, lay.branch_ids, "columnar"), position_ids=batch["position_ids"],
                labels=lay.labels, token_mask=lay.token_mask)


def _timed_train_step(model, opt, kind: str, batch: dict, n_targets: int, device: torch.device,
                      amp_dtype) -> tuple[float, float, float]:
    """One optimizer step as trainer/loss.batch_loss computes it (summed CE at the targets only, token-weighted)
    -> (step seconds, mask-build seconds, loss)."""
    t0 = time.perf_counter()
    kw = _step_kwargs(kind, batch)
    _sync(device)
    t_mask = time.perf_counter() - t0
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(batch["ids"], use_cache=False, compute_logits=False, loss_reduction="sum", **kw)
        loss = out.loss / n_targets
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t0, t_mask, float(loss.detach())


def _step_rows(times: dict[str, list], tokens_per_step: int) -> dict:
    """Median / p90 step time, tokens/s, last loss and mask-build time of each row."""
    res_rows = {}
    for name, rs in times.items():
        step_s = statistics.median(r[0] for r in rs)
        res_rows[name] = {"median_step_ms": round(step_s * 1e3, 1),
                          "p90_step_ms": summary_ms([r[0] for r in rs])["p90_ms"],
                          "median_tokens_per_s": round(tokens_per_step / step_s, 1),
                          "last_loss": round(rs[-1][2], 4), "steps": len(rs)}
        if name != "causal_sdpa":
            res_rows[name]["median_mask_build_ms"] = round(statistics.median(r[1] for r in rs) * 1e3, 2)
    return res_rows


def _train_bench_shape(quick: bool) -> tuple[dict, tuple[int, int, int, int]]:
    """The model config and (samples, branches, tokens per branch, warm-up steps) of the training row."""
    if quick:
        return (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     vocab_size=512, query_chunk_size=32), (2, 2, 32, 1))
    return (dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                 vocab_size=6400), (4, 4, 256, 2))


def bench_train_step(args, device: torch.device) -> dict:
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from parallel.columnar import build_flat_linear_layout

    cfg_kw, (n_samples, n_branches, length, warmup) = _train_bench_shape(args.quick)
    steps = args.steps
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda else None

    rng = random.Random(0)
    samples = [{"branches": [[rng.randrange(3, cfg_kw["vocab_size"]) for _ in range(length)]
                             for _ in range(n_branches)]} for _ in range(n_samples)]
    lay = build_flat_linear_layout(None, samples, device)
    ids = lay.input_ids
    B, T = ids.shape
    pos = lay.position_ids()
    flat_labels = torch.full_like(ids, -100)
    flat_labels[:, :-1] = ids[:, 1:]
    n_targets = {"columnar": int((lay.labels != -100).sum()), "causal": int((flat_labels != -100).sum())}
    n_targets["flex"] = n_targets["columnar"]

    def step(kind: str, **extra):
        torch.manual_seed(0)
        model = MiniMindForCausalLM(MiniMindConfig(**cfg_kw, **extra)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = {"ids": ids, "layout": lay, "position_ids": pos, "flat_labels": flat_labels}
        return functools.partial(_timed_train_step, model, opt, kind, batch, n_targets[kind], device, amp_dtype)

    rows = {"columnar": step("columnar"), "causal_sdpa": step("causal")}
    if cuda:
        rows["flex"] = step("flex", use_flex_attention=True)
    times: dict[str, list] = {k: [] for k in rows}
    for i in range(warmup + steps):
        for name, fn in rows.items():  # alternate a, b, (c), a, b, ...
            r = fn()
            if i >= warmup:
                times[name].append(r)
    res_rows = _step_rows(times, B * T)
    if not cuda:
        res_rows["flex"] = {"skipped": "CUDA only (FlexAttention is compiled for GPUs; on CPU it is a slow reference)"}
    ratio = res_rows["columnar"]["median_tokens_per_s"] / res_rows["causal_sdpa"]["median_tokens_per_s"]
    out = {
        "config": {**cfg_kw, "samples": n_samples, "branches": n_branches, "tokens_per_branch": length,
                   "T": T, "tokens_per_step": B * T, "dtype": "bf16 autocast" if cuda else "fp32",
                   "optimizer": "AdamW", "warmup_steps": warmup, "measured_steps": steps,
                   "loss": "summed CE at the targets / number of targets (compute_logits=False, as in "
                           "trainer/loss.batch_loss)",
                   "targets_per_step": {"columnar": n_targets["columnar"], "causal_sdpa": n_targets["causal"]},
                   "order": "alternating " + ", ".join(rows),
                   "columnar_step_includes": "mask construction + forward + loss + backward + optimizer step"},
        "rows": res_rows,
        "ratio_columnar_vs_causal": round(ratio, 3),
        "target_ratio": TARGETS["train_ratio_min"],
        "reference_tokens_per_s": {"seed_era": REFERENCE["train_seed_tokens_per_s"],
                                   "later_sdpa": REFERENCE["train_sdpa_tokens_per_s"],
                                   "plain_causal_sdpa": REFERENCE["train_causal_sdpa_tokens_per_s"]},
    }
    if "flex" in times and times["flex"]:
        out["ratio_flex_vs_causal"] = round(res_rows["flex"]["median_tokens_per_s"]
                                            / res_rows["causal_sdpa"]["median_tokens_per_s"], 3)
    return out


# --- 4. env and main --------------------------------------------------------------------------------

def build_parser() -> ArgParser:
    p = make_parser(__doc__, "bench_columnar")
    add_benchmark_args(p, repeats=30, quick_repeats=3, steps=12, quick_steps=2,
                       steps_help="measured training steps per row after the warm-up steps")
    return p


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from model.device import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    result: dict = {"benchmark": "scripts/bench_columnar.py", "settings": dict(vars(args)),
                    "quick": args.quick, "env": environment(device)}
    result["layout"] = bench_layout(args)
    result["mask_memory"] = bench_mask_memory(args, device)
    result["train_step"] = bench_train_step(args, device)
    result["env"]["loadavg_end"] = loadavg()
    layout_ms = result["layout"]["rows"]["ids"]["median_ms"]
    result["targets_met"] = {
        "layout_ms_le_9": layout_ms <= TARGETS["layout_ms_max"],
        "mask_peak_mb_le_70": result["mask_memory"]["cpu"]["bool"]["peak_extra_mb"] <= TARGETS["mask_peak_mb_max"],
        "train_ratio_ge_0.95": result["train_step"]["ratio_columnar_vs_causal"] >= TARGETS["train_ratio_min"],
    }
    emit_json(result, args.out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
