"""prepare(): data -> vocabulary -> encoder -> encoded splits and the training plan, computed once."""

from pathlib import Path

import numpy as np

from keras_mtl.config import load_config
from keras_mtl.data.buckets import training_bucket_lengths
from keras_mtl.data.pipeline import train_dataset
from keras_mtl.prepare import Tokenization, plan_steps, prepare

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SMALL = [
    "tasks.topic.data.train=60",
    "tasks.sentiment.data.train=40",
    "tasks.pos.data.train=30",
    "train.epochs=3",
    "train.sampling=annealed",
    "train.bucket_lengths=auto",
    "train.num_buckets=3",
]


def test_the_plan_is_what_the_training_stream_draws():
    prepared = prepare(load_config(DEMO, SMALL), max_steps=5)
    config, plan = prepared.config, prepared.plan
    train = prepared.encoded["train"]
    assert set(prepared.encoded) == {"train", "dev", "test"}
    assert (plan.epochs, plan.steps_per_epoch) == plan_steps(config.train, len(train), 5)
    assert plan.sizes == [len(train.indices(t)) for t in config.task_names]
    assert plan.present == [t for t, n in zip(config.task_names, plan.sizes) if n]
    # train_dataset computing them itself (same planned epochs) gives the prepared ones
    planned = config.train.model_copy(update={"epochs": plan.epochs})
    _, sizes, schedule = train_dataset(
        train, config.tasks, planned, config.model.max_sequence_length, prepared.sees_task,
        pad_id=prepared.pad_id, seed=config.seed, steps_per_epoch=plan.steps_per_epoch,
    )
    assert sizes == plan.sizes
    np.testing.assert_array_equal(schedule, plan.schedule)
    assert plan.schedule.shape == (plan.epochs, len(plan.present))
    assert plan.bucket_lengths == training_bucket_lengths(
        train, config.tasks, planned, config.model.max_sequence_length
    )
    assert plan.bucket_lengths[-1] == config.model.max_sequence_length
    # the prepared stream pads to the prepared buckets
    for x, _, _ in prepared.train_dataset().take(3):
        assert x["token_ids"].shape[1] in plan.bucket_lengths
        assert ("task_ids" in x) == prepared.sees_task


def test_without_a_plan_no_class_weights_are_applied():
    overrides = SMALL + ["tasks.topic.class_weights=balanced"]
    planned = prepare(load_config(DEMO, overrides))
    bare = prepare(load_config(DEMO, overrides), plan=False)
    assert bare.plan is None
    assert planned.vocabulary == bare.vocabulary
    assert "topic" in planned.plan.class_weights
    np.testing.assert_array_equal(planned.encoded["dev"].weights["topic"], bare.encoded["dev"].weights["topic"])
    train, factors = bare.encoded["train"], np.asarray(planned.plan.class_weights["topic"])
    np.testing.assert_allclose(
        planned.encoded["train"].weights["topic"], train.weights["topic"] * factors[train.labels["topic"]]
    )


def test_a_given_vocabulary_is_the_one_encoded_with():
    # bench/padding.py's --vocab: the same chain, another vocabulary.
    learned = prepare(load_config(DEMO, SMALL), plan=False)
    vocabulary = learned.vocabulary[:60]
    loaded = load_config(DEMO, SMALL)
    given = prepare(loaded, plan=False, tokenization=Tokenization.of_vocabulary(vocabulary, loaded.config.model))
    assert given.vocabulary == vocabulary
    ids = np.concatenate([np.ravel(given.encoded["train"].token_ids[i]) for i in range(len(given.encoded["train"]))])
    assert ids.max() < len(vocabulary)
