"""Mixture-of-experts feed-forward for MiniMind (DeepSeek style: routed top-k experts + shared experts).

One dispatch path for training and inference (tokens sorted by expert, `index_add_` back), in the
activations' own dtype (the earlier code wrote into a hard-coded float16 buffer). The load-balancing
aux loss ignores pad tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """SwiGLU MLP: down(act(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0, act: str = "silu"):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        if act not in ("silu", "gelu"):
            raise ValueError(f"hidden_act must be 'silu' or 'gelu', got {act!r}")
        self.act = F.silu if act == "silu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x)))


class MoEGate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_experts = config.n_routed_experts
        self.alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.norm_topk_prob = config.norm_topk_prob
        if config.scoring_func != "softmax":
            raise ValueError(f"scoring_func {config.scoring_func!r} is not supported (only 'softmax')")
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None, rows: torch.Tensor | None = None):
        """x `[B, T, H]` -> (expert ids `[B*T, k]`, weights `[B*T, k]`, aux loss scalar).

        The load statistics are per sequence: `rows` (`[B*T]`, a row id per token) overrides the batch
        rows, e.g. for packed tokens; `token_mask` (`[B, T]`) leaves pads out.
        """
        B, T, H = x.shape
        scores = F.linear(x.reshape(-1, H), self.weight).float().softmax(dim=-1)
        weights, experts = torch.topk(scores, self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        aux = scores.new_zeros(())
        if self.training and self.alpha > 0:
            m = token_mask.reshape(-1).float() if token_mask is not None else scores.new_ones(B * T)
            if rows is None:
                rows = torch.arange(B, device=x.device).repeat_interleave(T)
            R = int(rows.max()) + 1
            n_tok = torch.zeros(R, device=x.device).index_add_(0, rows, m).clamp_min(1.0)  # [R]
            if self.seq_aux:
                load = torch.zeros(R * self.n_experts, device=x.device)
                idx = (rows[:, None] * self.n_experts + experts).reshape(-1)
                load.index_add_(0, idx, m.repeat_interleave(self.top_k)).view(R, self.n_experts)
                load = load.view(R, self.n_experts) / (n_tok[:, None] * self.top_k / self.n_experts)
                mean_score = torch.zeros(R, self.n_experts, device=x.device).index_add_(
                    0, rows, scores * m[:, None]) / n_tok[:, None]
                aux = (load * mean_score).sum(dim=1).mean() * self.alpha
            else:
                one_hot = F.one_hot(experts, self.n_experts).float().sum(dim=1) * m[:, None]
                f = one_hot.sum(0) / (m.sum().clamp_min(1.0) * self.top_k) * self.n_experts
                p = (scores * m[:, None]).sum(0) / m.sum().clamp_min(1.0)
                aux = (p * f).sum() * self.alpha
        return experts, weights.to(x.dtype), aux


class MOEFeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        inter = config.intermediate_size
        self.experts = nn.ModuleList(
            [FeedForward(config.hidden_size, inter, config.dropout, config.hidden_act)
             for _ in range(config.n_routed_experts)])
        self.gate = MoEGate(config)
        self.shared_experts = nn.ModuleList(
            [FeedForward(config.hidden_size, inter, config.dropout, config.hidden_act)
             for _ in range(config.n_shared_experts)])

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None, rows: torch.Tensor | None = None):
        """x `[B, T, H]` -> (y `[B, T, H]`, aux loss)."""
        B, T, H = x.shape
        experts, weights, aux = self.gate(x, token_mask, rows)
        flat = x.reshape(-1, H)
        k = experts.shape[1]
        order = torch.argsort(experts.reshape(-1))
        counts = torch.bincount(experts.reshape(-1), minlength=len(self.experts)).tolist()
        token_of = order // k
        y = torch.zeros_like(flat)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            idx = order[start:start + n]
            tok = token_of[start:start + n]
            out = self.experts[e](flat[tok]) * weights.reshape(-1)[idx, None]
            y.index_add_(0, tok, out)
            start += n
        for shared in self.shared_experts:
            y = y + shared(flat)
        return y.view(B, T, H), aux
