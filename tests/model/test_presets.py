"""The MiniMind2 presets (`--preset small|moe|base`): shapes, parameter counts against the seed table, flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model.presets import BUNDLED_VOCAB_SIZE, MODEL_PRESETS, SEED_VOCAB_SIZE, count_parameters, preset_config
from trainer import train_full_sft, train_pretrain
from trainer.minimind import resolved_model_args, stem_from_args

ROOT = Path(__file__).resolve().parents[2]
SEED_TABLE = ROOT.parents[1] / "shared" / "seeds" / "000_parallelmind_readme.md"
# the rows of seed 000's model table (the test reads the seed file where it is present)
TABLE = {"MiniMind2-Small": ("26M", 8, 512, 2, 8, "-"), "MiniMind2-MoE": ("145M", 8, 640, 2, 8, "1+4"),
         "MiniMind2": ("104M", 16, 768, 2, 8, "-")}
# exact counts (tied embeddings once), documented in README.md and docs/TRAINING.md
HUB = ["--hf-dataset", "o/n"]  # a data source that parses without the bundled files
COUNTS = {("small", 6400): 25_829_888, ("moe", 6400): 145_029_760, ("base", 6400): 104_030_976,
          ("small", 4228): 24_717_824, ("moe", 4228): 143_639_680, ("base", 4228): 102_362_880}


def test_the_table_here_is_the_seed_table():
    if not SEED_TABLE.is_file():
        pytest.skip("seed documents are not in this checkout")
    rows = {}
    for line in SEED_TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in TABLE:
            params, _vocab, theta, layers, d, kv, q, experts = cells[1:]
            rows[cells[0]] = (params, int(layers), int(d), int(kv), int(q), experts)
            assert _vocab == str(SEED_VOCAB_SIZE) and theta == "1e6"
    assert rows == TABLE


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_preset_shape_and_count_match_the_table(name):
    preset = MODEL_PRESETS[name]
    params, layers, d, kv, q, experts = TABLE[preset.seed_name]
    cfg = preset_config(name)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads, cfg.num_attention_heads) == (layers, d, kv, q)
    assert cfg.rope_theta == 1e6 and cfg.vocab_size == SEED_VOCAB_SIZE
    assert (f"{cfg.n_shared_experts}+{cfg.n_routed_experts}" if cfg.use_moe else "-") == experts
    n = count_parameters(cfg)
    assert n == COUNTS[name, SEED_VOCAB_SIZE]
    assert round(n / 1e6) == preset.table_millions == float(params.rstrip("M"))  # the table rounds to 1M
    assert count_parameters(preset_config(name, BUNDLED_VOCAB_SIZE)) == COUNTS[name, BUNDLED_VOCAB_SIZE]


def test_the_bundled_tokenizer_size_and_the_documented_counts():
    from model.tokenizer import load_tokenizer

    assert len(load_tokenizer()) == BUNDLED_VOCAB_SIZE
    for doc in ("README.md", "docs/TRAINING.md"):
        text = (ROOT / doc).read_text()
        assert "4,228" in text, doc
        for (name, vocab), n in COUNTS.items():
            assert f"{n:,}" in text, (doc, name, vocab)


def test_preset_fills_the_shape_flags_and_names_the_checkpoint():
    args = train_pretrain.parse_args([*HUB, "--preset", "moe"])
    m = resolved_model_args(args)
    assert (m["hidden_size"], m["num_hidden_layers"], m["use_moe"]) == (640, 8, True)
    assert stem_from_args("pretrain", args) == "pretrain_640_moe"
    base = train_full_sft.parse_args([*HUB, "--preset", "base"])
    assert stem_from_args("full_sft", base) == "full_sft_768"
    assert train_full_sft.SFTStage().default_init(base).endswith("pretrain_768.pth")  # the same shape's pretrain


def test_an_explicit_shape_flag_overrides_the_preset():
    args = train_pretrain.parse_args([*HUB, "--preset", "base", "--num_hidden_layers", "4", "--use_moe"])
    m = resolved_model_args(args)
    assert (m["hidden_size"], m["num_hidden_layers"], m["use_moe"]) == (768, 4, True)
    assert stem_from_args("pretrain", args) == "pretrain_768_moe"


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        train_pretrain.parse_args([*HUB, *argv])
    assert e.value.code == 2
    return capsys.readouterr().err.strip()


def test_bad_presets_and_impossible_overrides_are_refused(capsys):
    err = _usage_error(capsys, ["--preset", "huge"])
    assert "--preset" in err and "small" in err and len(err.splitlines()) == 1
    err = _usage_error(capsys, ["--preset", "small", "--num_attention_heads", "6"])
    assert re.search(r"--hidden_size 512 must be a multiple of --num_attention_heads 6", err)


def test_the_stage_builds_the_preset_with_the_bundled_tokenizer():
    from model.tokenizer import load_tokenizer
    from trainer.minimind import MiniMindStage

    args = train_pretrain.parse_args([*HUB, "--preset", "small", "--init_weight", "none"])
    model = MiniMindStage()._fresh(args, load_tokenizer())
    assert sum(p.numel() for p in model.parameters()) == COUNTS["small", BUNDLED_VOCAB_SIZE]


def test_the_presets_command_prints_the_counts(capsys):
    from model.presets import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "MiniMind2-MoE" in out and "145,029,760" in out and "24,717,824" in out


def test_a_preset_contradicting_a_checkpoint_is_an_error(tmp_path, tiny_tokenizer, capsys):
    from conftest import tiny_minimind

    from model.checkpoint import save_checkpoint
    from scripts import parallel_generate

    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(ckpt, tiny_minimind(vocab_size=len(tiny_tokenizer)), tokenizer=tiny_tokenizer)
    rc = parallel_generate.main(["--model_path", str(ckpt), "--preset", "small", "--prompts", "hi",
                                 "--max_new_tokens", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "hidden_size=64" in err[-1] and "hidden_size=512" in err[-1], err
