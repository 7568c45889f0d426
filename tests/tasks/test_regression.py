"""The `regression` task type: float labels, linear head, MSE, value output."""

import numpy as np
import pytest

from keras_mtl.data.example import Example
from keras_mtl.tasks import get_task_type
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


def test_head_keeps_its_two_layer_names(head, run_heads):
    model, out = run_heads(head, np.ones([3, 4], np.float32))
    assert list(out) == ["size"] and out["size"].shape == (3,) and out["size"].dtype == np.float32
    assert model.get_layer("size_value").units == 1
    assert type(model.get_layer("size")).__name__ == "Reshape"


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
