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

from model.tokenizer import DEFAULT_TOKENIZER_DIR
from parallel_data.io import iter_jsonl_field
from trainer.args import add_output_args, add_source_args, positive_int
from trainer.cli import ArgParser, cli_main, make_parser

DEFAULT_DATA = "dataset/pretrain_demo.jsonl"


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_tokenizer")
    g = add_source_args(p, default_data=DEFAULT_DATA, hf=False, data_help="JSONL corpus, one document per line",
                        text_column_aliases=("--text_field",), text_column_default="text",
                        max_samples_aliases=("--max_docs",), max_samples_help="train on the first N documents only "
                                                                             "(0 = all)")
    g.add_argument("--vocab_size", type=positive_int, default=6400, help="vocabulary size incl. 256 bytes and 3 "
                                                                       "specials")
    add_output_args(p, out_dir=str(DEFAULT_TOKENIZER_DIR), out_dir_help="output folder (default: the repo's model/)")
    return p


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    from model.tokenizer import SPECIAL_TOKENS, train_and_save_tokenizer

    data = Path(args.data_path)
    t0 = time.time()
    tok, n_docs = train_and_save_tokenizer(lambda: iter_jsonl_field(data, args.text_column, args.max_samples or 0),
                                           args.out_dir, vocab_size=args.vocab_size)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    print(f"trained on {n_docs} documents of {data} in {time.time() - t0:.1f}s: vocab {len(tok)}, "
          f"special ids {ids}; saved to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
