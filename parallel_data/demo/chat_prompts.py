"""A bundled, varied set of short chat prompts for experiments with instruction-tuned models.

    from parallel_data.demo.chat_prompts import chat_prompts
    prompts = chat_prompts(200, seed=0)     # ["What is the capital of Peru?", "Name three fruits.", ...]

Twelve kinds of request (facts, arithmetic, definitions, lists, short writing, opposites, ...) filled
from the demo vocabulary tables, each prompt distinct, the order seeded: the same call gives the same
list on every machine. scripts/hf_columnar_experiment.py self-distils a model's answers to them.
"""

from __future__ import annotations

import random

from parallel_data.demo.words import CAPITALS

ANIMALS = ("dog", "cat", "spider", "bird", "horse", "ant", "cow", "duck", "snake", "fish", "frog", "bee", "octopus",
           "chicken", "lion", "crab")
THINGS = ("a rainbow", "gravity", "a volcano", "photosynthesis", "a computer", "the moon", "a river", "democracy",
          "electricity", "a library", "an engine", "the internet", "a glacier", "a vaccine", "an atom", "music",
          "a calendar", "a bridge", "friendship", "a telescope")
CATEGORIES = ("fruits", "colors", "planets", "musical instruments", "vegetables", "sports", "countries in Europe",
              "kitchen tools", "birds", "programming languages", "farm animals", "metals", "flowers", "trees")
TOPICS = ("the sea", "autumn", "a busy city", "breakfast", "a rainy day", "mountains", "a cat", "the stars",
          "a garden", "winter", "a train ride", "the desert", "a library", "coffee", "a birthday")
WORDS = ("hot", "happy", "fast", "big", "light", "early", "open", "strong", "young", "full", "loud", "soft",
         "rich", "wet", "high")
OBJECTS = ("the sky", "grass", "snow", "a banana", "a tomato", "coal", "milk", "an orange", "a lemon", "the sun")


def _all_prompts() -> list[str]:
    out = [f"What is the capital of {c}?" for c, _ in CAPITALS]
    out += [f"How many legs does a {a} have?" for a in ANIMALS]
    out += [f"Explain what {t} is in one sentence." for t in THINGS]
    out += [f"Name three {c}." for c in CATEGORIES]
    out += [f"Write one short sentence about {t}." for t in TOPICS]
    out += [f"What is the opposite of '{w}'?" for w in WORDS]
    out += [f"Give a synonym for '{w}'." for w in WORDS]
    out += [f"What color is {o}?" for o in OBJECTS]
    rng = random.Random(1234)
    out += [f"What is {a} plus {b}?" for a, b in ((rng.randint(2, 60), rng.randint(2, 40)) for _ in range(24))]
    out += [f"What is {a} times {b}?" for a, b in ((rng.randint(2, 12), rng.randint(2, 12)) for _ in range(16))]
    out += [f"Which is larger, {a} or {b}?" for a, b in ((rng.randint(10, 99), rng.randint(10, 99)) for _ in range(12))]
    out += [f"Why do people like {t}? Answer briefly." for t in TOPICS[:10]]
    return list(dict.fromkeys(out))  # distinct, first occurrence kept


def chat_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct prompts in a seeded order (ValueError when more are asked for than exist)."""
    prompts = _all_prompts()
    if n > len(prompts):
        raise ValueError(f"chat_prompts: {n} asked for, but the set holds {len(prompts)} distinct prompts")
    random.Random(seed).shuffle(prompts)
    return prompts[:n]
