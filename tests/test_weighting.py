"""Loss-weighting math: hand-worked cases on every backend."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import weighting as W


def _np(x):
    return None if x is None else ops.convert_to_numpy(x)


def _value_and_grad(fn, x0):
    """`fn(x0)` and its gradient w.r.t. `x0` with the active backend."""
    backend = keras.backend.backend()
    x0 = np.asarray(x0, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x0)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y.numpy(), tape.gradient(y, x).numpy()
    if backend == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(jax.numpy.asarray(x0))
        return np.asarray(y), np.asarray(g)
    if backend == "torch":
        import torch

        x = torch.tensor(x0, requires_grad=True)
        y = fn(x)
        y.backward()
        return y.detach().cpu().numpy(), x.grad.cpu().numpy()
    pytest.skip(f"no autodiff helper for backend {backend}")


def _compiled(fn):
    """`fn` compiled the way a train step would be on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


# --------------------------------------------------------------------------
# UncertaintyWeighting


def test_uncertainty_total_is_sum_of_losses_at_init():
    layer = W.UncertaintyWeighting(num_tasks=3)
    losses = np.array([0.5, 1.5, 2.0], dtype="float32")
    np.testing.assert_allclose(_np(layer(losses)), 4.0, rtol=1e-6)
    np.testing.assert_allclose(_np(layer.task_weights), np.ones(3), rtol=1e-6)
    assert len(layer.trainable_weights) == 1


def test_uncertainty_total_matches_formula_and_accepts_a_list():
    s = np.array([0.5, -1.0], dtype="float32")
    losses = np.array([2.0, 3.0], dtype="float32")
    layer = W.UncertaintyWeighting(num_tasks=2)
    layer.log_variances.assign(s)
    expected = np.exp(-0.5) * 2.0 + 0.5 + np.exp(1.0) * 3.0 - 1.0
    np.testing.assert_allclose(_np(layer(losses)), expected, rtol=1e-6)
    total = layer([ops.convert_to_tensor(2.0), ops.convert_to_tensor(3.0)])
    np.testing.assert_allclose(_np(total), expected, rtol=1e-6)
    np.testing.assert_allclose(_np(layer.task_weights), np.exp(-s), rtol=1e-6)


def test_uncertainty_gradient_wrt_log_variances():
    # d/ds_t [exp(-s_t) L_t + s_t] = 1 - exp(-s_t) L_t
    s = np.array([0.5, -1.0], dtype="float32")
    losses = np.array([2.0, 3.0], dtype="float32")
    layer = W.UncertaintyWeighting(num_tasks=2)
    layer(losses)

    def total(log_variances):
        outputs, _ = layer.stateless_call([log_variances], [], losses)
        return outputs

    value, grad = _value_and_grad(total, s)
    np.testing.assert_allclose(
        value, np.sum(np.exp(-s) * losses + s), rtol=1e-6
    )
    np.testing.assert_allclose(grad, 1.0 - np.exp(-s) * losses, rtol=1e-5)


def test_uncertainty_serialization_and_bad_argument():
    layer = W.UncertaintyWeighting(num_tasks=2, name="uw")
    config = layer.get_config()
    assert config["num_tasks"] == 2
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert isinstance(revived, W.UncertaintyWeighting)
    assert revived.get_config() == config
    with pytest.raises(ValueError, match="Received: num_tasks=0"):
        W.UncertaintyWeighting(num_tasks=0)


# --------------------------------------------------------------------------
# Dynamic Weight Average


def test_dwa_ones_for_the_first_two_epochs():
    np.testing.assert_array_equal(W.dwa_weights([], num_tasks=3), np.ones(3))
    np.testing.assert_array_equal(W.dwa_weights([[1.0, 2.0, 3.0]]), np.ones(3))


def test_dwa_hand_worked_history():
    # r = [0.5 / 1.0, 2.0 / 2.0] = [0.5, 1.0]; r / 2 = [0.25, 0.5]
    # w_0 = 2 e^0.25 / (e^0.25 + e^0.5) = 2 / (1 + 1.2840254) = 0.8756470
    history = [[9.0, 9.0], [1.0, 2.0], [0.5, 2.0]]  # only the last two count
    weights = W.dwa_weights(history, temperature=2.0)
    np.testing.assert_allclose(weights, [0.8756470, 1.1243530], rtol=1e-6)
    np.testing.assert_allclose(weights.sum(), 2.0)
    # Equal ratios give equal weights; a low temperature sharpens.
    np.testing.assert_allclose(W.dwa_weights([[2.0, 4.0], [1.0, 2.0]]), [1.0, 1.0])
    sharp = W.dwa_weights(history, temperature=0.1)
    assert sharp[1] > 1.98  # 2 / (1 + e^-5) = 1.9866


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_history": [[1.0]], "temperature": 0.0}, "temperature=0.0"),
        ({"loss_history": [[1.0, 2.0], [1.0]]}, "one loss per task"),
        ({"loss_history": []}, "num_tasks=None"),
        ({"loss_history": [[0.0, 1.0], [1.0, 1.0]]}, "positive, finite"),
    ],
)
def test_dwa_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        W.dwa_weights(**kwargs)


# --------------------------------------------------------------------------
# Random Loss Weighting


def test_rlw_weights_are_a_distribution_that_varies_with_the_seed():
    first = _np(W.random_loss_weights(4, seed=1))
    again = _np(W.random_loss_weights(4, seed=1))
    other = _np(W.random_loss_weights(4, seed=2))
    assert first.shape == (4,)
    assert np.all(first > 0.0)
    np.testing.assert_allclose(first.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(first, again)
    assert not np.allclose(first, other)

    generator = keras.random.SeedGenerator(3)
    a = _np(W.random_loss_weights(4, seed=generator))
    b = _np(W.random_loss_weights(4, seed=generator))
    np.testing.assert_allclose(a.sum(), 1.0, rtol=1e-6)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="Received: num_tasks=0"):
        W.random_loss_weights(0)


# --------------------------------------------------------------------------
# PCGrad


def _reference_pcgrad(vectors):
    """NumPy PCGrad with the ascending visiting order."""
    projected = []
    for i, g in enumerate(vectors):
        g = np.array(g, dtype="float64")
        for j, other in enumerate(vectors):
            if j == i:
                continue
            dot = g @ other
            if dot < 0:
                g = g - dot / (other @ other) * other
        projected.append(g)
    return np.sum(projected, axis=0)


def test_pcgrad_conflicting_gradients_hand_computed():
    # g1 . g2 = -1 < 0:
    # g1' = g1 - (-1 / 2) g2 = [0.5, 0.5];  g2' = g2 - (-1 / 1) g1 = [0, 1]
    g1 = np.array([1.0, 0.0], dtype="float32")
    g2 = np.array([-1.0, 1.0], dtype="float32")
    (combined,) = W.pcgrad([[g1], [g2]])
    np.testing.assert_allclose(_np(combined), [0.5, 1.5], rtol=1e-6)
    (mean,) = W.pcgrad([[g1], [g2]], reduction="mean")
    np.testing.assert_allclose(_np(mean), [0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize(
    "g2", [[1.0, 1.0], [0.0, 1.0]], ids=["agreeing", "orthogonal"]
)
def test_pcgrad_non_conflicting_gradients_pass_unchanged(g2):
    g1 = np.array([1.0, 0.0], dtype="float32")
    g2 = np.array(g2, dtype="float32")
    (combined,) = W.pcgrad([[g1], [g2]])
    np.testing.assert_allclose(_np(combined), g1 + g2, rtol=1e-6)


def test_pcgrad_multi_variable_structure_round_trips():
    rng = np.random.default_rng(0)
    shapes = [(2, 3), (4,)]
    grads = [
        [rng.normal(size=shape).astype("float32") for shape in shapes]
        for _ in range(3)
    ]
    # Make task 2 conflict with task 0 for sure.
    grads[2] = [-2.0 * g + 0.1 for g in grads[0]]
    combined = W.pcgrad(grads)
    assert [tuple(c.shape) for c in combined] == shapes
    vectors = [np.concatenate([g.reshape(-1) for g in task]) for task in grads]
    expected = _reference_pcgrad(vectors)
    got = np.concatenate([_np(c).reshape(-1) for c in combined])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Seeded shuffling is reproducible.
    a = W.pcgrad(grads, seed=3)
    b = W.pcgrad(grads, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(_np(x), _np(y))


def test_pcgrad_none_entries_are_zeros():
    g1 = [np.array([1.0, 0.0], "float32"), np.array([2.0], "float32"), None]
    g2 = [np.array([-1.0, 1.0], "float32"), None, None]
    combined = W.pcgrad([g1, g2])
    vectors = [np.array([1.0, 0.0, 2.0]), np.array([-1.0, 1.0, 0.0])]
    expected = _reference_pcgrad(vectors)
    np.testing.assert_allclose(_np(combined[0]), expected[:2], rtol=1e-6)
    np.testing.assert_allclose(_np(combined[1]), expected[2:], rtol=1e-6)
    assert combined[2] is None
    assert W.pcgrad([[None], [None]]) == [None]


def test_pcgrad_runs_compiled_and_keeps_dtype():
    g1 = np.array([[1.0, 0.0]], dtype="float32")
    g2 = np.array([[-1.0, 1.0]], dtype="float32")
    step = _compiled(lambda a, b: W.pcgrad([[a], [b]])[0])
    np.testing.assert_allclose(_np(step(g1, g2)), [[0.5, 1.5]], rtol=1e-6)
    (half,) = W.pcgrad([[ops.cast(g1, "bfloat16")], [ops.cast(g2, "bfloat16")]])
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    np.testing.assert_allclose(_np(ops.cast(half, "float32")), [[0.5, 1.5]])


def test_pcgrad_bad_arguments():
    with pytest.raises(ValueError, match="task_grads"):
        W.pcgrad([])
    with pytest.raises(ValueError, match="one gradient"):
        W.pcgrad([[np.ones(2)], [np.ones(2), np.ones(2)]])
    with pytest.raises(ValueError, match="reduction=max"):
        W.pcgrad([[np.ones(2)]], reduction="max")


# --------------------------------------------------------------------------
# GradNorm
#
# Hand case: w = [1, 1], norms n = [2, 4], ratios [1, 3].
#   G = w * n = [2, 4], mean(G) = 3, r = ratios / mean(ratios) = [0.5, 1.5]
#   alpha = 1: targets = 3 * [0.5, 1.5] = [1.5, 4.5], loss = 0.5 + 0.5 = 1
#   alpha = 2: targets = 3 * [0.25, 2.25] = [0.75, 6.75],
#              loss = 1.25 + 2.75 = 4, d loss / d w = sign(G - target) * n
#              = [2, -4]

WEIGHTS = np.array([1.0, 1.0], dtype="float32")
NORMS = np.array([2.0, 4.0], dtype="float32")
RATIOS = np.array([1.0, 3.0], dtype="float32")


def test_gradnorm_targets_and_loss_hand_case():
    np.testing.assert_allclose(
        _np(W.gradnorm_targets(WEIGHTS, NORMS, RATIOS, alpha=1.0)), [1.5, 4.5]
    )
    np.testing.assert_allclose(
        _np(W.gradnorm_loss(WEIGHTS, NORMS, RATIOS, alpha=1.0)), 1.0, rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(W.gradnorm_targets(WEIGHTS, NORMS, RATIOS, alpha=2.0)), [0.75, 6.75]
    )
    np.testing.assert_allclose(
        _np(W.gradnorm_loss(WEIGHTS, NORMS, RATIOS, alpha=2.0)), 4.0, rtol=1e-6
    )
    # Balanced case: ratios proportional to norms -> zero loss.
    np.testing.assert_allclose(
        _np(W.gradnorm_loss(WEIGHTS, [1.0, 3.0], [1.0, 3.0], alpha=1.0)),
        0.0,
        atol=1e-6,
    )


def test_gradnorm_loss_gradient_treats_targets_as_constants():
    value, grad = _value_and_grad(
        lambda w: W.gradnorm_loss(w, NORMS, RATIOS, alpha=2.0), WEIGHTS
    )
    np.testing.assert_allclose(value, 4.0, rtol=1e-6)
    np.testing.assert_allclose(grad, [2.0, -4.0], rtol=1e-6)


def test_gradnorm_weight_update_and_renormalisation():
    # w - 0.1 * [2, -4] = [0.8, 1.4] -> * 2 / 2.2 = [0.72727, 1.27273]
    new_weights, loss = W.gradnorm_weight_update(
        WEIGHTS, NORMS, RATIOS, alpha=2.0, learning_rate=0.1
    )
    np.testing.assert_allclose(_np(loss), 4.0, rtol=1e-6)
    np.testing.assert_allclose(
        _np(new_weights), [0.8 * 2 / 2.2, 1.4 * 2 / 2.2], rtol=1e-5
    )
    np.testing.assert_allclose(_np(ops.sum(new_weights)), 2.0, rtol=1e-6)
    # The floor keeps weights positive even for a huge step.
    floored, _ = W.gradnorm_weight_update(
        WEIGHTS, NORMS, RATIOS, alpha=2.0, learning_rate=10.0
    )
    assert np.all(_np(floored) > 0.0)
    np.testing.assert_allclose(
        _np(W.gradnorm_renormalize(np.array([1.0, 3.0], "float32"))), [0.5, 1.5]
    )
