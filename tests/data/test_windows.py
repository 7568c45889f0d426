"""Long texts read in windows (keras_mtl/data/windows.py): the rule, its numpy and TF
twins agreeing, the encoded rows of training and evaluation, the merge of windows,
the sentence-level modes and `keras-mtl data`'s report."""

import random

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.config import ModelConfig, config_from_dict
from keras_mtl.data import windows
from keras_mtl.data.example import Example
from keras_mtl.data.pipeline import encode_split
from keras_mtl.data.tokenize import (RESERVED, SEP, TextEncoder, encode_examples, encode_pieces, encode_rows,
                                     make_tokenizer, piece_batches)
from keras_mtl.tasks import for_task

VOCAB = RESERVED + ["the", "cat", "sat", "un", "##believ", "##able", ".", "a", "dog"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 1, 2, RESERVED.index(SEP)
ID = {w: i for i, w in enumerate(VOCAB)}
PIECES = {"the": 1, "cat": 1, "sat": 1, "a": 1, "dog": 1, ".": 1, "unbelievable": 3}
TAGS = ["A", "D", "N", "P", "V"]
TAG = {"the": "D", "a": "D", "cat": "N", "dog": "N", "sat": "V", "unbelievable": "A", ".": "P"}


def encoder(max_length=8, **rule):
    return TextEncoder(make_tokenizer(VOCAB), max_length, cls_id=CLS_ID, unk_id=UNK_ID, pad_id=PAD_ID,
                       sep_id=SEP_ID, windowing=windows.Windowing(**rule))


def config(**model):
    demo = lambda kind: {"format": "demo", "kind": kind, "train": 5}  # noqa: E731 (not read here)
    return config_from_dict({
        "name": "w",
        "tasks": [{"name": "topic", "type": "classification", "data": demo("topic")},
                  {"name": "pos", "type": "tagging", "data": demo("pos")}],
        "model": {"max_sequence_length": 8, **model},
    }).config


CLASSES = {"topic": ["x", "y"], "pos": TAGS}


def as_pairs(starts, ends):
    return list(zip(starts.tolist(), ends.tolist()))


# ----------------------------------------------------------------------- the rule


def test_a_text_that_fits_is_one_window_also_exactly_and_empty():
    assert as_pairs(*windows.split_words([], 4, 2)) == [(0, 0)]
    assert as_pairs(*windows.split_words([1, 2, 1], 4, 2)) == [(0, 3)]  # exactly the content
    assert as_pairs(*windows.split_words([1, 2, 2], 4, 2)) == [(0, 2), (2, 3)]  # one piece more


def test_windows_start_stride_pieces_apart_and_hold_whole_words():
    assert as_pairs(*windows.split_words([1] * 10, 4, 2)) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    # starts snap forward to the next word start: 2 pieces on from word 0 is inside word 1 (pieces 1-2)
    assert as_pairs(*windows.split_words([1, 2, 1, 1, 1, 1], 4, 2)) == [(0, 3), (2, 6)]


def test_a_word_longer_than_a_window_gets_a_window_of_its_own():
    assert as_pairs(*windows.split_words([1, 10, 1], 4, 2)) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("seed", range(5))
def test_random_texts_windows_cover_every_word_at_word_boundaries(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        lengths = rng.integers(1, rng.choice([2, 4, 9]), rng.integers(0, 60))
        content, stride = int(rng.integers(1, 16)), int(rng.integers(1, 20))
        starts, ends = windows.split_words(lengths, content, stride)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        assert starts[0] == 0 and ends[-1] == len(lengths)
        assert (np.diff(starts) > 0).all() and (np.diff(ends) >= 0).all()
        assert (starts[1:] <= ends[:-1]).all(), "no word falls between two windows"
        for k, (s, e) in enumerate(zip(starts, ends)):
            pieces = offsets[e] - offsets[s]
            assert pieces <= content or e - s == 1, "only a word alone may exceed the window"
            if e < len(lengths):  # whole words: the next one would not fit
                assert offsets[e + 1] - offsets[s] > content
            if k:  # the start snaps to the first word `stride` pieces on, unless that skips a word
                wanted = int(np.searchsorted(offsets[:-1], offsets[starts[k - 1]] + stride))
                assert s == min(ends[k - 1], max(starts[k - 1] + 1, wanted))
        owner = windows.owners(lengths, starts, ends)
        assert ((starts[owner] <= np.arange(len(lengths))) & (np.arange(len(lengths)) < ends[owner])).all()


def test_central_rule_reads_each_word_where_it_has_the_most_context():
    starts, ends = windows.split_words([1] * 10, 4, 2)
    assert windows.owners([1] * 10, starts, ends).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    held = windows.readers([1] * 10, starts, ends, "mean")
    assert held.sum(axis=0).tolist() == [1, 1, 2, 2, 2, 2, 2, 2, 1, 1]
    central = windows.readers([1] * 10, starts, ends, "central")
    assert (central.sum(axis=0) == 1).all() and (central <= held).all()


def _ragged(texts):
    values = np.concatenate([np.asarray(t, np.int32) for t in texts]) if texts else np.zeros([0], np.int32)
    return tf.RaggedTensor.from_row_lengths(values, np.asarray([len(t) for t in texts], np.int64))


@pytest.mark.parametrize("merge", windows.MERGES)
def test_the_graph_computes_the_same_windows_and_reads_as_numpy(merge):
    rng = np.random.default_rng(7)
    for _ in range(60):
        batch = int(rng.integers(1, 5))
        texts = [rng.integers(1, rng.choice([2, 4, 12]), rng.integers(0, 50)).tolist() for _ in range(batch)]
        content, stride = rng.integers(1, 20, batch), rng.integers(1, 25, batch)
        lengths = _ragged(texts)
        plan = windows.tf_windows(lengths, tf.constant(content, tf.int32), tf.constant(stride, tf.int32))
        reads = windows.tf_word_rows(lengths, plan, merge)
        splits, rows = lengths.row_splits.numpy(), plan["row_splits"].numpy()
        word, row, position = (reads[k].numpy() for k in ("word", "row", "position"))
        for b, text in enumerate(texts):
            starts, ends = windows.split_words(text, content[b], stride[b])
            assert plan["windows"].numpy()[b] == len(starts)
            assert (plan["start"].numpy()[rows[b]:rows[b + 1]] - splits[b]).tolist() == starts.tolist()
            assert (plan["end"].numpy()[rows[b]:rows[b + 1]] - splits[b]).tolist() == ends.tolist()
            offsets = np.concatenate([[0], np.cumsum(text)])
            read = windows.readers(text, starts, ends, merge)
            expected = sorted((k, w, 1 + offsets[w] - offsets[starts[k]]) for k, w in zip(*np.nonzero(read)))
            mine = (word >= splits[b]) & (word < splits[b + 1])
            got = sorted(zip(row[mine] - rows[b], word[mine] - splits[b], position[mine]))
            assert [tuple(map(int, g)) for g in got] == [tuple(map(int, e)) for e in expected]


# ----------------------------------------------------------------------- encoded rows


def serving_rows(enc, texts, pairs=None, **kwargs):
    """`TextEncoder.serving_rows` in a graph, as the SavedModel runs it."""
    args = [tf.constant(texts)] + ([] if pairs is None else [tf.constant(pairs)])
    return tf.function(lambda *a: enc.serving_rows(enc.tokenize(*a), **kwargs))(*args)


def _texts(n, seed=0, long=40):
    rng = random.Random(seed)
    return [" ".join(rng.choice(list(PIECES)) for _ in range(rng.randint(0, long))) for _ in range(n)]


@pytest.mark.parametrize("cut", [None, "truncate", "head_tail"])
def test_the_graph_and_training_encode_the_same_rows(cut):
    enc = encoder(8)
    texts = _texts(40, seed=1) + ["", "unbelievable " * 3]
    plan = serving_rows(enc, texts, windows_needed=True, cut=cut)
    graph_rows = plan["token_ids"].to_list()
    windows_of = plan["windows"].numpy()
    first = np.concatenate([[0], np.cumsum(windows_of)])
    extra = len(plan["window_text"].numpy())
    shared = 0  # texts whose cut row is their first window (the same ids, read once)
    for i, (pieces, lengths, _) in enumerate(encode_pieces(enc, texts)):
        rows, count = encode_rows(enc, pieces, lengths, None, True, cut)
        assert count == windows_of[i]
        window_rows = [r[0].tolist() for r in rows if r[2] != windows.CUT]
        assert window_rows == graph_rows[first[i]:first[i + 1]]
        if cut and count > 1 or len(rows) > count:
            at = int(plan["cut_row"].numpy()[i])
            assert rows[-1][0].tolist() == graph_rows[at]
            if at == first[i]:
                assert cut == "truncate" and rows[-1][0].tolist() == window_rows[0]
                shared += 1
            else:
                extra += 1
    assert extra == len(graph_rows)
    if cut == "truncate":  # the sample has both kinds of long text
        assert 0 < shared < sum(windows_of > 1)


def test_a_cut_row_equal_to_the_first_window_is_read_once():
    enc = encoder(8)  # windows of 7 pieces
    aligned, across = "the cat sat a dog . the cat sat", "the cat sat a dog unbelievable the"
    plan = serving_rows(enc, [aligned, across], windows_needed=True, cut="truncate")
    rows, first = plan["token_ids"].to_list(), np.concatenate([[0], np.cumsum(plan["windows"].numpy())])
    cut_row = plan["cut_row"].numpy()
    assert cut_row[0] == first[0]  # a word ends at piece 7: the first window is the cut row
    assert cut_row[1] == len(rows) - 1 and rows[cut_row[1]] != rows[first[1]]  # "unbelievable" straddles the cut
    assert len(rows) == sum(plan["windows"].numpy()) + 1


@pytest.mark.parametrize("mode", windows.LONG_INPUTS)
def test_pairs_keep_the_longest_first_cut_within_each_window(mode):
    enc = encoder(12)
    texts, pairs = _texts(30, seed=2, long=20), _texts(30, seed=3, long=12)
    windowed = mode == "windows"
    plan = serving_rows(enc, texts, pairs, windows_needed=windowed, cut=None if windowed else mode)
    graph_rows = plan["token_ids"].to_list()
    got = {i: [] for i in range(len(texts))}
    for r, i in enumerate(plan["window_text"].numpy() if windowed else range(len(texts))):
        got[int(i)].append(graph_rows[r])
    cut_ones = encode_examples(enc, texts, pairs)
    for i, (pieces, lengths, second) in enumerate(encode_pieces(enc, texts, pairs)):
        rows, _ = encode_rows(enc, pieces, lengths, second, windowed, None if windowed else mode)
        assert [r[0].tolist() for r in rows] == got[i]
        keep_a, keep_b = windows.pair_lengths(len(pieces), len(second), 12 - 3)
        for ids, *_ in rows:
            assert len(ids) <= 12 and ids[0] == CLS_ID and ids[-1] == SEP_ID
            if mode != "head_tail":  # the second text's first keep_b pieces, after the first [SEP]
                assert ids[len(ids) - 1 - keep_b:-1].tolist() == second[:keep_b].tolist()
        if mode == "truncate" or len(rows) == 1 and (keep_a == len(pieces) or mode != "windows"):
            if mode != "head_tail" or (keep_a == len(pieces) and keep_b == len(second)):
                assert rows[0][0].tolist() == cut_ones.token_ids[i].tolist(), "as before windows"


def test_texts_that_fit_are_encoded_as_before_windows_bit_for_bit():
    enc = encoder(16)
    texts = [t for t in _texts(60, seed=4, long=12) if len(t.split()) < 12]
    before = encode_examples(enc, texts)
    examples = [Example(t, {"pos": tuple(TAG[w] for w in t.split()), "topic": "x"}) for t in texts]
    fits = [i for i, ids in enumerate(before.token_ids) if not before.truncated[i]]
    split = encode_split([examples[i] for i in fits], enc, config(max_sequence_length=16).tasks, CLASSES)
    assert len(split) == len(fits) and split.row_example.tolist() == list(range(len(fits)))
    for r, i in enumerate(fits):
        assert split.token_ids[r].dtype == before.token_ids[i].dtype
        assert split.token_ids[r].tolist() == before.token_ids[i].tolist()
        assert split.word_starts[r].tolist() == before.word_starts[i].tolist()


def test_a_batch_that_fits_is_built_at_once_as_encode_rows_builds_each_text():
    """`piece_batches` builds a batch whose texts all fit (empty texts and words the tokenizer
    drops included) from the ragged pieces at once: the rows of `encode_rows`, the same dtypes; a
    batch with a text that does not fit, or with a pair, is handed on per text."""
    enc = encoder(16)
    texts = _texts(120, seed=5, long=12) + ["", "\x07 the", "the"]
    texts = [t for t, (pieces, _, _) in zip(texts, encode_pieces(enc, texts)) if len(pieces) <= 15]
    assert len(texts) > 64
    batches = list(piece_batches(enc, texts, batch_size=32))
    assert len(batches) == -(-len(texts) // 32) and all(f is not None and u is None for f, u in batches)
    token_ids = [a for f, _ in batches for a in f[0]]
    word_starts = [a for f, _ in batches for a in f[1]]
    for i, (pieces, lengths, _) in enumerate(encode_pieces(enc, texts)):
        (ids, starts, window, cut), = encode_rows(enc, pieces, lengths)[0]
        assert (window, cut) == (0, False)
        assert token_ids[i].dtype == ids.dtype == np.int32 and token_ids[i].tolist() == ids.tolist()
        assert word_starts[i].dtype == starts.dtype and word_starts[i].tolist() == starts.tolist()
    long = " ".join(["unbelievable"] * 6)  # 18 pieces: 2 windows at 16
    (fitted, uncut), = piece_batches(enc, ["the cat", long])
    assert fitted is None and [len(u[0]) for u in uncut] == [2, 18]
    (fitted, uncut), = piece_batches(enc, ["the cat", "a dog"], ["a", None])
    assert fitted is None and uncut[0][2].tolist() == [ID["a"]] and uncut[1][2] is None
    (fitted, uncut), = piece_batches(enc, ["the cat"], rows=False)
    assert fitted is None and uncut[0][0].tolist() == [ID["the"], ID["cat"]]


@pytest.mark.parametrize("merge", windows.MERGES)
def test_training_labels_sit_in_the_windows_that_read_each_word(merge):
    enc = encoder(8, merge=merge)
    words = "the cat sat unbelievable a dog . the cat sat a dog .".split()
    tags = tuple(TAG[w] for w in words)
    split = encode_split([Example(" ".join(words), {"pos": tags})], enc, config().tasks, CLASSES)
    lengths = [PIECES[w] for w in words]
    starts, ends = windows.split_words(lengths, 7, 3)
    assert len(split) == len(starts) > 2 and split.num_windows.tolist() == [len(starts)]
    read = windows.readers(lengths, starts, ends, merge)
    trained = np.zeros(len(words), int)
    for r, (labels, ids) in enumerate(zip(split.labels["pos"], split.token_ids)):
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        assert ids.tolist() == [CLS_ID] + encode_pieces(enc, [" ".join(words[starts[r]:ends[r]])])[0][0].tolist()
        for w in range(len(words)):
            position = split.word_starts[r][w]
            if read[r, w]:
                assert position == 1 + offsets[w] - offsets[starts[r]]
                assert TAGS[labels[position]] == tags[w]
                trained[w] += 1
            else:
                assert position == windows.NOT_HERE
        assert (labels >= 0).sum() == read[r].sum()
    assert trained.tolist() == read.sum(axis=0).tolist()
    assert (trained == 1).all() if merge == "central" else (trained >= 1).all() and (trained == 2).any()


def test_max_windows_bounds_the_windows_of_a_training_text():
    enc = encoder(6)
    text = " ".join(["the cat sat"] * 10)
    tags = ("D", "N", "V") * 10
    split = encode_split([Example(text, {"pos": tags})], enc, config().tasks, CLASSES, max_windows=3)
    assert len(split) == 3 and split.num_windows[0] > 3
    trained = sum((labels >= 0).sum() for labels in split.labels["pos"])
    assert 0 < trained < len(tags)


def test_sentence_tasks_read_long_texts_as_long_inputs_says():
    text = " ".join(["the cat sat unbelievable"] * 3)  # 18 pieces
    ex = [Example(text, {"topic": "y"})]
    tasks = config().tasks
    pieces = encode_pieces(encoder(8), [text])[0][0]
    cut = encode_split(ex, encoder(8), tasks, CLASSES)
    assert len(cut) == 1 and cut.token_ids[0].tolist() == encode_examples(encoder(8), [text]).token_ids[0].tolist()
    head_tail = encode_split(ex, encoder(8, long_inputs="head_tail"), tasks, CLASSES)
    assert head_tail.token_ids[0].tolist() == [CLS_ID] + pieces[:1].tolist() + pieces[-6:].tolist()
    windowed = encode_split(ex, encoder(8, long_inputs="windows"), tasks, CLASSES)
    k = len(windowed)
    assert k > 2 and np.allclose(windowed.weights["topic"], 1.0 / k) and windowed.labels["topic"].tolist() == [1] * k
    # a text labelled for tagging and a sentence task: windows for the tags, a cut row for the sentence task
    both = encode_split([Example(text, {"topic": "y", "pos": ("D", "N", "V", "A") * 3})], encoder(8), tasks, CLASSES)
    cut_row = both.row_window == windows.CUT
    assert cut_row.sum() == 1 and both.weights["topic"].tolist() == cut_row.astype(float).tolist()
    assert both.weights["pos"].tolist() == (~cut_row).astype(float).tolist()
    assert both.example_indices("pos").tolist() == both.example_indices("topic").tolist() == [0]


# ----------------------------------------------------------------------- the merge


def test_windows_merge_as_the_mean_of_their_logits():
    head = for_task(config().task("topic"), ["x", "y", "z"])
    logits = np.asarray([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = logits.mean(axis=0)
    np.testing.assert_allclose(head.merge_windows(p), np.exp(mean) / np.exp(mean).sum(), rtol=1e-5)
    assert head.merge_windows(p[:1]).tolist() == p[0].tolist(), "one window: its output exactly"
    got = head.merge_windows_tf(tf.constant(np.concatenate([p, p[:1]])), tf.constant([0, 0, 1]), 2).numpy()
    np.testing.assert_allclose(got[0], head.merge_windows(p), rtol=1e-5)
    assert got[1].tolist() == p[0].tolist()


def test_regression_and_multilabel_windows_merge():
    cfg = config_from_dict({"name": "r", "tasks": [
        {"name": "score", "type": "regression", "data": {"format": "delimited", "train": "x.tsv"}},
        {"name": "tags", "type": "multilabel", "data": {"format": "delimited", "train": "x.tsv"}}]}).config
    score = for_task(cfg.task("score"))
    assert score.merge_windows([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    tags = for_task(cfg.task("tags"), ["a", "b"])
    p = np.asarray([[0.9, 0.2], [0.5, 0.2]], np.float32)
    z = np.log(p / (1 - p)).mean(axis=0)
    np.testing.assert_allclose(tags.merge_windows(p), 1 / (1 + np.exp(-z)), rtol=1e-5)
    np.testing.assert_allclose(tags.merge_windows_tf(tf.constant(p), tf.constant([0, 0]), 1).numpy()[0],
                               1 / (1 + np.exp(-z)), rtol=1e-5)


def test_head_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end():
    pieces = np.arange(20)
    assert windows.head_tail(pieces, 8).tolist() == [0, 1, 14, 15, 16, 17, 18, 19]
    assert windows.head_tail(pieces[:5], 8).tolist() == [0, 1, 2, 3, 4]
    ragged = tf.ragged.constant([list(range(20)), list(range(5))])
    assert windows.tf_head_tail(ragged, tf.constant([8, 8])).to_list() == [[0, 1, 14, 15, 16, 17, 18, 19], list(range(5))]


# ----------------------------------------------------------------------- config


def test_window_fields_are_validated_and_known_to_compare():
    from keras_mtl.compare import LATER_FIELDS
    from keras_mtl.errors import ConfigError

    for field in ("window_stride", "window_merge", "max_windows", "long_inputs"):
        assert LATER_FIELDS[f"model.{field}"] == ModelConfig.model_fields[field].default
    assert windows.Windowing.of(ModelConfig()) == windows.Windowing()
    assert ModelConfig().max_windows == windows.DEFAULT_MAX_WINDOWS
    with pytest.raises(ConfigError, match=r"model: window_stride \(8\) must be at most max_sequence_length - 1 \(7\)"):
        config(window_stride=8)
    with pytest.raises(ConfigError, match="model.long_inputs"):
        config(long_inputs="tail")


# ----------------------------------------------------------------------- keras-mtl data


def test_keras_mtl_data_reports_windows_and_the_words_past_max_windows(tmp_path):
    from keras_mtl.data.summary import format_summary
    from keras_mtl.prepare import data_summary

    words = ["the", "cat", "sat", "on", "a", "mat", "."]
    long = [words[i % len(words)] for i in range(60)]
    sentences = [long, words, words[:3][::-1]]
    text = "\n\n".join("\n".join(f"{w} T{len(w)}" for w in s) for s in sentences) + "\n"
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    (tmp_path / "dev.txt").write_text("\n".join(f"{w} T{len(w)}" for w in long) + "\n", encoding="utf-8")
    data = {"format": "conll", "train": "train.txt", "dev": "dev.txt", "test": "dev.txt", "label_column": 1}
    loaded = config_from_dict({"name": "long", "tasks": [{"name": "pos", "type": "tagging", "data": data}],
                               "model": {"max_sequence_length": 8, "max_windows": 2, "vocabulary_size": 60}},
                              base_dir=tmp_path)
    summary = data_summary(loaded)
    train, dev = summary["tasks"]["pos"]["splits"]["train"], summary["tasks"]["pos"]["splits"]["dev"]
    starts, ends = windows.split_words([1] * 60, 7, 3)  # the learned vocabulary holds each word whole
    kept = windows.readers([1] * 60, starts, ends, "mean")[:2].any(axis=0)  # the default window_merge
    assert train["windows"] == {"texts": 1, "max": len(starts)} and dev["windows"]["texts"] == 1
    assert train["over_max_windows"] == 1 and "over_max_windows" not in dev, "only training is bounded"
    assert train["untrained_words"] == int((~kept).sum()) > 0
    assert train["truncated"] == dev["truncated"] == 0, "windows drop no word"
    line = next(x for x in format_summary(summary).splitlines() if x.strip().startswith("train"))
    assert f"in windows 1 (at most {len(starts)}), over max_windows 1 ({train['untrained_words']} labelled words" in line
