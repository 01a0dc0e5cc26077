"""Decode windows: the per-step inputs of `ParallelGenerator` for a run of steps with the same structure.

Between two events (a branch finishes, a branch moves from its prompt to generated tokens, a branch
starts or stops feeding prompt tokens) every decode step feeds the same branches in the same slots:
only the token ids change, every fed branch's time advances by one and the flat index of a row by
the number of tokens it feeds. A `DecodeWindow` computes the slot layout, the positions, the sampled
rows and the mask ONCE for such a run, and each step then costs a handful of tensor ops:

* ids: the last sampled token of every generating branch (and the next prompt token of the others)
  are written into a fixed `[B, K]` buffer (pads stay pads);
* positions: the `[B, K, 3]` positions of the first step plus the per-step increment;
* mask: one buffer `[B, 1, K, L0 + W * K]` holding the visibility of the cached tokens, of the tokens
  fed earlier in the window and of the new tokens themselves; each step writes two `[B, 1, K, K]` blocks.

The window is exact: it is used for W > 1 steps only after checking, with the `visible()` predicate
itself, that what a step's queries may see of the older tokens and of the earlier steps' tokens is
the same at the first and at the last step of the window (visibility is monotone in the query time,
so it is then the same at every step in between). Otherwise the window lasts one step, which is the
plain per-step computation. Steps whose tokens finish a branch end the window early (`expire`).
"""

from __future__ import annotations

import torch

from parallel.masks import build_incremental_mask, to_additive_mask, visible
from parallel.sampling import SamplingTensors

# Longest window: bounds the mask buffer; rebuilding a window costs about as much as ~5 steps.
WINDOW_STEPS = 256


class DecodeWindow:
    """Inputs of up to `steps` decode steps with the same structure (see the module docstring).

    a: `[Bc, NBr]` bool, the branch slots of the `Bc` decoding rows fed in this window; rows: `[Bc]`
    their original row; the other tensors are the engine's flat per-branch state (`[B * NBr]`).
    """

    def __init__(self, *, a, rows, NBr, next_time, gen_start, first_time, coord, n_real, active, valid,
                 synchronous, prompt_mat, pad_id, hist_time, hist_branch, L0, mode, mask_dtype, ptensors,
                 remaining):
        dev = a.device
        Bc, K = a.shape[0], int(a.sum(dim=1).max())
        self.Bc, self.K, self.L0, self.rows, self.NBr = Bc, K, L0, rows, NBr
        self.synchronous, self.mode = synchronous, mode
        bi, ki = torch.nonzero(a, as_tuple=True)  # fed branches take slots 0..n-1 of their row, in branch order
        slot = (a.cumsum(dim=1) - 1)[bi, ki]
        f_idx = rows[bi] * NBr + ki
        t_now = next_time[f_idx]
        self.f_idx = f_idx
        from_prompt = t_now < gen_start[f_idx]
        sample = active[f_idx] & (t_now >= gen_start[f_idx] - 1)  # fed its last prompt token or a generated one
        dest = bi * K + slot
        self.cnt = a.sum(dim=1)  # [Bc] tokens fed per row and step

        q_time = torch.full((Bc, K), -1, dtype=torch.long, device=dev)  # pads: time -1, seen by nobody
        q_branch = torch.full((Bc, K), -1, dtype=torch.long, device=dev)
        q_coord = torch.zeros((Bc, K), dtype=torch.long, device=dev)
        q_flat = torch.zeros((Bc, K), dtype=torch.long, device=dev)
        q_time[bi, slot], q_branch[bi, slot], q_coord[bi, slot] = t_now, ki + 1, coord[f_idx]
        q_flat[bi, slot] = n_real[rows[bi]] + slot
        real = q_time >= 0
        self.q_time, self.q_branch, self.real = q_time, q_branch, real
        self.pos = torch.stack([q_coord, q_time.clamp_min(0), q_flat], dim=-1)  # [Bc, K, 3]
        self.dpos = torch.stack([torch.zeros_like(q_time), real.long(), real.long() * self.cnt[:, None]], dim=-1)

        # steps until some branch's feeding or sampling status changes (its clock reaches its first
        # prompt time, its last prompt token or its first generated token)
        if synchronous:  # every branch slot of a decoding row advances one time column per step
            f_all = (rows[:, None] * NBr + torch.arange(NBr, device=dev)[None, :]).reshape(-1)
            f_all = f_all[valid[f_all]]
        else:  # own clocks: only fed branches advance (all of them generate: the prompt was prefilled)
            f_all = f_idx
        t_all = next_time[f_all]
        d = torch.stack([first_time[f_all], gen_start[f_all] - 1, gen_start[f_all]]) - t_all[None, :]
        big = torch.iinfo(torch.long).max
        until = int(torch.where(d > 0, d, big).amin()) if d.numel() else big
        steps = max(1, min(until, remaining, WINDOW_STEPS))

        # the sampled rows: every step samples the same branches
        sel = torch.nonzero(sample).squeeze(1)
        self.sample_f = f_idx[sel]
        self.sample_f_list = self.sample_f.tolist()
        self.sample_bi, self.sample_slot = bi[sel], slot[sel]
        self.sample_all = len(self.sample_f_list) == Bc * K  # every slot, in row-major order
        self.params: SamplingTensors = ptensors[self.sample_f]

        # token ids: generated tokens come from the engine's last_tok, prompt tokens from the prompt matrix
        self.ids = torch.full((Bc, K), pad_id, dtype=torch.long, device=dev)
        gsel = torch.nonzero(~from_prompt).squeeze(1)
        psel = torch.nonzero(from_prompt).squeeze(1)
        self.gen_dest, self.gen_f = (dest[gsel], f_idx[gsel]) if gsel.numel() else (None, None)
        self.prompt_dest = dest[psel] if psel.numel() else None
        if self.prompt_dest is not None:  # [steps, n_prompt] prompt token of each step
            fp = f_idx[psel]
            t = t_now[psel][None, :] + torch.arange(steps, device=dev)[:, None] - first_time[fp][None, :]
            self.prompt_ids = prompt_mat[fp[None, :], t.clamp(0, prompt_mat.shape[1] - 1)]

        # mask: the cached tokens and the new tokens (self-edges) for the first step
        first = build_incremental_mask(q_time, q_branch, hist_time[:, :L0], hist_branch[:, :L0], mode,
                                       dtype=mask_dtype)  # [Bc, 1, K, L0 + K]
        if steps > 1 and not self._constant_visibility(hist_time[:, :L0], hist_branch[:, :L0], steps):
            steps = 1
        self.steps, self.done = steps, 0
        if steps == 1:
            self.mask = first
        else:
            self.mask = first.new_empty((Bc, 1, K, L0 + steps * K))
            self.mask[..., :L0 + K] = first
            self.self_block = first[..., L0:].clone()  # new tokens: each sees itself
            later = visible(self._times(1)[:, :, None], q_branch[:, :, None], q_time[:, None, :], q_branch[:, None, :],
                            mode)  # what a step sees of the tokens of an earlier step of the window
            self.past_block = later[:, None] if mask_dtype == torch.bool else to_additive_mask(later[:, None], mask_dtype)

    def _times(self, w: int) -> torch.Tensor:
        """`[Bc, K]` query times at step w of the window (pads stay -1)."""
        return torch.where(self.real, self.q_time + w, -1)

    def _constant_visibility(self, past_time, past_branch, steps: int) -> bool:
        """Do the queries see the same old tokens, and the same tokens of earlier window steps, at every step?"""
        qb = self.q_branch[:, :, None]
        last = self._times(steps - 1)[:, :, None]
        q0 = self.q_time[:, :, None]
        same_past = torch.equal(visible(q0, qb, past_time[:, None, :], past_branch[:, None, :], self.mode),
                                visible(last, qb, past_time[:, None, :], past_branch[:, None, :], self.mode))
        if not same_past:
            return False
        kt, kb = self.q_time[:, None, :], self.q_branch[:, None, :]
        return torch.equal(visible(self._times(1)[:, :, None], qb, kt, kb, self.mode),
                           visible(last, qb, kt, kb, self.mode))

    # --- per step ----------------------------------------------------------------------------------

    @property
    def expired(self) -> bool:
        return self.done >= self.steps

    def expire(self) -> None:
        """End the window after the current step (a branch finished: the structure changes)."""
        self.steps = self.done

    def inputs(self, last_tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (ids `[Bc, K]`, mask `[Bc, 1, K, L + K]`, positions `[Bc, K, 3]`) of the next step."""
        w, K = self.done, self.K
        flat = self.ids.view(-1)
        if self.gen_dest is not None:
            flat[self.gen_dest] = last_tok[self.gen_f]
        if self.prompt_dest is not None:
            flat[self.prompt_dest] = self.prompt_ids[w]
        end = self.L0 + (w + 1) * K
        if w:
            self.mask[..., end - 2 * K:end - K] = self.past_block
            self.mask[..., end - K:end] = self.self_block
            self.pos = self.pos + self.dpos
        return self.ids, self.mask[..., :end], self.pos

    def step_done(self) -> None:
        self.done += 1

    # --- end of the window -------------------------------------------------------------------------

    def commit(self, hist_time, hist_branch, next_time, n_real) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Record the window's fed tokens in the history and advance the clocks.

        -> (hist_time, hist_branch (grown when full), new history length).
        """
        w, K, L0 = self.done, self.K, self.L0
        end = L0 + w * K
        if not w:
            return hist_time, hist_branch, L0
        if end > hist_time.shape[1]:  # grow the history by doubling, like the cache
            grow = max(end, 2 * hist_time.shape[1]) - hist_time.shape[1]
            hist_time = torch.cat([hist_time, hist_time.new_full((self.Bc, grow), -1)], dim=1)
            hist_branch = torch.cat([hist_branch, hist_branch.new_full((self.Bc, grow), -1)], dim=1)
        steps = torch.arange(w, device=hist_time.device)[None, :, None]
        hist_time[:, L0:end].view(self.Bc, w, K).copy_(
            torch.where(self.real[:, None, :], self.q_time[:, None, :] + steps, -1))
        hist_branch[:, L0:end].view(self.Bc, w, K).copy_(self.q_branch[:, None, :].expand(self.Bc, w, K))
        n_real[self.rows] += w * self.cnt
        if self.synchronous:
            dev = next_time.device
            next_time[(self.rows[:, None] * self.NBr + torch.arange(self.NBr, device=dev)[None, :]).reshape(-1)] += w
        else:
            next_time[self.f_idx] += w
        return hist_time, hist_branch, end
