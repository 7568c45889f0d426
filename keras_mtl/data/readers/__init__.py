"""Readers turn one data source of one task into a stream of `Example`s.

A reader is a generator: it reads a line (a sentence, a record), yields its
example and goes on, so that nothing holds a whole file and a bad line fails
when it is reached, not after the rest of a large file was read. Its errors
name the file and line, as before. What a reader can only tell at the end
(no example at all, a TFDS split whose labels are all -1) is raised after the
last example: a consumer that writes what it reads (the prepared cache) must
not keep its output when the stream raises.

A reader is registered under a `format` name used in YAML:

    tasks:
      - name: pos
        type: tagging
        data:
          format: conll          # <- the reader
          train: ../data/train.txt
          test: ../data/test.txt
          token_column: 0        # <- reader options, validated by the
          label_column: 1        #    reader's `Options` model

`train`/`dev`/`test` are *sources*: usually a path, but a reader may accept a
mapping (the per-label-file reader takes `{label: path}`) or a split name
(TFDS). Relative paths are resolved against the config file's directory
before the reader sees them.

Lines: every file-based reader gets its lines from `iter_lines`, which reads
the file a chunk at a time and splits at `\n` and `\r\n` only (see
`split_lines`), as JSON Lines, CoNLL, CoNLL-U and TSV/CSV define a line. A bare `\r` is an ordinary character; a file whose
only line ends are bare `\r` (classic Mac OS) is refused with a hint.
"""

import codecs
import dataclasses
import importlib
from pathlib import Path
from typing import Callable

import pydantic

from keras_mtl.errors import DataError
from keras_mtl.tasks import TASK_TYPES  # the registered task types, when readers are imported


class ReaderOptions(pydantic.BaseModel):
    """Base of a reader's options model: an unknown option is an error."""

    model_config = pydantic.ConfigDict(extra="forbid")


class NoOptions(ReaderOptions):
    """The options of a reader that takes none."""


@dataclasses.dataclass(frozen=True)
class ReadRequest:
    """What a reader is asked to read."""

    source: object  # str | Path | dict, as resolved from the config
    options: pydantic.BaseModel  # an instance of the reader's Options model
    task_name: str
    task_type: str  # one of TASK_TYPES
    split: str  # "train" | "dev" | "test" (for messages)


@dataclasses.dataclass(frozen=True)
class Reader:
    name: str
    read: Callable  # (ReadRequest) -> an iterator of Example (a generator: see the module docstring)
    options: type = NoOptions  # pydantic model of the format's options
    task_types: tuple = TASK_TYPES  # task types this reader can serve
    source_is_path: bool = True  # resolve str sources as paths


READERS = {}

# The reader options that make a task a sentence-pair task when set: the
# second text's column (`delimited`), field (`jsonl`) or feature (`tfds`).
PAIR_OPTIONS = ("text_pair_column", "text_pair_field", "text_pair_feature")


def pair_option(options):
    """The name of the second-text option set in a reader's `options`, else None.

    A task whose data options set one is a pair task: every example it reads
    has a `text_pair`.
    """
    for name in PAIR_OPTIONS:
        if getattr(options, name, None) is not None:
            return name
    return None


def register_reader(name, options=NoOptions, task_types=TASK_TYPES, source_is_path=True):
    """Decorator registering `fn(request) -> iterator of Example` under `name`.

    `fn` should be a generator that yields each example as soon as it is read
    (a list works too, but holds the whole source in memory).
    """

    def wrap(fn):
        READERS[name] = Reader(name, fn, options, tuple(task_types), source_is_path)
        return fn

    return wrap


def get_reader(name) -> Reader:
    _import_builtin_readers()
    if name not in READERS:
        raise KeyError(name)
    return READERS[name]


def reader_names():
    _import_builtin_readers()
    return sorted(READERS)


def _import_builtin_readers():
    # Imported lazily so that `keras_mtl.data.readers` stays cheap to import.

    for module in ("demo", "conll", "conllu", "delimited", "per_label", "tfds_reader"):
        try:
            importlib.import_module(f"keras_mtl.data.readers.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"keras_mtl.data.readers.{module}":
                raise


def split_lines(text):
    """Split a file's text into lines at `\\n` and `\\r\\n` only.

    This is the line structure the data formats define (JSON Lines: `\\n`,
    with `\\r\\n` tolerated; CoNLL, CoNLL-U and TSV/CSV: one record a line).
    It is *not* `str.splitlines()`, which also breaks at `\\v`, `\\f`,
    `\\x1c`-`\\x1e`, `\\x85`, U+2028 and U+2029: characters that may occur
    inside a text (a raw U+2028 is valid inside a JSON string) and that would
    split one record in two and shift the line numbers of all later errors.

    A `\\r` right before a `\\n` is part of the line end and dropped; any
    other `\\r` is an ordinary character of its line. A line end at the end
    of the text does not start an empty last line.

    >>> split_lines("a\\u2028b\\r\\nc\\n")
    ['a\\u2028b', 'c']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# How much of a data file `iter_lines` reads at a time (bytes).
READ_CHUNK_BYTES = 1 << 20


def iter_lines(path, encoding="utf-8"):
    """The lines of a text file, one at a time, with clear errors for bad bytes or a missing file.

    Yields the file's lines (without line ends) as `split_lines` splits them:
    at `\\n` and `\\r\\n` only, so line numbers are those `grep -n` shows. The
    file is read and decoded `READ_CHUNK_BYTES` at a time; whatever the file's
    size, a line is yielded once it is complete. A leading byte-order mark is
    dropped. A decoding error names the file and the byte offset in the whole
    file, and suggests the `encoding:` option; it is raised when the reader
    gets there (the lines before it have been yielded).

    Raises:
        DataError: the file is missing or a directory; the encoding is unknown;
            a byte sequence is not valid in `encoding`; the file's only line
            ends are bare carriage returns (classic Mac OS: known at its end,
            before any line is yielded, since such a file is one line).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    try:
        b"".decode(encoding)  # LookupError for an unknown (or non-text) encoding
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    offset = 0  # bytes handed to the decoder so far
    pending = ""  # the text after the last line end
    started = seen_newline = False
    with path.open("rb") as f:
        while True:
            chunk = f.read(READ_CHUNK_BYTES)
            final = not chunk
            held = len(decoder.getstate()[0])  # bytes of an unfinished character, kept from the last chunk
            try:
                text = decoder.decode(chunk, final)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: byte offset {offset - held + e.start}: not valid {encoding} ({e.reason}); "
                    f"set `encoding:` in the task's data section (e.g. encoding: latin-1)"
                ) from None
            offset += len(chunk)
            if text and not started:
                started = True
                if text.startswith("\ufeff"):
                    text = text[1:]
            if "\n" in text:
                seen_newline = True
                lines = (pending + text).split("\n")
                pending = lines.pop()
                for line in lines:
                    yield line[:-1] if line.endswith("\r") else line
            else:
                pending += text
            if final:
                break
    if not seen_newline and "\r" in pending.rstrip("\r"):
        raise DataError(
            f"{path}: lines end in a bare carriage return (\\r, classic Mac OS); "
            f"data files need \\n or \\r\\n line ends: convert the file, e.g. "
            f"with `tr '\\r' '\\n' < old > new`"
        )
    if pending:
        yield pending[:-1] if pending.endswith("\r") else pending


def open_text(path, encoding="utf-8"):
    """All lines of a text file, as a list: `list(iter_lines(path, encoding))`.

    For small files (tests, tools); a reader streams with `iter_lines`.
    """
    return list(iter_lines(path, encoding))
