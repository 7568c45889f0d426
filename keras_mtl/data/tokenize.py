"""Raw text -> word pieces, with the first piece of every word marked.

The same `TextEncoder` runs in the tf.data pipeline and inside the exported
SavedModel, so training and serving tokenize identically. Text is split on
whitespace into words; each word is cut into word pieces by a keras-hub
`WordPieceTokenizer`; a `[CLS]` piece is put first. Tagging tasks label (and
predict) a word on its first piece.
"""

import numpy as np
import tensorflow as tf

from keras_mtl.data import progress, wordpiece

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED = [PAD, UNK, CLS, SEP, MASK]


def task_token(name):
    """The reserved vocabulary entry of a task (for `task_conditioning: token`)."""
    return f"[TASK:{name}]"


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
    """Encodes a batch of strings into word pieces (TF ops only).

    Args:
        tokenizer: a keras-hub tokenizer splitting one word into pieces.
        max_length: int. Length cap including the leading `[CLS]`; longer
            texts are truncated and flagged.
        cls_id, unk_id, pad_id: ids of the `[CLS]`, `[UNK]`, `[PAD]` pieces.

    `__call__(text)` takes a `[batch]` string tensor and returns a dict:
    `token_ids` (ragged `[batch, pieces]`, int32, `[CLS]` first, at most
    `max_length`), `word_starts` (ragged `[batch, words]`, int32: the position
    of each word's first piece; may be >= max_length for truncated words),
    `num_words` (`[batch]` int32), `truncated` (`[batch]` bool).
    """

    def __init__(self, tokenizer, max_length, cls_id, unk_id, pad_id=0):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.cls_id = int(cls_id)
        self.unk_id = int(unk_id)
        self.pad_id = int(pad_id)
        # Graph mode always: keras-hub tokenizers return Python lists eagerly.
        self._encode_fn = tf.function(
            self._encode, input_signature=[tf.TensorSpec([None], tf.string)]
        )

    def __call__(self, text):
        return self._encode_fn(tf.convert_to_tensor(text, tf.string))

    def _encode(self, text):
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
        batch = tf.shape(text)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        token_ids = tf.concat([tf.RaggedTensor.from_tensor(cls), per_text], axis=1)
        full_length = token_ids.row_lengths()
        token_ids = token_ids[:, : self.max_length]
        # Position of each word's first piece: exclusive cumsum within a text.
        cum = tf.cumsum(piece_counts, exclusive=True)
        totals = tf.concat([cum, [tf.reduce_sum(piece_counts)]], axis=0)
        row_base = tf.gather(totals, words.row_splits[:-1])
        starts = cum - tf.gather(row_base, words.value_rowids()) + 1
        word_starts = tf.RaggedTensor.from_row_splits(starts, words.row_splits)
        return {
            "token_ids": token_ids,
            "word_starts": word_starts,
            "num_words": tf.cast(words.row_lengths(), tf.int32),
            "truncated": full_length > self.max_length,
        }


def _word_piece_splits(pieces, words):
    """Row splits grouping all pieces of a text's words together."""
    piece_splits = pieces.row_splits  # per word
    return tf.gather(piece_splits, words.row_splits)


def encode_texts(encoder, texts, batch_size=2048):
    """Eagerly encode a list of Python strings -> lists of numpy arrays."""
    token_ids, word_starts, truncated = [], [], []
    for i in range(0, len(texts), batch_size):
        out = encoder(tf.constant(texts[i : i + batch_size], dtype=tf.string))
        splits = out["token_ids"].row_splits.numpy()
        values = out["token_ids"].values.numpy()
        token_ids += [values[a:b] for a, b in zip(splits[:-1], splits[1:])]
        wsplits = out["word_starts"].row_splits.numpy()
        wvalues = out["word_starts"].values.numpy()
        word_starts += [wvalues[a:b] for a, b in zip(wsplits[:-1], wsplits[1:])]
        truncated.append(out["truncated"].numpy())
    truncated = np.concatenate(truncated) if truncated else np.zeros([0], bool)
    return token_ids, word_starts, truncated


def make_encoder(vocabulary, model_cfg):
    """The `TextEncoder` of a run: its learned vocabulary, or a preset's tokenizer."""
    if model_cfg.preset:
        from keras_mtl.pretrained import preset_encoder

        return preset_encoder(model_cfg)
    tokenizer = make_tokenizer(vocabulary, model_cfg.lowercase)
    return TextEncoder(
        tokenizer,
        model_cfg.max_sequence_length,
        cls_id=vocabulary.index(CLS),
        unk_id=vocabulary.index(UNK),
        pad_id=vocabulary.index(PAD),
    )
