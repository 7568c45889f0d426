"""The cache key: what determines a config's prepared rows, and where the cache is.

`data_key(config)` is the SHA-256 (32 hex digits) of the canonical JSON of the
parts (docs/data_at_scale.md, "The key"); `file_identity` says how a data
file is in it (never by its path).
"""

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

from keras_mtl.config import reader_options
from keras_mtl.data import readers

__all__ = [
    "CacheKey", "ENCODING_VERSION", "ENV_VAR", "FORMAT_VERSION", "KEY_PATTERN", "MODEL_FIELDS", "SPLITS",
    "cache_dir", "data_key", "default_dir", "file_identity", "fingerprint", "key_text", "sha256_file",
    "source_identity",
]

# The layout of an entry; a change makes every key new (the key holds it).
FORMAT_VERSION = 2  # 2: dev and test keep their examples (examples.<split>.jsonl, data/cached.py)
# How rows are encoded (tokenize.py, the task types' `encode_labels`): bump it
# when a change there gives other rows for the same inputs.
ENCODING_VERSION = 1
ENV_VAR = "KERAS_MTL_CACHE"
# The model settings that change how a text becomes rows (the others change the network only).
MODEL_FIELDS = (
    "preset", "lowercase", "vocabulary_size", "max_sequence_length", "long_inputs", "max_windows", "window_stride"
)
SPLITS = ("train", "dev", "test")
EDGE_BYTES = 1 << 20  # the cheap file identity hashes the first and the last MiB
KEY_PATTERN = re.compile(r"^[0-9a-f]{8,64}$")


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


def sha256_file(path, start=0, length=None, chunk=1 << 20):
    """The SHA-256 (hex) of `length` bytes of a file from `start` (all of it by default)."""
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
        return {"bytes": stat.st_size, "sha256": sha256_file(path)}
    size = stat.st_size
    head = sha256_file(path, 0, min(size, EDGE_BYTES))
    tail = sha256_file(path, max(0, size - EDGE_BYTES), EDGE_BYTES)
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


def key_text(key):
    """A key's digest, checked (8 to 64 lowercase hex digits)."""
    text = str(key)
    if not KEY_PATTERN.match(text):
        raise ValueError(f"not a cache key: {text!r} (8 to 64 lowercase hex digits)")
    return text
