"""Sequence -> one vector per example, for sentence-level heads."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class SequencePooling(keras.layers.Layer):
    """Pools token states `[B, L, d]` into `[B, d]`.

    `mode="cls"` takes position `index` (the `[CLS]` piece, or the task token
    when one is prepended); `mode="mean"` averages the positions where
    `padding_mask` is true.

    Args:
        mode: str. `"cls"` or `"mean"`. Defaults to `"cls"`.
        index: int. Position taken by `"cls"`. Defaults to `0`.

    Example:
    ```python
    SequencePooling("mean")(np.ones((2, 5, 8)), np.ones((2, 5), bool))  # [2, 8]
    ```
    """

    def __init__(self, mode="cls", index=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f'mode must be "cls" or "mean". Received: mode={mode}')
        self.mode = mode
        self.index = index

    def call(self, inputs, padding_mask=None):
        if self.mode == "cls" or padding_mask is None and self.mode == "cls":
            return inputs[:, self.index, :]
        if padding_mask is None:
            return ops.mean(inputs, axis=1)
        mask = ops.cast(padding_mask, inputs.dtype)[:, :, None]
        total = ops.sum(inputs * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), ops.cast(1.0, inputs.dtype))

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "index": self.index})
        return config
