"""Readers turn one data source of one task into a list of `Example`s.

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

Lines: every file-based reader gets its lines from `open_text`, which splits
at `\n` and `\r\n` only (see `split_lines`), as JSON Lines, CoNLL, CoNLL-U
and TSV/CSV define a line. A bare `\r` is an ordinary character; a file whose
only line ends are bare `\r` (classic Mac OS) is refused with a hint.
"""

import dataclasses
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
    read: Callable  # (ReadRequest) -> list[Example]
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
    """Decorator registering `fn(request) -> list[Example]` under `name`."""

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
    import importlib

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


def open_text(path, encoding="utf-8"):
    """Read a whole text file, with a clear error for bad bytes or a missing file.

    Returns the file's lines (without line ends), split by `split_lines`: at
    `\\n` and `\\r\\n` only, so line numbers are those `grep -n` shows. A
    decoding error names the file and byte offset and suggests the
    `encoding:` option.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: byte offset {e.start}: not valid {encoding} ({e.reason}); "
            f"set `encoding:` in the task's data section (e.g. encoding: latin-1)"
        ) from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\n" not in text and "\r" in text.rstrip("\r"):
        raise DataError(
            f"{path}: lines end in a bare carriage return (\\r, classic Mac OS); "
            f"data files need \\n or \\r\\n line ends: convert the file, e.g. "
            f"with `tr '\\r' '\\n' < old > new`"
        )
    return split_lines(text)
