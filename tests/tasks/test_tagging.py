"""The `tagging` task type: per-token labels, token-level head, word-start decoding, tags output."""

import numpy as np
import pytest

from keras_mtl.data.example import Example
from keras_mtl.tasks import LabelError, get_task_type
from keras_mtl.tasks.tagging import Tagging

TAGS = ["DET", "NOUN", "VERB"]


@pytest.fixture
def head():
    return Tagging("pos", TAGS)


def test_type_attributes():
    assert get_task_type("tagging") is Tagging
    assert Tagging.token_level and not Tagging.single_class and Tagging.min_classes == 1
    assert Tagging.default_metric == "token_accuracy" and "span_f1" in Tagging.metrics
    assert Tagging.label_values(("DET", "NOUN")) == ["DET", "NOUN"]
    assert Tagging.cardinality[0] == "tokens"


def encoded(head):
    # [CLS] the cat sle ##eps ; a word cut off by truncation; a missing label.
    examples = [Example("the cat sleeps", {"pos": ("DET", "NOUN", "VERB")}),
                Example("the cat", {"pos": ("DET", "XX")}),
                Example("cat", {})]
    token_ids = [np.arange(5), np.arange(2), np.arange(2)]
    word_starts = [np.array([1, 2, 3]), np.array([1, 2]), np.array([1])]
    return head.encode_labels(examples, token_ids, word_starts)


def test_encode_labels_on_word_starts(head):
    labels, weights = encoded(head)
    assert [a.tolist() for a in labels] == [[-1, 0, 1, 2, -1], [-1, 0], [-1, -1]]  # unseen tag, cut word: -1
    assert all(a.dtype == np.int32 for a in labels) and weights.tolist() == [1.0, 1.0, 0.0]


def test_dataset_columns_units_and_batches(head):
    labels, weights = encoded(head)
    y, w = head.dataset_columns(labels, [0, 1], weights[[0, 1]])
    assert [a.tolist() for a in y] == [[0, 0, 1, 2, 0], [0, 0]]
    assert [a.tolist() for a in w] == [[0, 1, 1, 1, 0], [0, 1]] and w[0].dtype == np.float32
    assert head.label_units(labels, [0, 1, 2], weights).tolist() == [3.0, 1.0, 0.0]
    y, sw = head.batch_labels(labels, [0, 1], weights, length=4)  # padded to 4, the first row cut at 4
    assert y.tolist() == [[0, 0, 1, 2], [0, 0, 0, 0]]
    assert sw.tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]


def test_head_reads_every_token(head, run_head):
    layer, out = run_head(head, np.ones([2, 5, 4], np.float32))
    assert list(out) == ["pos"] and out["pos"].shape == (2, 5, 3) and out["pos"].dtype == np.float32
    np.testing.assert_allclose(out["pos"].sum(-1), 1.0, rtol=1e-6)
    assert layer.name == "pos" and layer.activation == "softmax"


def test_loss_is_sparse_cross_entropy_over_labelled_tokens(head):
    loss = head.loss("mean_with_sample_weight")
    assert loss.name == "pos_loss"
    p = np.full([1, 3, 3], 1 / 3, np.float32)
    p[0, 1] = [0.8, 0.1, 0.1]
    value = loss(np.array([[0, 0, 2]]), p, sample_weight=np.array([[0.0, 1.0, 0.0]]))
    assert float(value) == pytest.approx(-np.log(0.8), rel=1e-5)


def test_decode_serving_and_json(head, serve, predictions):
    probs = np.zeros([2, 4, 3], np.float32)
    probs[:, :, 1] = 1.0
    probs[0, 1] = [0.9, 0.05, 0.05]
    probs[0, 3] = [0.1, 0.1, 0.8]
    out = {"pos": probs}
    assert head.decode(out, 0, np.array([1, 3, 7])) == ("DET", "VERB", "")  # a start past the length: ""
    starts = np.array([[1, 3, 7], [1, -1, -1]])  # -1 pads a row's word starts
    served = serve(head, out, starts, length=4)
    assert list(served) == ["pos_tags"]
    assert served["pos_tags"].tolist() == [[b"DET", b"VERB", b""], [b"NOUN", b"", b""]]
    assert predictions(head, served, num_words=[3, 1]) == [{"tags": ["DET", "VERB", ""]}, {"tags": ["NOUN"]}]
    assert predictions(head, served) == [{"tags": ["DET", "VERB"]}, {"tags": ["NOUN"]}]  # no num_words: trailing "" cut


def test_no_sentence_format_reads_a_tagging_label():
    # tagging labels come from the word-per-line readers (conll, conllu), which build them
    for read, args in [(Tagging.label_from_text, ("DET NOUN", "column 1")), (Tagging.label_from_json, (["DET"], "tags")),
                       (Tagging.label_from_tfds, (np.array([0]), ["DET"], "train"))]:
        with pytest.raises(LabelError, match=r"^a tagging label cannot be read from a"):
            read(*args)
