"""TextEncoder: [CLS] first, word starts, truncation, odd input."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.config import config_from_dict
from keras_mtl.data.tokenize import (
    CLS,
    PAD,
    RESERVED,
    SEP,
    UNK,
    TextEncoder,
    compute_vocabulary,
    encode_examples,
    encode_texts,
    load_vocabulary,
    make_encoder,
    make_tokenizer,
    pair_lengths,
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
    assert enc.sep_id is None  # no [SEP]: single texts only
    with pytest.raises(ValueError, match="cannot encode sentence pairs"):
        enc(["cat"], ["dog"])
    assert make_encoder(vocab + ["cat", SEP], model_cfg).sep_id == 6


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


# --- sentence pairs ---------------------------------------------------------

SEP_ID = ID[SEP]


def pair_encoder(max_length):
    return TextEncoder(make_tokenizer(VOCAB), max_length, CLS_ID, UNK_ID, PAD_ID, sep_id=SEP_ID)


def test_a_pair_is_packed_cls_a_sep_b_sep():
    out = pair_encoder(16)(["the cat", ""], ["a dog sat", "the"])
    assert out["token_ids"].to_list() == [
        [CLS_ID, ID["the"], ID["cat"], SEP_ID, ID["a"], ID["dog"], ID["sat"], SEP_ID],
        [CLS_ID, SEP_ID, ID["the"], SEP_ID],
    ]
    # word starts and word counts are those of the first text, as for a single text
    assert out["word_starts"].to_list() == [[1, 2], []]
    assert out["num_words"].numpy().tolist() == [2, 0]
    for key in ("truncated", "truncated_text", "truncated_text_pair"):
        assert out[key].numpy().tolist() == [False, False]


def test_a_long_pair_is_cut_longest_first_and_says_which_side():
    # budget 8 - 3 = 5 pieces: "unbelievable" is 3 pieces
    out = pair_encoder(8)(
        ["the cat sat the cat sat", "the", "unbelievable cat sat"],
        ["a", "a dog sat the cat sat the", "unbelievable dog"],
    )
    ids = out["token_ids"].to_list()
    assert ids[0] == [CLS_ID] + [ID[w] for w in "the cat sat the".split()] + [SEP_ID, ID["a"], SEP_ID]
    assert ids[1] == [CLS_ID, ID["the"], SEP_ID] + [ID[w] for w in "a dog sat the".split()] + [SEP_ID]
    # both long: the first text keeps ceil(5 / 2) = 3 pieces, the second 2
    assert ids[2] == [CLS_ID, ID["un"], ID["##believ"], ID["##able"], SEP_ID, ID["un"], ID["##believ"], SEP_ID]
    assert all(len(row) <= 8 for row in ids)
    assert out["truncated_text"].numpy().tolist() == [True, False, True]
    assert out["truncated_text_pair"].numpy().tolist() == [False, True, True]
    assert out["truncated"].numpy().tolist() == [True, True, True]


def test_pair_lengths_match_keras_hub_round_robin_packing():
    """The longest-first lengths equal those of keras-hub's MultiSegmentPacker
    (which the export cannot use: its RoundRobinTrim op is missing from TF Text 2.12)."""
    import keras_hub

    rng = np.random.default_rng(0)
    for _ in range(60):
        len_a, len_b, length = (int(v) for v in (rng.integers(0, 12), rng.integers(0, 12), rng.integers(4, 14)))
        packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=length, start_value=1, end_value=2, pad_value=0, truncate="round_robin"
        )
        a = tf.ragged.constant([list(range(10, 10 + len_a))], dtype=tf.int32, ragged_rank=1)
        b = tf.ragged.constant([list(range(30, 30 + len_b))], dtype=tf.int32, ragged_rank=1)
        packed = [int(v) for v in packer((a, b))[0].numpy()[0] if v != 0]
        keep_a, keep_b = (int(k[0]) for k in pair_lengths(tf.constant([len_a]), tf.constant([len_b]), length - 3))
        assert packed == [1, *range(10, 10 + keep_a), 2, *range(30, 30 + keep_b), 2], (len_a, len_b, length)


def test_encode_examples_mixes_pairs_and_single_texts_in_order():
    enc = pair_encoder(6)
    out = encode_examples(enc, ["the cat", "the cat sat a dog", "a"], [None, "dog", "the cat sat a dog"])
    assert [ids.tolist() for ids in out.token_ids] == [
        [CLS_ID, ID["the"], ID["cat"]],
        [CLS_ID, ID["the"], ID["cat"], SEP_ID, ID["dog"], SEP_ID],
        [CLS_ID, ID["a"], SEP_ID, ID["the"], ID["cat"], SEP_ID],
    ]
    assert out.truncated.tolist() == [False, True, True]
    assert out.truncated_text.tolist() == [False, True, False]
    assert out.truncated_text_pair.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="2 texts but 1 text pairs"):
        encode_examples(enc, ["a", "b"], ["c"])
