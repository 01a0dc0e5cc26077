"""Decode windows: the inputs of a run of decode steps with the same structure, planned once.

Between two events (a branch finishes, a branch moves from its prompt to generated tokens, a branch
starts or stops feeding prompt tokens, a sample joins or leaves) every decode step feeds the same
branches in the same **lanes** (the token positions `0..K-1` of a row in one step): only the token
ids change, every fed branch's time advances by one and the flat index of a row by the number of
tokens it feeds. A `DecodeWindow` computes the lanes, the positions, the sampled rows and the mask
ONCE for such a run, and each step then costs a handful of tensor ops:

* ids: the last sampled token of every generating branch (and the next prompt token of the others)
  are written into a fixed `[B, K]` buffer (pads stay pads);
* positions: the `[B, K, 3]` positions of the first step plus the per-step increment;
* mask: one buffer `[B, 1, K, L0 + W * K]` holding the visibility of the cached tokens, of the tokens
  fed earlier in the window and of the new tokens themselves; each step writes two `[B, 1, K, K]` blocks.

The window is exact: it is used for W > 1 steps only after checking, with the visibility rule
itself, that what a step's queries may see of the older tokens and of the earlier steps' tokens is
the same at the first and at the last step of the window (visibility is monotone in the query time,
so it is then the same at every step in between). Otherwise the window lasts one step, which is the
plain per-step computation. Steps whose tokens finish a branch end the window early (`expire`).
"""

from __future__ import annotations

import torch

from model.generation.masks import rows_incremental_mask, rows_visible
from model.generation.state import DecodeBatch
from model.generation.step import StepInputs
from parallel.masks import to_additive_mask
from parallel.sampling import SamplingTensors

# Longest window: bounds the mask buffer; rebuilding a window costs about as much as ~5 steps.
WINDOW_STEPS = 256


class DecodeWindow:
    """Inputs of up to `steps` decode steps with the same structure (see the module docstring).

    feed: `[B, width]` bool, the branches of `batch` fed in this window; remaining: the most tokens any
    unfinished branch may still generate; mask_dtype: dtype of the step masks. The batch keeps its rows
    while the window is open: the session commits the window before any sample joins or leaves.
    """

    def __init__(self, batch: DecodeBatch, feed: torch.Tensor, remaining: int, mask_dtype: torch.dtype):
        self.batch, self.width = batch, batch.width
        self.rule = batch.mask_rule()
        row, k = torch.nonzero(feed, as_tuple=True)  # fed branches take lanes 0..n-1 of their row, in branch order
        lane = (feed.cumsum(dim=1) - 1)[row, k]
        self.f_idx = row * self.width + k
        self._plan_queries(feed, row, k, lane)
        steps = self._steps_until_change(feed, remaining)
        self._plan_sampling(row, lane)
        self._plan_ids(row, lane, steps)
        self._plan_mask(steps, mask_dtype)

    def _plan_queries(self, feed, row, k, lane) -> None:
        b, f = self.batch, self.f_idx
        B, K = feed.shape[0], int(feed.sum(dim=1).max())
        self.B, self.K, self.L0 = B, K, b.length
        self.t_now = b.next_time[f]
        self.cnt = feed.sum(dim=1)  # [B] tokens fed per row and step
        q_time = torch.full((B, K), -1, dtype=torch.long, device=feed.device)  # pads: time -1, seen by nobody
        q_branch = torch.full((B, K), -1, dtype=torch.long, device=feed.device)
        q_coord = torch.zeros((B, K), dtype=torch.long, device=feed.device)
        q_flat = torch.zeros((B, K), dtype=torch.long, device=feed.device)
        q_time[row, lane], q_branch[row, lane], q_coord[row, lane] = self.t_now, k + 1, b.coord[f]
        q_flat[row, lane] = b.n_real[row] + lane
        real = q_time >= 0
        self.q_time, self.q_branch, self.real = q_time, q_branch, real
        self.pos = torch.stack([q_coord, q_time.clamp_min(0), q_flat], dim=-1)  # [B, K, 3]
        self.dpos = torch.stack([torch.zeros_like(q_time), real.long(), real.long() * self.cnt[:, None]], dim=-1)

    def _advancing(self, feed: torch.Tensor) -> torch.Tensor:
        """`[B, width]` bool: the branches whose clock moves each step. Time-synchronous rows advance every
        branch place one time column per step; the others only their fed branches."""
        b = self.batch
        sync = b.sync[:, None]
        return (sync & b.valid.view(-1, self.width)) | (~sync & feed)

    def _steps_until_change(self, feed: torch.Tensor, remaining: int) -> int:
        """Steps until some branch's feeding or sampling status changes (its clock reaches its first
        prompt time, its last prompt token or its first generated token)."""
        b = self.batch
        self.advancing = self._advancing(feed).reshape(-1)  # [F]
        f_all = torch.nonzero(self.advancing).squeeze(1)
        t_all = b.next_time[f_all]
        d = torch.stack([b.first_time[f_all], b.gen_start[f_all] - 1, b.gen_start[f_all]]) - t_all[None, :]
        big = torch.iinfo(torch.long).max
        until = int(torch.where(d > 0, d, big).amin()) if d.numel() else big
        return max(1, min(until, remaining, WINDOW_STEPS))

    def _plan_sampling(self, row, lane) -> None:
        """The sampled branches: every step samples the same ones (fed their last prompt token or a generated one)."""
        b, f = self.batch, self.f_idx
        sample = b.active[f] & (self.t_now >= b.gen_start[f] - 1)
        sel = torch.nonzero(sample).squeeze(1)
        self.sample_f = f[sel]
        self.sample_f_list = self.sample_f.tolist()
        self.sample_row, self.sample_lane = row[sel], lane[sel]
        self.sample_all = len(self.sample_f_list) == self.B * self.K  # every lane, in row-major order
        self.params: SamplingTensors = b.params[self.sample_f]

    def _plan_ids(self, row, lane, steps: int) -> None:
        """Generated tokens come from the batch's last_tok, prompt tokens from its prompt matrix."""
        b, f = self.batch, self.f_idx
        from_prompt = self.t_now < b.gen_start[f]
        dest = row * self.K + lane
        self.ids = torch.full((self.B, self.K), b.pad_id, dtype=torch.long, device=f.device)
        gsel = torch.nonzero(~from_prompt).squeeze(1)
        psel = torch.nonzero(from_prompt).squeeze(1)
        self.gen_dest, self.gen_f = (dest[gsel], f[gsel]) if gsel.numel() else (None, None)
        self.prompt_dest = dest[psel] if psel.numel() else None
        if self.prompt_dest is not None:  # [steps, n_prompt] prompt token of each step
            fp = f[psel]
            t = self.t_now[psel][None, :] + torch.arange(steps, device=f.device)[:, None] - b.first_time[fp][None, :]
            self.prompt_ids = b.prompt[fp[None, :], t.clamp(0, b.prompt.shape[1] - 1)]

    def _plan_mask(self, steps: int, mask_dtype: torch.dtype) -> None:
        """The cached tokens and the new tokens (self-edges) for the first step, then the per-step blocks."""
        b, L0, K = self.batch, self.L0, self.K
        past_time, past_branch = b.hist_time[:, :L0], b.hist_branch[:, :L0]
        first = rows_incremental_mask(self.q_time, self.q_branch, past_time, past_branch, self.rule,
                                      dtype=mask_dtype)  # [B, 1, K, L0 + K]
        if steps > 1 and not self._constant_visibility(past_time, past_branch, steps):
            steps = 1
        self.steps, self.done = steps, 0
        if steps == 1:
            self.mask = first
            return
        self.mask = first.new_empty((self.B, 1, K, L0 + steps * K))
        self.mask[..., :L0 + K] = first
        self.self_block = first[..., L0:].clone()  # new tokens: each sees itself
        later = rows_visible(self._times(1)[:, :, None], self.q_branch[:, :, None], self.q_time[:, None, :],
                             self.q_branch[:, None, :], self.rule)  # what a step sees of an earlier step's tokens
        self.past_block = later[:, None] if mask_dtype == torch.bool else to_additive_mask(later[:, None], mask_dtype)

    def _times(self, w: int) -> torch.Tensor:
        """`[B, K]` query times at step w of the window (pads stay -1)."""
        return torch.where(self.real, self.q_time + w, -1)

    def _constant_visibility(self, past_time, past_branch, steps: int) -> bool:
        """Do the queries see the same old tokens, and the same tokens of earlier window steps, at every step?"""
        qb, rule = self.q_branch[:, :, None], self.rule
        last = self._times(steps - 1)[:, :, None]
        q0 = self.q_time[:, :, None]
        pt, pb = past_time[:, None, :], past_branch[:, None, :]
        if not torch.equal(rows_visible(q0, qb, pt, pb, rule), rows_visible(last, qb, pt, pb, rule)):
            return False
        kt, kb = self.q_time[:, None, :], self.q_branch[:, None, :]
        return torch.equal(rows_visible(self._times(1)[:, :, None], qb, kt, kb, rule),
                           rows_visible(last, qb, kt, kb, rule))

    # --- per step ----------------------------------------------------------------------------------

    @property
    def expired(self) -> bool:
        return self.done >= self.steps

    def expire(self) -> None:
        """End the window after the current step (a branch finished: the structure changes)."""
        self.steps = self.done

    def inputs(self) -> StepInputs:
        """The next step's ids `[B, K]`, mask `[B, 1, K, L + K]`, positions `[B, K, 3]` and sampled positions."""
        w, K = self.done, self.K
        flat = self.ids.view(-1)
        if self.gen_dest is not None:
            flat[self.gen_dest] = self.batch.last_tok[self.gen_f]
        if self.prompt_dest is not None:
            flat[self.prompt_dest] = self.prompt_ids[w]
        end = self.L0 + (w + 1) * K
        if w:
            self.mask[..., end - 2 * K:end - K] = self.past_block
            self.mask[..., end - K:end] = self.self_block
            self.pos = self.pos + self.dpos
        rows, cols = (None, None) if self.sample_all else (self.sample_row, self.sample_lane)
        return StepInputs(self.ids, self.mask[..., :end], self.pos, rows, cols)

    def step_done(self) -> None:
        self.done += 1

    # --- end of the window -------------------------------------------------------------------------

    def commit(self) -> None:
        """Record the window's fed tokens in the batch's history and advance the clocks."""
        b, w, K, L0 = self.batch, self.done, self.K, self.L0
        if not w:
            return
        end = L0 + w * K
        cap = b.hist_time.shape[1]
        if end > cap:  # grow the history by doubling, like the cache
            grow = max(end, 2 * cap) - cap
            b.hist_time = torch.cat([b.hist_time, b.hist_time.new_full((self.B, grow), -1)], dim=1)
            b.hist_branch = torch.cat([b.hist_branch, b.hist_branch.new_full((self.B, grow), -1)], dim=1)
        steps = torch.arange(w, device=b.hist_time.device)[None, :, None]
        b.hist_time[:, L0:end].view(self.B, w, K).copy_(
            torch.where(self.real[:, None, :], self.q_time[:, None, :] + steps, -1))
        b.hist_branch[:, L0:end].view(self.B, w, K).copy_(self.q_branch[:, None, :].expand(self.B, w, K))
        b.length = end
        b.n_real += w * self.cnt
        b.next_time[torch.nonzero(self.advancing).squeeze(1)] += w
