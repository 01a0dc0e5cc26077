"""Exact-match accuracy on checkable tasks: parallel decoding at N branches vs one prompt at a time.

Tasks are JSONL records ``{"id", "kind", "context", "prompt", "answer"}`` (see
dataset/eval_tasks_demo.jsonl). A generation is correct when its first line, stripped, equals the
answer. Independent tasks (empty context) are decoded N at a time as the branches of one sample, and
one at a time as plain prompts. Shared-context tasks are decoded as ``{"main": context, "branches":
N questions}`` (the context prefilled once) and, one at a time, as the plain text context + question.
Games (tasks with a ``game`` id, e.g. the demo's peer games) are decoded together: for N branches, the
first N tasks of each game form one sample, and only tasks whose ``scored`` is not false count; one at a
time, each scored task is decoded alone (without the branches it needs).
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
    setting: str  # "independent" | "shared_context" | "game"
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
            if "game" in rec and not isinstance(rec["game"], str):
                raise DataError(f"expected a string, got {describe_type(rec['game'])}", path=p, line=no, field="game")
            if not isinstance(rec.get("scored", True), bool):
                raise DataError(f"expected true or false, got {describe_type(rec['scored'])}", path=p, line=no,
                                field="scored")
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


def _run(gen: ParallelGenerator, samples: list[dict], answers: list[list[str | None]], max_new_tokens: int,
         batch_samples: int) -> tuple[int, int, float, int]:
    """(correct, scored, seconds, new tokens) of greedy decoding; a None answer is decoded, not scored."""
    correct = total = new_tokens = 0
    t0 = time.perf_counter()
    greedy = SamplingParams()
    for i in range(0, len(samples), batch_samples):
        res = gen.generate(samples[i:i + batch_samples], greedy, max_new_tokens=max_new_tokens, stop_strings=["\n"])
        for smp, ans in zip(res, answers[i:i + batch_samples]):
            for br, a in zip(smp.branches, ans):
                new_tokens += br.num_new_tokens
                if a is not None:
                    correct += is_correct(br.text, a)
                    total += 1
    return correct, total, time.perf_counter() - t0, new_tokens


def evaluate_tasks(gen: ParallelGenerator, tasks: list[dict], branch_counts: list[int], *, max_tasks: int = 128,
                   max_new_tokens: int = 12, batch_samples: int = 1, log=print) -> dict:
    """Accuracy and speed per branch count, parallel vs sequential, on the same tasks."""
    indep = [t for t in tasks if not t["context"] and not t.get("game")]
    by_ctx: dict[str, list[dict]] = defaultdict(list)
    games: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        if t.get("game"):
            games[t["game"]].append(t)
        elif t["context"]:
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
    if games:
        rows += _game_rows(gen, list(games.values()), branch_counts, max_tasks, max_new_tokens, batch_samples, log)
    return {"rows": [r.as_dict() for r in rows], "mask": gen.mask_mode, "max_new_tokens": max_new_tokens}


def _game_samples(games: list[list[dict]], b: int, max_tasks: int) -> list[list[dict]]:
    """Samples of `b` branches cut from games: a game's unscored tasks (e.g. the dealer) first, then the
    next `b - len(unscored)` scored tasks; stops after `max_tasks` scored tasks."""
    out, scored_total = [], 0
    for g in games:
        given = [t for t in g if not t.get("scored", True)]
        asked = [t for t in g if t.get("scored", True)]
        per = b - len(given)
        for i in range(0, len(asked) - per + 1, per) if per >= 1 else ():
            if scored_total >= max_tasks:
                return out
            out.append(given + asked[i:i + per])
            scored_total += per
    return out


def _game_rows(gen: ParallelGenerator, games: list[list[dict]], branch_counts: list[int], max_tasks: int,
               max_new_tokens: int, batch_samples: int, log) -> list[TaskRow]:
    """Per branch count N: samples of N branches cut from the games (`_game_samples`), scored tasks
    counted; one at a time: each scored task alone."""
    rows: list[TaskRow] = []
    alone = [t for g in games for t in g if t.get("scored", True)][:max_tasks]
    c, n, s, k = _run(gen, [{"branches": [t["prompt"]]} for t in alone], [[t["answer"]] for t in alone],
                      max_new_tokens, 1)
    rows.append(TaskRow("game", "sequential", 1, c, n, s, k))
    log(f"games, one prompt at a time: {c}/{n} correct")
    for b in branch_counts:
        chosen = _game_samples(games, b, max_tasks)
        if not chosen:
            continue
        c, n, s, k = _run(gen, [{"branches": [t["prompt"] for t in ch]} for ch in chosen],
                          [[t["answer"] if t.get("scored", True) else None for t in ch] for ch in chosen],
                          max_new_tokens, batch_samples)
        rows.append(TaskRow("game", "parallel", b, c, n, s, k))
        log(f"games of {b} branches decoded together: {c}/{n} correct, {k / s:.1f} tokens/s")
    return rows
