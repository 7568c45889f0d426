"""The plan of a comparison: the multi-task run's steps and each single-task run's budget.

`task_budgets` gives a single-task run as many of its task's labels (or
draws) as the multi-task run saw; `subset_raw` / `config_with` make the
sub-runs' configs.
"""

import collections
import copy

import numpy as np

from keras_mtl.config import config_from_dict
from keras_mtl.errors import ConfigError


BUDGETS = ("labelled", "drawn")
DEFAULT_BUDGET = "labelled"



def task_budgets(probabilities, tasks, steps_per_epoch, batch_size, overlap=None):
    """The per-task example and step budgets of the single-task runs.

    Args:
        probabilities: [epochs, tasks] sampling probabilities of the
            multi-task run (run.json `sampling_schedule.probabilities`).
        tasks: the task names, in the column order of `probabilities`.
        steps_per_epoch, batch_size: of the multi-task run.
        overlap: optional dict s -> t -> fraction of task-s training examples
            labelled for task t (the `"labelled"` budget); None counts the
            examples drawn for each task (`"drawn"`).

    Returns:
        dict task -> {`p` (mean probability), `examples`, `steps`, `epochs`,
        `steps_per_epoch`}: the single-task run trains `epochs` x
        `steps_per_epoch` steps (about `steps`).
    """
    probs = np.asarray(probabilities, np.float64).reshape(-1, len(tasks))
    epochs = probs.shape[0]
    drawn = probs.sum(axis=0) * steps_per_epoch * batch_size  # examples drawn per task
    out = {}
    for j, t in enumerate(tasks):
        if overlap is None:
            examples = drawn[j]
        else:
            examples = sum(drawn[i] * overlap.get(s, {}).get(t, 1.0 if s == t else 0.0) for i, s in enumerate(tasks))
        steps = max(1, int(round(examples / batch_size)))
        e = max(1, min(epochs, steps))
        out[t] = {
            "p": float(probs[:, j].mean()),
            "examples": float(examples),
            "steps": steps,
            "epochs": e,
            "steps_per_epoch": max(1, int(round(steps / e))),
        }
    return out



def capped_plan(epochs, steps_per_epoch, max_steps=None):
    """(epochs, steps_per_epoch) with at most `max_steps` in all, keeping the epoch count."""
    if not max_steps or epochs * steps_per_epoch <= max_steps:
        return epochs, steps_per_epoch
    if max_steps < epochs:
        return max_steps, 1
    return epochs, max(1, max_steps // epochs)



def subset_raw(raw, tasks):
    """The raw config with only `tasks` (a list of names, in config order)."""
    names = [t["name"] for t in raw["tasks"]]
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        what = (f"no task named {', '.join(map(repr, unknown))}" if unknown
                else "no task named (an empty list)" if not tasks else "a task is named twice")
        raise ConfigError(f"--tasks: {what}; the config's tasks are {', '.join(names)}")
    out = copy.deepcopy(raw)
    out["tasks"] = [t for t in out["tasks"] if t["name"] in tasks]
    return out



def config_with(raw, overrides):
    return config_from_dict(raw, overrides=overrides)



def label_overlap(label_sets, task_names):
    """s -> t -> fraction of the task-s training examples that carry a task-t label.

    `label_sets`: {frozenset of the tasks an example is labelled for: the
    number of such training examples}: `label_sets_of(examples)`, or
    `entry_label_sets(entry)` from a cache entry's rows. The counts are
    integers, so the fractions are those of counting the examples one by one.
    """
    out = {}
    for s in task_names:
        having = {tasks: n for tasks, n in label_sets.items() if s in tasks}
        total = sum(having.values())
        out[s] = {t: (sum(n for tasks, n in having.items() if t in tasks) / total if total else 0.0)
                  for t in task_names}
    return out



def label_sets_of(examples):
    """`label_overlap`'s counts of `examples` (any iterable of `Example`s, read once)."""
    return dict(collections.Counter(frozenset(ex.labels) for ex in examples))



def entry_label_sets(entry, block_rows=None):
    """`label_overlap`'s counts of the training examples of a cache entry, from its rows: none is read.

    A row is labelled for a task where its stored weight is > 0, which is
    where its example carries the task's label (the task types' encoding:
    weight 1 for an example with the label, 0 without; every training label
    is in the label map learned from them). An example read in several rows
    (windows of a long text, a cut row) is labelled for a task when one of
    its rows is (each task reads its own rows of it), so its rows are
    gathered by `row_example`. Reads the weight columns (and `row_example`)
    `block_rows` rows at a time (default `cached.STATS_ROWS`, as the
    training statistics); holds a bool a training example per task.
    """
    from keras_mtl.data import cache as cache_lib
    from keras_mtl.data.cached import STATS_ROWS

    tasks = list(entry.meta["tasks"])
    examples = int(entry.meta["examples"]["train"])
    windows = "row_example" in entry.columns
    columns = [f"weights/{t}" for t in tasks] + (["row_example"] if windows else [])
    labelled = np.zeros([examples, len(tasks)], bool)
    start = 0
    for block in cache_lib.iter_blocks(entry, "train", columns=columns, block_rows=block_rows or STATS_ROWS):
        n = len(block[columns[0]])
        example = block["row_example"] if windows else np.arange(start, start + n)
        for j, t in enumerate(tasks):
            labelled[example[block[f"weights/{t}"] > 0], j] = True
        start += n
    if not examples:
        return {}
    found, counts = np.unique(labelled, axis=0, return_counts=True)
    return {frozenset(t for t, has in zip(tasks, row) if has): int(n) for row, n in zip(found, counts)}
