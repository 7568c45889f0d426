"""The `classification` task type: labels, head, loss, decoding, serving outputs and JSON."""

import numpy as np
import pytest

from keras_mtl.data.example import Example
from keras_mtl.errors import ServingError
from keras_mtl.tasks import LabelError, get_task_type
from keras_mtl.tasks.classification import Classification

CLASSES = ["neg", "neu", "pos"]


@pytest.fixture
def head():
    return Classification("sent", CLASSES)


def test_type_attributes():
    assert get_task_type("classification") is Classification
    assert not Classification.token_level and Classification.single_class and Classification.has_classes
    assert Classification.min_classes == 2
    assert Classification.metrics == ("accuracy", "f1", "macro_f1", "mcc")
    assert Classification.default_metric == "accuracy"
    assert Classification.label_values("pos") == ["pos"]


def test_encode_labels_missing_and_unseen_get_weight_zero(head):
    examples = [Example("a", {"sent": "pos"}), Example("b", {}), Example("c", {"sent": "zzz"}), Example("d", {"sent": "neg"})]
    labels, weights = head.encode_labels(examples, None, None)
    assert labels.dtype == np.int32 and labels.tolist() == [2, 0, 0, 0]
    assert weights.dtype == np.float32 and weights.tolist() == [1.0, 0.0, 0.0, 1.0]
    y, w = head.dataset_columns(labels, np.array([3, 0]), weights[[3, 0]])
    assert y.tolist() == [0, 2] and w.tolist() == [1.0, 1.0]
    y, sw = head.batch_labels(labels, [0, 1], weights, length=8)
    assert y.tolist() == [2, 0] and sw.tolist() == [1.0, 0.0] and sw.dtype == np.float32
    assert head.label_units(labels, [0, 1], weights[[0, 1]]).tolist() == [1.0, 0.0]


def test_head_is_one_float32_softmax_named_after_the_task(head, run_head):
    layer, out = run_head(head, np.random.default_rng(0).normal(size=[2, 8]).astype("float32"))
    assert list(out) == ["sent"] == list(head.output_names)
    assert out["sent"].shape == (2, 3) and out["sent"].dtype == np.float32
    np.testing.assert_allclose(out["sent"].sum(axis=1), 1.0, rtol=1e-6)
    assert layer.name == "sent" and layer.units == 3 and layer.activation == "softmax" and not layer.squeeze
    assert layer.output_dense.dtype_policy.compute_dtype == "float32"


def test_loss_is_sparse_cross_entropy(head):
    import keras

    loss = head.loss("mean_with_sample_weight")
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and loss.name == "sent_loss"
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    y = np.array([0, 2])
    assert float(loss(y, p)) == pytest.approx(-np.log([0.7, 0.8]).mean(), rel=1e-5)
    assert float(head.loss("sum")(y, p, sample_weight=np.array([1.0, 0.0]))) == pytest.approx(-np.log(0.7), rel=1e-5)


def test_decode_is_the_argmax_class(head):
    out = {"sent": np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], np.float32)}
    assert [head.decode(out, r) for r in range(2)] == ["pos", "neg"]


def test_serving_outputs_and_json(head, serve, predictions):
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)
    out = serve(head, {"sent": probs})
    assert sorted(out) == ["sent_classes", "sent_label", "sent_probabilities"]
    assert out["sent_label"].tolist() == [b"pos", b"neg"]
    assert out["sent_classes"].tolist() == [[c.encode() for c in CLASSES]] * 2
    np.testing.assert_array_equal(out["sent_probabilities"], probs)
    assert predictions(head, out)[0] == {"label": "pos", "probabilities": {"neg": 0.1, "neu": 0.2, "pos": 0.7}}


def test_json_takes_classes_from_metadata_without_a_classes_output(head, predictions):
    outputs = {"sent_label": [b"neu"], "sent_probabilities": [[0.2, 0.5, 0.3]]}
    assert predictions(head, outputs) == [{"label": "neu", "probabilities": {"neg": 0.2, "neu": 0.5, "pos": 0.3}}]
    with pytest.raises(ServingError, match="3 classes but 2 probabilities"):
        predictions(head, {"sent_label": [b"neu"], "sent_probabilities": [[0.2, 0.8]]})
    with pytest.raises(ServingError, match="missing sent_classes"):
        predictions(Classification("sent"), outputs)  # no classes in the metadata either


# --- labels from data files: the type reads them, the reader says where ---------------


def test_label_from_text_is_the_stripped_class_name():
    assert Classification.label_from_text(" pos \n", "column 'label'") == "pos"
    assert Classification.label_from_text("1", "column 1", allowed=["0", "1"]) == "1"
    with pytest.raises(LabelError, match=r"^empty label in column 'label'$"):
        Classification.label_from_text("  ", "column 'label'")
    with pytest.raises(LabelError, match=r"^unknown label 'maybe'; the allowed labels \(option `labels`\) are: 'no', 'yes'$"):
        Classification.label_from_text("maybe", "column 2", allowed=["no", "yes"])


def test_label_from_json_takes_a_string_or_an_integer():
    assert Classification.label_from_json(" pos ", "label") == "pos"
    assert Classification.label_from_json(1, "label") == "1"  # the class named "1"
    for bad, found in [(True, "a boolean: True"), (1.5, "a number: 1.5"), ("", "a string: ''"), (None, "null: None"),
                       (["a"], "a list: ['a']")]:
        with pytest.raises(LabelError) as info:
            Classification.label_from_json(bad, "y")
        assert str(info.value) == f"field 'y' must be a non-empty string or an integer for a classification task, found {found}"
    with pytest.raises(LabelError, match="unknown label '2'"):
        Classification.label_from_json(2, "y", allowed=["0", "1"])


def test_label_from_tfds_names_class_label_ids():
    names = ["neg", "pos"]
    assert Classification.label_from_tfds(np.int64(1), names, "train") == "pos"
    assert Classification.label_from_tfds(np.int64(7), None, "train") == "7"  # no ClassLabel: the digits
    assert Classification.label_from_tfds(np.array(b" yes "), None, "train") == "yes"
    assert Classification.label_from_tfds(np.bool_(True), None, "train") == "1"
    with pytest.raises(LabelError, match=r"^label -1: split 'test' is unlabelled \(TFDS stores -1"):
        Classification.label_from_tfds(np.int64(-1), names, "test")
    with pytest.raises(LabelError, match=r"^label 2 is out of range for the 2 class names$"):
        Classification.label_from_tfds(np.int64(2), names, "train")
    with pytest.raises(LabelError, match=r"^the label is not valid UTF-8$"):
        Classification.label_from_tfds(np.array(b"\xff"), None, "train")
    with pytest.raises(LabelError, match=r"^a classification task needs a scalar label, found array"):
        Classification.label_from_tfds(np.array([0, 1]), names, "train")
    assert not Classification.unlabelled_split(["-1", "-1"])  # -1 ids are refused one by one


def test_positive_class_is_a_classification_option():
    assert Classification.options == ("positive_class",) and Classification.layer_suffixes == {}
