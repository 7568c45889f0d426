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
happens in the input pipeline (`keras_mtl.data.teachers`): each training
batch carries `[gold | teacher]` and its step number sets lambda, so every
backend trains the same way and a resumed run continues the schedule where
it stopped.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from keras_mtl.errors import ConfigError
from keras_mtl.serving.layout import SAVED_MODEL, is_export
from keras_mtl.workdir import RunFiles

CACHE_FILE = "teacher_{task}.npz"


def distilled_tasks(config):
    """The names of the tasks that learn from a teacher."""
    return [t.name for t in config.tasks if getattr(t, "teacher", None)]


def teacher_kind(path):
    """"run" (a work dir with model.keras) or "export" (a SavedModel version or base)."""
    path = Path(path)
    if RunFiles(path).model.is_file():
        return "run"
    if is_export(path):
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


def _inputs(pairs):
    return "sentence pairs" if pairs else "single texts"


def _teacher_task(path, kind, name):
    """(type, reads pairs, classes) of the teacher's task `name`; None for an export
    whose metadata (keras_mtl.json) does not say. A teacher without the task is a ConfigError."""
    if kind == "run":
        from keras_mtl.run import load_run

        run = load_run(path)
        if name not in run.config.task_names:
            raise ConfigError(
                f"tasks.{name}.teacher: the run {str(path)!r} has no task {name!r} "
                f"(its tasks: {', '.join(run.config.task_names)})"
            )
        return run.config.task(name).type, name in run.config.pair_task_names, run.classes[name]
    from keras_mtl.serving.layout import read_metadata, resolve_version_dir
    from keras_mtl.serving.predict import PAIR_INPUTS, task_inputs

    meta = read_metadata(resolve_version_dir(path))
    specs = meta.get("tasks") if isinstance(meta, dict) else None
    if not isinstance(specs, dict) or not specs:
        return None
    if name not in specs:
        raise ConfigError(
            f"tasks.{name}.teacher: the export {str(path)!r} has no task {name!r} (its tasks: {', '.join(specs)})"
        )
    spec = specs[name] if isinstance(specs[name], dict) else {}
    return spec.get("type"), task_inputs(meta)[name] == PAIR_INPUTS, spec.get("classes")


def _check_teacher(path, kind, task, classes):
    """ConfigError unless the teacher's task of the same name is of the task's type, reads
    the same input (single texts or sentence pairs) and predicts the task's classes."""
    from keras_mtl.config import is_pair_task
    from keras_mtl.tasks import get_task_type

    found = _teacher_task(path, kind, task.name)
    if found is None:  # an export without metadata: its answers are checked as they come
        return
    teacher_type, teacher_pairs, teacher_classes = found
    pairs = is_pair_task(task)
    if (teacher_type is not None and teacher_type != task.type) or teacher_pairs != pairs:
        raise ConfigError(
            f"tasks.{task.name}.teacher: the teacher's task {task.name!r} ({str(path)!r}) is a "
            f"{teacher_type or 'task'} task on {_inputs(teacher_pairs)}, but task {task.name!r} is a "
            f"{task.type} task on {_inputs(pairs)}; a teacher must be of the task's type and read the same input"
        )
    if get_task_type(task.type).has_classes and teacher_classes is not None:
        _check_classes(task.name, teacher_classes, classes, path)


def _predict_with_run(path, task, classes, examples):
    """Per example: the teacher run's raw output for `task` (class order: the student's)."""
    from keras_mtl.data.buckets import bucket_lengths
    from keras_mtl.data.pipeline import EncodedSplit, eval_batches
    from keras_mtl.data.tokenize import encode_examples
    from keras_mtl.tasks import for_task
    from keras_mtl.run import load_run

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
    encoder = run.encoder()
    encoding = encode_examples(encoder, [ex.text for ex in examples], [ex.text_pair for ex in examples])
    n = len(examples)
    split = EncodedSplit(examples, encoding.token_ids, encoding.word_starts, encoding.truncated, {}, {})
    lengths = bucket_lengths(run.config.train.bucket_lengths, run.config.model.max_sequence_length)
    task_id = run.config.task_names.index(task.name) if run.config.model.sees_task else None
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
    try:
        return [head.teacher_target_from_json(a[task.name], classes) for a in answers]
    except (KeyError, TypeError, ValueError):  # an export without metadata, of another task type
        answer = answers[0].get(task.name) if answers and isinstance(answers[0], dict) else None
        holds = ", ".join(sorted(map(str, answer))) if isinstance(answer, dict) else "nothing"
        raise ConfigError(
            f"tasks.{task.name}.teacher: the export {str(path)!r} does not answer task {task.name!r} as a "
            f"{task.type} task does (its answer holds: {holds}); a teacher must be of the task's type"
        ) from None


def _digest(path, kind, task, classes, examples):
    path = Path(path).resolve()
    h = hashlib.sha256()
    files = [RunFiles(path).model] if kind == "run" else sorted(path.rglob(SAVED_MODEL))
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

    Raises:
        ConfigError: the teacher is no work dir or export, lacks the task, or
            its task of that name is of another type, reads other input
            (single texts or sentence pairs) or predicts other classes
            (checked before the cache is read).
    """
    from keras_mtl.data import progress
    from keras_mtl.tasks import for_task

    path = Path(task.teacher)
    kind = teacher_kind(path)
    _check_teacher(path, kind, task, classes)
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


def teacher_targets(config, train_examples, classes, cache_dir=None):
    """The teacher targets of every distilled task (`tasks[i].teacher`), for the
    training examples labelled for it, in order: what `prepare(teachers=...)`
    puts on the training split (`keras_mtl.data.teachers`).

    Args:
        config: ExperimentConfig.
        train_examples: the merged training examples (`TaskData.splits["train"]`).
        classes: task -> class names.
        cache_dir: where `teacher_<task>.npz` is read or written (None: no cache).

    Returns:
        {task: [target per labelled example]} (empty without distilled tasks).
    """
    return {
        task.name: teacher_predictions(
            task, classes[task.name], [ex for ex in train_examples if task.name in ex.labels], cache_dir
        )
        for task in config.tasks
        if getattr(task, "teacher", None)
    }
