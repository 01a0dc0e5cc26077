"""Open a Hugging Face dataset (a Hub name or a local file / folder) as an iterable of row dicts.

A name that exists on disk is local: a .jsonl / .json file is read with the `json` builder, .csv with
`csv`, .txt with `text` (one row `{"text": line}` per line), .parquet with `parquet`, and a folder with
`load_dataset(folder)`. Anything else is a Hub name: `model.hub.require_hub` is called first, so that
offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or no route to the Hub) it fails at once with a clear
message instead of after ~20 s of retries.

Every failure to open or read the dataset is a `DataError` (a ValueError) with a one-line message;
the original exception is chained.

Public API:
    LOCAL_BUILDERS
    is_local_dataset(name) -> bool
    open_hf_dataset(name, subset=None, split="train", streaming=True, *, cache_dir=None) -> Iterable[dict]
    iter_hf_rows(dataset, name, *, max_rows=None) -> Iterator[(row_no, dict)]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from parallel_data.io import DataError, describe_type, one_line

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}


def is_local_dataset(name: str | os.PathLike) -> bool:
    return Path(name).exists()


def open_hf_dataset(name: str | os.PathLike, subset: str | None = None, split: str = "train", streaming: bool = True,
                    *, cache_dir: str | os.PathLike | None = None) -> Iterable[dict]:
    """Open `name` with `datasets.load_dataset` and return the split (an IterableDataset when streaming).

    The result iterates row dicts; pass it to `iter_hf_rows` to turn read errors into DataError.
    `cache_dir` is the datasets cache folder (non-streaming loads write Arrow files there; tests pass a
    temporary folder). Raises DataError when the dataset cannot be opened: Hub unreachable, unknown
    name, subset or split, unknown local file extension.
    """
    name = str(name)
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    p = Path(name)
    if p.exists():
        if p.is_dir():
            return _load(name, lambda ds: ds.load_dataset(str(p), subset, **kwargs))
        builder = LOCAL_BUILDERS.get(p.suffix.lower())
        if builder is None:
            raise DataError(f"unknown extension {p.suffix or '(none)'!r} for a local dataset file; expected one of "
                            f"{', '.join(LOCAL_BUILDERS)}", path=p)
        if subset is not None:
            raise DataError(f"--hf-subset {subset!r} makes no sense for a single local file", path=p)
        # the file is mapped onto the requested split name, so --hf-split validation works the same way
        return _load(name, lambda ds: ds.load_dataset(builder, data_files={split: str(p)}, **kwargs))

    from model.hub import require_hub

    try:
        require_hub("dataset", name)  # offline: fails here at once instead of retrying
    except FileNotFoundError as e:
        raise DataError(one_line(e)) from e
    return _load(name, lambda ds: ds.load_dataset(name, subset, **kwargs))


def _load(name: str, fn) -> Iterable[dict]:
    import datasets

    try:
        return fn(datasets)
    except DataError:
        raise
    # ConnectionError is an OSError subclass: it must be caught first to get the Hub message
    except ConnectionError as e:
        raise DataError(f"dataset '{name}' could not be reached on the Hub ({one_line(e)}); pass a local file or "
                        "folder instead, or check the network") from e
    except FileNotFoundError as e:
        raise DataError(f"dataset '{name}' was not found: {one_line(e)}") from e
    except OSError as e:
        raise DataError(f"dataset '{name}' could not be opened: {one_line(e)}") from e
    except ValueError as e:  # unknown split / config name, bad data_files
        raise DataError(f"dataset '{name}': {one_line(e)}") from e
    except Exception as e:  # datasets' own errors (DatasetGenerationError, DataFilesNotFoundError, ...)
        raise DataError(f"dataset '{name}' could not be opened: {type(e).__name__}: {one_line(e)}") from e


def iter_hf_rows(dataset: Iterable[Any], name: str, *, max_rows: int | None = None) -> Iterator[tuple[int, dict]]:
    """Iterate `(row_no, row)` (row_no 1-based) over a dataset, turning read errors into DataError.

    Streaming datasets read lazily, so a bad file inside them surfaces here; the error names the dataset
    and the row. `max_rows` stops after that many rows (None or 0: all).
    """
    it = iter(dataset)
    row_no = 0
    while not max_rows or row_no < max_rows:
        try:
            row = next(it)
        except StopIteration:
            break
        except DataError:
            raise
        except ConnectionError as e:
            raise DataError(f"lost the connection to the Hub while reading: {one_line(e)}", path=name,
                            line=row_no + 1) from e
        except Exception as e:  # pyarrow / json / datasets errors while reading a row
            raise DataError(f"could not read the row: {type(e).__name__}: {one_line(e)}", path=name,
                            line=row_no + 1) from e
        row_no += 1
        if not isinstance(row, dict):
            raise DataError(f"expected a row dict, got {describe_type(row)}", path=name, line=row_no)
        yield row_no, row
