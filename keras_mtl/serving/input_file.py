"""Input files of batch prediction (`keras-mtl predict MODEL --input F`), read lazily.

Two formats, chosen by the file's extension (`.jsonl`/`.ndjson`/`.json`:
JSON Lines; `.tsv`/`.txt`: TSV) or by `format=`:

* JSON Lines: one object a line with a string `text` and optionally a string
  `text_pair` (for sentence-pair tasks); other fields (ids, labels) are
  ignored.
* TSV: one record a line, the text in the first column and optionally the
  text pair in a second one, separated by one tab; no quoting and no escapes
  (a `"` is an ordinary character; a text holding a tab or a line break needs
  JSON Lines). No header line unless `header=True` (then line 1 is skipped).

Lines are split as every data reader splits them
(`keras_mtl.data.readers.split_lines`): at `\\n` and `\\r\\n` only, so a
U+2028 or a bare `\\r` inside a text stays in it and line numbers are those
`grep -n` shows. A leading UTF-8 BOM is dropped. The file is read one line at
a time: memory does not grow with its size.

`read_records` yields one `Record` per input line (header excluded): either
`text` (and `text_pair`, or None) or `error`, the reason the line is bad.

The input is a path, `-` (standard input) or an open binary file. Standard
input, a pipe (`/dev/stdin`, `<(...)`, `/dev/fd/N`), a FIFO or another
non-regular file can be read once only: it is never counted beforehand
(`count_lines` gives None) and has no extension to tell its format from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import Iterator, Optional

from keras_mtl.errors import DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "tsv"}
STDIN = "-"  # the input path that means standard input
STDIN_NAME = "<stdin>"  # standard input in `FILE:N: reason` messages


@dataclasses.dataclass(frozen=True)
class Record:
    line: int  # 1-based line number in the file
    text: Optional[str] = None
    text_pair: Optional[str] = None
    error: Optional[str] = None  # why the line is bad (then text is None)


def is_stdin(source) -> bool:
    """Whether `source` is `-`, standard input."""
    return isinstance(source, (str, os.PathLike)) and os.fspath(source) == STDIN


def display_name(source) -> str:
    """How messages name an input: `<stdin>` for `-`, else the path (or a file object's name)."""
    if is_stdin(source):
        return STDIN_NAME
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else "<stream>"
    return str(source)


def input_kind(source) -> str:
    """'stdin' (`-`), 'file' (a regular file: read twice if need be, counted) or
    'stream' (a pipe, FIFO, character device or socket: read once, never counted).

    A missing path or a directory is a `DataError`.
    """
    if is_stdin(source):
        return "stdin"
    if hasattr(source, "read"):
        return "stream"
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: input file not found") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory, expected an input file")
    return "file" if stat.S_ISREG(mode) else "stream"


def input_format(path, format=None, *, option=None) -> str:
    """'jsonl' or 'tsv': `format` if given, else from the file's extension.

    `option` is how the caller names the format in messages (the CLI:
    `--format`); None: the Python argument, `format=`. Standard input and
    pipes have no extension: their format must be given.
    """
    give = f"{option} jsonl|tsv" if option else "format='jsonl' or format='tsv'"
    if hasattr(path, "read"):
        path = display_name(path)
    if format is not None:
        if format not in ("jsonl", "tsv"):
            raise DataError(f"input format must be 'jsonl' or 'tsv', got {format!r}")
        return format
    if is_stdin(path):
        raise DataError(f"standard input (-) has no file extension to tell its format from: give {give}")
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        try:
            piped = input_kind(path) == "stream"
        except DataError:
            piped = False
        if piped:
            raise DataError(
                f"{path}: a pipe or device, with no file extension to tell its format from: give {give}"
            )
        raise DataError(
            f"{path}: cannot tell the input format from the extension {suffix or '(none)'!r}; "
            f"use {', '.join(sorted(FORMATS))} or give {give}"
        )
    return FORMATS[suffix]


def _stdin_bytes():
    stdin = sys.stdin
    if stdin is None:
        raise DataError("standard input (-): there is none (the process has no stdin)")
    buffer = getattr(stdin, "buffer", None)
    if buffer is not None:
        return buffer
    return io.BytesIO(stdin.read().encode("utf-8", "surrogateescape"))  # a text-only stand-in


def _split_lines(f, name) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(f, 1):  # binary iteration splits at b"\n" only
        ended = raw.endswith(b"\n")
        if ended:
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        if number == 1:
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not ended and b"\r" in raw.rstrip(b"\r"):
                raise DataError(
                    f"{name}: lines end in a bare carriage return (\\r, classic Mac OS); "
                    f"input files need \\n or \\r\\n line ends: convert the file, e.g. "
                    f"with `tr '\\r' '\\n' < old > new`"
                )
        yield number, raw


@contextlib.contextmanager
def open_input(source):
    """The binary stream of `source`: a path (opened, closed at the end), `-`
    (standard input, left open) or a binary file object (left open)."""
    if hasattr(source, "read"):
        yield source
    elif is_stdin(source):
        yield _stdin_bytes()
    else:
        path = Path(source)
        input_kind(path)  # a missing file or a directory: one clear error
        with path.open("rb") as f:
            yield f


def iter_lines(source, name=None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without line end), split at `\\n` and `\\r\\n` only, lazily.

    `source`: a path, `-` (standard input) or a binary file object (read from
    where it stands, left open); `name`: how messages name it (default
    `display_name(source)`).
    """
    name = name or display_name(source)
    with open_input(source) as f:
        yield from _split_lines(f, name)


def count_lines(path) -> Optional[int]:
    """The number of lines `iter_lines` yields, counted in 1 MiB chunks; None for
    standard input, a pipe or another non-regular file (counting would use it up)."""
    if input_kind(path) != "file":
        return None
    path = Path(path)
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _text(value, field) -> tuple[Optional[str], Optional[str]]:
    if not isinstance(value, str):
        return None, f"`{field}` must be a string, got {type(value).__name__}"
    if not value.strip():
        return None, f"empty `{field}`"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return None, f"`{field}` is not valid Unicode ({e.reason} at character {e.start})"
    return value, None


def _parse_jsonl(line: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    if not line.strip():
        return None, None, "empty line (expected a JSON object with a `text` field)"
    try:
        obj = json.loads(line)
    except ValueError as e:
        return None, None, f"invalid JSON: {e}"
    if not isinstance(obj, dict):
        return None, None, f"expected a JSON object with a `text` field, got {type(obj).__name__}"
    if "text" not in obj:
        return None, None, "missing `text` field"
    text, error = _text(obj["text"], "text")
    if error:
        return None, None, error
    pair = obj.get("text_pair")
    if pair is not None:
        pair, error = _text(pair, "text_pair")
        if error:
            return None, None, error
    return text, pair, None


def _parse_tsv(line: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    fields = line.split("\t")
    if len(fields) > 2:
        return None, None, (
            f"expected 1 or 2 tab-separated fields (text, optional text_pair), got {len(fields)}"
        )
    if not fields[0].strip():
        return None, None, "empty text"
    if len(fields) == 2 and not fields[1].strip():
        return None, None, "empty text_pair (second column)"
    return fields[0], fields[1] if len(fields) == 2 else None, None


def read_records(source, format=None, header=False, name=None) -> Iterator[Record]:
    """One `Record` per line of `source` (after the header, if `header`), lazily.

    `source` as for `iter_lines`; `header` is for TSV only (a JSON Lines file
    has no header line: `header=True` with it is a `DataError`).
    """
    fmt = input_format(source, format)
    if header and fmt == "jsonl":
        raise DataError(f"{name or display_name(source)}: header=True is for TSV input; "
                        "JSON Lines has no header line (every line is a record)")
    parse = _parse_jsonl if fmt == "jsonl" else _parse_tsv
    for number, raw in iter_lines(source, name):
        if header and number == 1:
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Record(number, error=f"byte {e.start + 1} of the line: not valid UTF-8 ({e.reason})")
            continue
        text, pair, error = parse(line)
        yield Record(number, text=text, text_pair=pair, error=error)
