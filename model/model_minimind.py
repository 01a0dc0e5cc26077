"""MiniMind: a small Llama-style decoder (RMSNorm, SwiGLU, GQA, tied embeddings, optional MoE) with 2D RoPE.

`MiniMindForCausalLM` is a transformers `PreTrainedModel` + `GenerationMixin`, registered with
`AutoConfig` / `AutoModelForCausalLM` (model_type "minimind"), so `save_pretrained`,
`from_pretrained` and `generate()` work as for any Hugging Face model.

Forward contract (shared with patched Hugging Face models, see docs/DESIGN.md):
  input_ids `[B, T]`; attention_mask None (causal), `[B, L]` padding (1 = real; causal is added),
  a 4-D `[B, 1, T, L]` mask (bool True = attend, or additive float) or a FlexAttention BlockMask;
  position_ids `[B, T]`, `[B, T, 2]` (pos2d) or `[B, T, 3]`; past_key_values any transformers Cache;
  labels `[B, T]` ALREADY ALIGNED (labels[b, i] is the target of logits[b, i]; no shift), -100 = ignore.
The output's `loss` is the token mean cross-entropy; `aux_loss` (MoE load balancing) is separate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast

from model.moe import FeedForward, MOEFeedForward
from parallel.masks import MASK_MODES, query_chunk_plan
from parallel.names import PE_TYPES
from parallel.rope2d import ROPE_2D_SCHEMES, Interleaved2DRoPE, positions_3d


class MiniMindConfig(PretrainedConfig):
    model_type = "minimind"

    def __init__(self, hidden_size: int = 512, num_hidden_layers: int = 8, num_attention_heads: int = 8,
                 num_key_value_heads: int = 2, intermediate_size: int | None = None, vocab_size: int = 6400,
                 rope_theta: float = 1e6, rms_norm_eps: float = 1e-5, hidden_act: str = "silu",
                 dropout: float = 0.0, max_position_embeddings: int = 32768, bos_token_id: int = 1,
                 eos_token_id: int = 2, pad_token_id: int = 0, tie_word_embeddings: bool = True,
                 pe: str = "rope", rope_2d_ratio: float = 0.5, rope_2d_scheme: str = "additive",
                 branch_stride: int = 128, mask_mode: str = "columnar", fpe_theta: float = 1e4,
                 fpe_max_positions: int = 512, fpe_learnable: bool = False, use_moe: bool = False,
                 num_experts_per_tok: int = 2, n_routed_experts: int = 4, n_shared_experts: int = 1,
                 scoring_func: str = "softmax", aux_loss_alpha: float = 0.1, seq_aux: bool = True,
                 norm_topk_prob: bool = True, use_flex_attention: bool = False,
                 query_chunk_size: int = 256, pad_free: bool = True, **kwargs):
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
        self.dropout = dropout
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
        self.scoring_func = scoring_func
        self.aux_loss_alpha = aux_loss_alpha
        self.seq_aux = seq_aux
        self.norm_topk_prob = norm_topk_prob
        self.use_flex_attention = bool(use_flex_attention)
        self.query_chunk_size = int(query_chunk_size)
        self.pad_free = bool(pad_free)  # skip pads in training/evaluation forwards (same results, faster)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        def bad(msg):
            raise ValueError(f"MiniMindConfig: {msg}")
        if self.hidden_size % self.num_attention_heads:
            bad(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            bad(f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            bad("head_dim must be even for rotary embeddings")
        if self.pe not in PE_TYPES:
            bad(f"pe must be one of {PE_TYPES}, got {self.pe!r}")
        if self.rope_2d_scheme not in ROPE_2D_SCHEMES:
            bad(f"rope_2d_scheme must be one of {ROPE_2D_SCHEMES}, got {self.rope_2d_scheme!r}")
        if not 0.0 <= self.rope_2d_ratio <= 1.0:
            bad(f"rope_2d_ratio must be in [0, 1], got {self.rope_2d_ratio}")
        if self.mask_mode not in MASK_MODES:
            bad(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.branch_stride < 1:
            bad(f"branch_stride must be >= 1, got {self.branch_stride}")
        if self.use_moe and not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
            bad("num_experts_per_tok must be between 1 and n_routed_experts")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def rope_inv_freq(config: MiniMindConfig) -> torch.Tensor:
    hd = config.head_dim
    return 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q/k `[B, H, T, D]`, cos/sin `[B, T, D]`."""
    cos, sin = cos[:, None], sin[:, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class FourierBranchEmbedding(nn.Module):
    """`pe="fpe"`: a sinusoidal embedding of the branch index added to the token embeddings."""

    def __init__(self, dim: int, max_positions: int, theta: float, learnable: bool):
        super().__init__()
        self.max_positions, self.dim, self.theta = max_positions, dim, theta
        table = self.sinusoid_table()
        if learnable:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table, persistent=False)

    def sinusoid_table(self) -> torch.Tensor:
        pos = torch.arange(self.max_positions, dtype=torch.float)[:, None]
        div = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float) * (-math.log(self.theta) / self.dim))
        table = torch.zeros(self.max_positions, self.dim)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div[: self.dim // 2])
        return table

    def forward(self, branch_index: torch.Tensor) -> torch.Tensor:
        if int(branch_index.max()) >= self.max_positions:
            raise ValueError(f"branch index {int(branch_index.max())} exceeds fpe_max_positions "
                             f"{self.max_positions}; raise fpe_max_positions or use fewer branches")
        return self.table[branch_index.clamp_min(0)]


@dataclass
class PackedRows:
    """The real tokens of B right-padded rows packed into one row of N tokens (see MiniMindModel.forward).

    segments: per original row, (offset in the packed row, length, its `[1, 1, n, n]` mask, chunk plan).
    """

    segments: list[tuple[int, int, torch.Tensor, list | None]]
    valid: torch.Tensor  # [B, T] bool: which positions of the padded batch are real
    rows: torch.Tensor  # [N] original row of each packed token (MoE load statistics are per row)


def _sdpa(q, k, v, mask, plan, p, gqa, is_causal=False):
    if plan:
        return torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, :ke], v[:, :, :ke],
                                                         attn_mask=mask[..., s:e, :ke], dropout_p=p, enable_gqa=gqa)
                          for s, e, ke in plan], dim=2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal, enable_gqa=gqa)


class Attention(nn.Module):
    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, past_key_values, chunk_plan, is_causal):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        p = self.dropout if self.training else 0.0
        gqa = self.n_heads != self.n_kv
        if isinstance(mask, PackedRows):  # one attention per original row, over its real tokens only
            out = torch.cat([_sdpa(q[:, :, o:o + n], k[:, :, o:o + n], v[:, :, o:o + n], m, pl, p, gqa)
                             for o, n, m, pl in mask.segments], dim=2)
        elif mask is not None and not isinstance(mask, torch.Tensor):  # FlexAttention BlockMask
            from torch.nn.attention.flex_attention import flex_attention
            # under autocast, rotary leaves q/k in float32 while v is bf16; flex does not re-cast like SDPA
            q, k = q.to(v.dtype), k.to(v.dtype)
            out = _compiled_flex()(q, k, v, block_mask=mask, enable_gqa=gqa) if q.is_cuda else \
                flex_attention(q, k, v, block_mask=mask, enable_gqa=gqa)
        else:
            out = _sdpa(q, k, v, mask, chunk_plan, p, gqa, is_causal)
        out = out.transpose(1, 2).reshape(B, T, -1)
        return self.resid_dropout(self.o_proj(out))


_FLEX = None


def _compiled_flex():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


class MiniMindBlock(GradientCheckpointingLayer):
    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.use_moe = config.use_moe
        self.mlp = MOEFeedForward(config) if config.use_moe else \
            FeedForward(config.hidden_size, config.intermediate_size, config.dropout, config.hidden_act)

    def forward(self, x, cos, sin, mask, chunk_plan, is_causal, token_mask, past_key_values=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key_values, chunk_plan, is_causal)
        h = self.post_attention_layernorm(x)
        if self.use_moe:
            y, aux = self.mlp(h, token_mask, mask.rows if isinstance(mask, PackedRows) else None)
        else:
            y, aux = self.mlp(h), x.new_zeros(())
        return x + y, aux


class MiniMindPreTrainedModel(PreTrainedModel):
    config_class = MiniMindConfig
    config: MiniMindConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiniMindBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True

    def _init_weights(self, module):
        std = 0.02
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, Interleaved2DRoPE):  # non-persistent: transformers creates it empty on load
            module.reset_buffers(rope_inv_freq(self.config))
        elif isinstance(module, FourierBranchEmbedding):
            with torch.no_grad():
                module.table.copy_(module.sinusoid_table())


class MiniMindModel(MiniMindPreTrainedModel):
    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([MiniMindBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        inv_freq = rope_inv_freq(config)
        ratio = config.rope_2d_ratio if config.pe == "rope" else 0.0  # fpe: 1D RoPE on time
        self.rotary_emb = Interleaved2DRoPE(inv_freq, ratio=ratio, scheme=config.rope_2d_scheme)
        self.fpe = FourierBranchEmbedding(config.hidden_size, config.fpe_max_positions, config.fpe_theta,
                                          config.fpe_learnable) if config.pe == "fpe" else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, inputs_embeds=None, token_mask=None, **kwargs):
        """-> (hidden, cache or None, aux loss, packed): hidden is `[B, T, H]`, or `[1, N, H]` when packed.

        token_mask `[B, T]` (1 = real token) feeds the MoE load statistics (with a 2-D attention_mask it is
        derived from it). Given with a dense 4-D mask and no cache (training, evaluation), it also lets
        the model skip the pads: the N real tokens of the right-padded rows are packed into one row for
        every linear layer, and attention runs per original row over its real tokens only. `packed` is
        then the `[B, T]` bool map of those positions (None otherwise).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = h.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise TypeError("past_key_values must be a transformers Cache (e.g. DynamicCache or GrowingCache)")
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=h.device).expand(B, T)
        if position_ids.shape[0] not in (1, B) or position_ids.shape[1] != T:
            raise ValueError(f"position_ids shape {tuple(position_ids.shape)} does not match input [B={B}, T={T}]")
        pos3 = positions_3d(position_ids, past)
        if self.fpe is not None:
            h = h + self.fpe(torch.div(pos3[..., 0], self.config.branch_stride, rounding_mode="floor")).to(h.dtype)
        cos, sin = self.rotary_emb(h, pos3)
        mask, is_causal, derived = self._prepare_mask(attention_mask, B, T, past, h)
        token_mask = token_mask if token_mask is not None else derived
        chunk = self.config.query_chunk_size
        plan = None
        packed = self._pack(mask, token_mask, past_key_values) \
            if token_mask is not None and self.config.pad_free else None
        if packed is not None:
            h, cos, sin = h[packed.valid][None], cos.expand(B, -1, -1)[packed.valid][None], \
                sin.expand(B, -1, -1)[packed.valid][None]
            mask, token_mask = packed, None
        elif isinstance(mask, torch.Tensor) and T > chunk > 0:
            plan = query_chunk_plan(mask, chunk)  # once per forward, shared by every layer
        h = self.dropout(h)
        aux = h.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            h, a = layer(h, cos, sin, mask, plan, is_causal, token_mask, past_key_values=past_key_values)
            aux = aux + a
        return self.norm(h), past_key_values, aux, (packed.valid if packed is not None else None)

    def _pack(self, mask, token_mask, past_key_values) -> PackedRows | None:
        """Plan the pad-free path: right-padded rows, a dense mask, no cache; else None (padded path)."""
        if past_key_values is not None or not isinstance(mask, torch.Tensor) or mask.shape[-1] != mask.shape[-2]:
            return None
        valid = token_mask.bool()
        if bool(valid.all()):
            return None  # no pads: packing would only add gathers
        lengths = valid.sum(dim=1)
        T = valid.shape[1]
        if bool((valid & (torch.arange(T, device=valid.device)[None, :] >= lengths[:, None])).any()):
            return None  # not right-padded: keep the general path
        segments, off = [], 0
        chunk = self.config.query_chunk_size
        for b, n in enumerate(lengths.tolist()):
            if n == 0:
                continue
            m = mask[b:b + 1, :, :n, :n]
            segments.append((off, n, m, query_chunk_plan(m, chunk) if n > chunk > 0 else None))
            off += n
        rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
        return PackedRows(segments, valid, rows)

    def _prepare_mask(self, attention_mask, B, T, past, h):
        """-> (mask for attention or None, is_causal flag, [B, T] real-token mask for MoE statistics)."""
        if attention_mask is None:
            if past == 0:
                return None, T > 1, None
            if T == 1:
                return None, False, None
            q = torch.arange(past, past + T, device=h.device)
            return (torch.arange(past + T, device=h.device)[None, :] <= q[:, None])[None, None], False, None
        if not isinstance(attention_mask, torch.Tensor):  # BlockMask
            return attention_mask, False, None
        if attention_mask.dim() == 2:
            L = past + T
            if attention_mask.shape[-1] != L:
                raise ValueError(f"2-D attention_mask has length {attention_mask.shape[-1]}, expected {L} "
                                 "(cached tokens + new tokens)")
            key_ok = attention_mask.bool()
            q = torch.arange(past, past + T, device=h.device)
            k = torch.arange(L, device=h.device)
            m = (k[None, :] <= q[:, None])[None] & key_ok[:, None, :]
            m |= (k[None, :] == q[:, None])[None]  # pad rows keep their diagonal: never an empty row
            return m[:, None], False, key_ok[:, past:]
        if attention_mask.dim() == 4:
            if attention_mask.shape[-2] != T or attention_mask.shape[-1] != past + T:
                raise ValueError(f"4-D attention_mask has shape {tuple(attention_mask.shape)}, expected "
                                 f"[B, 1, {T}, {past + T}]")
            if attention_mask.dtype != torch.bool and attention_mask.dtype != h.dtype:
                attention_mask = attention_mask.to(h.dtype)
            return attention_mask, False, None
        raise ValueError(f"attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")


class MiniMindForCausalLM(MiniMindPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.model = MiniMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new):
        self.lm_head = new

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, labels=None, logits_to_keep: int | torch.Tensor = 0, inputs_embeds=None,
                token_mask=None, compute_logits: bool = True, loss_reduction: str = "mean",
                **kwargs) -> MoeCausalLMOutputWithPast:
        """compute_logits=False with labels returns only the loss, computed at the target positions alone
        (no `[B, T, V]` logits): what training and evaluation need. loss_reduction "sum" returns the summed
        cross-entropy (callers weight by tokens across batches and ranks). `logits_to_keep` may also be a
        bool `[B, T]` map of real-token positions: the logits are then `[N, V]` at those N positions, in
        row-major order (what preference, distillation and RL losses read, without `[B, T, V]`)."""
        h, cache, aux, packed = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                           position_ids=position_ids, past_key_values=past_key_values,
                                           use_cache=use_cache, inputs_embeds=inputs_embeds, token_mask=token_mask)
        loss = logits = None
        keep = logits_to_keep if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool \
            and logits_to_keep.dim() == 2 else None
        if keep is not None:
            if packed is not None and bool((keep & ~packed).any()):
                raise ValueError("logits_to_keep selects padding positions (token_mask is False there)")
            logits = self.lm_head(h[0][keep[packed]] if packed is not None else h[keep])
        elif compute_logits or labels is None:
            h_out = h
            if packed is not None:  # back to the padded layout, zeros on pads
                h_out = h.new_zeros((*packed.shape, h.shape[-1]))
                h_out[packed] = h[0]
            if isinstance(logits_to_keep, int):
                h_out = h_out[:, -logits_to_keep:] if logits_to_keep else h_out
            else:
                h_out = h_out[:, logits_to_keep]
            logits = self.lm_head(h_out)
        if labels is not None:
            if loss_reduction not in ("mean", "sum"):
                raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
            if labels.shape != (input_ids if input_ids is not None else inputs_embeds).shape[:2]:
                raise ValueError(f"labels shape {tuple(labels.shape)} does not match the input")
            if logits is not None and logits.dim() == 3 and logits.shape[:2] == labels.shape:  # the head's output
                sel = labels != -100
                target_logits, targets = logits[sel], labels[sel]
            else:  # the output head on the target positions only
                flat_labels = labels[packed] if packed is not None else labels.reshape(-1)
                sel = flat_labels != -100
                target_logits, targets = self.lm_head(h.reshape(-1, h.shape[-1])[sel]), flat_labels[sel]
            ce = F.cross_entropy(target_logits.float(), targets, reduction="sum")
            loss = ce if loss_reduction == "sum" else ce / sel.sum().clamp_min(1)
        return MoeCausalLMOutputWithPast(loss=loss, aux_loss=aux, logits=logits,
                                         past_key_values=cache if use_cache or past_key_values is not None else None)


AutoConfig.register("minimind", MiniMindConfig)
AutoModelForCausalLM.register(MiniMindConfig, MiniMindForCausalLM)
