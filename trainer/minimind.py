"""MiniMind-specific stage pieces shared by the MiniMind trainer fronts (pretrain, SFT, ...).

Model construction from flags, strict warm starts from a checkpoint (its config wins; a contradicting
flag is an error), and tokenizer selection (--tokenizer, else the checkpoint's own, else model/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from model.checkpoint import load_checkpoint, read_checkpoint, tokenizer_from_files
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.tokenizer import load_tokenizer

log = logging.getLogger("parallelmind")

MODEL_DEFAULTS = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                      use_moe=False, pe="rope", rope_2d_ratio=0.5, rope_2d_scheme="additive", branch_stride=None,
                      fpe_theta=1e4, fpe_max_positions=512, fpe_learnable=False)


def model_overrides(args) -> dict:
    """The model flags the user actually gave."""
    return {k: getattr(args, k) for k in MODEL_DEFAULTS if getattr(args, k, None) is not None}


def resolved_model_args(args) -> dict:
    out = dict(MODEL_DEFAULTS)
    out.update(model_overrides(args))
    if out["branch_stride"] is None:
        out["branch_stride"] = 1 if out["pe"] == "fpe" else 128
    return out


def stem_for(stage: str):
    def stem(config) -> str:
        return f"{stage}_{config.hidden_size}{'_moe' if config.use_moe else ''}"
    return stem


def stem_from_args(stage: str, args, init_checkpoint: str | None = None) -> str:
    """Checkpoint stem from the flags, or from the warm-start checkpoint's config when it exists."""
    m = resolved_model_args(args)
    hidden, moe = m["hidden_size"], m["use_moe"]
    if init_checkpoint and Path(init_checkpoint).is_file():
        cfg = read_checkpoint(init_checkpoint).get("config") or {}
        hidden = args.hidden_size or cfg.get("hidden_size", hidden)
        moe = args.use_moe if args.use_moe is not None else cfg.get("use_moe", moe)
    return f"{stage}_{hidden}{'_moe' if moe else ''}"


def init_weight_path(args, default: str | None) -> str | None:
    """--init_weight 'none' -> None (from scratch); unset -> `default` (may be None)."""
    if args.init_weight is not None:
        return None if args.init_weight.lower() in ("none", "scratch", "") else args.init_weight
    return default


def tokenizer_for(args, checkpoint: str | None):
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if checkpoint and Path(checkpoint).is_file():
        files = read_checkpoint(checkpoint).get("tokenizer_files")
        if files:
            return tokenizer_from_files(files)
    return load_tokenizer()


def _inference_overrides(args) -> dict:
    return {"mask_mode": args.mask_mode, "use_flex_attention": args.use_flex_attention or None}


def build_minimind(args, tokenizer, *, checkpoint: str | None):
    """-> (model on CPU, info). From `checkpoint` (strict, its config) or a fresh config from the flags."""
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise SystemExit(f"initial weights {checkpoint} do not exist (pass --init_weight <file>, or "
                             "--init_weight none to start from random weights)")
        try:
            model, payload = load_checkpoint(checkpoint, overrides={**model_overrides(args),
                                                                   **_inference_overrides(args)})
        except ValueError as e:
            raise SystemExit(f"cannot start from {checkpoint}: {e}") from None
        model.train()
        if len(tokenizer) > model.config.vocab_size:
            raise SystemExit(f"the tokenizer has {len(tokenizer)} tokens but {checkpoint} was trained with a "
                             f"vocabulary of {model.config.vocab_size}; use the checkpoint's own tokenizer")
        log.info("loaded weights from %s (strict)", checkpoint)
        return model, {"step": payload.get("meta", {}).get("step"), "from": checkpoint}
    m = resolved_model_args(args)
    cfg = MiniMindConfig(vocab_size=len(tokenizer), mask_mode=args.mask_mode,
                         use_flex_attention=args.use_flex_attention,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1,
                         max_position_embeddings=max(32768, args.max_seq_len), **m)
    return MiniMindForCausalLM(cfg).train(), {"step": None, "from": None}


def minimind_stage(name: str, build_dataset: Callable, init_default: Callable | None = None):
    """A `trainer.engine.Stage` for a MiniMind front.

    `init_default(args)` gives the warm-start checkpoint used when --init_weight is not given (None: from
    scratch); --resume continues from {out_dir}/{name}_{hidden}[_moe].pth.
    """
    from trainer.engine import Stage

    def checkpoint(args, resume_from: bool) -> str | None:
        init = init_weight_path(args, default=init_default(args) if init_default else None)
        if resume_from:
            return str(Path(args.out_dir) / f"{stem_from_args(name, args, init)}.pth")
        return init

    return Stage(name=name, checkpoint_stem=stem_for(name),
                 load_tokenizer=lambda a: tokenizer_for(a, checkpoint(a, a.resume)),
                 build_model=lambda a, tok, resume_from: build_minimind(a, tok, checkpoint=checkpoint(a, resume_from)),
                 build_dataset=build_dataset)
