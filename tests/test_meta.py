"""Reptile meta-training and few-shot adaptation (keras_mtl/meta/: reptile.py, adapt.py), at tiny sizes."""

import json

import numpy as np
import pytest

from keras_mtl import transfer
from keras_mtl.meta import adapt, batches, reptile
from keras_mtl.config import config_from_dict
from keras_mtl.data.example import Example
from keras_mtl.errors import ConfigError, DataError, ModelError

from helpers import save_tiny_preset

TINY_MODEL = {
    "vocabulary_size": 200,
    "max_sequence_length": 24,
    "hidden_dim": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_dim": 32,
    "dropout": 0.0,
    "task_conditioning": "embedding",
}
TINY_TRAIN = {"batch_size": 8, "bucket_lengths": [24], "jit_compile": False, "eval_batch_size": 64}


def _meta_config():
    """Two demo tasks (a classification, a tagging task); `sentiment` is left out."""
    return {
        "name": "tiny_meta",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 64, "dev": 16, "test": 16}},
            {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 32, "dev": 8, "test": 8}},
        ],
        "model": TINY_MODEL,
        "train": TINY_TRAIN,
    }


def _new_task_config(train=40, test=24):
    return {
        "name": "tiny_new",
        "seed": 0,
        "tasks": [
            {"name": "sentiment", "type": "classification", "data": {"format": "demo", "kind": "sentiment", "train": train, "test": test}}
        ],
        "train": {"batch_size": 8, "learning_rate": 0.005},
    }


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta") / "run"
    out = reptile.meta_train(_meta_config(), root, inner_steps=2, meta_steps=3, inner_lr=1e-3, meta_lr=0.5, verbose=0)
    return out


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------


def test_reptile_update_moves_toward_the_mean_of_adapted_weights():
    theta = [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32)]
    one = [np.array([3.0, 2.0], np.float32), np.array([[4.0]], np.float32)]
    two = [np.array([1.0, 6.0], np.float32), np.array([[0.0]], np.float32)]
    out = reptile.reptile_update(theta, [one], 0.5)
    np.testing.assert_allclose(out[0], [2.0, 2.0])
    np.testing.assert_allclose(out[1], [[2.0]])
    out = reptile.reptile_update(theta, [one, two], 1.0)  # the average of the two tasks' updates
    np.testing.assert_allclose(out[0], [2.0, 4.0])
    np.testing.assert_allclose(out[1], [[2.0]])
    assert out[0].dtype == np.float32
    np.testing.assert_allclose(reptile.reptile_update(theta, [one], 0.0)[0], theta[0])


def test_epsilon_is_linearly_annealed():
    assert reptile._epsilon(1.0, 0, 4, True) == 1.0
    assert reptile._epsilon(1.0, 2, 4, True) == 0.5
    assert reptile._epsilon(0.3, 3, 4, False) == 0.3


def _examples(counts):
    return [Example(f"{label} {i}", {"t": label}, f"f:{i}") for label, n in counts.items() for i in range(n)]


def test_sample_shots_is_k_per_class_and_seeded():
    examples = _examples({"a": 10, "b": 6})
    s0 = adapt.sample_shots(examples, "t", ["a", "b"], 3, seed=0)
    assert [ex.labels["t"] for ex in s0] == ["a"] * 3 + ["b"] * 3
    assert len({ex.text for ex in s0}) == 6
    assert [ex.text for ex in adapt.sample_shots(examples, "t", ["a", "b"], 3, seed=0)] == [ex.text for ex in s0]
    others = [[ex.text for ex in adapt.sample_shots(examples, "t", ["a", "b"], 3, seed=s)] for s in range(1, 6)]
    assert any(o != [ex.text for ex in s0] for o in others)


def test_sample_shots_names_the_short_class_and_counts():
    examples = _examples({"a": 10, "b": 2})
    with pytest.raises(DataError, match=r"class 'b' has only 2.*'a': 10, 'b': 2"):
        adapt.sample_shots(examples, "t", ["a", "b"], 5, seed=0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="shots must be an integer >= 1"):
            adapt.sample_shots(examples, "t", ["a", "b"], bad, seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inner_steps": 0}, "inner_steps must be an integer >= 1"),
        ({"meta_steps": 0}, "meta_steps must be an integer >= 1"),
        ({"meta_lr": 0.0}, r"meta_lr must be in \(0, 1\]"),
        ({"meta_lr": 1.5}, r"meta_lr must be in \(0, 1\]"),
        ({"inner_lr": -1.0}, "inner_lr must be > 0"),
        ({"inner_optimizer": "rmsprop"}, "unknown inner optimizer 'rmsprop'; expected one of adam, sgd"),
        ({"task_sampling": "random"}, "unknown task sampling 'random'"),
    ],
)
def test_meta_train_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        reptile.meta_train(_meta_config(), tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------
# The Reptile step on a real model
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_meta_step_moves_shared_weights_only_by_epsilon():
    import keras

    from keras_mtl.data.load import load_task_data
    from keras_mtl.data.pipeline import encode_split
    from keras_mtl.data.tokenize import compute_vocabulary, make_encoder
    from keras_mtl.model import build_network

    raw = _meta_config()
    raw["tasks"] = raw["tasks"][:1] + [
        {"name": "sentiment", "type": "classification", "data": {"format": "demo", "kind": "sentiment", "train": 32}}
    ]
    raw["model"] = dict(TINY_MODEL, num_layers=0)  # embedding + norm: a small graph to trace
    config = config_from_dict(raw).config
    keras.utils.set_random_seed(0)
    data = load_task_data(config)
    vocab = compute_vocabulary([ex.text for ex in data.splits["train"]], 200, True, config.task_names)
    enc = make_encoder(vocab, config.model)
    train = encode_split(data.splits["train"], enc, config.tasks, data.classes)
    model = build_network(config, data.classes, vocab)
    rep = reptile.Reptile(model, config, inner_lr=0.05, inner_optimizer="sgd")
    shared_names = {v.path for v in rep.shared}
    assert any(p.startswith("shared_encoder/embedding/") for p in shared_names)
    assert any(p.startswith("shared_encoder/embedding_norm/") for p in shared_names)
    assert not any(p.startswith(("topic/", "sentiment/")) for p in shared_names)
    assert {v.path.split("/")[0] for v in rep.specific["topic"]} == {"topic"}

    rows = list(train.indices("topic")[:8])
    batch = batches.make_batch(train, rows, config.tasks[0], 0, [24], enc.pad_id, sees_task=True)
    assert batch[0]["task_ids"].tolist() == [0] * 8 and batch[1].shape == (8,)
    assert float(batch[2].sum()) == 8.0

    def values(vs):
        return [np.array(keras.ops.convert_to_numpy(v)) for v in vs]

    theta = values(rep.shared)
    head_topic, head_sent = values(rep.specific["topic"]), values(rep.specific["sentiment"])
    rep.meta_step([("topic", [batch, batch])], epsilon=0.0)
    for a, b in zip(values(rep.shared), theta):  # epsilon 0: the shared weights do not move
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(values(rep.specific["topic"]), head_topic))
    for a, b in zip(values(rep.specific["sentiment"]), head_sent):  # another task's head is untouched
        np.testing.assert_array_equal(a, b)

    # epsilon 0.5: halfway between theta and the inner loop's result (SGD, same batches).
    rep.set_shared(theta)
    for v, h in zip(rep.specific["topic"], head_topic):
        v.assign(h)
    snapshot = values(rep.shared)
    for x, y, sw in [batch, batch]:
        rep.networks["topic"].train_on_batch(x, y, sample_weight=sw)
    adapted = values(rep.shared)
    rep.set_shared(snapshot)
    for v, h in zip(rep.specific["topic"], head_topic):
        v.assign(h)
    rep.meta_step([("topic", [batch, batch])], epsilon=0.5)
    moved = values(rep.shared)
    assert any(not np.allclose(a, b) for a, b in zip(adapted, snapshot))
    for m, a, t in zip(moved, adapted, snapshot):
        np.testing.assert_allclose(m, t + 0.5 * (a - t), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------
# meta_train -> work dir -> adapt
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_meta_train_writes_a_work_dir(meta_run):
    from keras_mtl.run import load_run

    for name in ("config.yaml", "vocab.txt", "run.json", "model.keras", "report.json", "metrics.csv"):
        assert (meta_run / name).exists(), name
    run = load_run(meta_run)
    assert run.config.task_names == ["topic", "pos"]
    info = json.loads((meta_run / "run.json").read_text())
    assert info["meta"]["algorithm"] == "reptile"
    assert info["meta"]["inner_steps"] == 2 and info["meta"]["meta_steps"] == 3
    assert info["meta"]["task_probabilities"] == {"topic": 0.5, "pos": 0.5}
    shared = info["meta"]["shared_weights"]
    assert any(s.startswith("shared_encoder/encoder_0/") for s in shared)
    assert not any(s.startswith("topic/") for s in shared)
    last = info["history"][-1]
    assert last["meta_step"] == 3
    assert 0.0 <= last["dev_topic_accuracy"] <= 1.0 and "dev_pos_token_accuracy" in last
    model = run.load_model()
    assert set(model.output) == {"topic", "pos"}


@pytest.mark.slow
def test_adapt_copies_the_encoder_and_fits_a_fresh_head(meta_run, tmp_path):
    import keras

    from keras_mtl.run import load_run

    result = adapt.adapt(meta_run, _new_task_config(), shots=3, seed=1, steps=0, out=tmp_path / "adapted")
    assert result["task"] == "sentiment" and result["train_examples"] == 6
    assert set(result["class_counts"]) == {"negative", "positive"}
    assert result["copied_layers"] == ["shared_encoder"]  # the shared encoder, one layer
    assert result["fresh_layers"] == ["sentiment"]
    assert 0.0 <= result["test"]["accuracy"] <= 1.0 and result["test_examples"] == 24
    assert result["test_overlap_with_workdir_train"] == 0
    # steps=0: the adapted network's encoder is exactly the meta-learned one.
    source, adapted = (load_run(d).load_model().get_layer("shared_encoder") for d in (meta_run, tmp_path / "adapted"))
    for a, b in zip(source.get_weights(), adapted.get_weights(), strict=True):
        if a.shape == b.shape:  # all but the per-task tables (2 meta-training tasks, 1 new one)
            np.testing.assert_array_equal(a, b)
    assert [layer.name for layer in adapted.layers_in_order()][:2] == ["embedding", "task_embedding"]
    # The per-task embedding table starts from the mean over the meta-training tasks.
    table = keras.ops.convert_to_numpy(source.task_embedding.embeddings)
    np.testing.assert_allclose(adapted.task_embedding.get_weights()[0], table.mean(0, keepdims=True), rtol=1e-6)
    assert json.loads((tmp_path / "adapted" / "adapt.json").read_text())["shots"] == 3


@pytest.mark.slow
def test_adapt_from_scratch_copies_nothing(meta_run):
    result = adapt.adapt(meta_run, _new_task_config(), shots=2, seed=0, steps=0, init="scratch", check_overlap=False)
    assert result["copied_layers"] == [] and "shared_encoder" in result["fresh_layers"]
    assert result["test_overlap_with_workdir_train"] is None
    assert set(result["test"]) == {"accuracy"}


def _tiny_network(tasks, classes):
    from keras_mtl.model import build_network

    raw = _meta_config()
    raw["tasks"] = [t for t in raw["tasks"] + _new_task_config()["tasks"] if t["name"] in tasks]
    config = config_from_dict(raw).config
    return build_network(config, {t: classes for t in tasks}, [f"piece{i}" for i in range(40)])


def test_transfer_weights_copies_the_shared_encoder_whatever_its_name():
    source = _tiny_network(["topic"], ["a", "b"])  # one task: the tables are copied as they are
    target = _tiny_network(["sentiment"], ["neg", "pos"])
    # A SharedEncoder matched by role, not by name.
    target.get_layer("shared_encoder").name = "renamed_encoder"
    copied, fresh = transfer.transfer_weights(source, target, ["topic"], ["sentiment"])
    assert copied == ["shared_encoder"] and fresh == ["sentiment"]
    for a, b in zip(source.get_layer("shared_encoder").get_weights(), target.get_layer("renamed_encoder").get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_transfer_weights_from_a_network_saved_before_the_encoder_was_one_layer():
    """Before, the encoder's layers were the network's own (`embedding`, `task_embedding`, `encoder_0`, ...):
    each goes into the layer of the target's SharedEncoder of the same name and class."""
    import keras

    from keras_mtl.layers import SharedEncoder

    ids = np.array([[2, 5, 6, 0]], "int32")
    encoder = SharedEncoder(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                            max_sequence_length=25, num_tasks=2, task_conditioning="embedding")
    encoder(ids, ids != 0, task_ids=np.array([0]))
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    task_ids = keras.Input((), dtype="int32", name="task_ids")
    x = encoder.task_embedding(encoder.embedding(token_ids), task_ids)
    x = encoder.encoder_layers[0](encoder.embedding_dropout(encoder.embedding_norm(x)), padding_mask=padding_mask)
    topic = keras.layers.Dense(2, name="topic")(x[:, 0, :])
    old = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask, "task_ids": task_ids}, {"topic": topic})

    target = _tiny_network(["sentiment"], ["neg", "pos"])
    copied, fresh = transfer.transfer_weights(old, target, ["topic", "pos"], ["sentiment"])
    assert copied == ["embedding", "task_embedding", "embedding_norm", "encoder_0"] and fresh == ["sentiment"]
    new = target.get_layer("shared_encoder")
    for a, b in zip(encoder.encoder_layers[0].get_weights(), new.encoder_layers[0].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    table = keras.ops.convert_to_numpy(encoder.task_embedding.embeddings)
    np.testing.assert_allclose(new.task_embedding.get_weights()[0], table.mean(0, keepdims=True), rtol=1e-6)


def test_a_failed_meta_train_keeps_the_previous_run(tmp_path):
    # Nothing a user has may be destroyed before the new result exists: a
    # re-run whose data fails leaves the previous model, report and config.
    root = tmp_path / "run"
    reptile.meta_train(_meta_config(), root, inner_steps=1, meta_steps=1, verbose=0)
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file() and p.name != ".lock"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b", "label": "x"}\n{"text": \n', encoding="utf-8")
    config = _meta_config()
    config["tasks"][0]["data"] = {"format": "jsonl", "train": str(bad)}
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        reptile.meta_train(config, root, inner_steps=1, meta_steps=1, verbose=0)
    after = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before and not (root / "backup").exists()


@pytest.mark.slow
def test_adapt_bad_input(meta_run, tmp_path):
    with pytest.raises(DataError, match=r"--shots 500 needs 500 training examples of every class, but class '\w+' has only \d+"):
        adapt.adapt(meta_run, _new_task_config(), shots=500)
    with pytest.raises(ConfigError, match="shots must be an integer >= 1"):
        adapt.adapt(meta_run, _new_task_config(), shots=0)
    with pytest.raises(ConfigError, match="unknown init 'imagenet'; expected one of pretrained, scratch"):
        adapt.adapt(meta_run, _new_task_config(), shots=1, init="imagenet")
    for lr in (-1e-3, 0.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"--lr must be a finite number > 0"):
            adapt.adapt(meta_run, _new_task_config(), shots=1, learning_rate=lr)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no trained model here"):
        adapt.adapt(tmp_path / "empty", _new_task_config(), shots=1)
    with pytest.raises(ModelError, match="work dir not found"):
        adapt.adapt(tmp_path / "missing", _new_task_config(), shots=1)
    tagging = _new_task_config()
    tagging["tasks"] = [{"name": "tags", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 8}}]
    with pytest.raises(ConfigError, match="adapt fits classification tasks"):
        adapt.adapt(meta_run, tagging, shots=1)
    two = _new_task_config()
    two["tasks"].append({"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 8}})
    with pytest.raises(ConfigError, match="pick one with --task"):
        adapt.adapt(meta_run, two, shots=1)


def test_cli_arguments_parse():
    import argparse

    from keras_mtl.cli import adapt as adapt_command
    from keras_mtl.cli import meta_train as meta_train_command

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    meta_train_command.add_arguments(sub.add_parser("meta-train"))
    adapt_command.add_arguments(sub.add_parser("adapt"))
    a = p.parse_args(["meta-train", "c.yaml", "--inner-steps", "3", "--meta-lr", "0.5", "--no-anneal", "--set", "seed=1"])
    assert (a.inner_steps, a.meta_steps, a.meta_lr, a.no_anneal, a.set) == (3, 200, 0.5, True, ["seed=1"])
    a = p.parse_args(["adapt", "runs/x", "new.yaml", "--shots", "8", "--init", "scratch", "--seed", "2"])
    assert (a.workdir, a.new_task_config, a.shots, a.init, a.seed, a.steps) == ("runs/x", "new.yaml", 8, "scratch", 2, 100)
    with pytest.raises(SystemExit):
        p.parse_args(["adapt", "runs/x", "new.yaml"])  # --shots is required


@pytest.mark.slow
def test_adapter_runs_are_reproducible_and_independent(meta_run):
    adapter = adapt.Adapter(meta_run, _new_task_config(), check_overlap=False)
    first = adapter.run(2, seed=3, steps=2)
    other = adapter.run(4, seed=4, steps=2)
    again = adapter.run(2, seed=3, steps=2)  # the state left by the other run is fully reset
    assert first["sample"] == again["sample"] and first["sample"] != other["sample"]
    assert first["steps"] == 2 and first["train_examples"] == 4 and other["train_examples"] == 8
    assert np.isfinite(first["final_train_loss"])
    assert first["final_train_loss"] == pytest.approx(again["final_train_loss"], rel=1e-5)
    assert first["test"] == again["test"]


# --------------------------------------------------------------------------
# adapt from a run on a pretrained preset (the backbone called as a whole)
# --------------------------------------------------------------------------


def _tiny_preset(path):
    """`save_tiny_preset(path)` whose backbone, like a Hugging Face-format preset's
    (all-MiniLM-L6-v2), has no saved name: Keras numbers each one it builds in the
    process (`bert_backbone`, `bert_backbone_1`, ...)."""
    save_tiny_preset(path)
    config = json.loads((path / "config.json").read_text())
    del config["config"]["name"]
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    """A multi-task run on the tiny preset with `task_conditioning: none` (2 steps)."""
    from keras_mtl.training import train

    root = tmp_path_factory.mktemp("preset-run")
    raw = _meta_config()
    raw["model"] = {"preset": str(_tiny_preset(root / "preset")), "max_sequence_length": 24, "task_conditioning": "none"}
    raw["train"] = dict(TINY_TRAIN, learning_rate=0.01)
    train(config_from_dict(raw), workdir=root / "run", max_steps=2, verbose=0)
    return root / "run"


def _backbone_of(model):
    return model.get_layer("shared_encoder").backbone


@pytest.mark.slow
def test_adapt_from_a_preset_run_starts_from_the_runs_encoder(preset_run):
    from keras_mtl.pretrained import load_backbone
    from keras_mtl.run import load_run

    run = load_run(preset_run)
    trained = _backbone_of(run.load_model())
    # Training moved the encoder away from the preset: equal to the run's is not equal to the preset's.
    preset = load_backbone(run.config.model)
    assert any(not np.allclose(a, b) for a, b in zip(trained.get_weights(), preset.get_weights()))

    adapter = adapt.Adapter(preset_run, _new_task_config(), check_overlap=False)
    for seed in (0, 1):  # the network built in __init__, then the one each run resets to
        result = adapter.run(2, seed=seed, steps=0)
        backbone = _backbone_of(adapter.model)
        assert backbone.name != trained.name  # the auto-numbered second instance: not found by name
        assert result["copied_layers"] == ["shared_encoder"]  # the shared encoder, by role
        assert result["fresh_layers"] == ["sentiment"]
        for a, b in zip(backbone.get_weights(), trained.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_adapt_refuses_when_no_shared_layer_is_copied(preset_run, tmp_path, capsys):
    import shutil

    import keras
    import yaml

    from keras_mtl.cli import main

    # A work dir whose model shares no layer with the network of its config.
    workdir = tmp_path / "run"
    shutil.copytree(preset_run, workdir)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="unrelated")])
    other.save(workdir / "model.keras")
    with pytest.raises(ModelError, match=r"^adapt: no shared layer of the network in .* could be copied into the new "
                                         r"network \(left as initialized: shared_encoder, sentiment\); refusing"):
        adapt.adapt(workdir, _new_task_config(), shots=2, steps=0, check_overlap=False)
    config = tmp_path / "new.yaml"
    config.write_text(yaml.safe_dump(_new_task_config()))
    out = tmp_path / "adapted"
    assert main(["adapt", str(workdir), str(config), "--shots", "2", "--steps", "1", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    [line] = captured.err.splitlines()
    assert line.startswith("keras-mtl adapt: error: adapt: no shared layer of the network in "), line


@pytest.mark.slow
def test_a_preset_run_is_evaluated_and_exported_with_the_preset_moved_away(preset_run, tmp_path, serve_without_keras):
    """The work dir keeps the preset's tokenizer (tokenizer.json) and the model holds the
    backbone: evaluate and export need the work dir alone."""
    import shutil

    from keras_mtl.evaluation import evaluate_run
    from keras_mtl.run import load_run
    from keras_mtl.serving.export import export

    run = load_run(preset_run)
    assert run.info.tokenizer == "tokenizer.json" and (preset_run / "tokenizer.json").is_file()
    with_preset = evaluate_run(preset_run)
    preset, moved = preset_run.parent / "preset", tmp_path / "moved-away"
    shutil.move(str(preset), str(moved))
    try:
        assert evaluate_run(preset_run)["tasks"] == with_preset["tasks"]
        version = export(preset_run, out=tmp_path / "saved", warmup=False)
        served = serve_without_keras([version], ["the brilliant chef cooked quickly ."])[str(version)]
        assert set(served["outputs"]) >= {"topic_label", "num_words"}
    finally:
        shutil.move(str(moved), str(preset))
