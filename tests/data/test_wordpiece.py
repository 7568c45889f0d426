"""keras_mtl.data.wordpiece gives exactly the vocabulary of keras-hub / TensorFlow Text."""

import random

import keras_hub
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as tf_text

from keras_mtl.data import wordpiece
from keras_mtl.data.readers.demo import generate
from keras_mtl.errors import DataError

RESERVED = ["[PAD]", "[UNK]", "[CLS]"]

# Words over a small alphabet, so that substrings repeat; '#' makes plain
# strings that look like joined tokens ("##a"), which TensorFlow Text files
# apart from the joined ones.
WORDS = st.text(alphabet="abcde#", min_size=1, max_size=9)
WORD_COUNTS = st.dictionaries(WORDS, st.integers(1, 400), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    counts=WORD_COUNTS,
    vocab_size=st.integers(8, 120),
    lower=st.sampled_from([1, 2, 10]),
    joiner=st.sampled_from([True, False]),
    iterations=st.integers(1, 4),
)
def test_learn_equals_tensorflow_text(counts, vocab_size, lower, joiner, iterations):
    options = {"lower_thresh": lower, "include_joiner_token": joiner, "num_iterations": iterations}
    expected = tf_text.learn(counts, vocab_size, RESERVED, joiner="##", **options)
    assert wordpiece.learn(counts, vocab_size, RESERVED, joiner="##", **options) == expected


def test_learn_reports_every_search_step():
    rng = random.Random(0)
    counts = {"".join(rng.choice("abcdef") for _ in range(rng.randint(1, 8))): rng.randint(1, 500) for _ in range(300)}
    steps = []
    vocab = wordpiece.learn(counts, 60, RESERVED, on_step=lambda *step: steps.append(step))
    assert [s[0] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[-1][2] == len(vocab)


def _keras_hub(texts, size, lowercase, reserved):
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(1024)
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        ds, vocabulary_size=size, lowercase=lowercase, reserved_tokens=reserved
    )


@pytest.mark.parametrize("lowercase", [True, False])
def test_same_vocabulary_as_keras_hub_on_the_demo_corpus(lowercase):
    texts = sorted({e.text for kind in ("topic", "pos") for e in generate(kind, "train", 600)})
    texts += ["Punctuation, Accents: café naïve 東京 ok!", "UPPER lower MiXeD, 1,000.5 #tag"] * 12
    for size in (60, 150, 400):
        expected = _keras_hub(texts, size, lowercase, RESERVED)
        assert wordpiece.compute_word_piece_vocabulary(texts, size, lowercase, RESERVED) == expected


def test_empty_corpus_fails_like_keras_hub():
    with pytest.raises(Exception) as ours:
        wordpiece.compute_word_piece_vocabulary([], 50, True, RESERVED)
    with pytest.raises(Exception) as theirs:
        _keras_hub([], 50, True, RESERVED)
    assert type(ours.value) is type(theirs.value)


# ------------------------------------------------------------------ the vocabulary sample


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.text(alphabet="ab c", max_size=4), max_size=40), limit=st.integers(1, 30), seed=st.integers())
def test_vocabulary_sample_is_the_bottom_of_a_hash_whatever_the_order(texts, limit, seed):
    """All distinct texts (sorted) up to `limit`: today's vocabulary input; beyond it, the `limit`
    distinct texts of smallest hash, the same for any order and repetition of the stream."""
    sample = wordpiece.vocabulary_sample(iter(texts), limit)
    distinct = sorted(set(texts))
    if len(distinct) <= limit:
        assert sample == distinct
    else:
        assert sample == sorted(sorted(distinct, key=wordpiece.sample_rank)[:limit])
    shuffled = texts * 2
    random.Random(seed).shuffle(shuffled)
    assert wordpiece.vocabulary_sample(shuffled, limit) == sample


def test_vocabulary_sample_of_a_large_stream_is_bounded_and_deterministic():
    stream = (f"text number {i % 5000}" for i in range(20000))  # 5,000 distinct texts, each 4 times
    sample = wordpiece.vocabulary_sample(stream, 300)
    assert len(sample) == 300 and sample == sorted(sample)
    assert sample == wordpiece.vocabulary_sample((f"text number {i}" for i in reversed(range(5000))), 300)
    assert set(sample) <= {f"text number {i}" for i in range(5000)}
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        wordpiece.vocabulary_sample(["a"], 0)


# ------------------------------------------------------------------ over the limit: ranks, not texts


def _sample_of_heap(texts, limit):
    """The sample as `vocabulary_sample` picked it before `bounded_sample` (a heap of (rank, text)): the reference."""
    import heapq

    texts = iter(texts)
    distinct = set()
    for text in texts:
        distinct.add(text)
        if len(distinct) > limit:
            break
    else:
        return sorted(distinct)
    heap = [(-wordpiece.sample_rank(text), text) for text in distinct]
    heapq.heapify(heap)
    while len(heap) > limit:
        distinct.discard(heapq.heappop(heap)[1])
    for text in texts:
        if text in distinct:
            continue
        rank = wordpiece.sample_rank(text)
        if rank < -heap[0][0]:
            distinct.discard(heapq.heapreplace(heap, (-rank, text))[1])
            distinct.add(text)
    return sorted(distinct)


class _Fresh:
    """A re-iterable of `n` generated texts (each twice, shuffled), new string objects on every pass."""

    def __init__(self, n, pad=0, seed=0):
        self.order = [i % n for i in range(2 * n)]
        random.Random(seed).shuffle(self.order)
        self.pad = pad

    def __iter__(self):
        words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta!", "theta,", "iota", "kappa"]
        for i in self.order:
            yield " ".join(words[(i * k) % 10] + str(i % (k + 2)) for k in range(1, 8)) + "x" * self.pad


def test_over_the_limit_the_sample_is_the_same_texts_and_its_vocabulary_their_sorted_counts():
    texts = _Fresh(500)
    expected = _sample_of_heap(iter(texts), 50)
    assert len(expected) == 50
    sample = wordpiece.bounded_sample(texts, 50)
    assert isinstance(sample, wordpiece.RankedSample) and len(sample) == 50
    selected = list(sample.texts())
    assert len(selected) == 50 and sorted(selected) == expected  # each once
    assert wordpiece.vocabulary_sample(iter(texts), 50) == expected
    # The counts: those of the selected texts, ordered by word.
    counts = wordpiece.count_words(expected, True)
    assert sample.word_counts(True) == counts and list(sample.word_counts(True)) == sorted(counts)
    vocab = wordpiece.compute_word_piece_vocabulary(sample, 80, True, RESERVED)
    assert vocab == wordpiece.learn(dict(sorted(counts.items())), 80, RESERVED)[:80]
    # A one-pass iterator, and any stream at most `limit` distinct texts: the texts, sorted (as before).
    assert wordpiece.bounded_sample(iter(texts), 50) == expected
    assert wordpiece.bounded_sample(texts, 500) == sorted(set(texts))
    assert wordpiece.bounded_sample(list(texts), 500) == wordpiece.vocabulary_sample(texts, 500)
    with pytest.raises(ValueError, match="limit must be an integer >= 1"):
        wordpiece.bounded_sample(texts, 0)


def test_over_the_limit_the_texts_are_not_held(monkeypatch):
    """Over the limit the sample is held as ranks (16 bytes a text); picking it holds at most `limit` + 1
    texts (until the limit is exceeded) and a batch, and reading its texts again a batch at a time."""
    import tracemalloc

    monkeypatch.setattr(wordpiece, "RANK_BATCH", 64)
    texts = _Fresh(8000, pad=1000)  # 16,000 texts of about 1 kB: 8 MB of distinct texts
    tracemalloc.start()
    try:
        sample = wordpiece.bounded_sample(texts, 1000)
        held, picking = tracemalloc.get_traced_memory()  # the sample's 1,000 texts alone: 1 MB
        tracemalloc.reset_peak()
        assert sum(1 for _ in sample.texts()) == 1000
        _, reading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(sample, wordpiece.RankedSample)
    assert held < 100_000 and picking < 2_000_000 and reading < 300_000, (held, picking, reading)


def test_a_ranked_sample_whose_texts_changed_fails():
    class Changing:
        passes = 0

        def __iter__(self):
            self.passes += 1
            return iter([f"text {i} of pass {self.passes}" for i in range(100)])

    sample = wordpiece.bounded_sample(Changing(), 10)
    with pytest.raises(DataError, match="did a file change"):
        list(sample.texts())
