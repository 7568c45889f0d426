"""The task type registry, and a new type added as one module would add it (with two outputs)."""

from types import SimpleNamespace

import numpy as np
import pydantic
import pytest

from keras_mtl import metrics, tasks
from keras_mtl.config import TaskConfig, config_from_dict
from keras_mtl.errors import ConfigError
from keras_mtl.tasks import TaskType, for_task, get_task_type, register_task_type
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


# --- a new type: one module's worth of code -------------------------------------------


class Scored(Classification):
    """A class and a confidence in it: two model outputs for one task."""

    name = "scored"
    metrics = ("accuracy", "macro_f1")
    primary_output = "_best"

    @property
    def output_names(self):
        return (self.task, f"{self.task}_confidence")

    def build_heads(self, h):
        import keras

        heads = super().build_heads(h)
        confidence = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{self.task}_confidence")(h)
        heads[f"{self.task}_confidence"] = keras.layers.Reshape((), name=f"{self.task}_confidence_value")(confidence)
        return heads

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        best = tf.gather(self.class_names(), tf.argmax(heads[self.task], axis=-1))
        return {f"{self.task}_best": best, f"{self.task}_confidence": heads[f"{self.task}_confidence"]}

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


def test_a_new_type_with_two_outputs_builds_exports_and_serves(scored, tiny_config):
    import tensorflow as tf

    from keras_mtl.model import build_model
    from keras_mtl.serving.outputs import outputs_to_predictions

    config = config_from_dict(tiny_config("none", tasks=("topic", "pos"))).config
    config = config.model_copy(update={"tasks": [*config.tasks, SimpleNamespace(name="q", type="scored", data=SimpleNamespace(_options=SimpleNamespace()))]})
    classes = {"topic": ["a", "b"], "pos": ["D", "N", "V"], "q": ["lo", "hi"]}
    model = build_model(config, classes, vocabulary_size=50)
    assert list(model.output) == ["topic", "pos", "q", "q_confidence"]  # the built-in outputs keep their keys
    ids = np.array([[2, 5, 6, 0]], np.int32)
    out = {k: np.asarray(v) for k, v in model.predict_on_batch({"token_ids": ids, "padding_mask": ids != 0}).items()}
    head = for_task(config.tasks[2], classes["q"])
    assert head.decode(out, 0) in ("lo", "hi") and out["q_confidence"].shape == (1,)
    served = head.serving_outputs({k: tf.constant(out[k]) for k in head.output_names}, 1, None, None)
    (pred,) = outputs_to_predictions({k: v.numpy() for k, v in served.items()})  # the type inferred from `_best`
    assert pred["q"] == {"best": head.decode(out, 0), "confidence": float(str(out["q_confidence"][0]))}
