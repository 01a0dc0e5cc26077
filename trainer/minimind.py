"""`MiniMindStage`: the MiniMind half of a stage, shared by the MiniMind trainer fronts (pretrain, SFT, ...).

Model construction from flags, strict warm starts from a checkpoint (its config wins; a contradicting
flag is an error), tokenizer selection (--tokenizer, else the checkpoint's own, else model/) and the
output stem `{stage}_{hidden}[_moe]`. Each checkpoint file is read once: the stem, the tokenizer and
the weights all come from the same payload. A front subclasses it, sets `name`, and adds
`build_dataset` (`sft_dataset` for conversations), and `warm_start_from` when it warm-starts by default.
`load_companion_checkpoint` loads a frozen model beside the policy (a DPO reference, a teacher).
"""

from __future__ import annotations

import logging
from pathlib import Path

from model.checkpoint import model_from_payload, read_checkpoint, tokenizer_from_files
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.tokenizer import load_tokenizer
from parallel_data.parallel_dataset import ParallelSFTDataset
from parallel_data.prepass import tokenizer_fingerprint
from trainer.args import MODEL_DEFAULTS
from trainer.engine.stage import Stage

log = logging.getLogger("parallelmind")


def model_overrides(args) -> dict:
    """The model flags the user actually gave."""
    return {k: getattr(args, k) for k in MODEL_DEFAULTS if getattr(args, k, None) is not None}


def resolved_model_args(args) -> dict:
    """Every MiniMind model setting: the flags given, else MODEL_DEFAULTS."""
    out = dict(MODEL_DEFAULTS)
    out.update(model_overrides(args))
    if out["branch_stride"] is None:
        out["branch_stride"] = 1 if out["pe"] == "fpe" else 128
    return out


def stem_from_args(stage: str, args, saved_config: dict | None = None) -> str:
    """Checkpoint stem from the flags, or from a warm-start checkpoint's config where a flag is not given."""
    m = resolved_model_args(args)
    hidden, moe = m["hidden_size"], m["use_moe"]
    if saved_config:
        hidden = args.hidden_size or saved_config.get("hidden_size", hidden)
        moe = args.use_moe if args.use_moe is not None else saved_config.get("use_moe", moe)
    return f"{stage}_{hidden}{'_moe' if moe else ''}"


def init_weight_path(args, default: str | None) -> str | None:
    """--init_weight 'none' -> None (from scratch); unset -> `default` (may be None)."""
    if args.init_weight is not None:
        return None if args.init_weight.lower() in ("none", "scratch", "") else args.init_weight
    return default


def _inference_overrides(args) -> dict:
    return {"mask_mode": args.mask_mode, "use_flex_attention": args.use_flex_attention or None}


def checkpoint_overrides(args) -> dict:
    """What a checkpoint load is given: the model flags (checked against the saved config) and the
    inference-time settings it may change."""
    return {**model_overrides(args), **_inference_overrides(args)}


def load_companion_checkpoint(path: str, args, what: str, tokenizer=None, build=model_from_payload):
    """A MiniMind checkpoint as a frozen companion (a DPO reference, a distillation teacher, a reward model), on
    CPU, strict; a missing or unreadable file, or (given `tokenizer`) a checkpoint trained with another
    tokenizer, stops the run with one line naming `what`. `build(payload, source=, overrides=)` makes the
    model (default: a `MiniMindForCausalLM`; `model.value_head.value_model_from_payload` for a reward model)."""
    try:
        payload = read_checkpoint(path)
        model = build(payload, source=path, overrides=_inference_overrides(args))
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot load the {what} {path}: {e}") from None
    files = payload.get("tokenizer_files")
    if tokenizer is not None and files and tokenizer_fingerprint(tokenizer_from_files(files)) != \
            tokenizer_fingerprint(tokenizer):
        raise SystemExit(f"the {what} {path} was trained with another tokenizer than this run's; token ids would "
                         "not mean the same to both models")
    return model


def sft_dataset(args, tokenizer, dataset_cls=ParallelSFTDataset, **extra):
    """The conversation dataset of a front from its data flags (SFT, LoRA, distillation, reasoning)."""
    return dataset_cls(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset, hf_subset=args.hf_subset,
                       hf_split=args.hf_split, max_samples=args.max_samples, max_seq_len=args.max_seq_len,
                       val_samples=args.val_samples, seed=args.seed, fmt=args.format, strict_data=args.strict_data,
                       **extra)


class MiniMindStage(Stage):
    """MiniMind model, tokenizer and stem for a front; `build_dataset` comes from the front."""

    # the stage whose output is the default --init_weight, {out_dir}/{warm_start_from}_{hidden}[_moe].pth
    warm_start_from: str | None = None

    def __init__(self):
        self._payloads: dict[str, dict] = {}

    def default_init(self, args) -> str | None:
        """The warm-start checkpoint used when --init_weight is not given (None: from scratch)."""
        if self.warm_start_from is None:
            return None
        return str(Path(args.out_dir) / f"{stem_from_args(self.warm_start_from, args)}.pth")

    def _payload(self, path: str) -> dict:
        """The checkpoint at `path`, read once per run (kept until the model is built)."""
        if path not in self._payloads:
            try:
                self._payloads[path] = read_checkpoint(path)
            except ValueError as e:
                raise SystemExit(f"cannot start from {path}: {e}") from None
        return self._payloads[path]

    def _init_checkpoint(self, args) -> str | None:
        init = init_weight_path(args, self.default_init(args))
        if init and not Path(init).is_file() and not args.resume:  # fail before anything is written
            raise SystemExit(f"initial weights {init} do not exist (pass --init_weight <file>, or "
                             "--init_weight none to start from random weights)")
        return init

    def stem_prefix(self, args) -> str:
        """What the output stem starts with (`{prefix}_{hidden}[_moe]`): the stage name by default."""
        return self.name

    def checkpoint_stem(self, args) -> str:
        init = self._init_checkpoint(args)
        saved = self._payload(init).get("config") if init and Path(init).is_file() else None
        return stem_from_args(self.stem_prefix(args), args, saved)

    def _weights_source(self, args, resume: bool) -> str | None:
        if resume:
            return str(Path(args.out_dir) / f"{self.checkpoint_stem(args)}.pth")
        return self._init_checkpoint(args)

    def load_tokenizer(self, args):
        if args.tokenizer:
            return load_tokenizer(args.tokenizer)
        source = self._weights_source(args, args.resume)
        if source and Path(source).is_file():
            files = self._payload(source).get("tokenizer_files")
            if files:
                return tokenizer_from_files(files)
        return load_tokenizer()

    def build_model(self, args, tokenizer, *, resume: bool):
        """-> (model on CPU, info). From a checkpoint (strict, its config) or a fresh config from the flags."""
        source = self._weights_source(args, resume)
        try:
            if source:
                return self._from_checkpoint(args, tokenizer, source)
            return self._fresh(args, tokenizer), {"step": None, "save_id": None, "from": None}
        finally:
            self._payloads.clear()  # the weights are in the model now: free the payloads

    def _from_checkpoint(self, args, tokenizer, path: str):
        if not Path(path).is_file():
            raise SystemExit(f"initial weights {path} do not exist (pass --init_weight <file>, or "
                             "--init_weight none to start from random weights)")
        payload = self._payload(path)
        try:
            model = model_from_payload(payload, source=path, overrides=checkpoint_overrides(args))
        except ValueError as e:
            raise SystemExit(f"cannot start from {path}: {e}") from None
        model.train()
        if len(tokenizer) > model.config.vocab_size:
            raise SystemExit(f"the tokenizer has {len(tokenizer)} tokens but {path} was trained with a "
                             f"vocabulary of {model.config.vocab_size}; use the checkpoint's own tokenizer")
        log.info("loaded weights from %s (strict)", path)
        meta = payload.get("meta", {})
        return model, {"step": meta.get("step"), "save_id": meta.get("save_id"), "from": path}

    def _fresh(self, args, tokenizer) -> MiniMindForCausalLM:
        m = resolved_model_args(args)
        cfg = MiniMindConfig(vocab_size=len(tokenizer), mask_mode=args.mask_mode or "columnar",
                             use_flex_attention=args.use_flex_attention,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1,
                             max_position_embeddings=max(32768, args.max_seq_len), **m)
        return MiniMindForCausalLM(cfg).train()
