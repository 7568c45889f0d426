"""The prepared cache: every task's splits, tokenized and label-encoded, on disk.

The first run of a config (or `keras-mtl prepare CONFIG`) writes what reading,
splitting, tokenizing and label-encoding gave; later runs of a config with the
same inputs open it instead of doing that work again (issue 27; the layout,
the key and the protocol are in docs/data_at_scale.md).

    cache = Cache(cache_dir(config.cache.dir, base=config_file.parent))
    key = data_key(config)                   # what determines the rows
    entry, built = cache.get_or_write(key, build)   # build() -> EntryData, called only if needed
    dataset = read_split(entry, "train", num_processes=2, process_id=0)

An entry is a directory `<cache dir>/<key>/` of flat little-endian numpy
column files, a few per shard (`<split>/<shard>/<column>.values`, plus
`.offsets` for a column that holds a list a row), and `manifest.json`, written
last, that lists every file with its size and SHA-256. An entry appears whole
or not at all: it is written into `<key>.tmp-<host>-<pid>-<token>/` and renamed
to `<key>/` once complete, under an exclusive `fcntl` lock on `<key>.lock`, so
two writers never both write it and a reader never sees half of it. A
temporary left by a killed writer is removed by the next writer of that key
(who holds the lock, so no live writer owns it) or by `clear()`. An entry
whose files do not match its manifest (truncated, a flipped byte, a missing
file, no manifest) is reported once, removed and rebuilt: never read.

This module imports no TensorFlow at its top: `keras-mtl prepare --list` and
`--clear` answer in a fraction of a second, and writing needs numpy only.
`read_split` imports TensorFlow when called.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from keras_mtl.config import reader_options
from keras_mtl.data import progress, readers
from keras_mtl.data.splits import HASH_BYTES, example_hash
from keras_mtl.errors import DataError

# The layout of an entry; a change makes every key new (the key holds it).
FORMAT_VERSION = 1
# How rows are encoded (tokenize.py, the task types' `encode_labels`): bump it
# when a change there gives other rows for the same inputs.
ENCODING_VERSION = 1
MANIFEST = "manifest.json"
ENV_VAR = "KERAS_MTL_CACHE"
# The model settings that change how a text becomes rows (the others change the network only).
MODEL_FIELDS = (
    "preset", "lowercase", "vocabulary_size", "max_sequence_length", "long_inputs", "max_windows", "window_stride"
)
SPLITS = ("train", "dev", "test")
EDGE_BYTES = 1 << 20  # the cheap file identity hashes the first and the last MiB
SHARD_ROWS = 1 << 18  # rows per shard (its column files are written and listed together)
BLOCK_ROWS = 1024  # rows read (and written) at a time: a reader's memory, a host's unit of share
DTYPES = ("int32", "int64", "float32", "bool", "uint8")
_KEY = re.compile(r"^[0-9a-f]{8,64}$")
_COLUMN = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")
_TEMPORARY = re.compile(r"^(?P<key>[0-9a-f]{8,64})\.tmp-(?P<host>.+)-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{8})$")
_TRASH = re.compile(r"^[0-9a-f]{8,64}\.trash-")


# --------------------------------------------------------------------------
# Where
# --------------------------------------------------------------------------


def default_dir():
    """`$KERAS_MTL_CACHE`, else `$XDG_CACHE_HOME/keras-mtl`, else `~/.cache/keras-mtl`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "keras-mtl"


def cache_dir(setting=None, base=None):
    """The cache directory of a `cache.dir` setting (or `--cache-dir`).

    None: `default_dir()`. A relative path is relative to `base` (the config
    file's directory, as data paths are) or, without one, to the working
    directory; `~` is expanded.
    """
    if setting is None:
        return default_dir()
    path = Path(setting).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


# --------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------


def _sha256_file(path, start=0, length=None, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            data = f.read(chunk if left is None else min(chunk, left))
            if not data:
                break
            digest.update(data)
            if left is not None:
                left -= len(data)
    return digest.hexdigest()


def file_identity(path, full_hash=False):
    """What identifies a data file's content in a key (never its path).

    Cheap (the default): its size, its modification time in nanoseconds and
    the SHA-256 of its first and last MiB. Any edit that changes the size,
    the first or last MiB, or the mtime (every editor and writer sets it)
    changes it; `touch` with the same bytes changes it too (a rebuild, never
    a wrong entry). It misses only an edit inside the middle of a file that
    also restores the old size and mtime: set `cache.full_hash` for that.

    Full: the size and the SHA-256 of every byte; the mtime is left out, so a
    copy or a `touch` of the same bytes keeps the key. Costs a read of the
    whole file at every run (about 1 s a GB).
    """
    stat = os.stat(path)
    if full_hash:
        return {"bytes": stat.st_size, "sha256": _sha256_file(path)}
    size = stat.st_size
    head = _sha256_file(path, 0, min(size, EDGE_BYTES))
    tail = _sha256_file(path, max(0, size - EDGE_BYTES), EDGE_BYTES)
    return {"bytes": size, "mtime_ns": stat.st_mtime_ns, "head_tail_sha256": f"{head}:{tail}"}


def source_identity(source, is_path=True, full_hash=False):
    """A data source in a key: each file by `file_identity` (`{label: path}` mapping
    kept), anything else (a TFDS split, a demo count) as it is. A missing file is
    `{"missing": path}`: reading it fails later with the usual error."""
    if isinstance(source, dict):
        return {str(k): source_identity(v, is_path, full_hash) for k, v in source.items()}
    if is_path and isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            return {"missing": str(path)}
        return file_identity(path, full_hash)
    return source


def _canonical(parts):
    try:
        return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cache key parts must be JSON (str, numbers, bools, None, lists, dicts): {e}") from None


def fingerprint(parts):
    """The key of `parts` (JSON-able): 32 hex digits of the SHA-256 of their canonical JSON."""
    return hashlib.sha256(_canonical(parts).encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """A cache key and the parts it was computed from (kept in the entry's manifest)."""

    digest: str
    parts: dict

    @classmethod
    def of(cls, parts):
        return cls(fingerprint(parts), json.loads(_canonical(parts)))

    def __str__(self):
        return self.digest


def _text_digest(lines):
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def data_key(config, *, vocabulary=None, tokenizer_record=None, classes=None, full_hash=None):
    """The key of a config's prepared data: everything that determines its rows.

    Parts: the cache format and encoding versions; per task (in order) its
    name, type, reader format, reader options and each split's source
    identity (`source_identity`); the split settings (`splits`); the model
    settings that change tokenization (`MODEL_FIELDS`); the tokenizer; the
    label maps. A part that is learned from the data (the vocabulary, the
    classes) is keyed by its recipe when it is not given: the data it is
    learned from is in the key already.

    Args:
        config: an `ExperimentConfig` (data paths resolved, as `load_config` gives).
        vocabulary: a given vocabulary (a run to fine-tune from); None: learned,
            keyed by `vocabulary_size`, `lowercase`, `cache.vocabulary_sample`
            and the task names (the reserved task tokens).
        tokenizer_record: a preset's tokenizer (JSON-able), keyed by its content.
        classes: given label maps `{task: [class, ...]}`; None: learned from train.
        full_hash: identify files by all their bytes; None: `config.cache.full_hash`.
    """
    full = config.cache.full_hash if full_hash is None else full_hash
    tasks = []
    for task in config.tasks:
        reader = readers.get_reader(task.data.format)
        sources = {
            split: source_identity(getattr(task.data, split), reader.source_is_path, full)
            for split in SPLITS
            if getattr(task.data, split) is not None
        }
        tasks.append({
            "name": task.name, "type": task.type, "format": task.data.format,
            "options": reader_options(task).model_dump(mode="json"), "sources": sources,
        })
    model = {name: getattr(config.model, name) for name in MODEL_FIELDS if name in type(config.model).model_fields}
    if vocabulary is not None:
        tokenizer = {"vocabulary_sha256": _text_digest(vocabulary)}
    elif tokenizer_record is not None:
        tokenizer = {"tokenizer_sha256": hashlib.sha256(_canonical(tokenizer_record).encode("utf-8")).hexdigest()}
    elif config.model.preset:
        tokenizer = {"preset": config.model.preset}
    else:
        tokenizer = {"learned": {"vocabulary_sample": config.cache.vocabulary_sample, "reserved": config.task_names}}
    parts = {
        "cache_format": FORMAT_VERSION,
        "encoding": ENCODING_VERSION,
        "tasks": tasks,
        "splits": config.splits.model_dump(mode="json"),
        "model": model,
        "tokenizer": tokenizer,
        "classes": "learned" if classes is None else {k: list(v) for k, v in classes.items()},
    }
    return CacheKey.of(parts)


def _key_text(key):
    text = str(key)
    if not _KEY.match(text):
        raise ValueError(f"not a cache key: {text!r} (8 to 64 lowercase hex digits)")
    return text


# --------------------------------------------------------------------------
# Columns and rows
# --------------------------------------------------------------------------


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


def _stem(name):
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise ValueError(f"column name {name!r}: letters, digits and _, parts joined by /")
    return name.replace("/", ".")


def _values(column, name, values):
    """A block's values of one column as numpy: (values, offsets or None)."""
    if column.ragged:
        arrays = [np.asarray(v, column.storage).reshape(-1) for v in values]
        lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
        flat = np.concatenate(arrays) if arrays else np.zeros([0], column.storage)
        return flat, lengths
    array = np.asarray(values, column.storage)
    want = (len(values), *column.shape)
    if array.shape != want:
        raise ValueError(f"column {name!r}: a block of shape {array.shape}, expected {want}")
    return array, None


class _ShardWriter:
    """Appends blocks of rows to the column files of one shard, hashing as it writes."""

    def __init__(self, directory, columns):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True)
        self.columns = columns
        self.rows = 0
        self.files = {}  # file name -> [file object, sha256, bytes]
        self.ends = {name: 0 for name, c in columns.items() if c.ragged}
        for name, column in columns.items():
            self._open(f"{_stem(name)}.values")
            if column.ragged:
                self._open(f"{_stem(name)}.offsets")
                self._write(f"{_stem(name)}.offsets", np.zeros([1], "<i8"))

    def _open(self, file):
        self.files[file] = [open(self.directory / file, "wb"), hashlib.sha256(), 0]

    def _write(self, file, array):
        data = np.ascontiguousarray(array).tobytes()
        f, digest, _ = self.files[file]
        f.write(data)
        digest.update(data)
        self.files[file][2] += len(data)

    def add(self, block, n):
        for name, column in self.columns.items():
            values, lengths = _values(column, name, block[name])
            stem = _stem(name)
            self._write(f"{stem}.values", values)
            if lengths is not None:
                offsets = self.ends[name] + np.cumsum(lengths, dtype=np.int64)
                self._write(f"{stem}.offsets", offsets.astype("<i8"))
                if len(offsets):
                    self.ends[name] = int(offsets[-1])
        self.rows += n

    def close(self):
        """Flush and fsync every file; the shard's manifest record."""
        files = {}
        for file, (f, digest, size) in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            files[file] = {"bytes": size, "sha256": digest.hexdigest()}
        return {"rows": self.rows, "files": files}

    def abort(self):
        for f, _, _ in self.files.values():
            f.close()


def _write_split(directory, split, rows, columns, shard_rows, block_rows, advance):
    """Write one split's rows (dicts) as shards under `directory/split/`; its manifest record."""
    shards, writer, count = [], None, 0
    block = {name: [] for name in columns}
    n = 0

    def flush():
        nonlocal writer, n
        if not n:
            return
        if writer is None:
            writer = _ShardWriter(directory / split / f"{len(shards):05d}", columns)
        writer.add(block, n)
        for values in block.values():
            values.clear()
        advance(n)
        n = 0
        if writer.rows >= shard_rows:
            shards.append({"dir": f"{split}/{len(shards):05d}", **writer.close()})
            writer = None

    try:
        for row in rows:
            for name, values in block.items():
                try:
                    values.append(row[name])
                except KeyError:
                    raise ValueError(f"split {split!r}, row {count}: no column {name!r}") from None
            n += 1
            count += 1
            if n == block_rows or (writer.rows if writer is not None else 0) + n >= shard_rows:
                flush()
        flush()
        if writer is not None:
            shards.append({"dir": f"{split}/{len(shards):05d}", **writer.close()})
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return {"rows": count, "shards": shards}


@dataclasses.dataclass
class EntryData:
    """What `Cache.get_or_write`'s `build()` returns: the rows and what goes with them."""

    splits: dict  # split -> iterable of rows (dicts: column -> value)
    columns: dict  # column name -> Column
    meta: dict = dataclasses.field(default_factory=dict)  # JSON-able: label maps, counts, reports
    files: dict = dataclasses.field(default_factory=dict)  # file name -> bytes (a vocabulary, a tokenizer)
    total_rows: Optional[int] = None  # for the progress line's ETA


def encoded_columns(encoded, task_names):
    """The columns of the rows `encoded_rows` gives for an `EncodedSplit`.

    `token_ids`, `word_starts` (int32 lists), `truncated` (bool), `text_hash`
    (16 bytes: `splits.example_hash` of the row's example), per task
    `labels/<task>` as its type encodes them (an int or a float a row, an int
    list a row for tagging, k floats a row for a k-class multilabel task) and
    `weights/<task>` (float32); where the split holds windows, `row_example`,
    `row_window` and `num_windows` too.
    """
    columns = {
        "token_ids": Column("int32", (None,)),
        "word_starts": Column("int32", (None,)),
        "truncated": Column("bool"),
        "text_hash": Column("uint8", (HASH_BYTES,)),
    }
    for task in task_names:
        labels = encoded.labels[task]
        if isinstance(labels, np.ndarray) and labels.ndim in (1, 2):
            shape = () if labels.ndim == 1 else (int(labels.shape[1]),)
            columns[f"labels/{task}"] = Column(str(labels.dtype), shape)
        else:  # one array a row (tagging)
            dtype = str(np.asarray(labels[0]).dtype) if len(labels) else "int32"
            columns[f"labels/{task}"] = Column(dtype, (None,))
        columns[f"weights/{task}"] = Column("float32")
    if getattr(encoded, "row_example", None) is not None:
        columns.update(row_example=Column("int64"), row_window=Column("int32"), num_windows=Column("int32"))
    return columns


def encoded_rows(encoded, task_names):
    """The rows of an `EncodedSplit` (data.pipeline), one dict a row, for `Cache.write`."""
    row_example = getattr(encoded, "row_example", None)
    hashes = [np.frombuffer(example_hash(ex.text, ex.text_pair), np.uint8) for ex in encoded.examples]
    for i in range(len(encoded.token_ids)):
        example = i if row_example is None else int(row_example[i])
        row = {
            "token_ids": encoded.token_ids[i],
            "word_starts": encoded.word_starts[i],
            "truncated": bool(encoded.truncated[i]),
            "text_hash": hashes[example],
        }
        for task in task_names:
            row[f"labels/{task}"] = encoded.labels[task][i]
            row[f"weights/{task}"] = encoded.weights[task][i]
        if row_example is not None:
            row.update(row_example=example, row_window=int(encoded.row_window[i]),
                       num_windows=int(encoded.num_windows[example]))
        yield row


def entry_data_of(prepared):
    """The `EntryData` of a prepared run (`keras_mtl.prepare.PreparedRun`, read as is).

    Its encoded splits as rows (`encoded_rows`), the vocabulary (`vocab.txt`)
    and a preset's tokenizer (`tokenizer.json`) as files, and as meta the
    task names, label maps, carved-split and leak reports: what a run needs
    besides the rows, so that a warm run need not read the data files.
    """
    names = [task.name for task in prepared.config.tasks]
    encoded = prepared.encoded
    data = prepared.data
    files = {"vocab.txt": "".join(f"{token}\n" for token in prepared.vocabulary)}
    if getattr(prepared, "tokenizer_record", None) is not None:
        files["tokenizer.json"] = json.dumps(prepared.tokenizer_record, sort_keys=True)
    meta = {
        "tasks": names,
        "classes": {k: list(v) for k, v in data.classes.items()},
        "examples": {s: len(data.splits[s]) for s in SPLITS},
        "overlap": data.overlap,
        "unseen": data.unseen,
        "dropped": data.dropped,
    }
    return EntryData(
        splits={s: encoded_rows(encoded[s], names) for s in SPLITS},
        columns=encoded_columns(encoded["train"], names),
        meta=json.loads(json.dumps(meta, default=str)),
        files=files,
        total_rows=sum(len(encoded[s]) for s in SPLITS),
    )


# --------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------


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
        return _manifest_bytes(self.manifest)


def _manifest_files(manifest):
    """(relative path, {"bytes", "sha256"}) of every file a manifest lists."""
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            for file, info in shard["files"].items():
                yield f"{shard['dir']}/{file}", info
    for file, info in manifest.get("files", {}).items():
        yield f"files/{file}", info


def _manifest_bytes(manifest):
    return sum(info["bytes"] for _, info in _manifest_files(manifest))


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
        for name, info in _manifest_files(manifest):
            file = path / name
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                return f"{name} is missing", manifest
            if size != info["bytes"]:
                return f"{name} has {size} bytes, the manifest says {info['bytes']}", manifest
            if verify == "sha256" and _sha256_file(file) != info["sha256"]:
                return f"{name} does not match its SHA-256 in the manifest", manifest
    except (KeyError, TypeError, AttributeError) as e:
        return f"malformed manifest.json ({type(e).__name__}: {e})", manifest
    return None, manifest


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host():
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_tree(path):
    """Remove a directory safely against others doing the same: rename it away, then delete."""
    path = Path(path)
    trash = path.with_name(f"{path.name.split('.')[0]}.trash-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """One line of `keras-mtl prepare --list`."""

    key: str
    state: str  # "ok", "corrupt: <why>", "being written (pid N on HOST)", "stale temporary (pid N on HOST)"
    name: str = ""
    created: str = ""
    bytes: int = 0
    rows: dict = dataclasses.field(default_factory=dict)  # split -> rows
    path: Optional[Path] = None


class Cache:
    """The prepared-data cache in one directory (see the module docstring).

    Nothing is created on disk until an entry is written (or a lock taken).
    """

    def __init__(self, directory=None):
        self.directory = Path(directory) if directory is not None else default_dir()
        if self.directory.exists() and not self.directory.is_dir():
            raise DataError(f"{self.directory}: is a file, expected the cache directory")

    # ---- locking

    @contextlib.contextmanager
    def lock(self, key, blocking=True):
        """Hold the exclusive lock of `key` (`<dir>/<key>.lock`, `fcntl.flock`).

        With `blocking=False`, raises `BlockingIOError` when another process
        holds it. The lock file stays (an empty file): deleting it could let
        two processes hold "the" lock on two different files.
        """
        key = _key_text(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- reading

    def open(self, key, verify="sha256"):
        """The complete entry of `key`, verified, or None.

        An entry whose files do not match its manifest is reported (one
        warning), removed under the key's lock and None is returned: the
        caller rebuilds it. Never returns a half-written entry: a directory
        `<key>/` appears only by the rename that completes it.
        """
        key = _key_text(key)
        entry = self._open(key, verify, locked=False)
        return entry

    def _open(self, key, verify, locked):
        path = self.directory / key
        if not path.is_dir():
            return None
        problem, manifest = check_entry(path, key, verify)
        if problem is None:
            return CacheEntry(path, manifest)
        if not locked:
            with self.lock(key):
                return self._open(key, verify, locked=True)  # again: a writer may have replaced it meanwhile
        warnings.warn(f"{path}: corrupt prepared-data cache entry ({problem}); removed, it is rebuilt", stacklevel=3)
        _remove_tree(path)
        return None

    # ---- writing

    def write(self, key, splits, columns, *, name="", parts=None, meta=None, files=None, total_rows=None,
              shard_rows=SHARD_ROWS, block_rows=BLOCK_ROWS, verify="sha256"):
        """Write the entry of `key` from already-encoded rows; the complete entry.

        If another process completed the entry while this one waited for the
        lock, its entry is returned and `splits` is not read.

        Args:
            key: a `CacheKey` (its parts go into the manifest) or its digest.
            splits: `{split: iterable of rows}`, a row a dict of column -> value
                (see `encoded_rows`); streamed, a block at a time.
            columns: `{name: Column}`.
            name: the config's name (for `--list`).
            parts: the key's parts (default: those of a `CacheKey`).
            meta: JSON-able facts kept with the rows (label maps, counts, reports).
            files: `{file name: bytes}` stored with the entry (a vocabulary).
            total_rows: the number of rows of all splits, for the progress line.
        """
        entry, _ = self.get_or_write(
            key, lambda: EntryData(splits, columns, meta or {}, files or {}, total_rows), name=name, parts=parts,
            shard_rows=shard_rows, block_rows=block_rows, verify=verify,
        )
        return entry

    def get_or_write(self, key, build, *, name="", parts=None, shard_rows=SHARD_ROWS, block_rows=BLOCK_ROWS,
                     verify="sha256"):
        """(entry, built): the entry of `key`, written from `build()` unless there.

        `build()` (an `EntryData`) is called only when no complete entry exists
        once the key's lock is held; a concurrent writer of the same key waits
        for the lock and then opens the entry the first one wrote. Temporaries
        of the key left by killed writers are removed first. If writing fails
        (the rows raise, the disk is full), nothing of it stays.
        """
        if parts is None and isinstance(key, CacheKey):
            parts = key.parts
        key = _key_text(key)
        entry = self._open(key, verify, locked=False)
        if entry is not None:
            return entry, False
        with self.lock(key):
            entry = self._open(key, verify, locked=True)
            if entry is not None:
                return entry, False
            self._remove_temporaries(key)
            data = build()
            temporary = self.directory / f"{key}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            temporary.mkdir()
            try:
                manifest = self._write_entry(temporary, key, data, name, parts, shard_rows, block_rows)
                os.rename(temporary, self.directory / key)
                _fsync_dir(self.directory)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            return CacheEntry(self.directory / key, manifest), True

    def _write_entry(self, directory, key, data, name, parts, shard_rows, block_rows):
        columns = {n: c if isinstance(c, Column) else Column.from_json(c) for n, c in data.columns.items()}
        for column in columns:
            _stem(column)
        splits = {}
        with progress.step(f"writing the prepared data of {name or key}", total=data.total_rows) as advance:
            speed = _Speed(advance, data.total_rows)
            for split, rows in data.splits.items():
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
                splits[split] = _write_split(directory, split, rows, columns, shard_rows, block_rows, speed)
        files = {}
        if data.files:
            (directory / "files").mkdir()
            for file, content in data.files.items():
                if not re.match(r"^[A-Za-z0-9_.-]+$", file) or file.startswith("."):
                    raise ValueError(f"file name {file!r}: letters, digits, _ . - only")
                content = content.encode("utf-8") if isinstance(content, str) else bytes(content)
                with open(directory / "files" / file, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                files[file] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        manifest = {
            "format": FORMAT_VERSION,
            "key": key,
            "name": name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "created_by": {"host": socket.gethostname(), "pid": os.getpid()},
            "parts": parts,
            "columns": {n: c.to_json() for n, c in columns.items()},
            "block_rows": block_rows,
            "splits": splits,
            "files": files,
            "meta": data.meta,
        }
        text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
        with open(directory / MANIFEST, "w", encoding="utf-8") as f:  # last: its presence says "complete"
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for sub in sorted({p for p in directory.rglob("*") if p.is_dir()} | {directory}, reverse=True):
            _fsync_dir(sub)
        return json.loads(text)

    # ---- listing and clearing

    def _temporaries(self, key=None):
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            m = _TEMPORARY.match(path.name)
            if m and (key is None or m["key"] == key):
                found.append((path, m["key"], m["host"], int(m["pid"])))
        return found

    def _remove_temporaries(self, key):
        """Remove the temporaries of `key` (call under its lock: no live writer owns one)."""
        for path, _, _, _ in self._temporaries(key):
            shutil.rmtree(path, ignore_errors=True)

    def _writing(self, key):
        """Whether a process holds the lock of `key` now."""
        try:
            with self.lock(key, blocking=False):
                return False
        except BlockingIOError:
            return True

    def entries(self, verify="size"):
        """What the cache holds, for `prepare --list`: an `EntryInfo` per entry and temporary.

        Entries are checked by size (`verify="sha256"` for a full check); none
        is removed here.
        """
        if not self.directory.is_dir():
            return []
        infos = []
        for path in sorted(self.directory.iterdir()):
            if path.is_dir() and _KEY.match(path.name):
                problem, manifest = check_entry(path, path.name, verify)
                manifest = manifest if isinstance(manifest, dict) else {}
                try:
                    rows = {s: v["rows"] for s, v in manifest.get("splits", {}).items()}
                    size = _manifest_bytes(manifest) if problem is None else _disk_bytes(path)
                except (KeyError, TypeError, AttributeError):
                    rows, size = {}, _disk_bytes(path)
                infos.append(EntryInfo(path.name, "ok" if problem is None else f"corrupt: {problem}",
                                       str(manifest.get("name", "")), str(manifest.get("created", "")),
                                       size, rows, path))
        for path, key, host, pid in self._temporaries():
            writing = self._writing(key)
            state = "being written" if writing else "stale temporary"
            infos.append(EntryInfo(key, f"{state} (pid {pid} on {host})", bytes=_disk_bytes(path), path=path))
        return infos

    def find(self, prefix):
        """The key of the one entry whose key starts with `prefix` (as git finds a commit)."""
        prefix = str(prefix).strip().lower()
        keys = sorted({info.key for info in self.entries()}) if re.match(r"^[0-9a-f]+$", prefix) else []
        matches = [k for k in keys if k.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise DataError(f"{self.directory}: no cache entry {prefix!r} (`keras-mtl prepare --list` lists them)")
        raise DataError(f"{self.directory}: {prefix!r} is the start of {len(matches)} keys; give more digits")

    def clear(self, key=None):
        """Remove the entry of `key` (None: every entry), with its stale temporaries.

        An entry being written is left alone (its writer holds the lock); so is
        everything in the directory that is not the cache's. Returns the
        removed paths.
        """
        if not self.directory.is_dir():
            return []
        keys = sorted({info.key for info in self.entries()}) if key is None else [_key_text(key)]
        removed = []
        for k in keys:
            try:
                with self.lock(k, blocking=False):
                    for path, _, _, _ in self._temporaries(k):
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(path)
                    if (self.directory / k).is_dir() and _remove_tree(self.directory / k):
                        removed.append(self.directory / k)
            except BlockingIOError:
                continue  # being written: not ours to remove
        if key is None:
            for path in self.directory.iterdir():
                if _TRASH.match(path.name):  # a removal that was interrupted
                    shutil.rmtree(path, ignore_errors=True)
        return removed


def _disk_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class _Speed:
    """Counts written rows into a progress step, with examples/s and the ETA as its note."""

    def __init__(self, advance, total):
        import time

        self.clock = time.monotonic
        self.advance, self.total = advance, total
        self.start, self.done = self.clock(), 0

    def __call__(self, n):
        self.done += n
        rate = self.done / max(self.clock() - self.start, 1e-9)
        note = f"({rate:,.0f} examples/s"
        if self.total:
            left = max(self.total - self.done, 0) / max(rate, 1e-9)
            note += f", ETA {left:.0f} s"
        self.advance(n, note=note + ")")


# --------------------------------------------------------------------------
# Reading rows back
# --------------------------------------------------------------------------


def _read_array(path, dtype, start, count):
    """`count` items of `dtype` from `path`, starting at item `start` (a positioned read, no mapping)."""
    with open(path, "rb") as f:
        f.seek(start * dtype.itemsize)
        array = np.fromfile(f, dtype, count)
    if len(array) != count:
        raise DataError(f"{path}: {len(array)} values where the manifest promises {count} (a damaged cache entry)")
    return array


def blocks_of(entry, split, block_rows=None):
    """[(start, stop)]: a split's blocks of `block_rows` rows (the entry's by default), in order.

    Blocks run over the whole split (a block may span two shards): all hold
    `block_rows` rows but the last.
    """
    block_rows = block_rows or entry.manifest.get("block_rows", BLOCK_ROWS)
    rows = entry.rows(split)
    return [(start, min(start + block_rows, rows)) for start in range(0, rows, block_rows)]


def share(blocks, num_processes=1, process_id=0):
    """The blocks of one process: block j goes to process j mod `num_processes`.

    Strided, not contiguous, so that every process gets rows from the whole
    split (a file sorted by label or date gives each process a bit of all of
    it). Shares differ by at most one block in size.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, num_processes). Received: {process_id}, {num_processes}")
    return blocks[process_id::num_processes]


def _read_piece(directory, start, stop, columns):
    """Rows [start, stop) of one shard: column -> array, or (values, row_splits) for a list column."""
    n = stop - start
    out = {}
    for name, column in columns.items():
        stem = _stem(name)
        dtype = column.storage
        if column.ragged:
            offsets = _read_array(directory / f"{stem}.offsets", np.dtype("<i8"), start, n + 1)
            values = _read_array(directory / f"{stem}.values", dtype, int(offsets[0]), int(offsets[-1] - offsets[0]))
            out[name] = (values.astype(column.dtype, copy=False), (offsets - offsets[0]).astype(np.int64))
        else:
            width = column.shape[0] if column.shape else 1
            values = _read_array(directory / f"{stem}.values", dtype, start * width, n * width)
            out[name] = values.astype(column.dtype, copy=False).reshape((n, *column.shape))
    return out


def read_rows(entry, split, start, stop, columns=None):
    """Rows [start, stop) of a split, as numpy: column -> array `[n]` / `[n, k]`, or
    `(values, row_splits)` for a list column. Positioned reads: no file is mapped."""
    columns = columns or entry.columns
    pieces, first = [], 0
    for directory, rows in entry.shards(split):
        a, b = max(start, first), min(stop, first + rows)
        if a < b:
            pieces.append(_read_piece(directory, a - first, b - first, columns))
        first += rows
        if first >= stop:
            break
    if len(pieces) == 1:
        return pieces[0]
    out = {}
    for name, column in columns.items():
        if column.ragged:
            values = np.concatenate([p[name][0] for p in pieces])
            splits, end = [np.zeros([1], np.int64)], 0
            for p in pieces:
                splits.append(p[name][1][1:] + end)
                end += int(p[name][1][-1])
            out[name] = (values, np.concatenate(splits))
        else:
            out[name] = np.concatenate([p[name] for p in pieces])
    return out


def iter_blocks(entry, split, *, num_processes=1, process_id=0, seed=None, block_rows=None, columns=None):
    """The numpy blocks (`read_rows`) of this process's share of a split.

    In order, or with `seed` in a random order of blocks (rows inside a block
    stay in order: mix them with a shuffle buffer). Memory: one block.
    """
    blocks = share(blocks_of(entry, split, block_rows), num_processes, process_id)
    if seed is not None:
        blocks = [blocks[i] for i in np.random.default_rng(seed).permutation(len(blocks))]
    columns = {n: entry.columns[n] for n in columns} if columns else entry.columns
    for start, stop in blocks:
        yield read_rows(entry, split, start, stop, columns)


def read_split(entry, split, *, num_processes=1, process_id=0, shuffle_seed=None, block_rows=None, columns=None,
               blocks=False):
    """A split of an entry as a `tf.data.Dataset` of dicts, one a row (or a block).

    A row: `{column: tensor}`: a list column (token ids, tags) is a 1-D
    tensor of its length, a `(k,)` column a `[k]` tensor, the others scalars.
    With `blocks=True`, a block of rows a dict with a leading dimension, list
    columns as `tf.RaggedTensor`s.

    Args:
        entry: a `CacheEntry`.
        split: "train", "dev" or "test".
        num_processes, process_id: read only this process's share (`share`:
            every `num_processes`-th block); multi-host JAX passes
            `jax.process_count()` and `jax.process_index()`.
        shuffle_seed: None: the rows in order. An int: the blocks in a random
            order, a new one each time the dataset is iterated (an epoch), the
            same sequence of orders for the same seed.
        block_rows: rows a block (default: the entry's).
        columns: the columns to read (default: all).
        blocks: yield blocks instead of rows.
    """
    import tensorflow as tf  # lazy: TensorFlow (`prepare --list/--clear` import this module and answer without it)

    if split not in entry.manifest["splits"]:
        raise KeyError(f"split {split!r} is not in the entry (it has {', '.join(entry.splits)})")
    chosen = {n: entry.columns[n] for n in columns} if columns else entry.columns
    signature = {}
    for name, column in chosen.items():
        if column.ragged:
            signature[name] = (tf.TensorSpec([None], column.dtype), tf.TensorSpec([None], tf.int64))
        else:
            signature[name] = tf.TensorSpec([None, *column.shape], column.dtype)
    epochs = itertools.count()

    def generate():
        seed = None if shuffle_seed is None else [shuffle_seed, next(epochs)]
        yield from iter_blocks(entry, split, num_processes=num_processes, process_id=process_id, seed=seed,
                               block_rows=block_rows, columns=list(chosen))

    def as_tensors(block):
        return {
            name: tf.RaggedTensor.from_row_splits(*value, validate=False) if chosen[name].ragged else value
            for name, value in block.items()
        }

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).map(as_tensors)
    return dataset if blocks else dataset.unbatch()
