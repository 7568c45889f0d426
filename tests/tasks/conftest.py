"""Fixtures of the task type tests: run a type's head, serving ops and JSON on tiny inputs."""

import numpy as np
import pytest

from keras_mtl.errors import ServingError


def _run_head(head, h, gate=False, dropout=0.0):
    """The type's head built on an Input shaped like `h` as `build_network` builds it
    (the output named after the task), called on `h`: (the head layer, {output: numpy})."""
    import keras

    inputs = keras.Input(shape=h.shape[1:], dtype="float32")
    layer = head.build_head(gate=gate, dropout=dropout)
    model = keras.Model(inputs, {head.task: layer(inputs)})
    return layer, {k: np.asarray(v) for k, v in model.predict_on_batch(h).items()}


def _serve(head, heads, word_starts=None, length=None):
    """The type's serving outputs on numpy heads (TF eager): {name: numpy}."""
    import tensorflow as tf

    heads = {k: tf.constant(v, tf.float32) for k, v in heads.items()}
    batch = tf.shape(next(iter(heads.values())))[0]
    starts = tf.constant(word_starts if word_starts is not None else np.zeros([0, 0]), tf.int32)
    out = head.serving_outputs(heads, batch, starts, tf.constant(length or 0))
    return {k: v.numpy() for k, v in out.items()}


def _predictions(head, outputs, num_words=None):
    """The type's JSON dict of every row of signature `outputs`."""

    def need(key):
        if key not in outputs:
            raise ServingError(f"missing {key}")
        return outputs[key]

    batch = len(next(iter(outputs.values())))
    return [head.prediction(outputs, i, need, None if num_words is None else num_words[i]) for i in range(batch)]


@pytest.fixture
def run_head():
    return _run_head


@pytest.fixture
def serve():
    return _serve


@pytest.fixture
def predictions():
    return _predictions
