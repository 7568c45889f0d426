"""MT-DNN's second stage: `finetune` a trained multi-task run on one of its tasks."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from keras_mtl.errors import ConfigError, ModelError


def _tiny_multitask(tiny_config, tmp_path, conditioning="embedding"):
    from keras_mtl.config import config_from_dict
    from keras_mtl.training import train

    raw = tiny_config(conditioning, name=f"ft-{conditioning}", dev=8, test=8)
    train(config_from_dict(raw), workdir=tmp_path / "mtl", max_steps=3, verbose=0)
    return tmp_path / "mtl"


@pytest.mark.slow
def test_finetune_starts_from_the_multitask_weights_and_the_tasks_own_row(tmp_path, tiny_config):
    """At step 0 the fine-tuned network's encoder equals the run's, its task embedding is
    the run's row of the task, and the task's head is the run's."""
    import keras

    from keras_mtl.finetuning import StartFrom, finetune_config
    from keras_mtl.model import build_network
    from keras_mtl.run import load_run

    run = load_run(_tiny_multitask(tiny_config, tmp_path))
    source = run.load_model()
    loaded = finetune_config(run, "sentiment")
    assert loaded.config.task_names == ["sentiment"] and loaded.config.name == "ft-embedding-sentiment-finetuned"
    keras.utils.set_random_seed(123)  # a seed whose initial weights differ from the run's
    network = build_network(loaded.config, {"sentiment": run.classes["sentiment"]}, run.vocabulary)
    copied, fresh = StartFrom(run, "sentiment").initialize(network)
    assert "shared_encoder" in copied and "sentiment" in copied and fresh == []
    src, dst = source.get_layer("shared_encoder"), network.get_layer("shared_encoder")
    row = run.task_names.index("sentiment")
    for a, b in zip(src.weights, dst.weights):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        if a.shape == b.shape:
            np.testing.assert_array_equal(a, b)
        else:  # the task embedding table: [3 tasks, H] -> [1, H], the task's own row
            assert a.shape[0] == len(run.task_names) and b.shape[0] == 1
            np.testing.assert_array_equal(a[row], b[0])
    for a, b in zip(source.get_layer("sentiment").weights, network.get_layer("sentiment").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_a_head_saved_before_task_heads_is_copied_by_part():
    """A network saved before heads were TaskHead layers (a Dense `<task>`, a regression's
    `<task>_value`, a gate `<task>_gate`): fine-tuning copies them into the TaskHead's parts."""
    import keras

    from keras_mtl.layers import TaskGate, TaskHead
    from keras_mtl.transfer import transfer_weights

    pooled = keras.Input(shape=(8,), name="pooled")
    old = {"topic": keras.layers.Dense(3, name="topic")(TaskGate(name="topic_gate")(pooled)),
           "size": keras.layers.Reshape((), name="size")(keras.layers.Dense(1, name="size_value")(pooled))}
    source = keras.Model(pooled, old)
    new_in = keras.Input(shape=(8,), name="pooled")
    target = keras.Model(new_in, {"topic": TaskHead(3, gate=True, name="topic")(new_in),
                                  "size": TaskHead(1, squeeze=True, name="size")(new_in)})
    copied, fresh = transfer_weights(source, target, ["topic", "size"], ["topic", "size"])
    assert sorted(copied) == ["size", "topic"] and fresh == []
    head = target.get_layer("topic")
    for a, b in [(source.get_layer("topic"), head.output_dense), (source.get_layer("topic_gate"), head.task_gate),
                 (source.get_layer("size_value"), target.get_layer("size").output_dense)]:
        for x, y in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_train_with_init_from_starts_from_the_runs_weights(tmp_path, tiny_config, monkeypatch):
    """`finetune` (train with init_from): the network that `fit` starts from has the run's
    encoder and the task's head, not the preset's or fresh ones."""
    import keras

    from keras_mtl import training
    from keras_mtl.finetuning import finetune
    from keras_mtl.run import load_run

    workdir = _tiny_multitask(tiny_config, tmp_path, conditioning="none")
    source = load_run(workdir).load_model()
    at_step_0 = {}
    compiled = training.compiled_trainer

    def spy(network, config, total_steps):
        at_step_0.update({name: [keras.ops.convert_to_numpy(w) for w in network.get_layer(name).weights]
                          for name in ("shared_encoder", "topic")})
        return compiled(network, config, total_steps)

    monkeypatch.setattr(training, "compiled_trainer", spy)
    keras.utils.set_random_seed(123)
    finetune(workdir, "topic", out=tmp_path / "ft", max_steps=1, verbose=0)
    for name, weights in at_step_0.items():
        expected = [keras.ops.convert_to_numpy(w) for w in source.get_layer(name).weights]
        assert len(weights) == len(expected) > 0, name
        for a, b in zip(expected, weights):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_finetune_trains_records_its_start_exports_and_serves(tmp_path, tiny_config, serve_without_keras):
    from keras_mtl.finetuning import finetune
    from keras_mtl.run import load_run
    from keras_mtl.serving.export import export

    workdir = _tiny_multitask(tiny_config, tmp_path, conditioning="none")
    report = finetune(workdir, "topic", out=tmp_path / "ft", max_steps=2, verbose=0)
    assert set(report["tasks"]) == {"topic"}
    run = load_run(tmp_path / "ft")
    assert run.task_names == ["topic"] and run.vocabulary == load_run(workdir).vocabulary
    start = run.info.finetuned_from
    assert start["workdir"] == str(workdir) and start["task"] == "topic" and len(start["model_sha256"]) == 64
    assert "Started from the multi-task run" in (tmp_path / "ft" / "report.md").read_text()
    version = export(tmp_path / "ft", out=tmp_path / "saved", warmup=False)
    served = serve_without_keras([version], ["the brilliant chef cooked quickly", "a storm fell"])[str(version)]
    assert len(served["outputs"]["topic_label"]) == 2


@pytest.mark.slow
def test_a_killed_finetune_resumes_and_a_retrained_start_is_refused(tmp_path, tiny_config, interrupt_after):
    from keras_mtl.config import config_from_dict
    from keras_mtl.finetuning import finetune
    from keras_mtl.training import train

    workdir = _tiny_multitask(tiny_config, tmp_path, conditioning="none")
    interrupt_after(1)
    with pytest.raises(interrupt_after.error):
        finetune(workdir, "topic", out=tmp_path / "ft", overrides=["train.epochs=2", "train.steps_per_epoch=2"],
                 verbose=0)
    assert (tmp_path / "ft" / "backup").is_dir()
    interrupt_after(None)
    raw = tiny_config("none", name="ft-none", dev=8, test=8, seed=5)  # the multi-task run trained again
    train(config_from_dict(raw), workdir=workdir, max_steps=3, verbose=0)
    with pytest.raises(ConfigError, match="cannot resume the killed run"):
        finetune(workdir, "topic", out=tmp_path / "ft", overrides=["train.epochs=2", "train.steps_per_epoch=2"],
                 verbose=0)
    report = finetune(workdir, "topic", out=tmp_path / "ft", overrides=["train.epochs=2", "train.steps_per_epoch=2"],
                      verbose=0, fresh=True)
    assert report["epochs"] == 2


def test_finetune_names_an_unknown_task_and_a_missing_run(tmp_path, tiny_run):
    from keras_mtl.finetuning import finetune

    with pytest.raises(ConfigError, match=r"has no task 'nope' \(its tasks: topic, sentiment, pos\)"):
        finetune(tiny_run["workdir"], "nope", out=tmp_path / "ft")
    with pytest.raises(ModelError, match="work dir not found"):
        finetune(tmp_path / "nowhere", "topic", out=tmp_path / "ft")
    assert not (tmp_path / "ft").exists()


@pytest.mark.slow
def test_finetune_refuses_a_task_whose_labels_changed(tmp_path, tiny_config):
    """The task's data now has other labels than the run was trained on: its head cannot start from the run's."""
    from keras_mtl.finetuning import finetune

    workdir = _tiny_multitask(tiny_config, tmp_path, conditioning="none")
    data = tmp_path / "other.jsonl"
    data.write_text("".join(json.dumps({"text": f"text number {i}", "label": "x" if i % 2 else "y"}) + "\n"
                            for i in range(40)))
    overrides = [f"tasks.sentiment.data={{format: jsonl, train: {data}, text_field: text, label_field: label}}"]
    with pytest.raises(ConfigError, match=r"task 'sentiment' of .* was trained on the labels 'negative', 'positive', "
                                          r"but its data now has 'x', 'y'"):
        finetune(workdir, "sentiment", out=tmp_path / "ft", overrides=overrides, verbose=0)
    assert not (tmp_path / "ft" / "model.keras").exists()


@pytest.mark.slow
def test_finetune_trains_on_jax(tmp_path, tiny_config, subprocess_env):
    pytest.importorskip("jax")
    raw = tiny_config("none", name="ft-jax", seed=0, tasks=("topic", "pos"), dev=8, test=8,
                      bucket_lengths=[16], jit_compile="auto")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    for argv in (["train", str(config), "--workdir", str(tmp_path / "mtl"), "--max-steps", "2", "--quiet"],
                 ["finetune", str(tmp_path / "mtl"), "--task", "pos", "--workdir", str(tmp_path / "ft"),
                  "--max-steps", "2", "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "keras_mtl.cli", *argv], capture_output=True, text=True,
                              env=subprocess_env("jax"), cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert report["backend"] == "jax" and set(report["tasks"]) == {"pos"}
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["finetuned_from"]["task"] == "pos"
