"""Checkable tasks for the bundled demo corpus: arith, copy, reverse, count, and fact questions about a context.

Every task is a question whose answer the generator computes itself, so evaluation can compare a model's
output with the exact expected string. The completion format, used in pretraining, in parallel branches
and in the eval prompts alike, is::

    Q: What is 17 plus 25?
    A: 42

`prompt_text(q)` is `"Q: {q}\\nA:"` and the answer follows after one space, so the tokens of the prompt
are a prefix of the tokens of the full line with a byte-level BPE. Fact contexts are one line of text
(no newline inside) stating facts about a few people, a room, or trips; `fact_context` returns that line
and every question it can answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from parallel_data.demo import words as W
from parallel_data.demo.text import article

TASK_KINDS = ("arith", "copy", "reverse", "count")  # independent kinds; "fact" needs a context


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


_ADD = ("What is {a} plus {b}?", "What is {a} + {b}?", "How much is {a} plus {b}?", "Add {a} and {b}.",
        "What is the sum of {a} and {b}?", "Compute {a} + {b}.", "{a} + {b} = ?", "If you add {b} to {a}, what do you get?",
        "Calculate {a} plus {b}.", "What do you get when you add {a} and {b}?")
# Templates naming b before a say "from", so a reader can recover the order: see tests/data/test_demo_data.py.
_SUB = ("What is {a} minus {b}?", "What is {a} - {b}?", "How much is {a} minus {b}?", "Subtract {b} from {a}.",
        "What is the difference between {a} and {b}?", "Compute {a} - {b}.", "{a} - {b} = ?",
        "If you take {b} away from {a}, what is left?", "Calculate {a} minus {b}.")


def arith_task(rng: random.Random) -> Task:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if rng.random() < 0.5:
        q, ans = rng.choice(_ADD).format(a=a, b=b), a + b
    else:
        a, b = max(a, b), min(a, b)  # no negative results: a tiny model has enough to learn
        q, ans = rng.choice(_SUB).format(a=a, b=b), a - b
    wrong = tuple(str(x) for x in sorted({ans + d for d in (-10, -2, -1, 1, 2, 10)} - {ans}) if x >= 0)
    return Task("arith", q, str(ans), wrong)


_COPY = ("Repeat after me: {s}", "Copy these words: {s}", "Say this again: {s}", "Repeat exactly: {s}",
         "Write the same words again: {s}", "Echo the words: {s}")


def copy_task(rng: random.Random) -> Task:
    words = rng.sample(W.TASK_WORDS, rng.randint(2, 5))
    if rng.random() < 0.25:
        s, q = ", ".join(words), "Copy the list: " + ", ".join(words)
    else:
        s = " ".join(words)
        q = rng.choice(_COPY).format(s=s)
    sep = ", " if ", " in s else " "
    wrong = {sep.join(words[:-1]), sep.join(words[1:] + words[:1]), sep.join([words[1], words[0], *words[2:]])}
    return Task("copy", q, s, tuple(sorted(wrong - {s})))


_REV_COMMA = ("Reverse the list: {s}", "Write this list in reverse order: {s}", "Put these words in reverse order: {s}",
              "List these backwards: {s}")
_REV_SPACE = ("Reverse the order of the words: {s}", "Say these words backwards: {s}")
_REV_LETTERS = ("Reverse the letters: {s}", "Write these letters backwards: {s}", "Spell this backwards: {s}")
_REV_DIGITS = ("Reverse the digits: {s}", "Reverse these numbers: {s}")


def reverse_task(rng: random.Random) -> Task:
    mode = rng.randrange(4)
    if mode < 2:
        items = rng.sample(W.TASK_WORDS, rng.randint(2, 5))
        templates, sep = (_REV_COMMA, ", ") if mode == 0 else (_REV_SPACE, " ")
    elif mode == 2:
        word = rng.choice(W.TASK_WORDS + W.OBJECTS)
        items = list(word) if len(set(word)) == len(word) and len(word) >= 3 else rng.sample(W.LETTERS, rng.randint(3, 5))
        templates, sep = _REV_LETTERS, " "
    else:
        items = [str(d) for d in rng.sample(range(10), rng.randint(3, 5))]
        templates, sep = _REV_DIGITS, rng.choice((" ", ", "))
    # Distinct items: the reversed list always differs from the input, so "copy it" is never right.
    ans = sep.join(reversed(items))
    wrong = {sep.join(items), sep.join(list(reversed(items[1:])) + items[:1]), sep.join(sorted(items))}
    return Task("reverse", rng.choice(templates).format(s=sep.join(items)), ans, tuple(sorted(wrong - {ans})))


_COUNT = ("How many items are in this list: {s}?", "Count the words: {s}", "How many words are there: {s}?",
          "How many things are listed here: {s}?", "Count the items in this list: {s}")


def count_task(rng: random.Random) -> Task:
    mode = rng.randrange(6)
    if mode == 0:
        word = rng.choice(W.TASK_WORDS + W.OBJECTS + W.COLOURS + W.FOODS)
        q = rng.choice(("How many letters are in the word {w}?", "How many letters does {w} have?")).format(w=word)
        n = len(word)
    elif mode == 1:
        target = rng.choice(W.TASK_WORDS)
        n = rng.randint(1, 4)
        items = [target] * n + rng.sample([w for w in W.TASK_WORDS if w != target], rng.randint(1, 5))
        rng.shuffle(items)
        q = f"How many times does {target} appear in this list: {', '.join(items)}?"
    else:
        pool, noun = ((W.TASK_WORDS, None), (tuple(a[0] for a in W.ANIMALS), "animals"), (W.COLOURS, "colours"),
                      (W.FOODS, "foods"))[mode - 2]
        items = rng.sample(pool, rng.randint(1, 9))
        sep = rng.choice((", ", " ")) if noun is None else ", "
        s = sep.join(items)
        q = rng.choice(_COUNT).format(s=s) if noun is None else f"How many {noun} are in this list: {s}?"
        n = len(items)
    wrong = tuple(str(x) for x in (n - 1, n + 1, n + 2) if x >= 0)
    return Task("count", q, str(n), wrong)


TASK_MAKERS = {"arith": arith_task, "copy": copy_task, "reverse": reverse_task, "count": count_task}


def independent_task(rng: random.Random, kind: str | None = None) -> Task:
    return TASK_MAKERS[kind or rng.choice(TASK_KINDS)](rng)


# ---- fact contexts --------------------------------------------------------------------------------------
# attribute: (pool, statements, questions, inverse questions asked about the value, answered by the name)
_PERSON_ATTRS = {
    "city": (W.CITIES, ("{n} lives in {v}.", "{n} has a home in {v}.", "{n} lives in the city of {v}.",
                        "{n}'s home is in {v}."),
             ("Where does {n} live?", "In which city does {n} live?", "Which city is {n}'s home?"), ("Who lives in {v}?",)),
    "job": (W.JOBS, ("{n} works as {a_v}.", "{n} is {a_v}.", "By trade, {n} is {a_v}.", "{n} earns a living as {a_v}."),
            ("What is {n}'s job?", "What does {n} do for a living?", "What work does {n} do?"),
            ("Who works as {a_v}?", "Who is the {v}?")),
    "food": (W.FOODS, ("{n} loves {v}.", "{n}'s favourite food is {v}.", "{n} eats {v} almost every day."),
             ("What does {n} like to eat?", "What is {n}'s favourite food?"), ()),
    "age": (tuple(str(i) for i in range(6, 90)), ("{n} is {v} years old.", "{n} turned {v} this year."),
            ("How old is {n}?", "What is {n}'s age?"), ()),
    "hobby": (W.HOBBIES, ("{n} enjoys {v}.", "{n}'s hobby is {v}.", "In {his} free time, {n} likes {v}."),
              ("What is {n}'s hobby?", "What does {n} do for fun?"), ()),
    "instrument": (W.INSTRUMENTS, ("{n} plays the {v}.", "{n} is learning the {v}."),
                   ("Which instrument does {n} play?", "What instrument does {n} play?"), ("Who plays the {v}?",)),
    "drink": (W.DRINKS, ("{n} drinks {v} every morning.", "{n}'s favourite drink is {v}."),
              ("What does {n} drink every morning?", "What is {n}'s favourite drink?"), ()),
}


def _pron(gender: int, cap: bool, poss: bool) -> str:
    w = ("his", "her")[gender] if poss else ("he", "she")[gender]
    return w.capitalize() if cap else w


def _people_context(rng: random.Random) -> tuple[list[str], list[Task]]:
    k = rng.choice((2, 2, 3, 3, 4))  # mostly short texts; four people still give 16-question eval groups
    genders = [rng.randrange(2) for _ in range(k)]
    names = []
    for g in genders:
        names.append(rng.choice([x for x in (W.NAMES_M, W.NAMES_F)[g] if x not in names]))
    values: dict[str, list[str]] = {a: rng.sample(spec[0], k) for a, spec in _PERSON_ATTRS.items()}
    objs = [rng.choice(W.OBJECTS) for _ in range(k)]
    colours = [rng.choice(W.COLOURS) for _ in range(k)]
    pets = rng.sample(W.ANIMALS, k)
    pet_names = rng.sample(W.PET_NAMES, k)
    sentences: list[str] = []
    tasks: list[Task] = []
    for i, n in enumerate(names):
        facts = rng.sample([*list(_PERSON_ATTRS), "object", "pet"], rng.randint(3, 5))
        block = []
        for attr in facts:
            if attr == "object":
                o, c = objs[i], colours[i]
                block.append(rng.choice(("{n} has {a_c} {o}.", "{n}'s {o} is {c}.", "{n} owns {a_c} {o}."))
                             .format(n=n, o=o, c=c, a_c=f"{article(c)} {c}"))
                tasks.append(Task("fact", f"What colour is {n}'s {o}?", c, W.COLOURS))
                continue
            if attr == "pet":
                a, p = pets[i][0], pet_names[i]
                block.append(rng.choice(("{n} has {aa} called {p}.", "{n} owns {aa} named {p}.",
                                         "{n} lives with {aa} called {p}.")).format(n=n, aa=f"{article(a)} {a}", p=p))
                tasks.append(Task("fact", rng.choice((f"What animal does {n} have?", f"What kind of pet does {n} have?")),
                                  a, tuple(x[0] for x in W.ANIMALS)))
                tasks.append(Task("fact", rng.choice((f"What is the name of {n}'s {a}?", f"What is {n}'s {a} called?")),
                                  p, W.PET_NAMES))
                if rng.random() < 0.5:
                    tasks.append(Task("fact", f"Who has {article(a)} {a}?", n, tuple(names)))
                continue
            pool, stmts, questions, inverse = _PERSON_ATTRS[attr]
            v = values[attr][i]
            fmt = dict(n=n, v=v, a_v=f"{article(v)} {v}", his=_pron(genders[i], False, True))
            block.append(rng.choice(stmts).format(**fmt))
            tasks.append(Task("fact", rng.choice(questions).format(**fmt), v, pool))
            if inverse and rng.random() < 0.5:
                tasks.append(Task("fact", rng.choice(inverse).format(**fmt), n, tuple(names)))
        # Pronouns after the first sentence, so the text reads naturally ("Mira lives in Oslo. She is a baker.")
        for j in range(1, len(block)):
            if rng.random() < 0.35:
                if block[j].startswith(n + "'s "):
                    block[j] = _pron(genders[i], True, True) + block[j][len(n) + 2:]
                elif block[j].startswith(n + " "):
                    block[j] = _pron(genders[i], True, False) + block[j][len(n):]
        sentences += block
    return sentences, tasks


def _scene_context(rng: random.Random) -> tuple[list[str], list[Task]]:
    room = rng.choice(W.ROOMS)
    k = rng.randint(3, 5)
    objs, colours = rng.sample(W.OBJECTS, k), rng.sample(W.COLOURS, k)
    spots = rng.sample(W.SPOTS, k + 2)
    listed = [f"{article(c)} {c} {o}" for o, c in zip(objs, colours)]
    sentences = [rng.choice(("In the {r}, there is {x}.", "The {r} has {x}.", "Look around the {r}: there is {x}."))
                 .format(r=room, x=", ".join(listed[:-1]) + " and " + listed[-1])]
    tasks = [Task("fact", rng.choice(("Which room is described?", "What room is this?")), room, W.ROOMS)]
    for o, c, sp in zip(objs, colours, spots):
        sentences.append(rng.choice(("The {o} is {sp}.", "Someone left the {o} {sp}.", "You can find the {o} {sp}."))
                         .format(o=o, sp=sp))
        tasks.append(Task("fact", f"What colour is the {o}?", c, W.COLOURS))
        tasks.append(Task("fact", f"Where is the {o}?", sp, W.SPOTS))
        if rng.random() < 0.5:
            tasks.append(Task("fact", f"Which thing in the {room} is {c}?", o, tuple(objs)))
    for th, sp in zip(rng.sample(W.SMALL_THINGS, rng.randint(0, 2)), spots[k:]):
        m = rng.randint(2, 12)
        sentences.append(f"There are {m} {th} {sp}.")
        tasks.append(Task("fact", f"How many {th} are {sp}?", str(m), tuple(str(x) for x in range(2, 13))))
    return sentences, tasks


def _trip_context(rng: random.Random) -> tuple[list[str], list[Task]]:
    k = rng.randint(1, 2)
    names = rng.sample(W.NAMES_F + W.NAMES_M, 2 * k)
    days, vehicles = rng.sample(W.DAYS, k), rng.sample(W.VEHICLES, k)
    cities = rng.sample(W.CITIES, 2 * k)
    objs = rng.sample(W.OBJECTS, k)
    sentences, tasks = [], []
    for i in range(k):
        n, friend, frm, to, h = names[i], names[k + i], cities[2 * i], cities[2 * i + 1], rng.randint(2, 9)
        vehicle, obj = vehicles[i], f"{article(objs[i])} {objs[i]}"
        whose = f"{n}'s" if k > 1 else "The"  # with two trips, "The trip" would be ambiguous
        sentences += [f"On {days[i]}, {n} took the {vehicle} from {frm} to {to}.",
                      rng.choice((f"{whose} trip took {h} hours.", f"{whose} journey lasted {h} hours.")),
                      f"{n} brought {obj} along.", f"In {to}, {n} met {friend}."]
        tasks += [Task("fact", rng.choice((f"On which day did {n} travel?", f"What day did {n} leave?")), days[i], W.DAYS),
                  Task("fact", f"How did {n} travel to {to}?", f"by {vehicle}", tuple(f"by {v}" for v in W.VEHICLES)),
                  Task("fact", rng.choice((f"Where did {n} go?", f"Which city did {n} travel to?")), to, W.CITIES),
                  Task("fact", f"Where did {n}'s trip start?", frm, W.CITIES),
                  Task("fact", f"How many hours did {n}'s trip take?", str(h), tuple(str(x) for x in range(2, 10))),
                  Task("fact", f"What did {n} bring?", obj, tuple(f"{article(o)} {o}" for o in W.OBJECTS)),
                  Task("fact", f"Who did {n} meet in {to}?", friend, tuple(names))]
    return sentences, tasks


def fact_context(rng: random.Random) -> tuple[str, list[Task]]:
    """A one-line context and all its questions (distinct question strings, at least 4)."""
    u = rng.random()
    maker = _people_context if u < 0.6 else _scene_context if u < 0.85 else _trip_context
    sentences, tasks = maker(rng)
    seen, uniq = set(), []
    for t in tasks:
        if t.question not in seen:
            seen.add(t.question)
            uniq.append(t)
    return " ".join(sentences), uniq
