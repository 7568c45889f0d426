"""Tests for keras_mtl.metrics: hand-worked values for every metric."""

import dataclasses
import math
import os
import random
import subprocess
import zlib

import numpy as np
import pytest

from keras_mtl import metrics
from keras_mtl.metrics import compute_metric, span_scores


def approx(x):
    return pytest.approx(x, abs=1e-12)


# ---------------------------------------------------------------------------
# Registry.


def test_f1_scores_the_positive_class():
    y_true = ["1", "1", "0", "0", "1"]
    y_pred = ["1", "0", "1", "0", "1"]
    # tp 2, fp 1, fn 1 for "1"; tp 1, fp 1, fn 1 for "0"
    assert metrics.f1(y_true, y_pred) == approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.f1(y_true, y_pred, positive_class="0") == approx(2 * 1 / (2 * 1 + 1 + 1))
    assert metrics.f1(["0", "0"], ["0", "0"]) == 0.0  # no positive example nor prediction
    assert compute_metric("f1", y_true, y_pred, positive_class="0") == approx(0.5)
    # None means the default; options a metric does not take are ignored
    assert compute_metric("f1", y_true, y_pred, positive_class=None) == approx(2 / 3)
    assert compute_metric("accuracy", y_true, y_pred, positive_class="0") == approx(0.6)
    with pytest.raises(ValueError, match="same length"):
        metrics.f1(["1"], [])


def test_registry_names():
    # Which metrics a task type uses is the type's (tests/tasks/test_registry.py).
    for name, spec in metrics.METRICS.items():
        assert spec.name == name
        assert spec.higher_is_better is (name != "mse")


def test_metric_spec_is_frozen():
    spec = metrics.METRICS["accuracy"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"


def test_unknown_metric_name_is_value_error_listing_known_ones():
    with pytest.raises(ValueError) as info:
        compute_metric("f2", ["a"], ["a"])
    message = str(info.value)
    assert "'f2'" in message
    for name in ("accuracy", "macro_f1", "span_f1", "mse"):
        assert name in message
    assert not isinstance(info.value, KeyError)


def test_results_are_python_floats():
    cases = {
        "accuracy": (["a", "b"], ["a", "a"]),
        "f1": (["1", "0"], ["1", "1"]),
        "macro_f1": (["a", "b"], ["a", "a"]),
        "micro_f1": ([("a",), ("b",)], [("a",), ()]),
        "mcc": (["a", "b"], ["a", "a"]),
        "pearson": ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]),
        "spearman": ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]),
        "mse": ([1.0, 2.0], [1.0, 3.0]),
        "token_accuracy": ([["O", "B-X"]], [["O", "O"]]),
        "span_f1": ([["O", "B-X"]], [["O", "B-X"]]),
        "span_precision": ([["O", "B-X"]], [["O", "B-X"]]),
        "span_recall": ([["O", "B-X"]], [["O", "B-X"]]),
        "span_f1_iobes": ([["O", "S-X"]], [["O", "S-X"]]),
    }
    assert set(cases) == set(metrics.METRICS)
    for name, (y_true, y_pred) in cases.items():
        assert type(compute_metric(name, y_true, y_pred)) is float, name


def test_empty_inputs_score_zero():
    for name in ("accuracy", "macro_f1", "micro_f1", "mcc"):
        assert compute_metric(name, [], []) == 0.0
    for name in ("pearson", "spearman", "mse"):
        assert compute_metric(name, [], []) == 0.0
    for name in ("token_accuracy", "span_f1", "span_precision", "span_recall"):
        assert compute_metric(name, [], []) == 0.0


def test_length_mismatch_errors():
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        compute_metric("accuracy", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="same length; got 1 and 2"):
        compute_metric("pearson", [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        compute_metric("span_f1", [["O"], ["O"]], [["O"]])


def test_tagging_sentence_length_mismatch_names_sentence():
    y_true = [["O", "B-PER"], ["B-LOC", "O", "O"]]
    y_pred = [["O", "B-PER"], ["B-LOC", "O"]]
    for name in ("token_accuracy", "span_f1"):
        with pytest.raises(ValueError, match="sentence 1 has 3 tags in y_true but 2"):
            compute_metric(name, y_true, y_pred)


def test_tagging_rejects_flat_tag_list():
    # A flat list of tags is a common mistake; it must not be read as
    # sentences of characters.
    with pytest.raises(ValueError, match="sentence 0 is a string"):
        span_scores(["B-PER", "O"], ["B-PER", "O"])


def test_regression_rejects_non_finite():
    with pytest.raises(ValueError, match=r"y_pred\[1\] is nan"):
        compute_metric("mse", [1.0, 2.0], [1.0, float("nan")])


# ---------------------------------------------------------------------------
# Classification and multilabel.


def test_accuracy_classification():
    # 3 of 4 match (index 1 differs).
    y_true = ["a", "b", "c", "a"]
    y_pred = ["a", "c", "c", "a"]
    assert compute_metric("accuracy", y_true, y_pred) == 0.75


def test_accuracy_multilabel_is_exact_set_match():
    y_true = [("a", "b"), ("a",), ()]
    y_pred = [{"b", "a"}, ("a", "c"), []]
    # ex0: {a,b} == {a,b} (order ignored); ex1: {a} != {a,c}; ex2: {} == {}.
    assert compute_metric("accuracy", y_true, y_pred) == approx(2 / 3)


def test_macro_f1_classification_hand_case():
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "b"]
    # F1 = 2TP / (2TP + FP + FN) per class:
    #   a: TP 1, FP 0, FN 1 -> 2/3
    #   b: TP 1, FP 2, FN 0 -> 2/4 = 1/2
    #   c: TP 0, FP 0, FN 1 -> 0
    # macro = (2/3 + 1/2 + 0) / 3 = 7/18
    assert compute_metric("macro_f1", y_true, y_pred) == approx(7 / 18)


def test_macro_f1_counts_predicted_only_classes_but_not_absent_ones():
    # Classes in y_true or y_pred: a (F1 1), b (never predicted, F1 0),
    # d (only predicted, F1 0) -> 1/3. A class that appears nowhere (say
    # "z") does not exist for the metric.
    assert compute_metric("macro_f1", ["a", "b"], ["a", "d"]) == approx(1 / 3)
    assert compute_metric("macro_f1", ["a", "a"], ["a", "a"]) == 1.0


def test_multilabel_macro_and_micro_f1():
    y_true = [("a", "b"), ("a",), ("b",), ("c",)]
    y_pred = [("a",), ("a", "b"), ("b",), ("a",)]
    # per label (TP, FP, FN):
    #   a: TP ex0,ex1 = 2; FP ex3 = 1; FN 0     -> F1 4/5
    #   b: TP ex2 = 1;     FP ex1 = 1; FN ex0 = 1 -> F1 2/4 = 1/2
    #   c: TP 0;           FP 0;       FN ex3 = 1 -> F1 0
    # macro = (0.8 + 0.5 + 0) / 3 = 1.3 / 3
    # micro: TP 3, FP 2, FN 2 -> 6 / 10 = 0.6
    assert compute_metric("macro_f1", y_true, y_pred) == approx(1.3 / 3)
    assert compute_metric("micro_f1", y_true, y_pred) == approx(0.6)
    # Exact-set accuracy: only ex2 matches.
    assert compute_metric("accuracy", y_true, y_pred) == 0.25


def test_micro_f1_no_labels_anywhere_is_zero():
    assert compute_metric("micro_f1", [(), ()], [(), ()]) == 0.0


def test_mcc_binary_hand_case():
    # TP 3, FN 1, FP 2, TN 4 (positive class "p").
    y_true = ["p"] * 3 + ["p"] + ["n"] * 2 + ["n"] * 4
    y_pred = ["p"] * 3 + ["n"] + ["p"] * 2 + ["n"] * 4
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (12 - 2) / sqrt(5 * 4 * 6 * 5) = 10 / sqrt(600) = 1 / sqrt(6)
    assert compute_metric("mcc", y_true, y_pred) == approx(1 / math.sqrt(6))


def test_mcc_three_class_hand_case():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    # Gorodkin: c = correct = 4, s = 6, t = (3, 2, 1), p = (2, 2, 2).
    #   numerator = c*s - sum(p_k t_k) = 24 - (6 + 4 + 2) = 12
    #   s^2 - sum(p_k^2) = 36 - 12 = 24;  s^2 - sum(t_k^2) = 36 - 14 = 22
    #   MCC = 12 / sqrt(24 * 22) = 12 / sqrt(528)
    assert compute_metric("mcc", y_true, y_pred) == approx(12 / math.sqrt(528))


def test_mcc_extremes_and_undefined():
    assert compute_metric("mcc", ["a", "b", "a"], ["a", "b", "a"]) == 1.0
    assert compute_metric("mcc", ["a", "b", "a", "b"], ["b", "a", "b", "a"]) == -1.0
    # All predictions the same class: denominator 0 -> 0.0.
    assert compute_metric("mcc", ["a", "b", "c"], ["a", "a", "a"]) == 0.0
    # A single true class: also undefined.
    assert compute_metric("mcc", ["a", "a"], ["a", "b"]) == 0.0


# ---------------------------------------------------------------------------
# Regression.


def test_pearson_hand_case():
    # x = (1, 2, 3), y = (2, 4, 7); means 2 and 13/3.
    # dx = (-1, 0, 1), dy = (-7/3, -1/3, 8/3)
    # sum dx*dy = 7/3 + 8/3 = 5; sum dx^2 = 2; sum dy^2 = 114/9
    # r = 5 / sqrt(2 * 114 / 9) = 15 / sqrt(228)
    expected = 15 / math.sqrt(228)
    assert compute_metric("pearson", [1, 2, 3], [2, 4, 7]) == approx(expected)
    assert compute_metric("pearson", [1, 2, 3], [3, 2, 1]) == approx(-1.0)


def test_pearson_and_spearman_constant_side_is_zero():
    for name in ("pearson", "spearman"):
        assert compute_metric(name, [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0
        assert compute_metric(name, [0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) == 0.0
        assert compute_metric(name, [1.0], [2.0]) == 0.0


def test_spearman_with_ties():
    # x = (1, 2, 2, 3) -> average-tie ranks (1, 2.5, 2.5, 4)
    # y = (1, 3, 2, 4) -> ranks (1, 3, 2, 4); both rank means 2.5.
    # dx = (-1.5, 0, 0, 1.5), dy = (-1.5, 0.5, -0.5, 1.5)
    # sum dx*dy = 4.5; sum dx^2 = 4.5; sum dy^2 = 5
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    expected = math.sqrt(0.9)
    assert compute_metric("spearman", [1, 2, 2, 3], [1, 3, 2, 4]) == approx(expected)


def test_spearman_ties_on_both_sides_and_monotone_transform():
    # Ties at the same positions on both sides: identical ranks -> 1.
    assert compute_metric("spearman", [1, 1, 2, 5], [10, 10, 20, 21]) == approx(1.0)
    # Monotone but non-linear: spearman 1, pearson below 1.
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [v**3 for v in x]
    assert compute_metric("spearman", x, y) == approx(1.0)
    assert compute_metric("pearson", x, y) < 0.99


def test_average_ranks():
    ranks = metrics._average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))
    # sorted: 1 (rank 1), 2 (rank 2), 3,3,3 (ranks 3,4,5 -> 4 each)
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_mse():
    # ((1-1)^2 + (2-3)^2 + (3-5)^2) / 3 = 5/3
    assert compute_metric("mse", [1, 2, 3], [1, 3, 5]) == approx(5 / 3)
    assert metrics.METRICS["mse"].higher_is_better is False


# ---------------------------------------------------------------------------
# Tagging: token accuracy.


def test_token_accuracy():
    # 3 tokens, the second differs -> 2/3.
    y_true = [["B-PER", "I-PER"], ["O"]]
    y_pred = [["B-PER", "O"], ["O"]]
    assert compute_metric("token_accuracy", y_true, y_pred) == approx(2 / 3)


# ---------------------------------------------------------------------------
# Tagging: conlleval span scores.


def counts(scores):
    return scores["found_correct"], scores["found_guessed"], scores["correct_chunks"]


def test_span_iob2_hand_case():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"]]
    y_pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    s = span_scores(y_true, y_pred)
    # gold chunks PER[0-1], LOC[3]; guessed PER[0-1], ORG[3]; correct PER.
    assert counts(s) == (2, 2, 1)
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert s["accuracy"] == 0.75  # token 3 differs
    assert compute_metric("span_f1", y_true, y_pred) == 0.5
    assert compute_metric("span_precision", y_true, y_pred) == 0.5
    assert compute_metric("span_recall", y_true, y_pred) == 0.5


def test_span_i_after_o_starts_a_chunk():
    # conlleval: startOfChunk(O, I) is true, so I-NP after O opens a chunk
    # (IOB1 style); it is the same chunk as B-NP I-NP at the same place.
    y_true = [["O", "I-NP", "I-NP", "O"]]
    y_pred = [["O", "B-NP", "I-NP", "O"]]
    s = span_scores(y_true, y_pred)
    assert counts(s) == (1, 1, 1)
    assert s["f1"] == 1.0
    assert s["accuracy"] == 0.75  # "I-NP" != "B-NP" at token 1
    # I- at the very start of a sentence also opens a chunk.
    assert counts(span_scores([["I-NP"]], [["B-NP"]])) == (1, 1, 1)


def test_span_iob1_b_separates_adjacent_same_type_chunks():
    # IOB1: I-NP I-NP B-NP -> chunks NP[0-1], NP[2].
    # guessed: I-NP I-NP I-NP -> one chunk NP[0-2]; nothing correct.
    y_true = [["I-NP", "I-NP", "B-NP", "O"]]
    y_pred = [["I-NP", "I-NP", "I-NP", "O"]]
    s = span_scores(y_true, y_pred)
    assert counts(s) == (2, 1, 0)
    assert s["f1"] == 0.0


def test_span_i_after_different_type_starts_a_chunk():
    # B-PER I-LOC: the type change ends PER and starts LOC.
    y_true = [["B-PER", "I-LOC", "I-LOC"]]
    y_pred = [["B-PER", "B-LOC", "I-LOC"]]
    s = span_scores(y_true, y_pred)
    # gold: PER[0], LOC[1-2]; guessed: PER[0], LOC[1-2] -> all correct.
    assert counts(s) == (2, 2, 2)
    assert s["f1"] == 1.0


def test_span_type_change_inside_chunk_is_two_chunks():
    # B-NP I-VP -> NP[0], VP[1]; guessed B-NP I-NP -> NP[0-1].
    # NP[0] != NP[0-1], so 0 correct: found_correct 2, found_guessed 1.
    s = span_scores([["B-NP", "I-VP"]], [["B-NP", "I-NP"]])
    assert counts(s) == (2, 1, 0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["per_type"]["NP"]["found_correct"] == 1
    assert s["per_type"]["NP"]["found_guessed"] == 1
    assert s["per_type"]["VP"]["found_correct"] == 1
    assert s["per_type"]["VP"]["found_guessed"] == 0
    # Same chunks written as B-NP B-VP: both correct (token 1 tag differs).
    s = span_scores([["B-NP", "I-VP", "O"]], [["B-NP", "B-VP", "O"]])
    assert counts(s) == (2, 2, 2)
    assert s["accuracy"] == approx(2 / 3)


def test_span_chunk_at_sentence_end():
    # The chunk PER[1-2] runs to the last token; the sentence end closes it.
    s = span_scores([["O", "B-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])
    assert counts(s) == (1, 1, 1)
    assert s["f1"] == 1.0
    # A guess that stops one token early is wrong: PER[1] vs PER[1-2].
    s = span_scores([["O", "B-PER", "I-PER"]], [["O", "B-PER", "O"]])
    assert counts(s) == (1, 1, 0)
    assert s["f1"] == 0.0
    # A guess that runs to the sentence end when the truth stops early.
    s = span_scores([["O", "B-PER", "O"]], [["O", "B-PER", "I-PER"]])
    assert counts(s) == (1, 1, 0)


def test_span_consecutive_b_tags():
    # gold B-NP B-NP B-NP -> NP[0], NP[1], NP[2]
    # guessed B-NP I-NP B-NP -> NP[0-1], NP[2]; only NP[2] is correct.
    y_true = [["B-NP", "B-NP", "B-NP"]]
    y_pred = [["B-NP", "I-NP", "B-NP"]]
    s = span_scores(y_true, y_pred)
    assert counts(s) == (3, 2, 1)
    # P = 1/2, R = 1/3, F1 = 2 * (1/2)(1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 2/5
    assert s["precision"] == 0.5
    assert s["recall"] == approx(1 / 3)
    assert s["f1"] == approx(0.4)


def test_span_iobes():
    y_true = [["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"]]
    y_pred = [["S-PER", "O", "B-LOC", "E-LOC", "O"]]
    # gold: PER[0] (S after O: type change opens it; O after it closes it),
    #       LOC[2-4] (B opens, I and E continue, sentence end closes).
    # guessed: PER[0], LOC[2-3] (E then O: endOfChunk(E, O) closes it).
    # correct: PER only -> P = R = F1 = 1/2.
    for scheme in ("conlleval", "iobes"):
        s = span_scores(y_true, y_pred, scheme=scheme)
        assert counts(s) == (2, 2, 1), scheme
        assert s["f1"] == 0.5
        assert s["per_type"]["PER"]["correct"] == 1
        assert s["per_type"]["LOC"]["correct"] == 0
    # E-X after E-X (IOE style) closes one chunk and opens the next.
    # I-NP E-NP | E-NP -> NP[0-1], NP[2].
    ioe = [["I-NP", "E-NP", "E-NP"]]
    assert counts(span_scores(ioe, ioe)) == (2, 2, 2)


def test_span_iobes_adjacent_same_type_chunks():
    # conlleval has no rule for S- tags or for B- after E-: adjacent
    # same-type IOBES chunks are joined (this is what the perl script
    # reports). scheme="iobes" rewrites S->B and E->I first and counts them
    # apart.
    y = [["S-PER", "S-PER", "O", "B-LOC", "E-LOC", "B-LOC", "E-LOC"]]
    raw = span_scores(y, y)
    # conlleval: PER[0-1] (S-PER S-PER: same type, no start), LOC[3-6].
    assert counts(raw) == (2, 2, 2)
    iobes = span_scores(y, y, scheme="iobes")
    # read as B-PER B-PER O B-LOC I-LOC B-LOC I-LOC: PER[0], PER[1],
    # LOC[3-4], LOC[5-6].
    assert counts(iobes) == (4, 4, 4)
    assert iobes["per_type"]["PER"]["found_correct"] == 2
    # A guess that merges the two PER singletons is wrong under "iobes".
    guess = [["B-PER", "E-PER", "O", "B-LOC", "E-LOC", "B-LOC", "E-LOC"]]
    assert counts(span_scores(y, guess, scheme="iobes")) == (4, 3, 2)
    with pytest.raises(ValueError, match="unknown tagging scheme 'bilou'"):
        span_scores(y, y, scheme="bilou")


def test_span_bracket_tags_are_one_token_chunks():
    # "[" and "]" always start a chunk and end it after one token:
    # [-NP ]-NP O -> NP[0], NP[1].
    s = span_scores([["[-NP", "]-NP", "O"]], [["[-NP", "]-NP", "O"]])
    assert counts(s) == (2, 2, 2)


def test_span_chunks_do_not_cross_sentences():
    # Each sentence boundary closes a chunk, so the I-PER opening sentence 1
    # starts a new chunk: gold PER(s0)[0-1], PER(s1)[0]. Concatenated into
    # one sentence (B I I O) it would be a single chunk.
    y_true = [["B-PER", "I-PER"], ["I-PER", "O"]]
    y_pred = [["B-PER", "I-PER"], ["B-PER", "O"]]
    s = span_scores(y_true, y_pred)
    assert counts(s) == (2, 2, 2)
    assert s["f1"] == 1.0
    joined = [["B-PER", "I-PER", "I-PER", "O"]]
    assert counts(span_scores(joined, joined)) == (1, 1, 1)
    # A guess chunk that ends at a sentence end matches a gold chunk ending
    # there, even if the next sentence continues with I-.
    s = span_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert counts(s) == (2, 2, 2)
    # Empty sentences are allowed and change nothing.
    s = span_scores([["B-PER"], [], ["B-PER"]], [["B-PER"], [], ["O"]])
    assert counts(s) == (2, 1, 1)


def test_span_all_o():
    s = span_scores([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert counts(s) == (0, 0, 0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["accuracy"] == 1.0
    assert s["per_type"] == {}
    # Truth all O, one guessed chunk: precision 0/1, recall undefined -> 0.
    s = span_scores([["O", "O"]], [["B-PER", "O"]])
    assert counts(s) == (0, 1, 0)
    assert s["f1"] == 0.0
    assert s["per_type"]["PER"]["found_guessed"] == 1


def test_span_per_type_counts():
    y_true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["B-LOC", "O"]]
    y_pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"], ["B-PER", "O"]]
    s = span_scores(y_true, y_pred)
    # gold: PER[0-1], LOC[3], ORG[5], LOC(s1)[0]  -> 4
    # guessed: PER[0-1], LOC[3], LOC[5], PER(s1)[0] -> 4
    # correct: PER[0-1], LOC[3] -> 2
    assert counts(s) == (4, 4, 2)
    assert list(s["per_type"]) == ["LOC", "ORG", "PER"]
    per = s["per_type"]
    # LOC: found_correct 2, found_guessed 2, correct 1 -> P = R = F = 1/2
    assert per["LOC"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "found_correct": 2,
        "found_guessed": 2,
        "correct": 1,
    }
    # ORG: 1 gold, 0 guessed -> all 0
    assert per["ORG"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "found_correct": 1,
        "found_guessed": 0,
        "correct": 0,
    }
    # PER: 1 gold, 2 guessed, 1 correct -> P 1/2, R 1, F1 2/3
    assert per["PER"]["found_correct"] == 1
    assert per["PER"]["found_guessed"] == 2
    assert per["PER"]["correct"] == 1
    assert per["PER"]["precision"] == 0.5
    assert per["PER"]["recall"] == 1.0
    assert per["PER"]["f1"] == approx(2 / 3)


def test_span_types_may_contain_hyphens():
    # conlleval splits at the first "-": B-ORG-CORP is type "ORG-CORP".
    y = [["B-ORG-CORP", "I-ORG-CORP"]]
    s = span_scores(y, y)
    assert counts(s) == (1, 1, 1)
    assert list(s["per_type"]) == ["ORG-CORP"]


# ---------------------------------------------------------------------------
# Optional cross-check against a local copy of the conlleval perl script.
# The script is not shipped with keras-mtl; point CONLLEVAL_PL at one to run.


def _random_tag(rng):
    prefix = rng.choice(["B", "I", "E", "S", "O", "O", "O", "[", "]", "."])
    return "O" if prefix == "O" else f"{prefix}-{rng.choice(['PER', 'LOC', 'ORG-X'])}"


def _run_conlleval(script, y_true, y_pred):
    lines = []
    for t, p in zip(y_true, y_pred):
        lines += [f"w {a} {b}" for a, b in zip(t, p)] + [""]
    out = subprocess.run(
        ["perl", script],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first = out.splitlines()[0].split()
    # "processed N tokens with X phrases; found: Y phrases; correct: Z."
    return int(first[4]), int(first[7]), int(first[10].rstrip("."))


@pytest.mark.skipif(
    not os.environ.get("CONLLEVAL_PL"), reason="set CONLLEVAL_PL to a conlleval.pl"
)
def test_span_counts_match_conlleval_script():
    script = os.environ["CONLLEVAL_PL"]
    rng = random.Random(0)
    for _ in range(200):
        y_true, y_pred = [], []
        for _ in range(rng.randint(1, 3)):
            n = rng.randint(0, 6)
            y_true.append([_random_tag(rng) for _ in range(n)])
            y_pred.append(
                [t if rng.random() < 0.5 else _random_tag(rng) for t in y_true[-1]]
            )
        assert counts(span_scores(y_true, y_pred)) == _run_conlleval(
            script, y_true, y_pred
        ), (y_true, y_pred)


def test_span_f1_iobes_separates_adjacent_singletons():
    # Gold: S-PER S-PER = two one-token chunks. Predicted the same.
    # conlleval merges them into one chunk (1 found, 1 correct -> F1 1.0 either way),
    # but a prediction of one two-token chunk B-PER E-PER is wrong under IOBES:
    gold = [["S-PER", "S-PER"]]
    pred = [["B-PER", "E-PER"]]
    # iobes: gold chunks {(0,0),(1,1)}, predicted {(0,1)} -> 0 correct, F1 0.
    assert metrics.compute_metric("span_f1_iobes", gold, pred) == 0.0
    # conlleval sees both as one chunk (0,1): F1 1.0.
    assert metrics.compute_metric("span_f1", gold, pred) == 1.0


def test_macro_f1_is_the_same_in_every_process():
    # The classes are summed in a fixed order: PYTHONHASHSEED must not move the last digit.
    import subprocess
    import sys

    code = (
        "from keras_mtl.metrics import macro_f1; "
        "print(repr(macro_f1(['a','b','c','d','e','f','g']*3, ['b','a','c','e','d','g','f']*2+['a','b','c','d','e','f','g'])))"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(6)
    }
    assert len(outputs) == 1, outputs


def _random_labels(rng, metric, n):
    classes = ["a", "b", "c", "1"]
    if metric in ("token_accuracy", "span_f1", "span_precision", "span_recall", "span_f1_iobes"):
        tags = ["O", "B-NP", "I-NP", "B-VP", "I-VP", "E-NP", "S-VP"]
        lengths = rng.integers(0, 7, size=n)
        return ([tuple(rng.choice(tags, size=m)) for m in lengths], [tuple(rng.choice(tags, size=m)) for m in lengths])
    if metric == "micro_f1" or (metric in ("accuracy", "macro_f1") and rng.random() < 0.5):  # multilabel
        pick = lambda: tuple(c for c in classes if rng.random() < 0.4)  # noqa: E731
        return [pick() for _ in range(n)], [pick() for _ in range(n)]
    return list(rng.choice(classes, size=n)), list(rng.choice(classes, size=n))


@pytest.mark.parametrize("metric", [m for m, spec in metrics.METRICS.items() if spec.counts is not None])
def test_example_counts_score_a_resample_exactly_as_the_metric_does(metric):
    """The bootstrap's shortcut: the metric of a resample (indices with repeats) from summed
    per-example counts equals the metric recomputed on the resampled labels, to the last bit."""
    from keras_mtl.metrics import example_counts

    rng = np.random.default_rng(zlib.crc32(metric.encode()))
    for trial in range(40):
        n = int(rng.integers(0, 30)) if trial else 0
        y_true, y_pred = _random_labels(rng, metric, n)
        counted = example_counts(metric, y_true, y_pred, positive_class="1")
        assert counted.score() == compute_metric(metric, y_true, y_pred, positive_class="1")
        for _ in range(5):
            idx = rng.integers(0, n, size=n) if n else np.zeros(0, np.int64)
            want = compute_metric(metric, [y_true[i] for i in idx], [y_pred[i] for i in idx], positive_class="1")
            assert counted.score(np.bincount(idx, minlength=n)) == want, (metric, trial)


def test_example_counts_is_none_for_a_metric_that_does_not_add_up():
    from keras_mtl.metrics import example_counts

    for metric in ("pearson", "spearman", "mse"):
        assert example_counts(metric, [1.0, 2.0], [1.0, 3.0]) is None
    with pytest.raises(ValueError, match="unknown metric"):
        example_counts("nope", [], [])
