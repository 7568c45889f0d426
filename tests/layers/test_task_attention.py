import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.task_attention import TaskAttentionPooling
from keras_mtl.testing import run_layer_test

PADDING_MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)


def _sequence(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 5, 8)).astype("float32")


def _assert_same(a, b):
    """Two pooled outputs (tensors) equal within 1e-6."""
    np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-6)


def test_layer_basics():
    run_layer_test(
        TaskAttentionPooling,
        init_kwargs={"num_heads": 2, "dropout": 0.1},
        input_data={"sequence": _sequence(), "padding_mask": PADDING_MASK},
        expected_output_shape=(2, 8),
        # query vector + MultiHeadAttention (4 kernels, 4 biases).
        expected_num_trainable_weights=9,
    )


def test_padded_positions_get_no_attention():
    layer = TaskAttentionPooling(num_heads=2)
    sequence = _sequence()
    outputs = ops.convert_to_numpy(layer(sequence, padding_mask=PADDING_MASK))

    changed = sequence.copy()
    changed[0, 3:] = 100.0 * np.random.default_rng(1).normal(size=(2, 8))
    changed_outputs = ops.convert_to_numpy(
        layer(changed, padding_mask=PADDING_MASK)
    )
    np.testing.assert_allclose(changed_outputs, outputs, rtol=1e-5, atol=1e-5)

    # A valid position does change the output.
    changed[0, 0] += 5.0
    changed_outputs = ops.convert_to_numpy(
        layer(changed, padding_mask=PADDING_MASK)
    )
    assert not np.allclose(changed_outputs[0], outputs[0], atol=1e-4)
    np.testing.assert_allclose(changed_outputs[1], outputs[1], rtol=1e-5, atol=1e-5)


def test_integer_padding_mask_and_no_mask():
    layer = TaskAttentionPooling(num_heads=2)
    sequence = _sequence()
    bool_outputs = layer(sequence, padding_mask=PADDING_MASK)
    int_outputs = layer(sequence, padding_mask=PADDING_MASK.astype("int32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(int_outputs), ops.convert_to_numpy(bool_outputs)
    )
    all_valid = np.ones((2, 5), dtype=bool)
    _assert_same(layer(sequence), layer(sequence, padding_mask=all_valid))


def test_keras_mask_is_used_when_no_padding_mask():
    token_ids = np.array([[4, 2, 7, 0, 0], [1, 3, 5, 2, 6]], dtype="int32")
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    layer = TaskAttentionPooling(num_heads=2)
    from_keras_mask = layer(embedding(token_ids))
    explicit = layer(embedding(token_ids), padding_mask=token_ids != 0)
    _assert_same(from_keras_mask, explicit)


def test_callers_keras_mask_survives_for_the_next_task():
    token_ids = np.array([[4, 2, 7, 0, 0], [1, 3, 5, 2, 6]], dtype="int32")
    sequence = keras.layers.Embedding(10, 8, mask_zero=True)(token_ids)
    first, second = TaskAttentionPooling(num_heads=2), TaskAttentionPooling(num_heads=2)
    first(sequence)
    with_keras_mask = second(sequence)
    explicit = second(sequence, padding_mask=token_ids != 0)
    _assert_same(with_keras_mask, explicit)


def test_default_key_dim():
    layer = TaskAttentionPooling(num_heads=2)
    layer(_sequence())
    assert layer._attention.key_dim == 4
    assert layer.get_config()["key_dim"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0}, "Received: num_heads=0"),
        ({"num_heads": 2, "key_dim": -1}, "Received: key_dim=-1"),
        ({"num_heads": 2, "dropout": 1.5}, "Received: dropout=1.5"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskAttentionPooling(**kwargs)


def test_too_many_heads_for_hidden_size():
    layer = TaskAttentionPooling(num_heads=16)
    with pytest.raises(ValueError, match="num_heads=16"):
        layer(_sequence())
