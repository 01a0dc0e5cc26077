"""The one training engine every trainer front uses (pretrain, SFT, and later LoRA/DPO/HF stages).

A front describes its stage with a `Stage` (how to build the tokenizer, model and dataset, and what
the checkpoint is called) and calls `run(args, stage)`. The engine owns everything else:

* torchrun DDP (nccl/gloo) with `no_sync` during gradient accumulation; per-rank seeding;
* AMP (bf16/fp16 autocast on CUDA, fp32 on CPU unless asked), AdamW, linear warm-up then cosine decay
  over the true number of optimizer steps (computed for this world size), gradient clipping;
* token-weighted loss: each optimizer step divides the summed cross-entropy of all its micro-batches on
  all ranks by their total number of target tokens (one all-reduce per step);
* validation by steps, samples or tokens; a progress bar, readable log lines, metrics JSONL, wandb;
* atomic checkpoints every `--save_interval` steps and at the end, plus a resume state that restores
  model, optimizer, scaler, schedule position, RNG and data position; SIGINT/SIGTERM save first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from model.checkpoint import save_checkpoint
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import UnitStats
from parallel_data.stream import (
    GroupingConfig,
    ParallelBatchStream,
    count_micro_batches,
    eval_batches,
    reshard_states,
)
from trainer import checkpointing as ckpt
from trainer.distributed import DistInfo, all_reduce, cleanup, gather_objects, init_distributed
from trainer.evaluation import autocast_context, batch_loss, evaluate_loss, is_minimind
from trainer.tracking import (
    JsonlTracker,
    MultiTracker,
    NullTracker,
    Progress,
    WandbTracker,
    check_wandb_ready,
    setup_logging,
)

log = logging.getLogger("parallelmind")


@dataclass
class Stage:
    """What a trainer front contributes: names and builders; the engine does the rest."""

    name: str  # "pretrain", "full_sft", ...
    checkpoint_stem: Callable  # (model config) -> "pretrain_512" / "full_sft_512_moe"
    load_tokenizer: Callable  # (args) -> tokenizer
    build_model: Callable  # (args, tokenizer, resume_checkpoint_path | None) -> (model on CPU, info dict)
    build_dataset: Callable  # (args, tokenizer) -> a parallel dataset (parallel_data.parallel_dataset)


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio` at `total`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = peak * min_ratio
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def amp_dtype(arg: str, device: torch.device) -> torch.dtype | None:
    if arg == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[arg]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


class Trainer:
    def __init__(self, args, stage: Stage):
        self.args = args
        self.stage = stage
        self.stop_requested = False

    # --- set-up -----------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        def handler(signum, frame):
            if self.stop_requested:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.stop_requested = True
            log.warning("signal %s: saving a checkpoint at the end of this step, then exiting", signum)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _grouping(self) -> GroupingConfig:
        a = self.args
        return GroupingConfig(batch_size=a.batch_size, branches_per_sample=a.branches_per_sample,
                              min_branches=a.min_branches_per_sample, max_branches=a.max_branches_per_sample,
                              batch_by_samples=a.batch_by_samples)

    def _collator_kwargs(self, tokenizer, training: bool) -> dict:
        """Training batches get the random augmentations (time offsets, branch slots); validation none."""
        a = self.args
        return dict(tokenizer=tokenizer, branch_stride=self.model_config.branch_stride, align_to=a.align_to,
                    random_time_offset=a.random_time_offset and training, max_total_tokens=a.max_total_tokens,
                    random_branch_slots=a.random_branch_slots if training else 0)

    def _val_branch_settings(self) -> dict:
        a = self.args
        if a.val_branches_per_sample:
            return {"branches": a.val_branches_per_sample}
        lo = a.val_min_branches_per_sample or (a.min_branches_per_sample if a.max_branches_per_sample else None)
        hi = a.val_max_branches_per_sample or a.max_branches_per_sample
        if hi is None and lo is None:
            return {"branches": a.branches_per_sample}
        lo, hi = lo or 1, hi or lo
        if lo == hi:
            return {"branches": lo}
        return {"min_branches": lo, "max_branches": hi}

    # --- the run ----------------------------------------------------------------------------------------
    def fit(self) -> int:
        a = self.args
        if a.offline:
            os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        if a.use_wandb:
            check_wandb_ready()
        self.dist = init_distributed(a.device, a.ddp, a.local_rank)
        setup_logging(self.dist.is_main)
        try:
            return self._fit(self.dist)
        finally:
            cleanup()

    def _fit(self, d: DistInfo) -> int:
        a = self.args
        most = a.max_branches_per_sample or a.branches_per_sample
        if a.random_branch_slots and a.random_branch_slots < most:
            raise SystemExit(f"--random_branch_slots {a.random_branch_slots} must be at least the largest number of "
                             f"branches per sample ({most})")
        if (a.val_interval or a.val_interval_samples or a.val_interval_tokens) and not a.val_samples:
            raise SystemExit("a validation interval was given but --val_samples is 0: hold out some records")
        seed_everything(a.seed + d.rank)
        self._install_signal_handlers()
        out_dir = Path(a.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)

        tokenizer = self.stage.load_tokenizer(a)
        resume = None
        stem_guess = None
        if a.resume:
            model, info = self.stage.build_model(a, tokenizer, resume_from=True)
            stem_guess = self.stage.checkpoint_stem(model.config)
            resume = ckpt.load_resume_state(ckpt.resume_path(out_dir, stem_guess))
            if resume["step"] != info.get("step"):
                raise SystemExit(f"--resume: the checkpoint is at step {info.get('step')} but the resume state at "
                                 f"step {resume['step']}; they come from different saves")
        else:
            model, info = self.stage.build_model(a, tokenizer, resume_from=False)
        self.model_config = model.config
        stem = self.stage.checkpoint_stem(model.config)
        self.ckpt_path = out_dir / f"{stem}.pth"
        if a.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.to(d.device)
        model.train()
        self.amp = amp_dtype(a.dtype, d.device)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("%s: %s, %.2fM parameters, device %s, %s, world size %d", self.stage.name,
                 type(model).__name__, n_params / 1e6, d.device, self.amp or "float32", d.world_size)

        # data
        dataset = self.stage.build_dataset(a, tokenizer)
        grouping = self._grouping()
        nw = a.num_workers
        n_streams = d.world_size * max(1, nw)
        data_states = None
        if resume is not None:
            data_states = resume["data_states"]
            if resume["num_streams"] != n_streams:
                data_states = reshard_states(data_states, resume["num_streams"], n_streams, dataset.source)
        stream = ParallelBatchStream(dataset, grouping, self._collator_kwargs(tokenizer, training=True),
                                     rank=d.rank, world_size=d.world_size, epochs=a.epochs, seed=a.seed,
                                     resume_states=data_states)
        loader = DataLoader(stream, batch_size=None, num_workers=nw, persistent_workers=False)

        # schedule horizon: the true number of optimizer steps for this world size
        per_rank = [count_micro_batches(dataset, grouping, rank=r, world_size=d.world_size, num_workers=nw,
                                        epochs=a.epochs, seed=a.seed)
                    for r in range(d.world_size)]
        if any(m == 0 for m in per_rank if m is not None) and any(m for m in per_rank if m):
            empty = [r for r, m in enumerate(per_rank) if m == 0]
            raise SystemExit(f"ranks {empty} would get no data: the data is too small to give each of the "
                             f"{n_streams} streams (ranks x DataLoader workers) a share; use fewer ranks or workers, "
                             "or more data")
        if a.max_steps:
            total_steps = a.max_steps
        elif any(m is None for m in per_rank):
            raise SystemExit("the number of training records is unknown (a streamed Hub dataset): pass --max-samples "
                             "or --max_steps so the learning-rate schedule has a horizon")
        else:
            total_steps = min(math.ceil(m / a.accumulation_steps) for m in per_rank)
        if resume is not None and resume["num_streams"] == n_streams:
            total_steps = resume["total_steps"]
        if total_steps < 1:
            raise SystemExit("no training data: the dataset yields no batch (check --data_path / --val_samples)")

        raw = model
        if d.enabled:
            model = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                        find_unused_parameters=bool(getattr(raw.config, "use_moe", False)))
        decay = [p for n, p in raw.named_parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for n, p in raw.named_parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=a.learning_rate,
                                      betas=(0.9, 0.95), fused=d.device.type == "cuda")
        scaler = torch.amp.GradScaler(d.device.type, enabled=self.amp == torch.float16)
        step = tokens_seen = samples_seen = texts_seen = 0
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scaler.load_state_dict(resume["scaler"])
            step, tokens_seen = resume["step"], resume["tokens_seen"]
            samples_seen, texts_seen = resume["samples_seen"], resume["texts_seen"]
            ckpt.restore_rng(resume["rng"][d.rank] if d.rank < len(resume["rng"]) else resume["rng"][0])
            log.info("resumed from step %d of %d (%s tokens seen)", step, total_steps, f"{tokens_seen:,}")

        # tracking
        tracker = NullTracker()
        wandb_id = resume.get("wandb_run_id") if resume else None
        if d.is_main:
            jsonl = JsonlTracker(out_dir / f"{stem}_metrics.jsonl", resume_step=step if resume else None)
            wb = None
            if a.use_wandb:
                wb = WandbTracker(a.wandb_project, a.wandb_run_name, _jsonable(vars(a)), str(out_dir), wandb_id)
                wandb_id = wb.run_id
            tracker = MultiTracker(jsonl, wb)
        val_cfg = self._val_branch_settings()
        val_cache: list | None = None

        def validate() -> dict:
            nonlocal val_cache
            units = val_cache if val_cache is not None else dataset.val_units()
            if val_cache is None and a.val_samples <= 50_000:
                val_cache = units = list(units)
            coll = ParallelCollator(**self._collator_kwargs(tokenizer, training=False), seed=a.seed)
            vb = max(1, a.batch_size if a.batch_by_samples else a.batch_size // max(1, val_cfg.get("branches", 1)))
            batches, info_v = eval_batches(iter(units), rank=d.rank, world_size=d.world_size, batch_size=vb,
                                           collator=coll, seed=a.seed, **val_cfg)
            res = evaluate_loss(model, batches, d.device, mask_mode=a.mask_mode, amp_dtype=self.amp)
            res.update({k: info_v[k] for k in ("samples", "texts", "leftover_texts")})
            return res

        stream_states: dict[int, dict] = dict(data_states or {})

        def save(final: bool) -> None:
            states = gather_objects({"rng": ckpt.capture_rng(), "data": stream_states}, d.is_main)
            if d.is_main:
                merged: dict[int, dict] = {}
                for s in states:
                    merged.update(s["data"])
                meta = {"stage": self.stage.name, "step": step, "tokens_seen": tokens_seen, "final": final,
                        "args": _jsonable(vars(a))}
                save_checkpoint(self.ckpt_path, raw, tokenizer=tokenizer, meta=meta)
                ckpt.save_resume_state(ckpt.resume_path(out_dir, stem), {
                    "step": step, "total_steps": horizon, "tokens_seen": tokens_seen,
                    "samples_seen": samples_seen, "texts_seen": texts_seen, "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "rng": [s["rng"] for s in states], "data_states": merged,
                    "num_streams": n_streams, "world_size": d.world_size, "wandb_run_id": wandb_id})
                log.info("saved %s (step %d)", self.ckpt_path, step)

        # the loop
        progress = Progress(total_steps, step, d.is_main, self.stage.name)
        it = iter(loader)
        t0 = time.perf_counter()
        win_loss = win_tokens = win_real = 0.0
        win_t = time.perf_counter()
        next_val = {"samples": _next_multiple(samples_seen, a.val_interval_samples),
                    "tokens": _next_multiple(tokens_seen, a.val_interval_tokens)}
        steps_this_run = truncated = 0
        stopping = False
        last_val = None
        saved_at = step
        horizon = total_steps  # the LR schedule's length; data beyond it (split texts) trains at the floor LR
        while not (a.max_steps and step >= a.max_steps):
            step_t0 = time.perf_counter()
            micro = []
            for _ in range(a.accumulation_steps):
                try:
                    micro.append(next(it))
                except StopIteration:
                    break
            truncated += sum(b["truncated_tokens"] for b in micro)
            local = [sum(b["num_label_tokens"] for b in micro), sum(b["num_samples"] for b in micro),
                     sum(b["num_texts"] for b in micro), sum(b["num_tokens"] for b in micro), 1.0 if micro else 0.0,
                     1.0 if self.stop_requested else 0.0]
            g_tok, g_samp, g_texts, g_real, have, stop = all_reduce(local)
            if have < d.world_size:
                if 0 < have:
                    log.info("a rank ran out of batches at step %d; stopping all ranks together", step)
                break
            lr = lr_at(step, horizon, a.learning_rate, a.warmup_iters, a.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for i, b in enumerate(micro):
                stream_states[b["stream"]] = b["state"]
                b = {k: (v.to(d.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
                sync = contextlib.nullcontext() if (not d.enabled or i == len(micro) - 1) else model.no_sync()
                with sync:
                    with autocast_context(d.device, self.amp):
                        s, _, out = batch_loss(model, b, a.mask_mode, minimind=is_minimind(raw))
                        loss = s * (d.world_size / max(g_tok, 1.0))
                        aux = getattr(out, "aux_loss", None)
                        if aux is not None and getattr(raw.config, "use_moe", False):
                            loss = loss + aux / len(micro)
                    scaler.scale(loss).backward()
                step_loss += float(s.detach())
            scaler.unscale_(optimizer)
            if a.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), a.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_run += 1
            tokens_seen += int(g_tok)
            samples_seen += int(g_samp)
            texts_seen += int(g_texts)
            win_loss += step_loss
            win_tokens += g_tok
            win_real += g_real
            if step % a.log_interval == 0 or step == total_steps or stop:
                total_steps = max(total_steps, step)
                (gl,) = all_reduce([win_loss])
                dt = time.perf_counter() - win_t
                rec = {"loss": gl / max(win_tokens, 1.0), "lr": lr, "tokens_per_s": win_real / max(dt, 1e-9),
                       "tokens_seen": tokens_seen, "samples_seen": samples_seen, "texts_seen": texts_seen,
                       "epoch": micro[-1]["epoch"], "elapsed_s": time.perf_counter() - t0}
                tracker.log(rec, step)
                progress.write(f"step {step}/{total_steps} | loss {rec['loss']:.4f} | lr {lr:.2e} | "
                               f"{rec['tokens_per_s']:,.0f} tok/s | {tokens_seen:,} target tokens")
                win_loss = win_tokens = win_real = 0.0
                win_t = time.perf_counter()
            now = time.perf_counter()
            progress.update(1, loss=f"{step_loss / max(1.0, sum(x['num_label_tokens'] for x in micro)):.3f}",
                            lr=f"{lr:.1e}", tok_s=f"{g_real / max(1e-9, now - step_t0):,.0f}")
            due = (a.val_interval and step % a.val_interval == 0) or \
                (a.val_interval_samples and samples_seen >= next_val["samples"]) or \
                (a.val_interval_tokens and tokens_seen >= next_val["tokens"])
            if due:
                last_val = validate()
                next_val = {"samples": _next_multiple(samples_seen, a.val_interval_samples),
                            "tokens": _next_multiple(tokens_seen, a.val_interval_tokens)}
                tracker.log({"val_loss": last_val["loss"], "val_ppl": last_val["ppl"],
                             "val_tokens": last_val["tokens"]}, step)
                progress.write(f"step {step}: validation loss {last_val['loss']:.4f} (ppl {last_val['ppl']:.2f}, "
                               f"{last_val['tokens']:,} tokens, {last_val['samples']} samples)")
            stopping = bool(stop) or (a.stop_after_steps and steps_this_run >= a.stop_after_steps)
            if step % a.save_interval == 0 or stopping:
                save(final=False)
                saved_at = step
            if stopping:
                log.warning("stopping at step %d of %d; continue with --resume", step, total_steps)
                break
        progress.close()
        finished = not stopping
        if step > saved_at or finished:
            save(final=finished)
        if step > horizon:
            log.warning("the data gave %d optimizer steps, %d more than estimated (records that gave several "
                        "units: texts split at max_seq_len, or packed chunks); the learning rate stayed at its floor "
                        "for those", step, step - horizon)
        if a.val_samples and finished:
            last_val = validate()
            tracker.log({"val_loss": last_val["loss"], "val_ppl": last_val["ppl"], "final": True}, step)
            log.info("final validation loss %.4f (ppl %.2f) over %s tokens", last_val["loss"], last_val["ppl"],
                     f"{last_val['tokens']:,}")
        if d.enabled:
            digests = gather_objects(weights_digest(raw), d.is_main)
            if d.is_main:
                if len(set(digests)) != 1:
                    raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
                log.info("weights identical on all %d ranks (sha256 %s)", d.world_size, digests[0][:12])
        stats = UnitStats()
        for st in stream_states.values():  # this rank's streams; summed over ranks below
            stats.add(UnitStats(**st["stats"]))
        fields = list(asdict(stats))
        *totals, truncated = all_reduce([getattr(stats, f) for f in fields] + [truncated])
        stats = UnitStats(**{f: int(v) for f, v in zip(fields, totals)})
        summary = {"step": step, "total_steps": total_steps, "tokens_seen": tokens_seen, "texts_seen": texts_seen,
                   "wall_s": time.perf_counter() - t0, "data": asdict(stats), "truncated_tokens": int(truncated)}
        if last_val:
            summary["val_loss"] = last_val["loss"]
        tracker.summary(summary)
        tracker.finish()
        if truncated:
            log.warning("--max_total_tokens %d cut %d tokens (branch tails) in this run", a.max_total_tokens,
                        int(truncated))
        if stats.split_texts or stats.truncated:
            log.warning("data: %d texts longer than max_seq_len were split into pieces; %d branches were cut at "
                        "max_seq_len (%d tokens dropped)", stats.split_texts, stats.truncated, stats.truncated_tokens)
        log.info("done: %d steps, %s target tokens, %.1f s; checkpoint %s", step, f"{tokens_seen:,}",
                 summary["wall_s"], self.ckpt_path)
        return 0


def weights_digest(model) -> str:
    """sha256 over every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _next_multiple(value: int, interval: int) -> float:
    if not interval:
        return float("inf")
    return (value // interval + 1) * interval


def run(args, stage: Stage) -> int:
    return Trainer(args, stage).fit()
