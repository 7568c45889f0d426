"""Sanity checks on what a reader returned, run before building a model."""

import collections
import warnings

from keras_mtl.errors import DataError
from keras_mtl.tasks import get_task_type

# A classification task with more distinct labels than this is suspicious.
MAX_CLASSES = 1000
# ... and so is one with more than this many whose labels are mostly unique.
MANY_CLASSES = 100


class LabelCardinalityWarning(UserWarning):
    """A task's label column looks like it holds text, not labels."""


def _source_name(source):
    if isinstance(source, dict):
        return ", ".join(str(path) for path in source.values())
    return str(source)


def check_not_empty(examples, source):
    """Raise a `DataError` naming `source` if `examples` is empty.

    Args:
        examples: list of `Example`s read from `source`.
        source: the path (or `{label: path}` mapping, or split name) read.
    """
    if not examples:
        raise DataError(
            f"{_source_name(source)}: no examples found (the file is empty or "
            f"has only blank lines)"
        )


def check_label_cardinality(examples, task_name, task_type, source):
    """Warn when a task's label set is implausibly large.

    A classification task warns when it has more than 1,000 distinct labels,
    or more than 100 distinct labels and more distinct labels than half its
    rows: that usually means `label_column` points at the text column, and
    would build a softmax with one unit per sentence. A tagging task warns on
    the same numbers counted over tokens (`label_column` pointing at the
    words). Task types without a `cardinality` are not checked.

    Args:
        examples: list of `Example`s holding labels under `task_name`.
        task_name: the task whose labels are counted.
        task_type: "classification", "tagging", ... .
        source: the path (or mapping) read, named in the warning.
    """
    kind = get_task_type(task_type)
    if kind.cardinality is None:
        return
    unit, hint = kind.cardinality
    labels = [v for ex in examples if task_name in ex.labels for v in kind.label_values(ex.labels[task_name])]
    rows = len(labels)
    distinct = len(collections.Counter(labels))
    if distinct > MAX_CLASSES or (distinct > MANY_CLASSES and distinct > rows / 2):
        warnings.warn(
            f"task {task_name!r}: label column of {_source_name(source)} has "
            f"{distinct:,} distinct values in {rows:,} {unit}; this would "
            f"build a {distinct:,}-way softmax. {hint}",
            LabelCardinalityWarning,
            stacklevel=2,
        )
