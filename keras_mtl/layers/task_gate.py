import keras

from keras_mtl.layers._common import config_entries
from keras_mtl.layers._common import last_axis


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskGate(keras.layers.Layer):
    """Task-adaptive feature-wise gate over a shared representation.

    Returns `sigmoid(h W + b) * h`, computed at every position of an input
    of rank >= 2; use one instance per task (`y_t = head_t(gate_t(h))`).
    The gates start mostly open. Details and an example:
    docs/layers.md#taskgate.

    Args:
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the `[hidden_dim, hidden_dim]` gate kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: string or `keras.initializers` initializer. The
            initializer of the gate bias. Defaults to `"ones"` (gates start
            near open).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.
    """

    def __init__(
        self,
        kernel_initializer="glorot_uniform",
        bias_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        self._gate_dense = keras.layers.Dense(
            last_axis(inputs_shape, "the input to `TaskGate`"),
            activation="sigmoid",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name="gate_dense",
        )
        self._gate_dense.build(inputs_shape)
        self.built = True

    def compute_gate(self, inputs):
        """Return the gate values `sigmoid(inputs W + b)` in `(0, 1)`."""
        if not self.built:
            self.build(tuple(inputs.shape))
        return self._gate_dense(inputs)

    def call(self, inputs):
        return keras.ops.multiply(self._gate_dense(inputs), inputs)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def get_config(self):
        return {**super().get_config(), **config_entries(self, "kernel_initializer", "bias_initializer")}
