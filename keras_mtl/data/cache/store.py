"""`Cache`: the entries of one directory: locking, opening (verified), writing (temporary, rename), listing
and clearing (docs/data_at_scale.md, "Writing" and "Opening")."""

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Optional

from keras_mtl.data.cache.entry import (
    BLOCK_ROWS, SHARD_ROWS, CacheEntry, EntryData, check_entry, manifest_bytes,
)
from keras_mtl.data.cache.key import KEY_PATTERN, CacheKey, default_dir, key_text
from keras_mtl.data.cache.write import fsync_dir, write_entry_files
from keras_mtl.errors import DataError

__all__ = ["Cache", "EntryInfo"]

_TEMPORARY = re.compile(r"^(?P<key>[0-9a-f]{8,64})\.tmp-(?P<host>.+)-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{8})$")
_TRASH = re.compile(r"^[0-9a-f]{8,64}\.trash-")


def _host():
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


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
        key = key_text(key)
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
        key = key_text(key)
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
            splits: `{split: iterable of rows}`, a row a dict of column -> value, and/or of
                `ColumnBlock`s (see `encoded_block`); streamed, a block at a time.
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
        key = key_text(key)
        entry = self._open(key, verify, locked=False)
        if entry is not None:
            return entry, False
        with self.lock(key):
            entry = self._open(key, verify, locked=True)
            if entry is not None:
                return entry, False
            self._remove_temporaries(key)
            data = build()
            temporary = self.temporary(key)
            try:
                manifest = write_entry_files(temporary, key, data, name, parts, shard_rows, block_rows)
                os.rename(temporary, self.directory / key)
                fsync_dir(self.directory)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            return CacheEntry(self.directory / key, manifest), True

    def temporary(self, key):
        """A new, empty temporary directory of `key` (`<key>.tmp-<host>-<pid>-<token>/`): where an entry is
        written, or a writer's scratch files (`data.streamed`'s dev and test). Call it under the key's lock:
        one left by a killed writer is removed by the key's next writer, and by `clear()`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key_text(key)}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

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
            if path.is_dir() and KEY_PATTERN.match(path.name):
                problem, manifest = check_entry(path, path.name, verify)
                manifest = manifest if isinstance(manifest, dict) else {}
                try:
                    rows = {s: v["rows"] for s, v in manifest.get("splits", {}).items()}
                    size = manifest_bytes(manifest) if problem is None else _disk_bytes(path)
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
        keys = sorted({info.key for info in self.entries()}) if key is None else [key_text(key)]
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
