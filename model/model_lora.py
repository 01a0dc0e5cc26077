"""Minimal LoRA for MiniMind and Hugging Face models (the earlier implementation's format, made safe).

`apply_lora(model, rank)` wraps chosen `nn.Linear` layers (by default every square one, as the earlier
code did: q_proj/o_proj under GQA) so that y = W x + (alpha / rank) * B(A(x)), with B = 0 at start.
`save_lora` writes only the adapter weights (`<module>.lora.A.weight`, `<module>.lora.B.weight`) as
safetensors or a weights-only .pth, plus the rank and alpha; `load_lora` re-attaches adapters to exactly
the modules named in the file, with the rank read from the tensors.

Hugging Face PEFT adapter folders (adapter_config.json + adapter_model.safetensors) are loaded through
PEFT by model/loading.py instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class LoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        self.rank = rank
        self.scaling = (alpha if alpha is not None else rank) / rank  # alpha = rank: scaling 1 (the earlier code)
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.A.weight, std=0.02)
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x)) * self.scaling


class LoRALinear(nn.Module):
    """A frozen base Linear plus a LoRA branch; state dict keys: base.weight, lora.A.weight, lora.B.weight."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.lora = LoRA(base.in_features, base.out_features, rank, alpha).to(base.weight.device,
                                                                              base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora(x)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def lora_targets(model: nn.Module, targets: list[str] | None = None) -> list[str]:
    """Names of the Linear layers to adapt: those whose name ends with one of `targets`, or every square one."""
    out = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear) or "lora" in name.split("."):
            continue
        if targets is None:
            if m.in_features == m.out_features and not name.endswith("lm_head"):
                out.append(name)
        elif any(name == t or name.endswith("." + t) for t in targets):
            out.append(name)
    return out


def apply_lora(model: nn.Module, rank: int = 8, *, alpha: float | None = None,
               targets: list[str] | None = None, ranks: dict[str, int] | None = None) -> list[str]:
    """Attach LoRA adapters; returns the adapted module names. Base weights keep their names under `.base`."""
    names = list(ranks) if ranks else lora_targets(model, targets)
    if not names:
        raise ValueError(f"no Linear layer matched the LoRA targets {targets or 'square layers'}")
    for name in names:
        base = model.get_submodule(name)
        if isinstance(base, LoRALinear):
            continue
        _set_module(model, name, LoRALinear(base, (ranks or {}).get(name, rank), alpha))
    return names


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".lora." in k}


def save_lora(model: nn.Module, path: str | Path) -> None:
    from model.checkpoint import atomic_torch_save

    sd = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    any_lora = next(m for m in model.modules() if isinstance(m, LoRA))
    meta = {"rank": str(any_lora.rank), "alpha": str(any_lora.scaling * any_lora.rank)}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(sd, str(tmp), metadata=meta)
        tmp.replace(path)
    else:
        atomic_torch_save({**sd, "__lora_meta__": meta}, path)


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"LoRA file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    raw = torch.load(str(p), map_location="cpu", weights_only=True)
    meta = raw.pop("__lora_meta__", {}) if isinstance(raw, dict) else {}
    return raw, meta


def load_lora(model: nn.Module, path: str | Path, rank: int | None = None) -> list[str]:
    """Attach adapters to the modules named in `path` and load them (strictly). Returns module names."""
    sd, meta = read_lora_file(path)
    modules: dict[str, int] = {}
    for k, v in sd.items():
        if not k.endswith(".lora.A.weight"):
            continue
        modules[k[: -len(".lora.A.weight")]] = v.shape[0]
    if not modules:
        raise ValueError(f"{path} holds no LoRA weights (expected keys '<module>.lora.A.weight')")
    found = set(modules.values())
    if rank is not None and found != {rank}:
        raise ValueError(f"{path} has LoRA rank {sorted(found)}, but --lora_rank {rank} was given")
    alpha = float(meta["alpha"]) if "alpha" in meta else None
    for name in modules:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path} adapts module '{name}', which this model does not have (a different base "
                             "model?)") from None
    apply_lora(model, ranks=modules, alpha=alpha)
    own = {k.replace(".base.", "."): k for k in model.state_dict() if ".lora." in k}
    missing = [k for k in own if k not in sd]
    if missing:
        raise ValueError(f"{path} lacks LoRA weights {missing[:4]}")
    with torch.no_grad():
        for short, full in own.items():
            model.get_parameter(full).copy_(sd[short])
    return list(modules)
