"""Numpy batches of one task for Reptile's inner loops and few-shot fine-tuning."""

import numpy as np

from keras_mtl.tasks import for_task


def padded_lengths(config):
    """The fixed padded lengths of the inner-loop batches (`train.bucket_lengths`)."""
    from keras_mtl.data.buckets import bucket_lengths

    return bucket_lengths(config.train.bucket_lengths, config.model.max_sequence_length)


def make_batch(split, rows, task, task_index, lengths, pad_id=0, sees_task=False):
    """(x, y, sample_weight) numpy arrays of `rows` of an EncodedSplit, for one task's head.

    Token ids are padded to the smallest of `lengths` that fits the longest row;
    labels and weights are the task type's `batch_labels` (token-level: [B, L],
    weight 1 on labelled word starts).
    """
    from keras_mtl.data.pipeline import padded_inputs

    x = padded_inputs(split, rows, lengths, pad_id, task_index if sees_task else None)
    length = x["token_ids"].shape[1]
    y, sw = for_task(task).batch_labels(split.labels[task.name], rows, split.weights[task.name], length)
    return x, y, sw


class Cycle:
    """Endless seeded batches of indices: reshuffled passes over `indices`."""

    def __init__(self, indices, batch_size, rng):
        self.indices = np.asarray(indices)
        self.batch_size = int(batch_size)
        self.rng = rng
        self.order, self.pos = self.rng.permutation(self.indices), 0

    def next(self):
        out = []
        while len(out) < self.batch_size:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.indices), 0
            take = self.order[self.pos : self.pos + self.batch_size - len(out)]
            out += take.tolist()
            self.pos += len(take)
        return out
