"""Task sampling: the probability formulas, and the proportions actually drawn."""

import numpy as np
import pytest

from keras_mtl.config import config_from_dict
from keras_mtl.data.example import Example
from keras_mtl.data.pipeline import encode_split, train_dataset
from keras_mtl.data.sampling import probability_schedule, task_probabilities
from keras_mtl.data.tokenize import RESERVED, TextEncoder, make_tokenizer
from keras_mtl.errors import ConfigError

SIZES = [80, 10, 30]


def test_proportional():
    np.testing.assert_allclose(task_probabilities(SIZES, "proportional"), [80 / 120, 10 / 120, 30 / 120])


def test_uniform():
    np.testing.assert_allclose(task_probabilities(SIZES, "uniform"), [1 / 3] * 3)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 5.0])
def test_temperature(tau):
    w = np.asarray(SIZES, float) ** (1 / tau)
    np.testing.assert_allclose(task_probabilities(SIZES, "temperature", temperature=tau), w / w.sum())


def test_temperature_one_is_proportional_and_large_tends_to_uniform():
    np.testing.assert_allclose(
        task_probabilities(SIZES, "temperature", temperature=1.0), task_probabilities(SIZES, "proportional")
    )
    np.testing.assert_allclose(task_probabilities(SIZES, "temperature", temperature=1e6), [1 / 3] * 3, atol=1e-5)


@pytest.mark.parametrize("epochs", [2, 5])
def test_annealed(epochs):
    for epoch in range(1, epochs + 1):
        alpha = 1 - 0.8 * (epoch - 1) / (epochs - 1)
        w = np.asarray(SIZES, float) ** alpha
        np.testing.assert_allclose(
            task_probabilities(SIZES, "annealed", epoch=epoch, epochs=epochs), w / w.sum(), err_msg=f"epoch {epoch}"
        )
    # Proportional first, sizes ** 0.2 at the last epoch.
    np.testing.assert_allclose(
        task_probabilities(SIZES, "annealed", epoch=1, epochs=epochs), task_probabilities(SIZES, "proportional")
    )


def test_annealed_single_epoch_is_proportional():
    np.testing.assert_allclose(
        task_probabilities(SIZES, "annealed", epoch=1, epochs=1), task_probabilities(SIZES, "proportional")
    )


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_temperature_must_be_positive(tau):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        task_probabilities(SIZES, "temperature", temperature=tau)


def test_temperature_must_be_positive_in_the_config():
    raw = {"name": "s", "train": {"sampling": "temperature", "temperature": 0},
           "tasks": [{"name": "a", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}}]}
    with pytest.raises(ConfigError, match="train.temperature: temperature must be > 0"):
        config_from_dict(raw)


@pytest.mark.parametrize("sizes", [[], [3, 0], [-1, 2]])
def test_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes must be positive"):
        task_probabilities(sizes)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown sampling strategy 'random'"):
        task_probabilities(SIZES, "random")


def test_schedule_table():
    table = probability_schedule(SIZES, "annealed", 2.0, 4)
    assert table.shape == (4, 3) and table.dtype == np.float32
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-6)
    assert table[0, 0] > table[1, 0] > table[2, 0] > table[3, 0]  # the big task flattens


# ------------------------------------------------------------------ drawn proportions

VOCAB = RESERVED + ["the", "cat", "dog", "sat", "ran", "a"]
BATCH = 8


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(make_tokenizer(VOCAB), 8, cls_id=2, unk_id=1, pad_id=0)


def _split_and_tasks(encoder, sizes, sampling, epochs=1, temperature=2.0):
    names = ["big", "mid", "small"][: len(sizes)]
    tasks = config_from_dict({
        "name": "s",
        "tasks": [{"name": n, "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}}
                  for n in names],
        "model": {"max_sequence_length": 8},
        "train": {"batch_size": BATCH, "bucket_lengths": [8], "sampling": sampling, "epochs": epochs,
                  "temperature": temperature},
    }).config
    words = VOCAB[len(RESERVED):]
    examples = []
    for t, (name, n) in enumerate(zip(names, sizes)):
        for i in range(n):  # distinct short texts, one task each
            text = " ".join(words[(i // 6**k) % 6] for k in range(3)) + f" {words[t]}"
            examples.append(Example(text, {name: "x" if i % 2 else "y"}, f"m:{len(examples)}"))
    split = encode_split(examples, encoder, tasks.tasks, {n: ["x", "y"] for n in names})
    return split, tasks


def _drawn(split, tasks, steps_per_epoch, num_batches):
    ds, sizes, schedule = train_dataset(
        split, tasks.tasks, tasks.train, 8, True, pad_id=0, seed=3, steps_per_epoch=steps_per_epoch
    )
    ids = np.stack([x["task_ids"].numpy() for x, _, _ in ds.take(num_batches)])  # [batches, BATCH]
    assert ids.shape == (num_batches, BATCH)
    return ids, sizes, schedule


# 200 batches x 8 = 1600 draws: the standard error of a proportion is at most
# 0.0125, so 0.05 is four standard errors.
TOLERANCE = 0.05


@pytest.mark.parametrize("sampling", ["proportional", "uniform", "temperature"])
def test_drawn_task_proportions_match(encoder, sampling):
    sizes = [120, 20, 60]
    split, tasks = _split_and_tasks(encoder, sizes, sampling)
    ids, got_sizes, schedule = _drawn(split, tasks, steps_per_epoch=1000, num_batches=200)
    assert got_sizes == sizes
    expected = task_probabilities(sizes, sampling, temperature=2.0)
    np.testing.assert_allclose(schedule[0], expected, rtol=1e-6)
    drawn = np.bincount(ids.ravel(), minlength=3) / ids.size
    np.testing.assert_allclose(drawn, expected, atol=TOLERANCE, err_msg=f"{sampling}: drawn {drawn}")


def test_annealed_proportions_change_at_the_epoch_boundary(encoder):
    sizes = [160, 10, 10]
    split, tasks = _split_and_tasks(encoder, sizes, "annealed", epochs=2)
    # Epoch 1 is batches 0-99 (alpha 1), epoch 2 is batches 100-199 (alpha 0.2).
    ids, _, schedule = _drawn(split, tasks, steps_per_epoch=100, num_batches=200)
    for epoch, part in ((1, ids[:100]), (2, ids[100:])):
        expected = task_probabilities(sizes, "annealed", epoch=epoch, epochs=2)
        np.testing.assert_allclose(schedule[epoch - 1], expected, rtol=1e-6)
        drawn = np.bincount(part.ravel(), minlength=3) / part.size
        # 800 draws: standard error <= 0.018; 0.06 is over three of them.
        np.testing.assert_allclose(drawn, expected, atol=0.06, err_msg=f"epoch {epoch}: drawn {drawn}")
    assert np.mean(ids[:100] == 0) - np.mean(ids[100:] == 0) > 0.3
