import keras
from keras import ops

from keras_mtl.layers._common import add_weights
from keras_mtl.layers._common import check_positive_ints
from keras_mtl.layers._common import config_entries
from keras_mtl.layers._common import stacked_initializer


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskAdapter(keras.layers.Layer):
    """Per-task bottleneck adapters, chosen per example by task id.

    `y = x + act(x D_t + c_t) U_t + e_t` with `t = task_ids[b]`, so one batch
    may mix tasks; the up-projection starts at zero (the layer starts as the
    identity). Inputs of rank >= 2, `task_ids` of shape `[batch]`. The math,
    weight layout, masking and an example: docs/layers.md#taskadapter.

    Args:
        num_tasks: int. The number of tasks (adapters).
        bottleneck_dim: int. The hidden size of each adapter.
        activation: string or callable. The activation between the down- and
            up-projection. Defaults to `"gelu"`.
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the down-projection kernel, applied to each task's
            kernel separately. Defaults to `"glorot_uniform"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.
    """

    def __init__(
        self,
        num_tasks,
        bottleneck_dim,
        activation="gelu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(num_tasks=num_tasks, bottleneck_dim=bottleneck_dim)
        self.num_tasks = num_tasks
        self.bottleneck_dim = bottleneck_dim
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, inputs_shape, task_ids_shape=None):
        hidden_dim = inputs_shape[-1]
        if hidden_dim is None or len(inputs_shape) < 2:
            raise ValueError(
                "`TaskAdapter` expects inputs of shape [batch, ..., hidden_dim] "
                "with a defined last axis. "
                f"Received: inputs_shape={inputs_shape}"
            )
        num_tasks, bottleneck_dim = self.num_tasks, self.bottleneck_dim
        add_weights(
            self,
            [
                ("down_kernel", (num_tasks, hidden_dim, bottleneck_dim),
                 stacked_initializer(self.kernel_initializer, num_tasks)),
                ("down_bias", (num_tasks, bottleneck_dim), "zeros"),
                ("up_kernel", (num_tasks, bottleneck_dim, hidden_dim), "zeros"),
                ("up_bias", (num_tasks, hidden_dim), "zeros"),
            ],
        )
        self.built = True

    def call(self, inputs, task_ids):
        dtype = self.compute_dtype
        task_ids = ops.reshape(ops.cast(task_ids, "int32"), (-1,))
        # Each example's own task's adapter weights.
        down_kernel = ops.take(ops.cast(self.down_kernel, dtype), task_ids, 0)
        down_bias = ops.take(ops.cast(self.down_bias, dtype), task_ids, 0)
        up_kernel = ops.take(ops.cast(self.up_kernel, dtype), task_ids, 0)
        up_bias = ops.take(ops.cast(self.up_bias, dtype), task_ids, 0)

        # Flatten the positions: [batch, positions, hidden_dim].
        hidden_dim = inputs.shape[-1]
        flat = ops.reshape(inputs, (ops.shape(inputs)[0], -1, hidden_dim))
        hidden = ops.einsum("bpd,bdr->bpr", flat, down_kernel)
        hidden = self.activation(hidden + down_bias[:, None, :])
        delta = ops.einsum("bpr,brd->bpd", hidden, up_kernel)
        delta = delta + up_bias[:, None, :]
        return inputs + ops.reshape(delta, ops.shape(inputs))

    def compute_output_shape(self, inputs_shape, task_ids_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        return {
            **super().get_config(),
            **config_entries(self, "num_tasks", "bottleneck_dim", "activation", "kernel_initializer"),
        }
