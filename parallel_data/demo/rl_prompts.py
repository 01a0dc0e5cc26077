"""Verifiable RL prompts for the bundled demo corpus: `{"prompt", "answer"}` records for PPO and GRPO.

Each prompt is one of the demo's checkable tasks (`parallel_data.demo.tasks.TASK_KINDS`: copy, count, last word),
asked the way the SFT conversations ask it, and its answer is the exact string the generator
computed, so the exact-match reward of trainer/train_grpo.py and train_ppo.py can score a generation
without a reward model. Kinds take turns; a question of the held-out eval set is never drawn, so RL
on this file leaves `eval_tasks_demo.jsonl` clean. Deterministic: the same seed gives the same records.
"""

from __future__ import annotations

from parallel_data.demo.corpus import NO_HELDOUT, HeldOut, stream_rng
from parallel_data.demo.tasks import TASK_KINDS, independent_task

RL_PROMPTS_FILE = "rl_prompts_demo.jsonl"
DEFAULT_RL_PROMPTS = 2000


def build_rl_prompts(seed: int, n: int = DEFAULT_RL_PROMPTS, held: HeldOut = NO_HELDOUT) -> list[dict]:
    """`n` records `{"prompt", "answer", "kind"}`, the kinds in turn, none of them an eval question."""
    rng = stream_rng(seed, "rl_prompts")
    out = []
    for i in range(n):
        kind = TASK_KINDS[i % len(TASK_KINDS)]
        for _ in range(1000):
            task = independent_task(rng, kind)
            if task.question not in held.questions:
                break
        else:
            raise RuntimeError(f"could not draw a {kind} prompt outside the held-out set; lower the eval sizes")
        out.append({"prompt": task.question, "answer": task.answer, "kind": kind})
    return out
