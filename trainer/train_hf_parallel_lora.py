"""LoRA fine-tuning of a Hugging Face model on parallel data (seed 002): the training entry point is not here yet.

Today this module only exposes `auto_pair_indices` (from `parallel.columnar`), so the seed's inference
snippet runs as written:

    from trainer.train_hf_parallel_lora import auto_pair_indices
    pair_indices = auto_pair_indices(model, ratio=0.5)        # 1-based rotary pairs for the model
    patch_model_with_interleaved_2d_rope(model, pair_indices)

Running it (`python trainer/train_hf_parallel_lora.py ...` or `python -m trainer.train_hf_parallel_lora`)
prints that the training entry point is not implemented yet and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel.columnar import auto_pair_indices

__all__ = ["auto_pair_indices", "main"]

NOT_YET = ("trainer/train_hf_parallel_lora.py: the training entry point is not implemented yet; this module "
           "only provides auto_pair_indices for inference code")


def main(argv: list[str] | None = None) -> int:
    print(NOT_YET, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
