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
* `fact`: a one-line context of 2..4 facts about one person (`fact_context`), and four questions per
  fact, answered by the value alone ("Where does Mira live?" -> "Oslo"); every attribute has its own
  values, so the answer is the one word of its kind in the context; one context serves up to 16
  question branches;
* `peer` (`peer_group`): a card game; one branch, the dealer, states its card ("I am the dealer and my
  card is 7. What is my card?"), every other branch asks "I am Mira. What is the dealer's card?" -> "7". Only a
  branch that sees the other branches (the columnar mask) can answer; one prompt at a time, or the
  isolated mask, leaves it guessing (one card in nine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from parallel_data.demo import words as W
from parallel_data.demo.text import article

TASK_KINDS = ("copy", "count", "last")  # independent kinds; "fact" needs a context, "peer" siblings
PEER_KIND = "peer"  # asks for the dealer's card, which another branch states
DEALER_KIND = "dealer"  # states its card and is asked for it: the branch the peers need


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
# context and copying it. Four attributes with four wordings each: a context of all four facts has 16
# distinct questions (one per branch at 16 branches); with eight attributes of two wordings a 0.9M model
# learns only some of the attributes in the budget (docs/DEMO_EXPERIMENTS.md, e16-e19).
_VALUES = 12
_PERSON_ATTRS = {
    "city": (W.CITIES[:_VALUES], "{n} lives in {v}.", ("Where does {n} live?", "Which city does {n} live in?",
                                                        "In which city does {n} live?", "What is {n}'s home town?")),
    "food": (W.FOODS[:_VALUES], "{n} loves {v}.", ("What does {n} love to eat?", "Which food does {n} love?",
                                                    "What is {n}'s favourite food?", "What food does {n} love?")),
    "pet": (tuple(a[0] for a in W.ANIMALS[:_VALUES]), "{n} has {a_v}.", ("Which animal does {n} have?",
                                                                         "What pet does {n} have?",
                                                                         "What is {n}'s pet?",
                                                                         "Which pet does {n} keep?")),
    "colour": (W.COLOURS[:_VALUES], "{n} likes {v}.", ("What colour does {n} like?", "Which colour does {n} like best?",
                                                        "What is {n}'s favourite colour?",
                                                        "Which colour is {n}'s favourite?")),
}
FACTS = (2, len(_PERSON_ATTRS))  # facts per training context


def fact_context(rng: random.Random, facts: tuple[int, int] = FACTS) -> tuple[str, list[Task]]:
    """A one-line text of `facts` facts about one person, in random order, and every question about each
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


# ---- peer games: the answer is in another branch ---------------------------------------------------------
_DEALER = ("I am the dealer and my card is {c}. What is my card?",)
_ASK = ("I am {n}. What is the dealer's card?",)


def peer_group(rng: random.Random, size: int) -> list[Task]:
    """A card game of `size` branches: branch 0 is the dealer, who states a card (1..9) and is asked for
    it (kind `DEALER_KIND`, answered from its own prompt); every other branch asks for the dealer's card
    (kind `PEER_KIND`: "I am Mira. What is the dealer's card?" -> "7"; the players' names are distinct),
    which only a branch that sees the dealer's branch (the columnar mask) can answer; one prompt at a time,
    or the isolated mask, leaves it guessing (one card in nine)."""
    card = rng.randint(1, 9)
    wrong = tuple(str(c) for c in range(1, 10) if c != card)
    dealer = Task(DEALER_KIND, rng.choice(_DEALER).format(c=card), str(card), wrong)
    names = rng.sample(W.NAMES_F + W.NAMES_M, size - 1)
    return [dealer] + [Task(PEER_KIND, rng.choice(_ASK).format(n=n), str(card), wrong) for n in names]
