"""Requests -> engine work: prompts rendered and tokenised, limits checked, samples laid out for the session.

How a request maps onto the generation engine (choice i of a request seeded s samples with seed s + i):

* one prompt, n choices: ONE sample `{"main": prompt[:-1], "branches": [prompt[-1:]] * n}` with the
  isolated mask and branch stride 0 (prefix sharing): the prompt is prefilled once and every branch
  continues it with plain 1D positions, exactly as an independent request would (a model whose
  2D-RoPE scheme reads the flat index cannot share a prefix: it gets n samples of one branch);
* several prompts (`/v1/completions` with a list): one such sample per prompt, choices numbered
  prompt by prompt (index = prompt * n + i, the OpenAI order);
* `parallel: {"branches": [...], "mask": ...}`: the prompt (the chat messages, or the completion
  prompt) is the sample's main and every branch one choice; the branches decode together with the
  model's branch stride and the requested mask (columnar: they see each other's earlier tokens).
  With a chat template each branch is a user turn with the generation prompt, and the messages
  are the main (like `scripts/parallel_generate.py --chat_template`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parallel.sampling import SamplingParams
from serving.engine import Part
from serving.protocol import APIError, ChatCompletionRequest, CompletionRequest, bad_request
from serving.reasoning import prompt_opens_thinking


@dataclass
class Limits:
    """What one request may ask for (the server's flags)."""

    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # the largest max_tokens a request may give
    default_max_tokens: int = 512  # when it gives none (cut to what the context leaves)
    max_n: int = 32  # choices per request: n x prompts, or the branches of a parallel request
    context_length: int | None = None  # the model's positions (prompt + answer), when it has a limit


@dataclass
class Work:
    parts: list[Part]
    num_choices: int
    prompt_tokens: int
    prompts: list[str] = field(default_factory=list)  # per choice: the prompt text (completions' echo)
    reasoning: list[bool] = field(default_factory=list)  # per choice: the answer starts inside <think>


class WorkBuilder:
    """Turns validated requests into `Work` for one model (see the module docstring)."""

    def __init__(self, generator, limits: Limits, *, parallel_mask: str = "columnar"):
        self.gen = generator
        self.tok = generator.tokenizer
        self.limits = limits
        self.parallel_mask = parallel_mask
        self.vocab_size = generator.runner.vocab_size
        try:  # prefix sharing needs positions that ignore the flat index (not the 'reference' scheme)
            generator.check_branch_stride(0, "isolated")
            self.prefix_sharing = True
        except ValueError:
            self.prefix_sharing = False

    # --- prompts -------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def chat_text(self, messages: list[dict], template_kwargs: dict | None, generation_prompt: bool) -> str:
        if not getattr(self.tok, "chat_template", None):
            raise bad_request("this model's tokenizer has no chat template; use /v1/completions", param="messages")
        try:
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                **(template_kwargs or {}))
        except Exception as e:  # the template rejected the conversation (jinja raise_exception, a bad kwarg)
            raise bad_request(f"the chat template failed: {type(e).__name__}: {e}", param="messages") from None
        if not isinstance(text, str):
            raise bad_request("the chat template did not render text", param="messages")
        return text

    @staticmethod
    def messages(req: ChatCompletionRequest) -> list[dict]:
        out = []
        for m in req.messages:
            msg = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.name is not None:
                msg["name"] = m.name
            out.append(msg)
        return out

    def _ids(self, prompt: str | list[int], param: str) -> list[int]:
        if isinstance(prompt, str):
            return self.encode(prompt)
        bad = next((t for t in prompt if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise bad_request(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})", param=param)
        return list(prompt)

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    # --- limits --------------------------------------------------------------------------------------

    def _max_new(self, req, prompt_len: int) -> int:
        lim = self.limits
        if prompt_len == 0:
            raise bad_request("the prompt is empty", param="prompt" if isinstance(req, CompletionRequest)
                              else "messages")
        if prompt_len > lim.max_prompt_tokens:
            raise bad_request(f"the prompt has {prompt_len} tokens; this server accepts at most "
                              f"{lim.max_prompt_tokens} (--max_prompt_tokens)",
                              param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
                              code="context_length_exceeded")
        room = None if lim.context_length is None else lim.context_length - prompt_len
        if room is not None and room < 1:
            raise bad_request(f"the prompt has {prompt_len} tokens, which fills this model's context of "
                              f"{lim.context_length}", param="messages" if isinstance(req, ChatCompletionRequest)
                              else "prompt", code="context_length_exceeded")
        if req.max_tokens is not None:
            if req.max_tokens > lim.max_tokens:
                raise bad_request(f"max_tokens {req.max_tokens} is more than this server allows ({lim.max_tokens}, "
                                  "--max_tokens_limit)", param="max_tokens")
            if room is not None and req.max_tokens > room:
                raise bad_request(f"the prompt ({prompt_len} tokens) plus max_tokens ({req.max_tokens}) exceeds this "
                                  f"model's context of {lim.context_length}", param="max_tokens",
                                  code="context_length_exceeded")
            return req.max_tokens
        return lim.default_max_tokens if room is None else min(lim.default_max_tokens, room)

    def _check_choices(self, n: int, param: str) -> None:
        if n > self.limits.max_n:
            raise bad_request(f"{n} choices were asked for; this server returns at most {self.limits.max_n} per request "
                              "(--max_n)", param=param)

    # --- requests ------------------------------------------------------------------------------------

    @staticmethod
    def sampling(req) -> SamplingParams:
        temperature = 1.0 if req.temperature is None else req.temperature
        try:
            return SamplingParams(temperature=temperature, top_p=1.0 if req.top_p is None else req.top_p,
                                  top_k=max(0, req.top_k or 0), do_sample=temperature > 0,
                                  repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty)
        except ValueError as e:
            raise bad_request(str(e)) from None

    def _kwargs(self, req, max_new: int, seed: int | None, **extra) -> dict:
        return dict(sampling=self.sampling(req), max_new_tokens=max_new, stop_strings=req.stop_strings,
                    eos_token_ids=[] if req.ignore_eos else None, seed=seed, **extra)

    def _samples_of(self, req, ids: list[int], n: int, first_choice: int, max_new: int) -> list[Part]:
        """n choices of one prompt: one sample with a shared prefix, or n samples where that is impossible."""
        seed = None if req.seed is None else req.seed + first_choice
        choices = list(range(first_choice, first_choice + n))
        if self.prefix_sharing:
            sample = {"main": ids[:-1], "branches": [ids[-1:] for _ in range(n)]} if len(ids) > 1 else \
                {"branches": [list(ids) for _ in range(n)]}
            return [Part(sample, self._kwargs(req, max_new, seed, mask_mode="isolated", branch_stride=0), choices)]
        return [Part({"branches": [list(ids)]},
                     self._kwargs(req, max_new, None if seed is None else seed + i, mask_mode="isolated"), [c])
                for i, c in enumerate(choices)]

    def _parallel(self, req, main_ids: list[int] | None, branch_ids: list[list[int]], prompt_text: str,
                  reasoning: list[bool]) -> Work:
        self._check_choices(len(branch_ids), "parallel.branches")
        total = (len(main_ids) if main_ids else 0) + sum(len(b) for b in branch_ids)
        longest = (len(main_ids) if main_ids else 0) + max(len(b) for b in branch_ids)
        if any(not b for b in branch_ids):
            raise bad_request("a branch is empty", param="parallel.branches")
        max_new = self._max_new(req, longest)
        if total > self.limits.max_prompt_tokens:
            raise bad_request(f"the main and branches have {total} tokens; this server accepts at most "
                              f"{self.limits.max_prompt_tokens} (--max_prompt_tokens)", param="parallel",
                              code="context_length_exceeded")
        sample = {"branches": branch_ids}
        if main_ids:
            sample["main"] = main_ids
        mask = req.parallel.mask or self.parallel_mask
        try:  # the engine's own checks, here so that a sample this model cannot decode is a 400 up front
            self.gen.check_branch_stride(self.gen.branch_stride, mask)
            self.gen.tokenize_sample(sample, 0, self.gen.branch_stride)
        except ValueError as e:
            raise bad_request(str(e).replace("sample 0: ", ""), param="parallel") from None
        part = Part(sample, self._kwargs(req, max_new, req.seed, mask_mode=mask), list(range(len(branch_ids))))
        return Work([part], len(branch_ids), total, [prompt_text] * len(branch_ids), reasoning)

    def chat(self, req: ChatCompletionRequest) -> Work:
        messages = self.messages(req)
        if req.parallel is not None:
            main = self.chat_text(messages, req.chat_template_kwargs, False) if messages else ""
            texts = [b if isinstance(b, str) else self._decode(b) for b in req.parallel.branches]
            rendered = [self.chat_text([{"role": "user", "content": t}], req.chat_template_kwargs, True) for t in texts]
            return self._parallel(req, self.encode(main) if main else None, [self.encode(r) for r in rendered], main,
                                  [prompt_opens_thinking(r) for r in rendered])
        text = self.chat_text(messages, req.chat_template_kwargs, True)
        ids = self.encode(text)
        self._check_choices(req.n, "n")
        max_new = self._max_new(req, len(ids))
        return Work(self._samples_of(req, ids, req.n, 0, max_new), req.n, len(ids), [text] * req.n,
                    [prompt_opens_thinking(text)] * req.n)

    def completion(self, req: CompletionRequest) -> Work:
        if req.parallel is not None:
            main_ids = self.encode(req.prompt) if req.prompt else None
            branches = [self._ids(b, f"parallel.branches[{k}]") for k, b in enumerate(req.parallel.branches)]
            return self._parallel(req, main_ids, branches, req.prompt, [False] * len(branches))
        prompts = req.prompts()
        self._check_choices(len(prompts) * req.n, "n")
        parts, texts, prompt_tokens = [], [], 0
        encoded = [self._ids(p, "prompt" if len(prompts) == 1 else f"prompt[{j}]") for j, p in enumerate(prompts)]
        budgets = [self._max_new(req, len(ids)) for ids in encoded]
        for j, (p, ids, max_new) in enumerate(zip(prompts, encoded, budgets)):
            parts += self._samples_of(req, ids, req.n, j * req.n, max_new)
            texts += [p if isinstance(p, str) else self._decode(ids)] * req.n
            prompt_tokens += len(ids)
        return Work(parts, len(prompts) * req.n, prompt_tokens, texts, [False] * len(texts))


def check_model_name(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise APIError(404, f"the model '{requested}' does not exist; this server serves '{served}'",
                       param="model", code="model_not_found")
