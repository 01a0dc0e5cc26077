"""Parallel generation: decode every branch of several groups together, one forward per step.

A group is a sample in the layout format, ``{"main": str | ids (optional), "branches": [str | ids |
{"text" | "input_ids", ...}]}``. All groups are laid out as ONE batch (one row per group, see
`parallel.layout`), prefilled once, then each decode step feeds the last token of every
still-active branch of every group through a single forward against a growing KV cache.

    gen = ParallelGenerator(model, tokenizer, mask_mode="columnar")
    results = gen.generate([{"main": "Context: ...", "branches": ["Q1", "Q2"]}],
                           SamplingParams(do_sample=True, top_p=0.9), max_new_tokens=64, seed=0)
    results[0].branches[1].text, results[0].branches[1].finish_reason   # "eos" | "stop" | "length"

The model is MiniMind or a Hugging Face causal LM patched with
`patch_model_with_interleaved_2d_rope` (possibly wrapped by PEFT): anything taking `position_ids`
`[B, T, 3]` = (branch coordinate, time, flat index) and a 4-D mask.

Decoding rules, as in the training layouts: a generated token keeps its branch's coordinate and
takes the branch's next time. In columnar mode (and whenever the rotary angle reads the flat index,
i.e. the `reference` scheme) decoding is time-synchronous: each row is prefilled up to the earliest
time at which one of its branches generates, then every step feeds one time column, i.e. the
remaining prompt tokens of longer prompts together with the generated tokens of the others, so the
cached sequence is exactly a training layout and every step's logits equal one full forward over it
(for any alignment). In isolated mode with the default scheme the branches cannot see each other,
so each row is prefilled whole and every branch keeps its own clock. A branch finishes on EOS (not
fed back), on a stop string or at its token limit; its tokens stay in the cache (visible to the
other branches under the columnar rule) but it is never fed again, and a group whose branches have
all finished is dropped from the batch.

Speed: between two such events every step feeds the same slots, so the step inputs (slot layout,
positions, sampled rows, mask) are planned once per run of steps (`model.generation_state.DecodeWindow`)
and a step costs the forward plus a few small tensor ops; decode steps take an additive mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from model.generation_state import DecodeWindow
from model.kv_cache import GrowingCache
from parallel.layout import ALIGNMENTS, build_flat_linear_layout
from parallel.masks import build_attention_mask, check_mask_mode
from parallel.rope2d import Interleaved2DRoPE
from parallel.sampling import SamplingParams, SamplingTensors, sample_next

FINISH_REASONS = ("eos", "stop", "length")
# Config fields of models whose logits are not just `lm_head(hidden)`: those take full model logits.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
# The cache and the history start with room for this many decode steps of every branch slot and
# double when full: short answers do not reserve max_new_tokens of cache, long ones copy O(log n) times.
CAPACITY_STEPS = 256


@dataclass
class StepToken:
    """One branch's event in one decode step (what `on_step` receives)."""

    group: int
    branch: int
    token_id: int
    text: str = ""  # newly final text (held back while it may begin a stop string); "" for EOS
    finish_reason: str | None = None  # set when this step finished the branch


@dataclass
class BranchResult:
    prompt: str
    prompt_ids: list[int]
    token_ids: list[int]  # generated tokens, EOS excluded; a stop string's tokens included
    text: str  # decoded generation, cut before the stop string
    finish_reason: str  # "eos" | "stop" | "length"
    num_new_tokens: int
    step_logits: torch.Tensor | None = None  # [S, V] raw logits that sampled each token (EOS included)


@dataclass
class GroupResult:
    main: str  # shared context ("" when the group has none)
    branches: list[BranchResult] = field(default_factory=list)


class IncrementalDecoder:
    """Offset-based incremental detokenizer (the TGI / vLLM scheme): each token decodes a short window.

    Text is released only once it no longer ends in an incomplete UTF-8 character, so multi-token
    characters come out whole. Cost per token is independent of the length of the history.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text (possibly "")."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Release the pending text at the end of a generation, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=self.skip_special_tokens)
        full = dec(self.ids[self.prefix_offset:], skip_special_tokens=self.skip_special_tokens)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            delta = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.text += delta
            return delta
        return ""


class _Branch:
    """Per-branch bookkeeping (Python side: token list, text, stop handling)."""

    def __init__(self, group: int, branch: int, max_new: int, decoder: IncrementalDecoder | None):
        self.group, self.branch, self.max_new, self.decoder = group, branch, max_new, decoder
        self.ids: list[int] = []
        self.finish: str | None = None
        self.stop_at = -1  # index in decoder.text where the stop string starts
        self.emitted = 0  # characters of decoder.text already streamed
        self.logits: list[torch.Tensor] = []


def _find_stop(text: str, start: int, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    longest = max((len(s) for s in stops), default=0)
    for h in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-h:]
        if any(s.startswith(tail) for s in stops):
            return h
    return 0


def _split_head(model) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """(decoder, output head) when logits are exactly `head(decoder(...).last_hidden_state)`, else (None, None)."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # PEFT
    cfg = getattr(base, "config", None)
    if any(getattr(cfg, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return None, None
    get_dec, get_head = getattr(base, "get_decoder", None), getattr(base, "get_output_embeddings", None)
    if not callable(get_dec) or not callable(get_head):
        return None, None
    try:
        decoder, head = get_dec(), get_head()
    except Exception:  # noqa: BLE001 - no standard split: use the model's own logits
        return None, None
    if decoder is None or decoder is base or head is None:
        return None, None
    return decoder, head


def _default_stride(model) -> int:
    cfg = getattr(model, "config", None)
    pm = getattr(cfg, "parallelmind", None)
    if isinstance(pm, dict) and pm.get("branch_stride"):
        return int(pm["branch_stride"])
    return int(getattr(cfg, "branch_stride", None) or 128)


class ParallelGenerator:
    """Batched parallel decoding of groups of branches with one KV cache (see the module docstring)."""

    def __init__(self, model, tokenizer=None, *, mask_mode: str = "columnar", branch_stride: int | None = None,
                 align_to: str = "left", device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        check_mask_mode(mask_mode)
        if align_to not in ALIGNMENTS:
            raise ValueError(f"align_to must be one of {ALIGNMENTS}, got {align_to!r}")
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        param = next(model.parameters())
        self.model, self.tokenizer = model, tokenizer
        self.mask_mode, self.align_to = mask_mode, align_to
        self.branch_stride = int(branch_stride) if branch_stride else _default_stride(model)
        self.device = param.device
        self.dtype = dtype or param.dtype
        impl = str(getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa")
        if "flex" in impl and not hasattr(getattr(model, "config", None), "use_flex_attention"):
            raise ValueError("generation needs dense masks against a KV cache; load the model with "
                             "attn_implementation='sdpa' or 'eager' (flex_attention takes only BlockMasks)")
        # eager attention adds the mask to the scores, so a boolean mask would be silently wrong there
        self.mask_dtype = self.dtype if impl == "eager" else torch.bool
        # decode steps take an additive mask everywhere: SDPA converts a boolean one on every call (per
        # layer); the prefill keeps the smaller boolean mask
        self.step_mask_dtype = self.dtype
        self._decoder, self._head = _split_head(model)
        # Time-synchronous decoding (one time column per step, prompt remainders fed alongside generated
        # tokens) makes the cached sequence exactly a training layout: needed when branches see each
        # other (columnar) or when the rotary angle reads the flat index (reference scheme, ratio < 1).
        reads_flat = any(isinstance(m, Interleaved2DRoPE) and bool(m.coefficients[2].any()) for m in model.modules())
        self.synchronous = mask_mode == "columnar" or reads_flat

    # --- model calls ---------------------------------------------------------------------------------

    def _logits_at(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache,
                   rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
        """Forward `[B, Q]` tokens; return float logits `[N, V]` at (rows[i], cols[i]) only.

        The output head runs on the N needed hidden states, never on `[B, Q, V]`, so a long prompt
        does not materialise full-vocabulary logits. rows = cols = None: every position, row-major.
        """
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        if self._decoder is not None:
            out = self._decoder(**kw)
            h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # MiniMind: a tuple
            return self._head(h.reshape(-1, h.shape[-1]) if rows is None else h[rows, cols]).float()
        if rows is None:
            logits = self.model(**kw).logits
            return logits.reshape(-1, logits.shape[-1]).float()
        keep, where = torch.unique(cols, return_inverse=True)
        logits = self.model(**kw, logits_to_keep=keep).logits  # [B, U, V]
        return logits[rows, where].float()

    # --- inputs ----------------------------------------------------------------------------------

    @staticmethod
    def _branch_params(sampling, counts: list[int]) -> list[list[SamplingParams]]:
        if sampling is None:
            sampling = SamplingParams()
        if isinstance(sampling, SamplingParams):
            return [[sampling] * n for n in counts]
        if not isinstance(sampling, (list, tuple)) or len(sampling) != len(counts):
            raise ValueError(f"sampling: expected SamplingParams or a list with one entry per group ({len(counts)})")
        out = []
        for g, (s, n) in enumerate(zip(sampling, counts)):
            if isinstance(s, SamplingParams):
                out.append([s] * n)
            elif isinstance(s, (list, tuple)) and len(s) == n and all(isinstance(x, SamplingParams) for x in s):
                out.append(list(s))
            else:
                raise ValueError(f"sampling[{g}]: expected SamplingParams or a list of {n} (one per branch)")
        return out

    def _eos_ids(self, eos_token_ids) -> set[int]:
        if eos_token_ids is not None:
            ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
            return {int(i) for i in ids}
        out: set[int] = set()
        tok = self.tokenizer
        if tok is not None:
            if tok.eos_token_id is not None:
                out.add(int(tok.eos_token_id))
            im_end = tok.convert_tokens_to_ids("<|im_end|>")  # chat turns end here even when eos differs
            if isinstance(im_end, int) and im_end != getattr(tok, "unk_token_id", None):
                out.add(im_end)
        else:
            gc = getattr(self.model, "generation_config", None)
            e = getattr(gc, "eos_token_id", None) if gc is not None else None
            if e is None:
                e = getattr(getattr(self.model, "config", None), "eos_token_id", None)
            out.update([e] if isinstance(e, int) else list(e or []))
        return out

    def _text_of(self, content) -> str:
        if isinstance(content, dict):
            content = content.get("text", content.get("content", content.get("input_ids")))
        if isinstance(content, str):
            return content
        if content is None or self.tokenizer is None:
            return ""
        ids = content.tolist() if isinstance(content, torch.Tensor) else list(content)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    # --- generation ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, groups: Sequence[dict], sampling: SamplingParams | Sequence | None = None, *,
                 eos_token_ids: int | Sequence[int] | None = None, stop_strings: Sequence[str] = (),
                 max_new_tokens: int = 128, seed: int | None = None,
                 on_step: Callable[[int, list[StepToken]], None] | None = None,
                 return_step_logits: bool = False) -> list[GroupResult]:
        """Generate for every branch of every group; results are in input order.

        sampling: one `SamplingParams` for all, one per group, or per group a list with one per branch.
        eos_token_ids: None = the tokenizer's EOS and `<|im_end|>`; an empty list = never stop on a token.
        max_new_tokens: default limit (a branch's `SamplingParams.max_new_tokens` overrides it).
        seed: seeds the one `torch.Generator` used for sampling (default: the first seed in `sampling`).
        on_step(step, events): called after every sampling step (step 0 samples from the prompt).
        """
        if not isinstance(groups, (list, tuple)) or not groups:
            raise ValueError("generate: groups must be a non-empty list of {'main', 'branches'} dicts")
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("branches"), (list, tuple)) or not g["branches"]:
                raise ValueError(f"group {i}: field 'branches' must be a non-empty list")
        stops = [s for s in stop_strings if s]
        if stops and self.tokenizer is None:
            raise ValueError("stop_strings need a tokenizer")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        counts = [len(g["branches"]) for g in groups]
        params = self._branch_params(sampling, counts)
        eos = self._eos_ids(eos_token_ids)
        lay = build_flat_linear_layout(self.tokenizer, list(groups), pad_to=None, branch_stride=self.branch_stride,
                                       align_to=self.align_to).to(self.device)
        # eval() / train() walk every module (~1 ms): skip both when nothing is in training mode
        switch = any(m.training for m in self.model.modules())
        was_training = self.model.training
        if switch:
            self.model.eval()
        try:
            states = self._run(lay, counts, params, eos, stops, max_new_tokens, seed, on_step, return_step_logits)
        finally:
            if switch:
                self.model.train(was_training)
        return self._results(groups, lay, counts, states, stops)

    def _run(self, lay, counts, params, eos, stops, max_new_tokens, seed, on_step, keep_logits) -> list[_Branch]:
        dev, mode = self.device, self.mask_mode
        B, T = lay.input_ids.shape
        NBr = max(counts)  # branch slots per row; flat branch index f = row * NBr + (branch id - 1)
        flat_params = [SamplingParams()] * (B * NBr)
        states: list[_Branch | None] = [None] * (B * NBr)
        decode_text = self.tokenizer is not None and (bool(stops) or on_step is not None)
        for g, ps in enumerate(params):
            for k, p in enumerate(ps):
                f = g * NBr + k
                flat_params[f] = p
                limit = max_new_tokens if p.max_new_tokens is None else p.max_new_tokens
                states[f] = _Branch(g, k, limit, IncrementalDecoder(self.tokenizer) if decode_text else None)
        ptensors = SamplingTensors.from_params(flat_params, dev)
        if seed is None:
            seed = next((p.seed for ps in params for p in ps if p.seed is not None), None)
        gen = torch.Generator(device=dev)
        if seed is not None:
            gen.manual_seed(seed)
        else:
            gen.seed()

        valid = (torch.arange(NBr, device=dev)[None, :] < lay.branch_counts[:, None]).reshape(-1)  # [B*NBr]
        limits = torch.tensor([s.max_new if s else 0 for s in states], device=dev)
        active = valid & (limits > 0)  # still generating
        for f in torch.nonzero(valid & (limits == 0)).squeeze(1).tolist():
            states[f].finish = "length"
        if not bool(active.any()):
            return states
        coord = lay.branch_coord[:, 1:].reshape(-1)  # [B*NBr]; column 0 of the layout is the main
        gen_start = lay.branch_next_time[:, 1:].reshape(-1)  # time of each branch's first generated token
        prompt_mat, first_time = self._prompt_by_time(lay, NBr)  # [B*NBr, Lp] prompt ids by time; start times
        last_tok = torch.full((B * NBr,), lay.pad_id, dtype=torch.long, device=dev)
        penalised = bool(((ptensors.repetition_penalty != 1.0) & valid).any())

        # Prefill each row up to tau0: in columnar mode, the earliest time at which a branch of the row
        # generates, so that every later prompt token is fed in the same step as the generated tokens
        # it must see (time-synchronous decoding == one full forward with the time rule, for any
        # alignment); in isolated mode branches never see each other, so the whole prompt is prefilled.
        big = torch.iinfo(torch.long).max
        if self.synchronous:
            tau = torch.where(valid, gen_start, big).view(B, NBr).amin(dim=1)  # [B]
        else:
            tau = torch.full((B,), big, dtype=torch.long, device=dev)
        in_prefill = (lay.time_ids >= 0) & (lay.time_ids < tau[:, None])  # a prefix of each time-sorted row
        P = in_prefill.sum(dim=1)  # [B]
        Pm = int(P.max())
        pre_time = torch.where(in_prefill, lay.time_ids, -1)[:, :Pm]
        pre_branch = torch.where(in_prefill, lay.branch_ids, -1)[:, :Pm]
        cap = Pm + NBr * (min(int(limits.max()), CAPACITY_STEPS) + int((gen_start - first_time).clamp_min(0).max()))
        cache = GrowingCache(cap)
        hist_time = torch.full((B, cap), -1, dtype=torch.long, device=dev)  # [B, cap] times of cached tokens
        hist_branch = torch.full((B, cap), -1, dtype=torch.long, device=dev)
        hist_time[:, :Pm], hist_branch[:, :Pm] = pre_time, pre_branch
        mask = build_attention_mask(pre_time, pre_branch, mode, dtype=self.mask_dtype)
        last_index = lay.branch_last_index[:, 1:].reshape(-1)
        first = active & (last_index < P.repeat_interleave(NBr))  # branches whose last prompt token is prefilled
        f_idx = torch.nonzero(first).squeeze(1)
        logits = self._logits_at(lay.input_ids[:, :Pm], mask, lay.position_ids()[:, :Pm], cache, f_idx // NBr,
                                 last_index[f_idx])
        seen = self._prompt_seen(lay, NBr, logits.shape[-1]) if penalised else None
        step_ctx = (states, gen, seen, last_tok, active, eos, stops, on_step, keep_logits)
        step = 0
        if f_idx.numel():
            self._sample_step(step, f_idx, f_idx.tolist(), ptensors[f_idx], logits, *step_ctx)
            step += 1
        # the next time each branch feeds: its own clock in isolated mode, the row's column in columnar mode
        next_time = tau.repeat_interleave(NBr) if self.synchronous else torch.where(valid, gen_start, -1)
        n_real = P.clone()  # real tokens per row so far: the flat index the training layout would give
        rows = torch.arange(B, device=dev)  # original row (group) of each batch row still decoding
        L = Pm
        win: DecodeWindow | None = None
        while True:
            if win is None or win.expired:  # plan the next steps (see model/generation_state.py)
                if win is not None:
                    hist_time, hist_branch, L = win.commit(hist_time, hist_branch, next_time, n_real)
                    win = None
                pending = valid & (next_time < gen_start) & (next_time >= first_time)  # prompt tokens still to feed
                feed = (active & (next_time >= gen_start)) | pending
                alive = (active | (valid & (next_time < gen_start))).view(B, NBr).any(dim=1)[rows]
                if not bool((active.view(B, NBr)[rows]).any()):
                    break
                if not bool(alive.all()):  # drop finished groups: their pad slots would cost compute
                    keep = torch.nonzero(alive).squeeze(1)
                    cache.batch_select_indices(keep)
                    rows, hist_time, hist_branch = rows[keep], hist_time[keep], hist_branch[keep]
                a = feed.view(B, NBr)[rows]  # [Bc, NBr]
                if not bool(a.any()):  # every branch still waits for its start time (explicit offsets)
                    next_time = torch.where(valid, next_time + 1, next_time)
                    continue
                remaining = max((st.max_new - len(st.ids) for st in states if st is not None and st.finish is None),
                                default=1)
                win = DecodeWindow(a=a, rows=rows, NBr=NBr, next_time=next_time, gen_start=gen_start,
                                   first_time=first_time, coord=coord, n_real=n_real, active=active, valid=valid,
                                   synchronous=self.synchronous, prompt_mat=prompt_mat, pad_id=lay.pad_id,
                                   hist_time=hist_time, hist_branch=hist_branch, L0=L, mode=mode,
                                   mask_dtype=self.step_mask_dtype, ptensors=ptensors, remaining=remaining)
            ids, mask, pos = win.inputs(last_tok)
            logits = self._logits_at(ids, mask, pos, cache, *((None, None) if win.sample_all else
                                                             (win.sample_bi, win.sample_slot)))
            win.step_done()
            if win.sample_f_list:
                if self._sample_step(step, win.sample_f, win.sample_f_list, win.params, logits, *step_ctx):
                    win.expire()  # a branch finished: the structure of the next steps changes
                step += 1
        return states

    @staticmethod
    def _prompt_by_time(lay, NBr: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (`[B*NBr, Lp]` prompt token ids indexed by time - start, `[B*NBr]` start times)."""
        B, T = lay.input_ids.shape
        bid, t = lay.branch_ids, lay.time_ids
        own = bid > 0
        row = torch.arange(B, device=t.device)[:, None].expand(B, T)
        f = (row * NBr + bid - 1)[own]
        big = torch.iinfo(torch.long).max
        start = torch.full((B * NBr,), big, dtype=torch.long, device=t.device).scatter_reduce_(
            0, f, t[own], reduce="amin")
        start = torch.where(start == big, 0, start)
        off = t[own] - start[f]
        mat = torch.zeros((B * NBr, int(off.max()) + 1 if off.numel() else 1), dtype=torch.long, device=t.device)
        mat[f, off] = lay.input_ids[own]
        return mat, start

    @staticmethod
    def _prompt_seen(lay, NBr: int, V: int) -> torch.Tensor:
        """`[B*NBr, V]` bool: tokens of each branch's prompt, the group's main included."""
        B, T = lay.input_ids.shape
        bid, ids = lay.branch_ids, lay.input_ids
        row = torch.arange(B, device=ids.device)[:, None].expand(B, T)
        seen = torch.zeros((B * NBr, V), dtype=torch.bool, device=ids.device)
        own = (bid > 0) & (ids < V)
        seen[(row * NBr + bid - 1)[own], ids[own]] = True
        main = (bid == 0) & (ids < V)
        if bool(main.any()):  # every branch of the row sees the main
            f = row[main][:, None] * NBr + torch.arange(NBr, device=ids.device)[None, :]
            seen[f.reshape(-1), ids[main][:, None].expand(-1, NBr).reshape(-1)] = True
        return seen

    def _sample_step(self, step, f_idx, f_list, params, logits, states, gen, seen, last_tok, active, eos, stops,
                     on_step, keep_logits) -> bool:
        """Sample `[N]` tokens for branches `f_idx` (`f_list` as a list) from `[N, V]` logits; update the
        bookkeeping. -> whether a branch finished."""
        tok = sample_next(logits, params, gen, seen=seen[f_idx] if seen is not None else None)
        if seen is not None:
            seen[f_idx, tok] = True
        last_tok[f_idx] = tok
        events, done = [], []
        for i, (f, t) in enumerate(zip(f_list, tok.tolist())):
            st, text = states[f], ""
            if keep_logits:
                st.logits.append(logits[i].cpu())
            if t in eos:
                st.finish = "eos"
            else:
                st.ids.append(t)
                if st.decoder is not None:
                    text = self._advance_text(st, st.decoder.push(t), stops)
                if st.finish is None and len(st.ids) >= st.max_new:
                    st.finish = "length"
            if st.finish is not None:
                done.append(f)
                if st.decoder is not None:  # release what was held back
                    if st.finish != "stop":
                        st.decoder.flush()
                    end = st.stop_at if st.finish == "stop" else len(st.decoder.text)
                    text += st.decoder.text[st.emitted:end]
                    st.emitted = max(st.emitted, end)
            if on_step is not None:
                events.append(StepToken(st.group, st.branch, t, text, st.finish))
        if done:
            active[torch.tensor(done, device=active.device)] = False
        if on_step is not None:
            on_step(step, events)
        return bool(done)

    @staticmethod
    def _advance_text(st: _Branch, delta: str, stops: Sequence[str]) -> str:
        """Check stop strings in the new text; return the text that is now safe to stream."""
        text = st.decoder.text
        if stops and delta:
            longest = max(len(s) for s in stops)
            at = _find_stop(text, max(0, len(text) - len(delta) - longest + 1), stops)
            if at >= 0:
                st.finish, st.stop_at = "stop", at
                return ""  # the flush on finish releases text[emitted:at]
        end = len(text) - _held_back(text, stops) if stops else len(text)
        if end <= st.emitted:
            return ""
        piece, st.emitted = text[st.emitted:end], end
        return piece

    def _results(self, groups, lay, counts, states, stops) -> list[GroupResult]:
        NBr = max(counts)
        out = []
        for g, grp in enumerate(groups):
            main = grp.get("input_ids", grp.get("main"))
            res = GroupResult(main=self._text_of(main) if main is not None else "")
            for k, content in enumerate(grp["branches"]):
                st = states[g * NBr + k]
                prompt_ids = lay.input_ids[g][lay.branch_ids[g] == k + 1].tolist()
                text = ""
                if self.tokenizer is not None:
                    text = self.tokenizer.decode(st.ids, skip_special_tokens=True)
                    if st.finish == "stop":
                        at = _find_stop(text, 0, stops)
                        text = text[:at] if at >= 0 else st.decoder.text[:st.stop_at]
                res.branches.append(BranchResult(
                    prompt=self._text_of(content), prompt_ids=prompt_ids, token_ids=st.ids, text=text,
                    finish_reason=st.finish or "length", num_new_tokens=len(st.ids),
                    step_logits=torch.stack(st.logits) if st.logits else None))
            out.append(res)
        return out
