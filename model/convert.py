"""Model conversion: MiniMind checkpoints to Hugging Face folders and back, LoRA merged into full models.

    from model.convert import export_hf_folder, export_llama_folder, minimind_from_hf
    export_hf_folder(model, tokenizer, "out/export/minimind-hf")      # remote code: any 2D-RoPE MiniMind
    export_llama_folder(model, tokenizer, "out/export/minimind-llama") # plain Llama, when it reduces exactly
    minimind = minimind_from_hf(hf_model)                              # a plain / patched Llama -> MiniMind

Formats (scripts/convert_model.py is the command line; docs/CONVERSION.md the guide):

* `hf`: the weights (safetensors, the MiniMind state-dict names), config.json (model_type "minimind",
  with every MiniMind field: pe, rope_2d_scheme, rope_2d_ratio, branch_stride, mask_mode, MoE sizes) plus
  `auto_map` naming two self-contained files copied from model/remote_code/ (torch + transformers only),
  generation_config.json (EOS ids: the tokenizer's EOS and `<|im_end|>`; pad), the tokenizer files.
  `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` loads it anywhere; ParallelMind
  itself loads it natively (its own MiniMind class is registered for model_type "minimind").
* `llama`: a plain `LlamaForCausalLM` folder (no remote code). MiniMind is a Llama (RMSNorm, SwiGLU, GQA,
  rotate-half rotary, no biases) whose 2D RoPE, for one branch at branch coordinate 0, is plain 1D RoPE
  when the scheme is `additive` (angle = t * f_i + [i in S] * 0 * f_i). `reference` (some pairs never
  rotate, others rotate by the flat index), `pe="fpe"` and MoE are refused (`llama_refusal`). config.json
  keeps the 2D-RoPE settings under `parallelmind`, so ParallelMind re-patches the folder and decodes branches
  in parallel as the MiniMind model does; other tools ignore the key.
* native: a self-contained MiniMind checkpoint `.pth` (model/checkpoint.py) from a MiniMind folder or a
  Llama folder whose architecture maps exactly (`minimind_refusal` says why not).

A Hugging Face model loaded by ParallelMind (a folder or `--hf_base_model`, patched or not, with its LoRA
merged) exports with `llama` as its own architecture (`export_plain_hf_folder`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from model.checkpoint import write_folder_atomic

REMOTE_DIR = Path(__file__).resolve().parent / "remote_code"
REMOTE_FILES = ("configuration_parallelmind.py", "modeling_parallelmind.py")
AUTO_MAP = {"AutoConfig": "configuration_parallelmind.ParallelMindConfig",
            "AutoModelForCausalLM": "modeling_parallelmind.ParallelMindForCausalLM"}
REMOTE_ARCH = "ParallelMindForCausalLM"


# --- what a model needs -------------------------------------------------------------------------------------

def eos_ids(tokenizer, config) -> list[int]:
    """The ids generation stops at, as ParallelGenerator's default: the tokenizer's EOS and `<|im_end|>`."""
    out: list[int] = []
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            out.append(int(tokenizer.eos_token_id))
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in out:
            out.append(int(im_end))
    if not out and getattr(config, "eos_token_id", None) is not None:
        out.append(int(config.eos_token_id))
    return out


def generation_config_for(tokenizer, config):
    """generation_config.json: the EOS ids, pad and bos, greedy by default."""
    from transformers import GenerationConfig

    eos = eos_ids(tokenizer, config)
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else \
        getattr(config, "pad_token_id", None)
    bos = tokenizer.bos_token_id if tokenizer is not None and tokenizer.bos_token_id is not None else \
        getattr(config, "bos_token_id", None)
    return GenerationConfig(eos_token_id=eos[0] if len(eos) == 1 else eos, pad_token_id=pad, bos_token_id=bos,
                            do_sample=False)


def check_vocab(model: nn.Module, tokenizer, source: str) -> None:
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                         f"{model.config.vocab_size}; pass the tokenizer it was trained with (--tokenizer)")


# --- MiniMind -> Hugging Face folder with remote code -------------------------------------------------------

def export_hf_folder(model: nn.Module, tokenizer, folder: str | Path, *, source: str = "the model") -> Path:
    """Write the `hf` folder of the module docstring (atomically: a temporary folder swapped in)."""
    if getattr(model.config, "model_type", None) != "minimind":
        raise ValueError(f"{source} is a {model.config.model_type!r} model: --format hf exports MiniMind models "
                         "(a Hugging Face model is already one; export it with --format llama)")
    check_vocab(model, tokenizer, source)
    generation = generation_config_for(tokenizer, model.config)

    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        cfg_path = d / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["architectures"] = [REMOTE_ARCH]
        cfg["auto_map"] = dict(AUTO_MAP)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        for name in REMOTE_FILES:
            shutil.copyfile(REMOTE_DIR / name, d / name)
        generation.save_pretrained(d)
        if tokenizer is not None:
            tokenizer.save_pretrained(d)

    folder = Path(folder)
    write_folder_atomic(folder, write)
    return folder


# --- MiniMind -> plain Llama --------------------------------------------------------------------------------

def llama_refusal(config) -> str | None:
    """Why a MiniMind config has no exact plain Llama equivalent for single-branch text (None: it has one)."""
    if getattr(config, "use_moe", False):
        return (f"it is a mixture of experts ({config.n_routed_experts} routed experts, top {config.num_experts_per_tok}"
                f", {config.n_shared_experts} shared), which a plain Llama/Qwen2 cannot express")
    if config.pe == "fpe":
        return "it uses pe=fpe (a Fourier branch embedding added to every token), not 2D RoPE"
    if config.rope_2d_scheme == "reference" and config.rope_2d_ratio > 0:
        return (f"its rope_2d_scheme is 'reference' (ratio {config.rope_2d_ratio}): some rotary pairs turn only with "
                "the branch coordinate, so one branch is not plain 1D RoPE; only the 'additive' scheme reduces exactly")
    if config.hidden_act not in ("silu", "gelu"):
        return f"its hidden_act {config.hidden_act!r} is not one Llama has"
    return None


def pair_indices(config) -> list[int]:
    """1-based rotary pairs carrying the branch coordinate (config.parallelmind's numbering)."""
    from parallel.rope2d import select_pairs

    return [i + 1 for i in select_pairs(config.head_dim // 2, config.rope_2d_ratio, config.rope_2d_scheme)]


def llama_config_from_minimind(config):
    """The LlamaConfig computing what a (reducible) MiniMind config computes on one branch."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                      num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                      head_dim=config.head_dim, hidden_act=config.hidden_act,
                      max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
                      rope_theta=float(config.rope_theta), attention_bias=False, mlp_bias=False,
                      tie_word_embeddings=bool(config.tie_word_embeddings), bos_token_id=config.bos_token_id,
                      eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    cfg.parallelmind = {"rope_2d_scheme": config.rope_2d_scheme, "rope_2d_ratio": float(config.rope_2d_ratio),
                        "pair_indices": pair_indices(config), "branch_stride": int(config.branch_stride),
                        "mask_mode": config.mask_mode}
    return cfg


def export_llama_folder(model: nn.Module, tokenizer, folder: str | Path, *, source: str = "the model") -> Path:
    """Write a plain LlamaForCausalLM folder for a MiniMind model (refused with the reason when inexact)."""
    from transformers import LlamaForCausalLM

    why = llama_refusal(model.config)
    if why is not None:
        raise ValueError(f"{source} cannot be written as a plain Llama model: {why}; use --format hf (remote code)")
    check_vocab(model, tokenizer, source)
    cfg = llama_config_from_minimind(model.config)
    llama = LlamaForCausalLM(cfg).to(next(model.parameters()).dtype)
    missing, unexpected = llama.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:  # the names are the same by construction; anything else is a bug worth reporting
        raise RuntimeError(f"MiniMind -> Llama weight names differ: missing {missing[:4]}, unexpected {unexpected[:4]}")
    llama.tie_weights()
    return export_plain_hf_folder(llama.eval(), tokenizer, folder, source=source, generation=True)


# --- Hugging Face models (patched or not) -> their own plain folder ------------------------------------------

def export_plain_hf_folder(model: nn.Module, tokenizer, folder: str | Path, *, source: str = "the model",
                           generation: bool = True) -> Path:
    """Write a Hugging Face model as a folder of its own architecture (no remote code).

    A model patched with 2D RoPE keeps `config.parallelmind`; that is exact for plain tools only with the
    `additive` scheme (one branch at coordinate 0 is then the unpatched model), so `reference` is refused.
    """
    from model.rope_settings import is_patched, unwrap

    base = unwrap(model)
    saved = getattr(base.config, "parallelmind", None)
    if isinstance(saved, dict) and saved.get("rope_2d_scheme") == "reference" and is_patched(base) \
            and saved.get("pair_indices"):
        raise ValueError(f"{source} is patched with the 'reference' 2D-RoPE scheme: as a plain "
                         f"{base.config.model_type} folder it would decode differently (only 'additive' reduces to "
                         "the unpatched model)")
    gen = generation_config_for(tokenizer, base.config) if generation else None

    def write(d: Path) -> None:
        base.save_pretrained(d, safe_serialization=True)
        if gen is not None:
            gen.save_pretrained(d)
        if tokenizer is not None:
            tokenizer.save_pretrained(d)

    folder = Path(folder)
    write_folder_atomic(folder, write)
    return folder


# --- Hugging Face (Llama) -> MiniMind ------------------------------------------------------------------------

def _rope_params(cfg) -> dict:
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    out = dict(params) if isinstance(params, dict) else {}
    if "rope_theta" not in out and getattr(cfg, "rope_theta", None) is not None:
        out["rope_theta"] = cfg.rope_theta
    return out


def minimind_refusal(model: nn.Module) -> str | None:
    """Why a Hugging Face model does not map exactly onto MiniMind (None: it does)."""
    from model.rope_settings import is_patched, unwrap

    base = unwrap(model)
    cfg = base.config
    if cfg.model_type != "llama":
        return (f"its architecture is {cfg.model_type!r}; only Llama maps exactly onto MiniMind"
                + (" (Qwen2 has q/k/v biases, MiniMind has none)" if cfg.model_type == "qwen2" else ""))
    params = _rope_params(cfg)
    checks = [
        (getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False), "it has attention or MLP biases"),
        (cfg.hidden_act not in ("silu", "gelu"), f"its hidden_act {cfg.hidden_act!r} is not silu or gelu"),
        (params.get("rope_type", "default") != "default",
         f"it uses rotary scaling {params.get('rope_type')!r} (MiniMind has plain RoPE frequencies)"),
        (getattr(cfg, "head_dim", None) not in (None, cfg.hidden_size // cfg.num_attention_heads),
         f"its head_dim {getattr(cfg, 'head_dim', None)} is not hidden_size / num_attention_heads"),
        ((getattr(cfg, "pretraining_tp", 1) or 1) != 1, "it uses pretraining_tp > 1"),
    ]
    for bad, why in checks:
        if bad:
            return why
    saved = getattr(cfg, "parallelmind", None)
    if is_patched(base) and isinstance(saved, dict):
        from parallel.rope2d import select_pairs

        f = (cfg.hidden_size // cfg.num_attention_heads) // 2
        want = [i + 1 for i in select_pairs(f, float(saved["rope_2d_ratio"]), saved["rope_2d_scheme"])]
        if list(saved.get("pair_indices") or want) != want:
            return (f"its 2D-RoPE pairs {saved['pair_indices']} are not those MiniMind selects for ratio "
                    f"{saved['rope_2d_ratio']} ({want})")
    return None


def minimind_from_hf(model: nn.Module, *, settings: dict | None = None, source: str = "the model"):
    """A MiniMind model with the weights of a (plain or patched) Llama model -> MiniMindForCausalLM (eval).

    The 2D-RoPE settings are the model's own `config.parallelmind` when it is patched, else `settings`
    (pe/rope_2d_scheme/rope_2d_ratio/branch_stride/mask_mode; MiniMind's defaults for what is missing).
    """
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from model.rope_settings import is_patched, unwrap

    why = minimind_refusal(model)
    if why is not None:
        raise ValueError(f"{source} cannot be converted to a MiniMind checkpoint: {why}")
    base = unwrap(model)
    cfg = base.config
    rope = dict(settings or {})
    if is_patched(base) and isinstance(getattr(cfg, "parallelmind", None), dict):
        rope = {k: cfg.parallelmind.get(k) for k in ("rope_2d_scheme", "rope_2d_ratio", "branch_stride", "mask_mode")}
    rope = {k: v for k, v in rope.items() if v is not None}
    mm = MiniMindConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                        intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
                        rope_theta=float(_rope_params(cfg)["rope_theta"]), rms_norm_eps=cfg.rms_norm_eps,
                        hidden_act=cfg.hidden_act, max_position_embeddings=cfg.max_position_embeddings,
                        bos_token_id=cfg.bos_token_id, eos_token_id=_first(cfg.eos_token_id),
                        pad_token_id=cfg.pad_token_id, tie_word_embeddings=bool(cfg.tie_word_embeddings),
                        pe="rope", **rope)
    out = MiniMindForCausalLM(mm)
    dtype = next(base.parameters()).dtype
    sd = {k: v for k, v in base.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    if mm.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    missing, unexpected = out.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (mm.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{source} cannot be converted to a MiniMind checkpoint: its weights do not match "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    out.tie_weights()
    return out.to(dtype).eval()


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) and x else x


def merged(model: nn.Module) -> nn.Module:
    """The model with its LoRA folded in (model/model_lora.merge_lora), or the model itself without one."""
    from model.model_lora import has_lora, merge_lora

    return merge_lora(model).eval() if has_lora(model) else model


@torch.no_grad()
def max_logit_difference(a: nn.Module, b: nn.Module, input_ids: torch.Tensor) -> float:
    """max |logits_a - logits_b| of one causal forward of `input_ids` `[B, T]` (a conversion's self-check)."""
    la = a(input_ids=input_ids).logits.float()
    lb = b(input_ids=input_ids).logits.float()
    return float((la - lb).abs().max())
