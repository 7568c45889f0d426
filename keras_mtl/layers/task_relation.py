import keras
from keras import ops


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
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(
                "`num_heads` must be a positive integer. "
                f"Received: num_heads={num_heads}"
            )
        if key_dim is not None and (not isinstance(key_dim, int) or key_dim < 1):
            raise ValueError(
                "`key_dim` must be a positive integer or `None`. "
                f"Received: key_dim={key_dim}"
            )
        if intermediate_dim is not None and (
            not isinstance(intermediate_dim, int) or intermediate_dim < 1
        ):
            raise ValueError(
                "`intermediate_dim` must be a positive integer or `None`. "
                f"Received: intermediate_dim={intermediate_dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"`dropout` must be in [0, 1). Received: dropout={dropout}"
            )
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
        num_tasks, hidden_dim = inputs_shape[1], inputs_shape[2]
        if hidden_dim is None:
            raise ValueError(
                "The last axis of the input must be defined. "
                f"Received: inputs_shape={inputs_shape}"
            )
        if self.exclude_self and num_tasks is not None and num_tasks < 2:
            raise ValueError(
                "`exclude_self=True` needs at least two tasks. "
                f"Received: inputs_shape={inputs_shape}"
            )
        key_dim = self.key_dim or max(hidden_dim // self.num_heads, 1)
        self._self_attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.dropout,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self._self_attention.build(inputs_shape, inputs_shape, inputs_shape)
        self._attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        self._attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="attention_layer_norm",
        )
        self._attention_layer_norm.build(inputs_shape)
        if self.intermediate_dim is not None:
            self._intermediate_dense = keras.layers.Dense(
                self.intermediate_dim,
                activation=self.activation,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name="intermediate_dense",
            )
            self._intermediate_dense.build(inputs_shape)
            self._output_dense = keras.layers.Dense(
                hidden_dim,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name="output_dense",
            )
            self._output_dense.build(
                tuple(inputs_shape[:-1]) + (self.intermediate_dim,)
            )
            self._output_dropout = keras.layers.Dropout(
                self.dropout, dtype=self.dtype_policy, name="output_dropout"
            )
            self._output_layer_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="output_layer_norm",
            )
            self._output_layer_norm.build(inputs_shape)
        self.built = True

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
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "intermediate_dim": self.intermediate_dim,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "exclude_self": self.exclude_self,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
