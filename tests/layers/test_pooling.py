"""SequencePooling: the standard layer checks, then cls/mean behaviour."""

import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.testing import run_layer_test


def _states(shape=(2, 5, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


MASK = np.array([[True, True, True, False, False], [True, True, True, True, True]])


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
@pytest.mark.parametrize("mode", ["cls", "mean"])
def test_layer_basics(mode):
    run_layer_test(
        SequencePooling,
        init_kwargs={"mode": mode},
        input_data={"inputs": _states(), "padding_mask": MASK},
        expected_output_shape=(2, 8),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
    )


def test_cls_takes_the_indexed_position():
    states = _states()
    np.testing.assert_array_equal(ops.convert_to_numpy(SequencePooling("cls")(states, MASK)), states[:, 0])
    np.testing.assert_array_equal(ops.convert_to_numpy(SequencePooling("cls", index=2)(states)), states[:, 2])


def test_mean_ignores_padded_positions():
    states = _states()
    out = ops.convert_to_numpy(SequencePooling("mean")(states, MASK))
    np.testing.assert_allclose(out[0], states[0, :3].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], states[1].mean(axis=0), rtol=1e-5, atol=1e-6)
    changed = states.copy()
    changed[0, 3:] = 1e4  # garbage under the padding
    out2 = ops.convert_to_numpy(SequencePooling("mean")(changed, MASK))
    np.testing.assert_allclose(out2, out, rtol=1e-6)


def test_mean_of_an_all_padding_row_is_zero_not_nan():
    mask = np.array([[False] * 5, [True] * 5])
    out = ops.convert_to_numpy(SequencePooling("mean")(_states(), mask))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], np.zeros(8))


def test_mean_without_a_mask_averages_everything():
    states = _states()
    out = ops.convert_to_numpy(SequencePooling("mean")(states))
    np.testing.assert_allclose(out, states.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_output_shape_and_invalid_mode():
    assert SequencePooling("mean").compute_output_shape((None, None, 16)) == (None, 16)
    with pytest.raises(ValueError, match='mode must be "cls" or "mean"'):
        SequencePooling("max")


def test_config_round_trip_keeps_index():
    layer = SequencePooling("cls", index=3, name="p")
    revived = SequencePooling.from_config(layer.get_config())
    assert (revived.mode, revived.index, revived.name) == ("cls", 3, "p")
