"""Bundled post-training sets: R1-style reasoning conversations over the demo's checkable tasks.

`scripts/build_demo_data.py` writes them next to the rest of the demo corpus (the DPO pairs,
`dpo_demo.jsonl`, come from `parallel_data.demo.corpus.build_dpo`):

| file | record |
|---|---|
| reason_demo.jsonl | `{"conversations": [{"role": "user", ...}, {"role": "assistant", "content": "<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>"}]}` |

Each trace works the task out in a few short steps (the words repeated, the items counted one by
one, the end of the list read, the sentence of the text that holds the fact), then gives the same
answer as the task's `answer`, so a model's reasoning and its answer can both be checked. The held-out
eval tasks never appear (the same `HeldOut` as every demo file). Seeded and pure Python: the same seed
gives the same records.
"""

from __future__ import annotations

import random
import re

from parallel_data.demo.corpus import NO_HELDOUT, HeldOut, stream_rng
from parallel_data.demo.tasks import TASK_KINDS, Task, fact_context, independent_task

POSTTRAIN_FILES = {"reason": "reason_demo.jsonl"}
DEFAULT_SIZES = {"reason": 4000}


def r1_response(think: str, answer: str) -> str:
    """The assistant turn of an R1-style trace (MiniMind's r1_mix layout: each part on its own lines)."""
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def _arith_steps(t: Task) -> str:
    a, b = (int(x) for x in re.findall(r"\d+", t.question)[:2])
    ans = int(t.answer)
    if a + b == ans and not re.search(r"minus|-|subtract|difference|away", t.question):
        return f"I add the two numbers: {a} + {b} = {ans}."
    big, small = max(a, b), min(a, b)
    return f"I take the smaller number from the larger one: {big} - {small} = {ans}."


def _items(question: str) -> list[str]:
    body = question.split(":", 1)[1] if ":" in question else question
    body = body.strip().rstrip("?").strip()
    return [x for x in re.split(r",\s*|\s+", body) if x]


def _count_steps(t: Task) -> str:
    if "letters" in t.question:
        word = re.search(r"word (\w+)|does (\w+) have", t.question)
        w = next(g for g in word.groups() if g) if word else ""
        return f"I spell it out: {' '.join(w)}. That is {t.answer} letters."
    if "How many times" in t.question:
        target = re.search(r"does (\w+) appear", t.question).group(1)
        return f"I look for {target} in the list and count each one I find: {t.answer}."
    items = _items(t.question)
    counted = ", ".join(f"{x} ({i})" for i, x in enumerate(items, 1))
    return f"I count the items one by one: {counted}. There are {t.answer}."


def task_thinking(t: Task, context: str = "") -> str:
    """A short worked solution of a demo task that ends at its answer."""
    if t.kind == "arith":
        return _arith_steps(t)
    if t.kind == "copy":
        return f"I repeat the words exactly as they are: {t.answer}."
    if t.kind == "reverse":
        return f"I read the items from the last one to the first one: {t.answer}."
    if t.kind == "count":
        return _count_steps(t)
    if t.kind == "last":
        return f"I look at the end of the list: the last word is {t.answer}."
    sentence = next((s + "." for s in context.split(". ") if t.answer in s), "")
    return f"The text says: {sentence.rstrip('.')}." if sentence else "I look for the answer in the text."


def build_reason(seed: int, n: int, held: HeldOut = NO_HELDOUT) -> list[dict]:
    """`n` single-turn reasoning conversations: independent tasks (70%) and questions about a fact text (30%)."""
    rng = stream_rng(seed, "reason")
    out = []
    while len(out) < n:
        if rng.random() < 0.7:
            t = independent_task(rng, rng.choice(TASK_KINDS))
            if t.question in held.questions:
                continue
            user, think = t.question, task_thinking(t)
        else:
            ctx, tasks = fact_context(rng)
            if ctx in held.contexts:
                continue
            t = rng.choice(tasks)
            user, think = f"{ctx}\n{t.question}", task_thinking(t, ctx)
        out.append({"conversations": [{"role": "user", "content": user},
                                      {"role": "assistant", "content": r1_response(think, t.answer)}]})
    return out


def build_posttrain(seed: int, held: HeldOut = NO_HELDOUT, sizes: dict[str, int] | None = None) -> dict[str, list]:
    """{name: records} for every file of POSTTRAIN_FILES."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    return {"reason": build_reason(seed, sizes["reason"], held)}


def _demo(seed: int = 0) -> None:  # pragma: no cover - a quick look: python -m parallel_data.demo.posttrain
    for rec in build_reason(seed, 5):
        print(rec["conversations"][1]["content"].replace("\n", " | "))


if __name__ == "__main__":  # pragma: no cover
    _demo(random.randrange(1000))
