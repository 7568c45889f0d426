"""Distillation from single-task teachers, with teacher annealing.

BAM! (Clark et al. 2019, "Born-Again Multi-Task Networks"): the multi-task
student learns task t from a mix of the gold label and a single-task
teacher's prediction,

    target_t = lambda * gold + (1 - lambda) * teacher_t(x),

with lambda rising linearly from 0 (the teacher alone) at the first step to
1 (the gold label alone) at the last. For classification and multilabel the
targets are class distributions (soft cross-entropy), for tagging one per
word (on its first piece, as the gold tags), for regression a mixed value.

A task names its teacher in the config (`tasks[i].teacher`): a trained work
dir (`keras-mtl train`, e.g. the single-task runs of `keras-mtl compare`)
or an export of it. The teacher's predictions on the student's training
examples are computed once, before training, and cached in the work dir
(`teachers/teacher_<task>.npz`, keyed by a digest of the teacher's model
file and the examples), so a resumed or repeated run reads them back instead
of predicting again. The mixing
happens in the input pipeline (`anneal`): each training batch carries
`[gold | teacher]` and its step number sets lambda, so every backend trains
the same way and a resumed run continues the schedule where it stopped.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from keras_mtl.errors import ConfigError

CACHE_FILE = "teacher_{task}.npz"


def distilled_tasks(config):
    """The names of the tasks that learn from a teacher."""
    return [t.name for t in config.tasks if getattr(t, "teacher", None)]


def teacher_kind(path):
    """"run" (a work dir with model.keras) or "export" (a SavedModel version or base)."""
    path = Path(path)
    if (path / "model.keras").is_file():
        return "run"
    if (path / "saved_model.pb").is_file() or any(
        p.name.isdigit() and (p / "saved_model.pb").is_file() for p in (path.iterdir() if path.is_dir() else ())
    ):
        return "export"
    raise ConfigError(
        f"teacher {str(path)!r}: not a trained work dir (no model.keras) nor an export (no saved_model.pb)"
    )


# --------------------------------------------------------------------------
# The teacher's predictions, in the student's class order
# --------------------------------------------------------------------------


def _check_classes(task, teacher_classes, classes, teacher):
    if sorted(teacher_classes) != sorted(classes):
        raise ConfigError(
            f"tasks.{task}.teacher: {teacher} predicts classes {', '.join(teacher_classes)}, "
            f"but the task's training data has {', '.join(classes)}"
        )
    return [list(teacher_classes).index(c) for c in classes]


def _predict_with_run(path, task, classes, examples):
    """Per example: the teacher run's raw output for `task` (class order: the student's)."""
    from keras_mtl.data.buckets import bucket_lengths
    from keras_mtl.data.pipeline import EncodedSplit, eval_batches
    from keras_mtl.data.tokenize import encode_examples, make_encoder
    from keras_mtl.model import sees_task
    from keras_mtl.tasks import for_task
    from keras_mtl.workdir import load_run

    run = load_run(path)
    if task.name not in run.config.task_names:
        raise ConfigError(
            f"tasks.{task.name}.teacher: the run {str(path)!r} has no task {task.name!r} "
            f"(its tasks: {', '.join(run.config.task_names)})"
        )
    teacher_task = run.config.task(task.name)
    head = for_task(teacher_task, run.classes[task.name])
    order = _check_classes(task.name, run.classes[task.name], classes, path) if head.has_classes else None
    model = run.load_model()
    encoder = make_encoder(run.vocabulary, run.config.model)
    encoding = encode_examples(encoder, [ex.text for ex in examples], [ex.text_pair for ex in examples])
    n = len(examples)
    split = EncodedSplit(examples, encoding.token_ids, encoding.word_starts, encoding.truncated, {}, {})
    lengths = bucket_lengths(run.config.train.bucket_lengths, run.config.model.max_sequence_length)
    task_id = run.config.task_names.index(task.name) if sees_task(run.config.model) else None
    targets = [None] * n
    for x, chunk in eval_batches(split, range(n), run.config.train.eval_batch_size, lengths, encoder.pad_id, task_id):
        out = {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}
        for row, i in enumerate(chunk):
            targets[i] = head.teacher_target(out, row, encoding.word_starts[i])
    if order is not None:
        targets = [t[..., order] for t in targets]
    return targets


def _predict_with_export(path, task, classes, examples, head):
    """Per example: the export's answer for `task` through its own signature."""
    from keras_mtl.serving.predict import predict

    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair for ex in examples]
    answers = predict(str(path), texts, task=task.name, text_pairs=pairs if any(p is not None for p in pairs) else None)
    return [head.teacher_target_from_json(a[task.name], classes) for a in answers]


def _digest(path, kind, task, classes, examples):
    path = Path(path).resolve()
    h = hashlib.sha256()
    files = [path / "model.keras"] if kind == "run" else sorted(path.rglob("saved_model.pb"))
    for f in files:
        stat = f.stat()
        h.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    h.update(json.dumps([task, list(classes)]).encode())
    for ex in examples:
        h.update(json.dumps([ex.text, ex.text_pair]).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def teacher_predictions(task, classes, examples, cache_dir=None):
    """The teacher's target for every example of `examples` (cached in `cache_dir`).

    Args:
        task: a TaskConfig with `teacher` set (an absolute path).
        classes: the task's classes (the student's order).
        examples: the training examples that carry the task's label.
        cache_dir: where `teacher_<task>.npz` is read or written (None: no cache).

    Returns:
        A list, one numpy array per example: [C] class probabilities, [W, C]
        per-word ones (tagging) or a [] value (regression).
    """
    from keras_mtl.data import progress
    from keras_mtl.tasks import for_task

    path = Path(task.teacher)
    kind = teacher_kind(path)
    key = _digest(path, kind, task.name, classes, examples)
    cache = Path(cache_dir) / CACHE_FILE.format(task=task.name) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:  # the same teacher and examples: computed before
                return _unflatten(stored)
    head = for_task(task, classes)
    with progress.step(f"predicting task {task.name!r} with its teacher ({len(examples):,} examples)"):
        if kind == "run":
            targets = _predict_with_run(path, task, classes, examples)
        else:
            targets = _predict_with_export(path, task, classes, examples, head)
    if cache is not None:
        _save(cache, key, targets)
    return targets


def _save(path, key, targets):
    """One flat float32 array, with each example's shape: examples may differ in length (tagging)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.asarray(t, np.float32) for t in targets]
    shapes = np.asarray([a.shape + (0,) * (2 - a.ndim) for a in arrays], np.int64).reshape(len(arrays), 2)
    ndims = np.asarray([a.ndim for a in arrays], np.int64)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros([0], np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=np.asarray(key), values=flat, shapes=shapes, ndims=ndims)
    tmp.replace(path)


def _unflatten(stored):
    values, shapes, ndims = stored["values"], stored["shapes"], stored["ndims"]
    out, start = [], 0
    for shape, ndim in zip(shapes, ndims):
        shape = tuple(int(s) for s in shape[:ndim])
        size = int(np.prod(shape)) if shape else 1
        out.append(values[start : start + size].reshape(shape))
        start += size
    return out


# --------------------------------------------------------------------------
# Training: [gold | teacher] columns, mixed per batch
# --------------------------------------------------------------------------


def attach_teachers(split, config, classes, cache_dir=None):
    """Put each distilled task's teacher targets on the training split (`split.teacher`):
    one array per example, placed on its pieces (`teacher_on_pieces`; zeros without the label)."""
    from keras_mtl.tasks import for_task

    for task in config.tasks:
        if not getattr(task, "teacher", None):
            continue
        idx = split.indices(task.name)
        targets = teacher_predictions(task, classes[task.name], [split.examples[i] for i in idx], cache_dir)
        head = for_task(task, classes[task.name])
        per_example = [head.teacher_blank(len(ids)) for ids in split.token_ids]
        for i, target in zip(idx, targets):
            per_example[i] = head.teacher_on_pieces(target, split.word_starts[i], len(split.token_ids[i]))
        split.teacher[task.name] = per_example


def annealing_lambda(step, total_steps):
    """lambda of teacher annealing at `step` (0-based; an int or a tensor): 0 at the first
    step, rising linearly to 1 at the last (`total_steps - 1`). A float32 tensor."""
    import tensorflow as tf

    denominator = float(max(1, int(total_steps) - 1))
    return tf.clip_by_value(tf.cast(step, tf.float32) / denominator, 0.0, 1.0)


def anneal(dataset, values, total_steps):
    """Mix each distilled task's `[gold | teacher]` labels with lambda of the batch's step.

    Args:
        dataset: yields (x, y, sample_weight) batches whose `y[t]` for a
            distilled task holds gold and teacher stacked on the last axis
            (`2C`; `2` for a value).
        values: {distilled task: whether its target is one value (regression)}.
        total_steps: the training steps (lambda reaches 1 at the last).

    The batches' index is the training step, also after a resumed run
    `skip`s the steps it had done.
    """
    import tensorflow as tf

    def mix(step, batch):
        x, y, sw = batch
        lam = annealing_lambda(step, total_steps)
        y = dict(y)
        for name, is_value in values.items():
            both = y[name]
            half = tf.shape(both)[-1] // 2
            mixed = lam * both[..., :half] + (1.0 - lam) * both[..., half:]
            y[name] = mixed[..., 0] if is_value else mixed
        return x, y, sw

    return dataset.enumerate().map(mix, num_parallel_calls=tf.data.AUTOTUNE)
