import keras
import numpy as np

from keras_mtl.layers.segment_ids import SegmentIds
from keras_mtl.testing import run_layer_test

SEP = 3


def test_layer_basics():
    run_layer_test(
        SegmentIds,
        init_kwargs={"separator_id": SEP},
        input_data=np.array([[2, 7, 3, 8, 3, 0], [2, 5, 6, 0, 0, 0]], "int32"),
        expected_output_shape=(2, 6),
        expected_num_trainable_weights=0,
        run_training_check=False,
        run_precision_checks=False,
    )


def test_zero_up_to_the_first_separator_one_after():
    ids = np.array([
        [2, 7, 3, 8, 9, 3, 0, 0],   # [CLS] a [SEP] b b [SEP] pad pad
        [2, 3, 3, 0, 0, 0, 0, 0],   # both texts empty
        [2, 7, 7, 7, 7, 7, 7, 7],   # a single text: no separator
    ], "int32")
    got = keras.ops.convert_to_numpy(SegmentIds(SEP)(ids))
    assert got.tolist() == [
        [0, 0, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert got.dtype == np.int32


def test_config_round_trip():
    layer = SegmentIds(102, name="segments")
    clone = SegmentIds.from_config(layer.get_config())
    assert clone.separator_id == 102 and clone.name == "segments"
