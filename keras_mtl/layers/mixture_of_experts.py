import keras
from keras import ops

from keras_mtl.layers._common import add_weights
from keras_mtl.layers._common import check_positive_ints
from keras_mtl.layers._common import config_entries
from keras_mtl.layers._common import last_axis
from keras_mtl.layers._common import stacked_initializer


def _flatten(inputs):
    """`[..., d]` -> (`[N, d]`, the leading shape).

    The expert and gate einsums run on the flattened positions: with an
    ellipsis that only one operand has (`"...d,edh->...eh"`), TensorFlow's
    einsum gradient materializes the broadcast product (`[..., e, d, h]`:
    1 GB for a [32, 16, 256] batch and 4 experts of 512), which made MMoE
    training run out of memory."""
    lead = ops.shape(inputs)[:-1]
    return ops.reshape(inputs, (-1, inputs.shape[-1])), lead


@keras.saving.register_keras_serializable(package="keras_mtl")
class MixtureOfExperts(keras.layers.Layer):
    """Multi-gate mixture of experts (MMoE) with one gate per task.

    `num_experts` feed-forward experts are shared by all tasks; task `t`'s
    output is `sum_e softmax(x W_t + b_t)_e * expert_e(x)`, computed at every
    position of an input of rank >= 2. Returns a list of `num_tasks` tensors,
    each with the input's shape. The math, weight layout, masking and an
    example: docs/layers.md#mixtureofexperts.

    Args:
        num_experts: int. The number of shared experts.
        num_tasks: int. The number of tasks (gates, outputs).
        expert_dim: int. The hidden size of each expert's feed-forward
            network.
        activation: string or callable. The activation inside each expert.
            Defaults to `"gelu"`.
        kernel_initializer: string or `keras.initializers` initializer. The
            initializer of the expert and gate kernels, applied to each
            expert's / each task's kernel separately. Defaults to
            `"glorot_uniform"`.
        bias_initializer: string or `keras.initializers` initializer. The
            initializer of the expert and gate biases. Defaults to
            `"zeros"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.
    """

    def __init__(
        self,
        num_experts,
        num_tasks,
        expert_dim,
        activation="gelu",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_ints(num_experts=num_experts, num_tasks=num_tasks, expert_dim=expert_dim)
        self.num_experts = num_experts
        self.num_tasks = num_tasks
        self.expert_dim = expert_dim
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        hidden_dim = last_axis(inputs_shape, "the input to `MixtureOfExperts`")
        num_experts, expert_dim, num_tasks = self.num_experts, self.expert_dim, self.num_tasks
        experts_init = stacked_initializer(self.kernel_initializer, num_experts)
        add_weights(
            self,
            [
                ("expert_kernel_1", (num_experts, hidden_dim, expert_dim), experts_init),
                ("expert_bias_1", (num_experts, expert_dim), self.bias_initializer),
                ("expert_kernel_2", (num_experts, expert_dim, hidden_dim), experts_init),
                ("expert_bias_2", (num_experts, hidden_dim), self.bias_initializer),
                ("gate_kernel", (num_tasks, hidden_dim, num_experts),
                 stacked_initializer(self.kernel_initializer, num_tasks)),
                ("gate_bias", (num_tasks, num_experts), self.bias_initializer),
            ],
        )
        self.built = True

    def _in_compute_dtype(self, inputs, *weights):
        """`inputs` and the weights named `weights`, cast to the compute dtype (building the layer if needed)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        return [ops.cast(x, self.compute_dtype) for x in (inputs, *(getattr(self, w) for w in weights))]

    def compute_gates(self, inputs):
        """Gate probabilities, shape `[..., num_tasks, num_experts]`.

        `compute_gates(x)[..., t, :]` is task `t`'s softmax distribution over
        the experts (sums to 1).
        """
        inputs, gate_kernel, gate_bias = self._in_compute_dtype(inputs, "gate_kernel", "gate_bias")
        flat, lead = _flatten(inputs)
        logits = ops.einsum("nd,tde->nte", flat, gate_kernel)
        return ops.reshape(ops.softmax(logits + gate_bias, axis=-1), (*lead, self.num_tasks, self.num_experts))

    def compute_experts(self, inputs):
        """Every expert's output, shape `[..., num_experts, hidden_dim]`."""
        inputs, kernel_1, bias_1, kernel_2, bias_2 = self._in_compute_dtype(
            inputs, "expert_kernel_1", "expert_bias_1", "expert_kernel_2", "expert_bias_2"
        )
        flat, lead = _flatten(inputs)
        hidden = ops.einsum("nd,edh->neh", flat, kernel_1) + bias_1
        hidden = self.activation(hidden)
        out = ops.einsum("neh,ehd->ned", hidden, kernel_2) + bias_2
        return ops.reshape(out, (*lead, self.num_experts, out.shape[-1]))

    def call(self, inputs):
        gates = self.compute_gates(inputs)  # [..., T, E]
        experts = self.compute_experts(inputs)  # [..., E, d]
        outputs = ops.matmul(gates, experts)  # [..., T, E] @ [..., E, d]
        return ops.unstack(outputs, num=self.num_tasks, axis=-2)

    def compute_mask(self, inputs, previous_mask=None):
        if previous_mask is None:
            return None
        return [previous_mask] * self.num_tasks

    def compute_output_shape(self, inputs_shape):
        return [tuple(inputs_shape)] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            **config_entries(
                self, "num_experts", "num_tasks", "expert_dim", "activation", "kernel_initializer", "bias_initializer"
            ),
        }
