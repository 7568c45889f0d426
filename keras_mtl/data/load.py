"""Config -> every task's examples, split and merged across tasks.

Each task's sources are read by its reader; missing dev/test splits are carved
from train by a hash of the normalized text (so a sentence shared by two tasks
lands in the same split in both); then, per split, examples of different tasks
with the same text are merged into ONE example carrying several labels (POS and
chunk on the same CoNLL file become one example trained in one forward pass).
"""

import collections
import dataclasses
import warnings

from keras_mtl.config import ExperimentConfig, reader_options
from keras_mtl.data import checks, readers
from keras_mtl.data import splits as splits_lib
from keras_mtl.data.example import Example
from keras_mtl.errors import DataError

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class TaskData:
    """All data of an experiment, ready to be encoded."""

    splits: dict  # split -> list[Example], merged across tasks
    classes: dict  # task -> list of class names (sorted), [] for regression
    per_task: dict  # task -> split -> list[Example] (unmerged, as read)
    overlap: dict  # splits.overlap_report(per_task)
    unseen: dict  # task -> split -> {label: count} of dev/test labels not in train

    def examples(self, split, task):
        """The merged examples of `split` that carry a label for `task`."""
        return [ex for ex in self.splits[split] if task in ex.labels]


def read_task(task, config: ExperimentConfig):
    """Read one task's splits, carving the missing ones from train."""
    reader = readers.get_reader(task.data.format)
    options = reader_options(task)
    by_split = {}
    for split in SPLITS:
        source = getattr(task.data, split)
        if source is None:
            continue
        request = readers.ReadRequest(source, options, task.name, task.type, split)
        by_split[split] = reader.read(request)
    if not by_split.get("train"):
        raise DataError(f"task {task.name!r}: no training examples (train: {task.data.train})")
    checks.check_label_cardinality(by_split["train"], task.name, task.type, task.data.train)
    s = config.splits
    try:
        carved = splits_lib.carve_splits(by_split, s.seed, s.dev_fraction, s.test_fraction)
    except DataError as e:
        raise DataError(f"task {task.name!r}: {e}") from None
    for split in SPLITS:
        carved.setdefault(split, [])
    return carved


def _label_values(label, task_type):
    if task_type == "tagging" or task_type == "multilabel":
        return list(label)
    if task_type == "classification":
        return [label]
    return []


def _classes(task, train):
    if task.type == "regression":
        return []
    counts = collections.Counter()
    for ex in train:
        counts.update(_label_values(ex.labels[task.name], task.type))
    return sorted(counts)


def _unseen(task, by_split, classes):
    known = set(classes)
    found = {}
    for split in ("dev", "test"):
        counts, first = collections.Counter(), {}
        for ex in by_split[split]:
            for v in _label_values(ex.labels[task.name], task.type):
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


def merge_by_text(per_task, split):
    """Merge the examples of all tasks in one split by identical text."""
    merged, index = [], collections.defaultdict(list)
    for task, by_split in per_task.items():
        for ex in by_split[split]:
            target = None
            for i in index[ex.text]:
                if task not in merged[i].labels:
                    target = merged[i]
                    break
            if target is None:
                index[ex.text].append(len(merged))
                merged.append(Example(ex.text, dict(ex.labels), ex.origin))
            else:
                target.labels.update(ex.labels)
    return merged


def load_task_data(config: ExperimentConfig) -> TaskData:
    """Read, split and merge the data of every task in `config`."""
    per_task = {task.name: read_task(task, config) for task in config.tasks}
    classes, unseen = {}, {}
    for task in config.tasks:
        train = per_task[task.name]["train"]
        for split in SPLITS:
            for ex in per_task[task.name][split]:
                if not ex.text.strip():
                    raise DataError(f"{ex.origin}: empty text in task {task.name!r} ({split})")
        classes[task.name] = _classes(task, train)
        if task.type in ("classification", "multilabel", "tagging") and len(classes[task.name]) < 2:
            if task.type != "tagging" or not classes[task.name]:
                raise DataError(
                    f"task {task.name!r}: the training data has {len(classes[task.name])} class(es) "
                    f"({', '.join(classes[task.name]) or 'none'}); a {task.type} task needs at least 2"
                )
        unseen[task.name] = _unseen(task, per_task[task.name], classes[task.name])
    merged = {split: merge_by_text(per_task, split) for split in SPLITS}
    overlap = splits_lib.overlap_report(per_task)
    return TaskData(splits=merged, classes=classes, per_task=per_task, overlap=overlap, unseen=unseen)
