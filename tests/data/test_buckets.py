"""Fixed padded lengths: configured, or fitted to the data (keras_mtl/data/buckets.py)."""

import itertools

import numpy as np
import pytest

from keras_mtl.data.buckets import bucket_lengths, optimal_bucket_lengths


def test_bucket_lengths():
    assert bucket_lengths([16, 32, 64, 128], 48) == [16, 32, 48]
    assert bucket_lengths([16, 24], 24) == [16, 24]
    assert bucket_lengths([8], 16) == [8, 16]


def test_bucket_lengths_auto_is_a_grid_every_8_outside_training():
    assert bucket_lengths("auto", 30) == [8, 16, 24, 30]
    assert bucket_lengths("auto", 8) == [8]


def _padding(buckets, lengths, weights):
    return sum(w * (min(b for b in buckets if b >= n) - n) for n, w in zip(lengths, weights))


def _brute_force(lengths, weights, k, max_length):
    values = sorted({n for n in lengths if n < max_length})
    options = (list(c) + [max_length] for r in range(k) for c in itertools.combinations(values, r))
    return min(_padding(b, lengths, weights) for b in options)


def test_optimal_bucket_lengths_equal_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        max_length = int(rng.integers(2, 20))
        k = int(rng.integers(1, 5))
        lengths = rng.integers(1, max_length + 1, int(rng.integers(1, 15))).tolist()
        weights = rng.random(len(lengths)).tolist()
        got = optimal_bucket_lengths(lengths, weights, k, max_length)
        assert len(got) <= k and got[-1] == max_length and got == sorted(set(got)), (got, k)
        assert _padding(got, lengths, weights) == pytest.approx(_brute_force(lengths, weights, k, max_length), abs=1e-9)


def test_optimal_bucket_lengths_edge_cases():
    # every example at max length, or one bucket: just max_length
    assert optimal_bucket_lengths([16, 16], [1, 1], 4, 16) == [16]
    assert optimal_bucket_lengths([3, 9], [1, 1], 1, 16) == [16]
    # as many buckets as distinct lengths: no padding at all
    assert optimal_bucket_lengths([3, 5, 9, 3], [1, 1, 1, 1], 4, 16) == [3, 5, 9, 16]
    # lengths above max_length count as max_length (truncated)
    assert optimal_bucket_lengths([40, 2], [1, 1], 2, 16) == [2, 16]
    # weight moves the boundary: a heavy length gets its own bucket
    assert optimal_bucket_lengths([4, 5, 6, 12], [1, 1, 100, 1], 2, 16) == [6, 16]
