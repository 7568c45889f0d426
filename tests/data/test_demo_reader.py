"""The embedded demo corpus: deterministic, well-formed, read through the registry."""

from pathlib import Path

import pytest

from keras_mtl.data.readers import ReadRequest, get_reader
from keras_mtl.data.readers.demo import ADJECTIVES, TOPICS, DemoOptions, generate, split_of_text
from keras_mtl.errors import DataError

TAGS = {"DET", "ADJ", "NOUN", "VERB", "ADV", "PREP", "PUNCT"}


def read(source, kind="topic", task_type="classification", split="train", seed=0, task="t"):
    reader = get_reader("demo")
    request = ReadRequest(source, DemoOptions(kind=kind, seed=seed), task, task_type, split)
    return list(reader.read(request))  # a reader streams: take the whole stream


def test_registered_for_classification_and_tagging_with_count_sources():
    reader = get_reader("demo")
    assert set(reader.task_types) == {"classification", "tagging"}
    assert reader.source_is_path is False


@pytest.mark.parametrize("kind", ["topic", "sentiment", "pos"])
def test_same_seed_same_examples(kind):
    a = generate(kind, "train", 50, seed=3)
    b = generate(kind, "train", 50, seed=3)
    assert [(e.text, e.labels, e.origin) for e in a] == [(e.text, e.labels, e.origin) for e in b]


def test_a_prefix_is_stable_when_the_count_grows():
    small = generate("topic", "train", 10)
    large = generate("topic", "train", 40)
    assert [e.text for e in small] == [e.text for e in large[:10]]


def test_different_splits_and_seeds_differ():
    train = [e.text for e in generate("topic", "train", 50)]
    dev = [e.text for e in generate("topic", "dev", 50)]
    other_seed = [e.text for e in generate("topic", "train", 50, seed=1)]
    assert train != dev
    assert train != other_seed
    # Different sentences, not a shifted copy of the same stream.
    assert not set(train) & set(dev)


def test_topic_labels_and_origins():
    examples = read(40, kind="topic")
    assert {e.labels["t"] for e in examples} <= set(TOPICS)
    assert len({e.labels["t"] for e in examples}) == 4
    assert [e.origin for e in examples[:2]] == ["demo:topic/train:1", "demo:topic/train:2"]
    for e in examples:
        assert list(e.labels) == ["t"]
        assert e.text.endswith(" .")


def test_sentiment_is_binary_and_follows_the_adjectives():
    examples = read(200, kind="sentiment")
    assert {e.labels["t"] for e in examples} == {"positive", "negative"}
    agree = 0
    for e in examples:
        words = set(e.words)
        polar = [p for p in ("positive", "negative") if words & set(ADJECTIVES[p])]
        assert e.labels["t"] in ("positive", "negative")
        agree += polar == [e.labels["t"]]
    assert agree > 0.7 * len(examples)  # the label is learnable from the words


def test_tagging_labels_one_per_word():
    examples = read(100, kind="pos", task_type="tagging", split="dev")
    for e in examples:
        tags = e.labels["t"]
        assert isinstance(tags, tuple)
        assert len(tags) == len(e.text.split()), e
        assert set(tags) <= TAGS
        assert tags[0] == "DET" and tags[-1] == "PUNCT"
        assert e.text == " ".join(e.text.split())  # words joined by single spaces


def test_zero_examples():
    assert read(0) == []


@pytest.mark.parametrize("bad", [-1, "200", 2.5, True, None, {"a": 1}])
def test_bad_count_is_a_data_error(bad):
    with pytest.raises(DataError, match="expected a number of examples"):
        read(bad)


def test_kind_must_match_the_task_type():
    with pytest.raises(DataError, match="kind 'pos' gives tagging labels"):
        read(5, kind="pos", task_type="classification")
    with pytest.raises(DataError, match="kind 'topic' gives classification labels"):
        read(5, kind="topic", task_type="tagging")


def test_no_text_is_in_two_splits_in_any_kind_or_seed():
    by_split = {split: set() for split in ("train", "dev", "test")}
    for kind in ("topic", "sentiment", "pos"):
        for seed in (0, 1):
            for split, count in (("train", 1200), ("dev", 200), ("test", 200)):
                texts = {e.text for e in generate(kind, split, count, seed)}
                assert all(split_of_text(t) == split for t in texts)
                by_split[split] |= texts
    assert not by_split["train"] & by_split["dev"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["dev"] & by_split["test"]


def test_demo_config_has_no_leaks():
    from keras_mtl.config import load_config
    from keras_mtl.data.load import load_task_data
    from keras_mtl.data.summary import leak_lines

    data = load_task_data(load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"))
    assert data.overlap["leaks"] == []
    assert data.overlap["leaks_by_split"] == {}
    assert leak_lines(data.overlap, verbose=True) == []
