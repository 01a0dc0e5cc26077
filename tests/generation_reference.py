"""Differential reference of the generation engine: randomised cases, their tokens and every step's logits.

`tests/model/test_generation_reference.py` re-runs every case and requires the same tokens, texts,
finish reasons, streamed events and bit-identical step logits as the recorded ones. The cases cover
tiny MiniMind (additive, reference and fpe positions) and tiny patched Qwen2 / Llama (SDPA and eager),
both masks, both alignments, explicit time offsets, mains, EOS, stop strings, greedy and seeded
sampling, repetition penalties, per-branch token limits (branches finishing at different steps,
samples leaving the batch early) and several samples per batch.

Regenerate the fixture deliberately, only when the engine's numbers are meant to change:

    python tests/generation_reference.py                 # rewrites tests/model/data/generation_reference.pt
    python tests/generation_reference.py --only sampling # re-records only the cases that sample

The fixture stores the raw logits of a few cases and SHA-256 hashes of the others, plus a platform
probe (a hash of one plain forward of every model): on a machine whose kernels round differently the
probe differs, and the test compares the raw logits with a tolerance instead of the hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent / "model" / "data" / "generation_reference.pt"
STRIDE = 16
NUM_CASES = 48
RAW_CASES = 10  # cases whose raw logits are stored (the others: hashes)
MODEL_KEYS = ("minimind-additive", "minimind-reference", "minimind-fpe", "qwen2-additive", "qwen2-reference",
              "llama-eager-additive", "minimind-text")
WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing about rivers".split()


# --- models ----------------------------------------------------------------------------------------

def build_model(key: str, tiny_hf_dirs: dict, tokenizer):
    """The tiny model of a case key (built exactly as the engine tests build theirs)."""
    from conftest import load_hf, tiny_minimind

    from parallel.rope2d import patch_model_with_interleaved_2d_rope

    kind, _, scheme = key.rpartition("-")
    if kind == "minimind":
        if scheme == "fpe":
            return tiny_minimind(seed=5, tie_word_embeddings=False, pe="fpe", branch_stride=STRIDE)
        if scheme == "text":
            return tiny_minimind(seed=2, tie_word_embeddings=False, vocab_size=len(tokenizer), branch_stride=STRIDE)
        return tiny_minimind(seed=3, tie_word_embeddings=False, rope_2d_scheme=scheme, branch_stride=STRIDE)
    arch, _, attn = kind.partition("-")
    model = load_hf(tiny_hf_dirs[arch], attn=attn or "sdpa")
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, scheme=scheme, branch_stride=STRIDE)
    return model


def vocab_of(key: str, tokenizer) -> int:
    return len(tokenizer) if key.endswith("text") else (300 if key.startswith("minimind") else 256)


def digest(t: torch.Tensor) -> str:
    t = t.detach().float().contiguous().cpu()
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


def platform_probe(models: dict) -> dict:
    """Hash of one plain forward of every model: equal iff this machine's kernels round as the recorder's did."""
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 11]])
    with torch.no_grad():
        return {k: digest(m(ids).logits) for k, m in sorted(models.items())}


def tokenizer_digest(tokenizer) -> str:
    return hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


# --- cases -----------------------------------------------------------------------------------------

def _ids(rng: random.Random, lo: int, hi: int) -> list[int]:
    return [rng.randrange(3, 250) for _ in range(rng.randint(lo, hi))]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _sampling(rng: random.Random) -> dict:
    p: dict = {}
    if rng.random() < 0.35:
        p.update(do_sample=True, temperature=rng.choice([0.7, 1.0, 1.3]), top_k=rng.choice([0, 0, 5]),
                 top_p=rng.choice([1.0, 0.8]))
    if rng.random() < 0.2:
        p["repetition_penalty"] = rng.choice([1.3, 0.8])
    if rng.random() < 0.5:
        p["max_new_tokens"] = rng.randint(0, 8)
    return p


def make_case(i: int, rng: random.Random) -> dict:
    """One randomised case (plain data: it is stored in the fixture and loaded with weights_only=True)."""
    key = MODEL_KEYS[i % len(MODEL_KEYS)]
    text = key.endswith("text")
    samples, sampling = [], []
    for _ in range(rng.randint(1, 3)):
        sample: dict = {}
        if rng.random() < 0.5:
            sample["main"] = _text(rng, 1, 4) if text else _ids(rng, 1, 6)
        branches = []
        for _ in range(rng.randint(1, 4)):
            content = _text(rng, 1, 4) if text else _ids(rng, 1, 7)
            if rng.random() < 0.25:
                branches.append({"text" if text else "input_ids": content, "time_offset": rng.randint(0, 4)})
            else:
                branches.append(content)
        sample["branches"] = branches
        samples.append(sample)
        sampling.append(_sampling(rng) if rng.random() < 0.5 else [_sampling(rng) for _ in branches])
    return {"model": key, "mask": rng.choice(["columnar", "isolated"]), "align": rng.choice(["left", "right"]),
            "samples": samples, "sampling": sampling, "max_new_tokens": rng.randint(1, 8),
            "seed": rng.randrange(1000), "eos": [], "stops": [], "stream": rng.random() < 0.6,
            # the model's own logits (logits_to_keep) instead of the decoder + head split
            "split": not (key.startswith(("qwen2", "llama")) and rng.random() < 0.3)}


def _pick_eos(rng: random.Random, record: dict) -> list[int]:
    """A token some branch generates after its first step (so that branch, and maybe others, stop on it)."""
    late = [t for smp in record["samples"] for br in smp for t in br["tokens"][1:]]
    return [rng.choice(late)] if late else []


def _pick_stop(rng: random.Random, record: dict) -> list[str]:
    texts = [br["text"] for smp in record["samples"] for br in smp if len(br["text"]) >= 4]
    if not texts:
        return []
    t = rng.choice(texts)
    a = rng.randrange(1, len(t) - 2)
    return [t[a:a + rng.randint(1, 2)]]


# --- running ---------------------------------------------------------------------------------------

def run_case(case: dict, models: dict, tokenizer, keep_raw: bool = False) -> dict:
    """Generate a case with the current engine; -> tokens, texts, finish reasons, logits hashes, events hash."""
    from model.parallel_generation import ParallelGenerator
    from parallel.sampling import SamplingParams

    key = case["model"]
    tok = tokenizer if key.endswith("text") else None
    gen = ParallelGenerator(models[key], tok, mask_mode=case["mask"], branch_stride=STRIDE, align_to=case["align"])
    if not case["split"]:
        gen.runner.decoder = gen.runner.head = None
    sampling = [SamplingParams(**s) if isinstance(s, dict) else [SamplingParams(**x) for x in s]
                for s in case["sampling"]]
    events: list = []

    def on_step(step, evs):
        events.extend((step, e.sample, e.branch, e.token_id, e.text, e.finish_reason) for e in evs)

    res = gen.generate(case["samples"], sampling, eos_token_ids=case["eos"], stop_strings=case["stops"],
                       max_new_tokens=case["max_new_tokens"], seed=case["seed"],
                       on_step=on_step if case["stream"] else None, return_step_logits=True)
    samples = []
    for smp in res:
        out = []
        for br in smp.branches:
            logits = br.step_logits if br.step_logits is not None else torch.zeros(0)
            rec = {"tokens": list(br.token_ids), "text": br.text, "finish": br.finish_reason,
                   "prompt_ids": list(br.prompt_ids), "logits_sha": digest(logits)}
            if keep_raw:
                rec["logits"] = logits.clone()
            out.append(rec)
        samples.append(out)
    return {"samples": samples, "events_sha": hashlib.sha256(repr(events).encode()).hexdigest(),
            "num_events": len(events)}


def samples_with_sampling(case: dict) -> bool:
    flat = [s if isinstance(s, dict) else x for s in case["sampling"] for x in ([s] if isinstance(s, dict) else s)]
    return any(p.get("do_sample") for p in flat)


def build_all_models(tiny_hf_dirs: dict, tokenizer) -> dict:
    return {k: build_model(k, tiny_hf_dirs, tokenizer) for k in MODEL_KEYS}


def record(tiny_hf_dirs: dict, tokenizer, only_sampling: bool = False) -> dict:
    """Build the cases and record what the current engine gives; `only_sampling` keeps every case and
    every greedy expectation of the existing fixture and re-records the cases that sample."""
    models = build_all_models(tiny_hf_dirs, tokenizer)
    if only_sampling:
        cases = torch.load(FIXTURE, weights_only=True)["cases"]
        for c in cases:
            if samples_with_sampling(c["case"]):
                c["expected"] = run_case(c["case"], models, tokenizer, keep_raw="logits" in
                                         c["expected"]["samples"][0][0])
    else:
        rng = random.Random(20260401)
        cases = []
        for i in range(NUM_CASES):
            case = make_case(i, rng)
            probe_run = run_case(case, models, tokenizer)  # without EOS / stops: pick them from what it generates
            if rng.random() < 0.4:
                case["eos"] = _pick_eos(rng, probe_run)
            if case["model"].endswith("text") and rng.random() < 0.7:
                case["stops"] = _pick_stop(rng, probe_run)
            cases.append({"case": case, "expected": run_case(case, models, tokenizer, keep_raw=i < RAW_CASES)})
    return {"version": 1, "torch": str(torch.__version__), "probe": platform_probe(models),
            "tokenizer_sha": tokenizer_digest(tokenizer), "stride": STRIDE, "cases": cases}


def local_fixtures(tmp: Path) -> tuple[dict, object]:
    """The same tiny HF folders and tokenizer as tests/conftest.py's fixtures."""
    from conftest import HF_ARCHS, build_tiny_hf, tiny_corpus

    from model.tokenizer import load_tokenizer, train_bpe_tokenizer

    (tmp / "tok").mkdir()
    train_bpe_tokenizer(tiny_corpus(), vocab_size=512).save_pretrained(str(tmp / "tok"))
    dirs = {a: build_tiny_hf(a, tmp / a) for a in HF_ARCHS}
    return dirs, load_tokenizer(tmp / "tok")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["sampling"], default=None, help="re-record only the cases that sample")
    p.add_argument("--out", default=str(FIXTURE))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        dirs, tok = local_fixtures(Path(d))
        fixture = record(dirs, tok, only_sampling=args.only == "sampling")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(fixture, tmp)
    tmp.replace(out)
    n_steps = sum(len(b["tokens"]) for c in fixture["cases"] for s in c["expected"]["samples"] for b in s)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {len(fixture['cases'])} cases, {n_steps} tokens")
    return 0


if __name__ == "__main__":
    ROOT = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import conftest  # noqa: F401  (thread settings and offline environment, as in the tests)

    sys.exit(main())
