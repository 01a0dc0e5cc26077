"""Generation sessions: samples join and leave one running batch (continuous batching of branches).

    session = gen.session()                          # gen: a model.parallel_generation.ParallelGenerator
    a = session.add({"main": "Context ...", "branches": ["Q1", "Q2"]}, SamplingParams(), max_new_tokens=32)
    events = session.step()                          # the prefill of `a`: first tokens of its branches
    b = session.add({"branches": ["Another prompt"]}, SamplingParams(do_sample=True), seed=7)  # branch i: seed 7 + i
    while not session.idle:
        for e in session.step():                     # StepToken(sample, branch, token_id, text, finish_reason)
            ...
    a.result.branches[0].text, b.result                # SampleResult once the sample is finished
    session.cancel(handle)                           # frees a sample's branches at once

Each `step()` runs ONE forward: the prefill of every sample added since the last step (they join
the batch when it is done), or else one decode step of every active branch of every admitted
sample. A sample is a row of the batch of its own, so samples never see each other whatever their
mask; within a sample its mask rule applies. A sample whose branches have all finished leaves the
batch, with its KV-cache rows, when the next decode steps are planned; a cancelled one at once.
Between such events the decode steps reuse one plan (`model.generation.window.DecodeWindow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from model.generation.masks import rows_attention_mask
from model.generation.state import BranchState, DecodeBatch, prompt_by_time, prompt_seen
from model.generation.step import StepInputs, StepSampling, decode_step, eval_mode
from model.generation.text import IncrementalDecoder
from model.generation.window import DecodeWindow
from model.kv_cache import GrowingCache
from parallel.layout import build_flat_linear_layout
from parallel.masks import check_mask_mode
from parallel.sampling import SamplingParams, SamplingTensors

FINISH_REASONS = ("eos", "stop", "length", "cancelled")
# The cache and the history start with room for this many decode steps of every branch place and
# double when full: short answers do not reserve max_new_tokens of cache, long ones copy O(log n) times.
CAPACITY_STEPS = 256


@dataclass(slots=True)
class StepToken:
    """One branch's event in one step (what `step()` returns and `generate(on_step=...)` receives)."""

    sample: int  # the sample's id (its index in `generate`'s input list)
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
    finish_reason: str  # "eos" | "stop" | "length" | "cancelled"
    num_new_tokens: int
    step_logits: torch.Tensor | None = None  # [S, V] raw logits that sampled each token (EOS included)


@dataclass
class SampleResult:
    main: str  # shared context ("" when the sample has none)
    branches: list[BranchResult] = field(default_factory=list)


@dataclass(eq=False)
class SampleHandle:
    """A sample added to a session: its id, its branches' live state and, once finished, its result."""

    id: int
    sample: dict  # as given to `add`
    branches: list[BranchState]
    result: SampleResult | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None


@dataclass(eq=False)
class _Request:
    """A sample waiting for its prefill: token ids, per-branch settings and the row's decoding rules."""

    handle: SampleHandle
    tokens: dict  # the sample with every text replaced by its token ids
    layout: object  # its layout alone (parallel.layout.BatchLayout) at branch stride max(stride, 1)
    params: list[SamplingParams]
    branches: list[BranchState]  # the sample's branches this row carries (all of them, or one)
    isolated: bool
    sync: bool
    stride: int


class GenerationSession:
    """A running batch that samples join and leave (see the module docstring). Made by `ParallelGenerator.session`."""

    def __init__(self, gen, *, stream_text: bool = True):
        self.gen = gen
        self.stream_text = stream_text
        self._pending: list[_Request] = []
        self._open: dict[int, SampleHandle] = {}  # admitted, not finished
        self._batch: DecodeBatch | None = None
        self._window: DecodeWindow | None = None
        self._next_id = 0

    # --- public API ----------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No sample waits for its prefill and none is still generating."""
        return not self._pending and not self._open

    @property
    def num_rows(self) -> int:
        """Samples in the running batch (rows of the KV cache)."""
        return 0 if self._batch is None else self._batch.rows

    def add(self, sample: dict, sampling: SamplingParams | Sequence[SamplingParams] | None = None, *,
            max_new_tokens: int = 128, stop_strings: Sequence[str] = (), eos_token_ids: int | Sequence[int] | None = None,
            seed: int | None = None, mask_mode: str | None = None, branch_stride: int | None = None,
            return_step_logits: bool = False) -> SampleHandle:
        """Queue a sample `{"main"?, "branches"}`; it is prefilled by the next `step()`.

        sampling: one `SamplingParams` for every branch or one per branch. max_new_tokens: default limit
        (a branch's `SamplingParams.max_new_tokens` overrides it). eos_token_ids: None = the tokenizer's
        EOS and `<|im_end|>`; [] = never stop on a token. seed: branch i samples from its own stream
        seeded `seed + i` (default: the first `SamplingParams.seed`; none: random), so its tokens never
        depend on what else is in the batch. mask_mode / branch_stride: this sample's (default: the
        generator's; stride 0 = prefix sharing, isolated only).
        """
        gen, sid = self.gen, self._next_id
        mode = check_mask_mode(mask_mode or gen.mask_mode)
        stride = gen.branch_stride if branch_stride is None else int(branch_stride)
        gen.check_branch_stride(stride, mode)
        stops = tuple(s for s in stop_strings if s)
        if stops and gen.tokenizer is None:
            raise ValueError("stop_strings need a tokenizer")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        tokens, layout = gen.tokenize_sample(sample, sid, stride)
        params = gen.branch_params(sampling, len(tokens["branches"]), sid)
        eos = frozenset(gen.eos_ids(eos_token_ids))
        decode = gen.tokenizer is not None and (bool(stops) or self.stream_text)
        if seed is None:
            seed = next((p.seed for p in params if p.seed is not None), None)
        branches = [BranchState(sid, k, max_new_tokens if p.max_new_tokens is None else p.max_new_tokens, eos, stops,
                                IncrementalDecoder(gen.tokenizer) if decode else None, return_step_logits,
                                None if p.greedy else self._stream(seed, k))
                    for k, p in enumerate(params)]
        handle = SampleHandle(sid, sample, branches)
        sync = mode == "columnar" or gen.runner.reads_flat_index
        for row_tokens, row_layout, ks in self._rows_of(tokens, layout, sid, stride, mode == "isolated" and not sync):
            self._pending.append(_Request(handle, row_tokens, row_layout, [params[k] for k in ks],
                                          [branches[k] for k in ks], mode == "isolated", sync, stride))
        self._next_id += 1
        return handle

    def _rows_of(self, tokens: dict, layout, sid: int, stride: int, own_clocks: bool) -> list[tuple]:
        """The rows a sample is decoded in: -> [(tokens, layout, its branch indices)].

        Isolated branches at coordinate 0 (stride 0) with no main share nothing, so each one gets a row
        of its own: a decode step then attends over the branch's own keys (a batch of N rows) instead of
        masking the keys of all N branches in one row. Positions, clocks and random streams are the
        branch's own either way, so the tokens are the same."""
        n = len(tokens["branches"])
        if not own_clocks or stride != 0 or n == 1 or tokens.get("main"):
            return [(tokens, layout, list(range(n)))]
        rows = []
        for k, br in enumerate(tokens["branches"]):
            one = {"branches": [br]}
            rows.append((one, self.gen.tokenize_sample(one, sid, stride)[1], [k]))
        return rows

    def step(self) -> list[StepToken]:
        """One forward: the prefill of the samples added since the last step, else one decode step.

        The model runs in eval mode for the step (and is switched back if it was training)."""
        if self.gen.model.training or torch.is_grad_enabled():  # not the hot path of generate()
            with torch.no_grad(), eval_mode(self.gen.model, every_module=False):
                return self._admit() if self._pending else self._decode()
        return self._admit() if self._pending else self._decode()

    def _decode(self) -> list[StepToken]:
        while self._batch is not None:
            if self._window is None or self._window.expired:
                self._close_window()
                self._window = self._next_window()
                if self._window is None:
                    break
            win, batch = self._window, self._batch
            sampling = self._sampling(batch, win.sample_f, win.sample_f_list, win.params) \
                if win.sample_f_list else None
            logits, tokens = decode_step(self.gen.runner, win.inputs(), batch.cache, sampling)
            win.step_done()
            if tokens is None:
                return []
            events, finished = self._record(batch, win.sample_f, win.sample_f_list, tokens, logits)
            if finished:
                win.expire()  # a branch finished: the structure of the next steps changes
            if not self._open:  # everything finished: free the cache now
                self._window = self._batch = None
            return events
        return []

    def cancel(self, handle: SampleHandle) -> None:
        """Stop a sample now (its unfinished branches end with "cancelled") and free its rows."""
        if handle.finished:
            return
        for st in handle.branches:
            st.cancel()
        queued = [r for r in self._pending if r.handle is handle]
        if queued:
            self._pending = [r for r in self._pending if r.handle is not handle]
        elif self._batch is not None and handle.id in self._batch.samples:
            self._close_window()
            b = self._batch
            b.active &= ~torch.tensor([st is not None and st.sample == handle.id for st in b.branches],
                                      device=b.active.device)
            keep = [r for r, s in enumerate(b.samples) if s != handle.id]
            if keep:
                b.select_rows(torch.tensor(keep, dtype=torch.long, device=b.active.device))
            else:
                self._batch = None
        self._finish(handle)

    def _stream(self, seed: int | None, k: int) -> torch.Generator:
        """Branch k's random stream: seeded `seed + k`, or randomly."""
        g = torch.Generator(device=self.gen.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed + k)
        return g

    # --- admission -----------------------------------------------------------------------------------

    def _admit(self) -> list[StepToken]:
        """Prefill every queued sample in one forward; they join the running batch."""
        requests, self._pending = self._pending, []
        for r in requests:
            self._open[r.handle.id] = r.handle
        self._close_window()
        lay = self._layout(requests)
        new = self._new_rows(requests, lay)
        for r in requests:
            if not r.handle.finished and all(st.finished for st in r.handle.branches):  # nothing to generate
                self._finish(r.handle)
        if not bool(new.active.any()):
            return []
        inputs, f_idx = self._prefill(new, lay)
        f_list = f_idx.tolist()
        sampling = self._sampling(new, f_idx, f_list, new.params[f_idx]) if f_list else None
        logits, tokens = decode_step(self.gen.runner, inputs, new.cache, sampling)
        events = self._record(new, f_idx, f_list, tokens, logits)[0] if f_list else []
        if self._batch is None:
            self._batch = new
        else:
            self._batch.extend(new)
        return events

    def _layout(self, requests: list[_Request]):
        """One layout of the queued samples, each row's coordinates at its own branch stride."""
        gen = self.gen
        strides = [r.stride for r in requests]
        if len(requests) == 1:  # laid out already when it was added
            lay, built = requests[0].layout, max(strides[0], 1)
        else:
            built = strides[0] if len(set(strides)) == 1 and strides[0] > 0 else 1
            lay = build_flat_linear_layout(gen.tokenizer, [r.tokens for r in requests], pad_to=None,
                                           branch_stride=built, align_to=gen.align_to)
        lay = lay.to(gen.device)
        if any(s != built for s in strides):  # built at stride 1 (or 1 for stride 0): scale each row
            s = torch.tensor(strides, dtype=torch.long, device=gen.device)[:, None] // built
            lay.pos2d[..., 0] *= s
            lay.branch_coord = torch.where(lay.branch_coord >= 0, lay.branch_coord * s, lay.branch_coord)
        return lay

    def _new_rows(self, requests: list[_Request], lay) -> DecodeBatch:
        """The DecodeBatch of the queued samples (cache and history still empty)."""
        dev = self.gen.device
        B, W = len(requests), max(len(r.params) for r in requests)
        branches: list[BranchState | None] = [None] * (B * W)
        params = [SamplingParams()] * (B * W)
        for row, r in enumerate(requests):
            bid = lay.branch_ids[row]
            own = bid > 0
            order = torch.argsort(bid[own], stable=True)  # each branch's tokens together, in time order
            flat = lay.input_ids[row][own][order].tolist()
            ends = torch.bincount(bid[own], minlength=W + 1)[1:].cumsum(0).tolist()
            for k, (st, p) in enumerate(zip(r.branches, r.params)):
                branches[row * W + k], params[row * W + k] = st, p
                st.prompt_ids = flat[ends[k - 1] if k else 0:ends[k]]
        valid = (torch.arange(W, device=dev)[None, :] < lay.branch_counts[:, None]).reshape(-1)  # [B*W]
        limits = torch.tensor([st.max_new if st else 0 for st in branches], device=dev)
        for f in torch.nonzero(valid & (limits == 0)).squeeze(1).tolist():
            branches[f].finish = "length"
        prompt, first_time = prompt_by_time(lay.input_ids, lay.branch_ids, lay.time_ids, W)
        ptensors = SamplingTensors.from_params(params, dev)
        seen = None
        if bool(((ptensors.repetition_penalty != 1.0) & valid).any()):
            seen = prompt_seen(lay.input_ids, lay.branch_ids, W, self.gen.runner.vocab_size)
        none = torch.empty(0, device=dev)
        return DecodeBatch(
            width=W, samples=[r.handle.id for r in requests], branches=branches, valid=valid,
            active=valid & (limits > 0), coord=lay.branch_coord[:, 1:].reshape(-1),  # column 0 is the main
            gen_start=lay.branch_next_time[:, 1:].reshape(-1), first_time=first_time, next_time=none,
            last_tok=torch.full((B * W,), lay.pad_id, dtype=torch.long, device=dev), prompt=prompt, params=ptensors,
            seen=seen, n_real=none, sync=torch.tensor([r.sync for r in requests], device=dev),
            isolated=torch.tensor([r.isolated for r in requests], device=dev), cache=GrowingCache(),
            hist_time=none, hist_branch=none, length=0, pad_id=lay.pad_id)

    def _prefill(self, b: DecodeBatch, lay) -> tuple[StepInputs, torch.Tensor]:
        """Plan the prefill of new rows (and set their clocks and history). -> (inputs, sampled branches)."""
        B, W = b.rows, b.width
        # Time-synchronous rows are prefilled up to the earliest time at which one of their branches
        # generates, so that every later prompt token is fed in the same step as the generated tokens
        # it must see (then decoding equals one full forward with the time rule, for any alignment);
        # in the other rows branches never see each other, so the whole prompt is prefilled.
        big = torch.iinfo(torch.long).max
        tau = torch.where(b.valid, b.gen_start, big).view(B, W).amin(dim=1)
        tau = torch.where(b.sync, tau, big)  # [B]
        in_prefill = (lay.time_ids >= 0) & (lay.time_ids < tau[:, None])  # a prefix of each time-sorted row
        P = in_prefill.sum(dim=1)  # [B]
        Pm = int(P.max())
        pre_time = torch.where(in_prefill, lay.time_ids, -1)[:, :Pm]
        pre_branch = torch.where(in_prefill, lay.branch_ids, -1)[:, :Pm]
        limit = min(max((st.max_new for st in b.branches if st is not None), default=0), CAPACITY_STEPS)
        cap = Pm + W * (limit + int((b.gen_start - b.first_time).clamp_min(0).max()))
        b.cache = GrowingCache(cap)
        b.hist_time = torch.full((B, cap), -1, dtype=torch.long, device=lay.time_ids.device)
        b.hist_branch = torch.full((B, cap), -1, dtype=torch.long, device=lay.time_ids.device)
        b.hist_time[:, :Pm], b.hist_branch[:, :Pm], b.length = pre_time, pre_branch, Pm
        mask = rows_attention_mask(pre_time, pre_branch, b.mask_rule(), dtype=self.gen.mask_dtype)
        last_index = lay.branch_last_index[:, 1:].reshape(-1)
        f_idx = torch.nonzero(b.active & (last_index < P.repeat_interleave(W))).squeeze(1)  # last prompt token in
        # the next time each branch feeds: the row's time column, or the branch's own clock
        b.next_time = torch.where(b.sync.repeat_interleave(W), tau.repeat_interleave(W),
                                  torch.where(b.valid, b.gen_start, -1))
        b.n_real = P.clone()  # the flat index the training layout gives the next token of each row
        inputs = StepInputs(lay.input_ids[:, :Pm], mask, lay.position_ids()[:, :Pm], f_idx // W, last_index[f_idx])
        return inputs, f_idx

    # --- decoding ------------------------------------------------------------------------------------

    def _next_window(self) -> DecodeWindow | None:
        """Retire finished rows and plan the next decode steps; None when no branch generates any more."""
        b = self._batch
        while True:
            waiting = b.valid & (b.next_time < b.gen_start)  # prompt tokens still ahead
            feed = (b.active & (b.next_time >= b.gen_start)) | (waiting & (b.next_time >= b.first_time))
            if not bool(b.active.any()):
                self._batch = None
                return None
            alive = b.active.view(b.rows, b.width).any(dim=1)
            if not bool(alive.all()):  # finished samples leave: their lanes would cost compute
                keep = torch.nonzero(alive).squeeze(1)
                feed = feed.view(b.rows, b.width)[keep].reshape(-1)
                b.select_rows(keep)
            a = feed.view(b.rows, b.width)
            if not bool(a.any()):  # every branch still waits for its start time (explicit offsets)
                b.next_time = torch.where(b.valid, b.next_time + 1, b.next_time)
                continue
            remaining = max((st.remaining for st in b.branches if st is not None and not st.finished), default=1)
            return DecodeWindow(b, a, remaining, self.gen.step_mask_dtype)

    def _close_window(self) -> None:
        if self._window is not None:
            self._window.commit()
            self._window = None

    @staticmethod
    def _sampling(b: DecodeBatch, f_idx: torch.Tensor, f_list: list[int], params: SamplingTensors) -> StepSampling:
        """How branches `f_idx` sample: their settings, seen tokens and random streams."""
        generators = None if params.all_greedy else [b.branches[f].generator for f in f_list]
        return StepSampling(params, seen=b.seen[f_idx] if b.seen is not None else None, generators=generators)

    def _record(self, b: DecodeBatch, f_idx: torch.Tensor, f_list: list[int], tokens: torch.Tensor,
                logits: torch.Tensor) -> tuple[list[StepToken], bool]:
        """Book `[N]` sampled tokens of branches `f_idx`. -> (events, whether a branch finished)."""
        if b.seen is not None:
            b.seen[f_idx, tokens] = True
        b.last_tok[f_idx] = tokens
        events, done, branches = [], [], b.branches
        for i, (f, t) in enumerate(zip(f_list, tokens.tolist())):
            st = branches[f]
            text = st.accept(t, logits[i])
            if st.finish is not None:
                done.append(f)
            events.append(StepToken(st.sample, st.branch, t, text, st.finish))
        if done:
            b.active[torch.tensor(done, device=b.active.device)] = False
            for sid in {b.branches[f].sample for f in done}:
                h = self._open.get(sid)
                if h is not None and all(st.finished for st in h.branches):
                    self._finish(h)
        return events, bool(done)

    def _finish(self, handle: SampleHandle) -> None:
        """The sample's result, built once when its last branch finishes."""
        gen = self.gen
        self._open.pop(handle.id, None)
        sample = handle.sample
        main = sample.get("input_ids", sample.get("main"))
        res = SampleResult(main=gen.text_of(main) if main is not None else "")
        for content, st in zip(sample["branches"], handle.branches):
            res.branches.append(BranchResult(
                prompt=gen.text_of(content), prompt_ids=st.prompt_ids, token_ids=st.token_ids,
                text=st.final_text(gen.tokenizer), finish_reason=st.finish or "length",
                num_new_tokens=len(st.token_ids), step_logits=torch.stack(st.logits) if st.logits else None))
        handle.result = res
