import keras
from keras import ops


def _slice_initializer(initializer, index):
    """A copy of `initializer` that draws different values for slice `index`.

    Keras initializers seeded with an int (or unseeded, which means a fixed
    default int seed) return the same values on every call, which would make
    all experts (or all tasks' adapters) identical. Offsetting the seed by the
    slice index keeps the initialization reproducible yet different per
    slice.
    """
    seed = getattr(initializer, "seed", None)
    if isinstance(seed, int) and not isinstance(seed, bool):
        config = initializer.get_config()
        config["seed"] = seed + index
        return initializer.__class__.from_config(config)
    return initializer


def _stacked_initializer(initializer, num_slices):
    """Initializer for a `[num_slices, *shape]` weight, one slice at a time.

    Each slice is initialized as if it were its own `shape` weight, so fan-in
    based initializers (`"glorot_uniform"`, `"he_normal"`, ...) get the fans
    of one expert / one task instead of fans inflated by `num_slices`.
    """
    initializer = keras.initializers.get(initializer)

    def initialize(shape, dtype=None):
        slices = [
            _slice_initializer(initializer, i)(tuple(shape[1:]), dtype=dtype)
            for i in range(num_slices)
        ]
        return ops.stack(slices, axis=0)

    return initialize


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
        for arg_name, value in [
            ("num_experts", num_experts),
            ("num_tasks", num_tasks),
            ("expert_dim", expert_dim),
        ]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{arg_name}` must be a positive integer. "
                    f"Received: {arg_name}={value}"
                )
        self.num_experts = num_experts
        self.num_tasks = num_tasks
        self.expert_dim = expert_dim
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        if hidden_dim is None:
            raise ValueError(
                "The last axis of the input to `MixtureOfExperts` must be "
                f"defined. Received: inputs_shape={inputs_shape}"
            )
        num_experts, expert_dim = self.num_experts, self.expert_dim
        self.expert_kernel_1 = self.add_weight(
            name="expert_kernel_1",
            shape=(num_experts, hidden_dim, expert_dim),
            initializer=_stacked_initializer(
                self.kernel_initializer, num_experts
            ),
        )
        self.expert_bias_1 = self.add_weight(
            name="expert_bias_1",
            shape=(num_experts, expert_dim),
            initializer=self.bias_initializer,
        )
        self.expert_kernel_2 = self.add_weight(
            name="expert_kernel_2",
            shape=(num_experts, expert_dim, hidden_dim),
            initializer=_stacked_initializer(
                self.kernel_initializer, num_experts
            ),
        )
        self.expert_bias_2 = self.add_weight(
            name="expert_bias_2",
            shape=(num_experts, hidden_dim),
            initializer=self.bias_initializer,
        )
        self.gate_kernel = self.add_weight(
            name="gate_kernel",
            shape=(self.num_tasks, hidden_dim, num_experts),
            initializer=_stacked_initializer(
                self.kernel_initializer, self.num_tasks
            ),
        )
        self.gate_bias = self.add_weight(
            name="gate_bias",
            shape=(self.num_tasks, num_experts),
            initializer=self.bias_initializer,
        )
        self.built = True

    def compute_gates(self, inputs):
        """Gate probabilities, shape `[..., num_tasks, num_experts]`.

        `compute_gates(x)[..., t, :]` is task `t`'s softmax distribution over
        the experts (sums to 1).
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = ops.cast(inputs, self.compute_dtype)
        gate_kernel = ops.cast(self.gate_kernel, self.compute_dtype)
        gate_bias = ops.cast(self.gate_bias, self.compute_dtype)
        flat, lead = _flatten(inputs)
        logits = ops.einsum("nd,tde->nte", flat, gate_kernel)
        return ops.reshape(ops.softmax(logits + gate_bias, axis=-1), (*lead, self.num_tasks, self.num_experts))

    def compute_experts(self, inputs):
        """Every expert's output, shape `[..., num_experts, hidden_dim]`."""
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = ops.cast(inputs, self.compute_dtype)
        kernel_1 = ops.cast(self.expert_kernel_1, self.compute_dtype)
        bias_1 = ops.cast(self.expert_bias_1, self.compute_dtype)
        kernel_2 = ops.cast(self.expert_kernel_2, self.compute_dtype)
        bias_2 = ops.cast(self.expert_bias_2, self.compute_dtype)
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
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "num_tasks": self.num_tasks,
                "expert_dim": self.expert_dim,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config
