import keras
from keras import ops

from keras_mtl.layers._common import check_dropout
from keras_mtl.layers._common import check_positive_ints
from keras_mtl.layers._common import config_entries
from keras_mtl.layers._common import last_axis
from keras_mtl.layers._common import multi_head_attention


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskRelation(keras.layers.Layer):
    """Self-attention across tasks: each task's vector attends to the others.

    On `[batch, num_tasks, hidden_dim]` (one representation per task):
    `y = LayerNorm(x + MHA(x, x, x))`, then `LayerNorm(y + FFN(y))` when
    `intermediate_dim` is set; the output has the input's shape. The block,
    `exclude_self`, masking and an example: docs/layers.md#taskrelation.

    Args:
        num_heads: int. The number of attention heads.
        key_dim: int. The size of each attention head. Defaults to `None`,
            meaning `max(hidden_dim // num_heads, 1)`.
        intermediate_dim: int. Hidden size of the optional position-wise
            feed-forward block. Defaults to `None` (no feed-forward block).
        activation: string or callable. Activation of the feed-forward
            block. Defaults to `"gelu"`.
        dropout: float. Dropout rate applied to the attention probabilities
            and to the attention and feed-forward outputs. Defaults to
            `0.0`.
        exclude_self: bool. If `True`, task `t` attends only over the other
            tasks (needs two tasks or more). Defaults to `False`.
        layer_norm_epsilon: float. Epsilon of the layer normalizations.
            Defaults to `1e-5`.
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the dense kernels. Defaults to
            `"glorot_uniform"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.

    Call arguments:
        inputs: tensor of shape `[batch, num_tasks, hidden_dim]`.
        training: bool. Whether dropout is active.
        return_attention_scores: bool. If `True`, also return the attention
            probabilities, `[batch, num_heads, num_tasks, num_tasks]`.
            Defaults to `False`.
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        intermediate_dim=None,
        activation="gelu",
        dropout=0.0,
        exclude_self=False,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(num_heads=num_heads)
        check_positive_ints(optional=True, key_dim=key_dim, intermediate_dim=intermediate_dim)
        check_dropout(dropout)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.exclude_self = bool(exclude_self)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        if len(inputs_shape) != 3:
            raise ValueError(
                "`TaskRelation` expects inputs of shape "
                "[batch, num_tasks, hidden_dim]. "
                f"Received: inputs_shape={inputs_shape}"
            )
        num_tasks, hidden_dim = inputs_shape[1], last_axis(inputs_shape)
        if self.exclude_self and num_tasks is not None and num_tasks < 2:
            raise ValueError(
                "`exclude_self=True` needs at least two tasks. "
                f"Received: inputs_shape={inputs_shape}"
            )
        key_dim = self.key_dim or max(hidden_dim // self.num_heads, 1)
        self._self_attention = multi_head_attention(self, key_dim, "self_attention")
        self._self_attention.build(inputs_shape, inputs_shape, inputs_shape)
        self._attention_dropout = self._dropout_layer("attention_dropout")
        self._attention_layer_norm = self._layer_norm(inputs_shape, "attention_layer_norm")
        if self.intermediate_dim is not None:
            self._intermediate_dense = self._dense(
                inputs_shape, self.intermediate_dim, "intermediate_dense", activation=self.activation
            )
            self._output_dense = self._dense(
                tuple(inputs_shape[:-1]) + (self.intermediate_dim,), hidden_dim, "output_dense"
            )
            self._output_dropout = self._dropout_layer("output_dropout")
            self._output_layer_norm = self._layer_norm(inputs_shape, "output_layer_norm")
        self.built = True

    def _dropout_layer(self, name):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def _layer_norm(self, inputs_shape, name):
        layer = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)
        layer.build(inputs_shape)
        return layer

    def _dense(self, inputs_shape, units, name, **kwargs):
        layer = keras.layers.Dense(
            units, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name, **kwargs
        )
        layer.build(inputs_shape)
        return layer

    def _attention_mask(self, inputs):
        if not self.exclude_self:
            return None
        batch_size = ops.shape(inputs)[0]
        num_tasks = inputs.shape[1]
        if num_tasks is None:
            num_tasks = ops.shape(inputs)[1]
        # True off the diagonal: task t may attend to every task but itself.
        not_self = ops.logical_not(ops.cast(ops.eye(num_tasks), "bool"))
        return ops.broadcast_to(
            ops.expand_dims(not_self, 0), (batch_size, num_tasks, num_tasks)
        )

    def call(self, inputs, training=None, return_attention_scores=False):
        # A copy: `MultiHeadAttention` would read a Keras mask on `inputs` as
        # a query mask and clear it on the caller's tensor.
        tasks = ops.copy(inputs)
        attention = self._self_attention(
            tasks,
            tasks,
            tasks,
            attention_mask=self._attention_mask(inputs),
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            attention, scores = attention
        attention = self._attention_dropout(attention, training=training)
        outputs = self._attention_layer_norm(inputs + attention)
        if self.intermediate_dim is not None:
            ffn = self._output_dense(self._intermediate_dense(outputs))
            ffn = self._output_dropout(ffn, training=training)
            outputs = self._output_layer_norm(outputs + ffn)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def compute_output_spec(
        self, inputs, training=None, return_attention_scores=False
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch_size, num_tasks = inputs.shape[0], inputs.shape[1]
        scores = keras.KerasTensor(
            (batch_size, self.num_heads, num_tasks, num_tasks),
            dtype=self.compute_dtype,
        )
        return outputs, scores

    def get_config(self):
        return {
            **super().get_config(),
            **config_entries(
                self,
                "num_heads",
                "key_dim",
                "intermediate_dim",
                "activation",
                "dropout",
                "exclude_self",
                "layer_norm_epsilon",
                "kernel_initializer",
            ),
        }
