"""Train the repo's byte-level BPE tokenizer on a JSONL text corpus.

Reads the `text` field (or `--text_field`) of every line of `--data_path`, streaming with constant
memory, trains a byte-level BPE with `model.tokenizer.train_bpe_tokenizer` (special tokens
`<|endoftext|>`=0, `<|im_start|>`=1, `<|im_end|>`=2 and the ChatML chat template), and saves
`tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` into `--out_dir`. The same data
gives the same tokenizer.json.

The default tokenizer in `model/` is made from the bundled demo corpus:

    python scripts/build_demo_data.py   # writes the text files; stops before parallel_demo.jsonl
                                        # (token offsets) when model/ has no tokenizer yet
    python scripts/train_tokenizer.py   # dataset/pretrain_demo.jsonl -> model/tokenizer.json ...
    python scripts/build_demo_data.py   # now also parallel_demo.jsonl

or in one go: `python scripts/build_demo_data.py --train_tokenizer`.

Other corpora: `python scripts/train_tokenizer.py --data_path my.jsonl --text_field content
--vocab_size 8000 --out_dir out/my_tokenizer`. Also runs as `python -m scripts.train_tokenizer`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.tokenizer import DEFAULT_TOKENIZER_DIR, SPECIAL_TOKENS, train_and_save_tokenizer
from parallel_data.io import DataError, iter_jsonl_field, one_line

DEFAULT_DATA = "dataset/pretrain_demo.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=DEFAULT_DATA, help="JSONL corpus, one document per line (default: %(default)s)")
    p.add_argument("--text_field", default="text", help="field holding the text (default: %(default)s)")
    p.add_argument("--vocab_size", type=int, default=6400, help="vocabulary size incl. 256 bytes and 3 specials")
    p.add_argument("--out_dir", default=str(DEFAULT_TOKENIZER_DIR), help="output folder (default: the repo's model/)")
    p.add_argument("--max_docs", type=int, default=0, help="train on the first N documents only (0 = all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = Path(args.data_path)
    if args.max_docs < 0:
        print("error: --max_docs must be >= 0", file=sys.stderr)
        return 2
    if not data.exists():
        hint = " (build it with `python scripts/build_demo_data.py`)" if args.data_path == DEFAULT_DATA else ""
        print(f"error: data file {data} does not exist{hint}", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        tok, n_docs = train_and_save_tokenizer(lambda: iter_jsonl_field(data, args.text_field, args.max_docs),
                                               args.out_dir, vocab_size=args.vocab_size)
    except (DataError, ValueError, FileNotFoundError, IsADirectoryError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    print(f"trained on {n_docs} documents of {data} in {time.time() - t0:.1f}s: vocab {len(tok)}, "
          f"special ids {ids}; saved to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
