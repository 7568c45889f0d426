"""Raw text -> word pieces, with the first piece of every word marked.

The same `TextEncoder` runs in the tf.data pipeline and inside the exported
SavedModel, so training and serving tokenize identically. Text is split on
whitespace into words; each word is cut into word pieces by a keras-hub
`WordPieceTokenizer`; a `[CLS]` piece is put first. Tagging tasks label (and
predict) a word on its first piece. A text longer than `max_length` is read
in windows (keras_mtl.data.windows): `encode_rows` (numpy, training and
evaluation) and `TextEncoder.serving_rows` (TF ops, the SavedModel) apply
the same rule. Training and evaluation tokenize a batch of texts at a time
(`piece_batches`); a batch whose texts all fit is made rows at once
(`fitting_rows`), the others a text at a time (`encode_rows`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_mtl.data import progress, windows, wordpiece

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED = [PAD, UNK, CLS, SEP, MASK]


def task_token(name):
    """The reserved vocabulary entry of a task (for `task_conditioning: token`)."""
    return f"[TASK:{name}]"


def separator_id(vocabulary):
    """The id of `[SEP]` in a vocabulary (a learned one or a preset's), else None."""
    vocabulary = list(vocabulary)
    return vocabulary.index(SEP) if SEP in vocabulary else None


# Vocabularies computed in this process, by a digest of their inputs:
# `compare`, `search` and `bench/methods.py` train many runs on the same
# texts, and computing a WordPiece vocabulary is most of a run's data time.
_VOCABULARY_MEMO = {}
_VOCABULARY_MEMO_SIZE = 4


def compute_vocabulary(texts, vocabulary_size, lowercase=True, task_names=()):
    """A WordPiece vocabulary computed from training texts.

    It is the vocabulary `keras_hub.tokenizers.compute_word_piece_vocabulary`
    gives, computed by `keras_mtl.data.wordpiece` (the same algorithm without
    its quadratic substring counting). `texts`: a list of texts, or a
    `wordpiece.RankedSample` (`wordpiece.bounded_sample` over its limit:
    learned from its word counts ordered by word). The same inputs in the same process
    give the same vocabulary without computing it again (a small in-memory
    memo keyed by a digest of the texts and settings).
    """
    import hashlib

    ranked = isinstance(texts, wordpiece.RankedSample)
    if not ranked:
        texts = list(texts)
    reserved = RESERVED + [task_token(t) for t in task_names]
    digest = hashlib.sha256()
    for part in (str(vocabulary_size), str(bool(lowercase)), *reserved, "\0", *(() if ranked else texts)):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    if ranked:  # its texts by their 128-bit ranks
        digest.update(b"ranked\0" + texts.ranks.tobytes())
    key = digest.hexdigest()
    if key in _VOCABULARY_MEMO:
        return list(_VOCABULARY_MEMO[key])
    what = f"computing a {vocabulary_size:,}-piece vocabulary from {len(texts):,} training texts"
    with progress.step(what) as advance:

        def on_step(step, threshold, size):
            advance(0, note=f"(search step {step}: frequency {threshold:,} gives {size:,} pieces)")

        vocabulary = wordpiece.compute_word_piece_vocabulary(
            texts, vocabulary_size, lowercase=lowercase, reserved_tokens=reserved, on_step=on_step
        )
    while len(_VOCABULARY_MEMO) >= _VOCABULARY_MEMO_SIZE:
        _VOCABULARY_MEMO.pop(next(iter(_VOCABULARY_MEMO)))
    _VOCABULARY_MEMO[key] = list(vocabulary)
    return vocabulary


def make_tokenizer(vocabulary, lowercase=True):
    import keras_hub

    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=list(vocabulary), lowercase=lowercase, oov_token=UNK, dtype="int32"
    )
    tokenizer.build(None)
    return tokenizer


def save_vocabulary(vocabulary, path):
    with open(path, "w", encoding="utf-8") as f:
        for token in vocabulary:
            f.write(token + "\n")


def load_vocabulary(path):
    from keras_mtl.data.readers import split_lines

    # Lines end at \n (or \r\n) only, as `save_vocabulary` writes them.
    with open(path, encoding="utf-8", newline="") as f:
        return split_lines(f.read())


class TextEncoder:
    """Encodes a batch of strings, or of string pairs, into word pieces (TF ops only).

    Args:
        tokenizer: a keras-hub tokenizer splitting one word into pieces.
        max_length: int. Length cap including `[CLS]` (and the two `[SEP]`
            of a pair); longer texts are truncated and flagged.
        cls_id, unk_id, pad_id: ids of the `[CLS]`, `[UNK]`, `[PAD]` pieces.
        sep_id: id of the `[SEP]` piece (needed to encode pairs).

    `__call__(text)` takes a `[batch]` string tensor; `__call__(text,
    text_pair)` two of them. Both return a dict: `token_ids` (ragged
    `[batch, pieces]`, int32, at most `max_length`): `[CLS] a` for one text,
    `[CLS] a [SEP] b [SEP]` for a pair; `word_starts` (ragged `[batch,
    words]`, int32: the position of each word's first piece in `text`; may be
    >= max_length for truncated words), `num_words` (`[batch]` int32, words of
    `text`), `truncated` (`[batch]` bool: a piece was cut). A pair also gets
    `truncated_text` and `truncated_text_pair` (`[batch]` bool: which side
    was cut).

    A pair longer than `max_length` is cut longest-first: pieces come off the
    end of the longer text until both fit, the first text keeping the extra
    piece when both are cut (`pair_lengths`; the same lengths as keras-hub's
    `MultiSegmentPacker(truncate="round_robin")`, computed with core TF ops
    so that the export needs no `RoundRobinTrim` op).

    That is the cut encoding (`long_inputs: truncate`). Texts longer than a
    window are read as `windowing` says (`keras_mtl.data.windows`): the
    training and evaluation rows come from `encode_rows` (numpy, from the
    uncut `pieces`), the SavedModel's from `serving_rows` (TF ops).
    """

    def __init__(self, tokenizer, max_length, cls_id, unk_id, pad_id=0, sep_id=None, windowing=None):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.cls_id = int(cls_id)
        self.unk_id = int(unk_id)
        self.pad_id = int(pad_id)
        self.sep_id = None if sep_id is None else int(sep_id)
        self.windowing = windowing or windows.Windowing()
        # Graph mode always: keras-hub tokenizers return Python lists eagerly.
        self._encode_fn = tf.function(
            self._encode, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self._encode_pair_fn = tf.function(
            self._encode_pair, input_signature=[tf.TensorSpec([None], tf.string)] * 2
        )
        self._uncut_fn = tf.function(self._uncut, input_signature=[tf.TensorSpec([None], tf.string)])

    def __call__(self, text, text_pair=None):
        text = tf.convert_to_tensor(text, tf.string)
        if text_pair is None:
            return self._encode_fn(text)
        if self.sep_id is None:
            raise ValueError("this TextEncoder has no sep_id: it cannot encode sentence pairs")
        return self._encode_pair_fn(text, tf.convert_to_tensor(text_pair, tf.string))

    def pieces(self, text):
        """Uncut: (pieces ragged [B, P] int32, word lengths ragged [B, W] int32), eagerly."""
        out = self._uncut_fn(tf.convert_to_tensor(text, tf.string))
        return out["pieces"], out["word_lengths"]

    def _uncut(self, text):
        per_text, words, _, lengths = self._pieces(text, with_lengths=True)
        return {"pieces": per_text, "word_lengths": lengths}

    def _pieces(self, text, with_lengths=False):
        """(pieces ragged [B, P] int32, words ragged [B, W], word_starts ragged [B, W] from 0)
        [+ the pieces of each word, ragged [B, W] int32, `with_lengths`]."""
        # Invalid UTF-8 is replaced (U+FFFD) rather than failing the batch.
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        words = tf.strings.split(text)  # [B, W]
        pieces = self.tokenizer(words.flat_values)  # [N_words, P]
        pieces = tf.cast(pieces, tf.int32)
        # A word the tokenizer drops entirely (control characters only)
        # still gets one [UNK] piece, so every word has a first piece.
        empty = tf.equal(pieces.row_lengths(), 0)
        filler = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], self.unk_id),
            tf.cast(empty, tf.int64),
        )
        pieces = tf.concat([pieces, filler], axis=1)
        piece_counts = tf.cast(pieces.row_lengths(), tf.int32)  # [N_words]
        per_text = tf.RaggedTensor.from_row_splits(pieces.values, _word_piece_splits(pieces, words))
        # Position of each word's first piece: exclusive cumsum within a text.
        cum = tf.cumsum(piece_counts, exclusive=True)
        totals = tf.concat([cum, [tf.reduce_sum(piece_counts)]], axis=0)
        row_base = tf.gather(totals, words.row_splits[:-1])
        starts = cum - tf.gather(row_base, words.value_rowids())
        word_starts = tf.RaggedTensor.from_row_splits(starts, words.row_splits)
        if with_lengths:
            lengths = tf.RaggedTensor.from_row_splits(piece_counts, words.row_splits, validate=False)
            return per_text, words, word_starts, lengths
        return per_text, words, word_starts

    def _encode(self, text):
        return self.encoding(self.tokenize(text))

    def _encode_pair(self, text, text_pair):
        return self.encoding(self.tokenize(text, text_pair))

    def tokenize(self, text, text_pair=None):
        """TF ops: the uncut pieces of a batch of texts (or pairs), for `encoding`, `fits` and `serving_rows`."""
        per_text, words, word_starts, lengths = self._pieces(text, with_lengths=True)
        tokens = {"pieces": per_text, "words": words, "word_starts": word_starts, "lengths": lengths,
                  "batch": tf.shape(text)[0]}
        if text_pair is not None:
            tokens["pair_pieces"] = self._pieces(text_pair)[0]
        return tokens

    def encoding(self, tokens):
        """TF ops: the cut encoding of `tokenize`'s result (what `__call__` returns)."""
        per_text, words, word_starts, batch = tokens["pieces"], tokens["words"], tokens["word_starts"], tokens["batch"]
        if "pair_pieces" not in tokens:
            token_ids = tf.concat([_column(self.cls_id, batch), per_text], axis=1)
            full_length = token_ids.row_lengths()
            return {
                "token_ids": token_ids[:, : self.max_length],
                "word_starts": word_starts + 1,
                "num_words": tf.cast(words.row_lengths(), tf.int32),
                "truncated": full_length > self.max_length,
            }
        second = tokens["pair_pieces"]
        len_a = tf.cast(per_text.row_lengths(), tf.int32)
        len_b = tf.cast(second.row_lengths(), tf.int32)
        keep_a, keep_b = pair_lengths(len_a, len_b, self.max_length - 3)
        sep = _column(self.sep_id, batch)
        token_ids = tf.concat(
            [_column(self.cls_id, batch), _keep_first(per_text, keep_a), sep, _keep_first(second, keep_b), sep], axis=1
        )
        cut_a, cut_b = keep_a < len_a, keep_b < len_b
        return {
            "token_ids": token_ids,
            "word_starts": word_starts + 1,
            "num_words": tf.cast(words.row_lengths(), tf.int32),
            "truncated": tf.logical_or(cut_a, cut_b),
            "truncated_text": cut_a,
            "truncated_text_pair": cut_b,
        }

    def fits(self, tokens):
        """TF ops: a scalar bool, whether every text (pair) of `tokenize`'s result fits one row uncut."""
        length = tf.cast(tokens["pieces"].row_lengths(), tf.int32)
        if "pair_pieces" in tokens:
            length += tf.cast(tokens["pair_pieces"].row_lengths(), tf.int32) + 2
        return tf.reduce_all(length <= self.max_length - 1)

    def serving_rows(self, tokens, windows_needed=True, cut=None):
        """The model's rows for a batch of texts (or pairs), in the graph (the SavedModel's signatures).

        Args:
            tokens: `tokenize`'s result for the batch.
            windows_needed: read texts longer than a window in windows (tagging
                tasks; sentence tasks under `long_inputs: windows`).
            cut: None, or `truncate` / `head_tail`: also give each text its cut
                row (sentence tasks under those modes).

        Returns a dict: `token_ids` ragged [R, L] (the rows: every text's
        windows in order, then, with both, the cut rows of the texts that
        did not fit, where it differs from their first window; a text that fits has one row, the encoding of `__call__`,
        shared by both), `num_words` [B], `truncated` [B] (pieces were
        dropped for the rows read), `windows` [B] (window count; 1 without
        `windows_needed`), `window_text` [R_w] (the text of each window row),
        `cut_row` [B] (the row of each text's cut encoding: its first window's
        when that holds the same ids), and with windows
        of single texts the word reads of `windows.tf_word_rows` (`word`,
        `row`, `position`) with `word_splits` [B + 1] (the words of each text).
        """
        rule = self.windowing
        batch, per_text, words, lengths = tokens["batch"], tokens["pieces"], tokens["words"], tokens["lengths"]
        if "pair_pieces" not in tokens:
            content = tf.fill([batch], self.max_length - 1)
            total = tf.cast(per_text.row_lengths(), tf.int32)
            fits = total <= content
            truncated = tf.logical_not(fits) if cut else tf.zeros([batch], tf.bool)
            cut_ids = None
            if cut:
                body = per_text[:, : self.max_length - 1] if cut == "truncate" else windows.tf_head_tail(per_text, content)
                cut_ids = tf.concat([_column(self.cls_id, batch), body], axis=1)
            tail = None
        else:
            second = tokens["pair_pieces"]
            len_a = tf.cast(per_text.row_lengths(), tf.int32)
            len_b = tf.cast(second.row_lengths(), tf.int32)
            keep_a, keep_b = pair_lengths(len_a, len_b, self.max_length - 3)
            content = keep_a
            fits = tf.logical_and(keep_a >= len_a, keep_b >= len_b)
            sep = _column(self.sep_id, batch)
            cut_ids = None
            if cut:
                if cut == "truncate":
                    first_part, second_part = _keep_first(per_text, keep_a), _keep_first(second, keep_b)
                else:
                    first_part, second_part = windows.tf_head_tail(per_text, keep_a), windows.tf_head_tail(second, keep_b)
                cut_ids = tf.concat([_column(self.cls_id, batch), first_part, sep, second_part, sep], axis=1)
                truncated = tf.logical_not(fits)
            else:
                truncated = keep_b < len_b  # the windows cover all of `text`, not all of `text_pair`
            tail = tf.concat([sep, _keep_first(second, keep_b), sep], axis=1)  # [B, *]: after each window of `text`
        out = {"num_words": tf.cast(words.row_lengths(), tf.int32)}
        if not windows_needed:
            out.update(token_ids=cut_ids, truncated=truncated, windows=tf.ones([batch], tf.int32),
                       cut_row=tf.range(batch, dtype=tf.int32))
            return out
        stride = tf.maximum(1, content // 2) if rule.stride is None else tf.fill([batch], max(1, int(rule.stride)))
        plan = windows.tf_windows(lengths, content, stride)
        splits = tf.concat([[0], tf.cumsum(lengths.values)], axis=0)  # flat piece offset of each word
        begin = tf.gather(splits, plan["start"])
        whole = tf.gather(splits, plan["end"]) - begin
        room = tf.gather(content, plan["text"])
        body = tf.gather(per_text.values, tf.ragged.range(begin, begin + tf.minimum(whole, room)))
        rows = [_column(self.cls_id, tf.size(begin)), body]
        if tail is not None:
            rows.append(tf.gather(tail, plan["text"]))
        window_ids = tf.concat(rows, axis=1)
        over_long = tf.math.unsorted_segment_max(tf.cast(whole > room, tf.int32), plan["text"], batch) > 0
        truncated = tf.logical_or(truncated, over_long)
        out.update(windows=plan["windows"], window_text=plan["text"])
        if tail is None:
            out.update(windows.tf_word_rows(lengths, plan, rule.merge), word_splits=tf.cast(words.row_splits, tf.int32))
        if cut is None:
            out.update(token_ids=window_ids, truncated=truncated)
            return out
        # Both: a text that fits reads its one window; the others get a cut row after the windows,
        # unless their first window already is that row: under `truncate`, a single text whose
        # first window holds its first `content` pieces (a word ends at the cut, or one word
        # outgrows the window) has the same ids in both, so the model reads it once.
        first_row = plan["row_splits"][:-1]
        own = tf.logical_not(fits)
        if cut == "truncate" and tail is None:
            own = tf.logical_and(own, tf.gather(whole, first_row) < content)
        extra = tf.cumsum(tf.cast(own, tf.int32), exclusive=True) + tf.size(plan["text"])
        out.update(
            token_ids=tf.concat([window_ids, tf.ragged.boolean_mask(cut_ids, own)], axis=0),
            truncated=truncated,
            cut_row=tf.where(own, extra, first_row),
        )
        return out


def _column(value, rows):
    """A ragged [rows, 1] column holding `value`."""
    return tf.RaggedTensor.from_tensor(tf.fill([rows, 1], value))


def encode_rows(encoder, pieces, word_lengths, pair_pieces=None, windows_needed=True, cut=None, max_windows=None):
    """The encoded rows of one text (or pair) for training and evaluation (numpy; the rule of `serving_rows`).

    Args:
        encoder: the `TextEncoder` (ids, `max_length`, `windowing`).
        pieces, word_lengths: the text's uncut pieces and the pieces of each
            of its words (`TextEncoder.pieces`); `pair_pieces`: the second text's.
        windows_needed, cut: as for `serving_rows` (a pair reads either).
        max_windows: keep at most this many windows (training); None: all.

    Returns:
        (rows, count): rows is a list of (token_ids int32, word_starts int32 [W],
        window index or `windows.CUT`, truncated); count the text's windows
        before `max_windows`. A text (pair) that fits has one row, index 0:
        exactly what `__call__` encodes. `word_starts` holds each word's
        first-piece position in the row where the row reads it (its window
        under `windowing.merge`, every word in a cut row), else `windows.NOT_HERE`.
    """
    starts = np.cumsum(word_lengths, dtype=np.int32)  # every word's first piece after [CLS], uncut
    starts -= word_lengths
    starts += 1
    if pair_pieces is None and len(pieces) <= encoder.max_length - 1:  # fits: one row, built directly
        ids = np.empty([len(pieces) + 1], np.int32)
        ids[0], ids[1:] = encoder.cls_id, pieces
        return [(ids, starts, 0, False)], 1
    rule = encoder.windowing
    pieces = np.asarray(pieces, np.int32)
    word_lengths = np.asarray(word_lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(word_lengths)]).astype(np.int64)
    cls = np.asarray([encoder.cls_id], np.int32)
    if pair_pieces is None:  # longer than a row
        content = encoder.max_length - 1
        tail = np.zeros([0], np.int32)
        cut_row = None
        if cut:
            body = pieces[:content] if cut == "truncate" else windows.head_tail(pieces, content)
            cut_row = (np.concatenate([cls, body]), starts, windows.CUT, True)
        truncated = False
    else:
        second = np.asarray(pair_pieces, np.int32)
        keep_a, keep_b = windows.pair_lengths(len(pieces), len(second), encoder.max_length - 3)
        sep = np.asarray([encoder.sep_id], np.int32)
        whole_a = keep_a >= len(pieces)
        if (whole_a and keep_b >= len(second)) or (not cut and whole_a):
            row = np.concatenate([cls, pieces[:keep_a], sep, second[:keep_b], sep])
            return [(row, starts, 0, keep_b < len(second))], 1
        if cut:
            if cut == "truncate":
                first_part, second_part = pieces[:keep_a], second[:keep_b]
            else:
                first_part, second_part = windows.head_tail(pieces, keep_a), windows.head_tail(second, keep_b)
            return [(np.concatenate([cls, first_part, sep, second_part, sep]), starts, windows.CUT, True)], 1
        content = keep_a
        tail = np.concatenate([sep, second[:keep_b], sep])
        truncated = keep_b < len(second)
        cut_row = None
    rows = []
    if windows_needed:
        begin, end = windows.split_words(word_lengths, content, rule.stride_for(content))
        count = len(begin)
        kept = count if max_windows is None else min(count, max_windows)
        read = windows.reads(word_lengths, begin, end, rule.merge)[:kept]  # the rule over all windows, then the bound
        for k in range(kept):
            a, b = offsets[begin[k]], offsets[end[k]]
            body = pieces[a : min(b, a + content)]
            here = np.full([len(starts)], windows.NOT_HERE, np.int32)
            here[read[k]] = starts[read[k]] - a
            rows.append((np.concatenate([cls, body, tail]), here, k, truncated or b - a > content))
    else:
        count = 1
    if cut_row is not None:
        rows.append(cut_row)
    return rows, count


def pair_lengths(len_a, len_b, budget):
    """Longest-first truncation of a pair: how many pieces of each text to keep.

    Pieces come off the longer text until the two fit in `budget`; when both
    must be cut, the first keeps ceil(budget / 2) and the second the rest
    (Hugging Face's `longest_first`, and the lengths keras-hub's round-robin
    trimmer gives). int32 tensors (or ints) in, tensors out.
    """
    half = (budget + 1) // 2
    keep_a = tf.minimum(len_a, tf.maximum(budget - len_b, half))
    keep_b = tf.minimum(len_b, budget - keep_a)
    return keep_a, keep_b


def _keep_first(pieces, keep):
    """The first `keep[i]` pieces of each row of a ragged `[B, P]` tensor."""
    positions = tf.ragged.range(tf.cast(pieces.row_lengths(), tf.int32))
    return tf.ragged.boolean_mask(pieces, positions < keep[:, None])


def _word_piece_splits(pieces, words):
    """Row splits grouping all pieces of a text's words together."""
    piece_splits = pieces.row_splits  # per word
    return tf.gather(piece_splits, words.row_splits)


@dataclasses.dataclass
class Encoded:
    """Encoded texts (one or two each), as numpy arrays per example."""

    token_ids: list  # int32 arrays, [CLS] first
    word_starts: list  # int32 arrays: first piece of each word of `text`
    truncated: np.ndarray  # bool [N]: a piece was cut
    truncated_text: np.ndarray  # bool [N]: `text` was cut
    truncated_text_pair: np.ndarray  # bool [N]: `text_pair` was cut (False without one)


def _rows(ragged):
    splits, values = ragged.row_splits.numpy(), ragged.values.numpy()
    return [values[a:b] for a, b in zip(splits[:-1], splits[1:])]


def encode_examples(encoder, texts, text_pairs=None, batch_size=2048):
    """Eagerly encode Python strings, with an optional second text each (None: single text).

    Single texts and pairs may be mixed; the result keeps the input order.
    """
    n = len(texts)
    text_pairs = [None] * n if text_pairs is None else list(text_pairs)
    if len(text_pairs) != n:
        raise ValueError(f"{n} texts but {len(text_pairs)} text pairs")
    token_ids, word_starts = [None] * n, [None] * n
    cut = {key: np.zeros([n], bool) for key in ("truncated", "truncated_text", "truncated_text_pair")}
    singles = [i for i in range(n) if text_pairs[i] is None]
    pairs = [i for i in range(n) if text_pairs[i] is not None]
    for rows, is_pair in ((singles, False), (pairs, True)):
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            text = tf.constant([texts[i] for i in part], dtype=tf.string)
            if is_pair:
                out = encoder(text, tf.constant([text_pairs[i] for i in part], dtype=tf.string))
            else:
                out = encoder(text)
            for i, ids, starts in zip(part, _rows(out["token_ids"]), _rows(out["word_starts"])):
                token_ids[i], word_starts[i] = ids, starts
            for key in cut:
                source = out.get(key, out["truncated"] if key == "truncated_text" else None)
                if source is not None:
                    cut[key][part] = source.numpy()
    return Encoded(token_ids, word_starts, **cut)


def fitting_rows(encoder, pieces, word_lengths):
    """The rows `encode_rows` gives a batch of single texts that all fit one row, built for the batch at once
    from `TextEncoder.pieces`' ragged output (no arrays made a text): (token_ids, word_starts), lists of
    int32 arrays ([CLS] and the pieces; each word's first piece), or None when a text does not fit."""
    splits = pieces.row_splits.numpy()
    if len(splits) > 1 and np.diff(splits).max() > encoder.max_length - 1:
        return None
    ids = np.insert(pieces.values.numpy().astype(np.int32, copy=False), splits[:-1], np.int32(encoder.cls_id))
    lengths = word_lengths.values.numpy().astype(np.int32, copy=False)
    word_splits = word_lengths.row_splits.numpy()
    before = np.zeros([len(lengths) + 1], np.int32)  # the batch's pieces before each word
    np.cumsum(lengths, out=before[1:])
    starts = before[:-1] - np.repeat(before[word_splits[:-1]], np.diff(word_splits)) + 1  # after [CLS]
    return _pieces_of(ids, splits + np.arange(len(splits))), _pieces_of(starts, word_splits)


def _pieces_of(values, splits):
    """A flat array cut at `splits` into a list of views, a row each."""
    bounds = splits.tolist()
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def piece_batches(encoder, texts, text_pairs=None, batch_size=2048, rows=True):
    """Eagerly, per batch of `batch_size` Python strings (with an optional second text each, None: single),
    in order: (fitted, uncut). `fitted`: `fitting_rows` of the batch when `rows` and every text of it is
    single and fits; else None, and `uncut` per text: (pieces int32 [P], pieces per word int32 [W], the
    pieces of its `text_pairs` entry or None), what `encode_rows` reads."""
    n = len(texts)
    text_pairs = [None] * n if text_pairs is None else list(text_pairs)
    if len(text_pairs) != n:
        raise ValueError(f"{n} texts but {len(text_pairs)} text pairs")
    for start in range(0, n, batch_size):
        part = list(range(start, min(n, start + batch_size)))
        pieces, lengths = encoder.pieces(tf.constant([texts[i] for i in part], dtype=tf.string))
        with_pair = [k for k, i in enumerate(part) if text_pairs[i] is not None]
        if rows and not with_pair:
            fitted = fitting_rows(encoder, pieces, lengths)
            if fitted is not None:
                yield fitted, None
                continue
        seconds = [None] * len(part)
        if with_pair:
            second, _ = encoder.pieces(tf.constant([text_pairs[part[k]] for k in with_pair], dtype=tf.string))
            for k, row in zip(with_pair, _rows(second)):
                seconds[k] = row
        yield None, list(zip(_rows(pieces), _rows(lengths), seconds))


def encode_pieces(encoder, texts, text_pairs=None, batch_size=2048):
    """Eagerly, the uncut pieces of Python strings: per text (pieces int32 [P],
    pieces per word int32 [W], the pieces of its `text_pairs` entry or None)."""
    out = []
    for _, uncut in piece_batches(encoder, texts, text_pairs, batch_size, rows=False):
        out.extend(uncut)
    return out


def encode_texts(encoder, texts, batch_size=2048):
    """Eagerly encode a list of Python strings -> (token_ids, word_starts, truncated)."""
    encoded = encode_examples(encoder, texts, batch_size=batch_size)
    return encoded.token_ids, encoded.word_starts, encoded.truncated


def make_encoder(vocabulary, model_cfg):
    """The `TextEncoder` of a learned WordPiece vocabulary (`model.lowercase`,
    `model.max_sequence_length`). A preset's tokenizer: `encoder_from_tokenizer`."""
    tokenizer = make_tokenizer(vocabulary, model_cfg.lowercase)
    return TextEncoder(
        tokenizer,
        model_cfg.max_sequence_length,
        cls_id=vocabulary.index(CLS),
        unk_id=vocabulary.index(UNK),
        pad_id=vocabulary.index(PAD),
        sep_id=separator_id(vocabulary),
        windowing=windows.Windowing.of(model_cfg),
    )


def encoder_from_tokenizer(tokenizer, max_length, what="the tokenizer", model_cfg=None):
    """The `TextEncoder` of a keras-hub tokenizer (a preset's): the ids of its
    `[CLS]`, `[SEP]`, `[PAD]` and `[UNK]` pieces from its special-token
    attributes, else from its vocabulary; `ModelError` naming `what` when
    one is missing. `model_cfg`: the run's `ModelConfig`, for its windowing
    (None: the defaults)."""
    from keras_mtl.errors import ModelError

    vocab = list(tokenizer.get_vocabulary())

    def token_id(attr, text):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
        if text in vocab:
            return vocab.index(text)
        raise ModelError(f"{what} has no {text} token")

    return TextEncoder(
        tokenizer,
        max_length,
        cls_id=token_id("cls_token_id", CLS),
        unk_id=vocab.index(UNK) if UNK in vocab else 0,
        pad_id=token_id("pad_token_id", PAD),
        sep_id=token_id("sep_token_id", SEP),
        windowing=None if model_cfg is None else windows.Windowing.of(model_cfg),
    )


def encoder_of(vocabulary, record, model_cfg, what="tokenizer.json", name="the tokenizer"):
    """The `TextEncoder` of a learned vocabulary (`record` None: `make_encoder`) or of a preset's tokenizer
    kept as a `tokenizer_record` (`what`: where it was read, `name`: what it is, for errors)."""
    if record is None:
        return make_encoder(list(vocabulary), model_cfg)
    tokenizer = tokenizer_from_record(record, what=what)
    return encoder_from_tokenizer(tokenizer, model_cfg.max_sequence_length, what=name, model_cfg=model_cfg)


# A keras-hub tokenizer kept in a work dir (`tokenizer.json`): its Keras config
# and its asset files (the vocabulary, merges, a SentencePiece model), so that a
# run trained on a preset is reopened, evaluated and exported from the work dir
# alone, with the preset moved away.
TOKENIZER_FORMAT = "keras-mtl tokenizer v1"


def tokenizer_record(tokenizer):
    """A JSON-able dict holding `tokenizer` whole (`tokenizer_from_record` reads it)."""
    import base64
    import os
    import tempfile

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_assets(tmp)
        assets = {}
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                assets[name] = base64.b64encode(f.read()).decode("ascii")
    return {"format": TOKENIZER_FORMAT, "config": keras.saving.serialize_keras_object(tokenizer), "assets": assets}


def tokenizer_from_record(record, what="tokenizer.json"):
    """The keras-hub tokenizer a `tokenizer_record` holds; `ModelError` naming `what` when it holds none."""
    import base64
    import os
    import tempfile

    import keras
    import keras_hub  # noqa: F401  (registers the tokenizer classes)

    from keras_mtl.errors import ModelError

    if not isinstance(record, dict) or record.get("format") != TOKENIZER_FORMAT:
        raise ModelError(f"{what}: not a keras-mtl tokenizer record")
    try:
        tokenizer = keras.saving.deserialize_keras_object(record["config"])
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in record["assets"].items():
                with open(os.path.join(tmp, os.path.basename(name)), "wb") as f:
                    f.write(base64.b64decode(data))
            tokenizer.load_assets(tmp)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{what}: cannot rebuild the tokenizer ({type(e).__name__}: {str(e)[:200]})") from None
    if hasattr(tokenizer, "build"):
        tokenizer.build(None)
    return tokenizer
