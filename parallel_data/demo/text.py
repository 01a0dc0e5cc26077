"""General English text for the bundled demo corpus: stories, descriptions, facts, lists, dialogues, letters.

Each document type is a function `(rng) -> str`. Sentences are templates with `{slots}` filled by `Slots`,
a lazy per-document filler: `{name}` and `{name2}` are two distinct people, `{He}`/`{his2}` follow the
gender of `name`/`name2`, `{a_obj}` adds the right article, `{animals}` is the plural of `{animal}`, and so
on. A slot keeps its value for the whole document, so the text stays consistent ("Mira ... she ... Mira's
boat") while the many templates and the vocabulary in `parallel_data.demo.words` keep it varied.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from parallel_data.demo import words as W

_ANIMAL = {a[0]: a for a in W.ANIMALS}
_POOLS: dict[str, tuple] = {
    "city": W.CITIES, "colour": W.COLOURS, "animal": tuple(a[0] for a in W.ANIMALS), "obj": W.OBJECTS,
    "food": W.FOODS, "drink": W.DRINKS, "job": W.JOBS, "hobby": W.HOBBIES, "instrument": W.INSTRUMENTS,
    "day": W.DAYS, "month": W.MONTHS, "season": W.SEASONS, "weather": W.WEATHER, "adj": W.PERSON_ADJ,
    "oadj": W.OBJECT_ADJ, "feeling": W.FEELINGS, "place": W.PLACES, "vehicle": W.VEHICLES, "tool": W.TOOLS,
    "time": W.TIMES, "room": W.ROOMS, "spot": W.SPOTS, "things": W.SMALL_THINGS, "pet": W.PET_NAMES,
    "shop": ("market", "bakery", "corner shop", "grocery", "farm shop", "harbour market"),
    "veg": ("carrot", "pumpkin", "onion", "mushroom", "lentil", "pea", "bean", "tomato"),
    "landform": W.LANDFORMS, "nadj": W.NATURE_ADJ, "tree": W.TREES, "bird": W.BIRDS, "sound": W.SOUNDS,
    "water": W.WATERS, "sky": W.SKY_COLOURS, "activity": W.ACTIVITIES,
    "cadj": ("busy", "quiet", "old", "modern", "beautiful", "large", "small", "friendly", "green", "windy"),
}
_RANGES = {"num": (2, 12), "big": (13, 99), "age": (6, 80), "hours": (2, 9), "temp": (12, 30), "dnum": (1, 28)}
_PRONOUNS = {"he": ("he", "she"), "him": ("him", "her"), "his": ("his", "her"), "himself": ("himself", "herself")}
_ANIMAL_FIELDS = {"animals": 1, "home": 2, "diet": 3, "trait": 4, "habit": 5}
_KEY = re.compile(r"(a_)?([a-z]+?)(\d*)")


def article(word: str) -> str:
    """'a' or 'an' for an English word (good enough for this vocabulary)."""
    return "an" if word[0].lower() in "aeiou" or word.startswith(("hour", "honest")) else "a"


class Slots(dict):
    """Lazy template filler: unknown keys are sampled on first use and then fixed for the document."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng
        self.used: dict[str, set] = {}
        self.gender: dict[str, int] = {}

    def pick(self, base: str, pool: tuple) -> str:
        """Sample from `pool` avoiding values already used for `base` in this document (distinct entities)."""
        used = self.used.setdefault(base, set())
        for _ in range(20):
            v = self.rng.choice(pool)
            if v not in used:
                break
        used.add(v)
        return v

    def __missing__(self, key: str) -> str:
        cap = key[0].isupper()
        m = _KEY.fullmatch(key[0].lower() + key[1:])
        if m is None:
            raise KeyError(key)
        art, base, idx = m.groups()
        if cap or art:  # "{A_animal}", "{He}": decorate the plain slot, so they agree with "{animal}", "{he}"
            v = self[base + idx]
            if art:
                v = f"{article(v)} {v}"
            v = v[0].upper() + v[1:] if cap else v
        elif base == "name":
            g = self.rng.randrange(2)
            self.gender[idx] = g
            v = self.pick("name", (W.NAMES_M, W.NAMES_F)[g])
        elif base in _PRONOUNS:
            self[f"name{idx}"]  # noqa: B018 - the pronoun follows the gender of the matching name
            v = _PRONOUNS[base][self.gender[idx]]
        elif base in _ANIMAL_FIELDS:
            v = _ANIMAL[self[f"animal{idx}"]][_ANIMAL_FIELDS[base]]
        elif base in ("country", "capital"):
            c = self.pick("country", W.CAPITALS)
            self[f"country{idx}"], self[f"capital{idx}"] = c
            v = c[0] if base == "country" else c[1]
        elif base in _RANGES:
            v = str(self.rng.randint(*_RANGES[base]))
        elif base in _POOLS:
            v = self.pick(base, _POOLS[base])
        else:
            raise KeyError(key)
        self[key] = v
        return v


def fill(template: str, slots: Slots) -> str:
    return template.format_map(slots)


def _pick_fill(rng: random.Random, slots: Slots, pool: tuple[str, ...], k: int = 1) -> list[str]:
    return [fill(t, slots) for t in rng.sample(pool, k)]


_STORY_OPEN = (
    "Once upon a time, there was {a_adj} {job} named {name}.", "{name} was {a_adj} {job} who lived in {city}.",
    "In a small village near {city}, there lived {a_job} called {name}.", "Every {day}, {name} walked to the {place}.",
    "{name} had always wanted to visit {city}.", "It was a {weather} {season} day in {city}, and {name} was bored.",
    "{name} woke up early on {day}.", "One {weather} morning, {name} found {a_colour} {obj} by the {place}.",
    "Not long ago, {name} moved to {city} to start a new life.",
    "{name} was the only {job} in a quiet town by the {landform}.",
)
_STORY_MID = (
    "{He} liked {food} more than anything.", "{He} had {a_colour} {obj} that {he} carried everywhere.",
    "{His} best friend was {name2}, {a_adj2} {job2}.", "{He} wanted to learn to play the {instrument}.",
    "Every day {he} went to the {place} to watch the {animals}.", "{He} lived with {his} {animal}, {pet}.",
    "{His} house was small, but it was warm and bright.", "{He} dreamed of seeing the sea one day.",
    "{He} loved {hobby}, even when the weather was {weather}.", "{He} worked hard and saved every coin.",
    "People said {he} was very {adj}.", "{He} often drank {drink} {time}.",
)
_STORY_EVENT = (
    "One day, {he} lost {his} {obj} near the {place2}.", "Then a strong wind blew {his} hat into the river.",
    "Suddenly, {a_animal2} ran across the road.", "On {day}, {name2} knocked on the door with a big surprise.",
    "That {season}, the {place} was closed for repairs.", "One evening, {he} heard a strange noise from the {room}.",
    "Then it started to rain, and {he} had no umbrella.", "A letter arrived from {city2}.",
    "One morning, {his} {obj} was gone.", "On the way home, {he} met {a_adj2} {animal2} that could not find its way.",
)
_STORY_ACTION = (
    "{He} looked everywhere and asked {name2} for help.", '{name2} said, "Do not worry, we will fix it together."',
    "{He} took the {vehicle} to {city2}.", "{He} made a plan and started at once.",
    "So {he} baked a cake with {food} and waited.", "{He} followed the {animal2} all the way to the {place2}.",
    "{He} was {feeling}, but {he} kept going.", "{He} wrote a note and left it on the door of the {place}.",
    "{He} asked the {job2} at the {place2} what to do.", "{He} sat down, drank some {drink}, and thought hard.",
)
_STORY_END = (
    "In the end, {he} found what {he} was looking for.", "By evening, everything was fine again.",
    "{name2} smiled and said thank you.", "They shared some {food} and laughed about the day.",
    "From that day on, {he} was never bored again.", "When {he} came home, {he} felt {feeling2}.",
    "It was the best {day} of the year.", "{He} still tells this story to {his} friends.",
    "And that is how {name} became the happiest {job} in {city}.", "The end.",
)


def story(rng: random.Random) -> str:
    s = Slots(rng)
    parts = _pick_fill(rng, s, _STORY_OPEN) + _pick_fill(rng, s, _STORY_MID, rng.randint(1, 2))
    parts += _pick_fill(rng, s, _STORY_EVENT) + _pick_fill(rng, s, _STORY_ACTION, rng.randint(1, 2))
    parts += _pick_fill(rng, s, _STORY_END, rng.randint(1, 2))
    return " ".join(parts)


_ANIMAL_INTRO = ("The {animal} is {a_trait} animal.", "{A_animal} is {a_trait} animal that lives in the {home}.",
                 "Let us learn about {animals}.", "Have you ever seen {a_animal}?", "This is a short text about the {animal}.")
_ANIMAL_BODY = (
    "{Animals} live in the {home}.", "{Animals} eat {diet}.", "The {animal} likes to eat {diet}.",
    "A hungry {animal} looks for {diet}.", "The {animal} {habit}.", "You may notice that the {animal} {habit}.",
    "Many people think {animals} are {trait}.", "A young {animal} stays close to its mother.",
    "{Animals} are not the same as {animals2}.", "If you visit the {home}, you may see {a_animal}.",
    "Children like to draw {animals} in {colour} and {colour2}.", "In {season}, {animals} are easy to spot.",
    "{name} once saw {a_animal} near the {place}.", "{A_job} from {city} wrote a book about {animals}.",
)


def animal_text(rng: random.Random) -> str:
    s = Slots(rng)
    return " ".join(_pick_fill(rng, s, _ANIMAL_INTRO) + _pick_fill(rng, s, _ANIMAL_BODY, rng.randint(2, 5)))


_CITY = (
    "{city} is {a_cadj} city.", "People in {city} like to walk by the {place}.",
    "In {season}, the weather in {city} is often {weather}.", "The {shop} in {city} is famous for its {food}.",
    "Many visitors come to {city} in {month}.", "{A_oadj} fountain stands in the middle of the town.",
    "You can take the {vehicle} from {city} to {city2} in {hours} hours.", "The best time to visit is {season}.",
    "{name} has lived in {city} for {num} years.", "Every {day}, there is a market in the main square.",
    "The streets of {city} are full of {colour} houses.", "Most people in {city} drink {drink} {time}.",
    "Near {city}, you can find {animals} in the {home}.", "The oldest {shop} in {city} is {big} years old.",
)


def city_text(rng: random.Random) -> str:
    s = Slots(rng)
    return " ".join([fill(_CITY[0], s)] + _pick_fill(rng, s, _CITY[1:], rng.randint(2, 5)))


def _computed_fact(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        c, cap = rng.choice(W.CAPITALS)
        return rng.choice((f"The capital of {c} is {cap}.", f"{cap} is the capital of {c}."))
    if kind == 1:
        i = rng.randrange(7)
        return rng.choice((f"The day after {W.DAYS[i]} is {W.DAYS[(i + 1) % 7]}.",
                           f"{W.DAYS[i]} comes before {W.DAYS[(i + 1) % 7]}."))
    if kind == 2:
        i = rng.randrange(12)
        return f"{W.MONTHS[(i + 1) % 12]} comes after {W.MONTHS[i]}."
    if kind == 3:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return rng.choice((f"{a} plus {b} is {a + b}.", f"{a + b} minus {b} is {a}.", f"{a} and {b} make {a + b}."))
    if kind == 4:
        a, b = rng.sample(range(100), 2)
        return f"{max(a, b)} is more than {min(a, b)}." if rng.random() < 0.5 else f"{min(a, b)} is less than {max(a, b)}."
    if kind == 5:
        n = rng.randint(1, 50)
        return rng.choice((f"Double {n} is {2 * n}.", f"Half of {2 * n} is {n}."))
    if kind == 6:
        a = rng.choice(W.ANIMALS)
        return rng.choice((f"{a[1].capitalize()} eat {a[3]}.", f"The {a[0]} {a[5]}.", f"{a[1].capitalize()} live in the {a[2]}."))
    return rng.choice(W.TRUE_FACTS)


def facts_text(rng: random.Random) -> str:
    facts = [_computed_fact(rng) for _ in range(rng.randint(3, 6))]
    style = rng.randrange(3)
    if style == 0:
        return " ".join(facts)
    head = rng.choice(("Facts:", "Some facts:", "Did you know?", "Things to remember:", "Fun facts:"))
    lines = [f"- {f}" for f in facts] if style == 1 else [f"{i + 1}. {f}" for i, f in enumerate(facts)]
    return "\n".join([head, *lines])


def _join_and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def list_text(rng: random.Random) -> str:
    s = Slots(rng)
    kind = rng.randrange(8)
    if kind == 0:
        head = fill(rng.choice(("Shopping list for {day}:", "To buy at the market:", "{name} needs to buy:")), s)
        return "\n".join([head] + [f"- {x}" for x in rng.sample(W.FOODS, rng.randint(2, 6))])
    if kind == 1:
        objs = [fill(f"{{a_oadj{i}}} {{obj{i}}}", s) for i in range(rng.randint(2, 4))]
        return fill("Things in {name}'s bag: ", s) + _join_and(objs) + "."
    if kind == 2:
        steps = ["Boil some water.", "Put the {drink} in a cup.", "Pour the hot water into the cup.",
                 "Wait for {num} minutes.", "Add some honey if you like.", "Drink it slowly."]
        if rng.random() < 0.5:
            steps = ["Wash the {veg}s.", "Cut the {veg}s into small pieces.", "Put them in a pot with water.",
                     "Cook for {num}0 minutes.", "Add salt.", "Serve with bread."]
        head = "How to make {drink}:" if "drink" in steps[1] else "How to make {veg} soup:"
        return fill("\n".join([head] + [f"{i + 1}. {x}" for i, x in enumerate(steps)]), s)
    if kind == 3:
        a = rng.randint(0, 90)
        b = a + rng.randint(3, 9)
        return f"Counting from {a} to {b}: " + ", ".join(str(i) for i in range(a, b + 1)) + "."
    if kind == 4:
        return rng.choice(("The days of the week are " + _join_and(list(W.DAYS)) + ".",
                           "The months of the year are " + _join_and(list(W.MONTHS)) + ".",
                           "The four seasons are spring, summer, autumn and winter.",
                           "The colours of the rainbow are red, orange, yellow, green, blue, indigo and violet."))
    if kind == 5:
        items = [fill(t, s) for t in ("Call {name2}.", "Buy {food}.", "Fix the {obj}.", "Go to the {place}.",
                                      "Water the plants.", "Feed {pet}.", "Practise the {instrument}.")]
        return "\n".join(["To do today:"] + [f"{i + 1}. {x}" for i, x in enumerate(rng.sample(items, rng.randint(2, 5)))])
    if kind == 6:
        animals = [fill(f"{{animals{i}}}", s) for i in range(3)]
        return fill("{name}'s favourite animals are ", s) + _join_and(animals) + "."
    objs = [fill(f"{{obj{i}}}", s) for i in range(rng.randint(3, 5))]
    return "\n".join([fill("Packing list for a trip to {city}:", s)] + [f"- {x}" for x in objs])


_DIALOGUE = (
    (("Hi {b}! How are you?", "I am {feeling}, thanks. And you?"),
     ("Good morning, {b}.", "Good morning, {a}! What a {weather} day."),
     ("Hello {b}, long time no see!", "Hi {a}! I was away in {city} for a while.")),
    (("Where are you going?", "I am going to the {shop} to buy {food}."),
     ("What are you doing on {day}?", "I want to try {hobby} with {name3}."),
     ("Do you want to come to the {place2} with me?", "Yes, I would love to. When do we leave?"),
     ("What did you do yesterday?", "I stayed home and read a book about {animals}.")),
    (("Can you help me carry this {obj}?", "Of course. Where should I put it?"),
     ("Do you know the capital of {country}?", "Yes, it is {capital}."),
     ("How many {things} do we have?", "We have {num}. I counted them twice."),
     ("Is that your {animal}?", "Yes, it is called {pet}."),
     ("Have you seen my {colour} {obj}?", "I think it is {spot}.")),
    (("See you on {day}!", "See you, {a}!"), ("Thanks for your help.", "You are welcome."),
     ("I have to go now. Bye!", "Bye! Say hello to {name3} for me.")),
)


def dialogue(rng: random.Random) -> str:
    s = Slots(rng)
    a, b = s["name"], s["name2"]
    s["a"], s["b"] = a, b
    lines = []
    for stage, pool in enumerate(_DIALOGUE):
        for q, r in rng.sample(pool, rng.randint(1, 2) if stage in (1, 2) else 1):
            lines += [f"{a}: {fill(q, s)}", f"{b}: {fill(r, s)}"]
    return "\n".join(lines)


def letter(rng: random.Random) -> str:
    s = Slots(rng)
    kind = rng.randrange(4)
    if kind == 0:
        body = _pick_fill(rng, s, ("Thank you for the {colour2} {obj}.", "I use it every day.",
                                   "The weather in {city} is {weather} this week.", "{pet} says hello.",
                                   "I hope to see you in {month}.", "Please write back soon."), rng.randint(2, 4))
        return fill("Dear {name2},\n", s) + " ".join(body) + fill("\nBest wishes,\n{name}", s)
    if kind == 1:
        body = _pick_fill(rng, s, ("Today I went to the {place} with {name2}.", "We saw {num} {animals}.",
                                   "It was {weather} all day.", "I ate {food} for lunch.", "I felt {feeling}.",
                                   "Tomorrow I will try {hobby}."), rng.randint(2, 4))
        return fill("Diary, {day} {dnum} {month}.\n", s) + " ".join(body)
    if kind == 2:
        hi = s.rng.randint(10, 32)
        lo = hi - s.rng.randint(3, 10)
        return fill(f"Weather for {{city}} on {{day}}: {{weather}}, with a high of {hi} degrees and a low of {lo} "
                    "degrees. " + rng.choice(("Take an umbrella.", "A good day for a walk.", "Stay warm.",
                                              "Expect wind near the coast.")), s)
    return fill(rng.choice(("Note: buy {food} and call {name2} before {day}.",
                            "Reminder: the {place} opens at {num} o'clock on {day}.",
                            "Lost: {a_colour} {obj} near the {place}. Call {name} if you find it.")), s)


def word_problem(rng: random.Random) -> str:
    s = Slots(rng)
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    if rng.random() < 0.5:
        t = rng.choice(("{name} has {a} {things}. {He} buys {b} more. Now {he} has {c} {things}.",
                        "There are {a} {animals} in the field and {b} more arrive. Now there are {c} {animals}.",
                        "{name} read {a} pages on {day} and {b} pages on {day2}. That is {c} pages in total."))
        return fill(t.replace("{a}", str(a)).replace("{b}", str(b)).replace("{c}", str(a + b)), s)
    a, b = max(a, b), min(a, b)
    t = rng.choice(("{name} had {a} {things} and gave {b} to {name2}. {He} has {c} {things} left.",
                    "A box holds {a} {things}. {name} takes out {b}. There are {c} {things} left in the box.",
                    "The bus had {a} people on it. At the next stop, {b} people got off. Now {c} people are on the bus."))
    return fill(t.replace("{a}", str(a)).replace("{b}", str(b)).replace("{c}", str(a - b)), s)


def spelling_text(rng: random.Random) -> str:
    """Worked explanations of letters and lists, so counting and reversing are seen in prose too."""
    w = rng.choice(W.TASK_WORDS + W.OBJECTS + W.COLOURS)
    letters = " ".join(w)
    kind = rng.randrange(3)
    if kind == 0:
        return f"The word {w} has {len(w)} letters: {', '.join(w)}."
    if kind == 1:
        return f"Written backwards, the letters {letters} become {' '.join(reversed(w))}."
    items = rng.sample(W.TASK_WORDS, rng.randint(2, 6))
    return f"The list {', '.join(items)} has {len(items)} items. In reverse order it is {', '.join(reversed(items))}."


_NATURE_OPEN = ("The {nadj} {landform} stretched far into the distance.", "We reached the {nadj} {landform} {time2}.",
                "Beyond the village lay {a_nadj} {landform}.", "Few people know the {nadj} {landform} near {city}.",
                "It was {weather} when {name} walked into the {landform}.")
_NATURE = (
    "Tall {tree} trees grew along the path.", "{A_bird} sang somewhere in the {tree2} branches.",
    "You could hear the {sound} of the {water}.", "The sky turned {sky} as the sun went down.",
    "The air smelled of rain and {tree} leaves.", "Small {animals} moved quietly through the grass.",
    "In {season}, the ground is covered with {colour} flowers.", "A narrow path led down to the water.",
    "Clouds drifted slowly over the {nadj2} hills.", "Nobody spoke; the place was {nadj3} and calm.",
    "Far away, {a_bird2} circled above the trees.", "The light was soft, and the shadows were long.",
    "{name} sat on a rock and listened to the {sound2} of the {water2}.", "At night the stars were very bright.",
)


def nature_text(rng: random.Random) -> str:
    s = Slots(rng)
    return " ".join(_pick_fill(rng, s, _NATURE_OPEN) + _pick_fill(rng, s, _NATURE, rng.randint(2, 5)))


def day_text(rng: random.Random) -> str:
    """What someone did on one day: a sequence of activities, in diary or third-person style."""
    s = Slots(rng)
    acts = [s[f"activity{i}"] for i in range(rng.randint(2, 5))]
    if rng.random() < 0.5:
        head = fill(rng.choice(("On {day}, {name} was busy.", "{name} had a long list of jobs for {day}.",
                                "It was {a_weather} {day} in {city}.")), s)
        body = [fill(rng.choice(("First, {he} ", "In the morning, {he} ")), s) + acts[0] + "."]
        links = rng.sample(("Then {he} ", "After that, {he} ", "Later, {he} "), 3)
        body += [fill(link, s) + a + "." for link, a in zip(links, acts[1:-1])]
        if len(acts) > 1:
            body.append(fill(rng.choice(("Finally, {he} ", "In the evening, {he} ", "Before bed, {he} ")), s)
                        + acts[-1] + ".")
        return " ".join([head, *body])
    return fill("Dear diary, today I ", s) + _join_and(acts) + "." + fill(
        rng.choice((" I am tired but {feeling}.", " Tomorrow I will rest.", " It was a good {day}.")), s)


def tips_text(rng: random.Random) -> str:
    head = fill(rng.choice(W.TIP_HEADS), Slots(rng))
    tips = rng.sample(W.TIPS, rng.randint(3, 5))
    if rng.random() < 0.5:
        return "\n".join([head] + [f"- {t}" for t in tips])
    return f"{head} " + " ".join(tips)


GENERAL_DOCS: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (story, 0.20), (animal_text, 0.10), (city_text, 0.08), (facts_text, 0.10), (list_text, 0.08),
    (dialogue, 0.10), (letter, 0.07), (word_problem, 0.06), (spelling_text, 0.04), (nature_text, 0.07),
    (day_text, 0.07), (tips_text, 0.03),
)


def general_doc(rng: random.Random) -> str:
    """One general-text document of a random type (weights in GENERAL_DOCS)."""
    fns, weights = zip(*GENERAL_DOCS)
    return rng.choices(fns, weights)[0](rng)
