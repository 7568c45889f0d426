"""Bucket lengths: the few fixed padded lengths of the training batches.

JAX (and XLA) compile once per input shape, so batches are padded to one of
a few lengths. `train.bucket_lengths` lists them, or `auto` (the default)
fits `train.num_buckets` lengths to the training data: the ones that
minimize the expected padding under the sampling schedule
(`optimal_bucket_lengths`, exact dynamic programming over the length
histogram). `bench/padding.py` measures the padding of each choice.
"""

import numpy as np

from keras_mtl.data import sampling

EVAL_BUCKET_STEP = 8  # `bucket_lengths: auto` outside training: every 8 tokens


def bucket_lengths(config_lengths, max_length):
    """The fixed padded lengths: configured buckets below max_length, then max_length.

    `"auto"` (the training buckets are fitted to the data, see
    `training_bucket_lengths`) gives a grid every 8 tokens here, which is
    what evaluation uses: its batches are sorted by length, so a fine grid
    wastes little.
    """
    if config_lengths == "auto":
        config_lengths = range(EVAL_BUCKET_STEP, max_length, EVAL_BUCKET_STEP)
    return [b for b in config_lengths if b < max_length] + [max_length]


def optimal_bucket_lengths(lengths, weights, num_buckets, max_length):
    """The `num_buckets` padded lengths that minimize the expected padding.

    Every example of length l is padded to the smallest bucket b >= l, so
    the expected padded tokens are sum_i w_i (b(l_i) - l_i). The last bucket
    is always `max_length`; the others are chosen among the lengths that
    occur, by dynamic programming over the sorted distinct lengths (exact,
    O(num_buckets x m^2) for m distinct lengths).

    Args:
        lengths: int array [N], the examples' lengths (capped at max_length).
        weights: float array [N], how often each example is drawn.
        num_buckets: int >= 1, the number of padded shapes.
        max_length: int, the model's maximum sequence length.

    Returns:
        Increasing list of at most `num_buckets` lengths, ending at max_length.
    """
    lengths = np.minimum(np.asarray(lengths, np.int64), max_length)
    weights = np.asarray(weights, np.float64)
    values = np.unique(lengths[lengths < max_length])
    if num_buckets <= 1 or not len(values):
        return [max_length]
    # Candidate boundaries: the distinct lengths, then max_length (forced last).
    cand = np.concatenate([values, [max_length]])
    w = np.zeros(len(cand))
    np.add.at(w, np.searchsorted(cand, lengths), weights)
    cw = np.concatenate([[0.0], np.cumsum(w)])  # cw[j] = weight of cand[:j]
    cwl = np.concatenate([[0.0], np.cumsum(w * cand)])
    m = len(cand)

    def cost(a, b):  # examples cand[a:b+1] (a may be an array) padded to cand[b]
        return cand[b] * (cw[b + 1] - cw[a]) - (cwl[b + 1] - cwl[a])

    k = min(num_buckets, m)
    # best[j]: least padding of cand[:j+1] in buckets whose last is cand[j]
    best = cost(np.zeros(m, np.int64), np.arange(m))
    choice = []
    for _ in range(k - 1):
        new, arg = best.copy(), np.full(m, -1)
        for b in range(1, m):
            prev = np.arange(b)  # previous bucket ends at cand[prev]
            total = best[prev] + cost(prev + 1, b)
            j = int(np.argmin(total))
            if total[j] < new[b]:
                new[b], arg[b] = total[j], j
        best = new
        choice.append(arg)
    out, b = [], m - 1
    for arg in reversed(choice):  # arg[b] < 0: this level kept b's bucket whole
        out.append(int(cand[b]))
        if arg[b] >= 0:
            b = int(arg[b])
    out.append(int(cand[b]))
    return sorted(set(out))


def example_draw_weights(split, tasks, probabilities):
    """How often each training example is drawn: sum over its tasks of p_t / n_t."""
    weights = np.zeros([len(split)], np.float64)
    present = [t for t in tasks if len(split.indices(t.name))]
    for task, p in zip(present, probabilities):
        idx = split.indices(task.name)
        weights[idx] += p / len(idx)
    return weights


def training_bucket_lengths(split, tasks, train_cfg, max_length, schedule=None):
    """The padded lengths training uses: the configured ones, or with
    `bucket_lengths: auto` the `num_buckets` lengths that minimize the
    expected padding under the sampling `schedule` (its mean over epochs;
    default `sampling.training_schedule(split, tasks, train_cfg)`)."""
    if train_cfg.bucket_lengths != "auto":
        return bucket_lengths(train_cfg.bucket_lengths, max_length)
    if schedule is None:
        schedule = sampling.training_schedule(split, tasks, train_cfg)
    weights = example_draw_weights(split, tasks, np.mean(np.asarray(schedule), axis=0))
    lengths = split.row_lengths()
    return optimal_bucket_lengths(lengths, weights, train_cfg.num_buckets, max_length)
