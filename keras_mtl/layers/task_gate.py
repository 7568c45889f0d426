import keras


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskGate(keras.layers.Layer):
    """Task-adaptive feature-wise gate over a shared representation.

    Computes a gate `g = sigmoid(h W + b)` with one value in `(0, 1)` per
    feature and returns `g * h`, so each task can switch shared features on
    or off for itself. Use one instance per task, e.g.
    `y_t = head_t(gate_t(h))`. The gate is computed independently at every
    position, so the layer accepts `[batch, hidden_dim]` and
    `[batch, sequence_length, hidden_dim]` inputs (any rank >= 2; the last
    axis is the feature axis).

    The bias is initialised to ones by default, so at the start of training
    the gates are about `sigmoid(1) ~= 0.73` (mostly open) and the shared
    features reach every head.

    Masking: the layer works position by position and passes any Keras mask
    of its input through unchanged.

    Args:
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the `[hidden_dim, hidden_dim]` gate kernel.
            Defaults to `"glorot_uniform"`.
        bias_initializer: string or `keras.initializers` initializer. The
            initializer of the gate bias. Defaults to `"ones"` (gates start
            near open).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.

    Example:

    ```python
    import numpy as np
    from keras_mtl.layers.task_gate import TaskGate

    hidden = np.random.normal(size=(2, 5, 8)).astype("float32")
    gate = TaskGate()
    gated = gate(hidden)  # shape (2, 5, 8)
    ```

    References:
        - [Dauphin et al., 2017](https://arxiv.org/abs/1612.08083)
          (gated linear units).
        - [Ma et al., 2018](https://dl.acm.org/doi/10.1145/3219819.3220007)
          (task-specific gating for multi-task learning).
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
        hidden_dim = inputs_shape[-1]
        if hidden_dim is None:
            raise ValueError(
                "The last axis of the input to `TaskGate` must be defined. "
                f"Received: inputs_shape={inputs_shape}"
            )
        self._gate_dense = keras.layers.Dense(
            hidden_dim,
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
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config
