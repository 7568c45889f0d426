"""MultiTaskTrainer: per-task losses and metrics, every loss weighting.

Runs on the active backend (KERAS_BACKEND): the suite is run once per
backend. Tiny Dense networks on random data.
"""

import math
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_mtl.errors import ConfigError
from keras_mtl.weighting.dwa import dwa_weights
from keras_mtl.weighting.pcgrad import pcgrad
from keras_mtl.multitask_trainer import LossWeightLogger, MultiTaskTrainer, check_weighting_supported

BACKEND = keras.backend.backend()
GRADIENT_BACKENDS = ("tensorflow", "jax")
needs_task_grads = pytest.mark.skipif(
    BACKEND not in GRADIENT_BACKENDS, reason="per-task gradients: tensorflow and jax only"
)
TASKS = ["a", "b"]


def toy_network(seed=0):
    """features [B, 4] -> shared Dense -> a: 3-way softmax, b: regression."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(8, activation="tanh", name="shared")(inputs)
    a = keras.layers.Dense(3, activation="softmax", name="a")(h)
    b = keras.layers.Reshape((), name="b")(keras.layers.Dense(1, name="b_value")(h))
    return keras.Model(inputs, {"a": a, "b": b})


def toy_losses():
    return {
        "a": keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
        "b": keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
    }


def toy_batch(n=8, seed=0, weight_a=None, weight_b=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {"a": rng.integers(0, 3, n).astype("int32"), "b": rng.normal(size=n).astype("float32")}
    sw = {
        "a": np.ones(n, "float32") if weight_a is None else np.asarray(weight_a, "float32"),
        "b": np.ones(n, "float32") if weight_b is None else np.asarray(weight_b, "float32"),
    }
    return x, y, sw


def dataset(batches):
    """A tf.data pipeline yielding the given (x, y, sw) batches in order."""
    x = np.concatenate([b[0] for b in batches])
    y = {t: np.concatenate([b[1][t] for b in batches]) for t in TASKS}
    sw = {t: np.concatenate([b[2][t] for b in batches]) for t in TASKS}
    return tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(len(batches[0][0]))


def make_trainer(weighting="static", loss_weights=None, optimizer=None, jit_compile="auto", network=None, **kwargs):
    trainer = MultiTaskTrainer(
        network or toy_network(),
        TASKS,
        toy_losses(),
        loss_weights or {"a": 1.0, "b": 1.0},
        weighting=weighting,
        **kwargs,
    )
    trainer.compile(optimizer=optimizer or keras.optimizers.SGD(0.0), jit_compile=jit_compile)
    return trainer


def hand_losses(network, batch):
    """Per-task losses in NumPy: weighted means over the labelled examples."""
    x, y, sw = batch
    pred = {k: ops.convert_to_numpy(v) for k, v in network(x).items()}
    ce = -np.log(np.clip(pred["a"][np.arange(len(x)), y["a"]], 1e-7, 1.0))
    se = (pred["b"] - y["b"]) ** 2

    def mean(values, weights):
        return float(np.sum(values * weights) / np.sum(weights)) if np.sum(weights) > 0 else 0.0

    return {"a": mean(ce, sw["a"]), "b": mean(se, sw["b"])}


class BatchLogs(keras.callbacks.Callback):
    def __init__(self, trainer=None):
        super().__init__()
        self.trainer = trainer
        self.logs = []
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})
        if self.trainer is not None:
            self.weights.append(self.trainer.current_weights())


# === static ===


def test_static_total_is_weighted_sum_of_task_losses():
    trainer = make_trainer("static", {"a": 0.3, "b": 2.0})
    batch = toy_batch(8, weight_b=[1, 0, 1, 1, 0, 1, 1, 1])
    expected = hand_losses(trainer.network, batch)
    total = 0.3 * expected["a"] + 2.0 * expected["b"]
    x, y, sw = batch
    loss = trainer.compute_loss(x, y, trainer(x), sw, training=True)
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), total, rtol=1e-5)
    # One training step with a zero learning rate logs the same numbers.
    history = trainer.fit(dataset([batch]), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], total, rtol=1e-5)
    np.testing.assert_allclose(history.history["a_loss"][0], expected["a"], rtol=1e-5)
    np.testing.assert_allclose(history.history["b_loss"][0], expected["b"], rtol=1e-5)
    assert set(history.history) == {"loss", "a_loss", "b_loss"}
    assert trainer.current_weights() == {"a": 0.3, "b": 2.0}


def test_task_loss_metric_skips_steps_without_labels():
    trainer = make_trainer("static")
    first = toy_batch(8, seed=1, weight_b=np.zeros(8))  # task b has no labels
    second = toy_batch(8, seed=2)
    one, two = hand_losses(trainer.network, first), hand_losses(trainer.network, second)
    recorder = BatchLogs()
    history = trainer.fit(dataset([first, second]), epochs=1, verbose=0, callbacks=[recorder])
    assert one["b"] == 0.0
    np.testing.assert_allclose(history.history["b_loss"][0], two["b"], rtol=1e-5)
    np.testing.assert_allclose(history.history["a_loss"][0], (one["a"] + two["a"]) / 2, rtol=1e-5)
    # The total loss averages every step (b contributes 0 to step 1).
    np.testing.assert_allclose(
        history.history["loss"][0], (one["a"] + two["a"] + two["b"]) / 2, rtol=1e-5
    )


def expected_losses():
    return {
        "a": keras.losses.SparseCategoricalCrossentropy(reduction="sum"),
        "b": keras.losses.MeanSquaredError(reduction="sum"),
    }


def test_expected_normalizer_logs_every_step_and_keeps_uncertainty_terms():
    """`loss_normalizer="expected"`: the weights were pre-divided by the
    expected label weight per batch, so a step without a task's labels is a
    genuine 0 in the estimate of its mean loss: `<t>_loss` averages every
    step, and uncertainty keeps the task's `+ s_t` term on that step."""
    network = toy_network()
    trainer = MultiTaskTrainer(network, TASKS, expected_losses(), {"a": 1.0, "b": 1.0}, loss_normalizer="expected")
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    n = 8
    first = toy_batch(n, seed=1, weight_a=np.full(n, 1 / n), weight_b=np.zeros(n))
    second = toy_batch(n, seed=2, weight_a=np.full(n, 1 / n), weight_b=np.full(n, 2 / n))
    one, two = hand_losses(network, first), hand_losses(network, second)
    history = trainer.fit(dataset([first, second]), epochs=1, verbose=0).history
    np.testing.assert_allclose(history["a_loss"][0], (one["a"] + two["a"]) / 2, rtol=1e-5)
    np.testing.assert_allclose(history["b_loss"][0], (0.0 + 2 * two["b"]) / 2, rtol=1e-5)

    unc = MultiTaskTrainer(toy_network(), TASKS, expected_losses(), weighting="uncertainty", loss_normalizer="expected")
    unc.compile(optimizer=keras.optimizers.SGD(0.0))
    unc.loss_weighting.log_variances.assign(np.array([0.5, -0.25], "float32"))
    x, y, sw = first
    expected = hand_losses(unc.network, first)
    total = float(ops.convert_to_numpy(unc.compute_loss(x, y, unc(x), sw)))
    np.testing.assert_allclose(total, np.exp(-0.5) * expected["a"] + 0.5 + (-0.25), rtol=1e-5)
    with pytest.raises(ConfigError, match="loss_normalizer must be"):
        MultiTaskTrainer(toy_network(), TASKS, expected_losses(), loss_normalizer="mean")


def test_nan_in_one_task_shows_in_that_tasks_loss():
    trainer = make_trainer("static")
    x, y, sw = toy_batch(8)
    y["b"][3] = np.nan
    recorder = BatchLogs()
    trainer.fit(dataset([(x, y, sw)]), epochs=1, verbose=0, callbacks=[recorder])
    logs = recorder.logs[-1]
    assert math.isnan(logs["b_loss"])
    assert math.isfinite(logs["a_loss"])
    assert math.isnan(logs["loss"])


# === uncertainty ===


def test_uncertainty_learns_log_variances():
    trainer = make_trainer("uncertainty", optimizer=keras.optimizers.Adam(0.05))
    layer = trainer.loss_weighting
    batch = toy_batch(8, seed=3)
    x, y, sw = batch
    # Total = sum_t exp(-s_t) L_t + s_t (s = 0 at init: the plain sum).
    expected = hand_losses(trainer.network, batch)
    loss = trainer.compute_loss(x, y, trainer(x), sw)
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected["a"] + expected["b"], rtol=1e-5)
    assert any(v is layer.log_variances for v in trainer.trainable_variables)
    trainer.fit(dataset([batch, toy_batch(8, seed=4)]), epochs=3, verbose=0)
    s = ops.convert_to_numpy(layer.log_variances)
    assert np.all(np.abs(s) > 1e-3), s
    weights = trainer.current_weights()
    np.testing.assert_allclose([weights["a"], weights["b"]], np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose([weights["a"], weights["b"]], ops.convert_to_numpy(layer.task_weights()), rtol=1e-6)


# === DWA ===


def test_dwa_weights_follow_epoch_loss_history():
    trainer = make_trainer("dwa", optimizer=keras.optimizers.SGD(0.1), weighting_options={"temperature": 2.0})
    assert trainer.current_weights() == {"a": 1.0, "b": 1.0}
    data = dataset([toy_batch(8, seed=s) for s in range(3)])
    history = trainer.fit(data, epochs=3, verbose=0, callbacks=[LossWeightLogger(trainer)]).history
    recorded = [[history["a_loss"][e], history["b_loss"][e]] for e in range(3)]
    np.testing.assert_allclose(trainer.loss_history, recorded, rtol=1e-6)
    weights = trainer.current_weights()
    np.testing.assert_allclose([weights["a"], weights["b"]], dwa_weights(recorded, 2.0), rtol=1e-5)
    assert abs(sum(weights.values()) - 2.0) < 1e-5
    # The logged lambdas are the ones used in each epoch: ones, ones, then DWA.
    np.testing.assert_allclose(history["lambda_a"][:2], [1.0, 1.0])
    np.testing.assert_allclose(
        [history["lambda_a"][2], history["lambda_b"][2]], dwa_weights(recorded[:2], 2.0), rtol=1e-5
    )


# === RLW ===


def test_rlw_draws_new_weights_every_step():
    trainer = make_trainer("rlw", optimizer=keras.optimizers.SGD(0.01), seed=3)
    np.testing.assert_allclose(list(trainer.current_weights().values()), [0.5, 0.5])
    recorder = BatchLogs(trainer)
    trainer.fit(dataset([toy_batch(8, seed=s) for s in range(4)]), epochs=1, verbose=0, callbacks=[recorder])
    draws = np.array([[w["a"], w["b"]] for w in recorder.weights])
    assert draws.shape == (4, 2)
    np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(draws > 0)
    assert len({round(float(v), 6) for v in draws[:, 0]}) == 4
    # Evaluation uses the expected weights 1/T.
    batch = toy_batch(8, seed=9)
    expected = hand_losses(trainer.network, batch)
    result = trainer.evaluate(dataset([batch]), verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], (expected["a"] + expected["b"]) / 2, rtol=1e-5)


def test_zero_lambda_removes_task_from_dynamic_weighting():
    trainer = make_trainer("rlw", {"a": 1.0, "b": 0.0}, optimizer=keras.optimizers.SGD(0.01))
    history = trainer.fit(dataset([toy_batch(8)]), epochs=1, verbose=0).history
    assert trainer.current_weights() == {"a": 1.0, "b": 0.0}
    assert history["b_loss"][0] > 0  # still logged


# === PCGrad ===


def conflicting_network(w0=(0.5, -0.25)):
    """One shared kernel w = (w1, w2); a = w1 + w2 (target 1), b = w1 (target -1).

    With MSE: L_a = (w1 + w2 - 1)^2, L_b = (w1 + 1)^2, whose gradients
    conflict in w1; w2 only matters to task a.
    """
    inputs = keras.Input((1,), name="features")
    h = keras.layers.Dense(
        2, use_bias=False, name="shared", kernel_initializer=keras.initializers.Constant(np.array([w0], "float32"))
    )(inputs)

    def head(name, kernel):
        dense = keras.layers.Dense(
            1,
            use_bias=False,
            trainable=False,
            name=f"{name}_value",
            kernel_initializer=keras.initializers.Constant(np.array(kernel, "float32")),
        )
        return keras.layers.Reshape((), name=name)(dense(h))

    return keras.Model(inputs, {"a": head("a", [[1.0], [1.0]]), "b": head("b", [[1.0], [0.0]])})


@needs_task_grads
@pytest.mark.parametrize("jit_compile", [False, True])
def test_pcgrad_applies_projected_update(jit_compile):
    w1, w2 = 0.5, -0.25
    mse = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
    trainer = MultiTaskTrainer(conflicting_network((w1, w2)), TASKS, {"a": mse, "b": mse}, {}, weighting="pcgrad")
    trainer.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=jit_compile)
    n = 4
    x = np.ones((n, 1), "float32")
    y = {"a": np.ones(n, "float32"), "b": -np.ones(n, "float32")}
    sw = {t: np.ones(n, "float32") for t in TASKS}
    trainer.fit(tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(n), epochs=1, verbose=0)

    g_a = np.array([2 * (w1 + w2 - 1), 2 * (w1 + w2 - 1)])
    g_b = np.array([2 * (w1 + 1), 0.0])
    assert g_a @ g_b < 0  # the conflict
    expected = ops.convert_to_numpy(pcgrad([[g_a.reshape(1, 2)], [g_b.reshape(1, 2)]])[0]).reshape(2)
    # By hand: each gradient loses its component along the other one.
    by_hand = (g_a - (g_a @ g_b) / (g_b @ g_b) * g_b) + (g_b - (g_a @ g_b) / (g_a @ g_a) * g_a)
    np.testing.assert_allclose(expected, by_hand, rtol=1e-6)
    kernel = ops.convert_to_numpy(trainer.network.get_layer("shared").kernel).reshape(2)
    np.testing.assert_allclose(kernel, np.array([w1, w2]) - expected, rtol=1e-5, atol=1e-6)
    # Not the plain summed-gradient step.
    assert not np.allclose(kernel, np.array([w1, w2]) - (g_a + g_b))


# === GradNorm ===


def regression_pair_network(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(16, activation="tanh", name="shared")(inputs)
    outputs = {
        t: keras.layers.Reshape((), name=t)(keras.layers.Dense(1, name=f"{t}_value")(h)) for t in TASKS
    }
    return keras.Model(inputs, outputs)


@needs_task_grads
def test_gradnorm_weights_favour_the_slower_task():
    # Task a is a learnable linear function, task b pure noise: b's loss
    # ratio stays high, so GradNorm moves weight onto b.
    rng = np.random.default_rng(0)
    n = 32
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {"a": (x @ np.array([1.0, -1.0, 0.5, 0.0], "float32")), "b": rng.normal(size=n).astype("float32")}
    sw = {t: np.ones(n, "float32") for t in TASKS}
    data = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(8)
    mse = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
    trainer = MultiTaskTrainer(
        regression_pair_network(), TASKS, {"a": mse, "b": mse}, {}, weighting="gradnorm", weighting_options={"alpha": 1.5}
    )
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile="auto")
    recorder = BatchLogs(trainer)
    trainer.fit(data, epochs=3, verbose=0, callbacks=[recorder])
    assert trainer.loss_weighting.shared_layer == "shared"
    for weights in recorder.weights:
        assert all(w > 0 for w in weights.values())
        np.testing.assert_allclose(sum(weights.values()), 2.0, rtol=1e-5)
    final = trainer.current_weights()
    assert final["b"] > 1.0 > final["a"], final
    assert recorder.weights[0] != recorder.weights[-1]


def numpy_gradnorm_step(weights, initial, losses, norms, alpha, lr):
    """GradNorm's weight step in NumPy, every task present (Chen et al., 2018, Alg. 1)."""
    ratios = losses / initial
    g = weights * norms
    targets = g.mean() * (ratios / ratios.mean()) ** alpha
    updated = np.maximum(weights - lr * np.sign(g - targets) * norms, 1e-3)
    return updated * len(weights) / updated.sum()


@needs_task_grads
def test_gradnorm_update_of_the_trainers_strategy():
    trainer = make_trainer("gradnorm", weighting_options={"alpha": 1.5, "learning_rate": 0.025})
    strategy = trainer.loss_weighting
    weights = np.array([1.2, 0.8], "float32")
    initial = np.array([2.0, 1.0], "float32")
    losses = np.array([1.0, 0.9], "float32")
    norms = np.array([0.5, 2.0], "float32")
    strategy.weights_var.assign(weights)
    strategy.initial_losses.assign(initial)
    strategy.update(ops.convert_to_tensor(losses), ops.ones((2,)), ops.convert_to_tensor(norms))
    expected = numpy_gradnorm_step(weights, initial, losses, norms, alpha=1.5, lr=0.025)
    np.testing.assert_allclose(list(trainer.current_weights().values()), expected, rtol=1e-5)
    # A task absent from the batch keeps its initial loss unset and its
    # weight moves only through the renormalisation.
    trainer = make_trainer("gradnorm")
    strategy = trainer.loss_weighting
    strategy.update(
        ops.convert_to_tensor(losses), ops.convert_to_tensor(np.array([1.0, 0.0], "float32")), ops.convert_to_tensor(norms)
    )
    np.testing.assert_allclose(ops.convert_to_numpy(strategy.initial_losses), [1.0, 0.0])
    np.testing.assert_allclose(sum(trainer.current_weights().values()), 2.0, rtol=1e-6)
    # A non-finite norm (float16 loss-scale overflow) leaves everything as it was.
    before = trainer.current_weights()
    strategy.update(
        ops.convert_to_tensor(losses), ops.ones((2,)), ops.convert_to_tensor(np.array([np.inf, 1.0], "float32"))
    )
    assert trainer.current_weights() == before
    np.testing.assert_allclose(ops.convert_to_numpy(strategy.initial_losses), [1.0, 0.0])


@needs_task_grads
def test_gradnorm_finds_the_last_layer_shared_by_all_tasks():
    # features -> encoder_0 -> encoder_1 -> a
    #                                    \-> relation (b and c only) -> b, c
    inputs = keras.Input((4,), name="features")
    h = keras.layers.Dense(4, name="encoder_0")(inputs)
    h = keras.layers.Dense(4, name="encoder_1")(h)
    pooled = keras.layers.Activation("tanh", name="pool")(h)  # no weights
    related = keras.layers.Dense(4, name="relation")(pooled)
    outputs = {
        "a": keras.layers.Dense(2, activation="softmax", name="a")(pooled),
        "b": keras.layers.Dense(2, activation="softmax", name="b")(related),
        "c": keras.layers.Dense(2, activation="softmax", name="c")(related),
    }
    network = keras.Model(inputs, outputs)
    ce = {t: keras.losses.SparseCategoricalCrossentropy() for t in "abc"}

    def shared_layer(loss_weights, **options):
        trainer = MultiTaskTrainer(network, list("abc"), ce, loss_weights, weighting="gradnorm", weighting_options=options)
        indices = trainer.loss_weighting.shared_indices(trainer.trainable_variables)
        names = {trainer.trainable_variables[i].path.split("/")[-2] for i in indices}
        return trainer.loss_weighting.shared_layer, names

    assert shared_layer({}) == ("encoder_1", {"encoder_1"})
    # Task a removed (lambda 0): the relation layer is shared by b and c.
    assert shared_layer({"a": 0.0}) == ("relation", {"relation"})
    assert shared_layer({}, layer="encoder_0") == ("encoder_0", {"encoder_0"})
    with pytest.raises(ConfigError, match="not a layer"):
        shared_layer({}, layer="nope")


# === saving ===


def test_saved_network_is_the_plain_functional_model(tmp_path):
    trainer = make_trainer("uncertainty", optimizer=keras.optimizers.SGD(0.1))
    batch = toy_batch(8)
    trainer.fit(dataset([batch]), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    trainer.network.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode("utf-8")
    assert "MultiTaskTrainer" not in config and "uncertainty" not in config
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is keras.Model or reloaded.__class__.__name__ == "Functional"
    x = batch[0]
    expected, actual = trainer.network.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(actual[task], expected[task], rtol=1e-6)


# === errors ===


def test_unknown_weighting_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown loss weighting 'gradnrom'.*static.*pcgrad"):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {}, weighting="gradnrom")


def test_pcgrad_with_zero_lambda_is_refused():
    if BACKEND not in GRADIENT_BACKENDS:
        pytest.skip("pcgrad is refused on this backend anyway")
    with pytest.raises(ConfigError, match="pcgrad.*loss_weight 0.*b"):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {"a": 1.0, "b": 0.0}, weighting="pcgrad")


@pytest.mark.parametrize("weighting", ["pcgrad", "gradnorm"])
def test_per_task_gradient_weightings_are_refused_on_torch(weighting):
    with pytest.raises(ConfigError, match=f"'{weighting}' needs per-task gradients.*tensorflow and jax.*this is torch"):
        check_weighting_supported(weighting, "torch")
    for backend in GRADIENT_BACKENDS:
        check_weighting_supported(weighting, backend)
    for other in ["static", "uncertainty", "dwa", "rlw"]:
        check_weighting_supported(other, "torch")


def test_bad_arguments():
    # On torch the backend check comes first; elsewhere alpha is checked.
    match = "alpha" if BACKEND in GRADIENT_BACKENDS else "needs per-task gradients"
    with pytest.raises(ConfigError, match=match):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {}, weighting="gradnorm", weighting_options={"alpha": 0.0})
    with pytest.raises(ConfigError, match="temperature"):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {}, weighting="dwa", weighting_options={"temperature": -1.0})
    with pytest.raises(ConfigError, match="'dwa' has no option 'alpha'; its options: temperature"):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {}, weighting="dwa", weighting_options={"alpha": 1.0})
    with pytest.raises(ConfigError, match="loss_weight 0"):
        MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {"a": 0.0, "b": 0.0})
    with pytest.raises(ConfigError, match="no loss given.*b"):
        MultiTaskTrainer(toy_network(), TASKS, {"a": toy_losses()["a"]}, {})
    trainer = MultiTaskTrainer(toy_network(), TASKS, toy_losses(), {})
    with pytest.raises(ValueError, match="without `loss="):
        trainer.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="not compile\\(metrics="):
        trainer.compile(optimizer="sgd", metrics=["mae"])
