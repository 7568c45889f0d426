"""`train.distribution` and multi-host setup (keras_mtl/distribute.py).

Device setup must happen before TensorFlow/JAX initialise, so everything
that needs 2 devices runs in a subprocess:

* TensorFlow: the CPU is split into 2 logical devices and `mirrored` is
  compared with `none` at the same global batch and seed;
* JAX: `XLA_FLAGS=--xla_force_host_platform_device_count=2`, `data_parallel`
  against `none`;
* multi-host: two JAX processes on 127.0.0.1 join one job through
  `initialize_multihost()` and train over the 2 global devices (1 each):
  a small Dense model checked against numpy, then `train()` itself checked
  against the one-process `none` run of the JAX fixture.

Tolerances (train losses, model outputs): |a - b| <= 1e-4 absolute. Both runs
compute the same float32 math; only the summation order differs (partial
per-replica sums, then an all-reduce), which moves results by ~1e-7 per
step, and Adam's m/sqrt(v) can amplify rounding noise in near-zero gradient
components, so after a few steps the losses agree to ~1e-6 (measured: 0 to
1e-6 on TF, <= 3e-7 on JAX). 1e-4 leaves a 100x margin, while every real
semantic difference seen while writing these tests was >= 1e-3: Keras
clipping each replica's gradient before the all-reduce (4e-3 after one
step), the data stream shifted by one iterator (2e-1).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from keras_mtl import distribute
from keras_mtl.errors import ConfigError
from helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def _run_script(script, args, env, cwd, timeout=900):
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _section(results, name):
    res = results[name]
    assert "error" not in res, f"section {name!r} failed in the subprocess:\n{res['error']}"
    return res


# Sections run one after the other in ONE subprocess (one TensorFlow/JAX
# start); each records its data or its traceback.
COMMON = textwrap.dedent(
    r'''
    import csv, json, os, sys, traceback
    args = json.loads(sys.argv[1])
    results = {}

    def section(name):
        def wrap(fn):
            try:
                results[name] = fn() or {}
            except Exception:
                results[name] = {"error": traceback.format_exc()[-4000:]}
            return fn
        return wrap

    def train_rows(cfg, kind, workdir):
        from keras_mtl.training import train
        cfg = json.loads(json.dumps(cfg))
        cfg["train"]["distribution"] = kind
        train(cfg, workdir=workdir, verbose=0)
        with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(workdir, "run.json")) as f:
            replicas = json.load(f)["replicas"]
        return {"rows": rows, "replicas": replicas}

    def outputs_of(workdir, x):
        from keras_mtl.run import load_run
        model = load_run(workdir).load_model()
        import numpy as np
        return {k: np.asarray(v).tolist() for k, v in model.predict_on_batch(x).items()}
    '''
)

TF_SCRIPT = textwrap.dedent(
    r'''
    import os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    '''
) + COMMON + textwrap.dedent(
    r'''
    from keras_mtl import distribute
    from keras_mtl.config import config_from_dict
    from keras_mtl.errors import ConfigError

    rng = np.random.default_rng(0)
    BATCHES = 3
    fixed_x = {"token_ids": rng.integers(3, 60, size=(8, 16)).astype("int32")}
    fixed_x["padding_mask"] = np.ones((8, 16), bool)

    @section("devices")
    def _():
        return {"logical_cpus": len(tf.config.list_logical_devices("CPU"))}

    @section("step")
    def _():
        # One optimizer step after another from identical weights on fixed
        # batches (no shuffle: every iterator of this dataset is the same),
        # with the trainer's joint-loss train step, which clips the global
        # gradient under `mirrored` (distribute.global_gradient_clipping).
        from keras_mtl.model import build_network, loss_for
        from keras_mtl.training import make_optimizer
        from keras_mtl.multitask_trainer import MultiTaskTrainer
        config = config_from_dict(args["step_config"]).config
        ids = rng.integers(3, 60, size=(BATCHES * 8, 16)).astype("int32")
        ids[:, 12:] = 0
        x = {"token_ids": ids, "padding_mask": ids != 0}
        y = {"topic": rng.integers(0, 4, size=(BATCHES * 8,)).astype("int32")}
        # weights pre-divided by the global batch (loss_normalizer "expected"):
        # each replica's weighted sum is its share of the global mean loss
        w = {"topic": np.full((BATCHES * 8,), 1 / 8, "float32")}
        out = {}
        for kind in ("none", "mirrored"):
            train_cfg = config.train.model_copy(update={"distribution": kind})
            keras.utils.set_random_seed(0)
            dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8, drop_remainder=True).repeat()
            dataset = distribute.prepare_dataset(dataset, train_cfg)
            ctx, replicas = distribute.scope(train_cfg)
            with ctx:
                network = build_network(config, {"topic": ["a", "b", "c", "d"]}, [f"piece{i}" for i in range(64)])
                model = MultiTaskTrainer(network, ["topic"], {"topic": loss_for(config.tasks[0], "expected")},
                                         {"topic": 1.0}, loss_normalizer="expected")
                optimizer = make_optimizer(train_cfg, 2 * BATCHES)
                model.compile(optimizer=optimizer, jit_compile=False)
                clipping = {"clipnorm": optimizer.clipnorm, "taken_over": model._clip_global is not None}
            losses = []
            record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))
            model.fit(dataset, epochs=2, steps_per_epoch=BATCHES, callbacks=[record], verbose=0)
            out[kind] = {"replicas": replicas, "losses": losses, "clipping": clipping,
                         "outputs": np.asarray(model.predict_on_batch(fixed_x)["topic"])[:8].tolist()}
        return out

    @section("batch_error")
    def _():
        train_cfg = config_from_dict(args["step_config"]).config.train.model_copy(
            update={"distribution": "mirrored", "batch_size": 7})
        try:
            distribute.scope(train_cfg)
        except ConfigError as e:
            return {"message": str(e)}
        return {"message": None}

    @section("auto")
    def _():
        train_cfg = config_from_dict(args["step_config"]).config.train.model_copy(update={"distribution": "auto"})
        return {"resolved": distribute.resolve(train_cfg)}

    @section("train")
    def _():
        out = {kind: train_rows(args["train_config"], kind, os.path.join(args["root"], kind)) for kind in ("none", "mirrored")}
        for kind in out:
            out[kind]["outputs"] = outputs_of(os.path.join(args["root"], kind), fixed_x)
        return out

    @section("train_multi")
    def _():
        # two tasks, a tagger, task conditioning: per-task losses normalized by
        # the expected label weight (the default) decompose over replicas
        x = dict(fixed_x, task_ids=(np.arange(8) % 2).astype("int32"))
        out = {}
        for kind in ("none", "mirrored"):
            root = os.path.join(args["root"], f"multi-{kind}")
            out[kind] = train_rows(args["multi_config"], kind, root)
            out[kind]["outputs"] = outputs_of(root, x)
        return out

    @section("precision")
    def _():
        import glob
        import tensorflow_text  # noqa: F401  (the tokenizer ops)
        from keras_mtl.serving.export import export
        from keras_mtl.run import load_run
        workdir = os.path.join(args["root"], "bf16")
        cfg = json.loads(json.dumps(args["precision_config"]))
        from keras_mtl.training import train
        train(cfg, workdir=workdir, max_steps=2, verbose=0)
        model = load_run(workdir).load_model()
        policies = {l.name: l.dtype_policy.name for l in model.layers + model.get_layer("shared_encoder").layers_in_order()}
        policies.update({f"{t}/output": model.get_layer(t).output_dense.dtype_policy.name for t in ("topic", "pos")})
        version = export(workdir, out=os.path.join(args["root"], "bf16-saved"), warmup=False)
        loaded = tf.saved_model.load(str(version))
        fn = loaded.signatures["serving_default"]
        declared = {k: v.dtype.name for k, v in fn.structured_outputs.items()}
        got = fn(text=tf.constant(["the chef cooked a soup .", ""]))
        return {"policies": policies, "declared": declared,
                "returned": {k: v.dtype.name for k, v in got.items()},
                "finite": bool(all(np.isfinite(v.numpy()).all() for k, v in got.items() if v.dtype.is_floating)),
                "variable_dtypes": sorted({v.dtype for v in model.weights})}

    keras.mixed_precision.set_global_policy("float32")
    print("RESULT " + json.dumps(results), flush=True)
    '''
)

JAX_SCRIPT = textwrap.dedent(
    r'''
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import keras
    import numpy as np
    '''
) + COMMON + textwrap.dedent(
    r'''
    from types import SimpleNamespace
    from keras_mtl import distribute
    from keras_mtl.errors import ConfigError

    rng = np.random.default_rng(0)
    fixed_x = {"token_ids": rng.integers(3, 60, size=(8, 16)).astype("int32")}
    fixed_x["padding_mask"] = np.ones((8, 16), bool)
    fixed_x["task_ids"] = (np.arange(8) % 2).astype("int32")

    @section("devices")
    def _():
        return {"devices": jax.device_count()}

    @section("errors")
    def _():
        out = {}
        for kind, batch in (("mirrored", 8), ("data_parallel", 7)):
            try:
                distribute.scope(SimpleNamespace(distribution=kind, batch_size=batch))
                out[kind] = None
            except ConfigError as e:
                out[kind] = str(e)
        out["auto"] = distribute.resolve(SimpleNamespace(distribution="auto", batch_size=8))
        return out

    @section("train")
    def _():
        out = {}
        for kind in ("none", "data_parallel"):
            out[kind] = train_rows(args["train_config"], kind, os.path.join(args["root"], kind))
            out[kind]["distribution_after"] = repr(keras.distribution.distribution())
        # `none` after `data_parallel` in one process removes the distribution again
        distribute.scope(SimpleNamespace(distribution="none", batch_size=8))
        out["cleared"] = keras.distribution.distribution() is None
        for kind in ("none", "data_parallel"):
            out[kind]["outputs"] = outputs_of(os.path.join(args["root"], kind), fixed_x)
        return out

    print("RESULT " + json.dumps(results), flush=True)
    '''
)


# --------------------------------------------------------------------------
# In-process: resolution, errors, multi-host settings
# --------------------------------------------------------------------------


def _cfg(distribution="auto", batch_size=8):
    return SimpleNamespace(distribution=distribution, batch_size=batch_size)


def test_auto_resolves_to_none_on_one_device(monkeypatch):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if len(tf.config.list_logical_devices("GPU")) > 1:
            pytest.skip("more than one GPU visible")
    assert distribute.resolve(_cfg("auto")) == "none"
    assert distribute.resolve(_cfg("none")) == "none"
    # JAX with one device (this process has no forced host device count)
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(distribute, "_backend", lambda: "jax")
    if jax.device_count() == 1:
        assert distribute.resolve(_cfg("auto")) == "none"
    ctx, replicas = distribute.scope(_cfg("none"))
    assert replicas == 1


@pytest.mark.parametrize(
    "backend, wanted, hint",
    [
        ("jax", "mirrored", "use 'data_parallel' on JAX"),
        ("tensorflow", "data_parallel", "use 'mirrored' on TensorFlow"),
        ("torch", "mirrored", "use 'none'"),
        ("torch", "data_parallel", "use 'none'"),
    ],
)
def test_wrong_backend_names_the_right_option(monkeypatch, backend, wanted, hint):
    monkeypatch.setattr(distribute, "_backend", lambda: backend)
    with pytest.raises(ConfigError) as e:
        distribute.resolve(_cfg(wanted))
    msg = str(e.value)
    assert msg.startswith("train.distribution:") and f"'{wanted}'" in msg and hint in msg and backend in msg


def test_batch_not_divisible_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.batch_size \(10\) must be divisible .* \(4 devices\).*batch_size=8"):
        distribute._check_batch(_cfg(batch_size=10), 4, "devices")
    distribute._check_batch(_cfg(batch_size=12), 4)  # divisible: fine
    distribute._check_batch(_cfg(batch_size=7), 1)  # one replica: anything goes


def test_prepare_dataset_and_optimizer_untouched_without_mirrored():
    sentinel = object()
    assert distribute.prepare_dataset(sentinel, _cfg("none")) is sentinel
    opt = SimpleNamespace(clipnorm=1.0, global_clipnorm=None, clipvalue=None)
    assert distribute.global_gradient_clipping(opt) is None  # one replica: Keras clips
    assert opt.clipnorm == 1.0


MULTIHOST_ENV = [n for names in distribute._ENV.values() for n in names]


@pytest.fixture
def clean_env(monkeypatch):
    for name in MULTIHOST_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_multihost_settings_from_env(clean_env):
    assert distribute.multihost_settings() is None
    assert distribute.initialize_multihost() is None  # nothing configured: a no-op
    clean_env.setenv("KERAS_MTL_NUM_PROCESSES", "1")
    assert distribute.multihost_settings() is None  # one process: no job
    clean_env.setenv("KERAS_MTL_COORDINATOR", "10.0.0.1:1234")
    clean_env.setenv("KERAS_MTL_NUM_PROCESSES", "4")
    clean_env.setenv("KERAS_MTL_PROCESS_ID", "3")
    assert distribute.multihost_settings() == ("10.0.0.1:1234", 4, 3)
    # arguments win over the environment
    assert distribute.multihost_settings("h:1", 2, 0) == ("h:1", 2, 0)


def test_multihost_settings_keras_and_jax_names(clean_env):
    clean_env.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234,10.0.0.2:2345")
    clean_env.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    clean_env.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert distribute.multihost_settings() == ("10.0.0.1:1234", 2, 1)
    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID"):
        clean_env.delenv(name)
    clean_env.setenv("JAX_COORDINATOR_ADDRESS", "host:99")
    # cluster auto-detection (SLURM, Open MPI...): count and id left to JAX
    assert distribute.multihost_settings() == ("host:99", None, None)


@pytest.mark.parametrize(
    "env, match",
    [
        ({"KERAS_MTL_NUM_PROCESSES": "2", "KERAS_MTL_PROCESS_ID": "0"}, "no coordinator address"),
        ({"KERAS_MTL_COORDINATOR": "nohost", "KERAS_MTL_NUM_PROCESSES": "2", "KERAS_MTL_PROCESS_ID": "0"}, "host:port"),
        ({"KERAS_MTL_COORDINATOR": "h:1", "KERAS_MTL_NUM_PROCESSES": "two", "KERAS_MTL_PROCESS_ID": "0"}, "KERAS_MTL_NUM_PROCESSES: expected an integer"),
        ({"KERAS_MTL_COORDINATOR": "h:1", "KERAS_MTL_NUM_PROCESSES": "2", "KERAS_MTL_PROCESS_ID": "2"}, r"process id 2 out of range .*0\.\.1"),
        ({"KERAS_MTL_COORDINATOR": "h:1", "KERAS_MTL_NUM_PROCESSES": "2"}, "set both"),
    ],
)
def test_multihost_settings_errors(clean_env, env, match):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        distribute.multihost_settings()


def test_multihost_needs_jax(clean_env):
    clean_env.setattr(distribute, "_backend", lambda: "tensorflow")
    with pytest.raises(ConfigError, match="needs the JAX backend"):
        distribute.initialize_multihost("127.0.0.1:1", 2, 0)


# --------------------------------------------------------------------------
# Subprocesses: 2 devices
# --------------------------------------------------------------------------


def _close(a, b, tol=TOL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= tol


def _losses(rows):
    return [{k: float(v) for k, v in row.items() if k.startswith("train_") and v != ""} for row in rows]


def _assert_same_training(none, other, a, b, rows=None):
    """Two train runs agree: their train losses `a` (of `none`) and `b` (of `other`), key by
    key within TOL, and every task's outputs (of `other`, its first `rows` rows)."""
    for ra, rb in zip(a, b):
        for key in ra:
            assert abs(ra[key] - rb[key]) <= TOL, (key, a, b)
    for task in none["outputs"]:
        assert _close(none["outputs"][task], other["outputs"][task][:rows]), task


@pytest.fixture(scope="module")
def tf_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf-dist")
    args = {
        "root": str(root),
        "step_config": tiny_config(),
        # one classification task, no conditioning: every example carries
        # the label, so the per-replica mean losses average to the global one
        "train_config": tiny_config(),
        "multi_config": tiny_config(("topic", "pos"), "embedding"),
        "precision_config": {**tiny_config(("topic", "pos"), "embedding", precision="mixed_bfloat16"), "name": "bf16"},
    }
    return _run_script(TF_SCRIPT, args, _env(KERAS_BACKEND="tensorflow"), root)


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("jax-dist")
    args = {"root": str(root), "train_config": tiny_config(("topic", "pos"), "embedding")}
    env = _env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return _run_script(JAX_SCRIPT, args, env, root)


@pytest.mark.slow
def test_tf_mirrored_one_step_at_a_time_matches_one_device(tf_results):
    assert _section(tf_results, "devices")["logical_cpus"] == 2
    res = _section(tf_results, "step")
    assert res["none"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    assert len(res["none"]["losses"]) == 6
    # one device: the optimizer clips; mirrored: the train step clips the global gradient
    assert res["none"]["clipping"] == {"clipnorm": 1.0, "taken_over": False}
    assert res["mirrored"]["clipping"] == {"clipnorm": None, "taken_over": True}
    assert _close(res["none"]["losses"], res["mirrored"]["losses"]), (res["none"]["losses"], res["mirrored"]["losses"])
    assert _close(res["none"]["outputs"], res["mirrored"]["outputs"])


@pytest.mark.slow
def test_tf_mirrored_batch_not_divisible(tf_results):
    msg = _section(tf_results, "batch_error")["message"]
    assert msg and "train.batch_size (7) must be divisible" in msg and "(2 devices)" in msg


@pytest.mark.slow
def test_tf_auto_is_none_without_gpus(tf_results):
    # two logical CPUs are not GPUs: auto stays on one device
    assert _section(tf_results, "auto")["resolved"] == "none"


@pytest.mark.slow
def test_tf_train_mirrored_matches_none(tf_results):
    """`keras_mtl.training.train` with `mirrored` on 2 logical CPUs == `none`.

    train.py passes the dataset through `distribute.prepare_dataset` (int32
    padding mask), the trainer clips the global gradient, not each
    replica's part (`distribute.global_gradient_clipping`), and the training
    stream does not depend on how many iterators were made before (Keras
    builds the model from one extra iterator under a strategy): see
    docs/distributed.md, "Known differences".
    """
    res = _section(tf_results, "train")
    none, mirrored = res["none"], res["mirrored"]
    assert none["replicas"] == 1 and mirrored["replicas"] == 2
    a, b = _losses(none["rows"]), _losses(mirrored["rows"])
    assert len(a) == len(b) == 2 and set(a[0]) == set(b[0])
    _assert_same_training(none, mirrored, a, b, rows=8)


@pytest.mark.slow
def test_tf_train_mirrored_two_tasks_with_tagging_matches_none(tf_results):
    """Two tasks (one tagging), task conditioning, mixed batches: with
    `train.loss_normalizer: expected` (the default) each task's loss is a sum
    of pre-normalized per-unit terms, which splits exactly across replicas,
    so `mirrored` equals one device even where the replicas' halves hold
    different numbers of each task's labels (with `batch`, the per-replica
    means would be averaged: see docs/distributed.md)."""
    res = _section(tf_results, "train_multi")
    none, mirrored = res["none"], res["mirrored"]
    assert none["replicas"] == 1 and mirrored["replicas"] == 2
    a, b = _losses(none["rows"]), _losses(mirrored["rows"])
    assert len(a) == len(b) == 2 and "train_pos_loss" in a[0] and "train_topic_loss" in a[0]
    _assert_same_training(none, mirrored, a, b, rows=8)


@pytest.mark.slow
def test_tf_mixed_bfloat16_trains_and_exports_float32_heads(tf_results):
    res = _section(tf_results, "precision")
    assert res["policies"]["encoder_0"] == "mixed_bfloat16"
    assert res["policies"]["topic/output"] == "float32" and res["policies"]["pos/output"] == "float32"
    assert res["variable_dtypes"] == ["float32"]
    assert res["declared"]["topic_probabilities"] == "float32"
    assert res["returned"]["topic_probabilities"] == "float32"
    floats = {k: v for k, v in res["declared"].items() if v not in ("string", "bool", "int32", "int64")}
    assert set(floats.values()) == {"float32"}, floats
    assert res["finite"]


@pytest.mark.slow
def test_jax_wrong_kind_and_batch_errors(jax_results):
    assert _section(jax_results, "devices")["devices"] == 2
    res = _section(jax_results, "errors")
    assert "use 'data_parallel' on JAX" in res["mirrored"]
    assert "train.batch_size (7) must be divisible" in res["data_parallel"] and "(2 devices)" in res["data_parallel"]
    assert res["auto"] == "data_parallel"


@pytest.mark.slow
def test_jax_data_parallel_matches_none(jax_results):
    # Two tasks with per-task conditioning and a tagging task: JAX shards
    # the global batch (GSPMD), so the loss is exactly the one-device loss.
    res = _section(jax_results, "train")
    none, dp = res["none"], res["data_parallel"]
    assert none["replicas"] == 1 and dp["replicas"] == 2
    assert none["distribution_after"] == "None" and "DataParallel" in dp["distribution_after"]
    assert res["cleared"]
    a, b = _losses(none["rows"]), _losses(dp["rows"])
    assert len(a) == 2 and "train_pos_loss" in a[0] and "train_topic_loss" in a[0]
    _assert_same_training(none, dp, a, b)


# --------------------------------------------------------------------------
# Multi-host: two JAX processes on this machine
# --------------------------------------------------------------------------

MULTIHOST_WORKER = textwrap.dedent(
    r'''
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np
    from types import SimpleNamespace
    from keras_mtl import distribute

    settings = distribute.initialize_multihost()  # from KERAS_MTL_* in the environment
    import jax
    import tensorflow as tf

    ctx, replicas = distribute.scope(SimpleNamespace(distribution="data_parallel", batch_size=4))
    with ctx:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.array([[1, 0], [0, 1], [1, 1], [2, 0]], "float32")
    y = np.array([[1], [2], [3], [4]], "float32")
    # the GLOBAL batch: Keras gives each process its half
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))
    model.fit(dataset, steps_per_epoch=2, epochs=1, callbacks=[record], verbose=0)
    kernel, bias = (np.asarray(w).tolist() for w in model.get_weights())
    print("RESULT " + json.dumps({
        "settings": settings, "process": jax.process_index(), "processes": jax.process_count(),
        "devices": jax.device_count(), "local_devices": jax.local_device_count(), "replicas": replicas,
        "losses": losses, "kernel": kernel, "bias": bias, "chief": distribute.is_chief(),
    }), flush=True)
    '''
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_multihost():
    """Full-batch gradient descent on the global batch, in numpy."""
    x = np.array([[1, 0], [0, 1], [1, 1], [2, 0]], float)
    y = np.array([1, 2, 3, 4], float)
    w, b, losses = np.zeros(2), 0.0, []
    for _ in range(2):
        err = x @ w + b - y
        losses.append(float(np.mean(err**2)))
        w, b = w - 0.1 * 2 * x.T @ err / 4, b - 0.1 * 2 * err.mean()
    running = [losses[0], (losses[0] + losses[1]) / 2]  # Keras logs the running mean
    return running, w, b


# What JAX says when its CPU backend cannot run collectives across processes.
NO_CPU_COLLECTIVES = ("Multiprocess computations aren't implemented", "cross-process", "collectives", "UNIMPLEMENTED")


def _launch_two(script, tmp_path, args=None):
    """Run `script` as processes 0 and 1 of one JAX job; their RESULT dicts.

    Skips (quoting JAX) if the CPU backend cannot run cross-process collectives.
    """
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(KERAS_BACKEND="jax", KERAS_MTL_COORDINATOR=f"127.0.0.1:{port}",
                   KERAS_MTL_NUM_PROCESSES="2", KERAS_MTL_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", script, json.dumps({**(args or {}), "pid": pid})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        ))
    outs = []
    deadline = time.time() + 600
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-host workers did not finish in 600 s (coordinator unreachable?)")
        outs.append((p.returncode, out, err))
    if any(rc != 0 for rc, _, _ in outs):
        text = "\n".join(err[-3000:] for _, _, err in outs)
        hit = next((line for line in text.splitlines() if any(s in line for s in NO_CPU_COLLECTIVES)), None)
        if hit:
            pytest.skip(f"JAX's CPU backend cannot run cross-process collectives here: {hit.strip()}")
        pytest.fail(f"multi-host workers failed:\n{text}")
    return port, [json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:]) for _, out, _ in outs]


@pytest.mark.slow
def test_multihost_data_parallel_two_processes(tmp_path):
    pytest.importorskip("jax")
    port, results = _launch_two(MULTIHOST_WORKER, tmp_path)
    running, w, b = _expected_multihost()
    for pid, res in enumerate(results):
        assert res["settings"] == [f"127.0.0.1:{port}", 2, pid]
        assert (res["process"], res["processes"]) == (pid, 2)
        assert res["devices"] == 2 and res["local_devices"] == 1 and res["replicas"] == 2
        assert res["chief"] == (pid == 0)
        # every process sees the loss of the GLOBAL batch, and the same weights
        np.testing.assert_allclose(res["losses"], running, rtol=1e-5)
        np.testing.assert_allclose(np.ravel(res["kernel"]), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["bias"], [b], rtol=1e-5, atol=1e-6)


# train() itself across two processes, each reading its own share of the cached rows:
# tests/test_multihost.py.
