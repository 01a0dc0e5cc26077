"""The Trainer: builds a run's components from a `Stage`, then runs the loop one small method at a time.

    fit()                    distributed set-up, the stop flag, setup(), train(), clean-up
    setup()                  checkpointer.claim -> tokenizer -> models -> resume state -> data -> step count
                             -> optimizer -> loss hook / rollout -> validator -> tracker
    train()                  while steps remain: train_step(); report_step(); maybe_validate();
                             maybe_save_and_stop()   then finish()
    train_step()             fetch micro-batches -> [rollout] -> global counts (one all-reduce)
                             -> lr -> forward_backward() -> optimizer step -> TrainState.advance
    save(final)              gather RNG + data positions -> checkpointer.save(model file, resume state)

Each optimizer step divides the summed loss of its micro-batches on all ranks by their total number
of targets, so any accumulation or world size gives the same update as one big batch.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from model.checkpoint import DiskFullError
from model.device import autocast_dtype
from parallel_data.io import DataError
from parallel_data.parallel_dataset import UnitStats
from trainer.distributed import DistInfo, all_reduce, broadcast_object, cleanup, gather_objects, init_distributed
from trainer.engine.checkpointer import Checkpointer, new_save_id
from trainer.engine.data import DataComponent, data_name
from trainer.engine.interrupt import StopFlag, exit_code_for
from trainer.engine.models import ModelComponent, weights_digest
from trainer.engine.optim import OptimizerComponent
from trainer.engine.resume import capture_rng, check_resume_identity, jsonable, restore_rng, trajectory_settings
from trainer.engine.stage import RolloutContext, Stage
from trainer.engine.state import TrainState
from trainer.engine.validator import Validator
from trainer.loss import CrossEntropyLoss, autocast_context, metric_means, to_device
from trainer.tracking import NullTracker, Progress, build_tracker, check_wandb_ready, setup_logging

log = logging.getLogger("parallelmind")


class Outcome(enum.Enum):
    TRAINED = "trained"  # an optimizer step was taken
    SKIPPED = "skipped"  # the micro-batches held no target on any rank: consumed, no update
    EXHAUSTED = "exhausted"  # a rank ran out of data


@dataclass
class StepCounts:
    """One step's micro-batches summed over all ranks (one all-reduce)."""

    targets: float
    samples: float
    texts: float
    tokens: float
    have: float  # ranks that had data
    sigint: float
    sigterm: float

    @property
    def stop(self) -> bool:
        return bool(self.sigint or self.sigterm)


@dataclass
class LogWindow:
    """Sums since the last log line."""

    loss: float = 0.0
    targets: float = 0.0
    tokens: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    metric_counts: dict[str, float] = field(default_factory=dict)  # own denominators (LossOutput.counts)
    t0: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, counts: StepCounts, metrics: dict[str, float], metric_counts: dict[str, float]) -> None:
        self.loss += loss
        self.targets += counts.targets
        self.tokens += counts.tokens
        for k, v in metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + v
        for k, v in metric_counts.items():
            self.metric_counts[k] = self.metric_counts.get(k, 0.0) + v


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rollout_seed(seed: int, rank: int, step: int, micro: int) -> int:
    return random.Random(f"rollout:{seed}:{rank}:{step}:{micro}").getrandbits(62)


class Trainer:
    dist: DistInfo
    checkpointer: Checkpointer
    models: ModelComponent
    data: DataComponent
    optim: OptimizerComponent
    validator: Validator | None

    def __init__(self, args, stage: Stage):
        self.args, self.stage = args, stage
        self.stop = StopFlag()
        stage.stop = self.stop  # builders with long set-up work poll it
        self.state = TrainState()
        self.tracker = NullTracker()
        self.checkpointer = None  # type: ignore[assignment]

    # --- the run --------------------------------------------------------------------------------------
    def fit(self) -> int:
        """-> exit status: 0 done (or --stop_after_steps), 130 / 143 stopped by SIGINT / SIGTERM after saving."""
        a = self.args
        if a.offline:
            os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        if a.use_wandb:
            check_wandb_ready()
        self.dist = init_distributed(a.device, a.ddp, a.local_rank)
        setup_logging(self.dist.is_main)
        self.stop.install()
        try:
            self.setup()
            return self.train()
        finally:
            self.stop.restore()
            if self.checkpointer is not None:
                self.checkpointer.release()
            cleanup()

    def setup(self) -> None:
        a, d = self.args, self.dist
        self._check_args()
        self.stage.check_args(a)
        seed_everything(a.seed + d.rank)
        self.checkpointer = Checkpointer(self.stage.checkpoint_dir(a), self.stage.checkpoint_stem(a), is_main=d.is_main,
                                         exports=self.stage.export_patterns(a))
        self.checkpointer.claim(resume=a.resume, overwrite=a.overwrite)
        self.tokenizer = self.stage.load_tokenizer(a)
        self.models = ModelComponent(self.stage, a, self.tokenizer, d, resume=a.resume)
        saved = self.checkpointer.load_resume(self.models.info) if a.resume else None
        self.amp = autocast_dtype(a.dtype, d.device)  # None: plain float32
        self._log_model()
        stride = self.branch_stride = self.stage.branch_stride(self.models.raw)
        dataset = self.stage.build_dataset(a, self.tokenizer)
        self.data = DataComponent(a, dataset, self.tokenizer, stride, d, saved)
        self.settings, self.identity = trajectory_settings(a, self.stage.run_only_settings), self.data.identity()
        if saved is not None:
            check_resume_identity(saved, self.settings, self.identity, a.resume_override or [])
        self.state.total_steps = self.data.count_steps()
        self.models.wrap()
        self.optim = OptimizerComponent(a, self.models.raw, d.device, self.amp, sharded=self.models.sharded)
        self.loss_fn = self.stage.build_loss(a, self.models.companions)
        self.models.drop_released_companions()  # e.g. a reference the loss hook precomputed from and let go
        self.rollout = self.stage.build_rollout(a, self.tokenizer)
        self.validator = Validator(a, dataset, self.tokenizer, stride, d, self.amp, self.loss_fn,
                                   rollout=self.rollout is not None, sharded=self.models.sharded) if a.val_samples else None
        if saved is not None:
            self._restore(saved)
        if self.validator is not None:
            self.validator.check_has_targets()
            self.validator.schedule_from(self.state)
        self.tracker, self.wandb_id = build_tracker(
            a, is_main=d.is_main, metrics_path=self.checkpointer.metrics_path, config=jsonable(vars(a)),
            resume_step=self.state.step if saved else None, wandb_run_id=saved.get("wandb_run_id") if saved else None)

    def _check_args(self) -> None:
        a = self.args
        most = a.max_branches_per_sample or a.branches_per_sample
        if a.random_branch_slots and a.random_branch_slots < most:
            raise SystemExit(f"--random_branch_slots {a.random_branch_slots} must be at least the largest number of "
                             f"branches per sample ({most})")
        if (a.val_interval or a.val_interval_samples or a.val_interval_tokens) and not a.val_samples:
            raise SystemExit("a validation interval was given but --val_samples is 0: hold out some records")

    def _log_model(self) -> None:
        d = self.dist
        total, trainable = self.models.parameter_counts()
        extra = f" ({trainable / 1e6:.2f}M trainable)" if trainable != total else ""
        companions = f", companions: {', '.join(self.models.companions)}" if self.models.companions else ""
        log.info("%s: %s, %.2fM parameters%s, device %s, %s, world size %d%s", self.stage.name,
                 type(self.models.raw).__name__, total / 1e6, extra, d.device, self.amp or "float32",
                 d.world_size, companions)

    def _restore(self, saved: dict) -> None:
        """Counters, optimizer, changing companions and RNG from the resume state (RNG last)."""
        counted = self.state.total_steps
        self.state.load_state_dict(saved["train_state"])
        if saved["num_streams"] != self.data.num_streams or self.args.resume_override:
            self.state.total_steps = counted  # the schedule follows the new stream layout / accepted changes
        self.optim.load_state_dict(saved)
        self.models.load_companions_state(saved.get("companions", {}))
        rank = self.dist.rank
        restore_rng(saved["rng"][rank] if rank < len(saved["rng"]) else saved["rng"][0])
        log.info("resumed from step %d of %d (%s target tokens seen)", self.state.step, self.state.total_steps,
                 f"{self.state.targets_seen:,}")

    def train(self) -> int:
        a = self.args
        self.progress = Progress(self.state.total_steps, self.state.step, self.dist.is_main, self.stage.name)
        self.total_display = self.state.total_steps
        self.t0 = time.perf_counter()
        self.window = LogWindow()
        self.steps_this_run = self.skipped_batches = self.nonfinite_steps = 0
        self.saved_at = self.state.step
        self.stopping = False
        self.last_val: dict | None = None
        self.counts = StepCounts(0, 0, 0, 0, self.dist.world_size, 0, 0)
        self.lr = 0.0
        while not (a.max_steps and self.state.step >= a.max_steps):
            outcome = self.train_step()
            if outcome is Outcome.EXHAUSTED:
                break
            if outcome is Outcome.TRAINED:
                self.report_step()
                self.maybe_validate()
            if self.maybe_save_and_stop(outcome):
                break
        return self.finish()

    # --- one step -------------------------------------------------------------------------------------
    def train_step(self) -> Outcome:
        a = self.args
        t0 = time.perf_counter()
        data_batches = self.data.next_micro_batches(a.accumulation_steps)
        micro = self.roll_out(data_batches) if self.rollout is not None and data_batches else data_batches
        c = self.counts = self.global_counts(micro)
        if c.have < self.dist.world_size:
            if c.have > 0:
                log.info("a rank ran out of batches at step %d; stopping all ranks together", self.state.step)
            return Outcome.EXHAUSTED
        self.data.commit(data_batches)
        self.lr = self.optim.set_lr(self.state.step, self.state.total_steps)
        if not c.targets:
            self._skip(len(micro))
            return Outcome.SKIPPED
        step_loss, metrics, metric_counts = self.update(micro, c.targets)
        self.state.advance(tokens=int(c.tokens), targets=int(c.targets), samples=int(c.samples), texts=int(c.texts))
        self.steps_this_run += 1
        self.nonfinite_steps += not math.isfinite(step_loss)
        self.window.add(step_loss, c, metrics, metric_counts)
        local_targets = sum(self.loss_fn.count_targets(b) for b in micro)
        self.step_stats = (step_loss, local_targets, c.tokens, time.perf_counter() - t0)
        return Outcome.TRAINED

    def update(self, micro: list[dict], global_targets: float) -> tuple[float, dict[str, float], dict[str, float]]:
        """The step's optimizer updates on its batches: one, or the rollout's `updates` (PPO epochs, GRPO
        iterations) on the same rollout -> (loss, metrics, metric counts), averaged over the updates."""
        n = self.rollout.updates if self.rollout is not None else 1
        loss, metrics, counts = 0.0, {}, {}
        for _ in range(n):
            step_loss, step_metrics, step_counts = self.forward_backward(micro, global_targets)
            self.optim.step()
            loss += step_loss / n
            for k, v in step_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v / n
            for k, v in step_counts.items():
                counts[k] = counts.get(k, 0.0) + v / n
        return loss, metrics, counts

    def global_counts(self, micro: list[dict]) -> StepCounts:
        sig = self.stop.signum
        local = [sum(self.loss_fn.count_targets(b) for b in micro), sum(b.get("num_samples", 0) for b in micro),
                 sum(b.get("num_texts", 0) for b in micro), sum(b.get("num_tokens", 0) for b in micro),
                 1.0 if micro else 0.0, float(sig == signal.SIGINT), float(sig is not None and sig != signal.SIGINT)]
        return StepCounts(*all_reduce(local))

    def rollout_context(self, micro: int, *, validation: bool = False) -> RolloutContext:
        """What the rollout of micro-batch `micro` sees; validation rollouts use step -1 in their seed."""
        a, step = self.args, -1 if validation else self.state.step
        return RolloutContext(policy=self.models.raw, tokenizer=self.tokenizer, companions=self.models.companions,
                              mask_mode=a.mask_mode, branch_stride=self.branch_stride, step=self.state.step,
                              seed=rollout_seed(a.seed, self.dist.rank, step, micro), device=self.dist.device,
                              amp=self.amp, validation=validation)

    def roll_out(self, batches: list[dict]) -> list[dict]:
        """The rollout phase: each data batch -> a training batch generated from the current weights."""
        with torch.no_grad():
            return [self.rollout(self.rollout_context(i), batch) for i, batch in enumerate(batches)]

    def validation_rollout(self, k: int, batch: dict) -> dict:
        return self.rollout(self.rollout_context(k, validation=True), batch)

    def forward_backward(self, micro: list[dict], global_targets: float) -> tuple[float, dict, dict]:
        """Backward of every micro-batch's loss scaled by world size / global targets
        -> (summed loss, summed metrics, summed metric counts).

        A sharded model (--fsdp) needs the same number of forwards on every rank: a rank with fewer
        micro-batches (the end of the data) runs its last one again with weight 0.
        """
        d, model = self.dist, self.models.wrapped
        scale = d.world_size / max(global_targets, 1.0)
        step_loss, metrics, counts = 0.0, {}, {}
        n = len(micro)
        if self.models.sharded:
            n = int(all_reduce([float(n)], op="max")[0])
        for i in range(n):
            real = i < len(micro)
            batch = to_device(micro[min(i, len(micro) - 1)], d.device, non_blocking=True)
            with self.models.grad_sync(last=i == n - 1):
                with autocast_context(d.device, self.amp):
                    out = self.loss_fn(model, batch)
                    loss = out.loss * scale
                    if out.aux_loss is not None:
                        loss = loss + out.aux_loss / len(micro)
                    if not real:
                        loss = loss * 0.0
                self.optim.backward(loss)
            if not real:
                continue
            if out.targets != self.loss_fn.count_targets(batch):
                raise RuntimeError(f"{type(self.loss_fn).__name__} took the loss over {out.targets} targets but its "
                                   f"count_targets gives {self.loss_fn.count_targets(batch)}: they must agree")
            step_loss += float(out.loss.detach())
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + float(v)
            for k, v in out.counts.items():
                counts[k] = counts.get(k, 0.0) + float(v)
        return step_loss, metrics, counts

    def _skip(self, n_batches: int) -> None:
        if not self.skipped_batches:
            log.warning("step %d: its micro-batches hold no target token on any rank (every label is -100); they "
                        "are skipped without an optimizer step (counted in the summary)", self.state.step + 1)
        self.skipped_batches += n_batches

    # --- after a step ---------------------------------------------------------------------------------
    def report_step(self) -> None:
        a, st = self.args, self.state
        if st.step % a.log_interval == 0 or st.step == self.total_display or self.counts.stop:
            self.total_display = max(self.total_display, st.step)
            self._log_window()
        loss, targets, tokens, dt = self.step_stats
        self.progress.update(1, loss=f"{loss / max(1.0, targets):.3f}", lr=f"{self.lr:.1e}",
                             tok_s=f"{tokens / max(1e-9, dt):,.0f}")

    def _log_window(self) -> None:
        st, w = self.state, self.window
        names, cnames = sorted(w.metrics), sorted(w.metric_counts)
        loss, *rest = all_reduce([w.loss, *(w.metrics[k] for k in names), *(w.metric_counts[k] for k in cnames)])
        sums, counts = dict(zip(names, rest[:len(names)])), dict(zip(cnames, rest[len(names):]))
        if not math.isfinite(loss):
            raise SystemExit(self._diverged(loss))
        rec = {"loss": loss / max(w.targets, 1.0), "lr": self.lr,
               "tokens_per_s": w.tokens / max(time.perf_counter() - w.t0, 1e-9), "tokens_seen": st.tokens_seen,
               "targets_seen": st.targets_seen, "samples_seen": st.samples_seen, "texts_seen": st.texts_seen,
               "epoch": self.data.epoch, "elapsed_s": time.perf_counter() - self.t0}
        rec.update(metric_means(sums, counts, w.targets))
        self.tracker.log(rec, st.step)
        metrics = "".join(f" | {k} {rec[k]:.4g}" for k in names)  # the loss hook's own numbers, per target
        self.progress.write(f"step {st.step}/{self.total_display} | loss {rec['loss']:.4f}{metrics} | "
                            f"lr {self.lr:.2e} | {rec['tokens_per_s']:,.0f} tok/s | {st.targets_seen:,} target tokens")
        self.window = LogWindow()

    def _diverged(self, loss: float) -> str:
        kept = f"the checkpoint of step {self.saved_at} is kept" if self.saved_at else "no checkpoint was written"
        return (f"training diverged: the loss is {loss} by step {self.state.step}; {kept} (lower --learning_rate, "
                "raise --warmup_iters, or use --dtype float32)")

    def maybe_validate(self) -> None:
        if self.validator is None or not self.validator.due(self.state):
            return
        res = self.last_val = self.validate()
        self.validator.schedule_from(self.state)
        self.tracker.log({"val_loss": res["loss"], **res["extra"], "val_tokens": res["tokens"]}, self.state.step)
        self.progress.write(f"step {self.state.step}: validation {self._val_text(res)}")

    def validate(self) -> dict:
        """The held-out loss, plus `extra`: val_ppl (for a cross-entropy loss or a `perplexity_metric`; a perplexity
        means nothing for other objectives), the loss hook's metrics and the stage's own evaluation, as val_<name>. A rollout stage
        validates on rollouts of the held-out prompts (greedy; `RolloutContext.validation`)."""
        prepare = self.validation_rollout if self.rollout is not None else None
        res = self.validator.run(self.models.wrapped, prepare=prepare)
        extra = {"val_ppl": res["ppl"]} if self._has_ppl() else {}
        extra.update({f"val_{k}": v for k, v in res.get("metrics", {}).items()})
        ctx = self.rollout_context(0, validation=True)
        was_training = self.models.raw.training
        self.models.raw.eval()
        with torch.no_grad():
            extra.update({f"val_{k}": v for k, v in self.stage.evaluate(ctx, self.validator.dataset).items()})
        self.models.raw.train(was_training)
        res["extra"] = extra
        return res

    def _has_ppl(self) -> bool:
        """A perplexity means something for a cross-entropy loss or a hook naming its cross-entropy metric."""
        return isinstance(self.loss_fn, CrossEntropyLoss) or getattr(self.loss_fn, "perplexity_metric", None) is not None

    def _val_text(self, res: dict) -> str:
        ce = self._has_ppl()
        extra = "".join(f", {k.removeprefix('val_')} {v:.4g}" for k, v in res["extra"].items() if k != "val_ppl")
        ppl = f"ppl {res['ppl']:.2f}, " if ce else ""
        return (f"loss {res['loss']:.4f} ({ppl}{res['tokens']:,} {'tokens' if ce else 'targets'}, "
                f"{res['samples']} samples){extra}")

    def maybe_save_and_stop(self, outcome: Outcome) -> bool:
        """Save every --save_interval steps and when stopping; True when the run stops here."""
        a, st = self.args, self.state
        self.stopping = self.counts.stop or bool(a.stop_after_steps and self.steps_this_run >= a.stop_after_steps)
        if (outcome is Outcome.TRAINED and st.step % a.save_interval == 0) or self.stopping:
            self.save(final=False)
        if self.stopping:
            log.warning("stopping at step %d of %d; continue with --resume", st.step, self.total_display)
        return self.stopping

    # --- saving ---------------------------------------------------------------------------------------
    def save(self, final: bool) -> None:
        """The model file + resume state of this step (collective: every rank calls it)."""
        if self.state.targets_seen == 0:
            log.warning("nothing has been trained yet: no checkpoint is written")
            return
        (bad,) = all_reduce([self.nonfinite_steps])
        if bad:
            raise SystemExit(self._diverged(float("nan")))
        states = gather_objects({"rng": capture_rng(), "data": self.data.state_dict()}, self.dist.is_main)
        gathered = None  # a sharded model is gathered whole by every rank together
        if self.models.sharded:
            gathered = (self.models.full_state_dict(), self.optim.state_dict())
        error = None
        if self.dist.is_main:
            try:
                self._write_checkpoint(states, final, gathered)
            except DiskFullError as e:
                kept = f"the checkpoint pair of step {self.saved_at} is intact" if self.saved_at else \
                    "no checkpoint was written"
                error = f"{e}; {kept}"
        error = broadcast_object(error)
        if error:
            raise SystemExit(error)
        self.saved_at = self.state.step

    def _write_checkpoint(self, states: list[dict], final: bool, gathered: tuple[dict, dict] | None) -> None:
        a, st = self.args, self.state
        data_states: dict[int, dict] = {}
        for s in states:
            data_states.update(s["data"])
        save_id = new_save_id()
        meta = {"stage": self.stage.name, "step": st.step, "tokens_seen": st.tokens_seen,
                "targets_seen": st.targets_seen, "final": final, "save_id": save_id, "args": jsonable(vars(a))}
        model_sd, optim_state = gathered if gathered is not None else (None, self.optim.state_dict())
        resume = {"save_id": save_id, "train_state": st.state_dict(), **optim_state,
                  "rng": [s["rng"] for s in states], "data_states": data_states, "num_streams": self.data.num_streams,
                  "world_size": self.dist.world_size, "wandb_run_id": self.wandb_id, "settings": self.settings,
                  "data": self.identity, "companions": self.models.changing_companions_state()}
        kw = {"state_dict": model_sd} if model_sd is not None else {}
        payload = self.stage.checkpoint_payload(self.models.raw, self.tokenizer, meta, **kw)
        self.checkpointer.save(payload, resume)
        log.info("saved %s (step %d)", self.checkpointer.model_path, st.step)
        self.stage.after_save(a, self.models.raw, self.tokenizer, payload)

    # --- the end --------------------------------------------------------------------------------------
    def finish(self) -> int:
        st = self.state
        self.progress.close()
        finished = not self.stopping
        if st.targets_seen == 0 and finished:
            raise DataError(self._nothing_trained(), path=data_name(self.args))
        if st.step > self.saved_at or finished:
            self.save(final=finished)
        if st.step > st.total_steps:
            log.warning("the data gave %d optimizer steps, %d more than estimated (records that gave several "
                        "units: texts split at max_seq_len, or packed chunks); the learning rate stayed at its floor "
                        "for those", st.step, st.step - st.total_steps)
        if self.validator is not None and finished:
            res = self.last_val = self.validate()
            self.tracker.log({"val_loss": res["loss"], **res["extra"], "final": True}, st.step)
            log.info("final validation %s", self._val_text(res))
        self._check_replicas()
        self._summarize()
        if self.stopping and self.counts.stop:
            return exit_code_for(signal.SIGTERM if self.counts.sigterm else signal.SIGINT)
        return 0

    def _nothing_trained(self) -> str:
        if not self.skipped_batches:
            return ("no training data: the data gave no batch (the file has no records, or every record is held "
                    "out by --val_samples); nothing was trained and no checkpoint is written")
        return (f"no target tokens in the whole run ({self.skipped_batches} batches, none with a target): nothing "
                "was trained and no checkpoint is written (check the text field, answer_offset and --max_seq_len)")

    def _check_replicas(self) -> None:
        """Under DDP every rank must end with bit-identical weights."""
        if not self.dist.enabled or self.models.sharded:  # shards are not replicas
            return
        digests = gather_objects(weights_digest(self.models.raw), self.dist.is_main)
        if self.dist.is_main:
            if len(set(digests)) != 1:
                raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
            log.info("weights identical on all %d ranks (sha256 %s)", self.dist.world_size, digests[0][:12])

    def _summarize(self) -> None:
        a, st = self.args, self.state
        stats, names = self.data.unit_stats(), DataComponent.stat_fields()
        *totals, truncated = all_reduce([getattr(stats, f) for f in names] + [self.data.truncated_tokens])
        stats = UnitStats(**{f: int(v) for f, v in zip(names, totals)})
        summary = {"step": st.step, "total_steps": self.total_display, "tokens_seen": st.tokens_seen,
                   "targets_seen": st.targets_seen, "texts_seen": st.texts_seen,
                   "wall_s": time.perf_counter() - self.t0, "data": asdict(stats), "truncated_tokens": int(truncated)}
        if self.skipped_batches:
            summary["batches_without_targets"] = self.skipped_batches
        if self.last_val:
            summary["val_loss"] = self.last_val["loss"]
            summary.update(self.last_val["extra"])
        self.tracker.summary(summary)
        self.tracker.finish()
        if truncated:
            log.warning("--max_total_tokens %d cut %d tokens (branch tails) in this run", a.max_total_tokens,
                        int(truncated))
        if stats.split_texts or stats.truncated:
            log.warning("data: %d texts longer than max_seq_len were split into pieces; %d branches were cut at "
                        "max_seq_len (%d tokens dropped)", stats.split_texts, stats.truncated, stats.truncated_tokens)
        log.info("done: %d steps, %s target tokens, %.1f s; checkpoint %s", st.step, f"{st.targets_seen:,}",
                 summary["wall_s"], self.checkpointer.model_path)


def run(args, stage: Stage) -> int:
    """Train `stage` with the flags in `args`; -> exit status (see `Trainer.fit`)."""
    return Trainer(args, stage).fit()
