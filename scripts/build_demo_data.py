"""Build the bundled demo corpus under `dataset/` (deterministic: the same seed gives byte-identical files).

    python scripts/build_demo_data.py                       # defaults: seed 1234, ~40k pretraining docs
    python scripts/build_demo_data.py --seed 7 --out_dir out/demo --n_pretrain 2000 --n_parallel 500
    python scripts/build_demo_data.py --train_tokenizer     # also (re)train the tokenizer on the new text

Writes pretrain_demo.jsonl, pretrain_demo_val.jsonl, parallel_demo.jsonl, sft_demo.jsonl, dpo_demo.jsonl,
eval_tasks_demo.jsonl and eval_prompts_demo.jsonl (formats: `parallel_data/demo/corpus.py`),
reason_demo.jsonl (`parallel_data/demo/posttrain.py`) and rl_prompts_demo.jsonl
(`parallel_data/demo/rl_prompts.py`), then prints a summary. Last, it writes `.demo_corpus`, the
fingerprint of the generators, seed, sizes and tokenizer the files come from: `make demo` and the other
scripts that need the default corpus rebuild it when the fingerprint differs (after a code change). Also runs as `python -m scripts.build_demo_data`.

Chicken and egg: the default tokenizer (`model/tokenizer.json`) is trained on pretrain_demo.jsonl by
`scripts/train_tokenizer.py`, while parallel_demo.jsonl stores `answer_offset`s counted in tokens of
that tokenizer (`--tokenizer`). So the text files are written first; then, if the tokenizer folder has no
tokenizer.json, the script stops (exit status 2) before parallel_demo.jsonl and says to run
`python scripts/train_tokenizer.py` and rerun it, or trains it itself with `--train_tokenizer`. The
tokenizer in `model/` is committed, so a fresh clone builds everything in one call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.tokenizer import DEFAULT_TOKENIZER_DIR, load_tokenizer, train_and_save_tokenizer
from parallel_data.demo.corpus import (
    CORPUS_STAMP,
    DEFAULT_SEED,
    FILE_NAMES,
    DemoSizes,
    attach_answer_offsets,
    check_no_leaks,
    corpus_fingerprint,
    generate_demo_corpus,
    heldout_from_eval,
)
from parallel_data.demo.posttrain import DEFAULT_SIZES, POSTTRAIN_FILES, build_posttrain
from parallel_data.demo.rl_prompts import RL_PROMPTS_FILE, build_rl_prompts
from parallel_data.io import DataError, iter_jsonl_field, one_line, write_jsonl_atomic

TOKENIZER_FREE = ("pretrain", "val", "sft", "dpo", "eval_tasks", "eval_prompts")  # written before the tokenizer step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="dataset", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER_DIR),
                   help="tokenizer folder used to count answer_offset tokens (default: the repo's model/)")
    p.add_argument("--train_tokenizer", action="store_true",
                   help="(re)train the tokenizer folder on the new pretrain_demo.jsonl before the parallel file")
    p.add_argument("--vocab_size", type=int, default=6400, help="vocabulary size for --train_tokenizer")
    d = DemoSizes()
    for name, help_ in (("pretrain", "pretraining documents"), ("val", "held-out pretraining documents"),
                        ("parallel", "grouped parallel records"), ("sft", "SFT conversations"),
                        ("dpo", "DPO pairs"), ("eval_tasks", "independent eval tasks"),
                        ("eval_groups", "eval fact contexts (4..16 questions each)"),
                        ("eval_peer", "eval peer groups (16 branches each)")):
        p.add_argument(f"--n_{name}", type=int, default=getattr(d, name), help=f"{help_} (default: %(default)s)")
    p.add_argument("--n_reason", type=int, default=DEFAULT_SIZES["reason"],
                   help="R1-style reasoning conversations, reason_demo.jsonl (default: %(default)s)")
    return p


def _looks_local(name: str) -> bool:
    """A Hub id is `owner/name`; anything else (or anything that exists) is a local path."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1


def _missing_tokenizer_message(path: str, exists: bool) -> str:
    what = "has no tokenizer.json" if exists else "does not exist"
    return (f"tokenizer folder {path} {what}; parallel_demo.jsonl needs a tokenizer to count answer "
            f"offsets in tokens. Train it on the pretraining text just written: `python scripts/train_tokenizer.py "
            f"--out_dir {path}` and rerun this script, or rerun it with --train_tokenizer")


def resolve_tokenizer(args: argparse.Namespace, pretrain_path: Path):
    """Load (or with --train_tokenizer, first train) the tokenizer; raise FileNotFoundError with the fix."""
    name = args.tokenizer
    local = _looks_local(name)
    if args.train_tokenizer:
        if not local:
            raise ValueError(f"--train_tokenizer needs a local folder, got the Hub name {name!r}")
        t0 = time.time()
        _, n = train_and_save_tokenizer(lambda: iter_jsonl_field(pretrain_path), name, vocab_size=args.vocab_size)
        print(f"trained the tokenizer on {n} documents in {time.time() - t0:.1f}s -> {name}")
    elif local and not (Path(name).expanduser() / "tokenizer.json").exists():
        raise FileNotFoundError(_missing_tokenizer_message(name, Path(name).expanduser().is_dir()))
    try:
        return load_tokenizer(Path(name).expanduser() if local else name)
    except OSError as e:
        raise FileNotFoundError(f"{one_line(e)}; to build the default tokenizer run "
                                "`python scripts/train_tokenizer.py`") from e


def _summary(out_dir: Path, written: list[str]) -> None:
    print(f"{'file':<28}{'lines':>9}{'MB':>9}")
    names = {**FILE_NAMES, **POSTTRAIN_FILES, "rl_prompts": RL_PROMPTS_FILE}
    for name in written:
        path = out_dir / names[name]
        with open(path, "rb") as f:
            lines = sum(1 for _ in f)
        print(f"{names[name]:<28}{lines:>9}{path.stat().st_size / 1e6:>9.2f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = DemoSizes(pretrain=args.n_pretrain, val=args.n_val, parallel=args.n_parallel, sft=args.n_sft,
                      dpo=args.n_dpo, eval_tasks=args.n_eval_tasks, eval_groups=args.n_eval_groups,
                      eval_peer=args.n_eval_peer)
    if min(*vars(sizes).values(), args.n_reason) < 0 or args.vocab_size < 1:
        print("error: sizes must be >= 0 and --vocab_size > 0", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    t0 = time.time()
    corpus = generate_demo_corpus(args.seed, sizes)  # parallel records stay raw until the tokenizer is known
    written = []
    for name in TOKENIZER_FREE:  # pretrain first: the tokenizer is trained on it
        write_jsonl_atomic(out_dir / FILE_NAMES[name], corpus[name])
        written.append(name)
    for name, records in build_posttrain(args.seed, heldout_from_eval(corpus["eval_tasks"]),
                                         {"reason": args.n_reason}).items():  # parallel_data/demo/posttrain.py
        write_jsonl_atomic(out_dir / POSTTRAIN_FILES[name], records)
        written.append(name)
    write_jsonl_atomic(out_dir / RL_PROMPTS_FILE, build_rl_prompts(args.seed, held=heldout_from_eval(
        corpus["eval_tasks"])))  # verifiable PPO / GRPO prompts (parallel_data/demo/rl_prompts.py)
    written.append("rl_prompts")
    print(f"generated and wrote the text files in {time.time() - t0:.1f}s")
    try:
        tok = resolve_tokenizer(args, out_dir / FILE_NAMES["pretrain"])
        parallel = attach_answer_offsets(corpus["parallel"], tok)
        check_no_leaks(heldout_from_eval(corpus["eval_tasks"]), {"parallel": parallel})
    except (DataError, ValueError, FileNotFoundError) as e:
        _summary(out_dir, written)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    write_jsonl_atomic(out_dir / FILE_NAMES["parallel"], parallel)
    written.insert(2, "parallel")
    _summary(out_dir, written)
    val_text = [r["text"] for r in corpus["val"]]
    n_tok = sum(len(ids) for ids in tok(val_text, add_special_tokens=False)["input_ids"]) if val_text else 0
    chars = sum(len(t) for t in val_text)
    ratio = f", {chars / n_tok:.2f} chars/token on {FILE_NAMES['val']}" if n_tok else ""
    print(f"tokenizer {args.tokenizer}: vocab {len(tok)}{ratio}")
    tok_file = Path(args.tokenizer).expanduser() / "tokenizer.json" if _looks_local(args.tokenizer) else None
    (out_dir / CORPUS_STAMP).write_text(corpus_fingerprint(args.seed, sizes, tok_file) + "\n")  # last: all written
    print(f"done in {time.time() - t0:.1f}s -> {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
