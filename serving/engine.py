"""The serving engine: one thread that owns the model and a `GenerationSession`, and the jobs it runs.

Continuous batching of branches: every request becomes a `Job` of one or more session samples
(n choices of one prompt are n branches of ONE sample that share the prompt, see serving/work.py).
The engine thread loops:

    take commands (submit / cancel)  ->  admit waiting jobs (up to max_running)  ->  session.step()
          ^                                                                              |
          +---------  route the step's tokens to their jobs, hand them to the event loop <-+

so a request that arrives while others decode is prefilled by the next step and then decodes in
the same forwards as the rest; a finished or cancelled one leaves the batch (and frees its KV-cache
rows) at once. Samples never see each other (each is a row of its own), so a request's answer does
not depend on what else is running; sampled branches draw from their own seeded streams.

The event loop side (serving/app.py) only talks to the thread through `submit` / `cancel`
(thread-safe) and reads `JobUpdate`s from the job's asyncio queue. A step that raises fails the
jobs in the batch with a 500 and the session is rebuilt; after `MAX_CONSECUTIVE_FAILURES` failing
steps in a row the engine stops and `/health` answers 503.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from serving.protocol import APIError

log = logging.getLogger("parallelmind.serving")

MAX_CONSECUTIVE_FAILURES = 3
IDLE_POLL_S = 0.5


@dataclass
class Part:
    """One session sample of a job: `session.add(sample, **kwargs)`; choice `choices[k]` is its branch k."""

    sample: dict
    kwargs: dict
    choices: list[int]


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]]  # (token id, text, logprob), most likely first


@dataclass
class ChoiceDelta:
    """New output of one choice in one step."""

    index: int
    text: str
    num_tokens: int  # tokens this step produced (0 or 1; EOS included)
    finish_reason: str | None = None  # the engine's "eos" | "stop" | "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class ChoiceResult:
    index: int
    text: str
    num_tokens: int
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None


@dataclass
class JobUpdate:
    """What the event loop receives: deltas (streaming jobs), then `done` with the results, or `error`."""

    deltas: list[ChoiceDelta] = field(default_factory=list)
    results: list[ChoiceResult] | None = None
    error: APIError | None = None


class Job:
    """A request in the engine: its parts, the per-choice accumulators and the queue of updates."""

    def __init__(self, parts: Sequence[Part], *, stream: bool, num_logprobs: int | None = None,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.parts = list(parts)
        self.stream = stream
        self.num_logprobs = num_logprobs
        self.loop = loop or asyncio.get_running_loop()
        self.updates: asyncio.Queue[JobUpdate] = asyncio.Queue()
        n = sum(len(p.choices) for p in self.parts)
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.tokens = [0] * n
        self.finish: list[str | None] = [None] * n
        self.logprobs: list[list[TokenLogprob]] | None = [[] for _ in range(n)] if num_logprobs is not None else None
        self.handles: list = []  # session handles, one per part, once added
        self.closed = False  # finished, failed or cancelled: nothing more is delivered
        self._pending: list[ChoiceDelta] = []

    @property
    def num_choices(self) -> int:
        return len(self.tokens)

    # --- called on the engine thread -------------------------------------------------------------------

    def record(self, index: int, text: str, finish: str | None, lp: TokenLogprob | None) -> None:
        self.texts[index].append(text)
        self.tokens[index] += 1
        if finish is not None:
            self.finish[index] = finish
        if lp is not None and self.logprobs is not None:
            self.logprobs[index].append(lp)
        if self.stream:
            self._pending.append(ChoiceDelta(index, text, 1, finish, [lp] if lp is not None else []))

    def flush(self) -> None:
        if self._pending and not self.closed:
            self._deliver(JobUpdate(deltas=self._pending))
        self._pending = []

    @property
    def finished(self) -> bool:
        return all(f is not None for f in self.finish)

    def complete(self) -> None:
        self.flush()
        results = [ChoiceResult(i, "".join(self.texts[i]), self.tokens[i], self.finish[i] or "length",
                                self.logprobs[i] if self.logprobs is not None else None)
                   for i in range(self.num_choices)]
        self._deliver(JobUpdate(results=results))
        self.closed = True

    def fail(self, error: APIError) -> None:
        if not self.closed:
            self._pending = []
            self._deliver(JobUpdate(error=error))
            self.closed = True

    def _deliver(self, update: JobUpdate) -> None:
        try:
            self.loop.call_soon_threadsafe(self.updates.put_nowait, update)
        except RuntimeError:  # the event loop is closed (shutdown): nobody is listening any more
            self.closed = True


class ServingEngine:
    """The engine thread around `ParallelGenerator.session()` (see the module docstring).

    max_running: requests decoded together at most (0 = no limit); the others wait, in arrival order.
    """

    def __init__(self, generator, *, max_running: int = 0):
        self.gen = generator
        self.tokenizer = generator.tokenizer
        self.max_running = max_running
        self.session = generator.session(stream_text=True)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: dict[int, tuple[Job, int]] = {}  # sample id -> (job, part index)
        self._jobs: set[Job] = set()  # admitted, not closed
        self.dead: str | None = None  # why the engine stopped
        self.steps = 0
        self.failures = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="parallelmind-engine", daemon=True)

    def start(self) -> ServingEngine:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.dead is None and self._thread.is_alive()

    def submit(self, job: Job) -> None:
        if not self.alive:
            raise APIError(503, f"the generation engine is not running ({self.dead or 'stopped'})",
                           code="engine_unavailable")
        self._inbox.put(("submit", job))

    def cancel(self, job: Job) -> None:
        """Stop a job now (its client went away): its branches end and their rows are freed."""
        self._inbox.put(("cancel", job))

    def close(self, timeout: float = 10.0) -> None:
        self._stop = True
        self._inbox.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> dict:
        return {"running_requests": len(self._jobs), "waiting_requests": len(self._waiting),
                "rows": self.session.num_rows, "steps": self.steps, "failed_steps": self.failures}

    # --- the thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)  # grad mode is per thread
        try:
            while not self._stop:
                self._take_commands(block=self.session.idle and not self._waiting)
                if self._stop:
                    break
                self._admit()
                if not self.session.idle:
                    self._step()
        except Exception as e:  # a bug in the loop itself: stop, tell everyone
            log.error("generation engine stopped:\n%s", traceback.format_exc())
            self.dead = f"{type(e).__name__}: {e}"
        finally:
            if self.dead is None and self._stop:
                self.dead = "shut down"
            err = APIError(503, f"the generation engine stopped ({self.dead})", code="engine_unavailable")
            for job in [*self._jobs, *self._waiting]:
                job.fail(err)
            self._drain_rejecting(err)

    def _drain_rejecting(self, err: APIError) -> None:
        while True:
            try:
                cmd, job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if cmd == "submit":
                job.fail(err)

    def _take_commands(self, block: bool) -> None:
        while True:
            try:
                cmd, job = self._inbox.get(timeout=IDLE_POLL_S) if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if cmd == "stop":
                self._stop = True
                return
            if cmd == "submit":
                self._waiting.append(job)
            elif cmd == "cancel":
                self._cancel(job)

    def _admit(self) -> None:
        while self._waiting and (not self.max_running or len(self._jobs) < self.max_running):
            job = self._waiting.popleft()
            if job.closed:
                continue
            try:
                for k, part in enumerate(job.parts):
                    h = self.session.add(part.sample, return_step_logits=job.num_logprobs is not None, **part.kwargs)
                    job.handles.append(h)
                    self._running[h.id] = (job, k)
            except ValueError as e:  # the sample does not fit this model (checked by the engine)
                self._drop(job)
                job.fail(APIError(400, str(e), code="invalid_value"))
                continue
            except Exception as e:
                log.error("adding a request failed:\n%s", traceback.format_exc())
                self._drop(job)
                job.fail(APIError(500, f"the request could not be started: {type(e).__name__}: {e}",
                                  code="internal_error"))
                continue
            self._jobs.add(job)

    def _cancel(self, job: Job) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
        self._drop(job)
        job.closed = True

    def _drop(self, job: Job) -> None:
        """Take a job's samples out of the session (cancelled, failed or finished)."""
        for h in job.handles:
            self._running.pop(h.id, None)
            if not h.finished:
                self.session.cancel(h)
        self._jobs.discard(job)

    def _step(self) -> None:
        try:
            events = self.session.step()
        except Exception as e:
            self._step_failed(e)
            return
        self.failures = 0
        self.steps += 1
        touched: dict[int, Job] = {}
        for ev in events:
            entry = self._running.get(ev.sample)
            if entry is None:
                continue
            job, k = entry
            part = job.parts[k]
            index = part.choices[ev.branch]
            lp = self._logprob(job, job.handles[k], ev) if job.num_logprobs is not None else None
            job.record(index, ev.text, ev.finish_reason, lp)
            touched[id(job)] = job
        for job in touched.values():
            if job.finished:
                self._drop(job)
                job.complete()
            else:
                job.flush()

    def _step_failed(self, e: Exception) -> None:
        self.failures += 1
        log.error("a generation step failed (%d in a row):\n%s", self.failures, traceback.format_exc())
        err = APIError(500, f"generation failed: {type(e).__name__}: {e}", code="internal_error")
        for job in list(self._jobs):
            job.fail(err)
        self._jobs.clear()
        self._running.clear()
        self.session = self.gen.session(stream_text=True)  # the old one may be half-way through a step
        if self.failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(f"{self.failures} generation steps failed in a row; last: {type(e).__name__}: {e}")

    def _logprob(self, job: Job, handle, ev) -> TokenLogprob | None:
        """The sampled token's log-probability under the model (raw logits, before temperature / top-p / top-k)
        and the `job.num_logprobs` most likely tokens."""
        st = handle.branches[ev.branch]
        if not st.logits:
            return None
        logits = st.logits[-1]
        st.logits.clear()  # only the newest is needed; the rest would pile up for the whole answer
        lp = torch.log_softmax(logits.float(), dim=-1)
        dec = self.tokenizer.decode if self.tokenizer is not None else (lambda ids, **_: str(ids[0]))
        top = []
        if job.num_logprobs:
            vals, ids = lp.topk(min(job.num_logprobs, lp.numel()))
            top = [(int(i), dec([int(i)], skip_special_tokens=False), float(v)) for v, i in zip(vals, ids)]
        t = int(ev.token_id)
        return TokenLogprob(t, dec([t], skip_special_tokens=False), float(lp[t]), top)
