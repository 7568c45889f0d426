"""The cold path of the prepared cache, streamed: a config's data read, carved, merged, leak-checked,
tokenized and label-encoded a block at a time, never held (docs/data_at_scale.md, "The cold run").

`load.load_task_data` holds every example of every split; this module gives the same rows, in the same
order, holding per training example only what the later passes need:

* pass 1 (`scan`), per task: its dev and test files are streamed into scratch files (`HeldScan`: the
  examples as `cached.example_line`s, and their two hashes); its train file is streamed: each example
  is carved (`splits.carved_split`, a carved dev/test example goes to its split's scratch file), checked
  (empty text, pair, label cardinality) and reduced to two 16-byte hashes, `example_hash` (leaks,
  `splits.leaks: drop`, the overlap report) and `texts_hash` (the merge across tasks), plus the set of its
  task's classes;
* then, from the hashes alone: what `splits.leaks: drop` removes, the overlap report and which examples
  of different tasks merge into one row (`merge_plan`), for train, dev and test alike; dev's and test's
  merged examples are written to a scratch file each (`StreamedData.example_files`, kept in the entry),
  and the dev/test labels unseen in train are found by a pass over the scratch files;
* the label maps: those of pass 1, unless `splits.leaks: drop` removed training examples of a task, whose
  classes are then collected again by a pass over what it kept (a class seen only in dropped examples
  is not one, as in memory);
* the vocabulary (`wordpiece.bounded_sample` is order-free) from a pass over the kept training texts (a
  second one over `cache.vocabulary_sample` distinct texts, to count the words of the sample's texts);
* the rows (`encoded_train`): a pass per task, merged examples built a block at a time, each block
  encoded (`encode_block`: `pipeline.encode_split`, then columns) by a worker thread or, for a large
  split, by encoding processes (`encode_process`), the `ColumnBlock`s yielded to the cache's writer in
  order as they come; dev's and test's (`encoded_held`) the same way, from their merged scratch files.

Each pass re-reads the files (reading is a few percent of the time; tokenizing is the rest). A pass that
finds another number of examples than the first raises (a file changed while it was read).

Merging identical texts across tasks needs, for a row whose text a later task also labels, the later
task's label before the row is written: those labels (only those of examples that merge into an earlier
task's row: for POS and chunk tags on the same sentences, the chunk tags) are read by a pass before the
rows and held until their row is written.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from keras_mtl.config import is_pair_task
from keras_mtl.data import checks, load, progress
from keras_mtl.data import splits as splits_lib
from keras_mtl.data.cached import encoded_block, encoded_columns, example_line, iter_examples
from keras_mtl.data.example import Example
from keras_mtl.errors import DataError
from keras_mtl.tasks import get_task_type

SPLITS = ("train", "dev", "test")
HELD = ("dev", "test")
BLOCK_EXAMPLES = 2048  # training examples encoded at a time


class _LabelCount:
    """The distinct training labels of a task and how often each occurs (for the cardinality warning)."""

    def __init__(self, task):
        self.task = task
        self.values = get_task_type(task.type).label_values
        self.counts = collections.Counter()

    def add(self, ex):
        if self.task.name in ex.labels:
            self.counts.update(self.values(ex.labels[self.task.name]))

    def check(self):
        """`checks.check_label_cardinality`'s warning, given the same labels only when it warns."""
        kind = get_task_type(self.task.type)
        if kind.cardinality is None:
            return
        rows, distinct = sum(self.counts.values()), len(self.counts)
        if distinct > checks.MAX_CLASSES or (distinct > checks.MANY_CLASSES and distinct > rows / 2):
            per_token = kind.cardinality[0] == "tokens"
            name = self.task.name
            examples = (
                Example("", {name: (v,) if per_token else v}) for v, c in self.counts.items() for _ in range(c)
            )
            checks.check_label_cardinality(examples, name, self.task.type, self.task.data.train)


class _Scratch:
    """The directory of a writer's scratch files; one of its own (`directory` None) is removed with the last
    `ScratchPath` of it (and at exit)."""

    def __init__(self, directory=None):
        if directory is None:
            directory = tempfile.mkdtemp(prefix="keras-mtl-held-")
            weakref.finalize(self, shutil.rmtree, directory, True)
        self.directory = Path(directory)

    def path(self, name):
        return ScratchPath(self, name)


class ScratchPath(os.PathLike):
    """The path of a scratch file, which keeps its directory (`_Scratch`) alive as long as it is used."""

    def __init__(self, scratch, name):
        self.scratch, self.path = scratch, scratch.directory / name

    def __fspath__(self):
        return str(self.path)

    def __repr__(self):
        return f"ScratchPath({str(self.path)!r})"


@dataclasses.dataclass
class HeldScan:
    """What pass 1 keeps of a task's dev or test split (given, or carved from train): its examples in a
    scratch file (`example_line`s, read by later passes), their number and their two hashes."""

    path: ScratchPath
    count: int
    example_hashes: np.ndarray  # V16 [count]
    texts_hashes: np.ndarray  # V16 [count]

    def examples(self):
        """A pass over the examples, in order."""
        return iter_examples(self.path)


class _HeldWriter:
    """Writes a held-out split's examples to its scratch file as they are read, hashing each."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w", encoding="utf-8", newline="\n")
        self.count, self.example_hashes, self.texts_hashes = 0, bytearray(), bytearray()

    def add(self, ex):
        self.file.write(example_line(ex))
        self.example_hashes += splits_lib.example_hash(ex.text, ex.text_pair)
        self.texts_hashes += splits_lib.texts_hash(ex.text, ex.text_pair)
        self.count += 1

    def close(self):
        self.file.close()
        return HeldScan(self.path, self.count, splits_lib.as_hash_array(self.example_hashes),
                        splits_lib.as_hash_array(self.texts_hashes))


@dataclasses.dataclass
class _TaskScan:
    """What pass 1 keeps of one task."""

    task: object
    index: int
    reader: object
    request: object  # the train split's ReadRequest
    held: dict  # "dev"/"test" -> HeldScan (given or carved)
    codes: np.ndarray  # uint8 [examples read from the train source]: 0 train, 1 carved to dev, 2 to test
    example_hashes: np.ndarray  # V16 [train examples after carving]
    texts_hashes: np.ndarray  # V16 [train examples after carving]
    classes: set
    keep: np.ndarray = None  # bool [train examples after carving]: not dropped by `splits.leaks: drop`

    @property
    def kept(self):
        return int(self.keep.sum())


def _scan_task(config, task, index, locate, scratch):
    """Pass 1 over one task (see the module docstring); its dev and test examples go to files in `scratch`."""
    reader, requests = load.task_sources(task, index, locate)
    held, writers = {}, {}
    pair = is_pair_task(task)
    try:
        for split in HELD:
            if split in requests:
                what, request = requests[split]
                writers[split] = _HeldWriter(scratch.path(f"{index}.{split}.jsonl"))
                with progress.step(what):
                    for ex in reader.read(request):
                        check_example(task, split, ex, pair)
                        writers[split].add(ex)
                held[split] = writers.pop(split).close()
        s = config.splits
        missing = splits_lib.missing_splits(held, s.dev_fraction, s.test_fraction)
        for split in HELD:
            if split not in held:  # carved from train (missing), or none: an empty split
                writers[split] = _HeldWriter(scratch.path(f"{index}.{split}.jsonl"))
        what, request = requests["train"]
        codes, example_hashes, texts_hashes = bytearray(), bytearray(), bytearray()
        code_of = {"train": 0, "dev": 1, "test": 2}
        count = _LabelCount(task)
        classes, values = set(), get_task_type(task.type).label_values
        first_origin = None
        with progress.step(f"{what} (streamed: carving, hashing)") as advance:
            for n, ex in enumerate(reader.read(request), 1):
                if first_origin is None:
                    first_origin = ex.origin
                count.add(ex)
                split = splits_lib.carved_split(ex, s.seed, s.dev_fraction, s.test_fraction, missing)
                codes.append(code_of[split])
                check_example(task, split, ex, pair)
                if split != "train":
                    writers[split].add(ex)  # written as it is read: never held
                else:
                    example_hashes += splits_lib.example_hash(ex.text, ex.text_pair)
                    texts_hashes += splits_lib.texts_hash(ex.text, ex.text_pair)
                    classes.update(values(ex.labels[task.name]))
                if n % 10000 == 0:
                    advance(10000)
        for split in list(writers):
            held[split] = writers.pop(split).close()
    finally:
        for writer in writers.values():
            writer.file.close()
    if not codes:
        raise load.no_training_examples(task, index, locate)
    count.check()
    if not example_hashes:
        e = splits_lib.carving_left_no_train(first_origin, missing, len(codes), s.dev_fraction, s.test_fraction)
        raise DataError(f"task {task.name!r}: {e}")
    return _TaskScan(task, index, reader, request, held, np.frombuffer(bytes(codes), np.uint8),
                     splits_lib.as_hash_array(example_hashes), splits_lib.as_hash_array(texts_hashes), classes)


def check_example(task, split, ex, pair):
    """An example's text is not empty; that of a pair task has a second text (`DataError`: file and line)."""
    load.check_text(task, split, ex)
    if pair:
        load.check_pair(task, split, ex)


def occurrences(hashes):
    """int64 [n]: how many earlier items of `hashes` are equal to each one (0 for a first occurrence)."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    starts = np.ones(len(ordered), bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(ordered)), 0))
    out = np.empty(len(hashes), np.int64)
    out[order] = np.arange(len(ordered)) - first
    return out


def _member(sorted_unique, values):
    """bool [len(values)]: which of `values` are in `sorted_unique` (a sorted array without repeats)."""
    if not len(sorted_unique):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[at] == values


def _keys(hashes, occurrence):
    """V24 [n]: a text's hash and its occurrence, one comparable item."""
    occ = occurrence.astype(">i8").view(np.uint8).reshape(-1, 8)
    return np.concatenate([hashes.view(np.uint8).reshape(-1, 16), occ], axis=1).copy().view("V24").reshape(-1)


def merge_plan(texts_hashes):
    """Which training examples of several tasks are one row (`load.merge_by_text`), from their hashes.

    `load.merge_by_text` merges the examples task by task: the j-th example of a task with a given text
    goes into the j-th row holding that text, made by an earlier task, if there is one, else makes a new
    row. So a row is a (text, j) pair, made by the first task that has it, and rows are in the order
    their first task's examples come in. Only the examples whose text another task has are compared
    (a few temporaries of 8 to 24 bytes an example besides).

    Args:
        texts_hashes: per task in config order, the `texts_hash`es (V16) of its kept training examples.

    Returns:
        (leaders, followers): per task, bool [examples]: the example makes a row; and per task
        {example: row} of those that merge into an earlier task's row (rows numbered in order).
    """
    leaders, followers, starts, rows = [], [], [], 0
    for t, hashes in enumerate(texts_hashes):
        lead, follow = np.ones(len(hashes), bool), {}
        wanted = np.unique(hashes) if t else hashes[:0]
        known_hashes, known_occ, known_rows = [], [], []
        for s in range(t):  # the rows earlier tasks made for a text of this task: (hash, occurrence, row)
            hit = np.flatnonzero(_member(wanted, texts_hashes[s]))
            if not len(hit):
                continue
            made = leaders[s][hit]
            known_hashes.append(texts_hashes[s][hit][made])
            known_occ.append(occurrences(texts_hashes[s][hit])[made])
            known_rows.append(starts[s] + np.cumsum(leaders[s])[hit][made] - 1)
        if known_hashes:
            known = _keys(np.concatenate(known_hashes), np.concatenate(known_occ))
            order = np.argsort(known)
            known, known_rows = known[order], np.concatenate(known_rows)[order]
            mine = np.flatnonzero(_member(np.unique(np.concatenate(known_hashes)), hashes))
            keys = _keys(hashes[mine], occurrences(hashes[mine]))
            found = _member(known, keys)
            at = np.searchsorted(known, keys[found])
            lead[mine[found]] = False
            follow = dict(zip(mine[found].tolist(), known_rows[at].tolist()))
        leaders.append(lead)
        followers.append(follow)
        starts.append(rows)
        rows += int(lead.sum())
    return leaders, followers


def merged_examples(passes, leaders, followers):
    """The examples of one split merged across tasks (`load.merge_by_text`'s order), given `merge_plan`'s
    `leaders` and `followers` and `passes[t](why)`: a pass over task t's examples (`why`: for a progress
    line, None: none).

    The labels of an example that merges into an earlier task's row are read by a pass before the rows and
    held until their row is made (for POS and chunk tags on the same sentences: the chunk tags)."""
    merged_in = {}  # row -> labels of later tasks' examples merged into it
    for t, follow in enumerate(followers):
        if follow:
            for i, ex in enumerate(passes[t]("labels merged into other tasks' rows")):
                row = follow.get(i)
                if row is not None:
                    merged_in.setdefault(row, {}).update(ex.labels)
    row = 0
    for t, lead in enumerate(leaders):
        for i, ex in enumerate(passes[t](None)):
            if not lead[i]:
                continue
            labels = dict(ex.labels)
            labels.update(merged_in.pop(row, {}))
            yield Example(ex.text, labels, ex.origin, ex.text_pair)
            row += 1


def in_blocks(items, block):
    """Lists of at most `block` consecutive items."""
    items = iter(items)
    while chunk := list(itertools.islice(items, block)):
        yield chunk


class StreamedData:
    """A config's data, scanned once (pass 1) and streamed again for the vocabulary and the rows.

    Attributes (those of `load.TaskData` a cache entry keeps): `classes`, `overlap`, `unseen`, `dropped`,
    `train_examples` (the number of merged training examples: rows before windows), `held_examples`
    (split -> the number of merged dev/test examples) and `example_files` (split -> the file of dev's or
    test's merged examples, `example_line`s: what the entry keeps, and what their rows are encoded from).

    dev and test are never held: pass 1 writes each task's to a file in `scratch` as it reads them (a
    carved one as it carves it), keeping two hashes an example; their merge across tasks is planned from the
    hashes (`merge_plan`, as for train) and written to `example_files` by a pass over those files.

    Args:
        loaded: a `LoadedConfig` (errors name the config's line) or a config.
        scratch: a directory for those files (the cache's temporary of the key: `Cache.temporary`), which
            the caller removes; None: a temporary directory of this object's own, removed with it.
    """

    def __init__(self, loaded, scratch=None):
        self.scratch = _Scratch(scratch)
        self.config = config = getattr(loaded, "config", loaded)
        locate = load.ConfigLocator(loaded if hasattr(loaded, "config") else None)
        self.scans = [_scan_task(config, task, index, locate, self.scratch) for index, task in enumerate(config.tasks)]
        self.dropped = {}
        for scan in self.scans:
            scan.keep = np.ones(len(scan.example_hashes), bool)
        if config.splits.leaks == "drop":
            held_out = np.concatenate([scan.held[s].example_hashes for scan in self.scans for s in HELD])
            for scan in self.scans:
                scan.keep = ~np.isin(scan.example_hashes, held_out)
                self.dropped[scan.task.name] = len(scan.keep) - scan.kept
        self.classes, self.unseen = {}, {}
        for scan in self.scans:
            task, removed = scan.task, self.dropped.get(scan.task.name, 0)
            if not scan.kept:
                raise load.no_training_left(task, scan.index, removed, locate)
            if removed:  # a class of dropped examples only is not one
                self.classes[task.name] = load.label_classes(task, self.kept_examples(scan, "classes of"))
            else:
                self.classes[task.name] = sorted(scan.classes)
            load.check_classes(config, task, scan.index, self.classes[task.name], removed, locate)
            self.unseen[task.name] = load.unseen_labels(  # a pass over the task's dev and test files
                task, {s: scan.held[s].examples() for s in HELD}, self.classes[task.name])
        self.held_examples, self.example_files = {}, {}
        for split in HELD:
            self._merge_held(split)
        with progress.step("comparing the texts of all tasks and splits (shared texts, leaks)"):
            self.overlap = splits_lib.overlap_of_hashes({
                scan.task.name: {
                    "train": scan.example_hashes[scan.keep],
                    **{s: scan.held[s].example_hashes for s in HELD},
                }
                for scan in self.scans
            })
        self.leaders, self.followers = merge_plan([scan.texts_hashes[scan.keep] for scan in self.scans])
        self.train_examples = sum(int(lead.sum()) for lead in self.leaders)

    def _merge_held(self, split):
        """Write `split`'s examples merged across tasks to `example_files[split]` (one pass; `merge_plan`)."""
        leaders, followers = merge_plan([scan.held[split].texts_hashes for scan in self.scans])
        passes = [lambda why, held=scan.held[split]: held.examples() for scan in self.scans]
        path = self.scratch.path(f"{split}.jsonl")
        count = 0
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for ex in merged_examples(passes, leaders, followers):
                f.write(example_line(ex))
                count += 1
        self.held_examples[split], self.example_files[split] = count, path

    def kept_examples(self, scan, why=None):
        """A pass over a task's kept training examples (after carving and `splits.leaks: drop`), in order;
        `why`: what the pass is for, on a progress line (None: no line of its own)."""
        codes, keep = scan.codes, scan.keep
        i = seen = 0
        what = f"reading the training data of task {scan.task.name!r} ({why})" if why else None
        with progress.step(what) if what else contextlib.nullcontext():
            for seen, ex in enumerate(scan.reader.read(scan.request), 1):
                if seen > len(codes):
                    break
                if codes[seen - 1] == 0:
                    if keep[i]:
                        yield ex
                    i += 1
        if seen != len(codes):
            raise DataError(
                f"task {scan.task.name!r}: the training data gave {seen:,} examples on this pass, "
                f"{len(codes):,} on the first: did a file change while it was read?"
            )

    def train_texts(self):
        """The kept training examples of every task, task after task (what the vocabulary is learned from)."""
        for scan in self.scans:
            yield from self.kept_examples(scan, "vocabulary")

    def held(self, split):
        """A pass over `split`'s ("dev", "test") merged examples, in `load.merge_by_text`'s order."""
        yield from iter_examples(self.example_files[split])

    def task_data(self):
        """A `load.TaskData` of the label maps and the reports; its splits streams (`len`: their number of
        merged examples): "train" of the kept training examples (`tokenization_for` learns a vocabulary from
        it), "dev" and "test" of `example_files`."""
        held = {s: _Stream(lambda s=s: self.held(s), self.held_examples[s]) for s in HELD}
        return load.TaskData(splits={"train": _Stream(self.train_texts, self.train_examples), **held},
                             classes=self.classes, per_task={}, overlap=self.overlap, unseen=self.unseen,
                             dropped=self.dropped)

    def train_blocks(self, block=None):
        """Lists of at most `block` (`BLOCK_EXAMPLES`) merged training examples, in `load.merge_by_text`'s order."""
        passes = [lambda why, scan=scan: self.kept_examples(scan, why) for scan in self.scans]
        return in_blocks(merged_examples(passes, self.leaders, self.followers), block or BLOCK_EXAMPLES)

    def held_blocks(self, split, block=None):
        """Lists of at most `block` (`BLOCK_EXAMPLES`) merged examples of `split` ("dev", "test")."""
        return in_blocks(self.held(split), block or BLOCK_EXAMPLES)


class _Stream:
    """An iterable that calls `make()` for each pass; its length is the merged training examples'."""

    def __init__(self, make, length):
        self.make, self.length = make, length

    def __iter__(self):
        return iter(self.make())

    def __len__(self):
        return self.length


def encode_block(examples, before, encoder, tasks, classes, max_windows=None):
    """(columns, `ColumnBlock`) of a block of examples, `before` the split's examples before it: the rows of
    `pipeline.encode_split` as `cached.encoded_block` gives them, and their `cached.encoded_columns` (the
    first training block's are the entry's). What a worker thread or an encoding process runs."""
    from keras_mtl.data.pipeline import encode_split  # lazy: TensorFlow

    encoded = encode_split(examples, encoder, tasks, classes, max_windows=max_windows)
    names = [task.name for task in tasks]
    return encoded_columns(encoded, names), encoded_block(encoded, names, before)


def encoded_blocks(example_blocks, encode, lookahead=2):
    """`encode(examples, before)` of each block of examples (`before`: the examples of the blocks before it),
    in order.

    The blocks are encoded by a worker thread, up to `lookahead` blocks ahead of the consumer: TensorFlow's
    kernels (the word pieces) run while this thread reads the next examples and writes the rows, on the
    other core. Memory: `lookahead` + 1 blocks.
    """
    done = 0
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keras-mtl-encode") as pool:
        pending = collections.deque()
        for examples in example_blocks:
            pending.append(pool.submit(encode, examples, done))
            done += len(examples)
            if len(pending) > lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _encoded(example_blocks, encoder, tasks, classes, max_windows, lookahead, processes):
    """(columns, `ColumnBlock`) of each block, in order: by `processes` (`encode_process.EncodeProcesses`,
    set up with the same encoder), else by a worker thread (`encoded_blocks`)."""
    if processes is not None:
        return processes.encoded(example_blocks, max_windows)

    def encode(examples, before):
        return encode_block(examples, before, encoder, tasks, classes, max_windows)

    return encoded_blocks(example_blocks, encode, lookahead)


def encoded_train(streamed, encoder, tasks, max_windows, block=None, lookahead=2, processes=None):
    """(columns, blocks): the training examples' rows, a `ColumnBlock` at a time (`encode_block`), and the
    entry's columns (those of the first block). `processes`: an `encode_process.EncodeProcesses` that
    encodes them (set up with `encoder`'s vocabulary); None: a worker thread."""
    results = _encoded(streamed.train_blocks(block), encoder, tasks, streamed.classes, max_windows, lookahead,
                       processes)
    columns, first = next(results)
    return columns, itertools.chain([first], (rows for _, rows in results))


def encoded_held(streamed, split, encoder, tasks, block=None, lookahead=2, processes=None):
    """The rows of `split`'s ("dev", "test") merged examples, a `ColumnBlock` at a time (`encoded_train`):
    texts read whole, as `encode_split` reads dev and test."""
    results = _encoded(streamed.held_blocks(split, block), encoder, tasks, streamed.classes, None, lookahead,
                       processes)
    return (rows for _, rows in results)
