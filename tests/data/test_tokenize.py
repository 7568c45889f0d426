"""TextEncoder: [CLS] first, word starts, truncation, odd input."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.config import config_from_dict
from keras_mtl.data.tokenize import (
    CLS,
    PAD,
    RESERVED,
    UNK,
    TextEncoder,
    compute_vocabulary,
    encode_texts,
    load_vocabulary,
    make_encoder,
    make_tokenizer,
    save_vocabulary,
    task_token,
)

VOCAB = RESERVED + ["the", "cat", "sat", "un", "##believ", "##able", ".", "a", "dog"]
ID = {w: i for i, w in enumerate(VOCAB)}
CLS_ID, UNK_ID, PAD_ID = ID[CLS], ID[UNK], ID[PAD]
MAX = 6


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(make_tokenizer(VOCAB), MAX, cls_id=CLS_ID, unk_id=UNK_ID, pad_id=PAD_ID)


def encode(encoder, texts):
    out = encoder(tf.constant(texts))
    return {
        "token_ids": out["token_ids"].to_list(),
        "word_starts": out["word_starts"].to_list(),
        "num_words": out["num_words"].numpy().tolist(),
        "truncated": out["truncated"].numpy().tolist(),
    }


def test_cls_first_and_one_piece_words(encoder):
    out = encode(encoder, ["the cat sat"])
    assert out["token_ids"] == [[CLS_ID, ID["the"], ID["cat"], ID["sat"]]]
    assert out["word_starts"] == [[1, 2, 3]]
    assert out["num_words"] == [3]
    assert out["truncated"] == [False]


def test_word_starts_point_at_each_words_first_piece(encoder):
    out = encode(encoder, ["unbelievable cat", "a unbelievable dog ."])
    assert out["token_ids"][0] == [CLS_ID, ID["un"], ID["##believ"], ID["##able"], ID["cat"]]
    assert out["word_starts"][0] == [1, 4]
    ids, starts = out["token_ids"][1], out["word_starts"][1]
    assert ids == [CLS_ID, ID["a"], ID["un"], ID["##believ"], ID["##able"], ID["dog"]]
    assert starts == [1, 2, 5, 6]  # `.` is cut off at max_length 6, but its start is still there
    assert [ids[s] for s in starts[:3]] == [ID["a"], ID["un"], ID["dog"]]
    assert out["truncated"] == [False, True]
    assert out["num_words"] == [2, 4]


def test_punctuation_attached_to_a_word_is_one_word(encoder):
    out = encode(encoder, ["the cat."])
    assert out["token_ids"] == [[CLS_ID, ID["the"], ID["cat"], ID["."]]]
    assert out["word_starts"] == [[1, 2]]  # whitespace words, "cat." is one word
    assert out["num_words"] == [2]


def test_lowercases(encoder):
    assert encode(encoder, ["The CAT"])["token_ids"] == [[CLS_ID, ID["the"], ID["cat"]]]


def test_truncation_is_flagged_at_max_length(encoder):
    fits = "the " * (MAX - 1)  # MAX - 1 pieces + [CLS] = MAX
    over = "the " * MAX
    out = encode(encoder, [fits, over])
    assert [len(ids) for ids in out["token_ids"]] == [MAX, MAX]
    assert out["truncated"] == [False, True]
    assert out["word_starts"][1] == list(range(1, MAX + 1))  # may point past the cut
    assert out["num_words"] == [MAX - 1, MAX]


def test_empty_and_blank_strings(encoder):
    out = encode(encoder, ["", "   \t "])
    assert out["token_ids"] == [[CLS_ID], [CLS_ID]]
    assert out["word_starts"] == [[], []]
    assert out["num_words"] == [0, 0]
    assert out["truncated"] == [False, False]


def test_unknown_word_is_unk(encoder):
    out = encode(encoder, ["zzz cat"])
    assert out["token_ids"] == [[CLS_ID, UNK_ID, ID["cat"]]]


def test_non_utf8_bytes_do_not_crash(encoder):
    out = encode(encoder, [b"the \xff\xfe cat", b"\xc3"])
    assert out["token_ids"][0] == [CLS_ID, ID["the"], UNK_ID, ID["cat"]]
    assert out["word_starts"][0] == [1, 2, 3]
    assert out["num_words"] == [3, 1]


def test_word_of_control_characters_gets_unk(encoder):
    out = encode(encoder, ["the \x01\x02 cat", "\x07"])
    assert out["token_ids"][0] == [CLS_ID, ID["the"], UNK_ID, ID["cat"]]
    assert out["word_starts"][0] == [1, 2, 3]
    assert out["token_ids"][1] == [CLS_ID, UNK_ID]
    assert out["word_starts"][1] == [1]


def test_batch_rows_are_independent(encoder):
    texts = ["unbelievable cat", "", "the cat sat", "a"]
    together = encode(encoder, texts)
    for i, text in enumerate(texts):
        alone = encode(encoder, [text])
        for key in together:
            assert together[key][i] == alone[key][0], (key, text)


def test_encode_texts_returns_numpy_rows(encoder):
    texts = ["the cat sat", "", "the " * 10]
    ids, starts, truncated = encode_texts(encoder, texts, batch_size=2)
    assert [list(a) for a in ids] == [[CLS_ID, ID["the"], ID["cat"], ID["sat"]], [CLS_ID], [CLS_ID] + [ID["the"]] * 5]
    assert [list(s) for s in starts][:2] == [[1, 2, 3], []]
    assert truncated.tolist() == [False, False, True]
    assert all(a.dtype == np.int32 for a in ids)
    ids, starts, truncated = encode_texts(encoder, [])
    assert ids == [] and starts == [] and truncated.shape == (0,)


def test_compute_vocabulary_reserves_special_and_task_tokens(tmp_path):
    texts = ["the brilliant chef cooked a soup .", "a terrible storm fell ."] * 5
    vocab = compute_vocabulary(texts, 60, lowercase=True, task_names=["topic", "pos"])
    assert vocab[: len(RESERVED)] == RESERVED
    assert vocab[len(RESERVED) : len(RESERVED) + 2] == [task_token("topic"), task_token("pos")]
    assert len(vocab) <= 60 and len(set(vocab)) == len(vocab)
    # Every training text is covered: no [UNK] piece.
    model_cfg = config_from_dict(
        {"name": "v", "tasks": [{"name": "a", "type": "classification",
                                 "data": {"format": "demo", "kind": "topic", "train": 5}}]}
    ).config.model
    ids, _, _ = encode_texts(make_encoder(vocab, model_cfg), texts)
    assert all(vocab.index(UNK) not in row for row in ids)
    save_vocabulary(vocab, tmp_path / "vocab.txt")
    assert load_vocabulary(tmp_path / "vocab.txt") == vocab


def test_make_encoder_uses_the_vocabulary_ids():
    vocab = ["x", "y"] + [PAD, UNK, CLS]  # ids not in the RESERVED order
    model_cfg = config_from_dict(
        {"name": "v", "model": {"max_sequence_length": 8},
         "tasks": [{"name": "a", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}}]}
    ).config.model
    enc = make_encoder(vocab + ["cat"], model_cfg)
    assert (enc.pad_id, enc.unk_id, enc.cls_id, enc.max_length) == (2, 3, 4, 8)
    assert encode(enc, ["cat dog"])["token_ids"] == [[4, 5, 3]]


def test_compute_vocabulary_is_memoized_by_its_inputs(monkeypatch):
    from keras_mtl.data import tokenize, wordpiece

    calls = []
    real = wordpiece.compute_word_piece_vocabulary

    def counting(texts, vocabulary_size, **kwargs):
        calls.append(vocabulary_size)
        return real(texts, vocabulary_size, **kwargs)

    monkeypatch.setattr(wordpiece, "compute_word_piece_vocabulary", counting)
    monkeypatch.setattr(tokenize, "_VOCABULARY_MEMO", {})
    texts = ["the cat sat", "a dog sat", "the unbelievable dog"]
    first = tokenize.compute_vocabulary(texts, 40, True, ["t"])
    again = tokenize.compute_vocabulary(list(texts), 40, True, ["t"])
    assert again == first and len(calls) == 1
    again.append("mutated")  # callers get a copy
    assert tokenize.compute_vocabulary(texts, 40, True, ["t"]) == first
    tokenize.compute_vocabulary(texts + ["new text"], 40, True, ["t"])
    tokenize.compute_vocabulary(texts, 41, True, ["t"])
    tokenize.compute_vocabulary(texts, 40, True, ["u"])
    assert len(calls) == 4
