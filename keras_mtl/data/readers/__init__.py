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
"""

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import pydantic

from keras_mtl.errors import DataError

TASK_TYPES = ("classification", "multilabel", "regression", "tagging")


class NoOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


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


def open_text(path, encoding="utf-8"):
    """Read a whole text file, with a clear error for bad bytes or a missing file.

    Returns the file's lines (without line ends). A decoding error names the
    file and byte offset and suggests the `encoding:` option.
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
    return text.splitlines()
