"""Long texts: overlapping windows of whole words, one rule in numpy and in TensorFlow.

A text whose pieces fit `max_sequence_length - 1` (after `[CLS]`) is one
window, encoded exactly as before windows existed. A longer one is split
(docs/long_inputs.md has the rule, the defaults and the measurements):

* **A window** is `[CLS]` + a run of whole words whose pieces fit the
  window's content `C` (`max_sequence_length - 1`; a pair's first text: its
  longest-first share, see `pair_lengths`). A word longer than `C` alone
  gets a window of its own, cut to its first `C` pieces (it is tagged on
  its first piece, so it still gets a tag).
* **Window starts**: the first window starts at the first word; the next one
  at the first word starting `stride` pieces or more after the current
  window's start (`model.window_stride`, default `C // 2`, Flair's rule),
  but never after the first word the current window left out (so every
  word is in a window) and always at least one word later. The last window
  is the first that reaches the last word.
* **Which window tags a word** (`model.window_merge`): `mean` (default)
  averages the word's log-probabilities over every window holding it (the
  mean of its logits, as the softmax's normalizer is one constant per
  window); `central` reads a word in the window where it is most central:
  its score in a window is min(pieces of the window before the word,
  pieces after it), a side that is the start or end of the text counting
  as unbounded; the highest score wins, the earlier window on ties.
  Training puts a word's label where prediction reads it: in its central
  window, or (`mean`) in every window holding it.

The numpy functions (`split_words`, `owners`) serve training and evaluation
(`keras_mtl.data.pipeline.encode_split` makes one encoded row per window);
`tf_windows` / `tf_word_rows` compute the same in the SavedModel's graph
with vectorised core ops (searchsorted, gathers, segment reductions; the
chain of window starts by pointer doubling: log2(windows) rounds, no loop
over words or windows). tests/data/test_windows.py checks that both agree.
"""

import dataclasses
from typing import Optional

import numpy as np

MERGES = ("central", "mean")
LONG_INPUTS = ("truncate", "head_tail", "windows")
DEFAULT_MAX_WINDOWS = 16  # `model.max_windows`
# The `word_starts` entry of a word that an encoded row does not read (a
# position no row has: every reader checks `position < len(row)`).
NOT_HERE = np.iinfo(np.int32).max
CUT = -1  # `row_window` of a row holding a cut text (long_inputs: truncate / head_tail)
_UNBOUNDED = np.iinfo(np.int32).max // 4  # the score of a side at the text's start or end


@dataclasses.dataclass(frozen=True)
class Windowing:
    """How long texts are read (the `model.*` fields of the same names).

    stride: pieces between the starts of successive windows (None: half a window's content).
    merge: `mean` or `central` (tagging: which windows a word is read and trained in).
    long_inputs: `truncate`, `head_tail` or `windows` (sentence-level tasks).
    max_windows: the most windows of one training text (evaluation and serving: no bound).
    """

    stride: Optional[int] = None
    merge: str = "mean"
    long_inputs: str = "truncate"
    max_windows: int = DEFAULT_MAX_WINDOWS

    @classmethod
    def of(cls, model_cfg):
        """The windowing of a `ModelConfig` (its defaults for a field it lacks)."""
        defaults = cls()
        return cls(
            stride=getattr(model_cfg, "window_stride", defaults.stride),
            merge=getattr(model_cfg, "window_merge", defaults.merge),
            long_inputs=getattr(model_cfg, "long_inputs", defaults.long_inputs),
            max_windows=getattr(model_cfg, "max_windows", defaults.max_windows),
        )

    def stride_for(self, content):
        """The stride in pieces for windows of `content` pieces (an int)."""
        return max(1, int(content) // 2 if self.stride is None else int(self.stride))


# --------------------------------------------------------------------------- numpy


def split_words(word_lengths, content, stride):
    """The windows of one text: (starts, ends) int64 [K], word ranges [start, end).

    Args:
        word_lengths: pieces of each word ([W] ints, each >= 1).
        content: pieces a window holds (>= 1).
        stride: pieces between window starts (>= 1), snapped to word starts.

    A text that fits is one window ([0, W); also the empty text: [0, 0)).
    """
    n = np.asarray(word_lengths, np.int64)
    words = len(n)
    ends_at = np.cumsum(n)  # [W]: piece offset after each word
    offset = ends_at - n  # [W]: piece offset of each word
    if words == 0 or ends_at[-1] <= content:
        return np.asarray([0], np.int64), np.asarray([words], np.int64)
    starts, ends = [], []
    s = 0
    while True:
        e = max(s + 1, int(np.searchsorted(ends_at, offset[s] + content, side="right")))
        starts.append(s)
        ends.append(e)
        if e >= words:
            break
        snapped = int(np.searchsorted(offset, offset[s] + stride, side="left"))
        s = min(e, max(s + 1, snapped))
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64)


def _window_scores(offset, ends_at, s, e):
    """int64 [e - s]: how central words s..e-1 are in the window [s, e) (piece offsets and ends of the words)."""
    words = len(offset)
    left = np.full(e - s, _UNBOUNDED) if s == 0 else offset[s:e] - offset[s]
    right = np.full(e - s, _UNBOUNDED) if e >= words else ends_at[e - 1] - ends_at[s:e]
    return np.minimum(left, right)


def owners(word_lengths, starts, ends):
    """[W] int64: the window each word is most central in (`central`), the earlier on ties."""
    n = np.asarray(word_lengths, np.int64)
    ends_at = np.cumsum(n)
    offset = ends_at - n
    best = np.full([len(n)], -1, np.int64)
    owner = np.zeros([len(n)], np.int64)
    for k, (s, e) in enumerate(zip(starts, ends)):
        score = _window_scores(offset, ends_at, s, e)
        better = score > best[s:e]  # strictly: the earlier window keeps a tie
        best[s:e] = np.where(better, score, best[s:e])
        owner[s:e] = np.where(better, k, owner[s:e])
    return owner


def reads(word_lengths, starts, ends, merge):
    """Per window, int64 [words it reads]: the words it reads (and trains) under `merge`."""
    if merge == "mean" or len(starts) == 1:
        return [np.arange(s, e) for s, e in zip(starts, ends)]
    owner = owners(word_lengths, starts, ends)
    return [s + np.flatnonzero(owner[s:e] == k) for k, (s, e) in enumerate(zip(starts, ends))]


def readers(word_lengths, starts, ends, merge):
    """[K, W] bool: the windows that read (and train) each word under `merge` (`reads`, dense)."""
    out = np.zeros([len(starts), len(word_lengths)], bool)
    for k, words in enumerate(reads(word_lengths, starts, ends, merge)):
        out[k, words] = True
    return out


def head_tail(pieces, keep):
    """The first `keep // 4` and the last `keep - keep // 4` of `pieces` (all when they fit).

    The proportions of Sun et al. 2019's best head+tail cut (128 + 382 of 510).
    """
    pieces = np.asarray(pieces)
    if len(pieces) <= keep:
        return pieces
    head = keep // 4
    return np.concatenate([pieces[:head], pieces[len(pieces) - (keep - head):]])


def pair_lengths(len_a, len_b, budget):
    """numpy/int twin of `keras_mtl.data.tokenize.pair_lengths` (longest-first)."""
    half = (budget + 1) // 2
    keep_a = min(len_a, max(budget - len_b, half))
    return keep_a, min(len_b, budget - keep_a)


def merge_rows(head, rows):
    """One output from several windows' outputs of a sentence task or a word (`head.merge_windows`)."""
    return head.merge_windows(np.stack([np.asarray(r, np.float32) for r in rows]))


# --------------------------------------------------------------------------- TensorFlow


def tf_windows(word_lengths, content, stride):
    """The windows of a batch of texts, in the graph (the rule of `split_words`).

    Args:
        word_lengths: ragged int32 [B, W]: pieces of each word (each >= 1).
        content: int32 [B]: pieces a window of each text holds.
        stride: int32 [B]: pieces between its window starts.

    Returns:
        dict: `text` int32 [R] (each window's text, ascending), `start` and
        `end` int32 [R] (flat word indices into `word_lengths.values`,
        [start, end); an empty text gets one empty window), `windows` int32
        [B] (windows per text, >= 1), `row_splits` int32 [B + 1].
    """
    import tensorflow as tf

    n = tf.cast(word_lengths.values, tf.int64)  # [N]
    words = tf.shape(n, out_type=tf.int32)[0]
    text_of = tf.cast(word_lengths.value_rowids(), tf.int32)  # [N]
    word_splits = tf.cast(word_lengths.row_splits, tf.int32)  # [B + 1]
    first, stop = word_splits[:-1], word_splits[1:]  # [B]: each text's first word, end word
    content, stride = tf.cast(content, tf.int64), tf.cast(stride, tf.int64)
    pieces = tf.cast(tf.reduce_sum(word_lengths, axis=1), tf.int64)  # [B]
    # One sorted coordinate for the whole batch: texts apart by more than a window
    # or a stride, so that a search from one text never lands inside another.
    span = pieces + tf.maximum(content, stride) + 1
    base = tf.cumsum(span, exclusive=True)  # [B]
    local = tf.cumsum(n, exclusive=True) - tf.gather(tf.cumsum(n, exclusive=True), tf.gather(first, text_of))
    offset = tf.gather(base, text_of) + local  # [N]
    ends_at = offset + n
    fit_end = tf.searchsorted(ends_at, offset + tf.gather(content, text_of), side="right", out_type=tf.int32)
    index = tf.range(words, dtype=tf.int32)
    end = tf.maximum(index + 1, fit_end)  # [N]: a window starting at each word ends before `end`
    snapped = tf.searchsorted(offset, offset + tf.gather(stride, text_of), side="left", out_type=tf.int32)
    following = tf.minimum(end, tf.maximum(index + 1, snapped))
    last = end >= tf.gather(stop, text_of)
    # The chain start -> following start: `words` stands for "no more windows".
    step = tf.concat([tf.where(last, words, following), [words]], axis=0)  # [N + 1]
    has_words = stop > first
    on_chain = tf.scatter_nd(
        tf.boolean_mask(first, has_words)[:, None], tf.ones_like(tf.boolean_mask(first, has_words)), [words + 1]
    )

    def more(on_chain, step):
        return tf.reduce_any(step[:-1] < words)

    def double(on_chain, step):
        # every marked word marks the one `2^i` windows on; then the pointers jump twice as far
        reached = tf.math.unsorted_segment_max(on_chain, step, words + 1)
        return tf.maximum(on_chain, reached), tf.gather(step, step)

    on_chain, _ = tf.while_loop(more, double, [on_chain, step])
    starts = tf.cast(tf.where(on_chain[:-1] > 0)[:, 0], tf.int32)  # ascending: text by text
    counts = tf.math.unsorted_segment_sum(tf.ones_like(starts), tf.gather(text_of, starts), tf.size(first))
    windows = tf.maximum(counts, 1)
    row_splits = tf.concat([[0], tf.cumsum(windows)], axis=0)
    # Slots: a text's windows in order; an empty text's one slot is [first, first).
    rank = tf.range(tf.size(starts), dtype=tf.int32) - tf.gather(tf.cumsum(counts, exclusive=True), tf.gather(text_of, starts))
    slot = tf.gather(row_splits[:-1], tf.gather(text_of, starts)) + rank
    rows = row_splits[-1]
    start = tf.scatter_nd(slot[:, None], starts, [rows])
    window_end = tf.scatter_nd(slot[:, None], tf.gather(end, starts), [rows])
    empty = tf.logical_not(has_words)
    empty_slot = tf.boolean_mask(row_splits[:-1], empty)[:, None]
    start = tf.tensor_scatter_nd_update(start, empty_slot, tf.boolean_mask(first, empty))
    window_end = tf.tensor_scatter_nd_update(window_end, empty_slot, tf.boolean_mask(first, empty))
    text = tf.cast(tf.ragged.row_splits_to_segment_ids(row_splits), tf.int32)
    return {"text": text, "start": start, "end": window_end, "windows": windows, "row_splits": row_splits}


def tf_word_rows(word_lengths, plan, merge):
    """Which windows read each word, and where, in the graph (the rule of `readers`).

    Args:
        word_lengths: ragged int32 [B, W], as for `tf_windows`.
        plan: `tf_windows`' result.
        merge: `central` or `mean`.

    Returns:
        dict of flat int32 [M] tensors, one entry per (window, word) read:
        `word` (flat word index, ascending), `row` (window), `position`
        (of the word's first piece in the window's row, `[CLS]` at 0). With
        `central` every word is read once; with `mean` in every window holding it.
    """
    import tensorflow as tf

    n = tf.cast(word_lengths.values, tf.int32)
    words = tf.size(n)
    word_splits = tf.cast(word_lengths.row_splits, tf.int32)
    offset = tf.cumsum(n, exclusive=True)  # [N]: flat piece offsets
    ends_at = offset + n
    held = tf.ragged.range(plan["start"], plan["end"])  # [R, words of the window]
    word = held.values
    row = tf.cast(held.value_rowids(), tf.int32)
    start = tf.gather(plan["start"], row)
    end = tf.gather(plan["end"], row)
    text = tf.gather(plan["text"], row)
    position = 1 + tf.gather(offset, word) - tf.gather(offset, start)
    if merge == "mean":
        return {"word": word, "row": row, "position": position}
    unbounded = tf.fill(tf.shape(word), _UNBOUNDED)
    left = tf.where(tf.equal(start, tf.gather(word_splits[:-1], text)), unbounded, position - 1)
    right = tf.where(
        tf.equal(end, tf.gather(word_splits[1:], text)), unbounded,
        tf.gather(ends_at, tf.maximum(end - 1, 0)) - tf.gather(ends_at, word),
    )
    score = tf.minimum(left, right)
    best = tf.math.unsorted_segment_max(score, word, words)
    pair = tf.range(tf.size(word), dtype=tf.int32)
    chosen = tf.math.unsorted_segment_min(
        tf.where(tf.equal(score, tf.gather(best, word)), pair, tf.size(word)), word, words
    )  # [N]: the first (earliest window's) best pair of each word
    return {"word": tf.range(words, dtype=tf.int32), "row": tf.gather(row, chosen), "position": tf.gather(position, chosen)}


def tf_head_tail(pieces, keep):
    """Ragged [B, P] -> the first `keep // 4` and last `keep - keep // 4` pieces of each row
    that is longer than `keep` ([B] int32); shorter rows as they are (`head_tail`)."""
    import tensorflow as tf

    length = tf.cast(pieces.row_lengths(), tf.int32)
    keep = tf.broadcast_to(tf.cast(keep, tf.int32), tf.shape(length))
    head = keep // 4
    tail_from = length - (keep - head)
    position = tf.ragged.range(length)
    row_head = tf.expand_dims(head, 1)
    row_tail = tf.expand_dims(tail_from, 1)
    fits = tf.expand_dims(length <= keep, 1)
    kept = tf.logical_or(fits, tf.logical_or(position < row_head, position >= row_tail))
    return tf.ragged.boolean_mask(pieces, kept)
