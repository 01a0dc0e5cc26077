"""The OpenAI wire format: request models (validated with pydantic), the error body, response pieces.

Requests are validated strictly: a parameter this server does not implement is refused with a 400
naming it (`unsupported_parameter`), never accepted and ignored; a JSON `null` counts as "not given".
Every error is one OpenAI-style body:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_value"}}

Extensions beyond the OpenAI reference (vLLM uses the same names where it has them): `top_k`,
`repetition_penalty`, `ignore_eos`, `chat_template_kwargs`, and `parallel`
(`{"branches": [...], "mask": "columnar" | "isolated"}`: the prompt is the shared main and every
branch one choice, decoded together in one sample; see serving/work.py).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parallel.names import MASK_MODES

# The largest seed: branch i of a request seeded s samples with s + i (torch takes seeds below 2**64).
MAX_SEED = 2**63 - 1
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


class APIError(Exception):
    """An error answered as `{"error": {...}}` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


# --- requests ----------------------------------------------------------------------------------------

class ParamError(ValueError):
    """A check across fields (a model validator) that names the parameter at fault."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class StreamOptions(_Strict):
    include_usage: bool | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None  # a previous answer's reasoning, as this server returns it

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ParallelSpec(_Strict):
    """The `parallel` extension: the prompt is the main, each branch one choice of ONE sample."""

    branches: list[str | list[int]] = Field(min_length=1)
    mask: Literal[MASK_MODES] | None = None  # type: ignore[valid-type]  # default: the server's --mask


class _Sampling(_Strict):
    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    repetition_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    user: str | None = None  # an end-user id for the caller's own records; nothing here depends on it
    parallel: ParallelSpec | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v):
        if v not in (None, 0, 0.0):
            raise ValueError("is not supported (only 0); use repetition_penalty (the CTRL penalty) instead")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        for s in stops:
            if not s or len(s) > MAX_STOP_LENGTH:
                raise ValueError(f"stop strings must have 1 to {MAX_STOP_LENGTH} characters")
        return stops

    @model_validator(mode="after")
    def _check(self):
        if self.stream_options is not None and not self.stream:
            raise ParamError("stream_options", "is only allowed with stream: true")
        if self.parallel is not None and self.n != 1:
            raise ParamError("n", "must be 1 with 'parallel' (every branch is one choice)")
        return self

    @property
    def stop_strings(self) -> list[str]:
        return list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_chat(self):
        if not self.messages and self.parallel is None:
            raise ParamError("messages", "must not be empty")
        if self.top_logprobs is not None and not self.logprobs:
            raise ParamError("top_logprobs", "needs logprobs: true")
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ParamError("max_tokens", "and max_completion_tokens differ; give one")
            self.max_tokens = self.max_completion_tokens
        return self

    @property
    def num_logprobs(self) -> int | None:
        """None: no logprobs; k: the chosen token's logprob and the k most likely."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v):
        raise ValueError("is not supported (no fill-in-the-middle)")

    @model_validator(mode="after")
    def _check_completion(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ParamError("best_of", "other than n is not supported (every sample is returned)")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ParamError("prompt", "must not be empty")
        if self.parallel is not None and not isinstance(self.prompt, str):
            raise ParamError("prompt", "must be one string with 'parallel' (it is the shared main)")
        return self

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompts of the request: one string, one list of token ids, or several of either."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


_MESSAGES = {
    "extra_forbidden": "is not a supported parameter",
    "missing": "is required",
}
# what a field of several accepted types takes (pydantic reports one error per alternative)
_EXPECTED = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "stop": "a string or a list of strings",
    "messages.N.content": "a string or a list of parts of type 'text' (only text is supported)",
    "parallel.branches.N": "a string or a list of token ids",
}
_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param_of(loc) -> tuple[str | None, bool]:
    """pydantic's error location -> ("messages.0.content", whether a union alternative was named in it)."""
    keep, alternative = [], False
    for x in loc:
        if isinstance(x, int) or (_FIELD.match(str(x)) and str(x) not in _TYPE_NAMES):
            keep.append(str(x))
        else:
            alternative = True
    return ".".join(keep) or None, alternative


def parse_request(model: type[_Strict], data: Any) -> _Strict:
    """Validate a decoded JSON body; -> the request, or APIError(400) naming the first bad field."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    data = {k: v for k, v in data.items() if v is not None}  # null = not given (the OpenAI convention)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param, alternative = _param_of(err.get("loc", ()))
        kind = err.get("type", "")
        msg = _MESSAGES.get(kind, err.get("msg", "is invalid"))
        msg = msg.removeprefix("Value error, ")
        if alternative and param is not None:
            shape = re.sub(r"\.\d+(?=\.|$)", ".N", param)
            parent = next((k for k in _EXPECTED if shape == k or shape.startswith(k + ".")), None)
            if parent is not None:
                param = ".".join(param.split(".")[:parent.count(".") + 1])
                msg = f"must be {_EXPECTED[parent]}"
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParamError):
            param, msg = cause.param, str(cause)
        code = "unsupported_parameter" if kind == "extra_forbidden" else "invalid_value"
        if msg[:1].isupper():  # pydantic's own sentences: "Input should be ..."
            msg = msg[0].lower() + msg[1:]
            text = f"'{param}': {msg}" if param else msg
        else:
            text = f"'{param}' {msg}" if param else msg
        raise bad_request(text, param=param, code=code) from None


# --- responses ---------------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(engine_reason: str | None) -> str | None:
    """The engine's "eos" | "stop" | "length" -> OpenAI's "stop" | "length"."""
    if engine_reason is None:
        return None
    return "length" if engine_reason == "length" else "stop"
