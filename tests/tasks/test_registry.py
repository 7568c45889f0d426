"""The task type registry, and a new type added as one module would add it: trained, exported, served."""

import json

import numpy as np
import pydantic
import pytest

from keras_mtl import metrics, tasks
from keras_mtl.config import TaskConfig, config_from_dict
from keras_mtl.errors import ConfigError
from keras_mtl.tasks import TaskType, get_task_type, register_task_type
from keras_mtl.tasks.classification import Classification

BUILT_IN = ("classification", "multilabel", "regression", "tagging")


def test_built_in_types_and_one_task_types_list():
    from keras_mtl.data import readers

    assert tasks.TASK_TYPES == BUILT_IN == tasks.task_type_names()
    assert readers.TASK_TYPES == BUILT_IN  # imported from the registry, not defined again
    with pytest.raises(ValueError, match="unknown task type 'ranking'; expected one of classification, multilabel"):
        get_task_type("ranking")


@pytest.mark.parametrize("name", BUILT_IN)
def test_metrics_of_every_type_exist(name):
    kind = get_task_type(name)
    assert kind.name == name and kind.metrics and set(kind.metrics) <= set(metrics.METRICS)
    assert kind.default_metric in kind.metrics


def test_primary_outputs_identify_the_type():
    suffixes = [get_task_type(n).primary_output for n in BUILT_IN]
    assert suffixes == ["_label", "_labels", "_value", "_tags"]


def test_register_rejects_what_is_not_a_task_type():
    with pytest.raises(TypeError):
        register_task_type(object)

    class Nameless(Classification):
        name = ""

    with pytest.raises(TypeError):
        register_task_type(Nameless)


def test_a_type_must_implement_the_interface():
    class Half(TaskType):
        name = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half("t")


def test_config_asks_the_type():
    assert TaskConfig.model_validate({"name": "r", "type": "regression", "data": {"format": "demo", "train": 1}}).metrics \
        == ["pearson"]
    raw = {"name": "x", "tasks": [{"name": "t", "type": "tagging", "metrics": ["mcc"],
                                   "data": {"format": "demo", "kind": "pos", "train": 4}}]}
    with pytest.raises(ConfigError, match="unknown metric 'mcc' for a tagging task; expected one of token_accuracy"):
        config_from_dict(raw)


# --- every type's head -------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_head_is_a_serializable_layer_named_after_the_task(name):
    import keras

    from keras_mtl.layers import TaskHead

    kind = get_task_type(name)
    head = kind("t", ["a", "b", "c"]).build_head(gate=True, dropout=0.25)
    assert isinstance(head, TaskHead) and head.name == "t" and head.gate and head.dropout == 0.25
    h = np.random.default_rng(0).normal(size=[2, 5, 8] if kind.token_level else [2, 8]).astype("float32")
    out = keras.ops.convert_to_numpy(head(h))
    assert out.dtype == np.float32
    again = keras.layers.deserialize(keras.layers.serialize(head))  # get_config round trip (built as saved)
    again.set_weights(head.get_weights())
    assert again.get_config() == head.get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(h)), out)


def test_options_and_layer_names_are_the_types():
    from keras_mtl.config import TASK_LAYERS, task_layers

    assert {n: get_task_type(n).options for n in BUILT_IN} == {
        "classification": ("positive_class",), "multilabel": (), "regression": (), "tagging": ()}
    assert task_layers() == TASK_LAYERS == {"pool": "pooling", "attention_pool": "attention pooling"}


def test_a_new_types_options_and_layer_suffixes_reach_the_config(monkeypatch):
    from keras_mtl.config import model_name_clash, task_layers

    class Ranked(Classification):
        name = "ranked"
        options = ("positive_class",)
        layer_suffixes = {"ranker": "ranking layer"}

    monkeypatch.setattr(tasks, "_TYPES", dict(tasks._TYPES))
    register_task_type(Ranked)
    assert task_layers()["ranker"] == "ranking layer"
    assert model_name_clash("topic_ranker", ["topic", "topic_ranker"]) == (
        "it is the name of a layer of task 'topic' (its ranking layer)")
    data = {"format": "demo", "train": 1}
    assert TaskConfig.model_validate({"name": "r", "type": "ranked", "positive_class": "1", "data": data})
    with pytest.raises(pydantic.ValidationError,
                       match="positive_class applies to classification, ranked tasks, not to a regression task"):
        TaskConfig.model_validate({"name": "r", "type": "regression", "positive_class": "1", "data": data})


# --- a new type: one module's worth of code -------------------------------------------


class Scored(Classification):
    """A class and the confidence in it: two serving outputs from one softmax head."""

    name = "scored"
    metrics = ("accuracy", "macro_f1")
    primary_output = "_best"

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        probabilities = heads[self.task]
        best = tf.gather(self.class_names(), tf.argmax(probabilities, axis=-1))
        return {f"{self.task}_best": best, f"{self.task}_confidence": tf.reduce_max(probabilities, axis=-1)}

    def prediction(self, outputs, i, need, num_words=None):
        from keras_mtl.tasks.values import as_float, as_str

        return {"best": as_str(need(f"{self.task}_best")[i]), "confidence": as_float(need(f"{self.task}_confidence")[i])}


@pytest.fixture
def scored(monkeypatch):
    monkeypatch.setattr(tasks, "_TYPES", dict(tasks._TYPES))
    return register_task_type(Scored)


def test_a_new_type_is_registered_and_validated(scored):
    assert "scored" in tasks.TASK_TYPES and get_task_type("scored") is Scored
    task = TaskConfig.model_validate({"name": "q", "type": "scored", "data": {"format": "demo", "train": 1}})
    assert task.metrics == ["accuracy"]
    with pytest.raises(pydantic.ValidationError, match="unknown metric 'mcc' for a scored task"):
        TaskConfig.model_validate({"name": "q", "type": "scored", "metrics": ["mcc"],
                                   "data": {"format": "demo", "train": 1}})


def _scored_data(root):
    """jsonl splits of the task `q`: "hi" where the text has "big", else "lo"."""
    import random

    rng = random.Random(0)
    words = "the a cat dog sat ran on mat red small".split()
    paths = {}
    for split, n in (("train", 48), ("dev", 12), ("test", 12)):
        rows = []
        for i in range(n):
            text = rng.choices(words, k=rng.randint(2, 6)) + (["big"] if i % 2 else [])
            rng.shuffle(text)
            rows.append(json.dumps({"text": " ".join(text), "label": "hi" if i % 2 else "lo"}))
        paths[split] = root / f"q_{split}.jsonl"
        paths[split].write_text("\n".join(rows) + "\n")
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.slow
def test_a_new_type_trains_exports_and_serves(scored, tiny_config, tmp_path, monkeypatch):
    import dataclasses

    import tensorflow as tf

    from keras_mtl.data import readers
    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.serving.export import export
    from keras_mtl.serving.predict import predict
    from keras_mtl.training import train
    from keras_mtl.run import load_run

    # The jsonl reader reads the new type's labels (its `label_from_json`, a classification's).
    jsonl = readers.get_reader("jsonl")
    monkeypatch.setitem(readers.READERS, "jsonl", dataclasses.replace(jsonl, task_types=(*jsonl.task_types, "scored")))
    config = tiny_config("none", tasks=("topic",))
    config["tasks"].append({"name": "q", "type": "scored", "data": {"format": "jsonl", **_scored_data(tmp_path)}})
    report = train(config, workdir=tmp_path / "run", max_steps=2, verbose=0)
    assert list(report["tasks"]["q"]) == ["accuracy"]  # the type's default metric, on its `decode`
    assert 0.0 <= report["tasks"]["q"]["accuracy"] <= 1.0
    version = export(tmp_path / "run", tmp_path / "export", warmup=False)

    texts = ["the big dog sat on the mat", "a small cat", "big"]
    served = tf.saved_model.load(str(version)).signatures["q"](text=tf.constant(texts))
    assert {"q_best", "q_confidence"} <= set(served) and not any(k.startswith("topic") for k in served)
    best, confidence = served["q_best"].numpy(), served["q_confidence"].numpy()
    # What the trained Keras model computes on the same word pieces.
    run = load_run(tmp_path / "run")
    encoder = make_encoder(run.vocabulary, run.config.model)
    ids = encoder(tf.constant(texts))["token_ids"].to_tensor(default_value=encoder.pad_id)
    probabilities = np.asarray(run.load_model()({"token_ids": ids, "padding_mask": ids != encoder.pad_id})["q"])
    head = get_task_type("scored")("q", run.classes["q"])
    assert [b.decode() for b in best] == [head.decode({"q": probabilities}, i) for i in range(len(texts))]
    np.testing.assert_allclose(confidence, probabilities.max(-1), rtol=1e-5)
    # The client reads the new type's JSON (its `prediction`), inferred from the metadata.
    answers = predict(version, texts, task="q")
    assert [a["q"] for a in answers] == [head.prediction(
        {"q_best": best, "q_confidence": confidence}, i, lambda k: {"q_best": best, "q_confidence": confidence}[k])
        for i in range(len(texts))]
    assert all(a["q"]["best"] in ("hi", "lo") and 0.5 <= a["q"]["confidence"] <= 1.0 for a in answers)
