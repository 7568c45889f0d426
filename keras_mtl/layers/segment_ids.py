"""Packed sentence pairs -> segment ids, read off the separator token."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class SegmentIds(keras.layers.Layer):
    """The segment of every position of packed token ids.

    `[CLS] a [SEP] b [SEP] [PAD] ...` gives `0` up to and including the first
    `separator_id`, and `1` after it (BERT's token type ids). A single text,
    which has no separator, is all `0`. Deriving the segments from the ids
    keeps them one input: the training batches, the evaluation and the
    `serve_tokens` signature carry token ids alone.

    Args:
        separator_id: int. The id of the `[SEP]` piece.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`.

    Example:
    ```python
    SegmentIds(3)(np.array([[2, 7, 3, 8, 9, 3, 0]]))  # [[0, 0, 0, 1, 1, 1, 1]]
    ```
    """

    def __init__(self, separator_id, **kwargs):
        super().__init__(**kwargs)
        self.separator_id = int(separator_id)

    def call(self, token_ids):
        is_separator = ops.cast(ops.equal(token_ids, self.separator_id), "int32")
        before = ops.cumsum(is_separator, axis=-1) - is_separator
        return ops.minimum(before, 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"separator_id": self.separator_id})
        return config
