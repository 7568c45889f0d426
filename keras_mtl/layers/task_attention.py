import keras
from keras import ops

from keras_mtl.layers._common import check_dropout
from keras_mtl.layers._common import check_positive_ints
from keras_mtl.layers._common import config_entries
from keras_mtl.layers._common import last_axis
from keras_mtl.layers._common import multi_head_attention


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskAttentionPooling(keras.layers.Layer):
    """Per-task attention pooling of token states into one vector.

    A learned query (one per layer instance, so one per task) attends over
    `sequence` `[batch, sequence_length, hidden_dim]` with multi-head
    attention; the output is `[batch, hidden_dim]`. Padded positions
    (`padding_mask`, else the Keras mask) get no weight. Masking details and
    an example: docs/layers.md#taskattentionpooling.

    Args:
        num_heads: int. The number of attention heads.
        key_dim: int. The size of each attention head for query and key.
            Defaults to `None`, meaning `hidden_dim // num_heads`.
        dropout: float. Dropout rate of the attention probabilities.
            Defaults to `0.0`.
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the attention projections. Defaults to
            `"glorot_uniform"`.
        query_initializer: string or `keras.initializers` initializer. The
            initializer of the learned query vector. Defaults to
            `"glorot_uniform"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        query_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(num_heads=num_heads)
        check_positive_ints(optional=True, key_dim=key_dim)
        check_dropout(dropout)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.query_initializer = keras.initializers.get(query_initializer)

    def build(self, sequence_shape, padding_mask_shape=None):
        hidden_dim = last_axis(sequence_shape, "`sequence`", "sequence_shape")
        key_dim = self.key_dim
        if key_dim is None:
            key_dim = hidden_dim // self.num_heads
            if key_dim < 1:
                raise ValueError(
                    "`hidden_dim // num_heads` must be at least 1 when "
                    "`key_dim` is not given. Received: "
                    f"hidden_dim={hidden_dim}, num_heads={self.num_heads}"
                )
        self.query = self.add_weight(
            name="query",
            shape=(hidden_dim,),
            initializer=self.query_initializer,
            trainable=True,
        )
        self._attention = multi_head_attention(self, key_dim, "attention")
        query_shape = (sequence_shape[0], 1, hidden_dim)
        self._attention.build(query_shape, sequence_shape, sequence_shape)
        self.built = True

    def call(self, sequence, padding_mask=None, mask=None, training=None):
        if padding_mask is None:
            padding_mask = mask
        batch_size = ops.shape(sequence)[0]
        hidden_dim = ops.shape(sequence)[-1]
        query = ops.cast(self.query, sequence.dtype)
        query = ops.broadcast_to(
            ops.reshape(query, (1, 1, -1)), (batch_size, 1, hidden_dim)
        )
        attention_mask = None
        if padding_mask is not None:
            # [batch, seq] -> [batch, 1 (query), seq].
            attention_mask = ops.expand_dims(
                ops.cast(padding_mask, "bool"), axis=1
            )
        # `MultiHeadAttention` clears the Keras mask of the tensors it gets;
        # hand it a copy so the caller's `sequence` keeps its mask (several
        # per-task poolings usually read the same sequence).
        sequence = ops.copy(sequence)
        pooled = self._attention(
            query,
            sequence,
            sequence,
            attention_mask=attention_mask,
            training=training,
        )
        return ops.squeeze(pooled, axis=1)

    def compute_mask(self, sequence, previous_mask=None):
        return None

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            **config_entries(self, "num_heads", "key_dim", "dropout", "kernel_initializer", "query_initializer"),
        }
