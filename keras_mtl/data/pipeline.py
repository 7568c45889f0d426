"""Examples -> encoded arrays -> mixed, bucketed tf.data batches.

Batch structure (what `model.fit` sees), for tasks t:

    x  = {"token_ids": int32 [B, L], "padding_mask": bool [B, L],
          "task_ids": int32 [B]}            # task_ids only with task conditioning
    y  = {t: labels}                        # every task, in every batch
    sw = {t: sample weights}                # 0 where the example has no label for t

labels/weights: what each task's type encodes (keras_mtl.tasks), e.g.
classification int32 [B] / [B]; tagging (token-level) int32 [B, L] / [B, L]
(weight 1 on the first piece of each word); regression float32 [B] / [B];
multilabel float32 [B, C] / [B].

A row is what the model reads: a text that fits `max_sequence_length` is
one row; a longer one a row per window and/or a cut row (`encode_split`,
keras_mtl.data.windows), and training draws rows.

Training draws from one dataset per task with the configured sampling
strategy (`sampling.py`); when the encoder does not see the task
(`model.sees_task`) an example keeps all its labels (one forward pass trains
every task it has), when it does it is
drawn once per task and carries that task's id and only that task's label.
L is one of a few fixed bucket lengths (JAX compiles once per shape).

`train.batch_mode: mixed` (default) draws examples and batches them, so a
batch holds several tasks; `per_task` draws whole batches, each from one task
(MT-DNN style). Under data-parallel training the global batch is split across
replicas, so every replica trains the same task at each step.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_mtl.data import sampling
from keras_mtl.data.windows import CUT
from keras_mtl.data.buckets import training_bucket_lengths
from keras_mtl.tasks import for_task


@dataclasses.dataclass
class EncodedSplit:
    """A split's examples, tokenized into rows, with per-task label ids per row.

    A row is what the model reads: an example whose text fits
    `max_sequence_length` is one row (row i = example i when all fit), a
    longer one a row per window and/or a cut row (`encode_split`).
    """

    examples: list  # the examples, [N]
    token_ids: list  # per row, int32 arrays: [CLS] text, or [CLS] text [SEP] text_pair [SEP]
    word_starts: list  # per row, int32 [words of the example]: first piece of each word the row reads, else NOT_HERE
    truncated: np.ndarray  # bool [R]: the row's input lost pieces
    labels: dict  # task -> encoded labels per row (see `encode_labels`)
    weights: dict  # task -> float32 [R] (> 0 where the row trains / is read for the task's label)
    teacher: dict = dataclasses.field(default_factory=dict)  # task -> per-row teacher targets (data/teachers.py)
    row_example: Optional[np.ndarray] = None  # int64 [R]: the example of each row (None: row i is example i)
    row_window: Optional[np.ndarray] = None  # int32 [R]: the row's window, or windows.CUT for a cut row
    num_windows: Optional[np.ndarray] = None  # int32 [N]: windows of each example's text (before `max_windows`)

    def __post_init__(self):
        rows = len(self.token_ids)
        if self.row_example is None:
            self.row_example = np.arange(rows, dtype=np.int64)
        if self.row_window is None:
            self.row_window = np.zeros([rows], np.int32)
        if self.num_windows is None:
            self.num_windows = np.ones([len(self.examples)], np.int32)

    def __len__(self):
        return len(self.token_ids)

    def indices(self, task):
        """The rows labelled for `task` (what training draws and evaluation reads)."""
        return np.flatnonzero(self.weights[task] > 0)

    def row_lengths(self):
        """int [R]: the length in pieces of every row."""
        return np.fromiter((len(ids) for ids in self.token_ids), np.int64, count=len(self.token_ids))

    def label_units(self, task, idx, weights):
        """The label weight of rows `idx` (`weights`: theirs): the task type's `label_units`."""
        return for_task(task).label_units(self.labels[task.name], idx, weights)

    def example_indices(self, task):
        """The examples labelled for `task` (each once)."""
        return np.unique(self.row_example[self.indices(task)])


def balanced_class_weights(labels, has_label, num_classes):
    """w_c = n / (C * n_c) over the labelled examples (sklearn's "balanced")."""
    counts = np.bincount(labels[has_label], minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return np.where(counts > 0, total / (num_classes * np.maximum(counts, 1)), 0.0).astype(np.float32)


def encode_labels(task, classes, examples, token_ids, word_starts):
    """Per-task label arrays (the task type's encoding); missing or unseen labels get weight 0."""
    return for_task(task, classes).encode_labels(examples, token_ids, word_starts)


def encode_split(examples, encoder, tasks, classes, max_windows=None):
    """Tokenize a split (single texts and sentence pairs) into rows and encode every task's labels.

    An example whose text (pair) fits `max_sequence_length` is one row, for
    every task, encoded as it always was. A longer one is read as
    `encoder.windowing` says (keras_mtl.data.windows, docs/long_inputs.md):
    a row per window for the tasks that read windows (tagging, each word's
    label in the window(s) that read it; sentence tasks under `long_inputs:
    windows`, each window weighted 1/windows), and one cut row for sentence
    tasks under `truncate` / `head_tail`. `max_windows`: the most windows of
    one text (the training split's bound, `model.max_windows`); None: all.
    """
    from keras_mtl.data.tokenize import encode_rows, piece_batches

    rule = encoder.windowing
    token_tasks = {t.name for t in tasks if for_task(t).token_level}
    sentence_tasks = {t.name for t in tasks} - token_tasks
    cut_mode = None if rule.long_inputs == "windows" else rule.long_inputs
    token_ids, word_starts, truncated, row_example, row_window = [], [], [], [], []
    num_windows = np.ones([len(examples)], np.int32)
    kept = np.ones([len(examples)], np.int32)  # window rows kept per example
    single = []  # per row: the example's only row (every task reads it)
    e = 0  # the next example
    for fitted, uncut in piece_batches(encoder, [ex.text for ex in examples], [ex.text_pair for ex in examples]):
        if fitted is not None:  # every text of the batch fits: a row each, as `encode_rows` gives it
            n = len(fitted[0])
            token_ids += fitted[0]
            word_starts += fitted[1]
            truncated += [False] * n
            row_example += range(e, e + n)
            row_window += [0] * n
            single += [True] * n
            e += n
            continue
        for pieces, lengths, pair in uncut:
            labelled = set(examples[e].labels)
            has_sentence = bool(labelled & sentence_tasks)
            windowed = (bool(labelled & token_tasks) and pair is None) or (has_sentence and cut_mode is None)
            cut = cut_mode if has_sentence else None
            if not windowed and cut is None:  # no task of `tasks` labels it: read as a sentence task would
                windowed, cut = cut_mode is None, cut_mode
            rows, num_windows[e] = encode_rows(encoder, pieces, lengths, pair, windowed, cut, max_windows)
            kept[e] = max(1, sum(1 for row in rows if row[2] != CUT))
            for ids, starts, window, cut_off in rows:
                token_ids.append(ids)
                word_starts.append(starts)
                truncated.append(cut_off)
                row_example.append(e)
                row_window.append(window)
                single.append(len(rows) == 1)
            e += 1
    row_example = np.asarray(row_example, np.int64)
    row_window = np.asarray(row_window, np.int32)
    single = np.asarray(single, bool)
    row_examples = [examples[e] for e in row_example]
    labels, weights = {}, {}
    for task in tasks:
        labels[task.name], weights[task.name] = encode_labels(
            task, classes[task.name], row_examples, token_ids, word_starts
        )
        if not single.all():  # the rows of long texts: each task reads its own
            if task.name in token_tasks:
                factor = row_window != CUT
            elif cut_mode is None:
                factor = 1.0 / kept[row_example]
            else:
                factor = row_window == CUT
            weights[task.name] = np.where(single, weights[task.name], weights[task.name] * factor).astype(np.float32)
    return EncodedSplit(
        examples, token_ids, word_starts, np.asarray(truncated, bool), labels, weights,
        row_example=row_example, row_window=row_window, num_windows=num_windows,
    )


def apply_class_weights(split, tasks, classes):
    """Multiply per-class factors into the example weights of the tasks with
    `class_weights: balanced` (training split only). Returns {task: factors}."""
    out = {}
    for task in tasks:
        if getattr(task, "class_weights", "none") == "balanced":
            has = split.weights[task.name] > 0
            factors = balanced_class_weights(split.labels[task.name], has, len(classes[task.name]))
            split.weights[task.name] = split.weights[task.name] * factors[split.labels[task.name]]
            out[task.name] = factors.tolist()
    return out


def _ragged(arrays, dtype=None):
    dtype = dtype or arrays[0].dtype
    lengths = [len(a) for a in arrays]
    values = np.concatenate(arrays).astype(dtype) if arrays else np.zeros([0], dtype)
    return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, np.int64))


def _task_elements(split, tasks, task_index, sees_task):
    """The slices of one task's dataset: its examples with every task's labels
    (only its own when the encoder sees the task: one pass per task)."""
    own = tasks[task_index].name
    idx = split.indices(own)
    elem = {"token_ids": _ragged([split.token_ids[i] for i in idx], np.int32)}
    if sees_task:
        elem["task_ids"] = np.full([len(idx)], task_index, np.int32)
    for task in tasks:
        name = task.name
        keep = not sees_task or name == own
        w = split.weights[name][idx] if keep else np.zeros([len(idx)], np.float32)
        head = for_task(task)
        y, w = head.dataset_columns(split.labels[name], idx, w)
        if name in split.teacher:  # distillation: [gold | teacher], mixed per batch (data.teachers.anneal)
            y = head.distillation_columns(y, [split.teacher[name][i] for i in idx])
        if head.token_level:  # one array per example: ragged rows
            y, w = _ragged(y), _ragged(w)
        elem[f"y/{name}"], elem[f"w/{name}"] = y, w
    return elem


def _block_elements(block, tasks, task_index, sees_task, class_factors):
    """`_task_elements` of one block of a cached split: its rows labelled for the task.

    A list column is `(values, row_splits)`. The values are those of the
    in-memory path, bit for bit: the task types' `dataset_columns` make them,
    and class weights multiply the stored weights as `apply_class_weights` did.
    """
    own = tasks[task_index].name
    keep = block[f"weights/{own}"] > 0
    idx = np.flatnonzero(keep)
    ids, splits = block["token_ids"]
    rows = _rows_of(ids, splits)
    elem = {"token_ids": _ragged_parts([rows[j] for j in idx], np.int32)}
    if sees_task:
        elem["task_ids"] = np.full([len(idx)], task_index, np.int32)
    for task in tasks:
        name = task.name
        labels = block[f"labels/{name}"]
        if isinstance(labels, tuple):  # one array a row (tagging)
            labels = _rows_of(*labels)
        weights = block[f"weights/{name}"]
        if name in class_factors:
            weights = weights * class_factors[name][labels]
        keep_task = not sees_task or name == own
        w = weights[idx] if keep_task else np.zeros([len(idx)], np.float32)
        head = for_task(task)
        y, w = head.dataset_columns(labels, idx, w)
        if head.token_level:
            y, w = _ragged_parts(y, np.int32), _ragged_parts(w, np.float32)
        elem[f"y/{name}"], elem[f"w/{name}"] = y, w
    return elem


def _rows_of(values, row_splits):
    return np.split(values, row_splits[1:-1]) if len(row_splits) > 1 else []


def _ragged_parts(arrays, dtype):
    """(values, row_splits) of a list of arrays."""
    lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
    values = np.concatenate(arrays).astype(dtype) if len(arrays) else np.zeros([0], dtype)
    return values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _streamed_task_rows(split, tasks, task_index, sees_task):
    """One task's dataset of rows (`_task_elements`' slices), streamed from a cached split's shards."""
    columns = ["token_ids"] + [f"{kind}/{t.name}" for t in tasks for kind in ("labels", "weights")]
    factors = dict(split.class_factors)
    entry_columns = split.entry.columns
    signature = {"token_ids": (tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64))}
    if sees_task:
        signature["task_ids"] = tf.TensorSpec([None], tf.int32)
    for task in tasks:
        column = entry_columns[f"labels/{task.name}"]
        if for_task(task).token_level:
            signature[f"y/{task.name}"] = (tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64))
            signature[f"w/{task.name}"] = (tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64))
        else:
            signature[f"y/{task.name}"] = tf.TensorSpec([None, *column.shape], column.dtype)
            signature[f"w/{task.name}"] = tf.TensorSpec([None], tf.float32)

    def generate():
        for block in split.blocks(columns, task=tasks[task_index].name):  # the blocks holding its rows
            elem = _block_elements(block, tasks, task_index, sees_task, factors)
            if len(elem["token_ids"][1]) > 1:
                yield elem

    def as_tensors(block):
        return {k: tf.RaggedTensor.from_row_splits(*v, validate=False) if isinstance(v, tuple) else v
                for k, v in block.items()}

    return tf.data.Dataset.from_generator(generate, output_signature=signature).map(as_tensors).unbatch()


def _mean_units(split, tasks, task_index, sees_task):
    """[T]: the mean total label weight per example of one task's dataset,
    for every task (labelled tokens for tagging, examples for the others,
    class weights included): what `_task_elements` puts in `w/<task>`."""
    own = tasks[task_index].name
    idx = split.indices(own)
    out = []
    for task in tasks:
        name = task.name
        if sees_task and name != own:
            out.append(0.0)
            continue
        w = split.label_units(task, idx, split.weights[name][idx])
        out.append(float(np.mean(w)) if len(idx) else 0.0)
    return np.asarray(out, np.float64)


def _inverse(x):
    return np.where(x > 0, 1.0 / np.where(x > 0, x, 1.0), 0.0).astype(np.float32)


def _scale_weights(element, factors, tasks):
    out = dict(element)
    for t, task in enumerate(tasks):
        key = f"w/{task.name}"
        out[key] = element[key] * factors[t]
    return out


def _dense_rows(element):
    # A slice of a ragged tensor is a ragged_rank-0 RaggedTensor: take its values.
    return {k: v.flat_values if isinstance(v, tf.RaggedTensor) else v for k, v in element.items()}


def _to_model_inputs(batch, tasks, pad_id):
    x = {"token_ids": batch["token_ids"], "padding_mask": tf.not_equal(batch["token_ids"], pad_id)}
    if "task_ids" in batch:
        x["task_ids"] = batch["task_ids"]
    y = {t.name: batch[f"y/{t.name}"] for t in tasks}
    sw = {t.name: batch[f"w/{t.name}"] for t in tasks}
    return x, y, sw


def train_dataset(
    split, tasks, train_cfg, max_length, sees_task, pad_id=0, seed=0, steps_per_epoch=None,
    schedule=None, bucket_lengths=None,
):
    """The infinite, mixed, bucketed training dataset.

    `sees_task` (`model.sees_task(model_cfg)`): the encoder sees the task, so
    an example is drawn (and encoded) once per task, with that task's id and
    labels only. `schedule` and `bucket_lengths` are the run's
    (`keras_mtl.prepare.prepare` computes them once); by default they are
    computed here from `train_cfg` (`sampling.training_schedule`,
    `buckets.training_bucket_lengths`).

    With `train.loss_normalizer: expected` the sample weights are divided by
    the EXPECTED label weight of task t in a batch, B x u_t, where u_t is the
    mean label weight (labelled tokens for tagging, examples otherwise) of a
    drawn example under the epoch's sampling probabilities (in `per_task`
    batch mode: of an example of the batch's task). The loss is then
    `sum(w l)` (`loss_for(task, "expected")`): every labelled example or
    token weighs the same whatever else its batch holds, so length bucketing
    and task mixing do not reweight them (T5's constant loss-normalizing
    factor). B is the global batch: under tf.distribute each replica's sum
    over its part is its share of the global sum (Keras leaves "sum" losses
    unscaled and sums the replicas' gradients), so the per-task losses and
    gradients are those of one device. With `batch` the weights are left as
    they are and the loss is the mean over the batch's labelled units
    (`mean_with_sample_weight`).

    Returns (dataset, sizes, schedule): `sizes` are the per-task example
    counts and `schedule` the [epochs, tasks] sampling probabilities used.
    """
    sizes = [len(split.indices(t.name)) for t in tasks]
    present = [i for i, s in enumerate(sizes) if s > 0]
    if schedule is None:
        schedule = sampling.training_schedule(split, tasks, train_cfg)
    lengths = bucket_lengths if bucket_lengths is not None else training_bucket_lengths(
        split, tasks, train_cfg, max_length, schedule
    )
    per_task_batches = train_cfg.batch_mode == "per_task"
    expected = getattr(train_cfg, "loss_normalizer", "batch") == "expected"
    loss_batch = train_cfg.batch_size
    units = np.stack([_mean_units(split, tasks, i, sees_task) for i in present])  # [sources, T]
    datasets = []
    for k, i in enumerate(present):
        if hasattr(split, "blocks"):  # a cache entry's split (data.cached.CachedTrainSplit): rows streamed
            ds = _streamed_task_rows(split, tasks, i, sees_task)
        else:
            ds = tf.data.Dataset.from_tensor_slices(_task_elements(split, tasks, i, sees_task))
        ds = ds.map(_dense_rows)
        if expected and per_task_batches:  # a batch holds one source task's examples
            factors = tf.constant(_inverse(loss_batch * units[k]))
            ds = ds.map(lambda e, f=factors: _scale_weights(e, f, tasks))
        # repeat, then shuffle with a fixed order: every iterator over this
        # dataset yields the same stream (Keras makes an extra iterator under
        # a tf.distribute strategy; a reshuffling seeded shuffle would give
        # the second iterator another order than a one-device run sees).
        ds = ds.repeat().shuffle(
            min(train_cfg.shuffle_buffer, sizes[i]), seed=seed + i, reshuffle_each_iteration=False
        )
        datasets.append(_bucketed(ds, lengths, train_cfg.batch_size, pad_id) if per_task_batches else ds)
    # The mixture draws elements (mixed mode) or whole batches (per_task mode).
    draws_per_epoch = (steps_per_epoch or 1) * (1 if per_task_batches else train_cfg.batch_size)
    table = tf.constant(schedule)
    last = len(schedule) - 1

    def weights_at(i):
        return table[tf.minimum(tf.cast(i // draws_per_epoch, tf.int32), last)]

    weights = tf.data.Dataset.range(2**62).map(weights_at)
    if len(datasets) == 1:
        mixed = datasets[0]
    else:
        mixed = tf.data.Dataset.sample_from_datasets(datasets, weights=weights, seed=seed)
    if expected and not per_task_batches:
        # [epochs, T]: 1 / (B x expected label weight per drawn example)
        factor_table = tf.constant(_inverse(loss_batch * (np.asarray(schedule, np.float64) @ units)))

        def scale_at(element, i):
            epoch = tf.minimum(tf.cast(i // draws_per_epoch, tf.int32), last)
            return _scale_weights(element, factor_table[epoch], tasks)

        mixed = tf.data.Dataset.zip(mixed, tf.data.Dataset.range(2**62)).map(scale_at)
    batched = mixed if per_task_batches else _bucketed(mixed, lengths, train_cfg.batch_size, pad_id)
    batched = batched.map(lambda b: _to_model_inputs(b, tasks, pad_id), num_parallel_calls=tf.data.AUTOTUNE)
    if split.teacher:  # distillation: lambda * gold + (1 - lambda) * teacher, lambda by the batch's step
        from keras_mtl.data.teachers import anneal

        values = {t.name: not for_task(t).has_classes for t in tasks if t.name in split.teacher}
        batched = anneal(batched, values, train_cfg.epochs * (steps_per_epoch or 1))
    return batched.prefetch(tf.data.AUTOTUNE), sizes, schedule


def _bucketed(ds, lengths, batch_size, pad_id):
    """Batches of similar length, padded to one of the fixed `lengths`."""
    spec = ds.element_spec
    return ds.bucket_by_sequence_length(
        element_length_func=lambda e: tf.shape(e["token_ids"])[0],
        bucket_boundaries=[b + 1 for b in lengths],
        bucket_batch_sizes=[batch_size] * (len(lengths) + 1),
        padded_shapes={k: v.shape for k, v in spec.items()},
        padding_values={k: tf.constant(pad_id if k == "token_ids" else 0, dtype=v.dtype) for k, v in spec.items()},
        pad_to_bucket_boundary=True,
        drop_remainder=True,
    )


def eval_batches(split, indices, batch_size, lengths, pad_id=0, task_id=None):
    """Deterministic numpy batches over `indices`, sorted by length.

    Yields (x, batch_indices): x is the model's input dict, padded to the
    smallest bucket length that fits the batch.
    """
    order = sorted(indices, key=lambda i: len(split.token_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield padded_inputs(split, chunk, lengths, pad_id, task_id), chunk


def padded_inputs(split, rows, lengths, pad_id=0, task_id=None):
    """The model inputs of `rows`, padded to the smallest of `lengths` that fits them."""
    longest = max(len(split.token_ids[i]) for i in rows)
    length = next(b for b in lengths if b >= longest)
    ids = np.full([len(rows), length], pad_id, np.int32)
    for r, i in enumerate(rows):
        ids[r, : len(split.token_ids[i])] = split.token_ids[i]
    x = {"token_ids": ids, "padding_mask": ids != pad_id}
    if task_id is not None:
        x["task_ids"] = np.full([len(rows)], task_id, np.int32)
    return x
