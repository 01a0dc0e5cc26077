"""Record sources with constant memory, DDP sharding, a seeded held-out split and exact resume cursors.

`LocalJsonlSource` reads a JSONL file in byte blocks (default 256 KiB, aligned to line starts). An
index of the blocks (offset, line count) is built by one scan that only counts newlines. For every
epoch the training blocks are shuffled with a seeded permutation; stream s of S (S = world size x
DataLoader workers) takes blocks s, s+S, s+2S, ... of that order, so each rank reads only its own
share. Inside a block the lines are shuffled with a seed derived from (seed, epoch, block), so a
cursor (epoch, block position, line position) is enough to resume exactly.

The held-out split (`val_samples`) is a seeded choice of blocks covering exactly `val_samples` lines,
identical on every rank; training never sees those lines.

`HubSource` streams a Hugging Face dataset (or a local file through `datasets`; `streaming=False` loads it
first, as `datasets` does without streaming, so its length is known), optionally packing
token ids into exact `chunk_length` pieces (documents joined with EOS, no decode/re-encode).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from parallel_data.io import DataError, check_input_file, iter_jsonl_lines

DEFAULT_BLOCK_BYTES = 1 << 18
MIN_BLOCKS = 64  # small files are cut finer, so that many ranks x workers all get a share


def block_size_for(path: str | Path, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """At most `block_bytes`, but small enough for a small file to give ~MIN_BLOCKS blocks."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    return max(512, min(block_bytes, size // MIN_BLOCKS))


@dataclass
class Block:
    offset: int  # byte offset of the block's first line
    end: int  # byte offset after its last line
    first_line: int  # 1-based line number of its first line
    n_lines: int


def build_block_index(path: str | Path, block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[Block]:
    """Scan a file once (counting newlines only) and cut it into line-aligned blocks."""
    p = check_input_file(path, "data file")
    blocks: list[Block] = []
    start, line_no, lines_in_block, pos, last = 0, 1, 0, 0, b"\n"
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            i = 0
            while (j := chunk.find(b"\n", i)) >= 0:
                lines_in_block += 1
                line_end = pos + j + 1
                if line_end - start >= block_bytes:
                    blocks.append(Block(start, line_end, line_no, lines_in_block))
                    line_no += lines_in_block
                    start, lines_in_block = line_end, 0
                i = j + 1
            pos += len(chunk)
            last = chunk[-1:]
    if last != b"\n":  # a last line without its newline
        lines_in_block += 1
    if lines_in_block:
        blocks.append(Block(start, pos, line_no, lines_in_block))
    if not blocks:
        raise DataError("is empty", path=p)
    return blocks


def read_block_lines(path: str | Path, block: Block) -> list[tuple[int, bytes]]:
    """-> [(line number, raw line)] of one block (blank lines included, so numbering stays exact)."""
    with open(path, "rb") as f:
        f.seek(block.offset)
        data = f.read(block.end - block.offset)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [(block.first_line + i, ln) for i, ln in enumerate(lines)]


@dataclass
class Cursor:
    """Where one stream stands: epoch, position in its block list, records consumed in that block."""

    epoch: int = 0
    block: int = 0
    line: int = 0
    start: int = 0  # global position this epoch's share is dealt from (non-zero after a world-size change)

    def state(self) -> dict:
        return asdict(self)


@dataclass
class Split:
    """Which blocks/lines are training data and which are held out (identical on every rank)."""

    train_blocks: list[int]  # block indices with at least one training line
    val_lines: dict[int, tuple[int, int]]  # block index -> [lo, hi) local line range held out
    limit_lines: int  # lines considered (max_samples + val_samples, or the whole file)


def make_split(blocks: list[Block], val_samples: int, max_samples: int | None, seed: int) -> Split:
    total = sum(b.n_lines for b in blocks)
    limit = total if not max_samples else min(total, max_samples + val_samples)
    usable = []
    seen = 0
    for i, b in enumerate(blocks):
        if seen >= limit:
            break
        usable.append((i, min(b.n_lines, limit - seen)))
        seen += b.n_lines
    if val_samples and val_samples >= limit:
        raise DataError(f"val_samples={val_samples} leaves no training data ({limit} lines available)",
                        path=None)
    val_lines: dict[int, tuple[int, int]] = {}
    need = val_samples
    order = [i for i, _ in usable]
    random.Random(f"val:{seed}").shuffle(order)
    n_of = dict(usable)
    for i in order:
        if need <= 0:
            break
        take = min(need, n_of[i])
        val_lines[i] = (0, take)
        need -= take
    train_blocks = [i for i, n in usable if val_lines.get(i, (0, 0))[1] < n]
    return Split(train_blocks, val_lines, limit)


class LocalJsonlSource:
    """Records of a JSONL file for one stream (rank x worker) of S, with an exact resume cursor."""

    def __init__(self, path: str | Path, *, seed: int = 0, shuffle: bool = True, val_samples: int = 0,
                 max_samples: int | None = None, block_bytes: int | None = None,
                 blocks: list[Block] | None = None):
        self.path = str(path)
        self.seed = seed
        self.shuffle = shuffle
        if blocks is None:
            blocks = build_block_index(path, block_bytes or block_size_for(path))
        self.blocks = blocks
        self.split = make_split(self.blocks, val_samples, max_samples, seed)
        self._limit_block_lines = self._limits()

    def _limits(self) -> dict[int, int]:
        """Per block, how many of its lines are inside the max_samples window."""
        out, seen = {}, 0
        for i, b in enumerate(self.blocks):
            if seen >= self.split.limit_lines:
                break
            out[i] = min(b.n_lines, self.split.limit_lines - seen)
            seen += b.n_lines
        return out

    def epoch_blocks(self, epoch: int, stream: int, num_streams: int, start: int = 0) -> list[int]:
        order = list(self.split.train_blocks)
        if self.shuffle:
            random.Random(f"blocks:{self.seed}:{epoch}").shuffle(order)
        return order[start + stream::num_streams]

    def block_order(self, i: int, epoch: int) -> list[int]:
        """Block-local indices of block `i`'s training lines, in the order epoch `epoch` reads them."""
        lo, hi = self.split.val_lines.get(i, (0, 0))
        order = list(range(lo)) + list(range(hi, self._limit_block_lines[i]))
        if self.shuffle:
            random.Random(f"lines:{self.seed}:{epoch}:{i}").shuffle(order)
        return order

    def iter_epoch(self, cursor: Cursor, stream: int, num_streams: int) -> Iterator[tuple[dict, int]]:
        """Yield (record, line number) of the cursor's epoch from the cursor on, advancing it in place.

        Blank lines are skipped. The cursor counts lines consumed, so when a record is yielded it
        points just past that record. At the end of the epoch the cursor points past the last block;
        the caller moves it to the next epoch.
        """
        blocks = self.epoch_blocks(cursor.epoch, stream, num_streams, cursor.start)
        while cursor.block < len(blocks):
            i = blocks[cursor.block]
            lines = read_block_lines(self.path, self.blocks[i])
            order = self.block_order(i, cursor.epoch)

            for line_no, rec in iter_jsonl_lines(_advancing(cursor, lines, order), self.path):
                yield rec, line_no
            cursor.block += 1
            cursor.line = 0

    def iter_val(self) -> Iterator[tuple[dict, int]]:
        """Held-out records in file order (the same sequence on every rank)."""
        for i in sorted(self.split.val_lines):
            lo, hi = self.split.val_lines[i]
            for line_no, rec in iter_jsonl_lines(read_block_lines(self.path, self.blocks[i])[lo:hi], self.path):
                yield rec, line_no

    def iter_all(self) -> Iterator[tuple[dict, int]]:
        """Every record inside the max_samples window, in file order (for evaluation)."""
        for i in sorted(self._limit_block_lines):
            lines = read_block_lines(self.path, self.blocks[i])[: self._limit_block_lines[i]]
            for line_no, rec in iter_jsonl_lines(lines, self.path):
                yield rec, line_no


def _advancing(cursor: Cursor, lines: list[tuple[int, bytes]], order: list[int]) -> Iterator[tuple[int, bytes]]:
    """The block's lines in `order` from the cursor on, moving the cursor past each line as it is read."""
    while cursor.line < len(order):
        cursor.line += 1
        yield lines[order[cursor.line - 1]]


class HubSource:
    """Rows of a Hugging Face dataset (streamed) or local files read through `datasets`.

    Sharding: when the dataset has a multiple of S shards (files), stream s reads only its shards
    (`datasets.distributed.split_dataset_by_node`); otherwise rows are dealt round-robin (row k ->
    stream k mod S) and every stream reads the whole stream, which is logged. `max_samples` counts
    training rows over all streams. The held-out rows are the first `val_samples` rows of the
    stream (of shard group 0 when sharded), identical on every rank. A cursor is the number of rows
    this stream has consumed.
    """

    def __init__(self, name: str, subset: str | None = None, split: str = "train", *, val_samples: int = 0,
                 max_samples: int | None = None, streaming: bool = True):
        from parallel_data.hub_datasets import open_hf_dataset

        self.name = name
        self.streaming = streaming  # False: loaded (and cached by `datasets`) first, so its length is known
        self.dataset = open_hf_dataset(name, subset, split, streaming=streaming)
        self.val_samples = val_samples
        self.max_samples = max_samples

    def num_shards(self) -> int:
        return int(getattr(self.dataset, "num_shards", 1) or 1)

    def sharded(self, num_streams: int) -> bool:
        return num_streams > 1 and self.num_shards() % num_streams == 0

    def _share(self, stream: int, num_streams: int, start: int = 0) -> Iterator[tuple[dict, int]]:
        from parallel_data.hub_datasets import iter_hf_rows

        if self.sharded(num_streams):
            from datasets.distributed import split_dataset_by_node

            for no, row in iter_hf_rows(split_dataset_by_node(self.dataset, rank=stream, world_size=num_streams),
                                        self.name):
                yield row, no
            return
        skip = self.val_samples + start  # round-robin mode: the held-out rows come first in the global stream
        for no, row in iter_hf_rows(self.dataset, self.name):
            k = no - 1 - skip
            if k >= 0 and k % num_streams == stream:
                yield row, no

    def _quota(self, stream: int, num_streams: int) -> int | None:
        if self.max_samples is None:
            return None
        return self.max_samples // num_streams + (1 if stream < self.max_samples % num_streams else 0)

    def iter_val(self, num_streams: int = 1) -> Iterator[tuple[dict, int]]:
        from parallel_data.hub_datasets import iter_hf_rows

        if not self.val_samples:
            return
        if self.sharded(num_streams):
            from datasets.distributed import split_dataset_by_node

            rows = iter_hf_rows(split_dataset_by_node(self.dataset, rank=0, world_size=num_streams), self.name)
        else:
            rows = iter_hf_rows(self.dataset, self.name)
        for i, (no, row) in enumerate(rows):
            if i >= self.val_samples:
                return
            yield row, no

    def iter_epoch(self, cursor: Cursor, stream: int, num_streams: int) -> Iterator[tuple[dict, int]]:
        quota = self._quota(stream, num_streams)
        skip = self.val_samples if (self.sharded(num_streams) and stream == 0) else 0
        taken = 0
        for i, (row, no) in enumerate(self._share(stream, num_streams, cursor.start)):
            if i < skip:
                continue
            if quota is not None and taken >= quota:
                break
            taken += 1
            if taken <= cursor.line:  # resuming: rows already consumed in this epoch
                continue
            cursor.line += 1
            yield row, no

    def iter_all(self) -> Iterator[tuple[dict, int]]:
        from parallel_data.hub_datasets import iter_hf_rows

        for no, row in iter_hf_rows(self.dataset, self.name):
            if self.max_samples is not None and no > self.max_samples:
                return
            yield row, no
