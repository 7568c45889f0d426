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
