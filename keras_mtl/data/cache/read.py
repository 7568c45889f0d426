"""Reading an entry's rows back: positioned reads of its column files, a block at a time, a process's share.

Nothing is memory-mapped: the pages read do not count in the process's RSS.
`read_split` imports TensorFlow when called (the rest needs numpy only).
"""

import itertools

import numpy as np

from keras_mtl.data.cache.entry import BLOCK_ROWS, column_stem
from keras_mtl.errors import DataError

__all__ = ["blocks_of", "concat_blocks", "iter_blocks", "read_rows", "read_runs", "read_split", "row_lengths", "runs_of",
           "share"]


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
        stem = column_stem(name)
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
    return concat_blocks(pieces, columns)


def concat_blocks(pieces, columns):
    """One block of the rows of `pieces` (blocks of `read_rows`' form), one after the other."""
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


def runs_of(rows):
    """[(start, stop)]: the runs of consecutive row numbers in sorted `rows`."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(rows)]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def read_runs(entry, split, runs, columns=None):
    """The rows of `runs` ([(start, stop)], in order) as one block: each run is one `read_rows`,
    so that exactly these rows are read."""
    columns = columns or entry.columns
    return concat_blocks([read_rows(entry, split, a, b, columns) for a, b in runs], columns)


def row_lengths(entry, split, column):
    """int64 [rows]: the length of a list column's value in every row of a split (its offsets only are read)."""
    stem = column_stem(column)
    if not entry.columns[column].ragged:
        raise ValueError(f"column {column!r} is not a list column")
    out = []
    for directory, rows in entry.shards(split):
        out.append(np.diff(_read_array(directory / f"{stem}.offsets", np.dtype("<i8"), 0, rows + 1)))
    return np.concatenate(out).astype(np.int64) if out else np.zeros([0], np.int64)


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
