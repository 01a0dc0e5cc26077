"""Checkable tasks for the bundled demo corpus: independent tasks, questions about a shared context, and
questions whose answer sits in a sibling branch.

Every task is a question whose answer the generator computes itself, so evaluation can compare a model's
output with the exact expected string. The completion format, used in pretraining, in parallel branches
and in the eval prompts alike, is::

    Q: What is 3 plus 5?
    A: 8

`prompt_text(q)` is `"Q: {q}\\nA:"` and the answer follows after one space, so the tokens of the prompt
are a prefix of the tokens of the full line with a byte-level BPE. A training line ends with a newline
after the answer: that is how the model learns where an answer stops.

Three families (their sizes are chosen for a 0.9M-parameter model trained for a few CPU minutes;
dataset/README.md says why):

* independent (`TASK_KINDS`): single-digit arithmetic, copying and reversing 2..4 words, counting 1..6 words;
* `fact`: a one-line context of facts about 1..4 people (`fact_context`), and questions about it, each
  answered by the sentence of the context that holds the fact ("Where does Mira live?" -> "Mira lives in
  Oslo."); one context serves up to 16 question branches;
* `peer` (`peer_group`): every branch states its own card and asks for another branch's card, answered in
  the same words ("Tomas's card is 3."). Only a branch that sees the other branches (the columnar mask) can
  answer; one prompt at a time, or the isolated mask, leaves it guessing (one card in nine).

Both context families answer with a restatement so that the answer's last word is read off by copying: the
model writes the words that stand before the value in the context, and the value follows them there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from parallel_data.demo import words as W
from parallel_data.demo.text import article

TASK_KINDS = ("arith", "copy", "reverse", "count")  # independent kinds; "fact" needs a context, "peer" siblings
PEER_KIND = "peer"


@dataclass(frozen=True)
class Task:
    """One checkable question. `wrong` are plausible wrong answers of the same category (for DPO)."""

    kind: str
    question: str
    answer: str
    wrong: tuple[str, ...] = ()


def prompt_text(question: str) -> str:
    return f"Q: {question}\nA:"


def qa_text(question: str, answer: str) -> str:
    return f"{prompt_text(question)} {answer}"


# ---- independent tasks --------------------------------------------------------------------------------------
# Few wordings per kind: enough that the model reads the question rather than one fixed string, few enough
# that a few minutes of training see every wording many times.
_ADD = ("What is {a} plus {b}?", "{a} + {b} = ?", "Add {a} and {b}.")
# Templates naming b before a say "from", so a reader can recover the order: see tests/data/test_demo_data.py.
_SUB = ("What is {a} minus {b}?", "{a} - {b} = ?", "Subtract {b} from {a}.")


def arith_task(rng: random.Random) -> Task:
    """One-digit sums (0..18) and their inverses (differences 0..9): a table of 200 facts, all learnable."""
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        q, ans = rng.choice(_ADD).format(a=a, b=b), a + b
    else:
        q, ans = rng.choice(_SUB).format(a=a + b, b=b), a
    wrong = tuple(str(x) for x in sorted({ans + d for d in (-2, -1, 1, 2)} - {ans}) if x >= 0)
    return Task("arith", q, str(ans), wrong)


_COPY = ("Repeat after me: {s}", "Copy these words: {s}", "Say this again: {s}")


def copy_task(rng: random.Random) -> Task:
    words = rng.sample(W.TASK_WORDS, rng.randint(2, 4))
    s = " ".join(words)
    wrong = {" ".join(words[:-1]), " ".join(words[1:] + words[:1]), " ".join([words[1], words[0], *words[2:]])}
    return Task("copy", rng.choice(_COPY).format(s=s), s, tuple(sorted(wrong - {s})))


_REV_SPACE = ("Reverse the order of the words: {s}", "Say these words backwards: {s}")
_REV_COMMA = ("Reverse the list: {s}",)


def reverse_task(rng: random.Random) -> Task:
    items = rng.sample(W.TASK_WORDS, rng.randint(2, 4))
    templates, sep = (_REV_COMMA, ", ") if rng.random() < 0.3 else (_REV_SPACE, " ")
    # Distinct items: the reversed list always differs from the input, so "copy it" is never right.
    ans = sep.join(reversed(items))
    wrong = {sep.join(items), sep.join(list(reversed(items[1:])) + items[:1]), sep.join(sorted(items))}
    return Task("reverse", rng.choice(templates).format(s=sep.join(items)), ans, tuple(sorted(wrong - {ans})))


_COUNT = ("How many words are there: {s}?", "Count the words: {s}")


def count_task(rng: random.Random) -> Task:
    items = rng.sample(W.TASK_WORDS, rng.randint(1, 6))
    if rng.random() < 0.3:
        q = f"How many items are in this list: {', '.join(items)}?"
    else:
        q = rng.choice(_COUNT).format(s=" ".join(items))
    n = len(items)
    wrong = tuple(str(x) for x in (n - 1, n + 1, n + 2) if x >= 0)
    return Task("count", q, str(n), wrong)


TASK_MAKERS = {"arith": arith_task, "copy": copy_task, "reverse": reverse_task, "count": count_task}


def independent_task(rng: random.Random, kind: str | None = None) -> Task:
    return TASK_MAKERS[kind or rng.choice(TASK_KINDS)](rng)


# ---- fact contexts --------------------------------------------------------------------------------------
# attribute: (pool, statement, question). One wording each, every statement names its person (no pronouns)
# and starts with its own verb. The answer is the statement itself ("Where does Mira live?" -> "Mira lives
# in Oslo."): the model restates the question's name with the attribute's verb, then reads the value off
# the context where the same words stand before it -- the copying it also learns from the copy tasks.
_PERSON_ATTRS = {
    "city": (W.CITIES, "{n} lives in {v}.", "Where does {n} live?"),
    "job": (W.JOBS, "{n} works as {a_v}.", "What is {n}'s job?"),
    "food": (W.FOODS, "{n} loves {v}.", "What does {n} love to eat?"),
    "age": (tuple(str(i) for i in range(6, 90)), "{n} is {v} years old.", "How old is {n}?"),
    "hobby": (W.HOBBIES, "{n} enjoys {v}.", "What does {n} enjoy?"),
    "instrument": (W.INSTRUMENTS, "{n} plays the {v}.", "Which instrument does {n} play?"),
    "drink": (W.DRINKS, "{n} drinks {v} every morning.", "What does {n} drink every morning?"),
    "pet": (tuple(a[0] for a in W.ANIMALS), "{n} has {a_v}.", "Which animal does {n} have?"),
}


def fact_context(rng: random.Random, people: int | None = None, facts: tuple[int, int] = (1, 4)
                 ) -> tuple[str, list[Task]]:
    """A one-line text of facts about 1..4 people (or `people`), `facts` facts each, and one question per
    fact, answered by its sentence. Eval groups of 16 questions use 4 people with 4 facts each."""
    k = people or rng.randint(1, 4)
    names = rng.sample(W.NAMES_F + W.NAMES_M, k)
    sentences: list[str] = []
    tasks: list[Task] = []
    for n in names:
        for attr in rng.sample(list(_PERSON_ATTRS), rng.randint(*facts)):
            pool, stmt, question = _PERSON_ATTRS[attr]
            v = rng.choice(pool)
            sentence = stmt.format(n=n, v=v, a_v=f"{article(v)} {v}")
            sentences.append(sentence)
            wrong = tuple(stmt.format(n=n, v=w, a_v=f"{article(w)} {w}") for w in pool if w != v)[:8]
            tasks.append(Task("fact", question.format(n=n), sentence, wrong))
    return " ".join(sentences), tasks


# ---- peer groups: the answer is in another branch ---------------------------------------------------------
_PEER_ASK = ("What is {m}'s card?", "Which card does {m} have?")


def peer_group(rng: random.Random, size: int, partner_of=None) -> list[Task]:
    """`size` branches; branch i says its own card ("Mira's card is 7.") and asks for the card of branch
    `partner_of(i)` (default: a random other branch), answered in the same words ("Tomas's card is 3.").
    The cards are 1..9; names are distinct within the group."""
    names = rng.sample(W.NAMES_F + W.NAMES_M, size)
    cards = [rng.randint(1, 9) for _ in range(size)]
    out = []
    for i, n in enumerate(names):
        j = partner_of(i) if partner_of else rng.choice([x for x in range(size) if x != i])
        q = f"{n}'s card is {cards[i]}. " + rng.choice(_PEER_ASK).format(m=names[j])
        out.append(Task(PEER_KIND, q, f"{names[j]}'s card is {cards[j]}.",
                        tuple(f"{names[j]}'s card is {c}." for c in range(1, 10) if c != cards[j])))
    return out
