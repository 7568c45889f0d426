"""An entry's parts: its columns, what a writer gives (`EntryData`), and a complete entry (`CacheEntry`)
with the check of its files against its manifest (`check_entry`)."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from keras_mtl.data.cache.key import FORMAT_VERSION, sha256_file

__all__ = [
    "BLOCK_ROWS", "CacheEntry", "Column", "ColumnBlock", "DTYPES", "EntryData", "MANIFEST", "SHARD_ROWS", "check_entry",
    "column_stem", "manifest_bytes", "manifest_files",
]

MANIFEST = "manifest.json"
SHARD_ROWS = 1 << 18  # rows per shard (its column files are written and listed together)
BLOCK_ROWS = 1024  # rows read (and written) at a time: a reader's memory, a host's unit of share
DTYPES = ("int32", "int64", "float32", "bool", "uint8")
_COLUMN = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")


@dataclasses.dataclass(frozen=True)
class Column:
    """One field of every row: its dtype and shape.

    `shape` is `()` (one value a row), `(None,)` (a list a row, of any
    length: token ids, tags) or `(k,)` (k values a row: a multi-hot label).
    """

    dtype: str
    shape: tuple = ()

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"column dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        shape = tuple(self.shape)
        ok = shape in ((), (None,)) or (len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 1)
        if not ok:
            raise ValueError(f"column shape {self.shape!r}: expected (), (None,) or (k,) with k >= 1")
        object.__setattr__(self, "shape", shape)

    @property
    def ragged(self):
        return self.shape == (None,)

    @property
    def storage(self):
        """The numpy dtype of the column's values file (little-endian)."""
        return np.dtype(self.dtype).newbyteorder("<")

    def to_json(self):
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, value):
        return cls(value["dtype"], tuple(value["shape"]))


def column_stem(name):
    """The file stem of a column (`labels/pos` -> `labels.pos`), its name checked."""
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise ValueError(f"column name {name!r}: letters, digits and _, parts joined by /")
    return name.replace("/", ".")


@dataclasses.dataclass
class ColumnBlock:
    """Consecutive rows of a split as columns: what a writer takes without an object a row.

    `columns`: name -> numpy values; a list column as `(values, lengths)`: its rows' values one after the
    other (flat) and int64 [rows] lengths; any other column an array [rows, *shape].
    """

    rows: int
    columns: dict

    def slice(self, start, stop):
        """The block of rows [start, stop) (views where numpy gives them)."""
        out = {}
        for name, value in self.columns.items():
            if isinstance(value, tuple):
                values, lengths = value
                ends = np.cumsum(lengths[:stop], dtype=np.int64)
                first = int(ends[start - 1]) if start else 0
                last = int(ends[-1]) if stop else 0
                out[name] = (values[first:last], lengths[start:stop])
            else:
                out[name] = value[start:stop]
        return ColumnBlock(stop - start, out)


@dataclasses.dataclass
class EntryData:
    """What `Cache.get_or_write`'s `build()` returns: the rows and what goes with them."""

    splits: dict  # split -> iterable of rows (dicts: column -> value) and/or `ColumnBlock`s, in order
    columns: dict  # column name -> Column
    meta: dict = dataclasses.field(default_factory=dict)  # JSON-able: label maps, counts, reports
    # file name -> str or bytes (a vocabulary, a tokenizer), or the path (PathLike) of a file to copy, read
    # after the rows are written
    files: dict = dataclasses.field(default_factory=dict)
    total_rows: Optional[int] = None  # for the progress line's ETA


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """A complete, verified entry: its directory and manifest (read only)."""

    path: Path
    manifest: dict

    @property
    def key(self):
        return self.manifest["key"]

    @property
    def name(self):
        return self.manifest.get("name", "")

    @property
    def created(self):
        return self.manifest.get("created", "")

    @property
    def meta(self):
        return self.manifest.get("meta", {})

    @property
    def columns(self):
        return {name: Column.from_json(c) for name, c in self.manifest["columns"].items()}

    @property
    def splits(self):
        return list(self.manifest["splits"])

    def rows(self, split):
        return self.manifest["splits"][split]["rows"]

    def shards(self, split):
        """[(directory, rows)] of a split's shards, in order."""
        return [(self.path / s["dir"], s["rows"]) for s in self.manifest["splits"][split]["shards"]]

    def file(self, name):
        """The path of a file stored with the entry (`EntryData.files`)."""
        if name not in self.manifest.get("files", {}):
            raise KeyError(name)
        return self.path / "files" / name

    @property
    def bytes(self):
        return manifest_bytes(self.manifest)


def manifest_files(manifest):
    """(relative path, {"bytes", "sha256"}) of every file a manifest lists."""
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            for file, info in shard["files"].items():
                yield f"{shard['dir']}/{file}", info
    for file, info in manifest.get("files", {}).items():
        yield f"files/{file}", info


def manifest_bytes(manifest):
    """The bytes of every file a manifest lists."""
    return sum(info["bytes"] for _, info in manifest_files(manifest))


def check_entry(path, key=None, verify="sha256"):
    """(problem or None, manifest or None) of an entry directory.

    `verify`: "sha256" (the default) hashes every file and compares it with the
    manifest (a flipped byte is found); "size" compares sizes only (a
    truncated or missing file is found; fast, for listing).
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest.json (a half-written or damaged entry)", None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"unreadable manifest.json ({e})", None
    try:
        if manifest.get("format") != FORMAT_VERSION:
            return f"format {manifest.get('format')!r}, this keras-mtl reads format {FORMAT_VERSION}", manifest
        if key is not None and manifest.get("key") != key:
            return f"its manifest is for key {manifest.get('key')!r}", manifest
        for name, info in manifest_files(manifest):
            file = path / name
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                return f"{name} is missing", manifest
            if size != info["bytes"]:
                return f"{name} has {size} bytes, the manifest says {info['bytes']}", manifest
            if verify == "sha256" and sha256_file(file) != info["sha256"]:
                return f"{name} does not match its SHA-256 in the manifest", manifest
    except (KeyError, TypeError, AttributeError) as e:
        return f"malformed manifest.json ({type(e).__name__}: {e})", manifest
    return None, manifest
