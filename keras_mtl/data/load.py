"""Config -> every task's examples, split and merged across tasks.

Each task's sources are read by its reader; missing dev/test splits are carved
from train by a hash of the normalized text (so a sentence shared by two tasks
lands in the same split in both); then, per split, examples of different tasks
with the same text are merged into ONE example carrying several labels (POS and
chunk on the same CoNLL file become one example trained in one forward pass).
A sentence pair is one example of its (text, text_pair): two tasks with the
same pair merge, the same first text with another second text does not, and a
pair never merges with a single text.
"""

import collections
import dataclasses
import warnings
from pathlib import Path

from keras_mtl.config import ExperimentConfig, is_pair_task, reader_options
from keras_mtl.data import checks, progress, readers
from keras_mtl.data import splits as splits_lib
from keras_mtl.data.example import Example
from keras_mtl.errors import DataError
from keras_mtl.tasks import get_task_type

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class TaskData:
    """All data of an experiment, ready to be encoded."""

    splits: dict  # split -> list[Example], merged across tasks
    classes: dict  # task -> list of class names (sorted), [] for regression
    per_task: dict  # task -> split -> list[Example] (unmerged, as read)
    overlap: dict  # splits.overlap_report(per_task)
    unseen: dict  # task -> split -> {label: count} of dev/test labels not in train
    dropped: dict = dataclasses.field(default_factory=dict)  # task -> train examples removed (`splits.leaks: drop`)

    def examples(self, split, task):
        """The merged examples of `split` that carry a label for `task`."""
        return [ex for ex in self.splits[split] if task in ex.labels]


class ConfigLocator:
    """Says where a task's data source is set: `configs/x.yaml:12: tasks[0].data.train`.

    Built from what `load_task_data` is given: a `LoadedConfig` knows its file
    and the line of each key; a bare `ExperimentConfig` (the Python API) gives
    the field path alone. A field set by `--set` is named without a line.
    """

    def __init__(self, loaded=None):
        path = getattr(loaded, "path", None)
        self.source = None if path is None else str(path)
        self.lines = getattr(loaded, "lines", {}) if path is not None else {}
        self.overridden = getattr(loaded, "overridden", frozenset())

    @staticmethod
    def field(index, *keys):
        text = f"tasks[{index}].data"
        for key in keys:
            text += f".{key}"
        return text

    def __call__(self, index, *keys):
        """`file:line: tasks[i].data.KEY...` (or less, where unknown)."""
        field = self.field(index, *keys)
        if self.source is None:
            return field
        loc = ("tasks", index, "data", *keys)
        if any(loc[:n] in self.overridden for n in range(1, len(loc) + 1)):
            return f"{field} (set by --set)"
        line = None
        while loc and line is None:
            line = self.lines.get(loc)
            loc = loc[:-1]
        return f"{self.source}:{line}: {field}" if line else f"{self.source}: {field}"


def _source_paths(source, keys=()):
    """(keys, path) of each file path in a source (a path or `{label: path}`)."""
    if isinstance(source, dict):
        for key, value in source.items():
            yield from _source_paths(value, keys + (key,))
    elif isinstance(source, (str, Path)):
        yield keys, str(source)


def _check_files(task, index, split, source, locate):
    """A missing data file: one line naming the config field that points at it."""
    for keys, path in _source_paths(source):
        p = Path(path)
        problem = None
        if not p.exists():
            problem = "file not found"
        elif p.is_dir():
            problem = "is a directory, expected a data file"
        if problem:
            where = locate(index, split, *keys)
            raise DataError(f"{where}: {problem}: {path} (task {task.name!r})")


def _describe(source, is_path, split="train", short=False):
    """The files of a source (relative to the working directory if `short`)."""
    if is_path:
        paths = [path for _, path in _source_paths(source)]
        if paths:
            return ", ".join(progress.display_path(p) if short else p for p in paths)
    return f"{split}: {source!r}"


def task_sources(task, index, locate):
    """(reader, {split: (what, ReadRequest)}) of a task's given splits, its data files checked
    (a missing one: a `DataError` naming the config field). `what` is the progress line's."""
    reader = readers.get_reader(task.data.format)
    options = reader_options(task)
    requests = {}
    for split in SPLITS:
        source = getattr(task.data, split)
        if source is None:
            continue
        if reader.source_is_path:
            _check_files(task, index, split, source, locate)
            what = f"reading {_describe(source, True, short=True)}"
        else:
            what = f"reading the {split} data of task {task.name!r}"
        requests[split] = (what, readers.ReadRequest(source, options, task.name, task.type, split))
    return reader, requests


def no_training_examples(task, index, locate):
    """The `DataError` of a task whose train source holds no example."""
    reader = readers.get_reader(task.data.format)
    return DataError(
        f"{locate(index, 'train')}: task {task.name!r}: no training examples "
        f"({_describe(task.data.train, reader.source_is_path)})"
    )


def read_task(task, config: ExperimentConfig, index=None, locate=None):
    """Read one task's splits, carving the missing ones from train.

    Args:
        task: the task's `TaskConfig`.
        config: the `ExperimentConfig` (for the split settings).
        index: the task's position in `config.tasks` (for messages).
        locate: a `ConfigLocator`, to name the config line of a missing file.
    """
    if index is None:
        index = next((i for i, t in enumerate(config.tasks) if t is task), 0)
    locate = locate or ConfigLocator()
    reader, requests = task_sources(task, index, locate)
    by_split = {}
    for split, (what, request) in requests.items():
        with progress.step(what):
            # The in-memory path holds every example; the cache's cold path streams them (data.streamed).
            by_split[split] = list(reader.read(request))
    if not by_split.get("train"):
        raise no_training_examples(task, index, locate)
    checks.check_label_cardinality(by_split["train"], task.name, task.type, task.data.train)
    s = config.splits
    try:
        carved = splits_lib.carve_splits(by_split, s.seed, s.dev_fraction, s.test_fraction)
    except DataError as e:
        raise DataError(f"task {task.name!r}: {e}") from None
    for split in SPLITS:
        carved.setdefault(split, [])
    return carved


def label_classes(task, train):
    """The task's label vocabulary: the sorted class names of its training labels (any iterable of examples)."""
    values = get_task_type(task.type).label_values
    return sorted({v for ex in train for v in values(ex.labels[task.name])})


def no_training_left(task, index, removed, locate):
    """The `DataError` of a task whose training split is empty after carving (and `splits.leaks: drop`)."""
    where = locate(index, "train")
    if removed:
        return DataError(
            f"{where}: task {task.name!r}: no training examples left: splits.leaks: drop removed all "
            f"{removed} of them (every one's text is also in some task's dev or test split); "
            "give this task other data, or set splits.leaks: keep (`keras-mtl data` lists the leaks)"
        )
    return DataError(f"{where}: task {task.name!r}: the training split is empty")


def check_classes(config, task, index, found, removed, locate):
    """The task's training classes `found` are enough for its type, and hold the class `f1` scores."""
    needed = get_task_type(task.type).min_classes
    if len(found) < needed:
        is_path = readers.get_reader(task.data.format).source_is_path
        where = locate(index, "train")
        carved = [
            split
            for split, fraction in (("dev", config.splits.dev_fraction), ("test", config.splits.test_fraction))
            if getattr(task.data, split) is None and fraction > 0
        ]
        after = f" after carving {' and '.join(carved)} out of it" if carved else ""
        if removed:
            after += (f"{' and' if carved else ''} after splits.leaks: drop removed {removed} of its "
                      "examples (their texts are in some task's dev or test split)")
        raise DataError(
            f"{where}: task {task.name!r}: the training data "
            f"({_describe(task.data.train, is_path)}) has {len(found)} "
            f"{'class' if len(found) == 1 else 'classes'}{after} "
            f"({', '.join(found) or 'none'}); a {task.type} task needs at least {needed}"
        )
    _check_positive_class(task, index, found, locate)


def _check_positive_class(task, index, classes, locate):
    """The class the `f1` metric scores is one of the task's classes."""
    if "f1" not in task.metrics:
        return
    positive = task.positive_class or "1"
    if positive not in classes:
        how = "positive_class" if task.positive_class else "positive_class (default '1')"
        raise DataError(
            f"{locate(index, 'train')}: tasks[{index}].{how}: {positive!r} is not a class of task "
            f"{task.name!r} (its classes: {', '.join(classes)}); the f1 metric scores that class"
        )


def unseen_labels(task, by_split, classes):
    """split -> {label: count} of the dev/test labels of `task` not in `classes`: warned, or a `DataError`
    naming the first one's file and line under `unseen_labels: error`."""
    known = set(classes)
    values = get_task_type(task.type).label_values
    found = {}
    for split in ("dev", "test"):
        counts, first = collections.Counter(), {}
        for ex in by_split[split]:
            for v in values(ex.labels[task.name]):
                if v not in known:
                    counts[v] += 1
                    first.setdefault(v, ex.origin)
        if counts:
            found[split] = dict(counts)
            if task.unseen_labels == "error":
                label, origin = next(iter(first.items()))
                raise DataError(
                    f"{origin}: task {task.name!r}: label {label!r} in {split} never occurs in "
                    f"train ({len(counts)} such labels, {sum(counts.values())} occurrences). "
                    "Set `unseen_labels: warn` on the task to score them as errors instead."
                )
    if found:
        desc = "; ".join(f"{s}: {', '.join(sorted(c))}" for s, c in found.items())
        warnings.warn(
            f"task {task.name!r}: labels never seen in train ({desc}); the model cannot "
            "predict them, so they count as errors in the metrics",
            stacklevel=2,
        )
    return found


def check_text(task, split, ex):
    """An example's text is not empty (a `DataError` naming its file and line)."""
    if not ex.text.strip():
        raise DataError(f"{ex.origin}: empty text in task {task.name!r} ({split})")


def check_pair(task, split, ex):
    """An example of a pair task has a non-empty second text (a `DataError` naming its file and line)."""
    if ex.text_pair is None or not ex.text_pair.strip():
        what = "no" if ex.text_pair is None else "an empty"
        option = readers.pair_option(reader_options(task))
        raise DataError(
            f"{ex.origin}: {what} second text in task {task.name!r} ({split}); "
            f"a pair task ({option}) needs one on every example"
        )


def _check_pairs(task, by_split):
    """Every example of a pair task has a non-empty second text."""
    if not is_pair_task(task):
        return
    for split in SPLITS:
        for ex in by_split[split]:
            check_pair(task, split, ex)


def merge_by_text(per_task, split):
    """Merge the examples of all tasks in one split by identical (text, text_pair).

    Identical examples are found through `splits.texts_hash` (16 bytes per
    distinct example), not by keeping their texts as keys.
    """
    merged, index = [], collections.defaultdict(list)
    for task, by_split in per_task.items():
        for ex in by_split[split]:
            target = None
            key = splits_lib.texts_hash(ex.text, ex.text_pair)
            for i in index[key]:
                if task not in merged[i].labels:
                    target = merged[i]
                    break
            if target is None:
                index[key].append(len(merged))
                merged.append(Example(ex.text, dict(ex.labels), ex.origin, ex.text_pair))
            else:
                target.labels.update(ex.labels)
    return merged


def load_task_data(config) -> TaskData:
    """Read, split and merge the data of every task in `config`.

    Args:
        config: a `LoadedConfig` (from `load_config`: errors then name the
            config file and line of a bad data source) or an
            `ExperimentConfig`.
    """
    loaded = config if hasattr(config, "config") else None
    config = getattr(config, "config", config)
    locate = ConfigLocator(loaded)
    per_task = {
        task.name: read_task(task, config, index, locate) for index, task in enumerate(config.tasks)
    }
    dropped = {}
    if config.splits.leaks == "drop":
        with progress.step("removing held-out texts from the training data (splits.leaks: drop)"):
            dropped = splits_lib.drop_held_out_from_train(per_task)
    classes, unseen = {}, {}
    for index, task in enumerate(config.tasks):
        train = per_task[task.name]["train"]
        removed = dropped.get(task.name, 0)
        if not train:
            raise no_training_left(task, index, removed, locate)
        for split in SPLITS:
            for ex in per_task[task.name][split]:
                check_text(task, split, ex)
        _check_pairs(task, per_task[task.name])
        classes[task.name] = label_classes(task, train)
        check_classes(config, task, index, classes[task.name], removed, locate)
        unseen[task.name] = unseen_labels(task, per_task[task.name], classes[task.name])
    merged = {split: merge_by_text(per_task, split) for split in SPLITS}
    with progress.step("comparing the texts of all tasks and splits (shared texts, leaks)"):
        overlap = splits_lib.overlap_report(per_task)
    return TaskData(
        splits=merged, classes=classes, per_task=per_task, overlap=overlap, unseen=unseen, dropped=dropped
    )
