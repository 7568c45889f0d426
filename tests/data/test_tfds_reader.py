"""The `tfds` reader against a tiny TFDS builder prepared offline.

The builder below is prepared once per module into a temporary data_dir (a
few seconds, most of it importing TensorFlow); every test then reads it with
`download: false`, so no test touches the network.
"""

import importlib.resources.abc
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_mtl.data.readers import ReadRequest, get_reader
from keras_mtl.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets")
np = pytest.importorskip("numpy")

try:
    import importlib_resources  # noqa: F401
except ImportError:
    # tensorflow-datasets 4.9 uses `importlib_resources.abc` when it prepares
    # a dataset but only requires the package on Python < 3.9. The standard
    # library module has the same API; alias it so the tiny builder below can
    # be prepared where the backport is not installed.
    sys.modules["importlib_resources"] = importlib.resources

BUILDER = "keras_mtl_tiny_reviews"
TRAIN = [
    ("a gripping thriller ", 1, 4.5, [0, 1], 10),
    ("dull and flat", 0, 1.0, [1], 11),
    ("the best film of the year", 1, 5.0, [], 12),
    ("not worth the ticket", 0, 0.5, [2, 2, 0], 13),
]


class KerasMtlTinyReviews(tfds.core.GeneratorBasedBuilder):
    """Four labelled reviews (train) and two unlabelled ones (test)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                    "score": tfds.features.Scalar(dtype=np.float32),
                    "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=["drama", "crime", "war"])),
                    "idx": tfds.features.Scalar(dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(labelled=True), "test": self._generate_examples(labelled=False)}

    def _generate_examples(self, labelled):
        rows = TRAIN if labelled else [("unseen one", -1, -1.0, [], 0), ("unseen two", -1, -1.0, [], 1)]
        for key, (sentence, label, score, tags, idx) in enumerate(rows):
            yield key, {"sentence": sentence, "label": label, "score": score, "tags": tags, "idx": idx}


assert KerasMtlTinyReviews.name == BUILDER


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    tfds.builder(BUILDER, data_dir=str(path)).download_and_prepare()
    return str(path)


def read(split, task_type="classification", task="t", **options):
    reader = get_reader("tfds")
    options.setdefault("name", BUILDER)
    options.setdefault("download", False)
    request = ReadRequest(
        source=split,
        options=reader.options(**options),
        task_name=task,
        task_type=task_type,
        split="train",
    )
    return list(reader.read(request))  # a reader streams: take the whole stream


def sorted_by_text(examples, task="t"):
    # TFDS may shuffle examples on disk; compare independently of order.
    return sorted((ex.text, ex.labels[task]) for ex in examples)


def test_registration():
    reader = get_reader("tfds")
    assert not reader.source_is_path
    assert set(reader.task_types) == {"classification", "regression", "multilabel"}


def test_classification_maps_class_names(data_dir):
    examples = read("train", data_dir=data_dir)
    assert sorted_by_text(examples) == [
        ("a gripping thriller", "positive"),
        ("dull and flat", "negative"),
        ("not worth the ticket", "negative"),
        ("the best film of the year", "positive"),
    ]
    assert sorted(ex.origin for ex in examples) == [f"tfds:{BUILDER}/train:{i}" for i in range(1, 5)]
    # Deterministic: the same split read twice gives the same order.
    assert [ex.text for ex in read("train", data_dir=data_dir)] == [ex.text for ex in examples]


def test_split_slicing(data_dir):
    assert len(read("train[:50%]", data_dir=data_dir)) == 2
    assert len(read("train[-1:]", data_dir=data_dir)) == 1


def test_regression_multilabel_and_plain_int_labels(data_dir):
    scores = read("train", "regression", label_feature="score", data_dir=data_dir)
    assert dict(sorted_by_text(scores))["dull and flat"] == 1.0
    assert all(isinstance(ex.labels["t"], float) for ex in scores)
    tags = dict(sorted_by_text(read("train", "multilabel", label_feature="tags", data_dir=data_dir)))
    assert tags["a gripping thriller"] == ("drama", "crime")
    assert tags["not worth the ticket"] == ("war", "drama")
    assert tags["the best film of the year"] == ()
    ids = dict(sorted_by_text(read("train", label_feature="idx", data_dir=data_dir)))
    assert ids["dull and flat"] == "11"


def test_download_true_reuses_prepared_data(data_dir):
    assert len(read("train", data_dir=data_dir, download=True)) == 4


def test_unlabelled_split(data_dir):
    with pytest.raises(DataError, match=rf"^tfds:{BUILDER}/test:\d: label -1: split 'test' is unlabelled"):
        read("test", data_dir=data_dir)
    with pytest.raises(DataError, match=rf"^tfds:{BUILDER}/test: every label is -1"):
        read("test", "regression", label_feature="score", data_dir=data_dir)


def test_missing_feature_lists_features(data_dir):
    with pytest.raises(DataError) as info:
        read("train", text_feature="text", data_dir=data_dir)
    message = str(info.value)
    assert message.startswith(f"tfds:{BUILDER}/train: ")
    assert "no feature 'text' (text_feature)" in message
    assert "'sentence', 'label', 'score', 'tags', 'idx'" in message


def test_wrong_feature_kinds(data_dir):
    with pytest.raises(DataError, match="needs a sequence label feature"):
        read("train", "multilabel", data_dir=data_dir)
    with pytest.raises(DataError, match="needs a scalar label"):
        read("train", label_feature="tags", data_dir=data_dir)
    with pytest.raises(DataError, match="'label' is not a text feature"):
        read("train", text_feature="label", data_dir=data_dir)


def test_unknown_split(data_dir):
    with pytest.raises(DataError, match=r"cannot read split 'validation' .*known splits: 'train', 'test'"):
        read("validation", data_dir=data_dir)


def test_unknown_builder(tmp_path):
    with pytest.raises(DataError) as info:
        read("train", name="no_such_dataset_xyz", data_dir=str(tmp_path))
    message = str(info.value)
    assert message.startswith("tfds:no_such_dataset_xyz/train: cannot load the TFDS builder 'no_such_dataset_xyz'")
    assert len(message.splitlines()) == 1  # not TFDS's list of every dataset


def test_not_prepared_without_download(tmp_path):
    with pytest.raises(DataError, match=r"is not prepared in data_dir .* `download` is false"):
        read("train", data_dir=str(tmp_path))


def test_source_must_be_a_split_name():
    with pytest.raises(DataError, match=rf"^tfds:{BUILDER}: .*must be a TFDS split name"):
        read({"train": "x"})


SPLIT_PIECES = ["train", "test", "[", "]", ":", "%", "50", "-1", "+", "|", " ", "abc", "é"]


@settings(max_examples=40, deadline=None)
@given(split=st.lists(st.sampled_from(SPLIT_PIECES), max_size=8).map("".join))
def test_fuzz_split_names(data_dir, split):
    try:
        examples = read(split, data_dir=data_dir)
    except DataError as e:
        assert str(e).startswith(f"tfds:{BUILDER}")
        return
    assert all(ex.labels["t"] in ("negative", "positive") for ex in examples)
