"""The ParallelMind core, in one import: columnar layouts, 2D RoPE and the attention masks.

Pure torch. The pieces live in small modules and are re-exported here; the seed's API (the original
ParallelMind `parallel/columnar.py`) is exported under the seed's names and signatures:

* `parallel.layout`: `BatchLayout`, `ALIGNMENTS`; `build_flat_linear_layout` (time-major
  interleaving of a main and branches) in the seed's signature, from `parallel.seed_compat`.
* `parallel.rope2d`: `select_pairs`, `pair_coefficients`, `positions_3d` and the patching helpers
  (two schemes: `additive`, the default, and `reference`); `Interleaved2DRoPE`,
  `patch_model_with_interleaved_2d_rope`, `auto_pair_indices` (1-based pairs) and `set_rope_pos2d`
  come from `parallel.seed_compat`.
* `parallel.masks`: the visibility predicate `visible` and its builders (`build_attention_mask`,
  `build_incremental_mask`, `build_flex_block_mask`); the seed's `build_columnar_causal_mask`.

Typical use with any model that takes 2D positions (MiniMind, or a patched Hugging Face model):

    layout = build_flat_linear_layout(tokenizer, samples, device)
    mask = build_attention_mask(layout.time_ids, layout.branch_ids, "columnar")   # [B, 1, T, T] bool
    logits = model(layout.input_ids, attention_mask=mask, position_ids=layout.position_ids()).logits

See docs/POSITION_ENCODING.md for a worked example.
"""

from parallel.layout import ALIGNMENTS, BatchLayout, resolve_pad_id
from parallel.masks import (
    MASK_MODES,
    build_attention_mask,
    build_flex_block_mask,
    build_incremental_mask,
    check_mask_mode,
    query_chunk_plan,
    to_additive_mask,
    visible,
)
from parallel.rope2d import (
    ROPE_2D_SCHEMES,
    check_rope_scheme,
    find_rotary_holder,
    get_rotary,
    num_branch_pairs,
    pair_coefficients,
    positions_3d,
    select_pairs,
)
from parallel.seed_compat import (
    Interleaved2DRoPE,
    LayoutMetadata,
    auto_pair_indices,
    build_columnar_causal_mask,
    build_flat_linear_layout,
    patch_model_with_interleaved_2d_rope,
    set_rope_pos2d,
)

__all__ = [
    "ALIGNMENTS", "BatchLayout", "LayoutMetadata", "build_flat_linear_layout", "resolve_pad_id",
    "MASK_MODES", "build_attention_mask", "build_columnar_causal_mask", "build_flex_block_mask",
    "build_incremental_mask", "check_mask_mode", "query_chunk_plan", "to_additive_mask",
    "visible", "ROPE_2D_SCHEMES", "Interleaved2DRoPE", "auto_pair_indices", "check_rope_scheme",
    "find_rotary_holder", "get_rotary", "num_branch_pairs", "pair_coefficients",
    "patch_model_with_interleaved_2d_rope", "positions_3d", "select_pairs", "set_rope_pos2d",
]
