"""Models saved before the heads were `TaskHead` layers still load, and the types read their outputs.

Before, `build_model` put each task's head together from top-level layers:
`<task>_gate` (TaskGate), `<task>_dropout`, then a Dense named `<task>`
(regression: a Dense `<task>_value` and a Reshape named `<task>`). The
model below is built the same way and saved as `model.keras` is.
"""

from types import SimpleNamespace

import numpy as np

from keras_mtl.tasks import for_task
from keras_mtl.tasks.values import as_float


def _old_style_model():
    import keras

    from keras_mtl.layers import TaskGate

    h = keras.Input(shape=(8,), dtype="float32", name="pooled")
    outputs = {}
    for task in ("topic", "size"):
        x = TaskGate(name=f"{task}_gate")(h)
        x = keras.layers.Dropout(0.1, name=f"{task}_dropout")(x)
        if task == "size":
            value = keras.layers.Dense(1, dtype="float32", name="size_value")(x)
            outputs[task] = keras.layers.Reshape((), name="size")(value)
        else:
            outputs[task] = keras.layers.Dense(3, activation="softmax", dtype="float32", name="topic")(x)
    return keras.Model(h, outputs)


def test_an_old_style_model_loads_and_its_outputs_decode(tmp_path):
    import keras

    import keras_mtl.layers  # noqa: F401  (registers the custom layers, as `workdir.load_model` does)

    model = _old_style_model()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert {layer.name for layer in loaded.layers} >= {"topic_gate", "topic_dropout", "size_value", "size"}
    h = np.random.default_rng(0).normal(size=[2, 8]).astype("float32")
    before, after = model.predict_on_batch(h), loaded.predict_on_batch(h)
    for name in ("topic", "size"):
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before[name]))
    out = {k: np.asarray(v) for k, v in after.items()}
    topic = for_task(SimpleNamespace(name="topic", type="classification"), ["a", "b", "c"])
    size = for_task(SimpleNamespace(name="size", type="regression"))
    assert topic.decode(out, 0) == ["a", "b", "c"][int(np.argmax(out["topic"][0]))]
    assert out["size"].shape == (2,) and size.decode(out, 1) == float(out["size"][1])
    served = size.serving_outputs({"size": out["size"]}, 2, None, None)
    assert as_float(served["size_value"].numpy()[1]) == as_float(out["size"][1])
