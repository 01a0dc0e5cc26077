"""Configuration of an exported ParallelMind MiniMind model (remote code: torch + transformers only).

Loaded by `AutoConfig.from_pretrained(folder, trust_remote_code=True)` through config.json's `auto_map`.
The fields are those of ParallelMind's `MiniMindConfig` (model_type "minimind"), so the same config.json
also loads natively in ParallelMind, and the 2D-RoPE settings (pe, rope_2d_scheme, rope_2d_ratio,
branch_stride, mask_mode) travel with the weights.
"""

from __future__ import annotations

from transformers import PretrainedConfig

SCHEMES = ("additive", "reference")


class ParallelMindConfig(PretrainedConfig):
    model_type = "minimind"

    def __init__(self, hidden_size: int = 512, num_hidden_layers: int = 8, num_attention_heads: int = 8,
                 num_key_value_heads: int = 2, intermediate_size: int | None = None, vocab_size: int = 6400,
                 rope_theta: float = 1e6, rms_norm_eps: float = 1e-5, hidden_act: str = "silu",
                 max_position_embeddings: int = 32768, bos_token_id: int = 1, eos_token_id: int = 2,
                 pad_token_id: int = 0, tie_word_embeddings: bool = True, pe: str = "rope",
                 rope_2d_ratio: float = 0.5, rope_2d_scheme: str = "additive", branch_stride: int = 128,
                 mask_mode: str = "columnar", fpe_theta: float = 1e4, fpe_max_positions: int = 512,
                 fpe_learnable: bool = False, use_moe: bool = False, num_experts_per_tok: int = 2,
                 n_routed_experts: int = 4, n_shared_experts: int = 1, norm_topk_prob: bool = True, **kwargs):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        if intermediate_size is None:
            intermediate_size = 64 * ((int(hidden_size * 8 / 3) + 63) // 64)
        self.intermediate_size = intermediate_size
        self.vocab_size = vocab_size
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.pe = pe
        self.rope_2d_ratio = float(rope_2d_ratio)
        self.rope_2d_scheme = rope_2d_scheme
        self.branch_stride = int(branch_stride)
        self.mask_mode = mask_mode
        self.fpe_theta = fpe_theta
        self.fpe_max_positions = fpe_max_positions
        self.fpe_learnable = fpe_learnable
        self.use_moe = bool(use_moe)
        self.num_experts_per_tok = num_experts_per_tok
        self.n_routed_experts = n_routed_experts
        self.n_shared_experts = n_shared_experts
        self.norm_topk_prob = norm_topk_prob
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        if rope_2d_scheme not in SCHEMES:
            raise ValueError(f"rope_2d_scheme must be one of {SCHEMES}, got {rope_2d_scheme!r}")
        if pe not in ("rope", "fpe"):
            raise ValueError(f"pe must be 'rope' or 'fpe', got {pe!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
