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

import hashlib
import heapq
import inspect


_SAMPLE_SALT = b"keras-mtl vocabulary sample\x00"


def sample_rank(text):
    """A text's place in the vocabulary sample: a 128-bit hash of it (smaller: sooner in)."""
    digest = hashlib.blake2b(_SAMPLE_SALT + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest, "big")


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
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1. Received: limit={limit!r}")
    texts = iter(texts)
    distinct = set()
    for text in texts:
        distinct.add(text)
        if len(distinct) > limit:
            break
    else:
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


def count_words(texts, lowercase):
    """The words of `texts` and their counts, as keras-hub's vocabulary trainer counts them.

    Returns None when keras-hub's word splitting is not where this version
    expects it (then use keras-hub's own trainer).
    """
    import tensorflow as tf

    try:
        from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    except ImportError:
        return None
    ds = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)
    # keras-hub's defaults: no accent stripping, split on whitespace,
    # punctuation and CJK characters.
    words = ds.map(
        lambda text: pretokenize(text, lowercase, False, True, True),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    counts = {}
    for batch in words:
        for word in batch.flat_values.numpy().tolist():
            counts[word] = counts.get(word, 0) + 1
    return {word.decode("utf-8"): count for word, count in counts.items()}


def compute_word_piece_vocabulary(texts, vocabulary_size, lowercase=False, reserved_tokens=(), on_step=None):
    """`keras_hub.tokenizers.compute_word_piece_vocabulary(...)` of a list of texts.

    The same vocabulary as keras-hub gives with its defaults (no accent
    stripping; splitting on whitespace, punctuation and CJK characters; the
    `##` suffix marker), learned by `learn`.

    Args:
        texts: the training texts (strings).
        vocabulary_size: the maximum vocabulary size.
        lowercase: lowercase the words first.
        reserved_tokens: tokens that come first in the vocabulary.
        on_step: passed on to `learn`, for progress output.
    """
    import keras_hub
    import tensorflow as tf

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
