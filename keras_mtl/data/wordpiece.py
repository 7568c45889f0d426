"""WordPiece vocabulary learning: keras-hub's exact result, minutes faster.

`keras_hub.tokenizers.compute_word_piece_vocabulary` counts the words of the
texts and hands them to TensorFlow Text's learner
(`tensorflow_text.tools.wordpiece_vocab.wordpiece_tokenizer_learner_lib`).
The learner binary-searches a frequency threshold (about 15 steps on a
GLUE-sized corpus); each step runs 4 iterations, and each iteration

1. counts, for every word and every split point of the word (every position
   in the first iteration, then the starts of its current word pieces), every
   substring from that point: O(length²) dictionary updates a word;
2. then, from the longest token down, subtracts each token's (already
   corrected) count from all of its prefixes, and keeps the tokens whose
   corrected count reaches the threshold.

The subtraction undoes the substring counting almost entirely. The substrings
counted from one split point are the prefixes of one suffix `w[s:]`, and the
corrected count c'(t) = c(t) - sum of c'(T) over the longer tokens T that
start with t is linear in the counts; for one such chain of prefixes it is the
word's count on the whole suffix and 0 on every shorter prefix. So the
corrected count of a token is simply the total count of the (word, split
point) pairs whose suffix from the split point is that token (with the `##`
joiner when the split point is not 0). Counting those suffixes is O(pieces) a
word instead of O(length²), and the first iteration, which does not depend
on the threshold, is counted once for the whole search.

`learn` is therefore TensorFlow Text's `learn`, step for step, with its
default parameters and its own helper functions for everything else; it gives
the same vocabulary (tests compare the two on random corpora and on keras-hub's
`compute_word_piece_vocabulary`), about five times faster, and reports each
search step for progress output.
"""

import collections
import collections.abc
import hashlib
import heapq
import inspect
import itertools

import numpy as np


_SAMPLE_SALT = b"keras-mtl vocabulary sample\x00"


def sample_digest(text):
    """A text's place in the vocabulary sample as 16 bytes: a salted 128-bit hash (BLAKE2b) of it.

    Bytes compare as the big-endian numbers they spell (`sample_rank`), so do numpy's "S16" arrays of them.
    """
    return hashlib.blake2b(_SAMPLE_SALT + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def sample_rank(text):
    """A text's place in the vocabulary sample: a 128-bit hash of it (smaller: sooner in)."""
    return int.from_bytes(sample_digest(text), "big")


def _check_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1. Received: limit={limit!r}")


def _first_distinct(texts, limit):
    """(the distinct texts of the iterator `texts` up to `limit` + 1 of them, whether there were more)."""
    distinct = set()
    for text in texts:
        distinct.add(text)
        if len(distinct) > limit:
            return distinct, True
    return distinct, False


def vocabulary_sample(texts, limit):
    """The distinct texts a vocabulary is learned from: at most `limit`, sorted.

    With at most `limit` distinct texts it is all of them, `sorted(set(texts))`
    (every config today: the vocabulary is what it was). With more, it is the
    `limit` distinct texts whose 128-bit hash (BLAKE2b, salted) is smallest:
    a uniform sample that does not depend on the order of `texts` (files
    sorted by label, date or task give the same sample as shuffled ones) nor
    on how often a text occurs, and that mostly stays the same when rows are
    added. Chosen over the first `limit` texts, which would learn the word
    pieces of whatever the files hold first.

    `texts` may be a stream (a generator over a large split): memory holds at
    most `limit` + 1 texts. Hashing starts only once `limit` is exceeded.

    Args:
        texts: an iterable of strings (both texts of a pair are two texts).
        limit: the largest sample, >= 1 (`cache.vocabulary_sample`).
    """
    _check_limit(limit)
    texts = iter(texts)
    distinct, more = _first_distinct(texts, limit)
    if not more:
        return sorted(distinct)
    # More than `limit`: keep the `limit` smallest ranks (a max-heap of them, as negated ranks).
    heap = [(-sample_rank(text), text) for text in distinct]
    heapq.heapify(heap)
    while len(heap) > limit:
        distinct.discard(heapq.heappop(heap)[1])
    for text in texts:
        if text in distinct:
            continue
        rank = sample_rank(text)
        if rank < -heap[0][0]:  # a text evicted before ranks above the sample's largest: it never comes back
            distinct.discard(heapq.heapreplace(heap, (-rank, text))[1])
            distinct.add(text)
    return sorted(distinct)


RANK_BATCH = 8192  # texts hashed at a time (numpy compares their ranks)


def _batches(items, size):
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def _ranks(texts):
    """The `sample_digest`s of `texts`, a numpy "S16" array (compared, sorted and searched as the ranks)."""
    return np.array([sample_digest(text) for text in texts], dtype="S16")


class RankedSample:
    """A vocabulary sample over its limit, held as the ranks of its texts: `bounded_sample`'s answer.

    Attributes:
        ranks: the `sample_digest`s of the `limit` selected texts, sorted (a numpy "S16" array).
        source: the re-iterable the texts were read from; `texts()` reads them from it again.
    """

    def __init__(self, ranks, source):
        self.ranks, self.source = ranks, source

    def __len__(self):
        return len(self.ranks)

    def texts(self):
        """The selected texts, each once, in the order of a new pass over `source`."""
        ranks, n = self.ranks, len(self.ranks)
        seen = np.zeros(n, bool)
        for batch in _batches(self.source, RANK_BATCH):
            found = _ranks(batch)
            where = np.minimum(np.searchsorted(ranks, found), n - 1)
            for i in np.flatnonzero(ranks[where] == found).tolist():
                j = where[i]
                if not seen[j]:
                    seen[j] = True
                    yield batch[i]
        if not seen.all():
            from keras_mtl.errors import DataError

            raise DataError(
                f"the vocabulary sample: {n - int(seen.sum()):,} of its {n:,} texts were not found on a second "
                "pass over the training texts: did a file change while it was read?"
            )

    def word_counts(self, lowercase):
        """`count_words` of the selected texts (each once), ordered by word: None as `count_words` gives it."""
        counts = count_words(self.texts(), lowercase)
        return None if counts is None else dict(sorted(counts.items()))


def bounded_sample(texts, limit):
    """What a vocabulary is learned from: `vocabulary_sample(texts, limit)`, or its texts' ranks.

    With at most `limit` distinct texts, or when `texts` is an iterator (one pass only), it is
    `vocabulary_sample(texts, limit)`, a sorted list of the texts. With more distinct texts in a
    re-iterable `texts` (a list, or a stream that reads its files again on each pass), it is a
    `RankedSample`: the same `limit` texts (those of smallest `sample_rank`) held as their 16-byte
    ranks alone. The pass that picks them holds at most `limit` + 1 texts until the limit is exceeded,
    then only ranks (numpy arrays, at most 2 `limit` of them); a second pass (`RankedSample.texts`)
    counts the words of the selected texts a batch at a time (`compute_word_piece_vocabulary`).

    Args:
        texts: an iterable of strings (both texts of a pair are two texts).
        limit: the largest sample, >= 1 (`cache.vocabulary_sample`).
    """
    _check_limit(limit)
    if isinstance(texts, collections.abc.Iterator):
        return vocabulary_sample(texts, limit)
    rest = iter(texts)
    distinct, more = _first_distinct(rest, limit)
    if not more:
        return sorted(distinct)
    kept = np.unique(_ranks(distinct))[:limit]
    del distinct
    pending, held = [], 0
    for batch in _batches(rest, RANK_BATCH):
        found = _ranks(batch)
        found = found[found < kept[-1]]  # a rank above the sample's largest never comes in
        if found.size:
            pending.append(found)
            held += found.size
        if held >= limit:
            kept, pending, held = np.unique(np.concatenate([kept, *pending]))[:limit], [], 0
    if pending:
        kept = np.unique(np.concatenate([kept, *pending]))[:limit]
    return RankedSample(kept, texts)


def _learner():
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib

    return wordpiece_tokenizer_learner_lib


def _defaults():
    """TensorFlow Text's default learning parameters (read from its `learn`)."""
    return {
        name: p.default
        for name, p in inspect.signature(_learner().learn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _split_indices(word, curr_tokens, joiner, longest):
    """TensorFlow Text's `get_split_indices`, trying no match longer than `longest`.

    The end of each word piece in a greedy longest-match split of `word`
    into `curr_tokens` (pieces after the first carry `joiner`), or None if
    some position matches no token. A key of `curr_tokens` is at most
    `longest` characters, so longer candidates cannot match.
    """
    indices = []
    start = 0
    n = len(word)
    while start < n:
        end = min(n, start + longest)
        while end > start:
            subtoken = word[start:end]
            if start > 0 and joiner:
                subtoken = joiner + subtoken
            if subtoken in curr_tokens:
                indices.append(end)
                break
            end -= 1
        if end == start:
            return None
        start = end
    return indices


def _suffix_counts(word_counts, joiner, starts_of):
    """The corrected counts of one learning iteration, from word suffixes.

    Returns `(plain, joined)`: `{token: count}` of the suffixes taken at split
    point 0 (and, without a joiner, at every split point), and of those taken
    at later split points, keyed with the joiner in front. They are kept apart
    because TensorFlow Text keeps them in different tables (a joined token
    `##x` is filed under length 1, the plain string `##x` under length 3).
    """
    plain, joined = {}, {}
    for word, count in word_counts:
        starts = starts_of(word)
        if not starts:
            continue
        for start in starts:
            if start == 0:
                plain[word] = plain.get(word, 0) + count
            elif joiner:
                key = joiner + word[start:]
                joined[key] = joined.get(key, 0) + count
            else:
                key = word[start:]
                plain[key] = plain.get(key, 0) + count
    return plain, joined


def _above(counts, thresh):
    """The tokens whose corrected count reaches `thresh`, in TensorFlow Text's order.

    It visits tokens from the longest table down, so where one string is both
    a plain and a joined token, the joined one (a shorter table) comes last
    and wins.
    """
    plain, joined = counts
    tokens = {}
    for table in (plain, joined):
        for token, count in table.items():
            if count >= thresh:
                tokens[token] = count
    return tokens


class _Learner:
    """`learn_with_thresh` for many thresholds over the same word counts."""

    def __init__(self, word_counts, params):
        self.lib = _learner()
        self.params = params
        self.joiner = params.joiner if params.include_joiner_token else ""
        self.word_counts = list(word_counts)
        self.char_tokens = self.lib.extract_char_tokens(self.word_counts)
        # The first iteration splits at every position, whatever the threshold.
        self.first = _suffix_counts(self.word_counts, self.joiner, lambda word: range(len(word)))

    def with_thresh(self, thresh):
        """The vocabulary `learn_with_thresh(word_counts, thresh, params)` gives."""
        lib, params = self.lib, self.params
        ensure = lib.ensure_all_tokens_exist
        curr_tokens = ensure(self.char_tokens, _above(self.first, thresh), params.include_joiner_token, params.joiner)
        for _ in range(1, params.num_iterations):
            longest = max(map(len, curr_tokens), default=0)

            def starts_of(word, tokens=curr_tokens, longest=longest):
                ends = _split_indices(word, tokens, self.joiner, longest)
                return [0] + ends[:-1] if ends else None

            counts = _suffix_counts(self.word_counts, self.joiner, starts_of)
            curr_tokens = ensure(self.char_tokens, _above(counts, thresh), params.include_joiner_token, params.joiner)
        return lib.generate_final_vocabulary(params.reserved_tokens, self.char_tokens, curr_tokens)


def learn(word_counts, vocab_size, reserved_tokens, joiner="##", on_step=None, **overrides):
    """TensorFlow Text's `learn(word_counts, vocab_size, reserved_tokens, ...)`, faster.

    Args:
        word_counts: `{word: count}` or (word, count) pairs.
        vocab_size: the target vocabulary size (the maximum).
        reserved_tokens: tokens that come first in the vocabulary.
        joiner: the suffix marker, e.g. "##".
        on_step: called after each search step as
            `on_step(step, threshold, vocabulary_size)`.
        **overrides: other parameters of TensorFlow Text's `learn`
            (`upper_thresh`, `slack_ratio`, `include_joiner_token`, ...);
            its defaults otherwise.

    Returns:
        The vocabulary, a list of strings, equal to TensorFlow Text's.
    """
    lib = _learner()
    args = _defaults()
    args.update({"include_joiner_token": True, "joiner": joiner})
    args.update(overrides)
    if isinstance(word_counts, dict):
        word_counts = list(word_counts.items())
    params = lib.Params(
        args["upper_thresh"],
        args["lower_thresh"],
        args["num_iterations"],
        args["max_input_tokens"],
        args["max_token_length"],
        args["max_unique_chars"],
        vocab_size,
        args["slack_ratio"],
        args["include_joiner_token"],
        args["joiner"],
        reserved_tokens,
    )
    upper, lower = lib.get_search_threshs(word_counts, params.upper_thresh, params.lower_thresh)
    all_counts = lib.get_input_words(word_counts, params.reserved_tokens, params.max_token_length)
    allowed_chars = lib.get_allowed_chars(all_counts, params.max_unique_chars)
    filtered = lib.filter_input_words(all_counts, allowed_chars, params.max_input_tokens)
    learner = _Learner(filtered, params)
    # TensorFlow Text's `learn_binary_search`, as a loop.
    slack_count = max(0, params.slack_ratio * params.vocab_size)
    step = 0
    while True:
        thresh = (upper + lower) // 2
        vocab = learner.with_thresh(thresh)
        step += 1
        if on_step is not None:
            on_step(step, thresh, len(vocab))
        within_slack = len(vocab) <= params.vocab_size and params.vocab_size - len(vocab) <= slack_count
        if within_slack or lower >= upper or thresh <= 1:
            return vocab
        if len(vocab) > params.vocab_size:
            lower = thresh + 1
        else:
            upper = thresh - 1


_COUNT_CHUNK = 64 * 1024  # texts counted at a time (a multiple of the 1,024 of a batch)


def count_words(texts, lowercase):
    """The words of `texts` and their counts, as keras-hub's vocabulary trainer counts them.

    `{word: count}` in the order the words first occur; `texts` (any iterable) is read
    `_COUNT_CHUNK` texts at a time.

    Returns None when keras-hub's word splitting is not where this version
    expects it (then use keras-hub's own trainer).
    """
    import tensorflow as tf

    try:
        from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    except ImportError:
        return None
    counts = collections.Counter()  # a dict: the words in the order they first occur
    for chunk in _batches(texts, _COUNT_CHUNK):
        ds = tf.data.Dataset.from_tensor_slices(chunk).batch(1024)
        # keras-hub's defaults: no accent stripping, split on whitespace,
        # punctuation and CJK characters.
        words = ds.map(
            lambda text: pretokenize(text, lowercase, False, True, True),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        for batch in words:
            counts.update(batch.flat_values.numpy().tolist())  # counted in C
    return {word.decode("utf-8"): count for word, count in counts.items()}


def compute_word_piece_vocabulary(texts, vocabulary_size, lowercase=False, reserved_tokens=(), on_step=None):
    """`keras_hub.tokenizers.compute_word_piece_vocabulary(...)` of a list of texts.

    The same vocabulary as keras-hub gives with its defaults (no accent
    stripping; splitting on whitespace, punctuation and CJK characters; the
    `##` suffix marker), learned by `learn`.

    A `RankedSample` (`bounded_sample` over its limit) is read again and its
    words counted a batch at a time; its vocabulary is learned from those
    counts ordered by word (a list of texts gives them in the order the words
    first occur in it: the learner can break ties by that order, so the same
    texts in another order may give another vocabulary).

    Args:
        texts: the training texts (strings), or a `RankedSample`.
        vocabulary_size: the maximum vocabulary size.
        lowercase: lowercase the words first.
        reserved_tokens: tokens that come first in the vocabulary.
        on_step: passed on to `learn`, for progress output.
    """
    import keras_hub
    import tensorflow as tf

    if isinstance(texts, RankedSample):
        counts = texts.word_counts(lowercase)
        if counts:
            vocab = learn(counts, vocabulary_size, list(reserved_tokens), joiner="##", on_step=on_step)
            return vocab[:vocabulary_size]
        texts = sorted(texts.texts())  # keras-hub's own trainer (as `vocabulary_sample` gives them)
    texts = list(texts)
    counts = count_words(texts, lowercase) if texts else None
    if not counts:  # keras-hub's trainer (and its error for an empty corpus)
        return keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts).batch(1024),
            vocabulary_size=vocabulary_size,
            lowercase=lowercase,
            reserved_tokens=list(reserved_tokens),
        )
    vocab = learn(counts, vocabulary_size, list(reserved_tokens), joiner="##", on_step=on_step)
    return vocab[:vocabulary_size]
