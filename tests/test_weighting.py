"""Loss-weighting strategies (keras_mtl.weighting): registry, and each
strategy's math on hand-worked cases, on every backend. Training with them:
tests/test_multitask_trainer.py."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import weighting
from keras_mtl.errors import ConfigError
from keras_mtl.weighting._base import LossWeighting, register
from keras_mtl.weighting.dwa import dwa_weights
from keras_mtl.weighting.gradnorm import gradnorm_step
from keras_mtl.weighting.pcgrad import pcgrad
from keras_mtl.weighting.rlw import random_loss_weights


def _np(x):
    return None if x is None else ops.convert_to_numpy(x)


def _t(*arrays):
    """float32 tensors of the active backend (strategies take tensors)."""
    tensors = [ops.convert_to_tensor(np.asarray(a, "float32")) for a in arrays]
    return tensors[0] if len(tensors) == 1 else tensors


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


def make(name, lambdas=(1.0, 1.0), **kwargs):
    tasks = [f"t{i}" for i in range(len(lambdas))]
    return weighting.get_loss_weighting(name, tasks, list(lambdas), **kwargs)


ONES = np.ones(2, "float32")


# --------------------------------------------------------------------------
# Registry


def test_names_come_from_the_modules_without_importing_keras():
    code = (
        "import sys; from keras_mtl import weighting; print(','.join(weighting.names())); "
        "print('keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["static,dwa,gradnorm,pcgrad,rlw,uncertainty", "False"]


def test_every_name_is_a_registered_strategy():
    for name in weighting.names():
        cls = weighting.get_class(name)
        assert issubclass(cls, LossWeighting) and cls.key == name
    needs = {n for n in weighting.names() if weighting.get_class(n).needs_task_gradients}
    assert needs == {"gradnorm", "pcgrad"}


def test_unknown_name_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="unknown loss weighting 'dwaa'; expected one of static, dwa"):
        weighting.get_class("dwaa")
    with pytest.raises(ConfigError, match="'gradnorm' has no option 'temperature'; its options: alpha, learning_rate, layer"):
        make("gradnorm", options={"temperature": 1.0})
    with pytest.raises(ConfigError, match="'static' has no option 'alpha'; its options: none"):
        make("static", options={"alpha": 1.0})


def test_register_requires_the_module_name():
    with pytest.raises(ValueError, match="must live in module keras_mtl.weighting.other"):
        register("other")(type("Other", (LossWeighting,), {}))


def test_removed_task_has_weight_zero_in_dynamic_strategies():
    for name in ("uncertainty", "dwa", "rlw", "gradnorm"):
        strategy = make(name, (1.0, 0.0, 2.0))
        weights = strategy.current_weights()
        assert weights[1] == 0.0 and all(w > 0 for w in (weights[0], weights[2])), (name, weights)
    with pytest.raises(ConfigError, match="pcgrad.*loss_weight 0.*t1"):
        make("pcgrad", (1.0, 0.0))


# --------------------------------------------------------------------------
# static


def test_static_total_is_the_lambda_weighted_sum():
    strategy = make("static", (0.5, 2.0))
    np.testing.assert_allclose(_np(strategy.total(*_t([3.0, 0.25], ONES))), 2.0, rtol=1e-6)
    assert strategy.current_weights() == [0.5, 2.0]


# --------------------------------------------------------------------------
# uncertainty


def test_uncertainty_total_is_sum_of_losses_at_init():
    strategy = make("uncertainty", (1.0, 1.0, 1.0))
    np.testing.assert_allclose(_np(strategy.total(*_t([0.5, 1.5, 2.0], np.ones(3)))), 4.0, rtol=1e-6)
    np.testing.assert_allclose(strategy.current_weights(), np.ones(3), rtol=1e-6)
    assert len(strategy.trainable_weights) == 1


def test_uncertainty_total_matches_formula_and_masks_absent_tasks():
    s = np.array([0.5, -1.0], dtype="float32")
    losses = np.array([2.0, 3.0], dtype="float32")
    strategy = make("uncertainty")
    strategy.log_variances.assign(s)
    expected = np.exp(-0.5) * 2.0 + 0.5 + np.exp(1.0) * 3.0 - 1.0
    np.testing.assert_allclose(_np(strategy.total(*_t(losses, ONES))), expected, rtol=1e-6)
    np.testing.assert_allclose(strategy.current_weights(), np.exp(-s), rtol=1e-6)
    # "batch": a task without labels in the batch has no term at all;
    # "expected": its term (loss 0, + s_t) stays in.
    absent = np.array([1.0, 0.0], "float32")
    np.testing.assert_allclose(_np(strategy.total(*_t(losses, absent))), np.exp(-0.5) * 2.0 + 0.5, rtol=1e-6)
    expected_norm = make("uncertainty", loss_normalizer="expected")
    expected_norm.log_variances.assign(s)
    np.testing.assert_allclose(
        _np(expected_norm.total(*_t([2.0, 0.0], absent))), np.exp(-0.5) * 2.0 + 0.5 - 1.0, rtol=1e-6
    )


def test_uncertainty_gradient_wrt_log_variances():
    # d/ds_t [exp(-s_t) L_t + s_t] = 1 - exp(-s_t) L_t
    s = np.array([0.5, -1.0], dtype="float32")
    losses = np.array([2.0, 3.0], dtype="float32")
    strategy = make("uncertainty")

    def total(log_variances):
        with keras.StatelessScope(state_mapping=[(strategy.log_variances, log_variances)]):
            return strategy.total(*_t(losses, ONES))

    value, grad = _value_and_grad(total, s)
    np.testing.assert_allclose(value, np.sum(np.exp(-s) * losses + s), rtol=1e-6)
    np.testing.assert_allclose(grad, 1.0 - np.exp(-s) * losses, rtol=1e-5)


# --------------------------------------------------------------------------
# Dynamic Weight Average


def test_dwa_ones_for_the_first_two_epochs():
    np.testing.assert_array_equal(dwa_weights([], num_tasks=3), np.ones(3))
    np.testing.assert_array_equal(dwa_weights([[1.0, 2.0, 3.0]]), np.ones(3))


def test_dwa_hand_worked_history():
    # r = [0.5 / 1.0, 2.0 / 2.0] = [0.5, 1.0]; r / 2 = [0.25, 0.5]
    # w_0 = 2 e^0.25 / (e^0.25 + e^0.5) = 2 / (1 + 1.2840254) = 0.8756470
    history = [[9.0, 9.0], [1.0, 2.0], [0.5, 2.0]]  # only the last two count
    weights = dwa_weights(history, temperature=2.0)
    np.testing.assert_allclose(weights, [0.8756470, 1.1243530], rtol=1e-6)
    np.testing.assert_allclose(weights.sum(), 2.0)
    # Equal ratios give equal weights; a low temperature sharpens.
    np.testing.assert_allclose(dwa_weights([[2.0, 4.0], [1.0, 2.0]]), [1.0, 1.0])
    sharp = dwa_weights(history, temperature=0.1)
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
        dwa_weights(**kwargs)


def test_dwa_strategy_sets_weights_at_epoch_end():
    strategy = make("dwa", (1.0, 0.0, 1.0), options={"temperature": 2.0})
    assert strategy.current_weights() == [1.0, 0.0, 1.0]
    strategy.end_epoch([[1.0, 5.0, 2.0]])  # one epoch: still ones
    assert strategy.current_weights() == [1.0, 0.0, 1.0]
    strategy.end_epoch([[1.0, 5.0, 2.0], [0.5, float("nan"), 2.0]])  # the removed task is ignored, stays 0
    np.testing.assert_allclose(strategy.current_weights(), [0.8756470, 0.0, 1.1243530], rtol=1e-6)
    strategy.end_epoch([[1.0, 5.0, 2.0], [0.5, 1.0, 2.0], [float("nan"), 1.0, 1.0]])  # unknown loss: unchanged
    np.testing.assert_allclose(strategy.current_weights(), [0.8756470, 0.0, 1.1243530], rtol=1e-6)


# --------------------------------------------------------------------------
# Random Loss Weighting


def test_rlw_weights_are_a_distribution_that_varies_with_the_seed():
    first = _np(random_loss_weights(4, seed=1))
    again = _np(random_loss_weights(4, seed=1))
    other = _np(random_loss_weights(4, seed=2))
    assert first.shape == (4,)
    assert np.all(first > 0.0)
    np.testing.assert_allclose(first.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(first, again)
    assert not np.allclose(first, other)

    generator = keras.random.SeedGenerator(3)
    a = _np(random_loss_weights(4, seed=generator))
    b = _np(random_loss_weights(4, seed=generator))
    np.testing.assert_allclose(a.sum(), 1.0, rtol=1e-6)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="Received: num_tasks=0"):
        random_loss_weights(0)


def test_rlw_strategy_draws_in_training_and_uses_the_mean_otherwise():
    strategy = make("rlw", (1.0, 0.0, 1.0), seed=5)
    losses, present = _t([1.0, 7.0, 3.0], np.ones(3))
    np.testing.assert_allclose(_np(strategy.total(losses, present, training=False)), 2.0, rtol=1e-6)
    drawn = [_np(strategy.task_weights(training=True)) for _ in range(2)]
    for w in drawn:
        assert w[1] == 0.0 and w[0] > 0 and w[2] > 0
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert not np.allclose(drawn[0], drawn[1])
    np.testing.assert_allclose(strategy.current_weights(), drawn[1], rtol=1e-6)  # the last draw


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
    (combined,) = pcgrad([[g1], [g2]])
    np.testing.assert_allclose(_np(combined), [0.5, 1.5], rtol=1e-6)
    (mean,) = pcgrad([[g1], [g2]], reduction="mean")
    np.testing.assert_allclose(_np(mean), [0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize("g2", [[1.0, 1.0], [0.0, 1.0]], ids=["agreeing", "orthogonal"])
def test_pcgrad_non_conflicting_gradients_pass_unchanged(g2):
    g1 = np.array([1.0, 0.0], dtype="float32")
    g2 = np.array(g2, dtype="float32")
    (combined,) = pcgrad([[g1], [g2]])
    np.testing.assert_allclose(_np(combined), g1 + g2, rtol=1e-6)


def test_pcgrad_multi_variable_structure_round_trips():
    rng = np.random.default_rng(0)
    shapes = [(2, 3), (4,)]
    grads = [[rng.normal(size=shape).astype("float32") for shape in shapes] for _ in range(3)]
    # Make task 2 conflict with task 0 for sure.
    grads[2] = [-2.0 * g + 0.1 for g in grads[0]]
    combined = pcgrad(grads)
    assert [tuple(c.shape) for c in combined] == shapes
    vectors = [np.concatenate([g.reshape(-1) for g in task]) for task in grads]
    expected = _reference_pcgrad(vectors)
    got = np.concatenate([_np(c).reshape(-1) for c in combined])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Seeded shuffling is reproducible.
    a = pcgrad(grads, seed=3)
    b = pcgrad(grads, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(_np(x), _np(y))


def test_pcgrad_none_entries_are_zeros():
    g1 = [np.array([1.0, 0.0], "float32"), np.array([2.0], "float32"), None]
    g2 = [np.array([-1.0, 1.0], "float32"), None, None]
    combined = pcgrad([g1, g2])
    vectors = [np.array([1.0, 0.0, 2.0]), np.array([-1.0, 1.0, 0.0])]
    expected = _reference_pcgrad(vectors)
    np.testing.assert_allclose(_np(combined[0]), expected[:2], rtol=1e-6)
    np.testing.assert_allclose(_np(combined[1]), expected[2:], rtol=1e-6)
    assert combined[2] is None
    assert pcgrad([[None], [None]]) == [None]


def test_pcgrad_runs_compiled_and_keeps_dtype():
    g1 = np.array([[1.0, 0.0]], dtype="float32")
    g2 = np.array([[-1.0, 1.0]], dtype="float32")
    step = _compiled(lambda a, b: pcgrad([[a], [b]])[0])
    np.testing.assert_allclose(_np(step(g1, g2)), [[0.5, 1.5]], rtol=1e-6)
    (half,) = pcgrad([[ops.cast(g1, "bfloat16")], [ops.cast(g2, "bfloat16")]])
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    np.testing.assert_allclose(_np(ops.cast(half, "float32")), [[0.5, 1.5]])


def test_pcgrad_bad_arguments():
    with pytest.raises(ValueError, match="task_grads"):
        pcgrad([])
    with pytest.raises(ValueError, match="one gradient"):
        pcgrad([[np.ones(2)], [np.ones(2), np.ones(2)]])
    with pytest.raises(ValueError, match="reduction=max"):
        pcgrad([[np.ones(2)]], reduction="max")


class _FakeGradients:
    """A `TaskGradients` with fixed per-task gradients of one 2-vector variable."""

    variables = ["w"]

    def __init__(self, task_grads, reg=None):
        self._task, self._reg = task_grads, reg

    def task(self, t, factor=1.0):
        return [np.asarray(self._task[t], "float32") * factor]

    def regularization(self):
        return None if self._reg is None else [np.asarray(self._reg, "float32")]


def test_pcgrad_strategy_projects_the_lambda_scaled_gradients_then_adds_regularization():
    strategy = make("pcgrad", (1.0, 2.0))
    g1, g2 = np.array([1.0, 0.0]), np.array([-0.5, 0.5])  # 2 * g2 = [-1, 1]: the hand case above
    (combined,) = strategy.combine_gradients(_FakeGradients([g1, g2]), None, None)
    np.testing.assert_allclose(_np(combined), [0.5, 1.5], rtol=1e-6)
    (with_reg,) = strategy.combine_gradients(_FakeGradients([g1, g2], reg=[1.0, -1.0]), None, None)
    np.testing.assert_allclose(_np(with_reg), [1.5, 0.5], rtol=1e-6)


# --------------------------------------------------------------------------
# GradNorm
#
# Hand case: w = [1, 1], norms n = [2, 4], loss ratios [1, 3].
#   G = w * n = [2, 4], mean(G) = 3, r = ratios / mean(ratios) = [0.5, 1.5]
#   alpha = 2: targets = 3 * [0.25, 2.25] = [0.75, 6.75],
#              d L_grad / d w = sign(G - target) * n = [2, -4]
#   lr = 0.1:  w - 0.1 * [2, -4] = [0.8, 1.4] -> * 2 / 2.2 = [0.72727, 1.27273]

WEIGHTS = np.array([1.0, 1.0], dtype="float32")
NORMS = np.array([2.0, 4.0], dtype="float32")
LOSSES = np.array([1.0, 3.0], dtype="float32")  # with initial losses 1: the ratios


def _step(weights=WEIGHTS, initial=ONES, losses=LOSSES, norms=NORMS, mask=ONES, **kwargs):
    return gradnorm_step(*_t(weights, initial, losses, norms, mask), **kwargs)


def test_gradnorm_step_hand_case():
    new_weights, initial = _step(alpha=2.0, learning_rate=0.1)
    np.testing.assert_allclose(_np(new_weights), [0.8 * 2 / 2.2, 1.4 * 2 / 2.2], rtol=1e-5)
    np.testing.assert_allclose(_np(ops.sum(new_weights)), 2.0, rtol=1e-6)
    np.testing.assert_allclose(_np(initial), [1.0, 1.0])
    # The floor keeps weights positive even for a huge step.
    floored, _ = _step(alpha=2.0, learning_rate=10.0)
    assert np.all(_np(floored) > 0.0)
    # Balanced case: ratios proportional to the norms -> no change.
    same, _ = _step(losses=np.array([1.0, 3.0], "float32"), norms=np.array([1.0, 3.0], "float32"), alpha=1.0)
    np.testing.assert_allclose(_np(same), [1.0, 1.0], rtol=1e-6)


def test_gradnorm_step_is_a_gradient_step_on_the_gradnorm_objective():
    # L_grad(w) = sum_t |w_t n_t - target_t|, targets held constant.
    def objective(w):
        g = ops.multiply(w, _t(NORMS))
        ratios = _t(LOSSES / np.mean(LOSSES))
        targets = ops.stop_gradient(ops.mean(g) * ratios**2.0)
        return ops.sum(ops.abs(g - targets))

    value, grad = _value_and_grad(objective, WEIGHTS)
    np.testing.assert_allclose(value, 4.0, rtol=1e-6)  # |2 - 0.75| + |4 - 6.75|
    descended = WEIGHTS - 0.1 * grad
    new_weights, _ = _step(alpha=2.0, learning_rate=0.1)
    np.testing.assert_allclose(_np(new_weights), descended * 2 / descended.sum(), rtol=1e-5)


def test_gradnorm_step_masks_absent_and_removed_tasks_and_skips_non_finite():
    # Task 1 absent: its norm counts as 0, its initial loss stays unknown,
    # and its weight changes only through the renormalisation.
    weights, initial = _step(initial=np.zeros(2, "float32"), mask=np.array([1.0, 0.0], "float32"))
    np.testing.assert_allclose(_np(initial), [1.0, 0.0])
    np.testing.assert_allclose(_np(ops.sum(weights)), 2.0, rtol=1e-6)
    # A removed task (active 0) keeps weight 0; the others sum to their count.
    three = np.ones(3, "float32")
    weights, _ = gradnorm_step(
        *_t(three, three, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]), active=np.array([1.0, 1.0, 0.0], "float32")
    )
    assert _np(weights)[2] == 0.0
    np.testing.assert_allclose(_np(ops.sum(weights)), 2.0, rtol=1e-6)
    # Non-finite norms: nothing changes.
    weights, initial = _step(norms=np.array([np.inf, 1.0], "float32"))
    np.testing.assert_allclose(_np(weights), WEIGHTS)
    np.testing.assert_allclose(_np(initial), ONES)


def _network(backbone=None, **model):
    """The keras-mtl network of two tasks (a classification, a tagging task) with `model` options."""
    from unittest import mock

    from keras_mtl import pretrained
    from keras_mtl.config import config_from_dict
    from keras_mtl.model import build_network

    sizes = {"vocabulary_size": 40, "hidden_dim": 8, "num_layers": 2, "num_heads": 2, "intermediate_dim": 16}
    raw = {
        "name": "gradnorm-layer",
        "tasks": [
            {"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 4}},
            {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 4}},
        ],
        "model": {"max_sequence_length": 16, **({"preset": "tiny"} if backbone is not None else sizes), **model},
    }
    config = config_from_dict(raw).config
    with mock.patch.object(pretrained, "load_backbone", lambda model_cfg: backbone):
        return build_network(config, {"topic": ["a", "b"], "pos": ["D", "N"]}, [f"piece{i}" for i in range(40)])


@pytest.mark.parametrize("model, expected", [
    ({"task_conditioning": "none"}, "encoder_1"),  # the last transformer layer of the shared encoder
    ({"task_conditioning": "embedding", "adapter_dim": 4}, "adapter_1"),  # ... or the adapter after it
    ({"task_conditioning": "none", "num_experts": 2}, "experts"),
    ({"task_conditioning": "token", "num_layers": 0}, "embedding_norm"),
])
def test_gradnorm_takes_the_last_shared_layer_inside_the_shared_encoder(model, expected):
    from keras_mtl.weighting.gradnorm import last_shared_layer

    network = _network(**model)
    layer = last_shared_layer(network, ["topic", "pos"])
    assert layer.name == expected and layer.trainable_variables
    inner = network.get_layer("shared_encoder").embedding  # a name inside the shared encoder picks that layer
    assert last_shared_layer(network, ["topic", "pos"], "embedding") is inner


@pytest.mark.parametrize("model, expected", [
    ({"task_conditioning": "none"}, "backbone"),  # called as a whole: the backbone, as before
    ({"task_conditioning": "embedding"}, "transformer_layer_1"),  # rebuilt: its last transformer layer
])
def test_gradnorm_last_shared_layer_of_a_preset(model, expected):
    import keras_hub

    from keras_mtl.weighting.gradnorm import last_shared_layer

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=32)
    layer = last_shared_layer(_network(backbone, **model), ["topic", "pos"])
    assert (layer is backbone) if expected == "backbone" else (layer.name == expected)
