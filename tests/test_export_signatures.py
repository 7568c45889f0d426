"""The serving functions of an export, on a stand-in model: which rows each
signature runs through the encoder (one pass per task signature)."""

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from keras_mtl.data.tokenize import RESERVED, TextEncoder, make_tokenizer
from keras_mtl.serving.export import _serving_functions, default_tasks

VOCAB = RESERVED + ["the", "cat", "dog"]


def _task(name, type_="classification"):
    return SimpleNamespace(name=name, type=type_)


def _setup():
    encoder = TextEncoder(make_tokenizer(VOCAB), 8, cls_id=2, unk_id=1, pad_id=0, sep_id=3)
    tasks = [_task("topic"), _task("nli"), _task("sts", "regression")]
    classes = {"topic": ["a", "b"], "nli": ["yes", "no"], "sts": []}
    seen = []

    def model_fn(inputs):
        # Every output row says how many rows the model ran and which task id it had.
        rows = tf.shape(inputs["token_ids"])[0]
        seen.append(inputs)
        task = tf.cast(inputs["task_ids"], tf.float32)
        fill = tf.cast(rows, tf.float32) * 10.0 + task
        return {
            "topic": tf.stack([fill, fill], axis=1),
            "nli": tf.stack([fill, fill], axis=1),
            "sts": fill,
        }

    return encoder, tasks, classes, model_fn, seen


def test_a_task_signature_runs_the_encoder_once_serving_default_once_per_task():
    encoder, tasks, classes, model_fn, _ = _setup()
    fns = _serving_functions(model_fn, encoder, tasks, classes, True, ["nli", "sts"], ["topic", "nli", "sts"])
    assert list(fns) == ["serving_default", "topic", "nli", "sts"]
    texts = tf.constant(["the cat", "dog", "the"])
    pairs = tf.constant(["cat", "the dog", ""])
    # nli: 3 rows (one pass) with task id 1
    out = fns["nli"](text=texts, text_pair=pairs)
    np.testing.assert_allclose(out["nli_probabilities"], np.full([3, 2], 31.0))
    out = fns["sts"](text=texts, text_pair=pairs)
    np.testing.assert_allclose(out["sts_value"], np.full([3], 32.0))
    # serving_default: the single-text task only (topic), so 3 rows, id 0
    out = fns["serving_default"](text=texts)
    np.testing.assert_allclose(out["topic_probabilities"], np.full([3, 2], 30.0))
    assert set(out) == {"topic_label", "topic_probabilities", "topic_classes", "num_words", "truncated", "windows"}


def test_serving_default_of_single_text_tasks_runs_one_pass_per_task():
    encoder, tasks, classes, model_fn, _ = _setup()
    singles = [_task("topic"), _task("other")]
    classes = {"topic": ["a", "b"], "other": ["a", "b"]}

    def two_heads(inputs):
        out = model_fn(inputs)
        return {"topic": out["topic"], "other": out["topic"]}

    fns = _serving_functions(two_heads, encoder, singles, classes, True, [], ["topic", "other"])
    out = fns["serving_default"](text=tf.constant(["the cat", "dog"]))
    # 2 texts x 2 tasks = 4 rows; topic's rows ran with id 0, other's with id 1
    np.testing.assert_allclose(out["topic_probabilities"], np.full([2, 2], 40.0))
    np.testing.assert_allclose(out["other_probabilities"], np.full([2, 2], 41.0))
    out = fns["other"](text=tf.constant(["the cat", "dog"]))
    np.testing.assert_allclose(out["other_probabilities"], np.full([2, 2], 21.0))


def test_pair_tokens_reach_the_model_packed():
    encoder, tasks, classes, _, _ = _setup()

    def count_separators(inputs):
        # each row's number of [SEP] pieces and of real pieces
        ids = inputs["token_ids"]
        seps = tf.reduce_sum(tf.cast(tf.equal(ids, 3), tf.float32), axis=1)
        real = tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.float32), axis=1)
        return {"nli": tf.stack([seps, real], axis=1)}

    fns = _serving_functions(count_separators, encoder, tasks, classes, True, ["nli", "sts"], ["nli"])
    assert list(fns) == ["serving_default", "nli"]  # only nli exported: serving_default takes pairs
    out = fns["nli"](text=tf.constant(["the cat", "dog"]), text_pair=tf.constant(["dog", "the the cat dog"]))
    # [CLS] the cat [SEP] dog [SEP] = 6 pieces; [CLS] dog [SEP] the the cat dog [SEP] = 8 (max_length 8)
    np.testing.assert_allclose(out["nli_probabilities"], [[2.0, 6.0], [2.0, 8.0]])
    out = fns["serving_default"](text=tf.constant(["the"]), text_pair=tf.constant(["cat"]))
    np.testing.assert_allclose(out["nli_probabilities"], [[2.0, 5.0]])


def test_default_tasks():
    assert default_tasks(["topic", "nli", "sts"], ["nli", "sts"]) == ["topic"]
    assert default_tasks(["nli", "sts"], ["nli", "sts"]) == ["nli", "sts"]
    assert default_tasks(["topic"], []) == ["topic"]
