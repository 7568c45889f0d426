import collections
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_mtl.data.example import Example
from keras_mtl.data.splits import carve_splits, normalize_text, overlap_report, split_of
from keras_mtl.errors import DataError

from helpers import read_all
from helpers import shared_data as shared



def make(texts, task="t", label="x"):
    return [Example(text=text, labels={task: label}, origin=f"/d/{task}.txt:{i + 1}") for i, text in enumerate(texts)]


SYNTHETIC = [f"synthetic sentence number {i} ." for i in range(10_000)]


def test_normalize_text():
    assert normalize_text("  The  Rock\tis HERE .\n") == "the rock is here ."
    assert normalize_text("") == ""


def test_split_of_is_stable_and_normalized():
    a = split_of("A fine film .", seed=0, dev_fraction=0.1, test_fraction=0.1)
    assert a == "train"  # fixed by SHA-256, the same on every machine and run
    assert split_of("  a FINE  film . ", 0, 0.1, 0.1) == a
    picks = collections.Counter(split_of(text, 0, 0.1, 0.1) for text in SYNTHETIC[:2000])
    again = collections.Counter(split_of(text, 0, 0.1, 0.1) for text in SYNTHETIC[:2000])
    assert picks == again
    other_seed = [split_of(text, 1, 0.1, 0.1) for text in SYNTHETIC[:200]]
    assert other_seed != [split_of(text, 0, 0.1, 0.1) for text in SYNTHETIC[:200]]


def test_split_proportions_match_fractions():
    counts = collections.Counter(split_of(text, 7, 0.1, 0.2) for text in SYNTHETIC)
    assert abs(counts["dev"] / 10_000 - 0.1) < 0.015
    assert abs(counts["test"] / 10_000 - 0.2) < 0.015
    assert counts["train"] + counts["dev"] + counts["test"] == 10_000


@pytest.mark.parametrize("dev, test", [(-0.1, 0.1), (0.1, 1.0), (0.6, 0.5)])
def test_bad_fractions(dev, test):
    with pytest.raises(ValueError):
        split_of("x", 0, dev, test)


def test_shared_sentence_gets_the_same_split_in_every_task():
    texts_a = SYNTHETIC[:3000]
    texts_b = SYNTHETIC[1500:4500]  # 1,500 shared, some with other case/spacing
    texts_b = [text.upper() if i % 2 else text for i, text in enumerate(texts_b)]
    a = carve_splits({"train": make(texts_a, "a")}, 3, 0.1, 0.1)
    b = carve_splits({"train": make(texts_b, "b")}, 3, 0.1, 0.1)
    side_a = {normalize_text(ex.text): split for split, exs in a.items() for ex in exs}
    side_b = {normalize_text(ex.text): split for split, exs in b.items() for ex in exs}
    common = side_a.keys() & side_b.keys()
    assert len(common) == 1500
    assert all(side_a[text] == side_b[text] for text in common)
    assert {side_a[text] for text in common} == {"train", "dev", "test"}
    assert overlap_report({"a": a, "b": b})["leaks"] == []


def test_carve_both_missing_keeps_order():
    train = make(SYNTHETIC[:2000])
    result = carve_splits({"train": train}, 0, 0.1, 0.1)
    assert list(result) == ["train", "dev", "test"]
    assert sum(len(v) for v in result.values()) == 2000
    for split, exs in result.items():
        positions = [train.index(ex) for ex in exs]
        assert positions == sorted(positions)
        assert all(split_of(ex.text, 0, 0.1, 0.1) == split for ex in exs)
    assert 100 < len(result["dev"]) < 300 and 100 < len(result["test"]) < 300


def test_carve_only_the_missing_split():
    train = make(SYNTHETIC[:2000])
    given_test = make(["a given test sentence"])
    result = carve_splits({"train": train, "test": given_test}, 0, 0.1, 0.2)
    assert list(result) == ["train", "dev", "test"]
    assert result["test"] == given_test
    # Only the dev band is carved: test-band sentences stay in train.
    assert all(split_of(ex.text, 0, 0.1, 0.2) == "dev" for ex in result["dev"])
    assert len(result["train"]) + len(result["dev"]) == 2000
    assert abs(len(result["dev"]) / 2000 - 0.1) < 0.03
    # All splits given: nothing changes.
    given_all = {"train": train, "dev": given_test, "test": given_test}
    assert carve_splits(given_all, 0, 0.1, 0.1) == given_all


def test_zero_fraction_creates_no_split():
    result = carve_splits({"train": make(SYNTHETIC[:100])}, 0, 0.0, 0.1)
    assert list(result) == ["train", "test"]


def test_train_never_empty():
    with pytest.raises(DataError, match="non-empty train"):
        carve_splits({"train": [], "test": make(["x"])}, 0, 0.1, 0.1)
    one = [text for text in SYNTHETIC if split_of(text, 0, 0.1, 0.1) == "test"][:1]
    with pytest.raises(DataError, match=r"^/d/t\.txt: carving dev and test out of train left no training examples"):
        carve_splits({"train": make(one)}, 0, 0.1, 0.1)
    with pytest.raises(ValueError):
        carve_splits({"train": make(["x"]), "validation": []}, 0, 0.1, 0.1)


def test_overlap_report_counts_shared_and_leaks():
    a = {"train": make(["one", "two", "three"], "a"), "test": make(["Two", "four"], "a")}
    b = {"train": make(["FOUR", "five"], "b"), "dev": make(["one"], "b")}
    report = overlap_report({"a": a, "b": b})
    assert report["texts"] == {"a": 4, "b": 3}
    assert report["shared"] == {"a|b": 2}  # one, four
    assert sorted(report["leaks"], key=json.dumps) == sorted(
        [
            {"text_in": "a:test", "also_in": "a:train", "count": 1},  # two
            {"text_in": "a:test", "also_in": "b:train", "count": 1},  # four
            {"text_in": "b:dev", "also_in": "a:train", "count": 1},  # one
        ],
        key=json.dumps,
    )
    # One entry per split: distinct texts trained on, and per task.
    assert report["leaks_by_split"] == {
        "test": {"texts": 2, "tasks": {"a": 2}},
        "dev": {"texts": 1, "tasks": {"b": 1}},
    }
    json.dumps(report)


def test_leaks_by_split_counts_a_text_shared_by_tasks_once():
    # Three tasks on one treebank: the same sentences, the same test split.
    train, test = make(["s1", "s2", "s3"]), make(["S1", "s4"])
    report = overlap_report({t: {"train": train, "test": test, "dev": []} for t in ("pos", "chunk", "deprel")})
    assert len(report["leaks"]) == 9  # every (task test, task train) pair
    assert report["leaks_by_split"] == {"test": {"texts": 1, "tasks": {"pos": 1, "chunk": 1, "deprel": 1}}}


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=40),
    seed=st.integers(-(2**70), 2**70),
    dev=st.floats(0, 0.45),
    test=st.floats(0, 0.45),
)
def test_split_of_any_text(text, seed, dev, test):
    split = split_of(text, seed, dev, test)
    assert split in ("train", "dev", "test")
    assert split_of(" " + text.upper() + " ", seed, dev, test) == split_of(text.upper(), seed, dev, test)


def read_per_label(source, task):
    return read_all("per_label", source, task, "classification")


@pytest.mark.real_data
def test_real_polarity_subjectivity_overlap():
    polarity = read_per_label(
        {
            "pos": str(shared("sentence_polarity", "rt-polarity.pos")),
            "neg": str(shared("sentence_polarity", "rt-polarity.neg")),
        },
        "polarity",
    )
    subjectivity = read_per_label(
        {
            "subjective": str(shared("subjectivity", "quote.tok.gt9.5000")),
            "objective": str(shared("subjectivity", "plot.tok.gt9.5000")),
        },
        "subjectivity",
    )
    report = overlap_report({"polarity": {"train": polarity}, "subjectivity": {"train": subjectivity}})
    assert report["shared"] == {"polarity|subjectivity": 4175}
    # Carving both tasks with one seed keeps every shared sentence on one side.
    carved = {
        "polarity": carve_splits({"train": polarity}, 0, 0.1, 0.1),
        "subjectivity": carve_splits({"train": subjectivity}, 0, 0.1, 0.1),
    }
    report = overlap_report(carved)
    assert report["shared"] == {"polarity|subjectivity": 4175}
    assert report["leaks"] == []
