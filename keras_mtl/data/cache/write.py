"""Writing an entry's files: shards of column files, a block of rows (`ColumnBlock`) at a time, hashed as written."""

import datetime
import hashlib
import json
import os
import re
import socket
from pathlib import Path

import numpy as np

from keras_mtl.data import progress
from keras_mtl.data.cache.entry import MANIFEST, Column, ColumnBlock, column_stem
from keras_mtl.data.cache.key import FORMAT_VERSION, SPLITS

__all__ = ["fsync_dir", "write_entry_files"]


def _block_of_rows(rows, columns, split, count):
    """The `ColumnBlock` of a list of rows (dicts); `count`: the rows of the split before them (for errors)."""
    out = {}
    for name, column in columns.items():
        try:
            values = [row[name] for row in rows]
        except KeyError:
            at = next(i for i, row in enumerate(rows) if name not in row)
            raise ValueError(f"split {split!r}, row {count + at}: no column {name!r}") from None
        if column.ragged:
            arrays = [np.asarray(v, column.storage).reshape(-1) for v in values]
            lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
            out[name] = (np.concatenate(arrays) if arrays else np.zeros([0], column.storage), lengths)
        else:
            out[name] = values
    return ColumnBlock(len(rows), out)


def _column_values(column, name, value, n):
    """A block's values of one column as numpy in the column's storage: (values, lengths or None)."""
    if column.ragged:
        if not isinstance(value, tuple) or len(value) != 2:
            raise ValueError(f"column {name!r}: a list column's block is (values, lengths)")
        values = np.asarray(value[0], column.storage).reshape(-1)
        lengths = np.asarray(value[1], np.int64).reshape(-1)
        if len(lengths) != n or int(lengths.sum()) != len(values):
            raise ValueError(f"column {name!r}: {len(lengths)} lengths summing to {int(lengths.sum())} for a block "
                             f"of {n} rows and {len(values)} values")
        return values, lengths
    array = np.asarray(value, column.storage)
    want = (n, *column.shape)
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
            self._open(f"{column_stem(name)}.values")
            if column.ragged:
                self._open(f"{column_stem(name)}.offsets")
                self._write(f"{column_stem(name)}.offsets", np.zeros([1], "<i8"))

    def _open(self, file):
        self.files[file] = [open(self.directory / file, "wb"), hashlib.sha256(), 0]

    def _write(self, file, array):
        data = np.ascontiguousarray(array).tobytes()
        f, digest, _ = self.files[file]
        f.write(data)
        digest.update(data)
        self.files[file][2] += len(data)

    def add(self, block):
        """Append a `ColumnBlock`."""
        for name, column in self.columns.items():
            values, lengths = _column_values(column, name, block.columns[name], block.rows)
            stem = column_stem(name)
            self._write(f"{stem}.values", values)
            if lengths is not None:
                offsets = self.ends[name] + np.cumsum(lengths, dtype=np.int64)
                self._write(f"{stem}.offsets", offsets.astype("<i8"))
                if len(offsets):
                    self.ends[name] = int(offsets[-1])
        self.rows += block.rows

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


def _blocks(items, columns, split, block_rows):
    """The `ColumnBlock`s of a split's items: blocks as given, rows (dicts) gathered `block_rows` at a time."""
    rows, count = [], 0
    for item in items:
        if isinstance(item, ColumnBlock):
            if rows:
                yield _block_of_rows(rows, columns, split, count - len(rows))
                rows = []
            count += item.rows
            yield item
            continue
        rows.append(item)
        count += 1
        if len(rows) == block_rows:
            yield _block_of_rows(rows, columns, split, count - len(rows))
            rows = []
    if rows:
        yield _block_of_rows(rows, columns, split, count - len(rows))


def _write_split(directory, split, items, columns, shard_rows, block_rows, advance):
    """Write one split's rows (dicts and/or `ColumnBlock`s, in order) as shards of `shard_rows` rows (the last
    one the rest) under `directory/split/`; its manifest record. How the rows come in blocks does not change
    a byte of the files: a block is cut where a shard ends."""
    shards, writer, count = [], None, 0
    try:
        for block in _blocks(items, columns, split, block_rows):
            start = 0
            while start < block.rows:
                if writer is None:
                    writer = _ShardWriter(directory / split / f"{len(shards):05d}", columns)
                stop = min(block.rows, start + shard_rows - writer.rows)
                writer.add(block if (start, stop) == (0, block.rows) else block.slice(start, stop))
                advance(stop - start)
                count += stop - start
                start = stop
                if writer.rows >= shard_rows:
                    shards.append({"dir": f"{split}/{len(shards):05d}", **writer.close()})
                    writer = None
        if writer is not None:
            shards.append({"dir": f"{split}/{len(shards):05d}", **writer.close()})
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return {"rows": count, "shards": shards}


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


def fsync_dir(path):
    """fsync a directory (its entries' names)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path, content, chunk=1 << 20):
    """Write one of an entry's files, fsynced; its manifest record. `content`: str, bytes, or the path (a
    `PathLike`) of a file whose bytes are copied a MiB at a time (too large to hold: dev's and test's examples)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as f:
        if isinstance(content, os.PathLike):
            with open(content, "rb") as source:
                while data := source.read(chunk):
                    f.write(data)
                    digest.update(data)
                    size += len(data)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            f.write(data)
            digest.update(data)
            size = len(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def write_entry_files(directory, key, data, name, parts, shard_rows, block_rows):
    """Write an entry's files into `directory` (a temporary): its shards, files, then `manifest.json`
    last, every file fsynced and hashed as it is written; the manifest."""
    columns = {n: c if isinstance(c, Column) else Column.from_json(c) for n, c in data.columns.items()}
    for column in columns:
        column_stem(column)
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
            files[file] = _write_file(directory / "files" / file, content)
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
        fsync_dir(sub)
    return json.loads(text)
