"""The Hugging Face stage: what trainer/train_hf_lora.py, train_hf_full.py and train_hf_parallel_lora.py share.

    from trainer.hf import HFStage
    run(args, HFStage(lora=True, name="hf_lora"))      # flags: trainer.args.add_hf_train_args

Each piece is a builder or seam of the engine (trainer/engine/stage.py):

* `check_args`: --base_model is a local model folder, or a Hub name with the Hub reachable (offline it
  fails at once with one line, before anything is written).
* `build_model`: the model, loaded with transformers (sdpa attention); its rotary module patched with
  2D RoPE (--rope_2d_ratio, --rope_2d_scheme, --branch_stride; --mask is recorded with it) unless
  --no_patch_rope; a folder that carries `config.parallelmind` (a fully fine-tuned model) is re-patched
  with its own settings, flags checked against them (model/loading.py). LoRA: PEFT adapters on every
  Linear layer of the decoder blocks (--lora_rank, model/model_lora.py), or the adapter of --load_lora,
  continued. A LoRA base is kept in the compute dtype (bf16 on CUDA), full fine-tuning in float32
  (master weights; the engine's autocast computes in --dtype). `resume=True`: the run's checkpoint.
* `build_dataset`: --data_mode parallel (text and grouped records, answer offsets kept) or
  parallel_sft (conversations: the loss is on the assistant turns only); --parallel_cache_dir keeps the
  tokenised records (parallel_data/unit_cache.py; rank 0 builds, the others load).
* `build_loss`: cross-entropy from the logits with the aligned labels (trainer/loss.py), at the target
  columns only; a model without 2D RoPE gets each token's time as its 1D position. LoRA with
  --self_distill: `SelfDistillLoss`, the KL to the model's own base (adapter off) decoding each
  branch alone (--distill_alpha mixes in the cross-entropy, --distill_temperature).
* outputs (`checkpoint_dir` / `checkpoint_stem`, `checkpoint_payload`, `after_save`):

      LoRA  {out_dir}/lora/{stem}.pth               latest adapter + {stem}_resume.pth, {stem}_metrics.jsonl
            {out_dir}/lora/{stem}_step{N}.pth + {stem}_step{N}/   at every save (PEFT folder beside it)
            {out_dir}/lora/{stem}_final.pth + {stem}_final/       at the end
            stem = {lora_name}_{model_tag} ({lora_name} when --model_tag is empty)
      full  {out_dir}/full/{stem}.pth               latest weights + resume state; stem = full_{model_tag}
            {out_dir}/full/{stem}_step{N}/, {stem}_final/         standard HF folders (safetensors, config
                                                                  with the 2D-RoPE settings, tokenizer)

  Every `.pth` adapter is a `model_lora` file (`load_lora`, `load_parallel_model(lora_path=...)`); with
  --fsdp both kinds are written from the state dict gathered from every rank.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import torch

from model.checkpoint import ensure_space, model_state_for_saving, payload_nbytes, read_checkpoint
from model.device import resolve_device, resolve_dtype
from model.hf_folder import save_hf_folder, tied_keys
from model.model_lora import (
    LORA_FORMAT,
    apply_lora,
    has_lora,
    lora_disabled,
    lora_parameters,
    lora_payload,
    set_lora_state_dict,
    write_lora,
)
from model.rope_settings import is_patched, unwrap
from model.tokenizer import load_tokenizer
from parallel_data.parallel_dataset import ParallelPretrainDataset, ParallelSFTDataset
from trainer.distill import kd_kl
from trainer.distributed import broadcast_object
from trainer.engine.stage import Stage
from trainer.logprobs import target_logits
from trainer.loss import CrossEntropyLoss, LossFn, LossOutput

log = logging.getLogger("parallelmind")
FULL_FORMAT = "parallelmind-hf-full-v1"


class TimePositionsLoss(CrossEntropyLoss):
    """For a model without 2D RoPE (--no_patch_rope): its own rotary module gets each token's time."""

    def __call__(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        return super().__call__(model, {**batch, "position_ids": batch["time_ids"].clamp(min=0)})


class SelfDistillLoss(LossFn):
    """alpha * CE + (1 - alpha) * T^2 * KL(base model alone || tuned model), summed over the target tokens.

    The teacher is the model itself with its LoRA adapter switched off (`model_lora.lora_disabled`) under
    the isolated mask: each branch then sees only its own tokens at one coordinate, which with the additive
    2D RoPE is the base model decoding that conversation alone. The student is the tuned model under
    `mask_mode` (columnar): the loss teaches it to give every branch the distribution that branch has
    alone, at every answer position (soft targets, not only the argmax the labels hold).
    """

    perplexity_metric = "ce"

    def __init__(self, mask_mode: str, *, alpha: float = 0.0, temperature: float = 1.0, time_positions: bool = False):
        self.mask_mode, self.alpha, self.temperature = mask_mode, float(alpha), float(temperature)
        self.time_positions = time_positions

    def __call__(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        if self.time_positions:  # a model without 2D RoPE: its own rotary module gets each token's time
            batch = {**batch, "position_ids": batch["time_ids"].clamp(min=0)}
        with torch.no_grad(), lora_disabled(model):
            teacher, _, _ = target_logits(unwrap(model), batch, "isolated")
        student, labels, out = target_logits(model, batch, self.mask_mode)
        ce = torch.nn.functional.cross_entropy(student.float(), labels, reduction="sum")
        kl = kd_kl(student, teacher, self.temperature).sum()
        loss = self.alpha * ce + (1.0 - self.alpha) * self.temperature ** 2 * kl
        return LossOutput(loss, int(labels.numel()), {"ce": float(ce.detach()), "kl": float(kl.detach())})


class HFStage(Stage):
    """LoRA (`lora=True`) or full fine-tuning of a Hugging Face causal LM (see the module docstring)."""

    run_only_settings = frozenset({"parallel_cache_dir", "rebuild_parallel_cache", "model_tag", "lora_name"})

    def __init__(self, *, lora: bool, name: str):
        self.lora, self.name = lora, name
        self.patched = True

    # --- names and inputs ---------------------------------------------------------------------------
    def check_args(self, args) -> None:
        from model.hub import require_hub

        for flag, path, kind in (("--base_model", args.hf_base_model, "model"),
                                 ("--tokenizer_path", args.tokenizer, "tokenizer")):
            if path is None:
                continue
            if not Path(path).exists():
                require_hub(kind, path)  # offline: one clear line now, not 45 s of retries
            elif kind == "model" and not (Path(path) / "config.json").is_file():
                raise SystemExit(f"{flag} {path} has no config.json: not a Hugging Face model folder")

    def checkpoint_dir(self, args) -> str:
        return str(Path(args.out_dir) / ("lora" if self.lora else "full"))

    def checkpoint_stem(self, args) -> str:
        if self.lora:
            return f"{args.lora_name}_{args.model_tag}" if args.model_tag else args.lora_name
        return f"full_{args.model_tag}" if args.model_tag else "full"

    def export_patterns(self, args) -> list[str]:
        stem = glob.escape(self.checkpoint_stem(args))
        return [f"{stem}_step[0-9]*", f"{stem}_final", f"{stem}_final.pth"]

    def load_tokenizer(self, args):
        return load_tokenizer(args.tokenizer or args.hf_base_model)

    # --- the model ----------------------------------------------------------------------------------
    def build_model(self, args, tokenizer, *, resume: bool):
        from model.loading import load_hf_folder

        device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", 0) or 0))
        dtype = resolve_dtype(args.dtype, device) if self.lora else torch.float32
        load_lora = getattr(args, "load_lora", None)
        loaded = load_hf_folder(args.hf_base_model, tokenizer_path=args.tokenizer, lora_path=load_lora,
                                lora_rank=args.lora_rank if load_lora else None, device="cpu", dtype=dtype,
                                rope_2d_ratio=args.rope_2d_ratio, rope_2d_scheme=args.rope_2d_scheme,
                                branch_stride=args.branch_stride, mask_mode=args.mask_mode,
                                patch_rope=args.patch_rope)
        model = loaded.model
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise SystemExit(f"the tokenizer has {len(tokenizer)} tokens but {args.hf_base_model} embeds only "
                             f"{model.get_input_embeddings().num_embeddings}; use the model's own tokenizer")
        if self.lora and not has_lora(model):
            with torch.random.fork_rng():  # the same adapter on every rank and for any number of ranks
                torch.manual_seed(args.seed)
                apply_lora(model, rank=args.lora_rank or 8, alpha=args.lora_alpha, dropout=args.lora_dropout,
                           targets=args.lora_target_modules)
        if self.lora and args.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need input grads
        self.patched = loaded.kind != "hf" or is_patched(model)
        info = self._resume(args, model) if resume else {"step": None, "save_id": None}
        model.train()
        return model, info

    def _resume(self, args, model) -> dict:
        path = Path(self.checkpoint_dir(args)) / f"{self.checkpoint_stem(args)}.pth"
        payload = read_checkpoint(path)
        want = LORA_FORMAT if self.lora else FULL_FORMAT
        if payload.get("format") != want:
            raise SystemExit(f"--resume: {path} is not a checkpoint of this stage (format {payload.get('format')!r}, "
                             f"expected {want!r})")
        if self.lora:
            set_lora_state_dict(model, payload["adapter_state_dict"], source=str(path))
        else:
            result = model.load_state_dict(payload["model_state_dict"], strict=False)
            missing = set(result.missing_keys) - tied_keys(model)
            if missing or result.unexpected_keys:
                raise SystemExit(f"--resume: {path} does not match {args.hf_base_model}: missing {sorted(missing)[:4]}, "
                                 f"unexpected {sorted(result.unexpected_keys)[:4]}")
        meta = payload.get("meta", {})
        log.info("resuming from %s (step %s)", path, meta.get("step"))
        return {"step": meta.get("step"), "save_id": meta.get("save_id"), "from": str(path)}

    def select_trainable(self, model) -> None:
        if self.lora:
            trained = {id(p) for _, p in lora_parameters(model)}
            for p in model.parameters():
                p.requires_grad_(id(p) in trained)
        else:
            model.requires_grad_(True)

    # --- data and loss ------------------------------------------------------------------------------
    def build_dataset(self, args, tokenizer):
        kw = dict(data_path=args.data_path, hf_dataset=args.hf_dataset, hf_subset=args.hf_subset,
                  hf_split=args.hf_split or "train", max_samples=args.max_samples, max_seq_len=args.max_seq_len,
                  val_samples=args.val_samples, seed=args.seed, strict_data=args.strict_data,
                  streaming=args.use_streaming)
        if args.data_mode == "parallel_sft":
            dataset = ParallelSFTDataset(tokenizer, fmt=args.format, **kw)
        else:
            dataset = ParallelPretrainDataset(tokenizer, text_column=args.text_column, chunk_length=args.chunk_length,
                                              **kw)
        if args.parallel_cache_dir:
            _open_cache(dataset, args)
        return dataset

    def build_loss(self, args, companions):
        if getattr(args, "self_distill", False):
            return SelfDistillLoss(args.mask_mode, alpha=args.distill_alpha, temperature=args.distill_temperature,
                                   time_positions=not self.patched)
        return CrossEntropyLoss(args.mask_mode) if self.patched else TimePositionsLoss(args.mask_mode)

    # --- outputs ------------------------------------------------------------------------------------
    def checkpoint_payload(self, model, tokenizer, meta: dict, *, state_dict=None) -> dict:
        if self.lora:
            return {**lora_payload(model, state_dict=state_dict), "meta": meta}
        cfg = model.config
        return {"format": FULL_FORMAT, "model_type": cfg.model_type, "config": cfg.to_dict(),
                "model_state_dict": model_state_for_saving(model, state_dict=state_dict), "meta": meta}

    def after_save(self, args, model, tokenizer, payload: dict) -> None:
        """The seeds' names: `{stem}_step{N}` at every save, `{stem}_final` at the end."""
        meta = payload["meta"]
        folder = Path(self.checkpoint_dir(args)) / (
            f"{self.checkpoint_stem(args)}{'_final' if meta['final'] else '_step' + str(meta['step'])}")
        ensure_space(folder.parent, payload_nbytes(payload) * (2 if self.lora else 1), folder)
        if self.lora:
            write_lora(payload, folder.parent / f"{folder.name}.pth")
            log.info("adapter %s.pth and PEFT folder %s/ written", folder, folder)
        else:
            save_hf_folder(model, folder, state_dict=payload["model_state_dict"], tokenizer=tokenizer)
            log.info("model folder %s/ written (safetensors, config with the 2D-RoPE settings, tokenizer)", folder)


def _open_cache(dataset, args) -> None:
    """Rank 0 loads or builds the unit cache, then every other rank loads it (no rank tokenises twice)."""
    from parallel_data.unit_cache import open_unit_cache

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    error: Exception | None = None
    if rank == 0:
        try:
            open_unit_cache(dataset, args.parallel_cache_dir, rebuild=args.rebuild_parallel_cache)
        except (ValueError, OSError) as e:  # DataError is a ValueError
            error = e
    message = broadcast_object(str(error) if error is not None else None)
    if error is not None:
        raise error
    if message is not None:
        raise SystemExit(message)
    if rank != 0:
        open_unit_cache(dataset, args.parallel_cache_dir, build=False)
