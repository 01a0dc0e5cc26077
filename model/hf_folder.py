"""Write a standard Hugging Face model folder from a (possibly gathered) state dict.

    save_hf_folder(model, "out/full/full_hf_full_final", state_dict=full_sd, tokenizer=tok)
    AutoModelForCausalLM.from_pretrained("out/full/full_hf_full_final")      # the plain model
    load_parallel_model(model_path="out/full/full_hf_full_final")            # re-patched with 2D RoPE

The folder holds `config.json` (with `parallelmind`, the 2D-RoPE settings of a patched model),
`generation_config.json`, the weights as safetensors (`model.safetensors`, or shards plus
`model.safetensors.index.json` above `max_shard_size`)
and the tokenizer files. Tied weights (an LM head sharing the embedding) are stored once, as
`save_pretrained` does. It works from a state dict alone, so a model sharded with FSDP (whose own
class and `state_dict()` are the shard wrapper's) is written whole from the state dict gathered on
rank 0; the folder is filled under a temporary name and swapped in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from model.checkpoint import write_folder_atomic
from model.rope_settings import unwrap


def _architecture(model: nn.Module) -> str:
    """The model's own class name (an FSDP-sharded model is an instance of a generated subclass)."""
    for cls in type(model).__mro__:
        if not cls.__name__.startswith("FSDP"):
            return cls.__name__
    return type(model).__name__


def tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys that are tied to another one (saved once, under the other name)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(type(model), "_tied_weights_keys", None) or {}
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if not getattr(text_cfg, "tie_word_embeddings", False):
        return set()
    return set(tied)


def _save_weights(sd: dict[str, torch.Tensor], folder: Path, max_shard_size: str | int) -> None:
    """`model.safetensors`, or shards and their index (the layout `from_pretrained` reads)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(sd, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: sd[n] for n in names}, str(folder / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def save_hf_folder(model: nn.Module, folder: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None,
                   tokenizer=None, max_shard_size: str | int = "5GB") -> Path:
    """Write `folder` (see the module docstring); returns it."""
    base = unwrap(model)
    sd = base.state_dict() if state_dict is None else state_dict
    drop = tied_keys(base)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items() if k not in drop}
    config = copy.deepcopy(base.config)
    config.architectures = [_architecture(base)]
    generation = getattr(base, "generation_config", None)

    def write(d: Path) -> None:
        config.save_pretrained(d)
        if generation is not None:
            generation.save_pretrained(d)
        _save_weights(sd, d, max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(d)

    folder = Path(folder)
    write_folder_atomic(folder, write)
    return folder
