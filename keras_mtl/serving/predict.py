"""Predict with an exported SavedModel, exactly as TF Serving would run it.

Only TensorFlow and tensorflow_text are used here (no Keras model code): the
same signature TF Serving calls, and the same `outputs_to_predictions` the
REST and gRPC clients use, so local and remote answers are identical.
"""

from keras_mtl.errors import ModelError, ServingError
from keras_mtl.serving.layout import read_metadata, resolve_version_dir
from keras_mtl.serving.outputs import outputs_to_predictions, validate_texts


def load_signature(model_dir):
    """The `serving_default` function of a SavedModel (a version or base dir)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    version_dir = resolve_version_dir(model_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as e:  # corrupt or foreign SavedModel
        detail = " ".join(str(e).split())[:300]
        raise ModelError(f"{version_dir}: cannot load the SavedModel: {type(e).__name__}: {detail}") from None
    if "serving_default" not in loaded.signatures:
        raise ModelError(f"{version_dir}: the SavedModel has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    if set(inputs) != {"text"} or inputs["text"].dtype != tf.string:
        raise ModelError(
            f"{version_dir}: serving_default takes {sorted(inputs)}, not one string input `text`; "
            "is this a keras-mtl export?"
        )
    return loaded, fn, version_dir


def predict(model_dir, texts, batch_size=64):
    """Per-text predictions for every task: a list of dicts (see serving docs).

    Args:
        model_dir: `saved_models/<name>` (newest version) or a version dir.
        texts: list of str (or bytes).
    """
    import tensorflow as tf

    if isinstance(texts, (str, bytes)):
        raise ServingError("texts must be a list of strings, not one string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    texts = validate_texts(texts)
    loaded, fn, version_dir = load_signature(model_dir)
    meta = read_metadata(version_dir)
    tasks = meta.get("tasks") if meta else None
    results = []
    for i in range(0, len(texts), batch_size):
        out = fn(text=tf.constant(texts[i : i + batch_size], dtype=tf.string))
        results += outputs_to_predictions({k: v.numpy() for k, v in out.items()}, tasks)
    return results
