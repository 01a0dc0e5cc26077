"""Load any model the inference scripts accept, ready for parallel decoding or evaluation.

* a MiniMind checkpoint `.pth` (self-contained: config and tokenizer inside; an earlier-implementation
  checkpoint without config needs the shape flags);
* a folder written by `save_pretrained` (MiniMind, or a Hugging Face causal LM such as Qwen/Llama,
  whose rotary module is then patched with 2D RoPE using the settings saved in `config.parallelmind`
  or beside its adapter, else the flags, else the defaults; `patch_rope=False` keeps it unpatched);
* `--hf_base_model` (folder or Hub name) plus an optional LoRA: a PEFT adapter folder, or a
  `model_lora` file (`.pth` / `.safetensors`), see model/model_lora.py; a MiniMind `.pth` takes a LoRA
  the same way (`--model_path base.pth --lora_path out/lora/x_512.pth`, from trainer/train_lora.py).

Settings stored with the weights win (scheme, ratio, rotary pairs, branch stride, mask mode; see
model/rope_settings.py); a flag that contradicts them is an error naming the flag and the saved value,
never silently used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

import model.model_minimind  # noqa: F401  (registers MiniMind with the Auto classes)
from model.checkpoint import model_from_payload, read_checkpoint, tokenizer_from_files
from model.device import resolve_dtype
from model.tokenizer import load_tokenizer

log = logging.getLogger("parallelmind")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    kind: str  # "minimind" | "hf"
    branch_stride: int
    rope_2d_scheme: str
    rope_2d_ratio: float
    pe: str
    source: str
    mask_mode: str = "columnar"  # the attention rule the model was trained with (saved with it)

    @property
    def is_minimind(self) -> bool:
        return self.kind == "minimind"


def _check(saved, given, name: str, source: str):
    if given is not None and saved is not None and given != saved:
        raise ValueError(f"{source} was trained with {name}={saved!r}, but {name}={given!r} was given; drop the "
                         "flag (the model carries its own settings)")
    return saved if saved is not None else given


def _tokenizer(tokenizer_path, fallback_dir=None, files=None):
    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    if files:
        return tokenizer_from_files(files)
    if fallback_dir is not None and (Path(fallback_dir) / "tokenizer_config.json").exists():
        return load_tokenizer(fallback_dir)
    return load_tokenizer()


LEGACY_SHAPE_FLAGS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "use_moe",
                      "pe", "rope_2d_ratio", "rope_2d_scheme", "branch_stride")


def legacy_config_factory(args, vocab_size: int = 6400):
    """Config for an earlier-implementation checkpoint (no config inside), from explicit shape flags."""
    def make():
        from model.model_minimind import MiniMindConfig

        if getattr(args, "hidden_size", None) is None or getattr(args, "num_hidden_layers", None) is None:
            raise ValueError("this checkpoint has no config (the original ParallelMind release's format): pass --hidden_size, "
                             "--num_hidden_layers, --num_attention_heads, --num_key_value_heads, --use_moe, --pe, "
                             "--rope_2d_ratio and --branch_stride as it was trained")
        kw = {k: getattr(args, k) for k in LEGACY_SHAPE_FLAGS if getattr(args, k, None) is not None}
        kw.setdefault("rope_2d_scheme", "reference")  # the original release's rotary math
        return MiniMindConfig(vocab_size=vocab_size, **kw)
    return make


def shape_flags(args) -> dict:
    """The model-shape flags a user gave (hidden size, layers, heads, MoE): checked against a checkpoint."""
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "use_moe")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def load_minimind_checkpoint(path: str, *, tokenizer_path=None, device, dtype, legacy_config=None,
                             rope_2d_ratio=None, rope_2d_scheme=None, branch_stride=None, pe=None,
                             mask_mode=None, expect: dict | None = None) -> LoadedModel:
    overrides = {"rope_2d_ratio": rope_2d_ratio, "rope_2d_scheme": rope_2d_scheme, "branch_stride": branch_stride,
                 "pe": pe, "mask_mode": mask_mode, **(expect or {})}
    payload = read_checkpoint(path)  # read once: config, weights and tokenizer all come from it
    config = legacy_config() if (legacy_config and "config" not in payload) else None
    model = model_from_payload(payload, source=path, device=device, dtype=dtype, config=config, overrides=overrides)
    tok = _tokenizer(tokenizer_path, files=payload.get("tokenizer_files"))
    if len(tok) > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} tokens but {path} has a vocabulary of "
                         f"{model.config.vocab_size}; pass the tokenizer it was trained with (--tokenizer)")
    c = model.config
    return LoadedModel(model, tok, "minimind", c.branch_stride, c.rope_2d_scheme,
                       c.rope_2d_ratio if c.pe == "rope" else 0.0, c.pe, str(path))


def _apply_lora(model, lora, lora_rank: int | None):
    """Load an adapter (PEFT folder, `.pth` or `.safetensors`, see model/model_lora.py) onto `model` in place."""
    from model.model_lora import load_lora

    load_lora(model, lora, rank=lora_rank)
    return model


def _hf_settings(cfg, path: str, lora, flags: dict) -> dict:
    """The 2D-RoPE settings to load an HF model with: those saved in its config.json and with the adapter
    (which must agree), else the flags, else the defaults; flags given anyway are checked."""
    from model.rope_settings import HF_KEYS, resolve

    from_config = getattr(cfg, "parallelmind", None) or None
    from_adapter = lora.settings if lora is not None else None
    if from_adapter and from_adapter.get("model_type") not in (None, cfg.model_type):
        raise ValueError(f"{lora.path} was trained on a model of type {from_adapter['model_type']!r}, but {path} is "
                         f"{cfg.model_type!r}; load it onto the base model it was trained on")
    if from_config and from_adapter:
        if not from_adapter.get("patch_rope", True):
            raise ValueError(f"{lora.path} was trained without 2D RoPE, but {path} is a patched model "
                             "(config.parallelmind)")
        for key in HF_KEYS:
            if key in from_config and key in from_adapter and from_config[key] != from_adapter[key] \
                    and key != "rope_2d_ratio":
                raise ValueError(f"{lora.path} was trained with {key}={from_adapter[key]!r}, but {path} was saved with "
                                 f"{key}={from_config[key]!r}")
    saved = from_adapter or from_config
    source = lora.path if from_adapter else path
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return resolve(saved, flags, source, int(head_dim) // 2)


def load_hf_folder(path: str, *, tokenizer_path=None, lora_path=None, lora_rank=None, device, dtype,
                   rope_2d_ratio=None, rope_2d_scheme=None, branch_stride=None, pe=None, mask_mode=None,
                   patch_rope: bool | None = None, attn_implementation: str = "sdpa",
                   expect: dict | None = None) -> LoadedModel:
    """A `save_pretrained` folder (or Hub name): MiniMind, or an HF causal LM patched with 2D RoPE with the
    settings saved in its config.json / beside its adapter (flags only fill in what nothing saved says)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from model.model_lora import read_lora
    from model.rope_settings import apply_settings

    hf_logging.disable_progress_bar()
    local = Path(path).exists()
    if not local:
        from model.hub import require_hub

        require_hub("model", path)
    cfg = AutoConfig.from_pretrained(path)
    for key, value in (expect or {}).items():
        _check(getattr(cfg, key, None) if key != "use_moe" else bool(getattr(cfg, "use_moe", False)), value, key, path)
    lora = read_lora(lora_path) if lora_path else None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    tok = _tokenizer(tokenizer_path, fallback_dir=path if local else None) if (tokenizer_path or local) else \
        load_tokenizer(path)
    if cfg.model_type == "minimind":
        c = model.config
        _check(c.branch_stride, branch_stride, "branch_stride", path)
        _check(c.rope_2d_ratio, rope_2d_ratio, "rope_2d_ratio", path)
        _check(c.rope_2d_scheme, rope_2d_scheme, "rope_2d_scheme", path)
        _check(c.pe, pe, "pe", path)
        if lora is not None:
            model = _apply_lora(model, lora, lora_rank)
        model.to(device).eval()
        return LoadedModel(model, tok, "minimind", c.branch_stride, c.rope_2d_scheme, c.rope_2d_ratio, c.pe, path,
                           c.mask_mode)
    if pe not in (None, "rope"):
        raise ValueError(f"--pe {pe}: Hugging Face models use 2D RoPE (pe=rope)")
    flags = {"rope_2d_scheme": rope_2d_scheme, "rope_2d_ratio": rope_2d_ratio, "branch_stride": branch_stride,
             "mask_mode": mask_mode, "patch_rope": patch_rope}
    settings = _hf_settings(cfg, path, lora, flags)
    if settings["patch_rope"]:
        apply_settings(model, settings)
    if lora is not None:
        model = _apply_lora(model, lora, lora_rank)
    model.to(device).eval()
    ratio = settings["rope_2d_ratio"] if settings["patch_rope"] else 0.0
    prefix_sharing = branch_stride == 0  # decoding choice (see rope_settings.check_flags); the patch keeps its own
    return LoadedModel(model, tok, "hf", 0 if prefix_sharing else settings["branch_stride"], settings["rope_2d_scheme"],
                       ratio, "rope", path, mask_mode if prefix_sharing and mask_mode else settings["mask_mode"])


def load_parallel_model(*, model_path: str | None = None, hf_base_model: str | None = None,
                        lora_path: str | None = None, lora_rank: int | None = None, tokenizer_path: str | None = None,
                        device: str | torch.device = "cpu", dtype: str | None = None, legacy_config=None,
                        rope_2d_ratio: float | None = None, rope_2d_scheme: str | None = None,
                        branch_stride: int | None = None, pe: str | None = None,
                        mask_mode: str | None = None, patch_rope: bool | None = None,
                        expect: dict | None = None) -> LoadedModel:
    """Load a MiniMind checkpoint, a saved folder, or an HF base model (+ LoRA). See the module docstring.

    `expect` holds shape flags the user gave (see `shape_flags`): a checkpoint that differs is an error.
    `patch_rope=False` (--no_patch_rope) keeps an HF model's own rotary module (plain 1D positions).
    """
    device = torch.device(device)
    dt = resolve_dtype(dtype, device)
    if hf_base_model and model_path:
        raise ValueError("give either --model_path or --hf_base_model, not both")
    if not (hf_base_model or model_path):
        raise ValueError("give --model_path (a .pth checkpoint or a saved folder) or --hf_base_model")
    src = hf_base_model or model_path
    kw = dict(rope_2d_ratio=rope_2d_ratio, rope_2d_scheme=rope_2d_scheme, branch_stride=branch_stride, pe=pe,
              expect=expect)
    if model_path and Path(model_path).is_file():
        loaded = load_minimind_checkpoint(model_path, tokenizer_path=tokenizer_path, device=device, dtype=dt,
                                          legacy_config=legacy_config, mask_mode=mask_mode, **kw)
        if lora_path:  # a MiniMind LoRA (trainer/train_lora.py) on its base checkpoint
            _apply_lora(loaded.model, lora_path, lora_rank)
            loaded.model.eval()
        return loaded
    if model_path and not Path(model_path).exists():
        raise FileNotFoundError(f"model {model_path} does not exist (train one with trainer/train_pretrain.py, "
                                "or pass a saved model folder)")
    loaded = load_hf_folder(src, tokenizer_path=tokenizer_path, lora_path=lora_path, lora_rank=lora_rank,
                            device=device, dtype=dt, mask_mode=mask_mode, patch_rope=patch_rope, **kw)
    if mask_mode is not None and loaded.is_minimind:
        loaded.model.config.mask_mode = loaded.mask_mode = mask_mode
    return loaded
