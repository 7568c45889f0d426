"""The `multilabel` task type: multi-hot labels, sigmoid head, threshold decoding, serving."""

import numpy as np
import pytest

from keras_mtl.data.example import Example
from keras_mtl.tasks import LabelError, get_task_type
from keras_mtl.tasks.multilabel import THRESHOLD, Multilabel

CLASSES = ["film", "food", "sport"]


@pytest.fixture
def head():
    return Multilabel("topics", CLASSES)


def test_type_attributes():
    assert get_task_type("multilabel") is Multilabel
    assert not Multilabel.token_level and not Multilabel.single_class and Multilabel.min_classes == 2
    assert Multilabel.metrics == ("accuracy", "macro_f1", "micro_f1") and Multilabel.default_metric == "micro_f1"
    assert Multilabel.label_values(("food", "film")) == ["food", "film"]
    assert THRESHOLD == 0.5


def test_encode_labels_is_multi_hot(head):
    examples = [Example("a", {"topics": ("sport", "film", "zzz")}), Example("b", {}), Example("c", {"topics": ()})]
    labels, weights = head.encode_labels(examples, None, None)
    assert labels.dtype == np.float32 and labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert weights.tolist() == [1.0, 0.0, 1.0]  # an empty label set is a label


def test_head_is_a_float32_sigmoid(head, run_head):
    layer, out = run_head(head, np.zeros([2, 4], np.float32))
    assert list(out) == ["topics"] and out["topics"].shape == (2, 3) and out["topics"].dtype == np.float32
    np.testing.assert_allclose(out["topics"], 0.5)  # zero input, zero bias
    assert layer.name == "topics" and layer.activation == "sigmoid" and layer.units == 3


def test_loss_is_binary_cross_entropy(head):
    import keras

    loss = head.loss("mean_with_sample_weight")
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and loss.name == "topics_loss"
    y = np.array([[1.0, 0.0, 1.0]], np.float32)
    p = np.array([[0.9, 0.2, 0.6]], np.float32)
    assert float(loss(y, p)) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6])), rel=1e-4)


def test_decode_and_serving_agree_on_the_threshold(head, serve, predictions):
    probs = np.array([[0.9, 0.5, 0.51], [0.1, 0.2, 0.3]], np.float32)  # exactly 0.5 is not predicted
    out = {"topics": probs}
    assert [head.decode(out, r) for r in range(2)] == [("film", "sport"), ()]
    served = serve(head, out)
    assert sorted(served) == ["topics_classes", "topics_labels", "topics_probabilities"]
    assert served["topics_labels"].tolist() == [[b"film", b"", b"sport"], [b"", b"", b""]]
    assert served["topics_classes"].shape == (2, 3)
    json = predictions(head, served)
    assert [p["labels"] for p in json] == [list(head.decode(out, r)) for r in range(2)]
    assert json[0]["probabilities"] == {"film": 0.9, "food": 0.5, "sport": 0.51}


# --- labels from data files -------------------------------------------------------------


def test_label_from_text_splits_drops_blanks_and_repeats():
    assert Multilabel.label_from_text(" sport, film ,,sport ", "column 'label'") == ("sport", "film")
    assert Multilabel.label_from_text("a|b", "column 1", separator="|") == ("a", "b")
    assert Multilabel.label_from_text("  ", "column 1") == ()  # an example with no labels
    with pytest.raises(LabelError, match=r"^unknown label 'x'; the allowed labels \(option `labels`\) are: 'a', 'b'$"):
        Multilabel.label_from_text("a,x", "column 1", allowed=["a", "b"])


def test_label_from_json_is_a_list_of_names():
    assert Multilabel.label_from_json(["b", 1, " b "], "tags") == ("b", "1")
    with pytest.raises(LabelError) as info:
        Multilabel.label_from_json("a,b", "tags")
    assert str(info.value) == "field 'tags' must be a list of labels for a multilabel task, found a string: 'a,b'"
    with pytest.raises(LabelError) as info:
        Multilabel.label_from_json(["a", None], "tags")
    assert str(info.value) == "field 'tags' must hold non-empty strings or integers, found null: None"
    with pytest.raises(LabelError, match="unknown label 'c'"):
        Multilabel.label_from_json(["a", "c"], "tags", allowed=["a"])


def test_label_from_tfds_is_a_sequence_of_class_labels():
    names = ["film", "food", "sport"]
    assert Multilabel.label_from_tfds(np.array([2, 0, 2]), names, "train") == ("sport", "film")
    assert Multilabel.label_from_tfds(np.array([b"x", b"y"]), None, "train") == ("x", "y")
    with pytest.raises(LabelError, match=r"^a multilabel task needs a sequence label feature, found np.int64\(1\)$"):
        Multilabel.label_from_tfds(np.int64(1), names, "train")
    with pytest.raises(LabelError, match="split 'test' is unlabelled"):
        Multilabel.label_from_tfds(np.array([-1]), names, "test")
