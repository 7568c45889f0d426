import warnings

import pytest

from keras_mtl.data.checks import LabelCardinalityWarning, check_label_cardinality, check_not_empty
from keras_mtl.data.example import Example
from keras_mtl.errors import DataError


def examples(labels, task="t"):
    return [Example(text=f"text {i}", labels={task: label}) for i, label in enumerate(labels)]


def test_label_column_pointing_at_text_warns():
    rows = examples([f"sentence number {i}" for i in range(10_000)], task="sst2")
    with pytest.warns(LabelCardinalityWarning) as record:
        check_label_cardinality(rows, "sst2", "classification", "/data/train.tsv")
    message = str(record[0].message)
    assert message == (
        "task 'sst2': label column of /data/train.tsv has 10,000 distinct values in 10,000 rows; "
        "this would build a 10,000-way softmax. Is `label_column` pointing at the text?"
    )


def test_many_mostly_unique_labels_warn():
    rows = examples([f"l{i}" for i in range(150)] + ["a"] * 100)
    with pytest.warns(LabelCardinalityWarning, match="151 distinct values in 250 rows"):
        check_label_cardinality(rows, "t", "classification", "f.tsv")


def test_more_than_1000_labels_warn_even_if_repeated():
    rows = examples([f"l{i % 1001}" for i in range(10_010)])
    with pytest.warns(LabelCardinalityWarning, match="1,001 distinct values in 10,010 rows"):
        check_label_cardinality(rows, "t", "classification", "f.tsv")


@pytest.mark.parametrize(
    "labels",
    [
        ["0", "1"] * 500,
        [f"l{i % 150}" for i in range(1000)],  # 150 classes, each repeated
        [f"l{i}" for i in range(100)],  # only 100 distinct
    ],
)
def test_plausible_label_sets_do_not_warn(labels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_label_cardinality(examples(labels), "t", "classification", "f.tsv")


def test_tagging_counts_tokens():
    rows = [Example(text=" ".join(f"w{i}{j}" for j in range(5)), labels={"pos": tuple(f"w{i}{j}" for j in range(5))}) for i in range(50)]
    with pytest.warns(LabelCardinalityWarning, match=r"task 'pos'.*250 distinct values in 250 tokens.*words"):
        check_label_cardinality(rows, "pos", "tagging", {"x": "a.txt"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_label_cardinality(rows, "pos", "regression", "a.txt")


def test_check_not_empty():
    check_not_empty(examples(["a"]), "f.tsv")
    with pytest.raises(DataError, match=r"^f\.tsv: no examples found"):
        check_not_empty([], "f.tsv")
    with pytest.raises(DataError, match=r"^a\.pos, a\.neg: no examples found"):
        check_not_empty([], {"pos": "a.pos", "neg": "a.neg"})
