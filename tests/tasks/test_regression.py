"""The `regression` task type: float labels, linear head, MSE, value output."""

import numpy as np
import pytest

from keras_mtl.data.example import Example
from keras_mtl.tasks import LabelError, get_task_type
from keras_mtl.tasks.regression import Regression


@pytest.fixture
def head():
    return Regression("size")


def test_type_attributes():
    assert get_task_type("regression") is Regression
    assert not Regression.has_classes and not Regression.token_level and Regression.min_classes == 0
    assert Regression.metrics == ("pearson", "spearman", "mse") and Regression.default_metric == "pearson"
    assert Regression.label_values(2.5) == []  # no label vocabulary
    assert Regression.cardinality is None


def test_encode_labels_are_floats(head):
    labels, weights = head.encode_labels([Example("a", {"size": 3}), Example("b", {}), Example("c", {"size": -0.5})],
                                         None, None)
    assert labels.dtype == np.float32 and labels.tolist() == [3.0, 0.0, -0.5]
    assert weights.tolist() == [1.0, 0.0, 1.0]


def test_head_is_one_linear_value_per_text(head, run_head):
    h = np.random.default_rng(0).normal(size=[3, 4]).astype("float32")
    layer, out = run_head(head, h)
    assert list(out) == ["size"] and out["size"].shape == (3,) and out["size"].dtype == np.float32
    assert layer.name == "size" and layer.units == 1 and layer.squeeze and layer.activation is None
    dense = layer.output_dense
    expected = h @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(out["size"], expected[:, 0], rtol=1e-5, atol=1e-6)


def test_loss_is_mean_squared_error(head):
    loss = head.loss("mean_with_sample_weight")
    assert loss.name == "size_loss"
    y, p = np.array([1.0, 2.0], np.float32), np.array([1.5, 0.0], np.float32)
    assert float(loss(y, p)) == pytest.approx((0.25 + 4.0) / 2)


def test_decode_serving_and_json(head, serve, predictions):
    out = {"size": np.array([0.9, -2.25], np.float32)}
    assert [head.decode(out, r) for r in range(2)] == [float(np.float32(0.9)), -2.25]
    served = serve(head, out)
    assert list(served) == ["size_value"] and served["size_value"].shape == (2,)
    assert predictions(head, served) == [{"value": 0.9}, {"value": -2.25}]  # shortest float32 decimal
    assert predictions(head, {"size_value": [[0.9]]}) == [{"value": 0.9}]  # REST may nest a scalar


# --- labels from data files -------------------------------------------------------------


def test_label_from_text_is_a_finite_number():
    assert Regression.label_from_text(" 2.5\n", "column 'score'") == 2.5
    assert Regression.label_from_text("-1e3", "column 1", allowed=["a"]) == -1000.0  # `labels` is for classes
    for bad in ("", "high", "nan", "inf"):
        with pytest.raises(LabelError) as info:
            Regression.label_from_text(f" {bad} ", "column 'score'")
        assert str(info.value) == f"regression label {bad!r} in column 'score' is not a finite number"


def test_label_from_json_is_a_finite_number():
    assert Regression.label_from_json(3, "y") == 3.0 and isinstance(Regression.label_from_json(3, "y"), float)
    with pytest.raises(LabelError) as info:
        Regression.label_from_json("3", "y")
    assert str(info.value) == "field 'y' must be a number for a regression task, found a string: '3'"
    with pytest.raises(LabelError, match="found a boolean: True"):
        Regression.label_from_json(True, "y")
    for huge in (10**400, float("inf")):
        with pytest.raises(LabelError, match=r"^field 'y' is not a finite number$"):
            Regression.label_from_json(huge, "y")


def test_label_from_tfds_and_the_unlabelled_split():
    assert Regression.label_from_tfds(np.float32(0.5), None, "train") == 0.5
    with pytest.raises(LabelError, match=r"^the label b'x' is not a number \(regression\)$"):
        Regression.label_from_tfds(b"x", None, "train")
    assert Regression.unlabelled_split([-1.0, -1.0]) and not Regression.unlabelled_split([-1.0, 0.5])
