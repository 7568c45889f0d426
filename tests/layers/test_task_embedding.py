"""TaskEmbedding: the standard layer checks, then add/prepend behaviour."""

import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_embedding import TaskEmbedding
from keras_mtl.testing import run_layer_test

from helpers import random_hidden as _hidden

TASK_IDS = np.array([0, 2], dtype="int32")


def test_layer_basics_add():
    run_layer_test(
        TaskEmbedding,
        init_kwargs={"num_tasks": 3, "hidden_dim": 8},
        input_data=[_hidden(), TASK_IDS],
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
    )


def test_layer_basics_prepend():
    run_layer_test(
        TaskEmbedding,
        init_kwargs={"num_tasks": 3, "hidden_dim": 8, "mode": "prepend"},
        input_data=[_hidden(), TASK_IDS],
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=1,
    )


def test_add_puts_the_task_vector_on_every_position():
    layer = TaskEmbedding(3, 8)
    hidden = _hidden()
    out = ops.convert_to_numpy(layer(hidden, TASK_IDS))
    table = ops.convert_to_numpy(layer.embeddings)
    assert table.shape == (3, 8)
    np.testing.assert_allclose(out, hidden + table[TASK_IDS][:, None, :], rtol=1e-6)


def test_prepend_adds_a_first_position():
    layer = TaskEmbedding(3, 8, mode="prepend")
    hidden = _hidden()
    out = ops.convert_to_numpy(layer(hidden, TASK_IDS))
    table = ops.convert_to_numpy(layer.embeddings)
    assert out.shape == (2, 6, 8)
    np.testing.assert_allclose(out[:, 0], table[TASK_IDS], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1:], hidden)


@pytest.mark.parametrize("mode", ["add", "prepend"])
def test_different_task_ids_give_different_outputs(mode):
    layer = TaskEmbedding(3, 8, mode=mode)
    same = np.repeat(_hidden((1, 4, 8)), 3, axis=0)
    out = ops.convert_to_numpy(layer(same, np.array([0, 1, 2], "int32")))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.allclose(out[a], out[b]), (mode, a, b)
    again = ops.convert_to_numpy(layer(same, np.array([1, 1, 1], "int32")))
    np.testing.assert_allclose(again[0], out[1], rtol=1e-6)


def test_symbolic_shapes_with_unknown_length():
    assert TaskEmbedding(2, 4).compute_output_shape((None, None, 4)) == (None, None, 4)
    assert TaskEmbedding(2, 4, mode="prepend").compute_output_shape((None, None, 4)) == (None, None, 4)
    assert TaskEmbedding(2, 4, mode="prepend").compute_output_shape((None, 7, 4)) == (None, 8, 4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        TaskEmbedding(0, 4)
    with pytest.raises(ValueError, match='mode must be "add" or "prepend"'):
        TaskEmbedding(2, 4, mode="concat")


def test_config_keeps_every_argument():
    layer = TaskEmbedding(4, 6, mode="prepend", embeddings_initializer="zeros", name="te")
    revived = TaskEmbedding.from_config(layer.get_config())
    assert (revived.num_tasks, revived.hidden_dim, revived.mode, revived.name) == (4, 6, "prepend", "te")
    out = ops.convert_to_numpy(revived(_hidden((1, 2, 6)), np.array([3], "int32")))
    np.testing.assert_array_equal(out[:, 0], np.zeros((1, 6)))
