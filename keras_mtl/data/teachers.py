"""Distillation targets in the input pipeline: placed on the training split, annealed per batch.

A distilled task (`tasks[i].teacher`) learns from `[gold | teacher]`
columns: `attach_teacher_targets` puts the teacher's targets (computed above
the data layer, by `keras_mtl.distill.teacher_targets`) on the encoded
training split, and `anneal` mixes each batch's columns with lambda of its
step, `target = lambda * gold + (1 - lambda) * teacher` (BAM!, Clark et al.
2019; lambda from 0 at the first step to 1 at the last). Mixing in the
pipeline makes every backend train the same way, and a resumed run, which
`skip`s the batches it had done, continues the schedule where it stopped.
"""

import tensorflow as tf

from keras_mtl.tasks import for_task


def attach_teacher_targets(split, config, classes, targets):
    """Put each distilled task's teacher targets on the training split (`split.teacher`).

    Args:
        split: the encoded training split (`EncodedSplit`).
        config: ExperimentConfig.
        classes: task -> class names.
        targets: task -> one target per training example labelled for the
            task, in the split's order (`distill.teacher_targets`).

    Each row gets one array, its example's target placed on its pieces
    (`teacher_on_pieces`; a long text's windows each get the words they
    read); a row without the task's label gets zeros (weight 0: never
    trained on).
    """
    for task in config.tasks:
        if task.name not in targets:
            continue
        idx = split.indices(task.name)
        examples = split.example_indices(task.name)
        given = targets[task.name]
        if len(given) != len(examples):
            raise ValueError(
                f"task {task.name!r}: {len(given)} teacher targets for {len(examples)} labelled training examples"
            )
        of_example = dict(zip(examples.tolist(), given))
        head = for_task(task, classes[task.name])
        per_row = [head.teacher_blank(len(ids)) for ids in split.token_ids]
        for i in idx:
            target = of_example[int(split.row_example[i])]
            per_row[i] = head.teacher_on_pieces(target, split.word_starts[i], len(split.token_ids[i]))
        split.teacher[task.name] = per_row


def annealing_lambda(step, total_steps):
    """lambda of teacher annealing at `step` (0-based; an int or a tensor): 0 at the first
    step, rising linearly to 1 at the last (`total_steps - 1`). A float32 tensor."""
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
