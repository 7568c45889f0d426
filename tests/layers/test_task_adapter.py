import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_adapter import TaskAdapter
from keras_mtl.testing import run_layer_test

from helpers import random_hidden as _hidden

TASK_IDS = np.array([0, 2], dtype="int32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))


def test_layer_basics():
    run_layer_test(
        TaskAdapter,
        init_kwargs={"num_tasks": 3, "bottleneck_dim": 4},
        input_data=[_hidden(), TASK_IDS],
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=4,
    )


def test_starts_as_identity():
    layer = TaskAdapter(num_tasks=3, bottleneck_dim=4)
    hidden = _hidden()
    outputs = ops.convert_to_numpy(layer(hidden, TASK_IDS))
    np.testing.assert_array_equal(outputs, hidden)
    assert np.all(ops.convert_to_numpy(layer.up_kernel) == 0.0)
    assert not np.allclose(ops.convert_to_numpy(layer.down_kernel), 0.0)


def test_uses_each_examples_own_task_weights():
    layer = TaskAdapter(num_tasks=3, bottleneck_dim=4, activation="relu")
    hidden = _hidden()
    layer(hidden, TASK_IDS)
    _randomize(layer)
    outputs = ops.convert_to_numpy(layer(hidden, TASK_IDS))

    down, down_bias, up, up_bias = [
        ops.convert_to_numpy(w)
        for w in [layer.down_kernel, layer.down_bias, layer.up_kernel, layer.up_bias]
    ]
    for b, t in enumerate(TASK_IDS):
        expected = (
            hidden[b]
            + np.maximum(hidden[b] @ down[t] + down_bias[t], 0.0) @ up[t]
            + up_bias[t]
        )
        np.testing.assert_allclose(outputs[b], expected, rtol=1e-4, atol=1e-4)

    # Changing task 1's adapter (used by no example) changes nothing; changing
    # task 2's changes only example 1.
    layer.up_bias.assign(ops.convert_to_numpy(layer.up_bias) + np.array([[0.0], [9.0], [0.0]]))
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(hidden, TASK_IDS)), outputs, rtol=1e-6
    )
    layer.up_bias.assign(ops.convert_to_numpy(layer.up_bias) + np.array([[0.0], [0.0], [9.0]]))
    changed = ops.convert_to_numpy(layer(hidden, TASK_IDS))
    np.testing.assert_allclose(changed[0], outputs[0], rtol=1e-6)
    np.testing.assert_allclose(changed[1], outputs[1] + 9.0, rtol=1e-5)


def test_pooled_input_and_column_task_ids():
    layer = TaskAdapter(num_tasks=3, bottleneck_dim=4)
    hidden = _hidden((2, 8))
    layer(hidden, TASK_IDS)
    _randomize(layer)
    flat_ids = ops.convert_to_numpy(layer(hidden, TASK_IDS))
    column_ids = ops.convert_to_numpy(layer(hidden, TASK_IDS[:, None]))
    assert flat_ids.shape == (2, 8)
    np.testing.assert_allclose(column_ids, flat_ids, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_tasks": 0, "bottleneck_dim": 4}, "Received: num_tasks=0"),
        ({"num_tasks": 2, "bottleneck_dim": 0}, "Received: bottleneck_dim=0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskAdapter(**kwargs)
