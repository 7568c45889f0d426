import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_gate import TaskGate
from keras_mtl.testing import run_layer_test

from helpers import random_hidden as _hidden


def test_layer_basics_sequence_input():
    run_layer_test(
        TaskGate,
        init_kwargs={"kernel_initializer": "he_normal"},
        input_data=_hidden(),
        expected_output_shape=(2, 5, 8),
        expected_num_trainable_weights=2,
    )


def test_pooled_input_keeps_shape():
    layer = TaskGate()
    outputs = layer(_hidden((2, 8)))
    assert tuple(outputs.shape) == (2, 8)


def test_gates_in_open_unit_interval_and_output_is_gated_input():
    hidden = 3.0 * _hidden()
    layer = TaskGate()
    outputs = ops.convert_to_numpy(layer(hidden))
    gates = ops.convert_to_numpy(layer.compute_gate(hidden))
    assert gates.shape == hidden.shape
    assert np.all(gates > 0.0) and np.all(gates < 1.0)
    np.testing.assert_allclose(outputs, gates * hidden, rtol=1e-6, atol=1e-6)


def test_default_bias_starts_gates_open():
    # With a zero kernel the gate is exactly sigmoid(bias) = sigmoid(1).
    layer = TaskGate(kernel_initializer="zeros")
    hidden = _hidden()
    gates = ops.convert_to_numpy(layer.compute_gate(hidden))
    np.testing.assert_allclose(gates, 1.0 / (1.0 + np.exp(-1.0)), rtol=1e-6)


def test_config_has_every_argument():
    config = TaskGate(kernel_initializer="zeros", bias_initializer="ones").get_config()
    assert config["kernel_initializer"]["class_name"] == "Zeros"
    assert config["bias_initializer"]["class_name"] == "Ones"


def test_undefined_feature_axis_raises():
    layer = TaskGate()
    with pytest.raises(ValueError, match="inputs_shape"):
        layer.build((2, 5, None))


def test_mixed_precision_computes_in_bfloat16():
    layer = TaskGate(dtype="mixed_bfloat16")
    outputs = layer(_hidden())
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in layer.weights)
