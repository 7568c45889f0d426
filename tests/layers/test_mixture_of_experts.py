import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.mixture_of_experts import MixtureOfExperts
from keras_mtl.testing import run_layer_test


def _inputs(shape=(2, 5, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_layer_basics():
    run_layer_test(
        MixtureOfExperts,
        init_kwargs={"num_experts": 3, "num_tasks": 2, "expert_dim": 4},
        input_data=_inputs(),
        expected_output_shape=[(2, 5, 8), (2, 5, 8)],
        # two expert kernels + biases, gate kernel + bias.
        expected_num_trainable_weights=6,
    )


def test_gates_sum_to_one_per_task():
    layer = MixtureOfExperts(num_experts=3, num_tasks=2, expert_dim=4)
    inputs = 5.0 * _inputs()
    layer(inputs)
    gates = ops.convert_to_numpy(layer.compute_gates(inputs))
    assert gates.shape == (2, 5, 2, 3)
    assert np.all(gates >= 0.0)
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, rtol=1e-5)
    # Different tasks have different gates.
    assert not np.allclose(gates[..., 0, :], gates[..., 1, :])


def test_pooled_input_matches_reference_computation():
    layer = MixtureOfExperts(
        num_experts=3, num_tasks=2, expert_dim=4, activation="relu",
        bias_initializer="random_normal",
    )
    inputs = _inputs((2, 8))
    outputs = layer(inputs)
    assert isinstance(outputs, (list, tuple)) and len(outputs) == 2
    assert all(tuple(out.shape) == (2, 8) for out in outputs)
    outputs = [ops.convert_to_numpy(out) for out in outputs]
    w1, b1, w2, b2, wg, bg = [
        ops.convert_to_numpy(w)
        for w in [
            layer.expert_kernel_1, layer.expert_bias_1,
            layer.expert_kernel_2, layer.expert_bias_2,
            layer.gate_kernel, layer.gate_bias,
        ]
    ]
    experts = np.stack(
        [np.maximum(inputs @ w1[e] + b1[e], 0.0) @ w2[e] + b2[e] for e in range(3)],
        axis=1,
    )  # [batch, experts, hidden]
    for t in range(2):
        logits = inputs @ wg[t] + bg[t]
        gates = np.exp(logits - logits.max(-1, keepdims=True))
        gates /= gates.sum(-1, keepdims=True)
        expected = np.einsum("be,bed->bd", gates, experts)
        np.testing.assert_allclose(outputs[t], expected, rtol=1e-4, atol=1e-5)


def test_experts_start_different_and_seeded_init_is_reproducible():
    init = keras.initializers.GlorotUniform(seed=7)
    first = MixtureOfExperts(3, 2, 4, kernel_initializer=init)
    second = MixtureOfExperts(3, 2, 4, kernel_initializer=init)
    first.build((None, 8))
    second.build((None, 8))
    kernel = ops.convert_to_numpy(first.expert_kernel_1)
    assert not np.allclose(kernel[0], kernel[1])
    np.testing.assert_allclose(
        kernel, ops.convert_to_numpy(second.expert_kernel_1)
    )
    # Per-expert Glorot limit: sqrt(6 / (8 + 4)).
    assert np.abs(kernel).max() <= np.sqrt(6.0 / 12.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0, "num_tasks": 2, "expert_dim": 4}, "Received: num_experts=0"),
        ({"num_experts": 2, "num_tasks": 0, "expert_dim": 4}, "Received: num_tasks=0"),
        ({"num_experts": 2, "num_tasks": 2, "expert_dim": -3}, "Received: expert_dim=-3"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixtureOfExperts(**kwargs)


GRADIENT_MEMORY_SCRIPT = """
import os, resource, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, tensorflow as tf
from keras_mtl.layers.mixture_of_experts import MixtureOfExperts
layer = MixtureOfExperts(num_experts=4, num_tasks=4, expert_dim=512)
x = tf.constant(np.random.default_rng(0).normal(size=(32, 16, 256)).astype("float32"))
layer(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tf.GradientTape() as tape:
    loss = tf.add_n([tf.reduce_sum(y) for y in layer(x)])
grads = tape.gradient(loss, layer.trainable_weights)
assert all(g is not None for g in grads)
print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_gradient_does_not_materialize_the_broadcast_product():
    """A [32, 16, 256] batch, 4 experts of 512: the gradient must not build
    the [..., experts, d, h] product (about 1 GB; with the ellipsis einsums
    MMoE ran a 24 GB machine out of memory on glue_conll). Measured after
    the fix: tens of MB."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", GRADIENT_MEMORY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = int([l for l in proc.stdout.splitlines() if l.startswith("GROWTH_MB")][-1].split()[1])
    assert growth < 400, f"the MMoE gradient grew the process by {growth} MB"
