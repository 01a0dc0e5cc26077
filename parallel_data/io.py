"""Record I/O with clear errors: JSONL / JSON / CSV / text readers and atomic JSONL writers.

JSONL, CSV and text readers stream with constant memory; a .json file (one array or object) is read
whole, so large data belongs in JSONL. Every JSONL line in the project (training sources, prompt and
task files, converters) is parsed by one reader, `iter_jsonl_lines`, built on the `jsonlines`
package. Bad input is a `DataError` naming the file, the 1-based line and the field, for example::

    dataset/x.jsonl:17: field 'conversations': expected a list, got str

Readers take `skip_bad=True` to skip a malformed record instead of raising, and a `ReadStats` to
count what was read, skipped and blank. Callers that reject a parsed record themselves (for example
a conversation without an assistant turn) record it with `stats.bad(message)`, so one `ReadStats`
describes a whole conversion.

Writers (`write_jsonl_atomic`, `AtomicJsonlWriter`) write a temporary file in the output folder and
`os.replace` it into place only when everything succeeded: a failed conversion never leaves a
half-written output.

Public API:
    DataError(message, *, path=None, line=None, field=None)
    ReadStats(read=0, skipped_bad=0, blank=0, errors=[]) ; .bad(message) ; .summary()
    require_field(obj, field, types, path=None, line=None) -> value
    describe_type(value) -> str
    check_input_file(path, what="input file") -> Path
    iter_jsonl_lines(numbered_lines, path, *, skip_bad=False, stats=None) -> Iterator[(line_no, dict)]
    iter_jsonl(path, *, skip_bad=False, stats=None, start_line=0) -> Iterator[(line_no, dict)]
    iter_json_records(path, *, stats=None) -> Iterator[(line_no, value)]
    iter_csv_rows(path, *, skip_bad=False, stats=None) -> Iterator[(line_no, dict)]
    iter_text_lines(path, *, stats=None) -> Iterator[(line_no, str)]
    iter_records(path, *, skip_bad=False, stats=None) -> Iterator[(line_no, dict)]
    write_jsonl_atomic(path, records) -> int
    AtomicJsonlWriter(path)  (context manager: .write(obj), .count)
    one_line(exc) -> str
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import jsonlines

MAX_ERROR_MESSAGES = 5  # ReadStats keeps the first few error messages for the summary


class DataError(ValueError):
    """Bad input data, located by file (or dataset name), 1-based line and field.

    `str(err)` reads `path:line: field 'name': message`; parts that are None are left out.
    The bare message is kept in `err.reason`.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None,
                 field: str | None = None):
        self.reason = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        loc = ""
        if self.path is not None:
            loc = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            loc = f"line {self.line}: "
        fld = f"field '{self.field}': " if self.field is not None else ""
        return f"{loc}{fld}{self.reason}"

    def __reduce__(self):  # keep keyword attributes when pickled (DataLoader workers)
        return (_rebuild_data_error, (self.reason, self.path, self.line, self.field))


def _rebuild_data_error(reason, path, line, field):
    return DataError(reason, path=path, line=line, field=field)


@dataclass
class ReadStats:
    """Counters of one read / conversion.

    read:        records parsed and handed to the caller
    skipped_bad: records skipped because they were malformed (by the reader, or by the caller via `bad`)
    blank:       blank lines (and, for converters, records with empty text) skipped
    errors:      the first `MAX_ERROR_MESSAGES` error messages, for the summary
    """

    read: int = 0
    skipped_bad: int = 0
    blank: int = 0
    errors: list[str] = dc_field(default_factory=list)

    def bad(self, message: str | BaseException) -> None:
        """Count one skipped bad record and remember its message (the first few only)."""
        self.skipped_bad += 1
        if len(self.errors) < MAX_ERROR_MESSAGES:
            self.errors.append(one_line(message))

    def summary(self) -> str:
        return f"read {self.read} records, skipped {self.skipped_bad} bad, {self.blank} blank"

    def report(self, line: str) -> None:
        """Print a converter's summary line, then the remembered messages of skipped records on stderr."""
        print(line)
        for msg in self.errors:
            print(f"  skipped: {msg}", file=sys.stderr)


def one_line(exc: BaseException | str) -> str:
    """The message of an exception (or a string) on one line, for CLI error output."""
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or text


def describe_type(value: Any) -> str:
    """Short type name used in messages: str, list, dict, int, float, bool, null."""
    return "null" if value is None else type(value).__name__


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = [t.__name__ for t in types]
    if len(names) == 1:
        article = "an" if names[0][0] in "aeiou" else "a"
        return f"{article} {names[0]}"
    return " or ".join(names)


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:  # bool is an int subclass; JSON true is not a number
        return False
    return isinstance(value, types)


def require_field(obj: Any, field: str, types: type | tuple[type, ...], path: str | os.PathLike | None = None,
                  line: int | None = None) -> Any:
    """Return `obj[field]`, raising DataError naming the field when it is missing or of the wrong type."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {describe_type(obj)}", path=path, line=line)
    if field not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise DataError(f"missing (record keys: {keys or 'none'})", path=path, line=line, field=field)
    value = obj[field]
    if not _is_instance(value, types):
        raise DataError(f"expected {_type_names(types)}, got {describe_type(value)}", path=path, line=line,
                        field=field)
    return value


def check_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """`path` as a Path if it is a readable regular file; FileNotFoundError or DataError saying why not."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"is a directory, expected a file ({what})", path=p)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p


def _empty_error(p: Path, stats: ReadStats | None, what: str = "records") -> DataError:
    if stats is not None and stats.skipped_bad:
        first = f"; first error: {stats.errors[0]}" if stats.errors else ""
        return DataError(f"has no valid {what}: all {stats.skipped_bad} were malformed{first}", path=p)
    return DataError(f"is empty (no {what})", path=p)


def _loads_line(text: str) -> Any:
    return json.loads(text.rstrip("\r\n"))  # without the newline, an error's column counts on this line


def _invalid_line(e: jsonlines.InvalidLineError, path, line_no: int) -> DataError:
    cause = e.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return DataError(f"not valid UTF-8 ({cause.reason} at byte {cause.start})", path=path, line=line_no)
    if isinstance(cause, json.JSONDecodeError):
        return DataError(f"malformed JSON: {cause.msg} (column {cause.colno})", path=path, line=line_no)
    return DataError(f"malformed JSON line: {e.message}", path=path, line=line_no)


def iter_jsonl_lines(numbered_lines: Iterable[tuple[int, bytes | str]], path: str | os.PathLike | None, *,
                     skip_bad: bool = False, stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Parse `(line_no, raw line)` pairs as JSONL records -> `(line_no, dict)`; the one JSONL parser.

    The lines may come in any order (a shuffled block of a training file) with their own numbers.
    Blank lines are skipped (counted in `stats.blank`); a leading UTF-8 BOM on a line is ignored. A
    line that is not valid UTF-8 / JSON, or not a JSON object, raises DataError naming path:line, or
    with `skip_bad` is skipped and counted in `stats.skipped_bad`.
    """
    current = 0  # number of the line the reader consumed last

    def feed():
        nonlocal current
        for line_no, raw in numbered_lines:
            current = line_no
            if not raw.strip():
                if stats is not None:
                    stats.blank += 1
                continue
            yield raw

    reader = jsonlines.Reader(feed(), loads=_loads_line)
    while True:
        try:
            value = reader.read(allow_none=True)
        except EOFError:
            return
        except jsonlines.InvalidLineError as e:
            err = _invalid_line(e, path, current)
        else:
            if isinstance(value, dict):
                if stats is not None:
                    stats.read += 1
                yield current, value
                continue
            err = DataError(f"expected a JSON object per line, got {describe_type(value)}", path=path, line=current)
        if not skip_bad:
            raise err from None
        if stats is not None:
            stats.bad(err)


def iter_jsonl(path: str | os.PathLike, *, skip_bad: bool = False, stats: ReadStats | None = None,
               start_line: int = 0) -> Iterator[tuple[int, dict]]:
    """Stream `(line_no, obj)` from a JSONL file, one JSON object per line, with constant memory.

    line_no is 1-based; lines are parsed by `iter_jsonl_lines` (blank lines skipped, errors naming
    file:line, `skip_bad` to skip malformed lines). `start_line` skips the first `start_line` lines
    unparsed (resuming). A file without any record raises DataError("... is empty") (only checked when
    start_line == 0); a missing file raises FileNotFoundError.
    """
    p = check_input_file(path)
    yielded = 0
    with open(p, "rb") as f:
        for item in iter_jsonl_lines(itertools.islice(enumerate(f, start=1), start_line, None), p,
                                     skip_bad=skip_bad, stats=stats):
            yielded += 1
            yield item
    if yielded == 0 and start_line == 0:
        raise _empty_error(p, stats)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def iter_json_records(path: str | os.PathLike, *, stats: ReadStats | None = None) -> Iterator[tuple[int, Any]]:
    """The records of a .json file: the elements of a top-level array, or one top-level object.

    The file is read whole (the standard `json` decoder; use JSONL for data too big for memory).
    Yields `(line_no, value)` where line_no is the 1-based line on which the element starts. Elements
    may be any JSON value; the caller checks them (`iter_records` rejects non-objects, honouring
    `skip_bad`). A JSON syntax error raises DataError with its line: after one, the element boundaries
    are unknown, so nothing can be skipped safely. An empty array or file raises DataError.
    """
    p = check_input_file(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=p,
                        line=data.count(b"\n", 0, e.start) + 1) from None
    decoder = json.JSONDecoder()

    def decode(pos: int, what: str) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON{what}: {e.msg}", path=p, line=e.lineno) from None

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = _skip_ws(text, 0)
    if pos == len(text):
        raise DataError("is empty (no JSON value)", path=p)
    if text[pos] not in "[{":
        raise DataError(f"expected a JSON array or object at the top level, got {text[pos]!r}", path=p,
                        line=line_at(pos))
    if text[pos] == "{":
        value, end = decode(pos, "")
        elements = [(line_at(pos), value)]
    else:
        elements, pos = [], _skip_ws(text, pos + 1)
        while pos < len(text) and text[pos] != "]":
            value, end = decode(pos, " in array element")
            elements.append((line_at(pos), value))
            pos = _skip_ws(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_ws(text, pos + 1)
            elif pos < len(text) and text[pos] != "]":
                raise DataError(f"expected ',' or ']' between array elements, got {text[pos]!r}", path=p,
                                line=line_at(pos))
        if pos >= len(text):
            raise DataError("unexpected end of file inside the top-level array", path=p, line=line_at(pos))
        end = pos + 1
    if _skip_ws(text, end) < len(text):
        raise DataError("unexpected data after the top-level value", path=p, line=line_at(_skip_ws(text, end)))
    if not elements:
        raise _empty_error(p, stats, "array elements")
    for line_no, value in elements:
        if stats is not None:
            stats.read += 1
        yield line_no, value


class _CsvLines:
    """The lines of a CSV file for `csv.reader`, noting whether a row needed to read past the end."""

    def __init__(self, f):
        self.f = f
        self.hit_eof = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.f.readline()
        if not line:
            self.hit_eof = True
            raise StopIteration
        return line


def iter_csv_rows(path: str | os.PathLike, *, skip_bad: bool = False,
                  stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Stream `(line_no, row)` from a CSV file with a header line; row maps column name -> str.

    line_no is the 1-based line on which the row starts. Rows with more fields than the header are
    malformed (DataError, or skipped with `skip_bad`); missing trailing fields come out as None. A
    quoted field that is never closed is always a DataError naming the line where it opens (the
    csv module would otherwise read the rest of the file into that one field).
    """
    p = check_input_file(path)
    _raise_csv_field_limit()
    yielded = 0
    with open(p, encoding="utf-8-sig", newline="") as f:
        lines = _CsvLines(f)
        reader = csv.reader(lines)
        header = _csv_header(reader, lines, p)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                err = DataError(f"bad CSV row: {one_line(e)}", path=p, line=start)
                if not skip_bad or isinstance(e, UnicodeDecodeError):
                    raise err from None
                if stats is not None:
                    stats.bad(err)
                continue
            if lines.hit_eof:
                raise DataError("unterminated quote: the quoted field that opens on this line runs to the end of "
                                "the file", path=p, line=start)
            if not fields or all(not x.strip() for x in fields):
                if stats is not None:
                    stats.blank += 1
                continue
            if len(fields) > len(header):
                err = DataError(f"row has {len(fields)} fields, the header has {len(header)}", path=p, line=start)
                if not skip_bad:
                    raise err
                if stats is not None:
                    stats.bad(err)
                continue
            row = dict(zip(header, fields))
            for name in header[len(fields):]:
                row[name] = None
            if stats is not None:
                stats.read += 1
            yielded += 1
            yield start, row
    if yielded == 0:
        raise _empty_error(p, stats, "CSV rows")


def _csv_header(reader, lines: _CsvLines, p: Path) -> list[str]:
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"bad CSV header: {one_line(e)}", path=p, line=1) from None
    if header is None:
        raise DataError("is empty (no CSV header)", path=p)
    if lines.hit_eof:
        raise DataError("unterminated quote in the CSV header: the quoted field runs to the end of the file",
                        path=p, line=1)
    if len(set(header)) != len(header):
        raise DataError(f"duplicate column names in the CSV header: {header}", path=p, line=1)
    return header


@functools.cache
def _raise_csv_field_limit() -> None:
    # the default 128 KiB limit rejects long documents; the reader still streams row by row
    csv.field_size_limit(2**31 - 1)


def iter_jsonl_field(path: str | os.PathLike, field: str = "text", max_records: int = 0) -> Iterator[str]:
    """Stream one string field of every JSONL record; DataError names file:line for bad lines or fields."""
    n = 0
    for line_no, obj in iter_jsonl(path):
        if max_records and n >= max_records:
            return
        yield require_field(obj, field, str, path, line_no)
        n += 1


def iter_text_lines(path: str | os.PathLike, *, stats: ReadStats | None = None) -> Iterator[tuple[int, str]]:
    """Stream `(line_no, line)` from a UTF-8 text file, one sample per line (newline removed).

    Blank lines are skipped and counted in `stats.blank`; a file without a non-blank line raises DataError.
    """
    p = check_input_file(path)
    yielded = 0
    with open(p, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=p, line=line_no) from None
            if not text.strip():
                if stats is not None:
                    stats.blank += 1
                continue
            if stats is not None:
                stats.read += 1
            yielded += 1
            yield line_no, text
    if yielded == 0:
        raise DataError("is empty (no non-blank line)", path=p)


RECORD_EXTENSIONS = (".jsonl", ".json", ".csv")


def iter_records(path: str | os.PathLike, *, skip_bad: bool = False,
                 stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
    """Stream `(line_no, dict)` records from a .jsonl, .json (array of objects, or one object) or .csv file.

    Unknown extensions raise DataError (nothing is guessed). Non-object elements of a JSON array are
    malformed records.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".jsonl":
        yield from iter_jsonl(p, skip_bad=skip_bad, stats=stats)
    elif ext == ".json":
        good = 0
        for line_no, value in iter_json_records(p, stats=stats):
            if not isinstance(value, dict):
                err = DataError(f"expected a JSON object as array element, got {describe_type(value)}", path=p,
                                line=line_no)
                if not skip_bad:
                    raise err
                if stats is not None:
                    stats.read -= 1
                    stats.bad(err)
                continue
            good += 1
            yield line_no, value
        if good == 0:
            raise _empty_error(p, stats, "JSON objects")
    elif ext == ".csv":
        yield from iter_csv_rows(p, skip_bad=skip_bad, stats=stats)
    else:
        raise DataError(f"unknown extension {ext or '(none)'!r}; expected one of {', '.join(RECORD_EXTENSIONS)}",
                        path=p)


@functools.cache
def _file_mode() -> int:
    umask = os.umask(0o022)  # read the umask (there is no read-only API); restored at once
    os.umask(umask)
    return 0o666 & ~umask


class AtomicJsonlWriter:
    """Write JSONL records to a temporary file next to `path`, moved into place on success.

        with AtomicJsonlWriter("dataset/out.jsonl") as w:
            for rec in records:
                w.write(rec)
        print(w.count)

    If the block raises (or `abort()` is called), the temporary file is removed and `path` is left
    untouched. The output folder is created if needed. Records are written with ensure_ascii=False.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._f = None
        self._tmp: str | None = None

    def __enter__(self) -> AtomicJsonlWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._f = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        return self

    def write(self, record: Any) -> None:
        if self._f is None:
            raise RuntimeError("AtomicJsonlWriter.write called outside its `with` block")
        self._f.write(json.dumps(record, ensure_ascii=False))
        self._f.write("\n")
        self.count += 1

    def abort(self) -> None:
        """Discard everything written so far; `path` is not touched."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None

    def commit(self) -> None:
        if self._f is None:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.chmod(self._tmp, _file_mode())  # mkstemp creates 0600; give the output normal permissions
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write every record of `records` as one JSON line to `path`, atomically. Returns the count.

    `records` is consumed lazily (constant memory); if it raises, `path` is left untouched.
    """
    with AtomicJsonlWriter(path) as w:
        for rec in records:
            w.write(rec)
    return w.count
