"""Which Hugging Face architectures 2D-RoPE patching supports: a tiny random model of each, patched, checked.

    python scripts/survey_hf_architectures.py                       # the common decoder families (~1-2 min)
    python scripts/survey_hf_architectures.py --model_types llama qwen2 cohere
    python scripts/survey_hf_architectures.py --all --out out/survey_hf_architectures.json

For every model type: build a tiny random model from its config class (hidden 64, 2 layers, 4 heads,
2 KV heads, head_dim 16; types whose tiny model has more than 30M parameters are skipped), compute
logits unpatched, patch it (`patch_model_with_interleaved_2d_rope`, ratio 0.5) and compare, bit for
bit, a plain `[B, T]` call and `[B, T, 2]` single-branch positions. Each row says "patched"
(with `bit_exact`), "refused" (with the reason the patch gives, naming the model type) or
"not_built" (the tiny config could not be instantiated; says nothing about the architecture).
A patched row that is not bit-exact is a bug: the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evaluation.benchmarking import emit_json, environment
from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

COMMON = ["llama", "mistral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
          "gemma3_text", "phi", "phi3", "gpt_neox", "granite", "olmo", "olmo2", "cohere", "stablelm", "starcoder2",
          "mixtral", "glm", "glm4", "internlm3", "smollm3", "helium", "exaone4", "falcon", "nemotron", "persimmon",
          "seed_oss", "ernie4_5", "hunyuan_v1_dense", "gpt_oss", "llama4_text", "gpt2"]
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, head_dim=16, pad_token_id=0,
            moe_intermediate_size=32, num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
            n_embd=64, n_layer=2, n_head=4)
MAX_PARAMS = 30e6


def tiny_model(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type)
    for k, v in TINY.items():
        if hasattr(cfg, k) or k in ("head_dim", "pad_token_id"):
            try:
                setattr(cfg, k, v)
            except Exception:  # noqa: BLE001 - a read-only or derived field: keep the default
                pass
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    if n > MAX_PARAMS:
        raise RuntimeError(f"tiny config still has {n / 1e6:.0f}M parameters")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


@torch.no_grad()
def survey_one(model_type: str) -> dict:
    from parallel.columnar import patch_model_with_interleaved_2d_rope

    row = {"model_type": model_type}
    try:
        model = tiny_model(model_type)
        ids = torch.randint(3, 200, (2, 10))
        ref = model(ids).logits
    except Exception as e:  # noqa: BLE001 - report what could not be built, keep surveying
        return {**row, "status": "not_built", "reason": f"{type(e).__name__}: {str(e)[:160]}"}
    row["class"] = type(model).__name__
    try:
        patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    except ValueError as e:
        return {**row, "status": "refused", "reason": str(e).split(". Patching supports")[0]}
    pos = torch.stack([torch.zeros_like(ids), torch.arange(10).expand(2, 10)], dim=-1)
    try:
        plain, two_d = model(ids).logits, model(ids, position_ids=pos).logits
    except Exception as e:  # noqa: BLE001 - a patched model that fails its forward is a finding
        return {**row, "status": "patched", "bit_exact": False, "reason": f"{type(e).__name__}: {str(e)[:160]}"}
    return {**row, "status": "patched", "bit_exact": bool(torch.equal(plain, ref) and torch.equal(two_d, ref)),
            "max_abs_diff": max((plain - ref).abs().max().item(), (two_d - ref).abs().max().item())}


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "survey_hf_architectures")
    g = p.add_argument_group("model types")
    g.add_argument("--model_types", nargs="+", default=None, help=f"default: {' '.join(COMMON)}")
    g.add_argument("--all", action="store_true", help="every causal LM type transformers knows (slow)")
    flags.add_output_args(p, out_path=True, out_path_help="also write the JSON report here")
    p.add_check(_check_types)
    return p


def _check_types(args) -> None:
    if args.all and args.model_types:
        raise UsageError("--all and --model_types both choose the model types; give one")


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    types = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) if args.all else (args.model_types or COMMON)
    unknown = [t for t in types if t not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]
    if unknown:
        raise UsageError(f"--model_types: not a causal LM type of this transformers: {', '.join(unknown)}")
    rows = []
    for t in types:
        rows.append(survey_one(t))
        print(f"[survey] {t}: {rows[-1]['status']}", file=sys.stderr, flush=True)
    patched = [r["model_type"] for r in rows if r["status"] == "patched" and r.get("bit_exact")]
    broken = [r["model_type"] for r in rows if r["status"] == "patched" and not r.get("bit_exact")]
    emit_json({"env": environment("cpu"), "patched_bit_exact": patched, "patched_not_exact": broken,
               "refused": [r["model_type"] for r in rows if r["status"] == "refused"], "rows": rows}, args.out_path)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
