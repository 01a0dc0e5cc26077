"""Parallel generation: decode every branch of several samples together, one forward per step.

A sample is a row of the layout format, ``{"main": str | ids (optional), "branches": [str | ids |
{"text" | "input_ids", "time_offset", ...}]}``. Samples are laid out as ONE batch (one row per
sample, see `parallel.layout`), prefilled once, then each decode step feeds the last token of every
still-active branch of every sample through a single forward against a growing KV cache. Isolated
branches at stride 0 with no main share nothing, so each of them gets a row of its own (a decode step
then attends over the branch's own keys, as batched decoding of separate prompts does).

    gen = ParallelGenerator(model, tokenizer, mask_mode="columnar")
    results = gen.generate([{"main": "Context: ...", "branches": ["Q1", "Q2"]}],
                           SamplingParams(do_sample=True, top_p=0.9), max_new_tokens=64, seed=0)
    results[0].branches[1].text, results[0].branches[1].finish_reason   # "eos" | "stop" | "length"

Continuous batching: `gen.session()` returns a `GenerationSession` that samples join and leave
while it decodes (`generate` is a loop over one):

    session = gen.session()
    handle = session.add(sample, sampling, max_new_tokens=64, stop_strings=["\\n"], seed=0,
                         mask_mode=None, branch_stride=None)   # -> SampleHandle (id, branches, result)
    events = session.step()     # one forward: the prefill of new samples, else one decode step
                                # -> [StepToken(sample, branch, token_id, text, finish_reason)]
    session.cancel(handle)      # a client went away: its branches end now and free their rows
    session.idle                # nothing queued, nothing generating; handle.result once finished

Samples never see each other (each is a row of its own); within a sample its mask applies. Random
streams are per branch: branch i of a sample added with `seed=s` samples from a generator seeded
s + i (`generate(seed=s)`: the j-th branch of the call, s + j), so a branch's tokens never depend on
what else is in the batch, concurrent samples give what each gives alone and n branches of one
prompt (`shared_prompt_sample`) give what n runs seeded s, s + 1, ... give. A cancelled branch
finishes with "cancelled".

The model is MiniMind or a Hugging Face causal LM patched with
`patch_model_with_interleaved_2d_rope` (possibly wrapped by PEFT), which take `position_ids`
`[B, T, 3]` = (branch coordinate, time, flat index) and a 4-D mask; any other causal LM takes plain
time positions and then decodes only samples whose branch coordinates are all 0 (prefix sharing).

Prefix sharing: with `branch_stride=0` (isolated mask only) every branch has coordinate 0, so a
branch continues its sample's main with ordinary 1D positions: the main is prefilled ONCE and each
branch decodes exactly as plain causal decoding of "main + branch" does, with ANY base model
(`shared_prompt_sample(prompt, n)` builds n samples of one prompt that way). Non-zero branch
coordinates (columnar decoding, or isolated branches at distinct coordinates) need a model tuned
for them: an untuned base model mixes up branches it cannot tell apart by position. With the
columnar mask stride 0 is refused, since branches at the same coordinate would be indistinguishable.

Decoding rules, as in the training layouts: a generated token keeps its branch's coordinate and
takes the branch's next time. In columnar mode (and whenever the rotary angle reads the flat index,
i.e. the `reference` scheme) decoding is time-synchronous: each row is prefilled up to the earliest
time at which one of its branches generates, then every step feeds one time column, i.e. the
remaining prompt tokens of longer prompts together with the generated tokens of the others, so the
cached sequence is exactly a training layout and every step's logits equal one full forward over it
(for any alignment). In isolated mode with the default scheme the branches cannot see each other,
so each row is prefilled whole and every branch keeps its own clock. A branch finishes on EOS (not
fed back), on a stop string or at its token limit; its tokens stay in the cache (visible to the
other branches under the columnar rule) but it is never fed again, and a sample whose branches have
all finished leaves the batch.

Speed: between two such events every step feeds the same lanes, so the step inputs (lanes,
positions, sampled rows, mask) are planned once per run of steps (`model.generation.window`) and a
step costs the forward plus a few small tensor ops; decode steps take an additive mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from model.generation.session import (
    FINISH_REASONS,
    BranchResult,
    GenerationSession,
    SampleHandle,
    SampleResult,
    StepToken,
)
from model.generation.step import ModelRunner, eval_mode
from parallel.layout import ALIGNMENTS, build_flat_linear_layout
from parallel.masks import check_mask_mode
from parallel.sampling import SamplingParams

__all__ = ["FINISH_REASONS", "BranchResult", "GenerationSession", "ParallelGenerator", "SampleHandle",
           "SampleResult", "StepToken", "check_branch_stride"]


def check_branch_stride(stride: int, mask_mode: str, runner: ModelRunner | None = None) -> int:
    """The one check of a decoding branch stride: >= 0, and 0 (prefix sharing) only with the isolated mask."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise ValueError(f"branch_stride must be an integer >= 0, got {stride!r}")
    if stride == 0 and mask_mode != "isolated":
        raise ValueError("branch_stride 0 (prefix sharing) needs the isolated mask (--mask isolated): under the "
                         f"{mask_mode} mask branches at the same coordinate and time would be indistinguishable")
    if stride == 0 and runner is not None and runner.reads_flat_index:
        raise ValueError("branch_stride 0 (prefix sharing) needs positions that ignore the flat index; this model's "
                         "'reference' 2D-RoPE scheme rotates by it, so a branch would not continue its main as plain "
                         "causal decoding does")
    return stride


def _default_stride(model, runner: ModelRunner) -> int:
    if not runner.takes_2d_positions:
        return 0  # a plain causal LM: coordinate 0 everywhere (prefix sharing)
    cfg = getattr(model, "config", None)
    pm = getattr(cfg, "parallelmind", None)
    if isinstance(pm, dict) and pm.get("branch_stride"):
        return int(pm["branch_stride"])
    return int(getattr(cfg, "branch_stride", None) or 128)


class ParallelGenerator:
    """Batched parallel decoding of samples of branches with one KV cache (see the module docstring)."""

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
        self.runner = ModelRunner(model)
        stride = _default_stride(model, self.runner) if branch_stride is None else branch_stride
        self.branch_stride = self.check_branch_stride(int(stride), mask_mode)
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
        # time-synchronous decoding of the default mask (see the module docstring)
        self.synchronous = mask_mode == "columnar" or self.runner.reads_flat_index

    def check_branch_stride(self, stride: int, mask_mode: str) -> int:
        return check_branch_stride(stride, mask_mode, self.runner)

    # --- samples ---------------------------------------------------------------------------------

    def session(self, *, stream_text: bool = True) -> GenerationSession:
        """A new `GenerationSession` on this generator's model (see the module docstring).

        stream_text: decode text incrementally for the step events (otherwise only with stop strings).
        """
        return GenerationSession(self, stream_text=stream_text)

    def shared_prompt_sample(self, prompt: str | Sequence[int], n: int) -> dict:
        """n branches that all continue one prompt: `{"main": prompt[:-1], "branches": [prompt[-1:]] * n}`.

        With `branch_stride=0` and the isolated mask the prompt is prefilled once and every branch
        decodes as that prompt alone would (n samples of one request).
        """
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if isinstance(prompt, str) else list(prompt)
        if not ids or n < 1:
            raise ValueError(f"shared_prompt_sample: needs a non-empty prompt and n >= 1 (got {len(ids)} tokens, n={n})")
        return {"main": ids[:-1], "branches": [ids[-1:] for _ in range(n)]}

    def tokenize_sample(self, sample, index: int, stride: int):
        """-> (the sample with every text replaced by its token ids, its layout alone at branch stride
        `max(stride, 1)`).

        Laying it out checks it (every error names the sample); the layout is reused when the
        sample is prefilled on its own."""
        if not isinstance(sample, dict) or not isinstance(sample.get("branches"), (list, tuple)) or not sample["branches"]:
            raise ValueError(f"sample {index}: field 'branches' must be a non-empty list")
        tok = self.tokenizer

        def ids(x):
            return tok(x, add_special_tokens=False)["input_ids"] if isinstance(x, str) and tok is not None else x
        out: dict = {}
        main = sample.get("input_ids", sample.get("main"))
        if main is not None:
            out["main"] = ids(main)
        branches = []
        for br in sample["branches"]:
            key = next((k for k in ("input_ids", "text", "content") if k in br), None) if isinstance(br, dict) else None
            if key is not None:
                br = {**{k: v for k, v in br.items() if k not in ("input_ids", "text", "content")},
                      "input_ids": ids(br[key])}
            branches.append(br if isinstance(br, dict) else ids(br))
        out["branches"] = branches
        try:
            lay = build_flat_linear_layout(tok, [out], branch_stride=max(stride, 1), align_to=self.align_to)
        except ValueError as e:
            raise ValueError(str(e).replace("sample 0", f"sample {index}", 1)) from None
        if stride and not self.runner.takes_2d_positions and bool((lay.pos2d[..., 0] != 0).any()):
            raise ValueError(f"sample {index}: this model takes 1D positions only (it is not patched with 2D RoPE), "
                             "so every branch coordinate must be 0: use branch_stride 0 with the isolated mask "
                             "(prefix sharing)")
        return out, lay

    @staticmethod
    def branch_params(sampling, n: int, index: int) -> list[SamplingParams]:
        """One `SamplingParams` per branch from None, one for all, or a list of n."""
        if sampling is None:
            return [SamplingParams()] * n
        if isinstance(sampling, SamplingParams):
            return [sampling] * n
        if isinstance(sampling, (list, tuple)) and len(sampling) == n and all(isinstance(x, SamplingParams)
                                                                              for x in sampling):
            return list(sampling)
        raise ValueError(f"sampling[{index}]: expected SamplingParams or a list of {n} (one per branch)")

    def eos_ids(self, eos_token_ids) -> set[int]:
        """None: the tokenizer's EOS and `<|im_end|>` (or the model's); otherwise the given ids."""
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

    def text_of(self, content) -> str:
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
    def generate(self, samples: Sequence[dict], sampling: SamplingParams | Sequence | None = None, *,
                 eos_token_ids: int | Sequence[int] | None = None, stop_strings: Sequence[str] = (),
                 max_new_tokens: int = 128, seed: int | None = None,
                 on_step: Callable[[int, list[StepToken]], None] | None = None,
                 return_step_logits: bool = False) -> list[SampleResult]:
        """Generate for every branch of every sample; results are in input order.

        sampling: one `SamplingParams` for all, one per sample, or per sample a list with one per branch.
        eos_token_ids: None = the tokenizer's EOS and `<|im_end|>`; an empty list = never stop on a token.
        max_new_tokens: default limit (a branch's `SamplingParams.max_new_tokens` overrides it).
        seed: the j-th branch of the call (counted over all samples, in order) samples from its own
            stream seeded `seed + j` (default: the first seed in `sampling`; none: random seeds).
        on_step(step, events): called after every sampling step (step 0 samples from the prompt).
        """
        if not isinstance(samples, (list, tuple)) or not samples:
            raise ValueError("generate: samples must be a non-empty list of {'main', 'branches'} dicts")
        for i, s in enumerate(samples):
            if not isinstance(s, dict) or not isinstance(s.get("branches"), (list, tuple)) or not s["branches"]:
                raise ValueError(f"sample {i}: field 'branches' must be a non-empty list")
        if sampling is None or isinstance(sampling, SamplingParams):
            sampling = [sampling] * len(samples)
        elif not isinstance(sampling, (list, tuple)) or len(sampling) != len(samples):
            raise ValueError(f"sampling: expected SamplingParams or a list with one entry per sample ({len(samples)})")
        params = [self.branch_params(s, len(smp["branches"]), i) for i, (s, smp) in enumerate(zip(sampling, samples))]
        if seed is None:
            seed = next((p.seed for ps in params for p in ps if p.seed is not None), None)
        session = self.session(stream_text=on_step is not None)
        offsets = [sum(len(ps) for ps in params[:i]) for i in range(len(params))]
        handles = [session.add(smp, ps, max_new_tokens=max_new_tokens, stop_strings=stop_strings,
                               eos_token_ids=eos_token_ids, seed=None if seed is None else seed + off,
                               return_step_logits=return_step_logits)
                   for smp, ps, off in zip(samples, params, offsets)]
        step = 0
        with eval_mode(self.model):
            while not session.idle:
                events = session.step()
                if events:
                    if on_step is not None:
                        on_step(step, events)
                    step += 1
        return [h.result for h in handles]
