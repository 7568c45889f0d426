"""The statistics of a comparison: delta_m, verdicts and the paired bootstrap.

Pure functions of predictions and metric values (unit-tested with known
answers): `delta_m` (the relative gain over each task's baseline, averaged),
`bootstrap_compare` (two-level percentile bootstrap over seeds and test
examples), `verdict` / `verdict_settled`. docs/compare.md has the formulas.
"""

import math
import zlib

import numpy as np

from keras_mtl.errors import ConfigError
from keras_mtl.metrics import METRICS, compute_metric, example_counts


NEAR_ZERO = 0.05
DEFAULT_REPLICATES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
MC_Z = 1.96  # standard errors of Monte Carlo error a verdict's tail share must clear to be settled
BETTER, WORSE, UNDECIDED = "better", "worse", "not distinguishable"
BOOTSTRAP_METHOD = (
    "two-level percentile bootstrap: per replicate, the seeds of each side are drawn with replacement (as many "
    "as there are; the multi-task and the single-task side independently, the same draw for every task), and "
    "per task one resample of the task's test examples (with replacement, as many as it has), the same for "
    "both models (paired) and the same for tasks that label the same examples; the task's primary metric is "
    "recomputed on the resample for every drawn seed's "
    "predictions and averaged over the drawn seeds; delta_m is recomputed per replicate from the replicate's "
    "per-task values (over the tasks delta_m includes); the interval is the 2.5th..97.5th percentile of the "
    "replicates. The interval thus holds both the test-set sampling and the seed-to-seed spread; with one "
    "seed, the test-set sampling only"
)
BOOTSTRAP_METHOD_FIXED_SEEDS = (
    "paired percentile bootstrap over the test examples: per task and replicate one resample of the task's test "
    "examples, the same for both models and for tasks on the same examples; every seed's metric on it, averaged "
    "over all seeds (the seed-to-seed "
    "spread is not in the interval)"
)
SIGN_CONVENTION = (
    "delta_m% = (100/T) * sum_t (-1)^l_t * (M_t - B_t) / |B_t| over each task's primary metric; "
    "M = multi-task, B = single-task (means over seeds), l_t = 1 where lower is better. "
    "Positive = the multi-task model is better on average."
)



def higher_is_better(metric):
    return METRICS[metric].higher_is_better



def delta_m(mtl, single, higher, near_zero=NEAR_ZERO):
    """The multi-task gain delta_m (%) and the per-task differences.

    Args:
        mtl: dict task -> the multi-task model's score (primary metric).
        single: dict task -> the single-task baseline's score.
        higher: dict task -> bool, whether a larger score is better.
        near_zero: baselines with |B| below this are left out of delta_m.

    Returns:
        dict: `delta_m` (float %, None when no task qualifies), `included`
        and `excluded` (task -> reason), and `per_task`: task -> {`mtl`,
        `single`, `diff` (M - B), `gain` (sign-adjusted diff: > 0 means the
        multi-task model is better), `relative_pct` (100 * gain / |B|, None
        when excluded), `included`}.
    """
    per_task, included, excluded = {}, [], {}
    for task in mtl:
        m, b = mtl[task], single[task]
        if m is None or b is None or not (math.isfinite(m) and math.isfinite(b)):
            excluded[task] = "no score"
            per_task[task] = {"mtl": m, "single": b, "diff": None, "gain": None, "relative_pct": None, "included": False}
            continue
        sign = 1.0 if higher[task] else -1.0
        diff = m - b
        row = {"mtl": m, "single": b, "diff": diff, "gain": sign * diff, "relative_pct": None, "included": False}
        if abs(b) < near_zero:
            excluded[task] = f"baseline |B| = {abs(b):.4f} < {near_zero} (relative change undefined)"
        else:
            row["relative_pct"] = 100.0 * sign * diff / abs(b)
            row["included"] = True
            included.append(task)
        per_task[task] = row
    value = float(np.mean([per_task[t]["relative_pct"] for t in included])) if included else None
    return {"delta_m": value, "included": included, "excluded": excluded, "per_task": per_task}



def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "values": []}
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "values": [float(v) for v in values],
    }



def verdict(low, high):
    """`"better"` when the interval of the sign-adjusted gain lies above 0,
    `"worse"` when below, else `"not distinguishable"` (`"n/a"` without one)."""
    if low is None or high is None:
        return "n/a"
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return UNDECIDED



def verdict_settled(values, level=LEVEL, z=MC_Z):
    """Whether the number of bootstrap replicates settles the verdict on these
    gains (True / False; None without a finite replicate).

    The verdict asks whether the `(1 - level) / 2` tail of the replicates lies
    on one side of 0, i.e. whether the share of replicates at or below 0 (at
    or above 0) is under that tail. The share is estimated from B replicates,
    with Monte Carlo standard error sqrt(tail (1 - tail) / B). The verdict is
    settled when both shares are more than `z` standard errors from the tail;
    otherwise another replicate seed or count could turn it (an interval
    bound within Monte Carlo error of 0)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    tail = (1.0 - float(level)) / 2.0
    margin = float(z) * math.sqrt(tail * (1.0 - tail) / values.size)
    shares = (float(np.mean(values <= 0.0)), float(np.mean(values >= 0.0)))
    return all(abs(share - tail) > margin for share in shares)



def resample_indices(n, replicates, seed, key=""):
    """The `replicates` index resamples of a task with `n` test examples.

    Each is `n` indices drawn uniformly with replacement. The stream depends
    on (`seed`, `key`) only (`key` is the task name), so a task's intervals
    do not change with the other tasks compared.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(str(key).encode("utf-8"))])
    for _ in range(int(replicates)):
        yield rng.integers(0, n, size=n)



def resample_seeds(mtl_seeds, single_seeds, replicates, seed):
    """Per replicate, the seeds (indices) of each side drawn with replacement:
    `replicates` pairs (mtl draw, single draw). The stream depends on `seed`
    only (not on the tasks), and every task of a replicate uses the same draw:
    one multi-task run answers all of its tasks."""
    rng = np.random.default_rng([int(seed), zlib.crc32(b"seeds")])
    return [(rng.integers(0, mtl_seeds, size=mtl_seeds), rng.integers(0, single_seeds, size=single_seeds))
            for _ in range(int(replicates))]



def resample_keys(samples):
    """task -> the key of its example resamples (`resample_indices`): its own
    name, except that tasks labelling the same test examples (equal
    `indices`, e.g. POS and chunking on the same sentences) share one key, so
    a replicate draws the same sentences for all of them and delta_m's
    interval keeps their correlation."""
    groups = {}
    for t, sample in samples.items():
        idx = sample.get("indices")
        if idx is not None and len(idx):
            groups.setdefault(tuple(int(i) for i in idx), []).append(t)
    keys = {t: t for t in samples}
    for idx, names in groups.items():
        if len(names) > 1:
            key = f"examples:{len(idx)}:{zlib.crc32(np.asarray(idx, np.int64).tobytes()):08x}"
            keys.update({t: key for t in names})
    return keys



def _objects(values):
    values = list(values)
    out = np.empty(len(values), dtype=object)  # tuples (tag sequences, label sets) stay one element each
    for i, value in enumerate(values):
        out[i] = value
    return out



def _per_seed(metric, truth, per_seed, idx, options):
    """The metric of every seed's predictions on the examples `idx` (None: all)."""
    t = (truth if idx is None else truth[idx]).tolist()
    return np.asarray([compute_metric(metric, t, (p if idx is None else p[idx]).tolist(), **options) for p in per_seed],
                      np.float64)



def _resample_scorer(metric, truth, per_seed, options):
    """A function: the example weights of a resample (`np.bincount` of its
    indices) -> every seed's metric on it. Metrics of counts that add up over
    examples (`keras_mtl.metrics.example_counts`: accuracy, F1s, MCC, token
    accuracy, chunk scores) sum each seed's per-example counts, computed once,
    and give the value `compute_metric` gives on the resampled labels; the
    others (correlations, MSE) are recomputed on the resample."""
    counted = [example_counts(metric, truth.tolist(), p.tolist(), **options) for p in per_seed]
    if all(c is not None for c in counted):
        return lambda weights, idx: np.asarray([c.score(weights) for c in counted], np.float64)
    return lambda weights, idx: _per_seed(metric, truth, per_seed, idx, options)



def _interval(values, level):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None, None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)



def bootstrap_compare(
    samples, replicates=DEFAULT_REPLICATES, seed=BOOTSTRAP_SEED, level=LEVEL, near_zero=NEAR_ZERO,
    keep_replicates=False, seeds_resampled=True,
):
    """Bootstrap confidence intervals of the per-task gains and of delta_m.

    For every replicate, each side's seeds are drawn with replacement
    (`resample_seeds`; with `seeds_resampled=False` every seed once), and
    for every task one resample of its test examples (indices drawn with
    replacement, `resample_indices`; the same for both sides: paired, and
    the same for tasks on the same examples, `resample_keys`) is
    scored with `keras_mtl.metrics.compute_metric` for each drawn seed's
    multi-task and single-task predictions; each side is the mean over its
    drawn seeds. So the intervals hold the seed-to-seed spread as well as
    the test-set sampling (one seed: the test-set sampling only). The
    gain of a replicate is `sign * (M - S)` (sign -1 where lower is better);
    delta_m of a replicate is `delta_m`'s formula on the replicate's values,
    over the tasks the full-sample delta_m includes. Intervals are the
    percentiles `(1 - level) / 2` and `(1 + level) / 2` of the replicates.

    Args:
        samples: dict task -> {`metric`: name, `truth`: the n true labels,
            `mtl` and `single`: lists (one per seed) of n predictions aligned
            with `truth`, optional `options`: metric options such as
            `positive_class`, optional `indices`: the examples' ids, which
            tasks on the same examples share}.
        replicates: int >= 1, number of bootstrap replicates.
        seed: int, the seed of the resampling.
        level: the interval's coverage (0.95).
        near_zero: delta_m leaves out tasks whose baseline |S| < near_zero.
        keep_replicates: also return the replicate values (key
            `replicates_values`: task -> {`mtl`, `single`, `gain`} lists,
            and `delta_m`: a list).
        seeds_resampled: draw the seeds of each replicate (default); False
            averages every seed in every replicate (test-set sampling only).

    Returns:
        dict: `tasks`: task -> {`metric`, `n`, `higher_is_better`, `mtl`,
        `single`, `gain` (each {`point`, `low`, `high`}), `verdict`,
        `settled` (`verdict_settled`)}; `delta_m`: {`point`, `low`, `high`,
        `verdict`, `settled`, `included`,
        `excluded`, `replicates_used`}; `replicates`, `seed`, `level`,
        `method`.
    """
    if int(replicates) < 1:
        raise ConfigError(f"--bootstrap must be >= 1. Received: {replicates}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"bootstrap level must be in (0, 1). Received: {level}")
    tasks, reps, higher = {}, {}, {}
    draws = None
    keys = resample_keys(samples)
    for t, sample in samples.items():
        metric = sample["metric"]
        higher[t] = higher_is_better(metric)
        sign = 1.0 if higher[t] else -1.0
        options = dict(sample.get("options") or {})
        truth = _objects(sample["truth"])
        n = len(truth)
        mtl = [_objects(p) for p in sample["mtl"]]
        single = [_objects(p) for p in sample["single"]]
        for kind, preds in (("mtl", mtl), ("single", single)):
            if not preds or any(len(p) != n for p in preds):
                raise ValueError(f"bootstrap: task {t!r}: every {kind} prediction list must have the {n} test examples")
        row = {"metric": metric, "n": n, "higher_is_better": higher[t]}
        if n == 0:
            empty = {"point": None, "low": None, "high": None}
            row.update(mtl=dict(empty), single=dict(empty), gain=dict(empty), verdict="n/a", settled=None)
            tasks[t] = row
            continue
        if draws is None:
            every = (np.arange(len(mtl)), np.arange(len(single)))
            draws = (resample_seeds(len(mtl), len(single), replicates, seed) if seeds_resampled
                     else [every] * int(replicates))
        elif any(len(d) != len(p) for d, p in zip(draws[0], (mtl, single))):
            raise ValueError(f"bootstrap: task {t!r}: every task needs the same number of seeds per side")
        pm = float(_per_seed(metric, truth, mtl, None, options).mean())
        ps = float(_per_seed(metric, truth, single, None, options).mean())
        rm, rs = np.empty(int(replicates)), np.empty(int(replicates))
        score_mtl, score_single = (_resample_scorer(metric, truth, preds, options) for preds in (mtl, single))
        for b, idx in enumerate(resample_indices(n, replicates, seed, keys[t])):
            dm, ds = draws[b]
            weights = np.bincount(idx, minlength=n)
            rm[b] = score_mtl(weights, idx)[dm].mean()
            rs[b] = score_single(weights, idx)[ds].mean()
        gains = sign * (rm - rs)
        reps[t] = {"mtl": rm, "single": rs, "gain": gains, "sign": sign}
        for kind, point, values in (("mtl", pm, rm), ("single", ps, rs), ("gain", sign * (pm - ps), gains)):
            low, high = _interval(values, level)
            row[kind] = {"point": point, "low": low, "high": high}
        row["verdict"] = verdict(row["gain"]["low"], row["gain"]["high"])
        row["settled"] = verdict_settled(gains, level)
        tasks[t] = row

    point = delta_m(
        {t: tasks[t]["mtl"]["point"] for t in tasks},
        {t: tasks[t]["single"]["point"] for t in tasks},
        higher,
        near_zero,
    )
    included = point["included"]
    dm_reps = np.full(int(replicates), np.nan)
    if included:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.stack([100.0 * reps[t]["gain"] / np.abs(reps[t]["single"]) for t in included])
        dm_reps = rel.mean(axis=0)  # a replicate with a zero baseline is not finite: left out
    dm_low, dm_high = _interval(dm_reps, level) if included else (None, None)
    out = {
        "method": BOOTSTRAP_METHOD if seeds_resampled else BOOTSTRAP_METHOD_FIXED_SEEDS,
        "seeds_resampled": bool(seeds_resampled),
        "replicates": int(replicates),
        "seed": int(seed),
        "level": float(level),
        "tasks": tasks,
        "delta_m": {
            "point": point["delta_m"],
            "low": dm_low,
            "high": dm_high,
            "verdict": verdict(dm_low, dm_high),
            "settled": verdict_settled(dm_reps, level) if included else None,
            "included": included,
            "excluded": point["excluded"],
            "replicates_used": int(np.isfinite(dm_reps).sum()) if included else 0,
        },
    }
    if keep_replicates:
        out["replicates_values"] = {
            t: {k: v.tolist() for k, v in r.items() if k != "sign"} for t, r in reps.items()
        }
        out["replicates_values"]["delta_m"] = dm_reps.tolist()
    return out
