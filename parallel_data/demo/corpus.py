"""The bundled demo corpus: a small, deterministic, real English language-modelling corpus with checkable tasks.

`scripts/build_demo_data.py` is a thin CLI over this module; tests and other scripts call the builders
directly to make small corpora in memory. Everything is pure Python and seeded: the same seed and sizes
give byte-identical files (each file has its own random stream, derived from the seed and the file's
name, so changing one size does not change the other files).

Files (all JSONL, one record per line):

| file | record |
|---|---|
| pretrain_demo.jsonl / pretrain_demo_val.jsonl | `{"text"}`: stories, descriptions, facts, lists, dialogues, letters, and Q/A blocks of the task formats |
| parallel_demo.jsonl | `{"main", "branches": [{"text", "answer_offset"}]}`: a shared fact context and 1..16 questions about it, or `main == ""` and 1..16 independent tasks, or a peer game of 2..16 branches |
| sft_demo.jsonl | `{"conversations": [{"role", "content"}]}`: tasks (single and multi-turn) and chit-chat |
| dpo_demo.jsonl | `{"chosen": [...], "rejected": [...]}`: the same prompt with a correct and a wrong answer |
| eval_tasks_demo.jsonl | `{"id", "kind", "context", "prompt", "answer"}` (+ `game`, `scored` in peer games): held-out checkable tasks (independent, fact groups, peer games) |
| eval_prompts_demo.jsonl | `{"branches"}` / `{"main", "branches"}` prompts for scripts/parallel_generate.py |

Task format (see `parallel_data/demo/tasks.py`): `Q: <question>\\nA: <answer>`. An eval task's `prompt` ends
with `A:`; its `answer` is stored stripped; `context + prompt` is exactly the text the model saw in
pretraining (a fact context is one line and ends with "\\n" in `context` and in a parallel record's `main`).
Peer games come as 16 consecutive eval lines with the same `game` id (`peer-GGGGG`): the dealer first
(`kind == "dealer"`, `"scored": false`), then 15 peers (`kind == "peer"`) asking for its card; the lines of
a game are decoded together (scripts/eval_tasks.py takes the first N of a game for N branches) and only
the peers are scored. A game is not held out line by line: every game's answer is its own dealer's card.

Held out: the eval tasks are drawn first; no training record may contain an eval question line (for
independent tasks) or an eval context line (for fact groups). `find_leaks` checks it over every file.

Chicken and egg: the default tokenizer (`model/`) is trained on pretrain_demo.jsonl, and the
`answer_offset`s of parallel_demo.jsonl are counted with a tokenizer; so the pretraining text needs no
tokenizer and is written first, then the tokenizer is trained (`scripts/train_tokenizer.py`), then the
parallel file is built.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from parallel_data.demo import words as W
from parallel_data.demo.tasks import (
    FACTS,
    PEER_KIND,
    TASK_KINDS,
    Task,
    fact_context,
    independent_task,
    peer_group,
    prompt_text,
    qa_text,
)
from parallel_data.demo.text import general_doc, story

DEFAULT_SEED = 1234
FILE_NAMES = {
    "pretrain": "pretrain_demo.jsonl", "val": "pretrain_demo_val.jsonl", "parallel": "parallel_demo.jsonl",
    "sft": "sft_demo.jsonl", "dpo": "dpo_demo.jsonl", "eval_tasks": "eval_tasks_demo.jsonl",
    "eval_prompts": "eval_prompts_demo.jsonl",
}


@dataclass
class DemoSizes:
    """Record counts of each file (the defaults make a few MB in a few seconds)."""

    pretrain: int = 40000
    val: int = 2000
    parallel: int = 24000
    sft: int = 10000
    dpo: int = 4000
    eval_tasks: int = 500  # independent eval tasks, spread evenly over TASK_KINDS
    eval_groups: int = 120  # fact contexts with 4..16 eval questions each
    eval_peer: int = 16  # peer games of 16 branches each


CORPUS_STAMP = ".demo_corpus"  # written last by scripts/build_demo_data.py: what the files were built from


def corpus_fingerprint(seed: int, sizes: DemoSizes, tokenizer_file: str | Path | None) -> str:
    """A hash of everything the demo files depend on: the generator modules' source (this folder), the
    seed, the sizes and the tokenizer file that counted the answer offsets."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(json.dumps({"seed": seed, "sizes": asdict(sizes)}, sort_keys=True).encode())
    if tokenizer_file is not None and Path(tokenizer_file).is_file():
        h.update(Path(tokenizer_file).read_bytes())
    return h.hexdigest()[:20]


def corpus_is_current(data_dir: str | Path, tokenizer_file: str | Path) -> bool:
    """True when `data_dir` holds the default corpus (DEFAULT_SEED, DemoSizes()) built by the current
    generators with `tokenizer_file`: a stale dataset/ (older code, other sizes) is rebuilt, never used."""
    stamp = Path(data_dir) / CORPUS_STAMP
    return stamp.is_file() and stamp.read_text().strip() == corpus_fingerprint(DEFAULT_SEED, DemoSizes(),
                                                                                  tokenizer_file)


def stream_rng(seed: int, stream: str) -> random.Random:
    """An independent random stream per file (str seeds are hashed with SHA-512: stable across runs)."""
    return random.Random(f"parallelmind-demo/{seed}/{stream}")


@dataclass(frozen=True)
class HeldOut:
    """What training data must not contain: eval question lines and eval context lines."""

    questions: frozenset[str] = frozenset()
    contexts: frozenset[str] = frozenset()

    def __contains__(self, line: str) -> bool:
        return line in self.questions or line in self.contexts


NO_HELDOUT = HeldOut()


def _fresh_task(rng: random.Random, held: HeldOut, kind: str | None = None) -> Task:
    for _ in range(1000):
        t = independent_task(rng, kind)
        if t.question not in held.questions:
            return t
    raise RuntimeError(f"could not draw a {kind or 'task'} outside the held-out set; lower the eval sizes")


def _fresh_context(rng: random.Random, held: HeldOut, facts: tuple[int, int] = FACTS) -> tuple[str, list[Task]]:
    for _ in range(1000):
        ctx, tasks = fact_context(rng, facts)
        if ctx not in held.contexts:
            return ctx, tasks
    raise RuntimeError("could not draw a fact context outside the held-out set")


# ---- eval tasks (drawn first: they define the held-out set) ----------------------------------------------

def _eval_context(rng: random.Random, g: int) -> tuple[str, list[Task]]:
    """Every third eval context states every fact (16 questions, for 16 branches)."""
    if g % 3 == 0:
        return fact_context(rng, facts=(FACTS[1], FACTS[1]))
    return fact_context(rng, facts=FACTS)


def build_eval_tasks(seed: int, n_tasks: int = 500, n_groups: int = 120, n_peer: int = 16) -> list[dict]:
    """Held-out checkable tasks: `n_tasks` independent ones, `n_groups` fact groups of 4..16 questions, and
    `n_peer` peer games of 16 branches (in this order)."""
    rng = stream_rng(seed, "eval_tasks")
    out, seen = [], set()
    i = 0
    while len(out) < n_tasks:
        kind = TASK_KINDS[len(out) % len(TASK_KINDS)]
        t = independent_task(rng, kind)
        i += 1
        if t.question in seen:
            if i > 100 * (n_tasks + 10):
                raise RuntimeError(f"cannot draw {n_tasks} distinct eval tasks")
            continue
        seen.add(t.question)
        out.append({"id": f"{kind}-{len(out):05d}", "kind": kind, "context": "", "prompt": prompt_text(t.question),
                    "answer": t.answer})
    contexts = set()
    while len(contexts) < n_groups:
        ctx, tasks = _eval_context(rng, len(contexts))
        if ctx in contexts or len(tasks) < 4:
            continue
        contexts.add(ctx)
        g = len(contexts) - 1
        for j, t in enumerate(rng.sample(tasks, min(len(tasks), rng.randint(4, 16) if g % 3 else 16))):
            out.append({"id": f"fact-{g:05d}-q{j}", "kind": "fact", "context": ctx + "\n",
                        "prompt": prompt_text(t.question), "answer": t.answer})
    for g in range(n_peer):
        for j, t in enumerate(peer_group(rng, 16)):
            out.append({"id": f"peer-{g:05d}-b{j}", "kind": t.kind, "context": "", "prompt": prompt_text(t.question),
                        "answer": t.answer, "game": f"peer-{g:05d}", "scored": t.kind == PEER_KIND})
    return out


def _question_of(prompt: str) -> str:
    return prompt.removeprefix("Q: ").removesuffix("\nA:")


def heldout_from_eval(eval_tasks: Iterable[dict]) -> HeldOut:
    qs, cs = set(), set()
    for t in eval_tasks:
        if t.get("game"):  # a game's lines repeat across games; its answer is its own dealer's card
            continue
        if t["context"]:
            cs.add(t["context"].rstrip("\n"))
        else:
            qs.add(_question_of(t["prompt"]))
    return HeldOut(frozenset(qs), frozenset(cs))


# ---- pretraining text ------------------------------------------------------------------------------------

_HEADERS = {"copy": ("Copying practice:", "Repeat the words exactly."),
            "count": ("Counting practice:", "Count carefully."),
            "last": ("Last words:", "Find the last word."),
            None: ("Quiz:", "Practice questions:", "Questions and answers:")}


def _task_block(rng: random.Random, held: HeldOut) -> str:
    kind = rng.choice(TASK_KINDS) if rng.random() < 0.4 else None
    lines = [qa_text(t.question, t.answer) for t in (_fresh_task(rng, held, kind) for _ in range(rng.randint(2, 6)))]
    if rng.random() < 0.3:
        lines.insert(0, rng.choice(_HEADERS[kind]))
    return "\n".join(lines)


def _fact_doc(rng: random.Random, held: HeldOut) -> str:
    ctx, tasks = _fresh_context(rng, held)
    qa = [qa_text(t.question, t.answer) for t in rng.sample(tasks, min(len(tasks), rng.randint(2, 6)))]
    return "\n".join([ctx, *qa])


# Shares of the pretraining documents: general English text, Q/A blocks of independent tasks, fact texts
# followed by questions about them. The tasks get most of the budget: they are what the demo measures.
PRETRAIN_MIX = (("general", 0.35), ("tasks", 0.35), ("facts", 0.30))


def pretrain_doc(rng: random.Random, held: HeldOut = NO_HELDOUT) -> str:
    """One pretraining document, drawn with the shares of PRETRAIN_MIX."""
    u = rng.random()
    if u < PRETRAIN_MIX[0][1]:
        return general_doc(rng)
    return _task_block(rng, held) if u < PRETRAIN_MIX[0][1] + PRETRAIN_MIX[1][1] else _fact_doc(rng, held)


def build_pretrain(seed: int, n: int, held: HeldOut = NO_HELDOUT, stream: str = "pretrain",
                   exclude: Iterable[str] = ()) -> list[str]:
    """`n` documents; `exclude` (e.g. the training docs, for the validation split) are redrawn."""
    rng = stream_rng(seed, stream)
    exclude = set(exclude)
    out = []
    while len(out) < n:
        d = pretrain_doc(rng, held)
        if d not in exclude:
            out.append(d)
    return out


# ---- parallel (grouped) records ---------------------------------------------------------------------------

# Shares of the grouped records: one task alone in the one-at-a-time format (a fact context and its
# questions in the same branch, an independent task, or a dealer's own card), a fact context as the main
# with questions about it, independent tasks, peer games. Single tasks come first in a model's learning:
# every retrieval is learned there, where the attention has few tokens to choose from.
PARALLEL_MIX = (("single", 0.55), ("fact", 0.15), ("independent", 0.10), ("peer", 0.20))
MAX_BRANCHES = 16


def _peer_game(rng: random.Random, size: int) -> list[Task]:
    """A peer game with the dealer at a random branch (the eval games put it first)."""
    tasks = peer_group(rng, size)
    rng.shuffle(tasks)
    return tasks


def _branch_count(rng: random.Random, lo: int = 1) -> int:
    """1..16, flat: every branch count the demo evaluates is common in training."""
    return rng.randint(lo, MAX_BRANCHES)


SINGLE_FACT_SHARE = 0.4  # of the one-task records, the share that is a fact context and its questions
SINGLE_DEALER_SHARE = 0.05  # of the one-task records, the share that is a peer game's dealer alone
SINGLE_FACTS = (1, FACTS[1])  # facts per context of a one-task record: from one, the retrieval's easy case
QUESTIONS_PER_CONTEXT = 8  # at most, in a one-task fact record: distinct questions in random order, so a
# fact may come twice in other words (twice the retrievals of one question per fact; with one per fact the
# model learnt only some of the four attributes: docs/DEMO_EXPERIMENTS.md, p1-p4)


def _single(rng: random.Random, held: HeldOut) -> dict:
    """One branch in the one-at-a-time format: an independent task, or a fact context followed by up to
    QUESTIONS_PER_CONTEXT questions about it (the loss starts at the first answer, so every answer after
    the context trains the retrieval: several retrievals for one context's tokens)."""
    u = rng.random()
    if u < SINGLE_DEALER_SHARE:  # the dealer's own card: the game's one part that needs no other branch
        t = peer_group(rng, 1)[0]
        return {"main": "", "branches": [(prompt_text(t.question), t.answer)]}
    if u < SINGLE_DEALER_SHARE + SINGLE_FACT_SHARE:
        ctx, tasks = _fresh_context(rng, held, SINGLE_FACTS)
        qs = rng.sample(tasks, min(len(tasks), QUESTIONS_PER_CONTEXT))
        rest = "\n".join([qs[0].answer] + [qa_text(t.question, t.answer) for t in qs[1:]])
        return {"main": "", "branches": [(f"{ctx}\n{prompt_text(qs[0].question)}", rest)]}
    t = _fresh_task(rng, held)
    return {"main": "", "branches": [(prompt_text(t.question), t.answer)]}


def build_parallel_raw(seed: int, n: int, held: HeldOut = NO_HELDOUT) -> list[dict]:
    """Grouped records before tokenisation: `{"main", "branches": [(prompt, answer), ...]}`.

    PARALLEL_MIX of: one task alone (`_single`: an independent task, a fact context and questions about it
    in one branch, or a dealer's own card),
    a fact context (main = context line + "\\n") with 1..16 questions about it, an empty main with 1..16
    independent tasks of mixed kinds, and an empty main with a peer game of 2..16 branches.
    """
    rng = stream_rng(seed, "parallel")
    bounds, acc = [], 0.0
    for name, share in PARALLEL_MIX:
        acc += share
        bounds.append((acc, name))
    out = []
    for _ in range(n):
        u = rng.random()
        kind = next((name for b, name in bounds if u < b), bounds[-1][1])
        if kind == "single":
            out.append(_single(rng, held))
            continue
        if kind == "fact":
            ctx, tasks = _fresh_context(rng, held)
            main, tasks = ctx + "\n", rng.sample(tasks, min(_branch_count(rng), len(tasks)))
        elif kind == "independent":
            main, tasks, seen = "", [], set()
            m = _branch_count(rng)
            while len(tasks) < m:
                t = _fresh_task(rng, held)
                if t.question not in seen:
                    seen.add(t.question)
                    tasks.append(t)
        else:
            main, tasks = "", _peer_game(rng, _branch_count(rng, 2))
        out.append({"main": main, "branches": [(prompt_text(t.question), t.answer) for t in tasks]})
    return out


def attach_answer_offsets(raw: list[dict], tokenizer) -> list[dict]:
    """Turn raw records into `{"main", "branches": [{"text", "answer_offset"}]}` using `tokenizer`.

    A branch's text is `prompt + " " + answer + "\\n"` (the newline is trained: it ends the answer).
    `answer_offset` is the number of tokens (add_special_tokens=False) of the prompt, which must be an
    exact token prefix of the full branch text; otherwise the loss region would be wrong, so this raises.
    """
    pairs = [(p, a) for r in raw for p, a in r["branches"]]
    prompts = [p for p, _ in pairs]
    texts = [f"{p} {a}\n" for p, a in pairs]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    offsets = []
    for text, p, t in zip(texts, p_ids, t_ids):
        if t[: len(p)] != p or len(t) <= len(p):
            raise ValueError(f"branch {text!r}: the prompt's tokens {p} are not a strict prefix of the text's tokens "
                             f"{t}; this tokenizer merges across the answer boundary, so answer_offset is undefined")
        offsets.append(len(p))
    it = iter(zip(texts, offsets))
    return [{"main": r["main"], "branches": [dict(zip(("text", "answer_offset"), next(it))) for _ in r["branches"]]}
            for r in raw]


# ---- chat data ---------------------------------------------------------------------------------------------

_CHAT = (
    (("Hi!", "Hello!", "Hey there."), ("Hello! How can I help you today?", "Hi! What can I do for you?")),
    (("Good morning!",), ("Good morning! How can I help?",)),
    (("How are you?", "How are you doing today?"), ("I am doing well, thank you. How can I help you?",)),
    (("Thank you!", "Thanks a lot.", "Great, thanks."), ("You are welcome!", "Happy to help.", "Glad I could help.")),
    (("Bye!", "See you later.", "Goodbye."), ("Goodbye! Have a nice day.", "See you! Take care.")),
    (("Who are you?", "What are you?"), ("I am a small assistant. I can answer short questions, do simple sums, "
                                          "and tell short stories.",)),
    (("What can you do?", "How can you help me?"), ("I can add and subtract numbers, count items, copy or reverse "
                                                    "lists, and answer questions about a short text.",)),
)
_BAD_REPLIES = ("I don't know.", "No.", "Why do you ask?", "Figure it out yourself.", "Maybe.", "I am not sure.")


def chit_chat(rng: random.Random) -> tuple[str, str]:
    """A (user, assistant) exchange: greetings, thanks, small talk, or a request for a short text."""
    u = rng.random()
    if u < 0.45:
        users, replies = rng.choice(_CHAT)
        return rng.choice(users), rng.choice(replies)
    if u < 0.6:
        country, capital = rng.choice(W.CAPITALS)
        return f"What is the capital of {country}?", f"The capital of {country} is {capital}."
    if u < 0.7:
        i = rng.randrange(7)
        return f"What day comes after {W.DAYS[i]}?", f"{W.DAYS[(i + 1) % 7]} comes after {W.DAYS[i]}."
    if u < 0.85:
        return rng.choice(("Tell me a short story.", "Can you tell me a story?", "Write a short story.")), story(rng)
    req = rng.choice(("Tell me something interesting.", "Write a short text.", "Give me something to read."))
    return req, general_doc(rng)


def _system(rng: random.Random) -> list[dict]:
    return [{"role": "system", "content": rng.choice(W.SYSTEM_PROMPTS)}] if rng.random() < 0.2 else []


def _turns(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    out = []
    for u, a in pairs:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out


def _fact_pairs(rng: random.Random, held: HeldOut, k: int) -> list[tuple[str, str]]:
    """k turns about one context; the first user message carries the context."""
    ctx, tasks = _fresh_context(rng, held)
    chosen = rng.sample(tasks, min(k, len(tasks)))
    return [((f"{ctx}\n{t.question}" if i == 0 else t.question), t.answer) for i, t in enumerate(chosen)]


def build_sft(seed: int, n: int, held: HeldOut = NO_HELDOUT) -> list[dict]:
    """Single-turn tasks (30%), fact conversations of 1..4 turns (20%), multi-turn tasks (20%), chit-chat (30%)."""
    rng = stream_rng(seed, "sft")
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.3:
            t = _fresh_task(rng, held)
            pairs = [(t.question, t.answer)]
        elif u < 0.5:
            pairs = _fact_pairs(rng, held, rng.randint(1, 4))
        elif u < 0.7:
            pairs = [(t.question, t.answer) for t in (_fresh_task(rng, held) for _ in range(rng.randint(2, 4)))]
        else:
            pairs = [chit_chat(rng) for _ in range(rng.randint(1, 3))]
        out.append({"conversations": _system(rng) + _turns(pairs)})
    return out


def build_dpo(seed: int, n: int, held: HeldOut = NO_HELDOUT) -> list[dict]:
    """Preference pairs: same prompt, chosen = correct answer, rejected = a plausible wrong one (or a rude reply)."""
    rng = stream_rng(seed, "dpo")
    out = []
    for _ in range(n):
        history = _system(rng)
        if rng.random() < 0.2:  # some pairs follow an earlier, correct exchange
            t0 = _fresh_task(rng, held)
            history += _turns([(t0.question, t0.answer)])
        u = rng.random()
        if u < 0.85:
            if u < 0.6:
                t = _fresh_task(rng, held)
                user = t.question
            else:
                ctx, tasks = _fresh_context(rng, held)
                t = rng.choice(tasks)
                user = f"{ctx}\n{t.question}"
            good, bad = t.answer, rng.choice([w for w in t.wrong if w != t.answer])
        else:
            user, good = chit_chat(rng)
            bad = rng.choice(_BAD_REPLIES)
        prompt = history + [{"role": "user", "content": user}]
        out.append({"chosen": prompt + [{"role": "assistant", "content": good}],
                    "rejected": prompt + [{"role": "assistant", "content": bad}]})
    return out


def build_eval_prompts(eval_tasks: list[dict]) -> list[dict]:
    """About 8 prompt records for scripts/parallel_generate.py, taken from the held-out eval tasks."""
    by_kind: dict[str, list[dict]] = {}
    groups: dict[str, list[dict]] = {}
    for t in eval_tasks:
        if t.get("game"):  # a game's lines repeat across games; its answer is its own dealer's card
            continue
        if t["context"]:
            groups.setdefault(t["context"], []).append(t)
        else:
            by_kind.setdefault(t["kind"], []).append(t)
    ctxs = list(groups.items())[:3]
    recs = [{"branches": [t["prompt"] for t in by_kind.get("copy", [])[:3]]},
            {"branches": [by_kind[k][3]["prompt"] for k in TASK_KINDS if len(by_kind.get(k, [])) > 3]},
            {"branches": [t["prompt"] for k in TASK_KINDS for t in by_kind.get(k, [])[4:6]]},
            {"branches": ["Once upon a time, there was", "The fox is", "Dear Anna,"]},
            {"main": "Here are three short stories.\n", "branches": ["Once upon a time, there was a baker named",
                                                                   "Every Monday, Leo walked to the",
                                                                   "One rainy morning, Nora found"]}]
    for (ctx, ts), k in zip(ctxs, (4, 8, 2)):
        recs.append({"main": ctx, "branches": [t["prompt"] for t in ts[:k]]})
    return [r for r in recs if r["branches"]]


# ---- checks -----------------------------------------------------------------------------------------------

def record_texts(rec: dict) -> Iterator[str]:
    """Every text inside a record of any demo file (pretrain, parallel, sft, dpo)."""
    if "text" in rec:
        yield rec["text"]
    if "main" in rec:
        yield rec["main"]
        for b in rec["branches"]:
            yield b["text"] if isinstance(b, dict) else f"{b[0]} {b[1]}"
    for key in ("conversations", "chosen", "rejected"):
        for m in rec.get(key, ()):
            yield m["content"]


def find_leaks(held: HeldOut, texts: Iterable[str], limit: int = 10) -> list[str]:
    """Lines of `texts` that are an eval question (with or without `Q: `) or an eval context."""
    leaks = []
    for text in texts:
        for line in text.split("\n"):
            if line.removeprefix("Q: ") in held:
                leaks.append(line)
                if len(leaks) >= limit:
                    return leaks
    return leaks


def generate_demo_corpus(seed: int = DEFAULT_SEED, sizes: DemoSizes | None = None, tokenizer=None) -> dict[str, list]:
    """Build every file in memory: {name: records} with the keys of FILE_NAMES (pretrain/val records are
    `{"text"}` dicts). "parallel" needs `tokenizer`; without one it holds the raw records (see build_parallel_raw).
    Raises RuntimeError when a held-out eval task leaks into a training record."""
    sizes = sizes or DemoSizes()
    ev = build_eval_tasks(seed, sizes.eval_tasks, sizes.eval_groups, sizes.eval_peer)
    held = heldout_from_eval(ev)
    pre = build_pretrain(seed, sizes.pretrain, held)
    val = build_pretrain(seed, sizes.val, held, stream="val", exclude=pre)
    raw = build_parallel_raw(seed, sizes.parallel, held)
    corpus = {"pretrain": [{"text": t} for t in pre], "val": [{"text": t} for t in val],
              "parallel": attach_answer_offsets(raw, tokenizer) if tokenizer is not None else raw,
              "sft": build_sft(seed, sizes.sft, held), "dpo": build_dpo(seed, sizes.dpo, held),
              "eval_tasks": ev, "eval_prompts": build_eval_prompts(ev)}
    check_no_leaks(held, corpus)
    return corpus


def check_no_leaks(held: HeldOut, corpus: dict[str, list]) -> None:
    for name in ("pretrain", "val", "parallel", "sft", "dpo"):
        leaks = find_leaks(held, (t for r in corpus.get(name, ()) for t in record_texts(r)))
        if leaks:
            raise RuntimeError(f"held-out eval tasks leaked into {FILE_NAMES[name]}: {leaks[:3]}")
