"""Tokenizer helpers: the repo's default byte-level BPE tokenizer, training one, and loading one.

The default tokenizer lives in this folder (`model/tokenizer.json`, `model/tokenizer_config.json`,
`model/chat_template.jinja`); `scripts/train_tokenizer.py` produces it from the bundled corpus.
Every script uses it when no `--tokenizer` / `--tokenizer_path` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2

# ChatML, as Qwen uses it: one `<|im_start|>{role}\n{content}<|im_end|>\n` block per message and
# `<|im_start|>assistant\n` as the generation prompt. No default system message unless asked for, so
# a branch rendered here is exactly what a user-supplied conversation says. The template option
# `default_system` (`apply_chat_template(messages, default_system=MINILLM_DEFAULT_SYSTEM)`) opens a
# conversation that has no system message with that system turn, as MiniLLM's template does.
MINILLM_DEFAULT_SYSTEM = "You are a helpful assistant"
CHATML_TEMPLATE = (
    "{% if default_system is defined and default_system and (messages | length == 0 or "
    "messages[0]['role'] != 'system') %}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def with_default_system(messages: list[dict], system: str | None) -> list[dict]:
    """`messages` opened by a `system` turn when they have none (MiniLLM's default system turn).

    The same rule as the template option `default_system`, for any tokenizer's template (a checkpoint's
    own tokenizer, a Hugging Face model's); `system` None or "" leaves the conversation as it is.
    """
    if not system or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 6400, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer with the ChatML special tokens at ids 0, 1, 2.

    Returns a transformers fast tokenizer (pad `<|endoftext|>`, bos `<|im_start|>`, eos `<|im_end|>`)
    with the ChatML chat template attached; save it with `.save_pretrained(dir)`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} for a byte-level BPE, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(t)
        if got != i:  # the whole toolkit relies on these ids
            raise RuntimeError(f"special token {t} got id {got}, expected {i}")
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=32768,
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


def train_and_save_tokenizer(texts: Callable[[], Iterable[str]], out_dir: str | Path, vocab_size: int = 6400):
    """Train the byte-level BPE on `texts()` and save it to `out_dir`. -> (tokenizer, number of texts).

    `texts` is called twice, for two streaming passes: the first counts (and lets the reader validate)
    every text, so a bad record is reported before minutes of training and never from inside the Rust
    trainer; the second trains.
    """
    n = sum(1 for _ in texts())
    if n == 0:
        raise ValueError(f"no texts to train a tokenizer on (writing to {out_dir})")
    tok = train_bpe_tokenizer(texts(), vocab_size=vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return tok, n


def load_tokenizer(path: str | Path | None = None):
    """Load a tokenizer folder (default: the repo's `model/`), with a clear error when it is missing."""
    from transformers import AutoTokenizer

    p = Path(path) if path is not None else DEFAULT_TOKENIZER_DIR
    if p.exists():
        if p.is_dir() and not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
            raise FileNotFoundError(
                f"tokenizer folder {p} has no tokenizer.json; build the default one with "
                "`python scripts/train_tokenizer.py` or pass --tokenizer <folder>"
            )
        tok = AutoTokenizer.from_pretrained(str(p))
    else:
        if path is None:
            raise FileNotFoundError(f"default tokenizer {p} is missing; run `python scripts/train_tokenizer.py`")
        from model.hub import require_hub

        require_hub("tokenizer", str(path))  # fails at once, with a clear message, when offline
        tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:  # left unset by many HF tokenizers; pads are masked, so eos is a safe filler
        tok.pad_token = tok.eos_token
    return tok
