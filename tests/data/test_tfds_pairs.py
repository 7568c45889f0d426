"""The `tfds` reader with `text_pair_feature`, against a tiny pair builder prepared offline.

Same pattern as test_tfds_reader.py: the builder is prepared once per module
into a temporary data_dir and read with `download: false` (no network).
"""

import importlib.resources.abc
import sys

import pytest

from keras_mtl.data.readers import ReadRequest, get_reader
from keras_mtl.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets")
np = pytest.importorskip("numpy")

try:
    import importlib_resources  # noqa: F401
except ImportError:  # see test_tfds_reader.py
    sys.modules["importlib_resources"] = importlib.resources

BUILDER = "keras_mtl_tiny_pairs"
ROWS = [
    ("a man plays a guitar ", "a person plays music", 0, 4.2),
    ('he said "no"', "he agreed", 1, 0.5),
    ("dogs bark", "", 1, 1.0),  # empty second text: only in split `bad`
]


class KerasMtlTinyPairs(tfds.core.GeneratorBasedBuilder):
    """Two sentence pairs (train) and one with an empty second text (bad)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "sentence1": tfds.features.Text(),
                    "sentence2": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["entailment", "not_entailment"]),
                    "score": tfds.features.Scalar(dtype=np.float32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(ROWS[:2]), "bad": self._generate_examples(ROWS)}

    def _generate_examples(self, rows):
        for key, (a, b, label, score) in enumerate(rows):
            yield key, {"sentence1": a, "sentence2": b, "label": label, "score": score}


assert KerasMtlTinyPairs.name == BUILDER


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds_pairs")
    tfds.builder(BUILDER, data_dir=str(path)).download_and_prepare()
    return str(path)


def read(split, data_dir, task_type="classification", **options):
    reader = get_reader("tfds")
    options = {"name": BUILDER, "download": False, "data_dir": data_dir, "text_feature": "sentence1", **options}
    request = ReadRequest(split, reader.options(**options), "t", task_type, "train")
    return list(reader.read(request))  # a reader streams: take the whole stream


def test_pairs_classification_and_regression(data_dir):
    examples = read("train", data_dir, text_pair_feature="sentence2")
    assert sorted((ex.text, ex.text_pair, ex.labels["t"]) for ex in examples) == [
        ("a man plays a guitar", "a person plays music", "entailment"),
        ('he said "no"', "he agreed", "not_entailment"),
    ]
    scores = read("train", data_dir, "regression", text_pair_feature="sentence2", label_feature="score")
    assert sorted((ex.text_pair, round(ex.labels["t"], 3)) for ex in scores) == [
        ("a person plays music", 4.2), ("he agreed", 0.5)]
    assert all(ex.text_pair is None for ex in read("train", data_dir))


def test_unknown_text_pair_feature_lists_the_features(data_dir):
    with pytest.raises(DataError) as e:
        read("train", data_dir, text_pair_feature="sentence3")
    message = str(e.value)
    assert message.startswith(f"tfds:{BUILDER}/train: {BUILDER!r} has no feature 'sentence3' (text_pair_feature)")
    assert "'sentence1', 'sentence2', 'label', 'score'" in message


def test_empty_second_text_names_the_record(data_dir):
    with pytest.raises(DataError, match=rf"^tfds:{BUILDER}/bad:\d: feature 'sentence2' \(the second text"):
        read("bad", data_dir, text_pair_feature="sentence2")
