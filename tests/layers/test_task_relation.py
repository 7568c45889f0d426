import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_relation import TaskRelation
from keras_mtl.testing import run_layer_test


def _task_vectors(num_tasks=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2, num_tasks, 8)).astype("float32")


def test_layer_basics_with_feed_forward_and_exclude_self():
    run_layer_test(
        TaskRelation,
        init_kwargs={
            "num_heads": 2,
            "intermediate_dim": 16,
            "dropout": 0.1,
            "exclude_self": True,
        },
        input_data=_task_vectors(),
        expected_output_shape=(2, 3, 8),
        # attention (8) + layer norm (2) + two dense (4) + layer norm (2).
        expected_num_trainable_weights=16,
    )


def test_without_feed_forward():
    layer = TaskRelation(num_heads=2)
    outputs = layer(_task_vectors())
    assert tuple(outputs.shape) == (2, 3, 8)
    # attention (8) + layer norm (2): no feed-forward block by default.
    assert len(layer.trainable_weights) == 10


def test_attention_scores_are_distributions_over_tasks():
    layer = TaskRelation(num_heads=2)
    outputs, scores = layer(_task_vectors(), return_attention_scores=True)
    scores = ops.convert_to_numpy(scores)
    assert tuple(outputs.shape) == (2, 3, 8)
    assert scores.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)
    # Without `exclude_self`, every task attends to itself too.
    assert np.all(np.diagonal(scores, axis1=-2, axis2=-1) > 0.0)


def test_exclude_self_attends_only_to_other_tasks():
    layer = TaskRelation(num_heads=2, exclude_self=True)
    _, scores = layer(_task_vectors(), return_attention_scores=True)
    scores = ops.convert_to_numpy(scores)
    np.testing.assert_allclose(
        np.diagonal(scores, axis1=-2, axis2=-1), 0.0, atol=1e-6
    )
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)
    off_diagonal = scores[..., ~np.eye(3, dtype=bool)]
    assert np.all(off_diagonal > 0.0)


def test_exclude_self_needs_two_tasks():
    layer = TaskRelation(num_heads=2, exclude_self=True)
    with pytest.raises(ValueError, match="at least two tasks"):
        layer(_task_vectors(num_tasks=1))


def test_rejects_wrong_rank():
    layer = TaskRelation(num_heads=2)
    with pytest.raises(ValueError, match="inputs_shape"):
        layer.build((2, 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0}, "Received: num_heads=0"),
        ({"num_heads": 2, "intermediate_dim": 0}, "Received: intermediate_dim=0"),
        ({"num_heads": 2, "dropout": -0.1}, "Received: dropout=-0.1"),
        ({"num_heads": 2, "key_dim": 0}, "Received: key_dim=0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskRelation(**kwargs)
