"""A config's prepared data in its cache entry, as runs write and read it.

The cache (`keras_mtl.data.cache`) stores columns of rows; this module says
which: what an `EncodedSplit` (data.pipeline) is as rows (`encoded_columns`,
`encoded_block`, `entry_data`, the writer's side) and what training and
evaluation read back (`CachedTrainSplit`, `encoded_split`, `task_data`).

* The training split is never held: `CachedTrainSplit` keeps a few numbers a
  row (the row's length, each task's weight, the class ids of the tasks with
  `class_weights: balanced`, the labelled tokens of a tagging task), which
  the plan needs (sizes, sampling schedule, buckets, loss normalizer), and
  streams the rows from the shards (`iter_blocks`) for the training input.
* dev and test are written a block at a time too (`entry_data`'s `blocks`),
  their examples (what evaluation scores against) as one JSON line an
  example (`examples.<split>.jsonl`), streamed into the entry from a file
  (`example_line`). They are read back without an object a row: the
  columns evaluation reads as flat arrays (`RaggedRows` for a list a row,
  `encoded_split(..., compact=True)`), the examples from their file, one
  line at a time when iterated, one line by its offset when indexed
  (`ExampleFile`).
"""

import json
from pathlib import Path

import numpy as np

from keras_mtl.data import cache as cache_lib
from keras_mtl.data.cache import Column, ColumnBlock, EntryData
from keras_mtl.data.cache.read import read_runs, runs_of
from keras_mtl.data.example import Example
from keras_mtl.data.splits import HASH_BYTES, example_hash
from keras_mtl.errors import DataError
from keras_mtl.tasks import for_task

SPLITS = ("train", "dev", "test")
STATS_ROWS = 1 << 16  # rows read at a time for `CachedTrainSplit`'s statistics and `_read_compact`'s columns
HELD_SPLITS = ("dev", "test")  # read back whole, with their examples' labels


def examples_file(split):
    """The name of the file that holds a split's examples (texts and labels) in an entry."""
    return f"examples.{split}.jsonl"


# --------------------------------------------------------------------------
# Writing: an EncodedSplit as rows
# --------------------------------------------------------------------------


def _row_lists(labels):
    """Whether a task's encoded labels hold an array a row (tagging) rather than one array of all rows."""
    return not (isinstance(labels, np.ndarray) and labels.ndim in (1, 2))


def encoded_columns(encoded, task_names):
    """The columns of the rows `encoded_block` gives for an `EncodedSplit`.

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
        if not _row_lists(labels):
            shape = () if labels.ndim == 1 else (int(labels.shape[1]),)
            columns[f"labels/{task}"] = Column(str(labels.dtype), shape)
        else:  # one array a row (tagging)
            dtype = str(np.asarray(labels[0]).dtype) if len(labels) else "int32"
            columns[f"labels/{task}"] = Column(dtype, (None,))
        columns[f"weights/{task}"] = Column("float32")
    if getattr(encoded, "row_example", None) is not None:
        columns.update(row_example=Column("int64"), row_window=Column("int32"), num_windows=Column("int32"))
    return columns


def _flat(arrays):
    """(values, int64 lengths) of a list of 1-D arrays: a list column of a `ColumnBlock`."""
    lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
    return (np.concatenate(arrays) if len(arrays) else np.zeros([0], np.int32)), lengths


def encoded_block(encoded, task_names, before=0):
    """The rows of an `EncodedSplit` (data.pipeline) as one `ColumnBlock` (`encoded_columns`' columns), for
    `Cache.write`; `before`: the examples of the split before its first (added to `row_example`)."""
    rows = len(encoded.token_ids)
    row_example = getattr(encoded, "row_example", None)
    example = np.arange(rows, dtype=np.int64) if row_example is None else np.asarray(row_example, np.int64)
    hashes = b"".join(example_hash(ex.text, ex.text_pair) for ex in encoded.examples)
    columns = {
        "token_ids": _flat(encoded.token_ids),
        "word_starts": _flat(encoded.word_starts),
        "truncated": np.asarray(encoded.truncated, bool),
        "text_hash": np.frombuffer(hashes, np.uint8).reshape(-1, HASH_BYTES)[example],
    }
    for task in task_names:
        labels = encoded.labels[task]
        columns[f"labels/{task}"] = _flat(labels) if _row_lists(labels) else labels
        columns[f"weights/{task}"] = encoded.weights[task]
    if row_example is not None:
        columns.update(row_example=example + before, row_window=np.asarray(encoded.row_window),
                       num_windows=np.asarray(encoded.num_windows)[example])
    return ColumnBlock(rows, columns)


def _label_json(value):
    return list(value) if isinstance(value, tuple) else value


def example_line(ex):
    """One example as the JSON line `[text, labels, origin, text_pair]` of an examples file, with its newline."""
    line = json.dumps([ex.text, {k: _label_json(v) for k, v in ex.labels.items()}, ex.origin, ex.text_pair],
                      ensure_ascii=False)
    return f"{line}\n"


def examples_jsonl(examples):
    """A split's examples as JSON lines (`example_line`), bytes."""
    return "".join(example_line(ex) for ex in examples).encode("utf-8")


def example_of_line(line):
    """The example of one line `example_line` wrote (a list label back to a tuple, as readers give it)."""
    text, labels, origin, text_pair = json.loads(line)
    labels = {k: tuple(v) if isinstance(v, list) else v for k, v in labels.items()}
    return Example(text, labels, origin, text_pair)


def iter_examples(path):
    """The examples of an examples file, one line at a time."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield example_of_line(line)


class ExampleFile:
    """The examples of an examples file as a read-only sequence, none held.

    Iterating reads the file a line at a time; `ex[i]` reads line i by its
    offset (the offsets, 8 bytes an example, are found by one pass at the
    first `ex[i]`).
    """

    def __init__(self, path, count):
        self.path, self.count = Path(path), int(count)
        self._offsets = None

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter_examples(self.path)

    def __bool__(self):
        return self.count > 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        i = int(i)
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"example {i} of {self.count}")
        if self._offsets is None:
            offsets, at = np.zeros([self.count], np.int64), 0
            with open(self.path, "rb") as f:
                for n, line in enumerate(f):
                    offsets[n] = at
                    at += len(line)
            self._offsets = offsets
        with open(self.path, "rb") as f:
            f.seek(int(self._offsets[i]))
            return example_of_line(f.readline().decode("utf-8"))


class RaggedRows:
    """A list column as flat `values` and int64 `row_splits` (`[rows + 1]`): `rows[i]` a view of row i's
    values, no object a row (what `encoded_split(..., compact=True)` gives for token ids and word starts)."""

    def __init__(self, values, row_splits):
        self.values, self.row_splits = values, np.asarray(row_splits, np.int64)

    def __len__(self):
        return max(len(self.row_splits) - 1, 0)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        return self.values[self.row_splits[i]:self.row_splits[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def lengths(self):
        """int64 [rows]: each row's number of values."""
        return np.diff(self.row_splits)


def entry_data(config, data, vocabulary, tokenizer_record, encoded, blocks=None, example_files=None,
               columns=None):
    """The `EntryData` of a config's data read, tokenized and encoded.

    Its encoded splits as rows (`encoded_block`: a `ColumnBlock` an
    `EncodedSplit`); as files the vocabulary (`vocab.txt`), a preset's
    tokenizer (`tokenizer.json`) and the examples of dev and test
    (`examples_file`); as meta the task names, label maps, carved-split and
    leak reports: what a run needs besides the rows, so that a warm run need
    not read the data files.

    `blocks`: split -> its rows streamed (`data.streamed`), `ColumnBlock`s
    in order; a split streamed needs no `encoded[split]`, and
    `data.splits[split]` is a stream whose `len` is the number of its
    examples. `columns`: the entry's (`encoded_columns` of the training
    split's first block) when the training split is streamed; else those of
    `encoded["train"]`. `example_files`: split -> the path of a file of its
    examples' lines (`example_line`), copied into the entry instead of
    writing `data.splits[split]` out.
    """
    blocks, example_files = blocks or {}, example_files or {}
    names = [task.name for task in config.tasks]
    files = {"vocab.txt": "".join(f"{token}\n" for token in vocabulary)}
    if tokenizer_record is not None:
        files["tokenizer.json"] = json.dumps(tokenizer_record, sort_keys=True)
    for split in HELD_SPLITS:
        files[examples_file(split)] = example_files.get(split) or examples_jsonl(data.splits[split])
    meta = {
        "tasks": names,
        "classes": {k: list(v) for k, v in data.classes.items()},
        "examples": {s: len(data.splits[s]) for s in SPLITS},
        "overlap": data.overlap,
        "unseen": data.unseen,
        "dropped": data.dropped,
    }
    rows, total = {}, 0
    for s in SPLITS:
        if s in blocks:
            rows[s] = blocks[s]
            total += len(data.splits[s])  # about one row an example
        else:
            rows[s] = [encoded_block(encoded[s], names)]
            total += len(encoded[s])
    return EntryData(
        splits=rows,
        columns=columns if columns is not None else encoded_columns(encoded["train"], names),
        meta=json.loads(json.dumps(meta, default=str)),
        files=files,
        total_rows=total,
    )


# --------------------------------------------------------------------------
# Reading: what runs need of an entry
# --------------------------------------------------------------------------


def vocabulary_of(entry):
    """The entry's vocabulary (`vocab.txt`), one piece a line."""
    with open(entry.file("vocab.txt"), encoding="utf-8", newline="") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def tokenizer_record_of(entry):
    """A preset's tokenizer kept with the entry (`tokenizer.json`), or None."""
    if "tokenizer.json" not in entry.manifest.get("files", {}):
        return None
    return json.loads(entry.file("tokenizer.json").read_text(encoding="utf-8"))


def task_data(entry):
    """The entry's `TaskData` without its training examples.

    `splits` holds dev and test (the examples evaluation scores against) as
    `ExampleFile`s: read from the entry's files when used, never held; the
    training split is rows only (`CachedTrainSplit`). Label maps and the
    reports (`overlap`, `unseen`, `dropped`) come from the entry's meta.
    """
    from keras_mtl.data.load import TaskData

    meta = entry.meta
    return TaskData(
        splits={s: ExampleFile(entry.file(examples_file(s)), meta["examples"][s]) for s in HELD_SPLITS},
        classes={k: list(v) for k, v in meta["classes"].items()},
        per_task={},
        overlap=meta.get("overlap", {}),
        unseen=meta.get("unseen", {}),
        dropped=meta.get("dropped", {}),
    )


def _rows_list(values, row_splits):
    return np.split(values, row_splits[1:-1]) if len(row_splits) > 1 else []


def encoded_split(entry, split, examples, compact=False):
    """A split of the entry read back whole as the `EncodedSplit` it was written from.

    Args:
        entry: a `CacheEntry`.
        split: "dev" or "test" (any split works; the training split is streamed instead).
        examples: the split's examples (`task_data(entry).splits[split]`: an
            `ExampleFile`); None for the training split, whose examples are
            not kept (the split's `examples` is then empty; its rows are all there).
        compact: a list column (token ids, word starts, tags) as a
            `RaggedRows` (flat values and row starts, a view a row) instead of
            a list of arrays: no object a row. What evaluation reads of dev
            and test; the columns are read a block at a time.
    """
    from keras_mtl.data.pipeline import EncodedSplit  # lazy: TensorFlow

    columns = entry.columns
    rows = entry.rows(split)
    if not rows:
        block = {}
    elif compact:  # evaluation does not read the rows' text hashes
        block = _read_compact(entry, split, {n: c for n, c in columns.items() if n != "text_hash"})
    else:
        block = cache_lib.read_rows(entry, split, 0, rows)

    def column(name):
        col = columns[name]
        if rows == 0:
            empty = np.zeros([0, *[d for d in col.shape if d is not None]], col.dtype)
            return RaggedRows(empty, np.zeros([1], np.int64)) if col.ragged and compact else [] if col.ragged else empty
        value = block[name]
        if col.ragged:
            return RaggedRows(*value) if compact else _rows_list(*value)
        return value

    tasks = meta_tasks(entry)
    labels = {t: column(f"labels/{t}") for t in tasks}
    weights = {t: column(f"weights/{t}") for t in tasks}
    row_example = column("row_example") if "row_example" in columns else None
    num_windows = None
    if examples is None:
        examples, count = [], int(entry.meta["examples"][split])
    else:
        count = len(examples)
    if row_example is not None:
        num_windows = np.ones([count], np.int32)
        num_windows[row_example] = column("num_windows")
    return EncodedSplit(
        examples, column("token_ids"), column("word_starts"), np.asarray(column("truncated"), bool), labels, weights,
        row_example=row_example, row_window=column("row_window") if row_example is not None else None,
        num_windows=num_windows,
    )


def _read_compact(entry, split, columns):
    """Every column of a split, read `STATS_ROWS` rows at a time into arrays allocated once (a list column: its
    values and row starts, `(values, row_splits)`), so that reading holds no second copy of the split."""
    rows = entry.rows(split)
    out = {}
    for name, col in columns.items():
        if col.ragged:  # its size: the sum of its rows' lengths (its offsets files)
            total = int(cache_lib.row_lengths(entry, split, name).sum())
            out[name] = (np.empty([total], col.dtype), np.zeros([rows + 1], np.int64))
        else:
            out[name] = np.empty([rows, *col.shape], col.dtype)
    start, ends = 0, {name: 0 for name, col in columns.items() if col.ragged}
    for block in cache_lib.iter_blocks(entry, split, block_rows=STATS_ROWS, columns=list(columns)):
        n = None
        for name, col in columns.items():
            if col.ragged:
                values, row_splits = block[name]
                n = len(row_splits) - 1
                out[name][0][ends[name]:ends[name] + len(values)] = values
                out[name][1][start + 1:start + n + 1] = row_splits[1:] + ends[name]
                ends[name] += len(values)
            else:
                n = len(block[name])
                out[name][start:start + n] = block[name]
        start += n
    return out


def meta_tasks(entry):
    """The entry's task names, in config order."""
    return list(entry.meta["tasks"])


class CachedTrainSplit:
    """The training split of an entry as training reads it: statistics held, rows streamed.

    Quacks like the `EncodedSplit` the plan reads (`len`, `indices`,
    `row_lengths`, `label_units`, `weights`, `labels` of the class-weighted
    tasks), holding about 4 bytes a row per task and per row: the memory of
    the data is not held. The rows themselves are read from the shards a
    block at a time (`blocks`), by the training input (`pipeline.train_dataset`).

    Args:
        entry: a `CacheEntry`.
        tasks: the config's `TaskConfig`s.
        num_processes, process_id: the share of the rows this process streams
            (`row_owners`: about 1/num_processes of every task's rows, each row
            read by one process); the statistics are always of the whole
            split, so every process plans the same schedule.
    """

    split = "train"

    def __init__(self, entry, tasks, num_processes=1, process_id=0):
        self.entry = entry
        self.num_processes, self.process_id = num_processes, process_id
        self.teacher = {}  # distillation reads the in-memory path (keras_mtl.prepare)
        self.class_factors = {}  # task -> float32 [classes]: `class_weights: balanced`, applied as rows are read
        rows = entry.rows(self.split)
        self.lengths = cache_lib.row_lengths(entry, self.split, "token_ids") if rows else np.zeros([0], np.int64)
        self.weights = {t.name: np.zeros([rows], np.float32) for t in tasks}
        balanced = [t.name for t in tasks if getattr(t, "class_weights", "none") == "balanced"]
        token_level = [t.name for t in tasks if for_task(t).token_level]
        self.labels = {name: np.zeros([rows], np.int32) for name in balanced}
        self._tokens = {name: np.zeros([rows], np.float64) for name in token_level}  # labelled tokens a row
        wanted = [f"weights/{t.name}" for t in tasks] + [f"labels/{n}" for n in balanced + token_level]
        start = 0
        # Read in pieces of STATS_ROWS rows (not blocks): a few reads and numpy calls per piece, not per block.
        for block in cache_lib.iter_blocks(entry, self.split, columns=wanted, block_rows=STATS_ROWS):
            n = len(block[f"weights/{tasks[0].name}"])
            for t in tasks:
                self.weights[t.name][start:start + n] = block[f"weights/{t.name}"]
            for name in balanced:
                self.labels[name][start:start + n] = block[f"labels/{name}"]
            for name in token_level:
                values, row_splits = block[f"labels/{name}"]
                per_row = np.repeat(np.arange(n), np.diff(row_splits))
                self._tokens[name][start:start + n] = np.bincount(per_row, weights=values >= 0, minlength=n)
            start += n
        # task -> bool [blocks]: whether each block holds a row labelled for the task (the stored weights,
        # before class weights): a task's stream reads only those blocks (`blocks(..., task=)`).
        starts = np.asarray([a for a, _ in cache_lib.blocks_of(entry, self.split)], np.int64)
        self.labelled_blocks = {
            name: (np.add.reduceat((w > 0).astype(np.int64), starts) > 0) if rows else np.zeros([0], bool)
            for name, w in self.weights.items()
        }
        self.owners = None  # int [R]: the process that streams each row (several processes)
        if num_processes > 1:
            if not 0 <= process_id < num_processes:
                raise ValueError(f"process_id must be in [0, num_processes). Received: {process_id}, {num_processes}")
            self.owners = row_owners(self.weights, num_processes)
            check_shares(self.owners, self.weights, num_processes)

    def __len__(self):
        return len(self.lengths)

    def indices(self, task):
        """The rows labelled for `task`."""
        return np.flatnonzero(self.weights[task] > 0)

    def row_lengths(self):
        """int [R]: the length in pieces of every row."""
        return self.lengths

    def label_units(self, task, idx, weights):
        """The label weight of rows `idx` (the task type's `label_units`: labelled tokens if token-level)."""
        if task.name in self._tokens:
            return self._tokens[task.name][idx] * weights
        return weights

    def blocks(self, columns, task=None):
        """This process's rows, a block at a time, in order: numpy dicts (`cache.iter_blocks`' blocks).

        One process: every block. Several: of each block, the rows this
        process owns (`row_owners`), read run by run (`read_runs`): no
        process reads another's rows. `task`: only the blocks that hold a
        row labelled for it (`labelled_blocks`); the others, which give its
        stream no row, are not read (a task whose rows are at the end of
        the split would otherwise read the whole split before its first row).
        """
        spans = cache_lib.blocks_of(self.entry, self.split)
        if task is not None:
            spans = [span for span, labelled in zip(spans, self.labelled_blocks[task]) if labelled]
        chosen = {n: self.entry.columns[n] for n in columns}
        if self.owners is None:
            return (cache_lib.read_rows(self.entry, self.split, a, b, chosen) for a, b in spans)
        return self._owned_blocks(spans, chosen)

    def share(self):
        """int [n]: the rows this process streams (all of them with one process)."""
        if self.owners is None:
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(self.owners == self.process_id)

    def _owned_blocks(self, spans, chosen):
        for start, stop in spans:
            mine = np.flatnonzero(self.owners[start:stop] == self.process_id) + start
            if len(mine):
                yield read_runs(self.entry, self.split, runs_of(mine), chosen)


def row_owners(weights, num_processes):
    """int16 [R]: the process that streams each training row, for `num_processes` processes.

    Rows labelled for the same set of tasks form a group; each group is cut
    into `num_processes` runs of consecutive members (sizes within one of
    each other), given to the processes in turn, the first run of a group to
    the process after the last run of the previous group went to, so that
    the remainders of small groups spread. So every task's rows are shared
    within (number of groups) rows of evenly, whatever the order of the
    rows (a file sorted by task or label), and a process's rows lie in few
    runs: reading them reads no other rows. Deterministic: every process
    computes every process's share from the split's statistics.

    Args:
        weights: task -> float32 [R]: each row's weight for the task (0: unlabelled).
        num_processes: the number of processes.
    """
    names = list(weights)
    rows = len(weights[names[0]]) if names else 0
    if len(names) <= 62:  # the set of labelled tasks as the bits of an int64
        key = np.zeros([rows], np.int64)
        for j, name in enumerate(names):
            key |= (weights[name] > 0).astype(np.int64) << j
    else:
        key = np.stack([weights[n] > 0 for n in names], axis=1)
    _, group = np.unique(key, axis=0, return_inverse=True) if rows else (None, np.zeros([0], np.int64))
    group = np.asarray(group).reshape(-1)
    owners = np.zeros([rows], np.int16)
    offset = 0
    for g in range(int(group.max()) + 1 if rows else 0):
        members = np.flatnonzero(group == g)
        n = len(members)
        owners[members] = (np.arange(n) * num_processes // n + offset) % num_processes
        offset = (offset + n) % num_processes
    return owners


def check_shares(owners, weights, num_processes):
    """Raise a `DataError` when a process would stream no row of a task that has rows
    (its task stream would be empty: the processes could not draw the same mix)."""
    for name, w in weights.items():
        idx = np.flatnonzero(w > 0)
        if not len(idx):
            continue
        counts = np.bincount(owners[idx], minlength=num_processes)
        if counts.min() == 0:
            raise DataError(
                f"task {name!r}: its {len(idx)} training rows cannot be shared by {num_processes} processes "
                f"(process {int(np.argmin(counts))} would get none); give it at least {num_processes} training "
                "examples or train on fewer processes"
            )
