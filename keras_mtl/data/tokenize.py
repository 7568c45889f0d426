"""Raw text -> word pieces, with the first piece of every word marked.

The same `TextEncoder` runs in the tf.data pipeline and inside the exported
SavedModel, so training and serving tokenize identically. Text is split on
whitespace into words; each word is cut into word pieces by a keras-hub
`WordPieceTokenizer`; a `[CLS]` piece is put first. Tagging tasks label (and
predict) a word on its first piece.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_mtl.data import progress, wordpiece

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
    its quadratic substring counting). The same inputs in the same process
    give the same vocabulary without computing it again (a small in-memory
    memo keyed by a digest of the texts and settings).
    """
    import hashlib

    texts = list(texts)
    reserved = RESERVED + [task_token(t) for t in task_names]
    digest = hashlib.sha256()
    for part in (str(vocabulary_size), str(bool(lowercase)), *reserved, "\0", *texts):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
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
    """

    def __init__(self, tokenizer, max_length, cls_id, unk_id, pad_id=0, sep_id=None):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.cls_id = int(cls_id)
        self.unk_id = int(unk_id)
        self.pad_id = int(pad_id)
        self.sep_id = None if sep_id is None else int(sep_id)
        # Graph mode always: keras-hub tokenizers return Python lists eagerly.
        self._encode_fn = tf.function(
            self._encode, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        self._encode_pair_fn = tf.function(
            self._encode_pair, input_signature=[tf.TensorSpec([None], tf.string)] * 2
        )

    def __call__(self, text, text_pair=None):
        text = tf.convert_to_tensor(text, tf.string)
        if text_pair is None:
            return self._encode_fn(text)
        if self.sep_id is None:
            raise ValueError("this TextEncoder has no sep_id: it cannot encode sentence pairs")
        return self._encode_pair_fn(text, tf.convert_to_tensor(text_pair, tf.string))

    def _pieces(self, text):
        """(pieces ragged [B, P] int32, words ragged [B, W], word_starts ragged [B, W] from 0)."""
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
        return per_text, words, word_starts

    def _encode(self, text):
        per_text, words, word_starts = self._pieces(text)
        cls = tf.fill([tf.shape(text)[0], 1], self.cls_id)
        token_ids = tf.concat([tf.RaggedTensor.from_tensor(cls), per_text], axis=1)
        full_length = token_ids.row_lengths()
        return {
            "token_ids": token_ids[:, : self.max_length],
            "word_starts": word_starts + 1,
            "num_words": tf.cast(words.row_lengths(), tf.int32),
            "truncated": full_length > self.max_length,
        }

    def _encode_pair(self, text, text_pair):
        first, words, word_starts = self._pieces(text)
        second, _, _ = self._pieces(text_pair)
        len_a = tf.cast(first.row_lengths(), tf.int32)
        len_b = tf.cast(second.row_lengths(), tf.int32)
        keep_a, keep_b = pair_lengths(len_a, len_b, self.max_length - 3)
        batch = tf.shape(text)[0]

        def column(value):
            return tf.RaggedTensor.from_tensor(tf.fill([batch, 1], value))

        sep = column(self.sep_id)
        token_ids = tf.concat(
            [column(self.cls_id), _keep_first(first, keep_a), sep, _keep_first(second, keep_b), sep], axis=1
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
    )


def encoder_from_tokenizer(tokenizer, max_length, what="the tokenizer"):
    """The `TextEncoder` of a keras-hub tokenizer (a preset's): the ids of its
    `[CLS]`, `[SEP]`, `[PAD]` and `[UNK]` pieces from its special-token
    attributes, else from its vocabulary; `ModelError` naming `what` when
    one is missing."""
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
    )


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
