"""Checkable tasks for the bundled demo corpus: independent tasks, questions about a shared context, and
questions whose answer sits in a sibling branch.

Every task is a question whose answer the generator computes itself, so evaluation can compare a model's
output with the exact expected string. The completion format, used in pretraining, in parallel branches
and in the eval prompts alike, is::

    Q: Repeat after me: cat sun key
    A: cat sun key

`prompt_text(q)` is `"Q: {q}\\nA:"` and the answer follows after one space, so the tokens of the prompt
are a prefix of the tokens of the full line with a byte-level BPE. A training line ends with a newline
after the answer: that is how the model learns where an answer stops.

Three families, sized for a 0.9M-parameter model trained for a few CPU minutes (dataset/README.md says
why, with the measurements):

* independent (`TASK_KINDS`): copying 3 words, counting 1..4 words, naming the last of 2..4 words, all
  drawn from `WORDS` (single tokens); the answer is read off the prompt at a fixed distance, which a
  small model learns within a few hundred steps;
* `fact`: a one-line context of up to 8 facts about one person (`fact_context`), and two questions per
  fact, answered by the value alone ("Where does Mira live?" -> "Oslo"); every attribute has its own
  values, so the answer is the one word of its kind in the context; one context serves up to 16
  question branches;
* `peer` (`peer_group`): every branch states its own card and asks for another branch's card ("Mira's
  card is 7. What is Tomas's card?" -> "3"). Only a branch that sees the other branches (the columnar
  mask) can answer; one prompt at a time, or the isolated mask, leaves it guessing (one card in nine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from parallel_data.demo import words as W
from parallel_data.demo.text import article

TASK_KINDS = ("copy", "count", "last")  # independent kinds; "fact" needs a context, "peer" siblings
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
# Few wordings per kind and small value sets: a few minutes of training see every wording and every value
# many times. Words are single tokens of the repo tokenizer, so "copy 3 words" is "copy 3 tokens".
WORDS = ("cat", "dog", "owl", "fox", "sun", "moon", "star", "tree", "leaf", "rock", "sand", "sea", "ship", "car",
         "bus", "milk", "cake", "egg", "hat", "cup", "box", "key", "pen", "map")
COPY_LEN = 3  # a fixed length: answer word k always stands at the same distance behind prompt word k
COUNT_MAX = 4
LAST_LEN = (2, 4)


_COPY = ("Repeat after me: {s}", "Copy these words: {s}")


def copy_task(rng: random.Random) -> Task:
    words = rng.sample(WORDS, COPY_LEN)
    s = " ".join(words)
    wrong = {" ".join(words[:-1]), " ".join(words[1:] + words[:1]), " ".join([words[1], words[0], *words[2:]])}
    return Task("copy", rng.choice(_COPY).format(s=s), s, tuple(sorted(wrong - {s})))


_COUNT = ("How many words are there: {s}?", "Count the words: {s}")


def count_task(rng: random.Random) -> Task:
    items = rng.sample(WORDS, rng.randint(1, COUNT_MAX))
    n = len(items)
    wrong = tuple(str(x) for x in (n - 1, n + 1, n + 2) if x >= 0)
    return Task("count", rng.choice(_COUNT).format(s=" ".join(items)), str(n), wrong)


_LAST = ("What is the last word: {s}?", "Which word comes last: {s}?")


def last_task(rng: random.Random) -> Task:
    items = rng.sample(WORDS, rng.randint(*LAST_LEN))
    return Task("last", rng.choice(_LAST).format(s=" ".join(items)), items[-1], tuple(items[:-1]))


TASK_MAKERS = {"copy": copy_task, "count": count_task, "last": last_task}


def independent_task(rng: random.Random, kind: str | None = None) -> Task:
    return TASK_MAKERS[kind or rng.choice(TASK_KINDS)](rng)


# ---- fact contexts --------------------------------------------------------------------------------------
# attribute: (values, statement, questions). A context is about one person; every attribute draws from its
# own set of single-token values, so a question is answered by finding the one word of its kind in the
# context and copying it. Two wordings per question: a context of all 8 facts has 16 distinct questions.
_VALUES = 12
_PERSON_ATTRS = {
    "city": (W.CITIES[:_VALUES], "{n} lives in {v}.", ("Where does {n} live?", "Which city does {n} live in?")),
    "job": (W.JOBS[:_VALUES], "{n} works as {a_v}.", ("What is {n}'s job?", "What does {n} work as?")),
    "food": (W.FOODS[:_VALUES], "{n} loves {v}.", ("What does {n} love to eat?", "Which food does {n} love?")),
    "drink": (W.DRINKS, "{n} drinks {v}.", ("What does {n} drink?", "Which drink does {n} like?")),
    "hobby": (W.HOBBIES[:_VALUES], "{n} enjoys {v}.", ("What does {n} enjoy?", "What is {n}'s hobby?")),
    "instrument": (W.INSTRUMENTS, "{n} plays the {v}.", ("Which instrument does {n} play?",
                                                          "What does {n} play?")),
    "pet": (tuple(a[0] for a in W.ANIMALS[:_VALUES]), "{n} has {a_v}.", ("Which animal does {n} have?",
                                                                         "What pet does {n} have?")),
    "colour": (W.COLOURS[:_VALUES], "{n} likes {v}.", ("What colour does {n} like?",
                                                        "Which colour does {n} like best?")),
}
FACTS = (2, 8)  # facts per training context


def fact_context(rng: random.Random, facts: tuple[int, int] = FACTS) -> tuple[str, list[Task]]:
    """A one-line text of `facts` facts about one person, in random order, and both questions about each
    fact, answered by the fact's value ("Where does Mira live?" -> "Oslo")."""
    n = rng.choice(W.NAMES_F + W.NAMES_M)
    sentences: list[str] = []
    tasks: list[Task] = []
    for attr in rng.sample(list(_PERSON_ATTRS), rng.randint(*facts)):
        pool, stmt, questions = _PERSON_ATTRS[attr]
        v = rng.choice(pool)
        sentences.append(stmt.format(n=n, v=v, a_v=f"{article(v)} {v}"))
        wrong = tuple(w for w in pool if w != v)[:8]
        tasks += [Task("fact", q.format(n=n), v, wrong) for q in questions]
    return " ".join(sentences), tasks


# ---- peer groups: the answer is in another branch ---------------------------------------------------------
_PEER_ASK = ("What is {m}'s card?",)


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
        out.append(Task(PEER_KIND, q, str(cards[j]), tuple(str(c) for c in range(1, 10) if c != cards[j])))
    return out
