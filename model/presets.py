"""Named MiniMind model shapes: the MiniMind2 table (`--preset small|moe|base` on every MiniMind front).

Torch-free (the flag group in trainer/args/ reads `MODEL_PRESETS` before torch is imported);
`count_parameters` builds the model on the meta device (no memory, no weights) to count it.

    python -m model.presets                    # the table, counted at vocab 6400 and with the bundled tokenizer
    python -m model.presets --vocab_size 32000

| preset  | seed name        | params (vocab 6400) | layers | hidden | kv heads | q heads | shared+routed experts |
|---------|------------------|---------------------|--------|--------|----------|---------|-----------------------|
| `small` | MiniMind2-Small  | 26M                 | 8      | 512    | 2        | 8       | -                     |
| `moe`   | MiniMind2-MoE    | 145M                | 8      | 640    | 2        | 8       | 1+4 (top-2)           |
| `base`  | MiniMind2        | 104M                | 16     | 768    | 2        | 8       | -                     |

rope_theta is 1e6 for all three (the MiniMind config default). The vocabulary is the tokenizer's: the
bundled tokenizer (model/tokenizer.json) has 4,228 tokens, which gives 24.7M / 143.6M / 102.4M.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SEED_VOCAB_SIZE = 6400  # the vocabulary the MiniMind2 table is counted at
BUNDLED_VOCAB_SIZE = 4228  # len(model/tokenizer.json); tests/model/test_presets.py checks it


@dataclass(frozen=True)
class ModelPreset:
    """A MiniMind2 shape: the flag values it stands for and the table's rounded parameter count."""

    seed_name: str
    table_params: str  # as the table prints it, e.g. "26M"
    shape: dict = field(default_factory=dict)  # model flag -> value (the names of trainer.args.MODEL_DEFAULTS)

    @property
    def table_millions(self) -> float:
        return float(self.table_params.rstrip("M"))


def _shape(hidden: int, layers: int, moe: bool = False) -> dict:
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
                use_moe=moe)


MODEL_PRESETS: dict[str, ModelPreset] = {
    "small": ModelPreset("MiniMind2-Small", "26M", _shape(512, 8)),
    "moe": ModelPreset("MiniMind2-MoE", "145M", _shape(640, 8, moe=True)),
    "base": ModelPreset("MiniMind2", "104M", _shape(768, 16)),
}
PRESET_NAMES = tuple(MODEL_PRESETS)


def preset_config(name: str, vocab_size: int = SEED_VOCAB_SIZE, **overrides):
    """The `MiniMindConfig` of preset `name` at `vocab_size` (`overrides` change single fields)."""
    from model.model_minimind import MiniMindConfig

    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return MiniMindConfig(vocab_size=vocab_size, **{**MODEL_PRESETS[name].shape, **overrides})


def count_parameters(config) -> int:
    """Distinct parameters of a MiniMind model with `config` (tied embeddings counted once), built on meta."""
    import torch

    from model.model_minimind import MiniMindForCausalLM

    with torch.device("meta"):
        model = MiniMindForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def preset_table(vocab_sizes: tuple[int, ...] = (SEED_VOCAB_SIZE, BUNDLED_VOCAB_SIZE)) -> list[dict]:
    """One row per preset: its seed name, the table's count, and the exact count at each vocabulary size."""
    rows = []
    for name, preset in MODEL_PRESETS.items():
        row = {"preset": name, "seed_name": preset.seed_name, "table": preset.table_params}
        for v in vocab_sizes:
            row[f"params@{v}"] = count_parameters(preset_config(name, v))
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.presets", description="Print the MiniMind2 presets, counted.")
    p.add_argument("--vocab_size", type=int, action="append", default=None,
                   help=f"vocabulary sizes to count at (repeatable; default {SEED_VOCAB_SIZE} and "
                        f"{BUNDLED_VOCAB_SIZE}, the bundled tokenizer)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.vocab_size and min(args.vocab_size) < 1:
        p.error("--vocab_size must be positive")
    sizes = tuple(args.vocab_size or (SEED_VOCAB_SIZE, BUNDLED_VOCAB_SIZE))
    print("| preset | seed name | table | " + " | ".join(f"vocab {v}" for v in sizes) + " |")
    print("|---|---|---|" + "---|" * len(sizes))
    for row in preset_table(sizes):
        counts = " | ".join(f"{row[f'params@{v}']:,} ({row[f'params@{v}'] / 1e6:.1f}M)" for v in sizes)
        print(f"| {row['preset']} | {row['seed_name']} | {row['table']} | {counts} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
