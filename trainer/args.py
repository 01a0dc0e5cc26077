"""Command-line flags shared by the trainers (and evaluation scripts), grouped by concern.

Hyphenated seed flags accept both spellings (`--hf-dataset` / `--hf_dataset`). Model-shape flags
default to None so the code can tell "given" from "default": a checkpoint carries its own config, and
an explicit flag that contradicts it is an error rather than silently ignored.
"""

from __future__ import annotations

import argparse

MODEL_DEFAULTS = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                      use_moe=False, pe="rope", rope_2d_ratio=0.5, rope_2d_scheme="additive", branch_stride=None,
                      fpe_theta=1e4, fpe_max_positions=512, fpe_learnable=False)


def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


def positive_int(v) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return i


def nonneg_int(v) -> int:
    i = int(v)
    if i < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return i


def ratio(v) -> float:
    f = float(v)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], got {v}")
    return f


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (a checkpoint's own config wins; a contradicting flag is an error)")
    g.add_argument("--hidden_size", type=positive_int, default=None, help="default 512")
    g.add_argument("--num_hidden_layers", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_attention_heads", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_key_value_heads", type=positive_int, default=None, help="default 2")
    g.add_argument("--use_moe", type=str2bool, nargs="?", const=True, default=None,
                   help="mixture of experts (4 routed + 1 shared, top-2); `--use_moe` or `--use_moe false`")
    g.add_argument("--pe", choices=["rope", "fpe"], default=None, help="2D RoPE (default) or Fourier branch embedding")
    g.add_argument("--rope_2d_ratio", type=ratio, default=None,
                   help="share of rotary pairs that carry the branch coordinate (default 0.5)")
    g.add_argument("--rope_2d_scheme", choices=["additive", "reference"], default=None,
                   help="additive (default: one branch == the plain model) or reference (the earlier code's math)")
    g.add_argument("--branch_stride", type=positive_int, default=None,
                   help="branch coordinate step (default 128 for rope, 1 for fpe)")
    g.add_argument("--fpe_theta", type=float, default=None)
    g.add_argument("--fpe_max_positions", type=positive_int, default=None)
    g.add_argument("--fpe_learnable", type=str2bool, nargs="?", const=True, default=None)
    g.add_argument("--use_flex_attention", action="store_true", help="FlexAttention BlockMask on CUDA")
    g.add_argument("--gradient_checkpointing", action="store_true")


def add_branch_args(p: argparse.ArgumentParser, default_branches: int) -> None:
    g = p.add_argument_group("branches and layout")
    g.add_argument("--branches_per_sample", type=positive_int, default=default_branches,
                   help="fixed number of branches per sample")
    g.add_argument("--max_branches_per_sample", type=positive_int, default=None,
                   help="dynamic mode: a seeded random count in [min, max] per sample")
    g.add_argument("--min_branches_per_sample", type=positive_int, default=1)
    g.add_argument("--val_branches_per_sample", type=positive_int, default=None)
    g.add_argument("--val_max_branches_per_sample", type=positive_int, default=None)
    g.add_argument("--val_min_branches_per_sample", type=positive_int, default=None)
    g.add_argument("--batch_by_samples", action="store_true", help="batch_size counts samples, not texts")
    g.add_argument("--max_total_tokens", type=nonneg_int, default=0,
                   help="cap on tokens per sample (0 = off); longer samples lose every branch's tail, counted")
    g.add_argument("--align_to", choices=["left", "right"], default="left")
    g.add_argument("--random_time_offset", dest="random_time_offset", action="store_true", default=True,
                   help="seeded random start offset per branch (default on)")
    g.add_argument("--no_random_time_offset", dest="random_time_offset", action="store_false")
    g.add_argument("--random_branch_slots", type=nonneg_int, default=0,
                   help="train on random sorted coordinate slots out of this many (0 = off): lets a model trained "
                        "with few branches per sample run with up to this many at inference")
    g.add_argument("--mask", choices=["columnar", "isolated"], default="columnar", dest="mask_mode",
                   help="columnar: branches see each other's earlier tokens; isolated: own branch + main only")


def add_data_args(p: argparse.ArgumentParser, default_data: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data_path", default=default_data, help="local JSONL file")
    g.add_argument("--hf-dataset", "--hf_dataset", dest="hf_dataset", default=None,
                   help="Hugging Face dataset name (streamed) or a local file/folder read through `datasets`")
    g.add_argument("--hf-subset", "--hf_subset", dest="hf_subset", default=None)
    g.add_argument("--hf-split", "--hf_split", dest="hf_split", default="train")
    g.add_argument("--text-column", "--text_column", dest="text_column", default=None)
    g.add_argument("--max-samples", "--max_samples", dest="max_samples", type=positive_int, default=None,
                   help="use at most this many training records (chunks when packing)")
    g.add_argument("--chunk-length", "--chunk_length", dest="chunk_length", type=positive_int, default=None,
                   help="pack token ids into exact pieces of this many tokens (Hub datasets)")
    g.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    g.add_argument("--val_samples", type=nonneg_int, default=0, help="held-out records (seeded, same on every rank)")
    g.add_argument("--val_interval", type=nonneg_int, default=0, help="validate every N optimizer steps")
    g.add_argument("--val_interval_samples", type=nonneg_int, default=0, help="validate every N samples")
    g.add_argument("--val_interval_tokens", type=nonneg_int, default=0, help="validate every N target tokens")
    g.add_argument("--max_seq_len", type=positive_int, default=512,
                   help="tokens per branch: longer pretraining texts are split, longer conversations cut (counted)")
    g.add_argument("--tokenizer", "--tokenizer_path", dest="tokenizer", default=None,
                   help="tokenizer folder (default: the checkpoint's own, else the repo's model/)")
    g.add_argument("--num_workers", type=nonneg_int, default=1, help="DataLoader workers per rank")
    g.add_argument("--strict_data", action="store_true",
                   help="records that give no target token, or are cut at max_seq_len, are errors (default: "
                        "counted and reported with file and line)")


def add_train_args(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float, wandb_project: str) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out_dir", default="out")
    g.add_argument("--epochs", type=positive_int, default=epochs)
    g.add_argument("--batch_size", type=positive_int, default=batch_size)
    g.add_argument("--accumulation_steps", type=positive_int, default=1)
    g.add_argument("--learning_rate", type=float, default=lr)
    g.add_argument("--min_lr_ratio", type=ratio, default=0.1, help="cosine floor as a share of the peak LR")
    g.add_argument("--warmup_iters", type=nonneg_int, default=0, help="linear warm-up optimizer steps")
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--grad_clip", type=float, default=1.0)
    g.add_argument("--max_steps", type=nonneg_int, default=0, help="optimizer steps (0 = one pass over the data x epochs)")
    g.add_argument("--stop_after_steps", type=nonneg_int, default=0,
                   help="save and exit after this many optimizer steps of this run (the schedule is unchanged); "
                        "for preemptible or time-sliced jobs, continue with --resume")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 autocast on CUDA, float32 on CPU")
    g.add_argument("--device", default=None, help="default: cuda:<local rank> if available, else cpu")
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--ddp", action="store_true", help="DDP (launch with torchrun; detected automatically)")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1)
    g.add_argument("--log_interval", type=positive_int, default=100, help="optimizer steps between log lines")
    g.add_argument("--save_interval", type=positive_int, default=100, help="optimizer steps between checkpoints")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint + resume state in out_dir")
    g.add_argument("--overwrite", action="store_true",
                   help="replace this stage's checkpoint in out_dir (without it, an existing one stops the run)")
    g.add_argument("--resume_override", action="append", default=[], metavar="KEY",
                   help="with --resume: accept a changed setting (a flag name, e.g. learning_rate) or changed "
                        "training data ('data'); repeatable, each one logged")
    g.add_argument("--init_weight", default=None,
                   help="start from these weights (a .pth checkpoint); 'none' trains from scratch")
    g.add_argument("--use_wandb", action="store_true")
    g.add_argument("--wandb_project", default=wandb_project)
    g.add_argument("--wandb_run_name", default=None)


def model_overrides(args) -> dict:
    """The model flags the user actually gave."""
    return {k: getattr(args, k) for k in MODEL_DEFAULTS if getattr(args, k, None) is not None}


def resolved_model_args(args) -> dict:
    out = dict(MODEL_DEFAULTS)
    out.update(model_overrides(args))
    if out["branch_stride"] is None:
        out["branch_stride"] = 1 if out["pe"] == "fpe" else 128
    return out
