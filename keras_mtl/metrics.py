"""Evaluation metrics computed on label strings.

Metrics score decoded predictions (class names, tag strings, floats), not ids
or logits, so a report does not depend on a vocabulary's order; plain Python
and numpy, every metric returns a Python `float` (a fraction; 0.0 on empty
input). Which metrics a task type allows, with its default, is the type's to
say (`keras_mtl.tasks`). Input conventions per task type, the metrics, and
the conlleval chunk rules of `span_scores`: docs/metrics.md.
"""

import collections
import dataclasses
import math
from typing import Callable, Optional

import numpy as np

@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A named metric (which task types use it is theirs to say: keras_mtl.tasks).

    Args:
        name: str. The name used in configs and reports.
        fn: callable. `fn(y_true, y_pred)` returns the score as a float.
        higher_is_better: bool. Whether a larger score is a better model
            (used to pick the best checkpoint). Defaults to `True`.
        options: tuple of str. Keyword arguments of `fn` that a task sets
            (e.g. `positive_class`). Defaults to `()`.
        counts: callable or None. `counts(y_true, y_pred, **options)`
            returns the metric's `ExampleCounts`, for a metric that is a
            function of counts summed over the examples (None: it is not,
            e.g. a correlation). Defaults to `None`.
    """

    name: str
    fn: Callable
    higher_is_better: bool = True
    options: tuple = ()  # the task settings `fn` takes as keyword arguments (`positive_class`)
    counts: Optional[Callable] = None  # the per-example counts the metric is a function of (resampling)


@dataclasses.dataclass(frozen=True)
class ExampleCounts:
    """A metric as a function of counts that add up over examples.

    Row i of `counts` holds example i's counts (hits, true positives, chunks
    found, ...); `finish` turns their column sums into the metric. So the
    metric on any multiset of the examples (a bootstrap resample: indices
    with repeats) is `finish` of the weighted sum of rows, computed without
    touching the labels again, and it equals the metric computed on the
    resampled labels, exactly: the counts are integers.

    Args:
        counts: int64 array (n examples, k counts).
        finish: callable. The k column sums -> the metric (a float).
    """

    counts: np.ndarray
    finish: Callable

    def score(self, weights=None):
        """The metric over the examples, each counted `weights[i]` times (None: once each)."""
        totals = self.counts.sum(axis=0) if weights is None else np.asarray(weights, np.int64) @ self.counts
        return self.finish([int(v) for v in totals])


def _rows(rows, width):
    return np.asarray(rows, dtype=np.int64).reshape(-1, width)


def _ratio(totals):
    hits, n = totals
    return float(hits / n) if n else 0.0


# ---------------------------------------------------------------------------
# Input checks.


def _check_pair(y_true, y_pred):
    y_true = list(y_true)
    y_pred = list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same length; got {len(y_true)} "
            f"and {len(y_pred)}"
        )
    return y_true, y_pred


def _label_set(labels, index, side):
    if isinstance(labels, str):
        # A bare class name is read as a one-label set.
        return frozenset((labels,))
    try:
        return frozenset(labels)
    except TypeError:
        raise ValueError(
            f"{side}[{index}] must be a collection of labels (tuple, list or set); "
            f"got {labels!r}"
        ) from None


def _label_sets(y_true, y_pred):
    y_true, y_pred = _check_pair(y_true, y_pred)
    true_sets = [_label_set(v, i, "y_true") for i, v in enumerate(y_true)]
    pred_sets = [_label_set(v, i, "y_pred") for i, v in enumerate(y_pred)]
    return true_sets, pred_sets


def _classes_or_sets(y_true, y_pred, as_sets=False):
    """The checked pair: label collections as sets, class names as they are
    (`as_sets`: as one-class sets)."""
    if _is_multilabel(y_true, y_pred):
        return _label_sets(y_true, y_pred)
    y_true, y_pred = _check_pair(y_true, y_pred)
    if as_sets:
        return [frozenset((v,)) for v in y_true], [frozenset((v,)) for v in y_pred]
    return y_true, y_pred


def _is_multilabel(y_true, y_pred):
    # Judged by the first example: label collections mean multilabel.
    for values in (y_true, y_pred):
        for value in values:
            return isinstance(value, (tuple, list, set, frozenset))
    return False


def _floats(y_true, y_pred):
    y_true, y_pred = _check_pair(y_true, y_pred)
    try:
        t = np.asarray(y_true, dtype=np.float64).reshape(-1)
        p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"regression metrics need numbers: {e}") from None
    if t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length; got {t.size} and {p.size}"
        )
    for side, values in (("y_true", t), ("y_pred", p)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"{side}[{int(bad[0])}] is {float(values[bad[0]])}; regression metrics "
                "need finite numbers"
            )
    return t, p


def _sentences(y_true, y_pred):
    y_true, y_pred = _check_pair(y_true, y_pred)
    pairs = []
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if isinstance(t, str) or isinstance(p, str):
            raise ValueError(
                f"sentence {i} is a string; tagging metrics take a sequence of "
                "sentences, each a sequence of tag strings"
            )
        t, p = list(t), list(p)
        if len(t) != len(p):
            raise ValueError(
                f"sentence {i} has {len(t)} tags in y_true but {len(p)} in y_pred"
            )
        pairs.append((t, p))
    return pairs


# ---------------------------------------------------------------------------
# Classification and multilabel.


def accuracy(y_true, y_pred):
    """Fraction of examples whose prediction exactly matches the truth.

    For classification this compares class names. For multilabel it is
    subset (exact-set) accuracy: an example counts only if the predicted set
    of labels equals the true set.

    Args:
        y_true: sequence of class names, or of label collections.
        y_pred: sequence of the same kind and length as `y_true`.
    """
    return _accuracy_counts(y_true, y_pred).score()


def _accuracy_counts(y_true, y_pred):
    y_true, y_pred = _classes_or_sets(y_true, y_pred)
    return ExampleCounts(_rows([(t == p, 1) for t, p in zip(y_true, y_pred)], 2), _ratio)


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def _f1_of_totals(totals):
    return float(_f1(*totals))


def f1(y_true, y_pred, positive_class="1"):
    """F1 of one class, the positive class of a binary task (how MRPC and QQP are reported).

    Args:
        y_true: sequence of class names.
        y_pred: sequence of class names, as long as `y_true`.
        positive_class: str. The class scored (a task's `positive_class`).
            Defaults to `"1"`.
    """
    return _f1_counts(y_true, y_pred, positive_class).score()


def _f1_counts(y_true, y_pred, positive_class="1"):
    y_true, y_pred = _check_pair(y_true, y_pred)
    rows = [(t == positive_class and p == positive_class, t != positive_class and p == positive_class,
             t == positive_class and p != positive_class) for t, p in zip(y_true, y_pred)]
    return ExampleCounts(_rows(rows, 3), _f1_of_totals)


def macro_f1(y_true, y_pred):
    """Unweighted mean of per-class F1.

    The mean runs over every class (or label) that occurs in `y_true` or
    `y_pred`; a class with neither support nor predictions does not exist
    for this metric. A class that is only predicted, or only true, counts
    with F1 0. For multilabel input each label is scored as its own binary
    problem over the examples.

    Args:
        y_true: sequence of class names, or of label collections.
        y_pred: sequence of the same kind and length as `y_true`.
    """
    true_sets, pred_sets = _classes_or_sets(y_true, y_pred, as_sets=True)
    tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
    for t, p in zip(true_sets, pred_sets):
        tp.update(t & p)
        fp.update(p - t)
        fn.update(t - p)
    labels = _label_order(true_sets, pred_sets)
    return _macro_f1_of([tp[c] for c in labels], [fp[c] for c in labels], [fn[c] for c in labels])


def _label_order(true_sets, pred_sets):
    # a fixed order: the float sum is the same in every process
    return sorted(set().union(*true_sets, *pred_sets), key=str)


def _macro_f1_of(tp, fp, fn):
    """The mean F1 of the labels (counts in one order) with any support or prediction."""
    scores = [_f1(a, b, c) for a, b, c in zip(tp, fp, fn) if a or b or c]
    return float(sum(scores) / len(scores)) if scores else 0.0


def _macro_f1_counts(y_true, y_pred):
    # for resampling only: a dense (examples, 3 x labels) matrix, which the metric itself does not build
    true_sets, pred_sets = _classes_or_sets(y_true, y_pred, as_sets=True)
    labels = _label_order(true_sets, pred_sets)
    column = {c: i for i, c in enumerate(labels)}
    k = len(labels)
    counts = np.zeros((len(true_sets), 3 * k), np.int64)  # tp of every label, then fp, then fn
    for row, (t, p) in enumerate(zip(true_sets, pred_sets)):
        for offset, found in ((0, t & p), (k, p - t), (2 * k, t - p)):
            for c in found:
                counts[row, offset + column[c]] += 1
    return ExampleCounts(counts, lambda totals: _macro_f1_of(totals[:k], totals[k : 2 * k], totals[2 * k :]))


def micro_f1(y_true, y_pred):
    """F1 of the true and false positives pooled over all labels.

    `2 * TP / (2 * TP + FP + FN)`, where each count is summed over every
    (example, label) pair; 0.0 when there are no labels at all. A bare class
    name is read as a one-label set, so on classification input this equals
    accuracy.

    Args:
        y_true: sequence of label collections (tuples, lists or sets).
        y_pred: sequence of label collections, same length as `y_true`.
    """
    return _micro_f1_counts(y_true, y_pred).score()


def _micro_f1_counts(y_true, y_pred):
    true_sets, pred_sets = _label_sets(y_true, y_pred)
    rows = [(len(t & p), len(p - t), len(t - p)) for t, p in zip(true_sets, pred_sets)]
    return ExampleCounts(_rows(rows, 3), _f1_of_totals)


def mcc(y_true, y_pred):
    """Matthews correlation coefficient, multiclass form.

    Gorodkin's R_K statistic over the confusion matrix `C`:
    `(c * s - sum_k p_k * t_k) / sqrt((s**2 - sum_k p_k**2) *
    (s**2 - sum_k t_k**2))`, with `c` the number of correct predictions,
    `s` the number of examples, `t_k` and `p_k` how often class `k` is true
    and predicted. For two classes it is the usual binary MCC. It equals
    scikit-learn's `matthews_corrcoef`; 0.0 when the denominator is 0
    (e.g. every prediction is the same class).

    Args:
        y_true: sequence of class names.
        y_pred: sequence of class names, same length as `y_true`.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    t_count, p_count = collections.Counter(y_true), collections.Counter(y_pred)
    classes = list(t_count | p_count)
    return _mcc_of(sum(t == p for t, p in zip(y_true, y_pred)), len(y_true),
                   [t_count[k] for k in classes], [p_count[k] for k in classes])


def _mcc_of(c, s, t_count, p_count):
    """Gorodkin's R_K from the correct count, the example count and the per-class true and predicted counts."""
    # Python ints: exact, no overflow on large evaluation sets.
    numerator = c * s - sum(p * t for p, t in zip(p_count, t_count))
    pred_var = s * s - sum(v * v for v in p_count)
    true_var = s * s - sum(v * v for v in t_count)
    if pred_var == 0 or true_var == 0:
        return 0.0
    value = numerator / math.sqrt(pred_var * true_var)
    return float(min(1.0, max(-1.0, value)))


def _mcc_counts(y_true, y_pred):
    # for resampling only: a dense (examples, 2 + 2 x classes) matrix, which the metric itself does not build
    y_true, y_pred = _check_pair(y_true, y_pred)
    classes = sorted(set(y_true) | set(y_pred), key=str)
    column = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    counts = np.zeros((len(y_true), 2 + 2 * k), np.int64)  # correct, 1, true class one-hot, predicted class one-hot
    for row, (t, p) in enumerate(zip(y_true, y_pred)):
        counts[row, 0] = t == p
        counts[row, 1] = 1
        counts[row, 2 + column[t]] = 1
        counts[row, 2 + k + column[p]] = 1
    return ExampleCounts(counts, lambda totals: _mcc_of(totals[0], totals[1], totals[2 : 2 + k], totals[2 + k :]))


# ---------------------------------------------------------------------------
# Regression.


def _pearson(t, p):
    if t.size < 2 or np.all(t == t[0]) or np.all(p == p[0]):
        return 0.0
    dt = t - t.mean()
    dp = p - p.mean()
    denominator = math.sqrt(float(np.dot(dt, dt))) * math.sqrt(float(np.dot(dp, dp)))
    if denominator == 0.0:
        return 0.0
    return float(min(1.0, max(-1.0, float(np.dot(dt, dp)) / denominator)))


def pearson(y_true, y_pred):
    """Pearson correlation coefficient.

    0.0 when either side is constant (the correlation is undefined) or
    there are fewer than two values.

    Args:
        y_true: sequence of finite numbers.
        y_pred: sequence of finite numbers, same length as `y_true`.
    """
    return _pearson(*_floats(y_true, y_pred))


def _average_ranks(x):
    """1-based ranks of `x`; tied values share the mean of their ranks."""
    n = x.size
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    is_new = np.ones(n, dtype=bool)
    is_new[1:] = sorted_x[1:] != sorted_x[:-1]
    starts = np.flatnonzero(is_new)
    ends = np.append(starts[1:], n)
    # Positions starts..ends-1 hold ranks starts+1..ends; their mean:
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(is_new) - 1]
    return ranks


def spearman(y_true, y_pred):
    """Spearman rank correlation.

    The Pearson correlation of the ranks, with tied values given the average
    of the ranks they span (as `scipy.stats.spearmanr` does). 0.0 when
    either side is constant. Arguments as `pearson`.
    """
    t, p = _floats(y_true, y_pred)
    if t.size == 0:
        return 0.0
    return _pearson(_average_ranks(t), _average_ranks(p))


def mse(y_true, y_pred):
    """Mean squared error; lower is better (arguments as `pearson`)."""
    t, p = _floats(y_true, y_pred)
    if t.size == 0:
        return 0.0
    return float(np.mean((t - p) ** 2))


# ---------------------------------------------------------------------------
# Tagging.


def token_accuracy(y_true, y_pred):
    """Fraction of tokens whose predicted tag string equals the true one.

    Args:
        y_true: sequence of sentences, each a sequence of tag strings.
        y_pred: sequence of sentences, each as long as its `y_true` sentence.
    """
    return _token_accuracy_counts(y_true, y_pred).score()


def _token_accuracy_counts(y_true, y_pred):
    rows = [(sum(a == b for a, b in zip(t, p)), len(t)) for t, p in _sentences(y_true, y_pred)]
    return ExampleCounts(_rows(rows, 2), _ratio)


# conlleval's chunk boundary rules, transcribed from its endOfChunk and
# startOfChunk subroutines. They cover IOB1, IOB2, IOE1, IOE2 and the
# one-token "[" / "]" chunks. `prev`/`tag` are the part of a tag before its
# first "-", `prev_type`/`type_` the part after it ("" if there is no "-").


def _end_of_chunk(prev, tag, prev_type, type_):
    return (
        (prev == "B" and tag in ("B", "O"))
        or (prev == "I" and tag in ("B", "O"))
        or (prev == "E" and tag in ("E", "I", "O"))
        or (prev != "O" and prev != "." and prev_type != type_)
        or prev in ("[", "]")
    )


def _start_of_chunk(prev, tag, prev_type, type_):
    return (
        (prev in ("B", "I", "O") and tag == "B")
        or (prev == "O" and tag in ("I", "E"))
        or (prev == "E" and tag in ("E", "I"))
        or (tag != "O" and tag != "." and prev_type != type_)
        or tag in ("[", "]")
    )


def _split_tag(tag):
    # conlleval: /^([^-]*)-(.*)$/, then `$type ? $type : ""` (perl treats
    # the string "0" as false, so a type "0" becomes "").
    prefix, dash, type_ = tag.partition("-")
    if not dash:
        return tag, ""
    return prefix, ("" if type_ == "0" else type_)


def _iobes_to_iob2(tag):
    prefix, dash, type_ = tag.partition("-")
    if dash and prefix == "S":
        return "B-" + type_
    if dash and prefix == "E":
        return "I-" + type_
    return tag


def _conlleval_counts(pairs):
    """Runs conlleval's main loop over `(true_tags, pred_tags)` sentences.

    Returns the chunk counts per type (correct, in the truth, predicted) as
    Counters, whose sums are conlleval's totals, then the correctly tagged
    tokens and all tokens."""
    boundary = (("O", ""), ("O", ""), True)

    def lines():
        for t_sent, p_sent in pairs:
            for t, p in zip(t_sent, p_sent):
                yield _split_tag(t), _split_tag(p), False
            # conlleval sees a blank line after every sentence.
            yield boundary

    correct_tags = tokens = 0
    type_correct = collections.Counter()
    type_found_correct = collections.Counter()
    type_found_guessed = collections.Counter()
    in_correct = False
    last_c, last_ct, last_g, last_gt = "O", "", "O", ""

    for (c, ct), (g, gt), is_boundary in lines():
        if in_correct:
            end_c = _end_of_chunk(last_c, c, last_ct, ct)
            end_g = _end_of_chunk(last_g, g, last_gt, gt)
            if end_c and end_g and last_gt == last_ct:
                in_correct = False
                type_correct[last_ct] += 1
            elif end_c != end_g or gt != ct:
                in_correct = False

        start_c = _start_of_chunk(last_c, c, last_ct, ct)
        start_g = _start_of_chunk(last_g, g, last_gt, gt)
        if start_c and start_g and gt == ct:
            in_correct = True
        if start_c:
            type_found_correct[ct] += 1
        if start_g:
            type_found_guessed[gt] += 1
        if not is_boundary:
            if c == g and ct == gt:
                correct_tags += 1
            tokens += 1
        last_c, last_ct, last_g, last_gt = c, ct, g, gt

    if in_correct:
        type_correct[last_ct] += 1
    return type_correct, type_found_correct, type_found_guessed, correct_tags, tokens


def _prf(correct, guessed, gold):
    precision = correct / guessed if guessed else 0.0
    recall = correct / gold if gold else 0.0
    total = precision + recall
    f1 = 2 * precision * recall / total if total else 0.0
    return float(precision), float(recall), float(f1)


def span_scores(y_true, y_pred, *, scheme="conlleval"):
    """Chunk-level precision, recall and F1 as the CoNLL `conlleval` script.

    The counts of `conlleval` (2004-01-26) on the same tags, its scores
    divided by 100; the chunk rules (IOB1, IOB2, IOE, brackets) and why
    IOBES needs `scheme="iobes"`: docs/metrics.md#chunk-scores-span_scores-and-conlleval.

    Args:
        y_true: sequence of sentences, each a sequence of tag strings.
        y_pred: sequence of sentences, each as long as its `y_true` sentence.
        scheme: str. `"conlleval"` (default) reads the tags as they are;
            `"iobes"` translates IOBES tags to IOB2 first.

    Returns:
        A dict with `"precision"`, `"recall"`, `"f1"` (fractions; 0.0 when
        undefined), `"accuracy"` (conlleval's token accuracy),
        `"found_correct"` (chunks in `y_true`), `"found_guessed"` (chunks in
        `y_pred`), `"correct_chunks"`, and `"per_type"`: for every chunk type
        found in either side (sorted), a dict with `"precision"`, `"recall"`,
        `"f1"`, `"found_correct"`, `"found_guessed"` and `"correct"`.
    """
    if scheme not in ("conlleval", "iobes"):
        raise ValueError(
            f"unknown tagging scheme {scheme!r}; expected 'conlleval' or 'iobes'"
        )
    pairs = _sentences(y_true, y_pred)
    if scheme == "iobes":
        pairs = [
            ([_iobes_to_iob2(x) for x in t], [_iobes_to_iob2(x) for x in p])
            for t, p in pairs
        ]
    type_correct, type_found_correct, type_found_guessed, correct_tags, tokens = _conlleval_counts(pairs)
    correct_chunks = sum(type_correct.values())
    found_correct = sum(type_found_correct.values())
    found_guessed = sum(type_found_guessed.values())
    precision, recall, f1 = _prf(correct_chunks, found_guessed, found_correct)
    per_type = {}
    for name in sorted(set(type_found_correct) | set(type_found_guessed)):
        correct = type_correct[name]
        p, r, f = _prf(correct, type_found_guessed[name], type_found_correct[name])
        per_type[name] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "found_correct": type_found_correct[name],
            "found_guessed": type_found_guessed[name],
            "correct": correct,
        }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": float(correct_tags / tokens) if tokens else 0.0,
        "found_correct": found_correct,
        "found_guessed": found_guessed,
        "correct_chunks": correct_chunks,
        "per_type": per_type,
    }


def _span_counts(y_true, y_pred, score, scheme="conlleval"):
    """Per sentence: conlleval's correct, predicted and true chunks (a blank line
    follows every sentence, so they add up to span_scores' totals); `score`:
    "precision", "recall" or "f1" of the totals (`_prf`)."""
    pairs = _sentences(y_true, y_pred)
    if scheme == "iobes":
        pairs = [([_iobes_to_iob2(x) for x in t], [_iobes_to_iob2(x) for x in p]) for t, p in pairs]
    rows = []
    for pair in pairs:
        correct, found_correct, found_guessed, _, _ = _conlleval_counts([pair])
        rows.append((sum(correct.values()), sum(found_guessed.values()), sum(found_correct.values())))
    which = ("precision", "recall", "f1").index(score)
    return ExampleCounts(_rows(rows, 3), lambda totals: _prf(*totals)[which])


def span_f1(y_true, y_pred):
    """Chunk F1 exactly as conlleval computes it, as a fraction (arguments as `span_scores`)."""
    return span_scores(y_true, y_pred)["f1"]


def span_precision(y_true, y_pred):
    """Chunk precision (correct chunks / predicted chunks), as conlleval (arguments as `span_scores`)."""
    return span_scores(y_true, y_pred)["precision"]


def span_recall(y_true, y_pred):
    """Chunk recall (correct chunks / true chunks), as conlleval (arguments as `span_scores`)."""
    return span_scores(y_true, y_pred)["recall"]


def span_f1_iobes(y_true, y_pred):
    """Chunk F1 for IOBES tags (S- is a one-token chunk, E- ends one).

    conlleval itself has no rule for `S-`, or for `B-` right after `E-`, and
    merges such neighbouring chunks of one type; this metric rewrites
    `S-`/`E-` to `B-`/`I-` first (`span_scores(..., scheme="iobes")`), which
    scores IOBES chunks correctly. For IOB/IOB2 tags it equals `span_f1`.
    """
    return span_scores(y_true, y_pred, scheme="iobes")["f1"]


# ---------------------------------------------------------------------------
# Registry.

METRICS = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", accuracy, counts=_accuracy_counts),
        MetricSpec("f1", f1, options=("positive_class",), counts=_f1_counts),
        MetricSpec("macro_f1", macro_f1, counts=_macro_f1_counts),
        MetricSpec("micro_f1", micro_f1, counts=_micro_f1_counts),
        MetricSpec("mcc", mcc, counts=_mcc_counts),
        MetricSpec("pearson", pearson),
        MetricSpec("spearman", spearman),
        MetricSpec("mse", mse, higher_is_better=False),
        MetricSpec("token_accuracy", token_accuracy, counts=_token_accuracy_counts),
        MetricSpec("span_f1", span_f1, counts=lambda t, p: _span_counts(t, p, "f1")),
        MetricSpec("span_precision", span_precision, counts=lambda t, p: _span_counts(t, p, "precision")),
        MetricSpec("span_recall", span_recall, counts=lambda t, p: _span_counts(t, p, "recall")),
        MetricSpec("span_f1_iobes", span_f1_iobes, counts=lambda t, p: _span_counts(t, p, "f1", scheme="iobes")),
    )
}


def compute_metric(name, y_true, y_pred, **options):
    """Computes the metric called `name`.

    Args:
        name: str. A key of `METRICS`.
        y_true: the true labels, in the metric's input convention.
        y_pred: the predictions, in the same convention.
        **options: task settings; those the metric takes (its
            `MetricSpec.options`, e.g. `positive_class` of `f1`) are passed
            to it, others ignored. None means the metric's default.

    Returns:
        The score as a Python float.

    Raises:
        ValueError: `name` is not a known metric (the message lists the known
            ones), or the inputs do not fit the metric.
    """
    spec = METRICS.get(name)
    if spec is None:
        raise ValueError(
            f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}"
        )
    kwargs = {k: v for k, v in options.items() if k in spec.options and v is not None}
    return float(spec.fn(y_true, y_pred, **kwargs))


def example_counts(name, y_true, y_pred, **options):
    """The `ExampleCounts` of metric `name` on these examples, or None for a
    metric that is not a function of counts summed over examples (pearson,
    spearman, mse: recompute those with `compute_metric`).

    `example_counts(name, t, p).score(np.bincount(idx, minlength=len(t)))`
    equals `compute_metric(name, [t[i] for i in idx], [p[i] for i in idx])`
    for any indices `idx`: what a bootstrap needs, without rescoring the labels
    of every resample. Arguments as `compute_metric`.
    """
    spec = METRICS.get(name)
    if spec is None:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    if spec.counts is None:
        return None
    kwargs = {k: v for k, v in options.items() if k in spec.options and v is not None}
    return spec.counts(y_true, y_pred, **kwargs)
