"""Chat evaluation: every prompt answered one at a time and in parallel, compared side by side.

The prompts are samples (`{"main": str, "branches": [str]}`, already rendered with the chat template
when asked). *One at a time* decodes each branch alone (with its sample's main) at the branch slot, hence
the branch coordinate, it has in its sample; *parallel* decodes each sample's branches together,
`batch_groups` samples per call, with the generator's mask. Random streams
are per branch (the j-th branch of the run samples with seed + j in both modes), so with the isolated
mask both modes give the same answers, greedy or sampled, up to floating-point ties; with the
columnar mask the branches see each other and answers may differ, which the report counts.

    gen = ParallelGenerator(model, tokenizer, mask_mode="isolated")
    ev = compare(gen, samples, prompts, SamplingParams(), max_new_tokens=64, batch_groups=8, seed=0)
    print(report_markdown(ev, {"model": "out/full_sft_512.pth"}))
    report_json(ev, {...})   # the same as a JSON-able dict

Used by eval_model.py (repo root).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.parallel_generation import ParallelGenerator
from parallel.sampling import SamplingParams

# the built-in prompts (eval_model.py without --prompts / --prompts_file): MiniMind's eval_model lists,
# in English, plus a few of the bundled data's checkable questions
BUILTIN_PROMPTS = {
    "sft": ["Introduce yourself.", "What subject are you best at?", "Why is the sky blue?",
            "Recommend some books.", "Write a short story.", "What is the capital of France?",
            "Q: What is 17 plus 25?\nA:", "Give three tips for staying healthy."],
    "pretrain": ["The capital of France is", "Once upon a time,", "Q: What is 17 plus 25?\nA:",
                 "Q: Copy these words: plum ring\nA:", "Mira lives in", "The best way to learn is",
                 "Q: Reverse the digits: 1, 5, 8, 6\nA:", "Large language models are"],
}


@dataclass
class Answer:
    text: str
    finish_reason: str
    num_new_tokens: int


@dataclass
class ModeRun:
    """One mode's totals: generate calls, branches decoded, new tokens and wall time."""

    name: str
    calls: int = 0
    branches: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


@dataclass
class ChatEval:
    rows: list[dict] = field(default_factory=list)  # sample, branch, main, prompt, one_at_a_time, parallel, same
    modes: dict[str, ModeRun] = field(default_factory=dict)

    @property
    def identical(self) -> int:
        return sum(r["same"] for r in self.rows)


def _answers(results) -> list[list[Answer]]:
    return [[Answer(b.text, b.finish_reason, b.num_new_tokens) for b in r.branches] for r in results]


def _main_of(sample: dict) -> dict:
    return {"main": sample["main"]} if sample.get("main") else {}  # no main: the branches take slots 0..n-1


def run_one_at_a_time(gen: ParallelGenerator, samples: list[dict], params: SamplingParams, *, max_new_tokens: int,
                      stop: list[str], seed: int) -> tuple[list[list[Answer]], ModeRun]:
    """Each branch alone (with its sample's main) at the branch slot it has in its parallel sample, so the two
    modes differ only in what the branch sees; the j-th branch of the run samples with seed + j."""
    run, out, j = ModeRun("one_at_a_time"), [], 0
    t0 = time.perf_counter()
    for s in samples:
        answers, first_slot = [], 1 if s.get("main") else 0  # slot 0 is the main's when there is one
        for k, b in enumerate(s["branches"]):
            alone = {"text" if isinstance(b, str) else "input_ids": b, "branch_slot": first_slot + k}
            res = gen.generate([{**_main_of(s), "branches": [alone]}], params, max_new_tokens=max_new_tokens,
                               stop_strings=stop, seed=seed + j)
            answers.extend(_answers(res)[0])
            run.calls, j = run.calls + 1, j + 1
        out.append(answers)
    run.seconds = time.perf_counter() - t0
    run.branches = j
    run.new_tokens = sum(a.num_new_tokens for ans in out for a in ans)
    return out, run


def run_parallel(gen: ParallelGenerator, samples: list[dict], params: SamplingParams, *, max_new_tokens: int,
                 stop: list[str], seed: int, batch_groups: int) -> tuple[list[list[Answer]], ModeRun]:
    """`batch_groups` samples per generate call, every branch of a sample decoded together."""
    run, out = ModeRun("parallel"), []
    t0 = time.perf_counter()
    for start in range(0, len(samples), batch_groups):
        batch = [{**_main_of(s), "branches": list(s["branches"])} for s in samples[start:start + batch_groups]]
        first = seed + sum(len(s["branches"]) for s in samples[:start])  # the j-th branch of the run: seed + j
        out.extend(_answers(gen.generate(batch, params, max_new_tokens=max_new_tokens, stop_strings=stop,
                                         seed=first)))
        run.calls += 1
    run.seconds = time.perf_counter() - t0
    run.branches = sum(len(a) for a in out)
    run.new_tokens = sum(a.num_new_tokens for ans in out for a in ans)
    return out, run


def compare(gen: ParallelGenerator, samples: list[dict], prompts: list[tuple[str, list[str]]],
            params: SamplingParams, *, max_new_tokens: int, batch_groups: int, seed: int = 0,
            stop: list[str] | None = None) -> ChatEval:
    """Both modes over `samples`; `prompts[i]` = (main, branch texts) as the user wrote them, for the report."""
    stop = list(stop or [])
    kw = dict(max_new_tokens=max_new_tokens, stop=stop, seed=seed)
    single, single_run = run_one_at_a_time(gen, samples, params, **kw)
    parallel, parallel_run = run_parallel(gen, samples, params, batch_groups=batch_groups, **kw)
    ev = ChatEval(modes={"one_at_a_time": single_run, "parallel": parallel_run})
    for i, ((main, branches), a1, a2) in enumerate(zip(prompts, single, parallel)):
        for k, (prompt, x, y) in enumerate(zip(branches, a1, a2)):
            ev.rows.append({"sample": i, "branch": k, "main": main, "prompt": prompt, "one_at_a_time": asdict(x),
                            "parallel": asdict(y), "same": x.text == y.text})
    return ev


def report_json(ev: ChatEval, header: dict) -> dict:
    modes = {name: {**asdict(m), "tokens_per_s": m.tokens_per_s} for name, m in ev.modes.items()}
    return {**header, "modes": modes, "identical": ev.identical, "branches": len(ev.rows), "rows": ev.rows}


def _cell(text: str, limit: int = 300) -> str:
    """Text as one markdown table cell: pipes escaped, newlines as <br>, long text cut with a mark."""
    t = text if len(text) <= limit else text[:limit] + " …"
    return t.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>") or " "


def report_markdown(ev: ChatEval, header: dict) -> str:
    """The side-by-side report: settings, the two modes' totals, then every prompt's two answers."""
    lines = [f"# Chat evaluation: {header.get('model', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "model"]
    lines += ["", f"**Identical answers: {ev.identical} of {len(ev.rows)}** (one at a time vs parallel)", "",
              "| mode | generate calls | branches | new tokens | seconds | tokens/s |", "|---|---|---|---|---|---|"]
    for name, m in ev.modes.items():
        lines.append(f"| {name.replace('_', ' ')} | {m.calls} | {m.branches} | {m.new_tokens} | {m.seconds:.2f} | "
                     f"{m.tokens_per_s:.1f} |")
    lines += ["", "| # | prompt | one at a time | parallel | same |", "|---|---|---|---|---|"]
    for r in ev.rows:
        prompt = (f"[{_cell(r['main'], 80)}] " if r["main"] else "") + _cell(r["prompt"], 160)
        a, b = r["one_at_a_time"], r["parallel"]
        lines.append(f"| {r['sample']}.{r['branch']} | {prompt} | {_cell(a['text'])} ({a['finish_reason']}) | "
                     f"{_cell(b['text'])} ({b['finish_reason']}) | {'yes' if r['same'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` to `path` through a temporary file in the same folder (never a half-written report)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_paths(out_path: str | Path) -> list[Path]:
    """The files `write_reports` writes: the markdown at `out_path` and the JSON beside it; a `.json` path: JSON only."""
    p = Path(out_path)
    return [p] if p.suffix == ".json" else [p, p.with_suffix(".json")]


def write_reports(ev: ChatEval, header: dict, out_path: str | Path) -> list[Path]:
    """Write the reports of `report_paths(out_path)` (atomically). -> their paths."""
    paths = report_paths(out_path)
    if len(paths) == 2:
        write_text_atomic(paths[0], report_markdown(ev, header))
    write_text_atomic(paths[-1], json.dumps(report_json(ev, header), indent=1, ensure_ascii=False) + "\n")
    return paths
