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
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, Optional

from keras_mtl.errors import DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "tsv"}


@dataclasses.dataclass(frozen=True)
class Record:
    line: int  # 1-based line number in the file
    text: Optional[str] = None
    text_pair: Optional[str] = None
    error: Optional[str] = None  # why the line is bad (then text is None)


def input_format(path, format=None) -> str:
    """'jsonl' or 'tsv': `format` if given, else from the file's extension."""
    if format is not None:
        if format not in ("jsonl", "tsv"):
            raise DataError(f"input format must be 'jsonl' or 'tsv', got {format!r}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the input format from the extension {suffix or '(none)'!r}; "
            f"use {', '.join(sorted(FORMATS))} or give the format (--format jsonl|tsv)"
        )
    return FORMATS[suffix]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: input file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an input file")


def iter_lines(path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without line end), split at `\\n` and `\\r\\n` only, lazily."""
    path = Path(path)
    _check_file(path)
    with path.open("rb") as f:  # binary iteration splits at b"\n" only
        for number, raw in enumerate(f, 1):
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
                        f"{path}: lines end in a bare carriage return (\\r, classic Mac OS); "
                        f"input files need \\n or \\r\\n line ends: convert the file, e.g. "
                        f"with `tr '\\r' '\\n' < old > new`"
                    )
            yield number, raw


def count_lines(path) -> int:
    """The number of lines `iter_lines` yields, counted in 1 MiB chunks."""
    path = Path(path)
    _check_file(path)
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


def read_records(path, format=None, header=False) -> Iterator[Record]:
    """One `Record` per line of `path` (after the header, if `header`), lazily."""
    parse = _parse_jsonl if input_format(path, format) == "jsonl" else _parse_tsv
    for number, raw in iter_lines(path):
        if header and number == 1:
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Record(number, error=f"byte {e.start + 1} of the line: not valid UTF-8 ({e.reason})")
            continue
        text, pair, error = parse(line)
        yield Record(number, text=text, text_pair=pair, error=error)
