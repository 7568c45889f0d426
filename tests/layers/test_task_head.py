import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_head import TaskHead
from keras_mtl.testing import run_layer_test

from helpers import random_hidden as _hidden


def test_layer_basics_on_token_states():
    run_layer_test(
        TaskHead,
        init_kwargs={"units": 3, "activation": "softmax", "gate": True, "dropout": 0.1},
        input_data=_hidden(),
        expected_output_shape=(2, 5, 3),
        expected_num_trainable_weights=4,  # gate kernel and bias, output kernel and bias
        run_precision_checks=False,  # its output is float32 by design: the test below
    )


def test_layer_basics_a_squeezed_value():
    run_layer_test(
        TaskHead,
        init_kwargs={"units": 1, "squeeze": True},
        input_data=_hidden((2, 8)),
        expected_output_shape=(2,),
        expected_num_trainable_weights=2,
        run_precision_checks=False,
    )


def test_the_head_is_gate_then_dropout_then_dense():
    head = TaskHead(units=2, activation="softmax", gate=True, dropout=0.5)
    h = _hidden((4, 8))
    out = ops.convert_to_numpy(head(h, training=False))
    gated = ops.convert_to_numpy(head.task_gate(h))
    logits = gated @ ops.convert_to_numpy(head.output_dense.kernel) + ops.convert_to_numpy(head.output_dense.bias)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ops.convert_to_numpy(head(h, training=True)), out)  # dropout in training


def test_the_output_is_float32_under_mixed_precision():
    head = TaskHead(units=3, activation="softmax", dtype="mixed_bfloat16")
    assert ops.convert_to_numpy(head(_hidden((2, 8)))).dtype == np.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 0}, "units"),
    ({"units": 2, "squeeze": True}, "squeeze"),
    ({"units": 2, "dropout": 1.0}, "dropout"),
])
def test_bad_arguments_echo_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskHead(**kwargs)
