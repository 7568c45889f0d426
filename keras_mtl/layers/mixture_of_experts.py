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

    `num_experts` feed-forward experts are shared by all tasks; each expert
    is `Dense(expert_dim, activation) -> Dense(hidden_dim)`. Every task `t`
    has its own softmax gate over experts computed from the input,
    `gate_t(x) = softmax(x W_t + b_t)`, and its output is the gated sum
    `y_t = sum_e gate_t(x)_e * expert_e(x)`.

    The experts are held as batched weights with a leading expert axis
    (`[num_experts, hidden_dim, expert_dim]` and
    `[num_experts, expert_dim, hidden_dim]`) and evaluated with one einsum,
    not a Python loop. The gates and experts are computed independently at
    every position, so the input may be `[batch, hidden_dim]` or
    `[batch, sequence_length, hidden_dim]` (any rank >= 2).

    Returns a list of `num_tasks` tensors, each with the input's shape.

    Masking: the layer works position by position; a Keras mask on the input
    is passed through to every task's output.

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

    Example:

    ```python
    import numpy as np
    from keras_mtl.layers.mixture_of_experts import MixtureOfExperts

    shared = np.random.normal(size=(2, 8)).astype("float32")
    moe = MixtureOfExperts(num_experts=4, num_tasks=3, expert_dim=16)
    task_inputs = moe(shared)  # list of 3 tensors of shape (2, 8)
    gates = moe.compute_gates(shared)  # shape (2, 3, 4), rows sum to 1
    ```

    References:
        - [Ma et al., 2018](https://dl.acm.org/doi/10.1145/3219819.3220007)
          (Modeling Task Relationships in Multi-task Learning with
          Multi-gate Mixture-of-Experts).
        - [Shazeer et al., 2017](https://arxiv.org/abs/1701.06538)
          (sparsely-gated mixture of experts).
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
