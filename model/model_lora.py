"""LoRA for MiniMind and Hugging Face models alike, built on PEFT (the seed API: apply / save / load, plus merge).

    from model.model_lora import apply_lora, save_lora, load_lora, merge_lora

    names = apply_lora(model, rank=8)           # in place: PEFT LoRA layers, everything else frozen
    ...train...
    save_lora(model, "out/lora/hf_lora_hf_final.pth")   # that file + the PEFT folder out/lora/hf_lora_hf_final/
    load_lora(model, "out/lora/hf_lora_hf_final.pth")   # or the folder, or a .safetensors file
    model = merge_lora(model)                   # W + (alpha / r) * B A folded in; a plain model again

`apply_lora` injects PEFT LoRA layers into the model itself (`peft.functional.inject_adapter_in_model`),
so the model keeps its class, its forward and its `generate`, for a MiniMind model as for any Hugging
Face causal LM. y = W x + (alpha / r) * B(A(x)); B starts at zero, so a fresh adapter changes nothing.
The default targets are every `nn.Linear` inside the decoder layers (attention and MLP: q/k/v/o,
gate/up/down), never the LM head, the embeddings or an MoE router. The default alpha equals the rank
(scaling 1, as the seed's LoRA). Adapter weights are kept in float32 when the model is bf16/fp16.

Files written by `save_lora(model, path)`:

* the PEFT folder `path` without its suffix (`out/lora/x.pth` -> `out/lora/x/`): `adapter_config.json`
  and `adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight`), loadable with
  `PeftModel.from_pretrained(plain_base_model, folder)`, plus `parallelmind.json` (the 2D-RoPE
  settings of the model it was trained on, see model/rope_settings.py);
* `path` itself when it ends in `.pth`/`.pt`: a dict that loads with `torch.load(path, weights_only=True)`:
  `{"format": "parallelmind-lora-v1", "peft_config": <adapter_config.json as a dict>,
  "adapter_state_dict": {"<module>.lora_A.weight": tensor, ...}, "parallelmind": <settings>}`;
  when it ends in `.safetensors`: the same tensors, with the config and settings as JSON metadata.

`load_lora` reads all of these, and the files of the earlier `model_lora` (keys
`<module>.lora.A.weight` / `.lora.B.weight`, optionally a `__lora_meta__` entry with rank and
alpha; without one, scaling 1 as in the seed). It re-applies the saved 2D-RoPE settings to an
unpatched model and refuses a model patched differently.

For trainers: `lora_disabled(model)` (a `with` block computing as the base model), `lora_parameters` (what trains), `lora_payload` (the `.pth` dict, for a checkpoint),
`lora_state_dict` / `set_lora_state_dict` (checkpoints; a full state dict gathered from FSDP can be
passed in), `merge_lora` (export).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model.rope_settings import apply_settings, check_model_matches, is_patched, settings_of, unwrap

LORA_FORMAT = "parallelmind-lora-v1"
ADAPTER = "default"
PEFT_PREFIX = "base_model.model."
FILE_SUFFIXES = (".pth", ".pt", ".safetensors")
# Linear layers that are not attention or MLP projections: output heads and MoE routers
_NOT_TARGETS = ("lm_head", "score", "gate", "router", "shared_expert_gate")


# --- which layers --------------------------------------------------------------------------------

def _output_head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    try:
        return get() if callable(get) else None
    except Exception:  # noqa: BLE001 - a model without a standard head simply has none to exclude
        return None


def lora_targets(model: nn.Module, targets: list[str] | None = None) -> list[str]:
    """Full names of the Linear layers to adapt.

    `targets=None`: every `nn.Linear` inside a numbered block (`layers.N`: attention and MLP),
    except the output head and MoE routers. Otherwise the Linear layers whose name is, or ends with,
    one of `targets` (e.g. `["q_proj", "v_proj"]`).
    """
    base = unwrap(model)
    head = _output_head(base)
    out = []
    for name, m in base.named_modules():
        if not isinstance(m, nn.Linear) or m is head or "lora_" in name:
            continue
        parts = name.split(".")
        if targets is None:
            if parts[-1] not in _NOT_TARGETS and any(p.isdigit() for p in parts[:-1]):
                out.append(name)
        elif any(name == t or name.endswith("." + t) for t in targets):
            out.append(name)
    if not out:
        raise ValueError(f"no Linear layer of {type(base).__name__} matches the LoRA targets "
                         f"{targets if targets is not None else '(every Linear layer of the decoder blocks)'}")
    return out


def _target_spec(model: nn.Module, names: list[str]) -> list[str]:
    """The shortest PEFT `target_modules` selecting exactly `names`: their leaf names when those select
    nothing else (PEFT matches by name suffix over every module), else the full names."""
    leaves = sorted({n.rpartition(".")[2] for n in names})
    hits = {n for n, _ in unwrap(model).named_modules() if n.rpartition(".")[2] in leaves}
    return leaves if hits == set(names) else sorted(names)


# --- state ---------------------------------------------------------------------------------------

def has_lora(model: nn.Module) -> bool:
    return ADAPTER in (getattr(unwrap(model), "peft_config", None) or {})


def lora_config(model: nn.Module):
    """The model's PEFT `LoraConfig`."""
    if not has_lora(model):
        raise ValueError(f"{type(unwrap(model)).__name__} has no LoRA adapter (call apply_lora or load_lora first)")
    return unwrap(model).peft_config[ADAPTER]


def lora_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every adapter weight: what a LoRA run trains."""
    return [(n, p) for n, p in unwrap(model).named_parameters() if ".lora_A." in n or ".lora_B." in n]


def adapted_modules(model: nn.Module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [n for n, m in unwrap(model).named_modules() if isinstance(m, LoraLayer)]


def lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights, keyed `<module>.lora_A.weight` / `.lora_B.weight` (names in the plain model).

    `state_dict`: a full state dict of the same model to take them from (e.g. gathered from FSDP
    shards); by default the model's own.
    """
    from peft.functional import get_peft_model_state_dict

    lora_config(model)
    return get_peft_model_state_dict(unwrap(model), state_dict=state_dict, adapter_name=ADAPTER)


def set_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "adapter") -> None:
    """Load adapter weights (keys as `lora_state_dict` returns them) strictly: every adapter weight, nothing else."""
    from peft.functional import set_peft_model_state_dict

    base = unwrap(model)
    expected = set(lora_state_dict(base))
    given = {k.removeprefix(PEFT_PREFIX): v for k, v in state_dict.items()}
    missing, unexpected = sorted(expected - set(given)), sorted(set(given) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not match the model's LoRA layers: missing {missing[:4]}"
                         f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                         f"{'...' if len(unexpected) > 4 else ''} (a different base model or targets?)")
    own = lora_state_dict(base)
    for k, v in given.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, the model's has {tuple(own[k].shape)} "
                             "(a different rank or base model?)")
    set_peft_model_state_dict(base, given, adapter_name=ADAPTER)


# --- apply / merge -------------------------------------------------------------------------------

def _is_causal_lm(model: nn.Module) -> bool:
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel) and callable(getattr(model, "generate", None))


def make_lora_config(model: nn.Module, rank: int = 8, *, alpha: float | None = None, dropout: float = 0.0,
                     targets: list[str] | None = None):
    from peft import LoraConfig

    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    base = unwrap(model)
    cfg = getattr(base, "config", None)
    return LoraConfig(r=int(rank), lora_alpha=float(alpha) if alpha is not None else int(rank),
                      lora_dropout=float(dropout), target_modules=_target_spec(base, lora_targets(base, targets)),
                      bias="none", task_type="CAUSAL_LM" if _is_causal_lm(base) else None,
                      base_model_name_or_path=getattr(cfg, "_name_or_path", None) or None)


def _inject(model: nn.Module, config) -> list[str]:
    from peft.functional import cast_adapter_dtype, inject_adapter_in_model

    base = unwrap(model)
    inject_adapter_in_model(config, base, adapter_name=ADAPTER)
    cast_adapter_dtype(base, ADAPTER, autocast_adapter_dtype=True)  # fp32 adapters on a bf16/fp16 model
    return adapted_modules(base)


def apply_lora(model: nn.Module, rank: int = 8, *, alpha: float | None = None, dropout: float = 0.0,
               targets: list[str] | None = None) -> list[str]:
    """Add LoRA layers to `model` in place and freeze everything else; returns the adapted module names."""
    if has_lora(model):
        raise ValueError("the model already has a LoRA adapter (apply_lora was called twice?)")
    return _inject(model, make_lora_config(model, rank, alpha=alpha, dropout=dropout, targets=targets))


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model computes as its base model (every LoRA layer switched off); the adapters
    are switched back on at exit. A frozen copy of the base for free, e.g. the teacher of self-distillation."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    lora_config(model)
    layers = [m for m in unwrap(model).modules() if isinstance(m, BaseTunerLayer)]
    trains = [(p, p.requires_grad) for _, p in lora_parameters(model)]  # PEFT's toggle also sets requires_grad
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in trains:
            p.requires_grad_(flag)


def _unload(model: nn.Module, merge: bool) -> nn.Module:
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = unwrap(model)
    for name in [n for n, m in base.named_modules() if isinstance(m, BaseTunerLayer)]:
        layer = base.get_submodule(name)
        if merge:
            layer.merge(safe_merge=True)  # safe: a non-finite merged weight is an error, not a silent NaN
        parent, _, child = name.rpartition(".")
        setattr(base.get_submodule(parent) if parent else base, child, layer.get_base_layer())
    if hasattr(base, "peft_config"):
        del base.peft_config
    return base


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapter into the base weights (W += alpha / r * B A) and remove the LoRA layers.

    Returns the plain model (the same object for a model from `apply_lora`/`load_lora`, the base model
    for a `PeftModel`); its 2D-RoPE patch and `config.parallelmind` stay, so `save_pretrained` of the
    result is a model that loads with its settings.
    """
    lora_config(model)
    return _unload(model, merge=True)


def remove_lora(model: nn.Module) -> nn.Module:
    """Drop the adapter without merging it: the base model as it was."""
    return _unload(model, merge=False)


# --- files ---------------------------------------------------------------------------------------

@dataclass
class LoraFile:
    """An adapter read from disk: PEFT config, weights (plain-model keys) and the saved 2D-RoPE settings."""

    config: object  # peft.LoraConfig
    state_dict: dict[str, torch.Tensor]
    settings: dict | None
    path: str
    format: str  # "peft-folder" | "pth" | "safetensors" | "model_lora-legacy"

    @property
    def rank(self) -> int:
        ranks = {int(self.config.r), *(int(r) for r in (self.config.rank_pattern or {}).values())}
        return next(iter(ranks)) if len(ranks) == 1 else int(self.config.r)

    @property
    def ranks(self) -> set[int]:
        return {int(self.config.r), *(int(r) for r in (self.config.rank_pattern or {}).values())}


def folder_for(path: str | Path) -> Path:
    """The PEFT folder written beside a `.pth` / `.safetensors` path (the path itself otherwise)."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in FILE_SUFFIXES else p


def _config_dict(config) -> dict:
    with tempfile.TemporaryDirectory() as d:
        config.save_pretrained(d)  # PEFT's own JSON form (sets as lists, enums as strings)
        return json.loads((Path(d) / "adapter_config.json").read_text())


def _config_from_dict(d: dict):
    from peft import LoraConfig

    d = {k: v for k, v in d.items() if k not in ("peft_type", "auto_mapping", "peft_version")}
    known = set(LoraConfig.__dataclass_fields__)
    return LoraConfig(**{k: v for k, v in d.items() if k in known})


def lora_payload(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> dict:
    """The adapter as one dict (the `.pth` format of the module docstring), weights on CPU.

    `state_dict`: a full state dict of the model to take the adapter weights from (gathered from
    FSDP shards); by default the model's own.
    """
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in lora_state_dict(model, state_dict).items()}
    return {"format": LORA_FORMAT, "peft_config": _config_dict(lora_config(model)), "adapter_state_dict": sd,
            "parallelmind": settings_of(model)}


def write_lora(payload: dict, path: str | Path) -> Path:
    """Write an adapter payload (`lora_payload`, extra keys such as "meta" kept in the `.pth`): the PEFT
    folder beside `path`, and `path` itself when it is a .pth/.pt/.safetensors file. Returns the folder."""
    from safetensors.torch import save_file

    from model.checkpoint import atomic_torch_save, write_folder_atomic

    sd, cfg_dict, settings = payload["adapter_state_dict"], payload["peft_config"], payload["parallelmind"]
    path, folder = Path(path), folder_for(path)

    def write(d: Path) -> None:
        (d / "adapter_config.json").write_text(json.dumps(cfg_dict, indent=2, sort_keys=True) + "\n")
        save_file({PEFT_PREFIX + k: v.contiguous() for k, v in sd.items()}, str(d / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        (d / "parallelmind.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    write_folder_atomic(folder, write)
    if path.suffix in (".pth", ".pt"):
        atomic_torch_save(payload, path)
    elif path.suffix == ".safetensors":
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in sd.items()}, tmp,
                      metadata={"format": LORA_FORMAT, "peft_config": json.dumps(cfg_dict),
                                "parallelmind": json.dumps(settings)})
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return folder


def save_lora(model: nn.Module, path: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save the adapter: the PEFT folder beside `path`, and `path` itself when it is a .pth/.pt/.safetensors
    file (see the module docstring). `state_dict`: a gathered full state dict (FSDP). Returns the folder."""
    return write_lora(lora_payload(model, state_dict), path)


def _legacy(sd: dict[str, torch.Tensor], meta: dict, path: str) -> LoraFile:
    """The earlier `model_lora` format: `<module>.lora.A.weight` / `.lora.B.weight` (+ optional rank/alpha)."""
    from peft import LoraConfig

    ranks, out = {}, {}
    for k, v in sd.items():
        for old, new in ((".lora.A.weight", ".lora_A.weight"), (".lora.B.weight", ".lora_B.weight")):
            if k.endswith(old):
                name = k[: -len(old)].removeprefix("module.")  # saved from a DDP-wrapped model
                out[name + new] = v
                if old == ".lora.A.weight":
                    ranks[name] = int(v.shape[0])
    if not ranks or len(out) != len(sd):
        raise ValueError(f"{path} holds no LoRA weights (expected a ParallelMind LoRA file, a PEFT adapter folder, "
                         "or keys '<module>.lora.A.weight' / '<module>.lora.B.weight')")
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    alpha = float(meta["alpha"]) if meta.get("alpha") is not None else float(r)  # seed: no scaling
    if len(set(ranks.values())) > 1 and meta.get("alpha") is None:
        alpha_pattern = {n: float(k) for n, k in ranks.items() if k != r}  # scaling 1 for every module
    else:
        alpha_pattern = {}
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(ranks), lora_dropout=0.0, bias="none",
                        rank_pattern={n: k for n, k in ranks.items() if k != r}, alpha_pattern=alpha_pattern)
    return LoraFile(config, out, None, path, "model_lora-legacy")


def read_lora(path: str | Path) -> LoraFile:
    """Read an adapter in any supported format (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        return _read_folder(p)
    if not p.is_file():
        sibling = folder_for(p)
        hint = f" (but the folder {sibling} exists: pass it)" if sibling != p and sibling.is_dir() else ""
        raise FileNotFoundError(f"LoRA file {p} does not exist{hint}")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            sd, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        if meta.get("format") == LORA_FORMAT:
            return LoraFile(_config_from_dict(json.loads(meta["peft_config"])), sd,
                            json.loads(meta.get("parallelmind") or "null"), str(p), "safetensors")
        return _legacy(sd, meta, str(p))
    try:
        raw = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{p} is not a readable LoRA file ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p} does not hold a LoRA state dict")
    if raw.get("format") == LORA_FORMAT:
        return LoraFile(_config_from_dict(raw["peft_config"]), dict(raw["adapter_state_dict"]), raw.get("parallelmind"),
                        str(p), "pth")
    meta = raw.pop("__lora_meta__", {}) if isinstance(raw.get("__lora_meta__"), dict) else {}
    return _legacy({k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}, meta, str(p))


def _read_folder(p: Path) -> LoraFile:
    from peft import LoraConfig

    if not (p / "adapter_config.json").is_file():
        raise FileNotFoundError(f"LoRA folder {p} has no adapter_config.json (not a PEFT adapter)")
    config = LoraConfig.from_pretrained(str(p))
    if (p / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(p / "adapter_model.safetensors"))
    elif (p / "adapter_model.bin").is_file():
        sd = torch.load(str(p / "adapter_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"LoRA folder {p} has no adapter_model.safetensors")
    sd = {k.removeprefix(PEFT_PREFIX): v for k, v in sd.items()}
    settings = json.loads((p / "parallelmind.json").read_text()) if (p / "parallelmind.json").is_file() else None
    return LoraFile(config, sd, settings, str(p), "peft-folder")


def _same_targets(model: nn.Module, config) -> bool:
    from peft.tuners.tuners_utils import check_target_module_exists

    names = {n for n, _ in unwrap(model).named_modules() if n and check_target_module_exists(config, n)}
    return names == set(adapted_modules(model))


def load_lora(model: nn.Module, path: str | Path | LoraFile, rank: int | None = None) -> list[str]:
    """Load an adapter onto `model` (in place); returns the adapted module names.

    An unpatched Hugging Face model is first patched with the adapter's saved 2D-RoPE settings; a model
    patched differently is refused. If the model already has LoRA layers (seed usage: `apply_lora(model,
    rank=8)` then `load_lora`), they must have the file's rank and targets; they are then replaced by
    the file's adapter (its alpha, dropout, ... as saved). `rank`: checked against the file.
    """
    f = path if isinstance(path, LoraFile) else read_lora(path)
    if rank is not None and f.ranks != {int(rank)}:
        raise ValueError(f"{f.path} has LoRA rank {sorted(f.ranks)}, but --lora_rank {rank} was given")
    if f.settings:
        if f.settings.get("patch_rope") and not is_patched(model):
            apply_settings(model, f.settings)
        check_model_matches(model, f.settings, f.path)
    for name in (k.rsplit(".lora_", 1)[0] for k in f.state_dict):
        try:
            unwrap(model).get_submodule(name)
        except AttributeError:
            raise ValueError(f"{f.path} adapts module '{name}', which this model does not have (a different base "
                             "model?)") from None
    if has_lora(model):
        have = lora_config(model)
        if int(have.r) != f.rank or dict(have.rank_pattern or {}) != dict(f.config.rank_pattern or {}) \
                or not _same_targets(model, f.config):
            raise ValueError(f"{f.path} holds a rank-{sorted(f.ranks)} adapter on {len(set(_names(f)))} modules, "
                             f"but the model already has rank-{have.r} LoRA layers on "
                             f"{len(adapted_modules(model))} modules; call apply_lora with the file's rank and "
                             "targets, or load_lora without apply_lora")
        remove_lora(model)
    names = _inject(model, f.config)
    set_lora_state_dict(model, f.state_dict, source=f.path)
    return names


def _names(f: LoraFile) -> list[str]:
    return [k.rsplit(".lora_", 1)[0] for k in f.state_dict]
