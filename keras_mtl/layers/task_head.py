"""One task's head on a shared representation: [gate] -> dropout -> output layer."""

import keras
from keras import ops

from keras_mtl.layers._common import check_dropout, check_positive_ints
from keras_mtl.layers.task_gate import TaskGate


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskHead(keras.layers.Layer):
    """The head of one task: an optional `TaskGate`, dropout, and a Dense output.

    Works on a pooled representation `[batch, hidden]` (sentence tasks) or on
    token states `[batch, length, hidden]` (tagging: one output per
    position). The output Dense computes in float32 whatever the dtype
    policy (a stable softmax, and TF Serving's REST API cannot encode
    bfloat16). Each task type builds its own (`TaskType.build_head`); name
    the layer after the task, so that the model's output of the task is this
    layer's.

    Its sublayers are created in `build`, each built before the next is
    created, in the order gate, dropout, output: the order (and so the seeded
    initial weights) of the head layers `build_model` used to create one by
    one.

    Args:
        units: int. Output units (classes, or 1 for a value).
        activation: str or None. Activation of the output ("softmax",
            "sigmoid", or None for a linear value). Defaults to `None`.
        squeeze: bool. Drop the last axis of a 1-unit output (a regression
            value `[batch]`). Defaults to `False`.
        gate: bool. Put a `TaskGate` (`sigmoid(W h + b) * h`) before the
            dropout. Defaults to `False`.
        dropout: float. Dropout rate on the representation, in [0, 1).
            Defaults to `0.0`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name` and `dtype`.

    Example:
    ```python
    head = TaskHead(units=3, activation="softmax", gate=True, dropout=0.1, name="topic")
    head(np.ones((2, 8)))  # [2, 3] class probabilities
    ```
    """

    def __init__(self, units, activation=None, squeeze=False, gate=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_positive_ints(units=units)
        check_dropout(dropout)
        if squeeze and units != 1:
            raise ValueError(f"`squeeze` needs units=1. Received: units={units}, squeeze={squeeze}")
        self.units = units
        self.activation = activation
        self.squeeze = squeeze
        self.gate = gate
        self.dropout = dropout

    def build(self, inputs_shape):
        if self.gate:
            self.task_gate = TaskGate(dtype=self.dtype_policy, name="gate")
            self.task_gate.build(inputs_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.output_dense = keras.layers.Dense(self.units, activation=self.activation, dtype="float32", name="output")
        self.output_dense.build(inputs_shape)

    def call(self, inputs, training=None):
        x = self.task_gate(inputs) if self.gate else inputs
        x = self.dropout_layer(x, training=training)
        x = self.output_dense(x)
        return ops.squeeze(x, axis=-1) if self.squeeze else x

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape[:-1]) if self.squeeze else (*inputs_shape[:-1], self.units)

    def compute_output_spec(self, inputs, training=None):
        # float32 whatever the policy (the output Dense's), also in the symbolic model's outputs
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": self.activation,
                "squeeze": self.squeeze,
                "gate": self.gate,
                "dropout": self.dropout,
            }
        )
        return config
