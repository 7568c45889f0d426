"""Encoded splits -> the batches model.fit sees (structure, weights, buckets)."""

import random

import numpy as np
import pytest

from keras_mtl.config import config_from_dict
from keras_mtl.data.example import Example
from keras_mtl.data.buckets import bucket_lengths, example_draw_weights, optimal_bucket_lengths, training_bucket_lengths
from keras_mtl.data.pipeline import (
    encode_labels,
    encode_split,
    eval_batches,
    train_dataset,
)
from keras_mtl.data.tokenize import RESERVED, TextEncoder, encode_texts, make_tokenizer

VOCAB = RESERVED + ["the", "cat", "sat", "un", "##believ", "##able", ".", "a", "dog"]
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
MAX_LEN = 16
BUCKETS = [8]
BATCH = 6
WORDS = {"the": "D", "a": "D", "cat": "N", "dog": "N", "sat": "V", "unbelievable": "A", ".": "P"}
TAGS = ["A", "D", "N", "P", "V"]
TOPICS = ["x", "y"]
SENTIMENTS = ["neg", "pos"]


def make_config(**train):
    demo = lambda kind: {"format": "demo", "kind": kind, "train": 5}  # noqa: E731 (not read here)
    return config_from_dict({
        "name": "p",
        "tasks": [
            {"name": "topic", "type": "classification", "data": demo("topic")},
            {"name": "pos", "type": "tagging", "data": demo("pos")},
            {"name": "sentiment", "type": "classification", "data": demo("sentiment")},
        ],
        "model": {"max_sequence_length": MAX_LEN},
        # raw 0/1 label weights unless a test asks for the expected normalizer
        "train": {"batch_size": BATCH, "bucket_lengths": BUCKETS, "epochs": 1, "loss_normalizer": "batch", **train},
    }).config


CONFIG = make_config()
CLASSES = {"topic": TOPICS, "pos": TAGS, "sentiment": SENTIMENTS}


def make_examples(n=90, seed=0):
    """Unique texts of 1-12 words; each has 1-3 of the tasks' labels."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        words = [rng.choice(list(WORDS)) for _ in range(rng.randint(1, 12))]
        text = " ".join(words)
        if text in seen:
            continue
        seen.add(text)
        labels = {}
        which = rng.choice([("topic",), ("pos",), ("sentiment",), ("topic", "pos"), ("topic", "pos", "sentiment")])
        if "topic" in which:
            labels["topic"] = rng.choice(TOPICS)
        if "pos" in which:
            labels["pos"] = tuple(WORDS[w] for w in words)
        if "sentiment" in which:
            labels["sentiment"] = rng.choice(SENTIMENTS)
        out.append(Example(text, labels, f"mem:{len(out) + 1}"))
    return out


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(make_tokenizer(VOCAB), MAX_LEN, cls_id=CLS_ID, unk_id=UNK_ID, pad_id=PAD_ID)


@pytest.fixture(scope="module")
def split(encoder):
    examples = make_examples()
    # Keep examples whose rows (a long text's windows and cut row) are unique,
    # so that a batch row can be traced back to its row and example.
    rows = encode_split(examples, encoder, CONFIG.tasks, CLASSES)
    count = {}
    for row in rows.token_ids:
        count[tuple(row)] = count.get(tuple(row), 0) + 1
    clash = {int(rows.row_example[r]) for r, row in enumerate(rows.token_ids) if count[tuple(row)] > 1}
    return encode_split([e for i, e in enumerate(examples) if i not in clash], encoder, CONFIG.tasks, CLASSES)


def by_ids(split):
    return {tuple(row.tolist()): i for i, row in enumerate(split.token_ids)}


def batches(split, sees_task, n=25, config=CONFIG, seed=0):
    ds, sizes, schedule = train_dataset(
        split, config.tasks, config.train, MAX_LEN, sees_task, pad_id=PAD_ID, seed=seed, steps_per_epoch=1000
    )
    out = [(
        {k: v.numpy() for k, v in x.items()},
        {k: v.numpy() for k, v in y.items()},
        {k: v.numpy() for k, v in sw.items()},
    ) for x, y, sw in ds.take(n)]
    return out, sizes, schedule


def row_example(split, lookup, ids_row):
    return lookup[tuple(ids_row[ids_row != PAD_ID].tolist())]


def test_split_encoding(split):
    assert len(split) > 60
    assert split.truncated.any() and not split.truncated.all()
    one_row = np.bincount(split.row_example)[split.row_example] == 1  # texts that fit: one row, as before windows
    assert one_row.any() and not one_row.all()
    for task in ("topic", "pos", "sentiment"):
        has = np.asarray([task in e.labels for e in split.examples])
        assert split.example_indices(task).tolist() == np.flatnonzero(has).tolist()
        assert split.weights[task][one_row].tolist() == has[split.row_example[one_row]].astype(float).tolist()
    assert split.weights["topic"].dtype == np.float32


def test_training_bucket_lengths_auto_weights_examples_by_sampling(split):
    config = make_config(bucket_lengths="auto", num_buckets=3, sampling="uniform")
    buckets = training_bucket_lengths(split, config.tasks, config.train, MAX_LEN)
    assert len(buckets) <= 3 and buckets[-1] == MAX_LEN
    # uniform sampling: each task's examples share 1/3 of the draws
    weights = example_draw_weights(split, config.tasks, [1 / 3] * 3)
    assert weights.sum() == pytest.approx(1.0)
    lengths = [len(ids) for ids in split.token_ids]
    assert buckets == optimal_bucket_lengths(lengths, weights, 3, MAX_LEN)
    # a configured list is used as given
    assert training_bucket_lengths(split, CONFIG.tasks, CONFIG.train, MAX_LEN) == [8, MAX_LEN]
    # and the training stream pads to exactly those lengths
    out, _, _ = batches(split, False, n=20, config=config)
    assert {x["token_ids"].shape[1] for x, _, _ in out} <= set(buckets)


def test_batch_structure_without_conditioning(split):
    out, sizes, schedule = batches(split, False)
    assert sizes == [len(split.indices(t)) for t in ("topic", "pos", "sentiment")]
    assert schedule.shape == (1, 3)
    lookup = by_ids(split)
    lengths_seen = set()
    both = 0
    for x, y, sw in out:
        assert set(x) == {"token_ids", "padding_mask"}
        assert set(y) == set(sw) == {"topic", "pos", "sentiment"}
        ids = x["token_ids"]
        assert ids.dtype == np.int32 and ids.shape[0] == BATCH
        length = ids.shape[1]
        lengths_seen.add(length)
        np.testing.assert_array_equal(x["padding_mask"], ids != PAD_ID)
        assert y["topic"].shape == sw["topic"].shape == (BATCH,)
        assert y["pos"].shape == sw["pos"].shape == (BATCH, length)
        for r in range(BATCH):
            i = row_example(split, lookup, ids[r])  # the row
            ex = split.examples[split.row_example[i]]
            assert ids[r, 0] == CLS_ID
            for task, classes in (("topic", TOPICS), ("sentiment", SENTIMENTS)):
                if task in ex.labels and split.weights[task][i] > 0:  # a long text's cut row has them
                    assert sw[task][r] == 1.0
                    assert classes[y[task][r]] == ex.labels[task]
                else:
                    assert sw[task][r] == 0.0
            n = int((ids[r] != PAD_ID).sum())
            assert not sw["pos"][r, n:].any(), "padded positions must have weight 0"
            if "pos" in ex.labels and split.weights["pos"][i] > 0:  # a long text's windows have them
                read = [w for w, s in enumerate(split.word_starts[i]) if s < n]
                starts = [split.word_starts[i][w] for w in read]
                expected = np.zeros(length, np.float32)
                expected[starts] = 1.0
                np.testing.assert_array_equal(sw["pos"][r], expected)
                assert [TAGS[t] for t in y["pos"][r, starts]] == [ex.labels["pos"][w] for w in read]
            else:
                assert not sw["pos"][r].any()
            both += len(ex.labels) > 1 and sum(float(np.sum(sw[t][r])) > 0 for t in sw) > 1
    assert lengths_seen <= set(bucket_lengths(BUCKETS, MAX_LEN))
    assert lengths_seen == {8, 16}, "both buckets should occur"
    assert both > 0, "an example with several labels trains them all in one pass"


def test_batch_structure_with_conditioning(split):
    out, sizes, _ = batches(split, True, n=30)
    lookup = by_ids(split)
    names = ["topic", "pos", "sentiment"]
    seen_tasks = set()
    for x, y, sw in out:
        assert set(x) == {"token_ids", "padding_mask", "task_ids"}
        assert set(y) == set(sw) == set(names)
        assert x["task_ids"].dtype == np.int32 and x["task_ids"].shape == (BATCH,)
        assert x["token_ids"].shape[1] in (8, 16)
        for r in range(BATCH):
            active = [t for t in names if float(np.sum(sw[t][r])) > 0]
            assert len(active) == 1, f"row {r}: weights on {active}"
            task_id = int(x["task_ids"][r])
            assert active == [names[task_id]]
            row = row_example(split, lookup, x["token_ids"][r])
            assert names[task_id] in split.examples[split.row_example[row]].labels
            assert split.weights[names[task_id]][row] > 0
            seen_tasks.add(task_id)
    assert seen_tasks == {0, 1, 2}


def test_unseen_and_missing_labels_get_zero_weight(encoder):
    examples = [
        Example("the cat", {"topic": "x", "pos": ("D", "Q")}, "m:1"),  # tag Q unseen
        Example("a dog", {"topic": "zzz"}, "m:2"),  # class zzz unseen
        Example("unbelievable dog", {"pos": ("A", "N")}, "m:3"),
    ]
    enc = encode_split(examples, encoder, CONFIG.tasks, CLASSES)
    assert enc.weights["topic"].tolist() == [1.0, 0.0, 0.0]
    assert enc.weights["pos"].tolist() == [1.0, 0.0, 1.0]
    assert enc.labels["topic"][0] == TOPICS.index("x")
    # Tagging: a label on each word's first piece, -1 elsewhere and for unseen tags.
    assert enc.labels["pos"][0].tolist() == [-1, TAGS.index("D"), -1]
    assert enc.labels["pos"][2].tolist() == [-1, TAGS.index("A"), -1, -1, TAGS.index("N")]
    assert enc.labels["pos"][1].tolist() == [-1, -1, -1]


def test_truncated_words_get_no_tag_label(encoder):
    task = CONFIG.task("pos")
    text = " ".join(["the"] * (MAX_LEN + 3))
    ids, starts, _ = encode_texts(encoder, [text])
    labels, weights = encode_labels(task, TAGS, [Example(text, {"pos": ("D",) * (MAX_LEN + 3)})], ids, starts)
    assert labels[0].shape == (MAX_LEN,)
    assert (labels[0][1:] == TAGS.index("D")).all() and labels[0][0] == -1
    assert weights.tolist() == [1.0]


def test_regression_and_multilabel_labels():
    tasks = config_from_dict({
        "name": "r",
        "tasks": [
            {"name": "score", "type": "regression", "data": {"format": "delimited", "train": "x.tsv"}},
            {"name": "tags", "type": "multilabel", "data": {"format": "delimited", "train": "x.tsv"}},
        ],
    }).config.tasks
    examples = [Example("a", {"score": 0.5, "tags": ("b", "zz")}), Example("b", {})]
    labels, weights = encode_labels(tasks[0], [], examples, None, None)
    assert labels.dtype == np.float32 and labels.tolist() == [0.5, 0.0] and weights.tolist() == [1.0, 0.0]
    labels, weights = encode_labels(tasks[1], ["a", "b"], examples, None, None)
    assert labels.tolist() == [[0.0, 1.0], [0.0, 0.0]] and weights.tolist() == [1.0, 0.0]


def test_single_task_dataset(split):
    config = config_from_dict({
        "name": "one",
        "tasks": [{"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}}],
        "train": {"batch_size": 4, "bucket_lengths": BUCKETS, "loss_normalizer": "batch"},
    }).config
    ds, sizes, schedule = train_dataset(split, config.tasks, config.train, MAX_LEN, False, pad_id=PAD_ID)
    assert sizes == [len(split.indices("topic"))]
    assert schedule.tolist() == [[1.0]] * config.train.epochs
    for x, y, sw in ds.take(5):
        assert set(y) == {"topic"} and sw["topic"].numpy().tolist() == [1.0] * 4


def test_eval_batches_cover_each_index_once_in_bucket_lengths(split):
    idx = split.indices("pos")
    lengths = bucket_lengths(BUCKETS, MAX_LEN)
    seen = []
    for x, chunk in eval_batches(split, idx, 7, lengths, PAD_ID, task_id=1):
        length = x["token_ids"].shape[1]
        assert length in lengths
        assert length == min(b for b in lengths if b >= max(len(split.token_ids[i]) for i in chunk))
        assert x["task_ids"].tolist() == [1] * len(chunk)
        np.testing.assert_array_equal(x["padding_mask"], x["token_ids"] != PAD_ID)
        for row, i in enumerate(chunk):
            n = len(split.token_ids[i])
            np.testing.assert_array_equal(x["token_ids"][row, :n], split.token_ids[i])
        seen += chunk
    assert sorted(seen) == sorted(idx.tolist())
    x, _ = next(eval_batches(split, idx, 7, lengths, PAD_ID))
    assert "task_ids" not in x


def test_balanced_class_weights_formula():
    import numpy as np

    from keras_mtl.data.pipeline import balanced_class_weights

    labels = np.array([0, 1, 1, 1, 0, 1], np.int32)
    has = np.array([True, True, True, True, True, False])
    # Labelled: class 0 twice, class 1 three times; n = 5, C = 2.
    w = balanced_class_weights(labels, has, 2)
    np.testing.assert_allclose(w, [5 / (2 * 2), 5 / (2 * 3)], rtol=1e-6)
    # A class never seen gets weight 0 instead of dividing by zero.
    np.testing.assert_allclose(balanced_class_weights(labels, has, 3)[2], 0.0)


def _label_weight(sw):
    return {k: float(v.sum()) for k, v in sw.items()}


def test_expected_normalizer_weights_sum_to_one_per_batch_on_average(split):
    """`loss_normalizer: expected`: sample weights are divided by the expected
    label weight per batch, so sum(w) per task averages 1 over batches (a
    batch with more of a task's labels than average weighs more, not each
    label less), and each unit's weight is the same constant everywhere."""
    raw_cfg = make_config(loss_normalizer="batch", bucket_lengths="auto", num_buckets=2)
    exp_cfg = make_config(loss_normalizer="expected", bucket_lengths="auto", num_buckets=2)
    raw, _, _ = batches(split, False, n=300, config=raw_cfg)
    exp, _, _ = batches(split, False, n=300, config=exp_cfg)
    for task in ("topic", "pos", "sentiment"):
        totals = [_label_weight(sw)[task] for _, _, sw in exp]
        assert np.mean(totals) == pytest.approx(1.0, rel=0.08), task
        # the same stream, every unit scaled by one constant
        ratios = {
            float(e) / float(r)
            for (_, _, swr), (_, _, swe) in zip(raw, exp)
            for r, e in zip(swr[task].ravel(), swe[task].ravel())
            if r > 0
        }
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-4), (task, min(ratios), max(ratios))


def test_expected_normalizer_per_task_batches(split):
    # per_task batches: a batch of task t has sum(w_t) = 1 on average
    cfg = make_config(loss_normalizer="expected", batch_mode="per_task")
    out, _, _ = batches(split, True, n=150, config=cfg)
    by_task = {}
    for x, _, sw in out:
        own = int(x["task_ids"][0])
        by_task.setdefault(own, []).append(_label_weight(sw)[CONFIG.tasks[own].name])
    assert len(by_task) == 3
    for own, totals in by_task.items():
        assert np.mean(totals) == pytest.approx(1.0, rel=0.08), own


def test_loss_for_normalizers():
    import keras

    from keras_mtl.model import loss_for

    task = CONFIG.task("topic")
    y, p = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    w = np.array([0.5, 0.0], np.float32)
    ce = -np.log(0.9)
    assert float(loss_for(task, "batch")(y, p, sample_weight=w)) == pytest.approx(ce, rel=1e-5)
    assert float(loss_for(task, "expected")(y, p, sample_weight=w)) == pytest.approx(0.5 * ce, rel=1e-5)
    assert isinstance(loss_for(task), keras.losses.SparseCategoricalCrossentropy)
    with pytest.raises(ValueError, match="normalizer must be"):
        loss_for(task, "mean")
