"""Exact-match accuracy on checkable tasks: parallel decoding at N branches vs one prompt at a time.

Tasks are JSONL records ``{"id", "kind", "context", "prompt", "answer"}`` (see
dataset/eval_tasks_demo.jsonl). A generation is correct when its first line, stripped, equals the
answer. Independent tasks (empty context) are decoded N at a time as the branches of one sample, and
one at a time as plain prompts. Shared-context tasks are decoded as ``{"main": context, "branches":
N questions}`` (the context prefilled once) and, one at a time, as the plain text context + question.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from model.parallel_generation import ParallelGenerator
from parallel.sampling import SamplingParams
from parallel_data.io import DataError, check_input_file, describe_type, iter_jsonl


@dataclass
class TaskRow:
    setting: str  # "independent" | "shared_context"
    mode: str  # "parallel" | "sequential"
    branches: int
    correct: int
    total: int
    seconds: float
    new_tokens: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy,
                "tokens_per_s": self.new_tokens / self.seconds if self.seconds else 0.0}


def read_tasks(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"tasks file {p} does not exist (build it with scripts/build_demo_data.py)")
    out = []
    try:
        for no, rec in iter_jsonl(check_input_file(p, "tasks file")):
            for f in ("prompt", "answer"):
                if not isinstance(rec.get(f), str) or not rec[f].strip():
                    raise DataError(f"expected a non-empty string, got {describe_type(rec.get(f))}", path=p, line=no,
                                    field=f)
            rec.setdefault("context", "")
            rec.setdefault("kind", "task")
            out.append(rec)
    except DataError as e:
        if e.reason.startswith("is empty"):
            raise DataError("is empty (no tasks)", path=p) from None
        raise
    return out


def is_correct(generated: str, answer: str) -> bool:
    return generated.split("\n", 1)[0].strip() == answer.strip()


def _run(gen: ParallelGenerator, samples: list[dict], answers: list[list[str]], max_new_tokens: int,
         batch_samples: int) -> tuple[int, int, float, int]:
    correct = total = new_tokens = 0
    t0 = time.perf_counter()
    greedy = SamplingParams()
    for i in range(0, len(samples), batch_samples):
        res = gen.generate(samples[i:i + batch_samples], greedy, max_new_tokens=max_new_tokens, stop_strings=["\n"])
        for smp, ans in zip(res, answers[i:i + batch_samples]):
            for br, a in zip(smp.branches, ans):
                correct += is_correct(br.text, a)
                total += 1
                new_tokens += br.num_new_tokens
    return correct, total, time.perf_counter() - t0, new_tokens


def evaluate_tasks(gen: ParallelGenerator, tasks: list[dict], branch_counts: list[int], *, max_tasks: int = 128,
                   max_new_tokens: int = 12, batch_samples: int = 1, log=print) -> dict:
    """Accuracy and speed per branch count, parallel vs sequential, on the same tasks."""
    indep = [t for t in tasks if not t["context"]]
    by_ctx: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        if t["context"]:
            by_ctx[t["context"]].append(t)
    rows: list[TaskRow] = []
    biggest = max(branch_counts)
    if indep:
        pool = indep[: max(biggest, max_tasks // biggest * biggest)]
        c, n, s, k = _run(gen, [{"branches": [t["prompt"]]} for t in pool], [[t["answer"]] for t in pool],
                          max_new_tokens, 1)
        rows.append(TaskRow("independent", "sequential", 1, c, n, s, k))
        log(f"independent, one prompt at a time: {c}/{n} correct, {k / s:.1f} tokens/s")
        for b in branch_counts:
            chunks = [pool[i:i + b] for i in range(0, len(pool) - b + 1, b)]
            c, n, s, k = _run(gen, [{"branches": [t["prompt"] for t in ch]} for ch in chunks],
                              [[t["answer"] for t in ch] for ch in chunks], max_new_tokens, batch_samples)
            rows.append(TaskRow("independent", "parallel", b, c, n, s, k))
            log(f"independent, {b} branches in parallel: {c}/{n} correct, {k / s:.1f} tokens/s")
    contexts = [(ctx, ts) for ctx, ts in by_ctx.items()]
    if contexts:
        for b in branch_counts:
            chosen = [(ctx, ts[:b]) for ctx, ts in contexts if len(ts) >= b]
            chosen = chosen[: max(1, max_tasks // b)]
            if not chosen:
                continue
            c, n, s, k = _run(gen, [{"main": ctx, "branches": [t["prompt"] for t in ts]} for ctx, ts in chosen],
                              [[t["answer"] for t in ts] for _, ts in chosen], max_new_tokens, batch_samples)
            rows.append(TaskRow("shared_context", "parallel", b, c, n, s, k))
            c2, n2, s2, k2 = _run(gen, [{"branches": [ctx + t["prompt"]]} for ctx, ts in chosen for t in ts],
                                  [[t["answer"]] for _, ts in chosen for t in ts], max_new_tokens, 1)
            rows.append(TaskRow("shared_context", "sequential", b, c2, n2, s2, k2))
            log(f"shared context, {b} questions: parallel {c}/{n} ({k / s:.1f} tok/s), one at a time {c2}/{n2} "
                f"({k2 / s2:.1f} tok/s)")
    return {"rows": [r.as_dict() for r in rows], "mask": gen.mask_mode, "max_new_tokens": max_new_tokens}
