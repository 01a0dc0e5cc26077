"""An exported ParallelMind MiniMind model for plain transformers (remote code: torch + transformers only).

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(folder)
    out = model.generate(**tok("Hello", return_tensors="pt"), max_new_tokens=32)

The layers compute what ParallelMind's MiniMind computes (RMSNorm, SwiGLU, GQA, optional MoE with
shared experts, tied embeddings) with its 2D rotary positions. `position_ids` may be `[B, T]` (plain
time, branch coordinate 0: what `generate` passes), `[B, T, 2]` (branch coordinate, time) or
`[B, T, 3]` (plus the flat index, read only by the "reference" scheme); `attention_mask` may be a
`[B, L]` padding mask or a 4-D `[B, 1, T, L]` mask (bool True = visible, or additive float), so
several branches of one sample can be decoded together with the columnar or isolated mask.
`labels` follow the transformers convention (shifted inside), so Trainer and TRL fine-tune it as any
causal LM; there is no dropout and no MoE load-balancing loss (ParallelMind's trainers have both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_parallelmind import ParallelMindConfig


def select_pairs(num_pairs: int, ratio: float, scheme: str) -> list[int]:
    """0-based rotary pairs that carry the branch coordinate (pair 0 = highest frequency)."""
    if ratio == 0:
        return []
    k = max(1, min(num_pairs, round(num_pairs * float(ratio))))
    if scheme == "reference":
        return list(range(num_pairs - k, num_pairs))
    if k == 1:
        return [0]
    return [round(i * (num_pairs - 1) / (k - 1)) for i in range(k)]


def rope_coefficients(config: ParallelMindConfig, device=None) -> torch.Tensor:
    """`[3, F]` multipliers of (branch coordinate, time, flat index): angle = b*c[0] + t*c[1] + n*c[2]."""
    hd = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    f = inv.numel()
    ratio = config.rope_2d_ratio if config.pe == "rope" else 0.0
    pairs = sorted(select_pairs(f, ratio, config.rope_2d_scheme))
    zero = torch.zeros_like(inv)
    sel = torch.tensor([i in set(pairs) for i in range(f)], dtype=torch.bool)
    if config.rope_2d_scheme == "additive":
        c = torch.stack([torch.where(sel, inv, zero), inv, zero])
    else:
        local = {p: k for k, p in enumerate(pairs)}
        branch = torch.tensor([i in local and local[i] % 2 == 0 for i in range(f)])
        time = torch.tensor([i in local and local[i] % 2 == 1 for i in range(f)])
        c = torch.stack([torch.where(branch, inv, zero), torch.where(time, inv, zero), torch.where(sel, zero, inv)])
    return c.to(device)


def positions_3d(position_ids: torch.Tensor, past: int) -> torch.Tensor:
    """`[B, T]`, `[B, T, 2]` or `[B, T, 3]` -> `[B, T, 3]` (branch coordinate, time, flat index)."""
    if position_ids.dim() == 2:
        return torch.stack([torch.zeros_like(position_ids), position_ids, position_ids], dim=-1)
    if position_ids.dim() == 3 and position_ids.shape[-1] == 3:
        return position_ids
    if position_ids.dim() == 3 and position_ids.shape[-1] == 2:
        B, T, _ = position_ids.shape
        flat = torch.arange(past, past + T, device=position_ids.device, dtype=position_ids.dtype).expand(B, T)
        return torch.cat([position_ids, flat[..., None]], dim=-1)
    raise ValueError(f"position_ids must be [B, T], [B, T, 2] or [B, T, 3]; got {tuple(position_ids.shape)}")


def rotary(pos3: torch.Tensor, coefficients: torch.Tensor, dtype: torch.dtype):
    """`[B, T, 3]` positions -> (cos, sin), each `[B, T, head_dim]` (the rotate-half layout)."""
    p = pos3.float()
    c = coefficients
    emb = p[..., 0:1] * c[0] + p[..., 1:2] * c[1] + p[..., 2:3] * c[2]
    emb = torch.cat((emb, emb), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


class FeedForward(nn.Module):
    def __init__(self, config: ParallelMindConfig):
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.act = F.silu if config.hidden_act == "silu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    def __init__(self, config: ParallelMindConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = config.num_experts_per_tok, config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))

    def forward(self, x: torch.Tensor):
        scores = F.linear(x, self.weight).float().softmax(dim=-1)
        weights, experts = torch.topk(scores, self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return experts, weights.to(x.dtype)


class MoEFeedForward(nn.Module):
    """Top-k routed experts plus always-on shared experts."""

    def __init__(self, config: ParallelMindConfig):
        super().__init__()
        self.experts = nn.ModuleList([FeedForward(config) for _ in range(config.n_routed_experts)])
        self.gate = MoEGate(config)
        self.shared_experts = nn.ModuleList([FeedForward(config) for _ in range(config.n_shared_experts)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        experts, weights = self.gate(flat)
        k = experts.shape[1]
        order = torch.argsort(experts.reshape(-1))
        counts = torch.bincount(experts.reshape(-1), minlength=len(self.experts)).tolist()
        y, start = torch.zeros_like(flat), 0
        for e, n in enumerate(counts):
            if n:
                idx = order[start:start + n]
                tok = idx // k
                y.index_add_(0, tok, self.experts[e](flat[tok]) * weights.reshape(-1)[idx, None])
                start += n
        for shared in self.shared_experts:
            y = y + shared(flat)
        return y.view(B, T, H)


class Attention(nn.Module):
    def __init__(self, config: ParallelMindConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)

    def forward(self, x, cos, sin, mask, is_causal, cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        c, s = cos[:, None], sin[:, None]
        q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             enable_gqa=self.n_heads != self.n_kv)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, config: ParallelMindConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, x, cos, sin, mask, is_causal, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def fourier_table(dim: int, max_positions: int, theta: float) -> torch.Tensor:
    """`pe="fpe"`: the sinusoidal embedding of the branch index, `[max_positions, dim]`."""
    pos = torch.arange(max_positions, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(theta) / dim))
    table = torch.zeros(max_positions, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


class FourierBranchEmbedding(nn.Module):
    def __init__(self, config: ParallelMindConfig):
        super().__init__()
        self.config = config
        if config.fpe_learnable:
            self.table = nn.Parameter(fourier_table(config.hidden_size, config.fpe_max_positions, config.fpe_theta))

    def forward(self, branch_index: torch.Tensor) -> torch.Tensor:
        c = self.config
        table = self.table if c.fpe_learnable else \
            fourier_table(c.hidden_size, c.fpe_max_positions, c.fpe_theta).to(branch_index.device)
        return table[branch_index.clamp_min(0)]


def build_mask(attention_mask, T: int, past: int, device, dtype):
    """-> (mask for SDPA or None, is_causal), as ParallelMind's MiniMind builds it."""
    if attention_mask is None:
        if past == 0:
            return None, T > 1
        if T == 1:
            return None, False
        q = torch.arange(past, past + T, device=device)
        return (torch.arange(past + T, device=device)[None, :] <= q[:, None])[None, None], False
    if attention_mask.dim() == 2:
        L = past + T
        if attention_mask.shape[-1] != L:
            raise ValueError(f"2-D attention_mask has length {attention_mask.shape[-1]}, expected {L}")
        key_ok = attention_mask.bool()
        q = torch.arange(past, past + T, device=device)
        k = torch.arange(L, device=device)
        m = (k[None, :] <= q[:, None])[None] & key_ok[:, None, :]
        m |= (k[None, :] == q[:, None])[None]  # pad rows keep their diagonal: never an empty row
        return m[:, None], False
    if attention_mask.dim() == 4:
        if attention_mask.dtype != torch.bool and attention_mask.dtype != dtype:
            attention_mask = attention_mask.to(dtype)
        return attention_mask, False
    raise ValueError(f"attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")


class ParallelMindPreTrainedModel(PreTrainedModel):
    config_class = ParallelMindConfig
    config: ParallelMindConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MoEGate):
            nn.init.kaiming_uniform_(module.weight, a=5 ** 0.5)


class ParallelMindModel(ParallelMindPreTrainedModel):
    def __init__(self, config: ParallelMindConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.fpe = FourierBranchEmbedding(config) if config.pe == "fpe" else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, inputs_embeds=None, **kwargs):
        """-> (hidden `[B, T, H]`, cache or None)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = h.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise TypeError("past_key_values must be a transformers Cache")
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=h.device).expand(B, T)
        pos3 = positions_3d(position_ids, past)
        if self.fpe is not None:
            branch = torch.div(pos3[..., 0], self.config.branch_stride, rounding_mode="floor")
            h = h + self.fpe(branch).to(h.dtype)
        cos, sin = rotary(pos3, rope_coefficients(self.config, h.device), h.dtype)
        mask, is_causal = build_mask(attention_mask, T, past, h.device, h.dtype)
        for layer in self.layers:
            h = layer(h, cos, sin, mask, is_causal, past_key_values)
        return self.norm(h), past_key_values


class ParallelMindForCausalLM(ParallelMindPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: ParallelMindConfig):
        super().__init__(config)
        self.model = ParallelMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new):
        self.lm_head = new

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, labels=None, logits_to_keep: int = 0, inputs_embeds=None,
                **kwargs) -> CausalLMOutputWithPast:
        """labels `[B, T]` follow the transformers convention: `labels[b, i]` is the token at i (the model
        shifts them: logits at i predict labels at i + 1), -100 = ignored; so Trainer / TRL work as usual.
        (ParallelMind's own MiniMind takes labels already aligned; this file is for plain transformers.)"""
        h, cache = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache, inputs_embeds=inputs_embeds)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need the logits of every position: do not pass logits_to_keep with labels")
            shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      past_key_values=cache if use_cache or past_key_values is not None else None)
