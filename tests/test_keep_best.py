"""`train.keep: best`: the weights of the epoch with the best mean dev score go
into model.keras, the test report and hence the export; run.json and the report
name that epoch.

The dev scores are forced: `keras_mtl.callbacks.evaluate_split` (what
`PerTaskEvaluation` scores the dev split with) is wrapped so that every task's
primary dev metric of epoch e is `SCORES[e - 1]`, and the network's weights
at the end of each epoch are captured there. The test report is computed as
usual (not forced). Tiny in-process runs of 3 epochs x 2 steps; one JAX run in
a child process.
"""

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

STEPS = 2
TASKS = ("topic", "sentiment")


@pytest.fixture
def forced_scores(monkeypatch):
    """forced_scores(scores): epoch e's primary dev metrics are scores[e - 1]
    (the real metrics otherwise). Returns {epoch: the network's weights then}."""
    import keras

    import keras_mtl.callbacks as callbacks_module

    real = callbacks_module.evaluate_split

    def install(scores):
        captured = {}

        def fake(model, split, config, classes, pad_id=0):
            result = real(model, split, config, classes, pad_id)
            epoch = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) // STEPS  # right after a resume too
            captured[epoch] = [np.array(w, copy=True) for w in model.network.get_weights()]
            for task in config.tasks:
                result[task.name][task.primary_metric] = scores[epoch - 1]
            return result

        monkeypatch.setattr(callbacks_module, "evaluate_split", fake)
        return captured

    return install


def raw_config(tiny_config, keep, dev=8, **train):
    return tiny_config("embedding", name=f"keep-{keep}", tasks=TASKS, dev=dev, test=8, epochs=3,
                       steps_per_epoch=STEPS, learning_rate=0.01, keep=keep, **train)


def saved_weights(workdir):
    from keras_mtl.run import load_run

    return load_run(workdir).load_model().get_weights()


def same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def test_keep_best_keeps_the_early_peak(tmp_path, tiny_config, forced_scores):
    from keras_mtl.evaluation import evaluate_run
    from keras_mtl.training import train

    captured = forced_scores([0.9, 0.2, 0.5])
    workdir = tmp_path / "run"
    report = train(raw_config(tiny_config, "best"), workdir=workdir, verbose=0)
    assert sorted(captured) == [1, 2, 3]
    assert not same(captured[1], captured[3])  # the weights did move after epoch 1
    assert same(saved_weights(workdir), captured[1])
    run = json.loads((workdir / "run.json").read_text())
    assert (run["keep"], run["kept_epoch"], run["kept_dev_score"]) == ("best", 1, 0.9)
    assert [r["epoch"] for r in run["history"]] == [1, 2, 3] and run["epochs"] == 3
    assert report["kept_epoch"] == 1 and report["kept_dev_score"] == 0.9
    assert "Kept the weights of epoch 1 (best, mean dev score 0.9000)." in (workdir / "report.md").read_text()
    # the test report scored the kept weights
    again = evaluate_run(workdir, "test")["tasks"]
    for task in TASKS:
        assert again[task] == pytest.approx(report["tasks"][task], abs=1e-9)


def test_keep_last_keeps_the_last_epoch(tmp_path, tiny_config, forced_scores):
    from keras_mtl.training import train

    captured = forced_scores([0.9, 0.2, 0.5])
    workdir = tmp_path / "run"
    report = train(raw_config(tiny_config, "last"), workdir=workdir, verbose=0)
    assert same(saved_weights(workdir), captured[3]) and not same(captured[1], captured[3])
    run = json.loads((workdir / "run.json").read_text())
    assert (run["keep"], run["kept_epoch"], run["kept_dev_score"]) == ("last", 3, 0.5)
    assert report["kept_epoch"] == 3


def test_keep_best_survives_a_resume(tmp_path, tiny_config, forced_scores, interrupt_after):
    """Best at epoch 2 (replacing epoch 1), killed after epoch 2, resumed: epoch
    3 is worse, and the weights kept are epoch 2's from before the kill."""
    from keras_mtl.callbacks import read_backup_state
    from keras_mtl.training import train

    captured = forced_scores([0.6, 0.9, 0.3])
    workdir = tmp_path / "run"
    raw = raw_config(tiny_config, "best")
    interrupt_after(2)
    with pytest.raises(interrupt_after.error):
        train(raw, workdir=workdir, verbose=0)
    checkpoint = workdir / "backup" / "checkpoint"
    state = read_backup_state(checkpoint)
    assert state["epoch"] == 2 and state["best"] == {"epoch": 2, "score": 0.9, "weights": "best-2.weights.npz"}
    assert sorted(p.name for p in checkpoint.glob("best-*")) == ["best-2.weights.npz"]  # epoch 1's removed
    before_kill = captured.pop(2)

    interrupt_after.ended.clear()
    train(raw, workdir=workdir, verbose=0)
    assert interrupt_after.ended == [3] and sorted(captured) == [1, 3]  # resumed: epoch 3 only
    assert not same(before_kill, captured[3])
    assert same(saved_weights(workdir), before_kill)
    run = json.loads((workdir / "run.json").read_text())
    assert (run["kept_epoch"], run["kept_dev_score"]) == (2, 0.9)
    assert not (workdir / "backup").exists()


def test_keep_best_without_dev_examples_is_a_config_error(tmp_path, tiny_config):
    from keras_mtl.errors import ConfigError
    from keras_mtl.training import train

    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(raw_config(tiny_config, "best", dev=0), workdir=workdir, verbose=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("train.keep: best") and "no task has dev examples" in msg, msg
    assert not (workdir / "backup").exists() and not (workdir / "model.keras").exists()  # before training


def _without_dev_sources(tiny_config, keep="best"):
    raw = raw_config(tiny_config, keep)
    for task in raw["tasks"]:
        del task["data"]["dev"]  # no dev source: carved from train, by splits.dev_fraction
    raw["splits"] = {"dev_fraction": 0.0}
    return raw


def test_keep_best_without_any_dev_source_is_refused_before_the_data(tmp_path, tiny_config, monkeypatch):
    """No task has a dev source and dev_fraction is 0: the config alone says there
    will be no dev examples. Refused before the data work, naming the line of
    `train.keep` (or the --set that gave it)."""
    import keras_mtl.training as train_module
    from keras_mtl.errors import ConfigError
    from keras_mtl.training import train

    def no_data_work(*args, **kwargs):
        raise AssertionError("the data was read before the config error")

    monkeypatch.setattr(train_module, "prepare", no_data_work)
    monkeypatch.setattr(train_module, "load_task_data", no_data_work)
    path = tmp_path / "keep.yaml"
    text = yaml.safe_dump(_without_dev_sources(tiny_config), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip() == "keep: best")
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(str(path), workdir=workdir, verbose=0)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: train.keep: best keeps the epoch with the best dev score"), msg
    assert "\n" not in msg, msg
    assert "no task has data.dev, and splits.dev_fraction is 0" in msg and "train.keep: last" in msg, msg
    assert not workdir.exists()  # before the work dir is even created

    last = tmp_path / "last.yaml"
    last.write_text(yaml.safe_dump(_without_dev_sources(tiny_config, "last")), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--set train\.keep=best: train\.keep: best keeps"):
        train(str(last), workdir=workdir, overrides=["train.keep=best"], verbose=0)
    with pytest.raises(ConfigError, match=r"^train\.keep: best keeps the epoch .*\(no task has data\.dev"):
        train(_without_dev_sources(tiny_config), workdir=workdir, verbose=0)  # a dict: no file to name
    assert not workdir.exists()


def test_keep_best_early_check_lets_any_possible_dev_data_through(tiny_config):
    from keras_mtl.config import check_keep_best_has_dev, config_from_dict
    from keras_mtl.errors import ConfigError

    raw = _without_dev_sources(tiny_config)
    raw["splits"]["dev_fraction"] = 0.1  # carved from train
    check_keep_best_has_dev(config_from_dict(raw))
    raw = _without_dev_sources(tiny_config)
    raw["tasks"][1]["data"]["dev"] = 8  # one task has a dev source (whether it holds examples: the data tells)
    check_keep_best_has_dev(config_from_dict(raw))
    check_keep_best_has_dev(config_from_dict(_without_dev_sources(tiny_config, "last")))
    # keep: best scores the target tasks: an auxiliary task's dev data does not count
    raw["tasks"][1]["role"] = "auxiliary"
    with pytest.raises(ConfigError, match=r"no target task \(role: target\) has dev data"):
        check_keep_best_has_dev(config_from_dict(raw))


def test_keep_is_validated_and_reaches_single_task_runs(tiny_config):
    from keras_mtl.compare import subset_raw
    from keras_mtl.config import config_from_dict
    from keras_mtl.errors import ConfigError

    assert config_from_dict(tiny_config()).config.train.keep == "last"
    raw = raw_config(tiny_config, "best")
    # `keras-mtl compare` trains its single-task runs from this subset, through `train`
    assert config_from_dict(subset_raw(raw, ["topic"])).config.train.keep == "best"
    with pytest.raises(ConfigError, match=r"train\.keep"):
        config_from_dict(raw_config(tiny_config, "first"))


def test_dev_score_is_the_mean_primary_metric_with_lower_is_better_negated():
    from keras_mtl.callbacks import dev_score

    def task(name, *metrics):
        return SimpleNamespace(name=name, primary_metric=metrics[0], metrics=list(metrics), role="target")

    config = SimpleNamespace(tasks=[task("a", "accuracy", "macro_f1"), task("b", "mse"), task("c", "span_f1")])
    row = {"dev_a_accuracy": 0.8, "dev_a_macro_f1": 0.1, "dev_b_mse": 0.5, "dev_c_span_f1": 0.6}
    assert dev_score(config, row) == pytest.approx((0.8 - 0.5 + 0.6) / 3)
    assert dev_score(config, {"dev_b_mse": 0.25, "dev_c_span_f1": ""}) == -0.25  # one task scored: its own score
    assert dev_score(config, {"epoch": 1}) is None
    single = SimpleNamespace(tasks=[task("b", "mse")])
    assert dev_score(single, {"dev_b_mse": 0.1}) > dev_score(single, {"dev_b_mse": 0.2})


def test_a_backup_naming_a_missing_best_file_is_not_resumed(tmp_path):
    from keras_mtl.callbacks import RunBackup, read_backup_state, save_weights_file

    (tmp_path / "epoch-2.weights.h5").write_bytes(b"x")
    state = {"epoch": 2, "weights": "epoch-2.weights.h5", "seed_states": [],
             "best": {"epoch": 1, "score": 0.5, "weights": "best-1.weights.npz"}}
    (tmp_path / RunBackup.METADATA).write_text(json.dumps(state))
    assert read_backup_state(tmp_path) is None
    save_weights_file([np.ones((2, 3), "float32")], tmp_path / "best-1.weights.npz")
    assert read_backup_state(tmp_path)["best"]["epoch"] == 1


JAX_SCRIPT = textwrap.dedent(
    r'''
    import json, sys
    import keras
    import numpy as np
    import keras_mtl.callbacks as callbacks_module
    from keras_mtl.config import config_from_dict
    from keras_mtl.training import train
    from keras_mtl.run import load_run

    raw, workdir, steps = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    scores, captured, real = [0.9, 0.2, 0.5], {}, callbacks_module.evaluate_split

    def fake(model, split, config, classes, pad_id=0):
        result = real(model, split, config, classes, pad_id)
        epoch = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) // steps
        captured[epoch] = [np.array(w, copy=True) for w in model.network.get_weights()]
        for task in config.tasks:
            result[task.name][task.primary_metric] = scores[epoch - 1]
        return result

    callbacks_module.evaluate_split = fake
    train(config_from_dict(raw), workdir=workdir, verbose=0)
    saved = load_run(workdir).load_model().get_weights()
    same = lambda a, b: len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    run = json.load(open(f"{workdir}/run.json"))
    print("RESULT " + json.dumps({"backend": run["backend"], "kept_epoch": run["kept_epoch"],
                                  "epoch1": same(saved, captured[1]), "epoch3": same(saved, captured[3])}))
    '''
)


@pytest.mark.slow
def test_keep_best_on_jax(tmp_path, tiny_config, subprocess_env, result_of):
    pytest.importorskip("jax")
    raw = raw_config(tiny_config, "best", jit_compile="auto")
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, json.dumps(raw), str(tmp_path / "run"), str(STEPS)],
        capture_output=True, text=True, env=subprocess_env("jax"), cwd=tmp_path, timeout=600,
    )
    assert result_of(proc) == {"backend": "jax", "kept_epoch": 1, "epoch1": True, "epoch3": False}
