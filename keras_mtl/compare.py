"""`keras-mtl compare CONFIG`: the multi-task model vs one single-task model per task.

    from keras_mtl.compare import compare
    result = compare("configs/glue_conll.yaml", "runs/glue_conll-compare", seeds=3)

For every seed (default 3) it trains the config's multi-task model and one
single-task model per task at the same per-task budget (default: the task
labels the multi-task run sees), exports them, and writes `compare.json`,
`compare.md` and plots with per-task metrics, parameters, time, serving
throughput and delta_m, each difference with a 95% paired bootstrap
confidence interval over the test examples and a verdict (better / worse /
not distinguishable). The budget rule, the files, the bootstrap and the
delta_m formula: docs/compare.md.
"""

import copy
import functools
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from keras_mtl.config import load_config
from keras_mtl.workdir import RunRecord
from keras_mtl.errors import ConfigError, ModelError

NEAR_ZERO = 0.05
BUDGETS = ("labelled", "drawn")
DEFAULT_SEEDS = 3
DEFAULT_BUDGET = "labelled"
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


# --------------------------------------------------------------------------
# The arithmetic (pure functions, unit-tested)
# --------------------------------------------------------------------------


def higher_is_better(metric):
    from keras_mtl.metrics import METRICS

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


def task_budgets(probabilities, tasks, steps_per_epoch, batch_size, overlap=None):
    """The per-task example and step budgets of the single-task runs.

    Args:
        probabilities: [epochs, tasks] sampling probabilities of the
            multi-task run (run.json `sampling_schedule.probabilities`).
        tasks: the task names, in the column order of `probabilities`.
        steps_per_epoch, batch_size: of the multi-task run.
        overlap: optional dict s -> t -> fraction of task-s training examples
            labelled for task t (the `"labelled"` budget); None counts the
            examples drawn for each task (`"drawn"`).

    Returns:
        dict task -> {`p` (mean probability), `examples`, `steps`, `epochs`,
        `steps_per_epoch`}: the single-task run trains `epochs` x
        `steps_per_epoch` steps (about `steps`).
    """
    probs = np.asarray(probabilities, np.float64).reshape(-1, len(tasks))
    epochs = probs.shape[0]
    drawn = probs.sum(axis=0) * steps_per_epoch * batch_size  # examples drawn per task
    out = {}
    for j, t in enumerate(tasks):
        if overlap is None:
            examples = drawn[j]
        else:
            examples = sum(drawn[i] * overlap.get(s, {}).get(t, 1.0 if s == t else 0.0) for i, s in enumerate(tasks))
        steps = max(1, int(round(examples / batch_size)))
        e = max(1, min(epochs, steps))
        out[t] = {
            "p": float(probs[:, j].mean()),
            "examples": float(examples),
            "steps": steps,
            "epochs": e,
            "steps_per_epoch": max(1, int(round(steps / e))),
        }
    return out


def capped_plan(epochs, steps_per_epoch, max_steps=None):
    """(epochs, steps_per_epoch) with at most `max_steps` in all, keeping the epoch count."""
    if not max_steps or epochs * steps_per_epoch <= max_steps:
        return epochs, steps_per_epoch
    if max_steps < epochs:
        return max_steps, 1
    return epochs, max(1, max_steps // epochs)


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
    from keras_mtl.metrics import compute_metric

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
    from keras_mtl.metrics import example_counts

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
    samples,
    replicates=DEFAULT_REPLICATES,
    seed=BOOTSTRAP_SEED,
    level=LEVEL,
    near_zero=NEAR_ZERO,
    keep_replicates=False,
    seeds_resampled=True,
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


# --------------------------------------------------------------------------
# Configs of the runs
# --------------------------------------------------------------------------



def subset_raw(raw, tasks):
    """The raw config with only `tasks` (a list of names, in config order)."""
    names = [t["name"] for t in raw["tasks"]]
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        what = (f"no task named {', '.join(map(repr, unknown))}" if unknown
                else "no task named (an empty list)" if not tasks else "a task is named twice")
        raise ConfigError(f"--tasks: {what}; the config's tasks are {', '.join(names)}")
    out = copy.deepcopy(raw)
    out["tasks"] = [t for t in out["tasks"] if t["name"] in tasks]
    return out


def _with(raw, overrides):
    from keras_mtl.config import config_from_dict

    return config_from_dict(raw, overrides=overrides)


def _label_overlap(data, task_names):
    """s -> t -> fraction of the task-s training examples that carry a task-t label."""
    out = {}
    for s in task_names:
        rows = [ex for ex in data.splits["train"] if s in ex.labels]
        out[s] = {t: (sum(t in ex.labels for ex in rows) / len(rows) if rows else 0.0) for t in task_names}
    return out


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


# What a finished sub-run leaves that the report needs: its config marker, its
# reports, and its parameter count and test predictions. A records directory
# (`--records`) keeps copies of these small files, so a comparison spread over
# several machines or sessions goes on where it stopped without the models.
RECORD_FILES = ("compare_run.json", "report.json", "run.json", "compare_result.json")
COMPARE_FILES = ("compare.json", "compare.md", "curves.png", "deltas.png")  # test_predictions.json: rebuilt from the runs


DATA_SOURCES = ("train", "dev", "test", "data_dir")  # the data keys of a task that may hold file paths
CONTENT_PREFIX = "sha256:"  # a data file in a marker: its content, wherever it lies


def _relative_to(value, root):
    """`value` with every absolute path in it (a str, or the values of a dict) made relative to `root`."""
    if isinstance(value, dict):
        return {k: _relative_to(v, root) for k, v in value.items()}
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, root)
    return value


@functools.lru_cache(maxsize=256)
def _file_digest(path, size, mtime_ns):
    """sha256 of a file's bytes (cached per path, size and mtime: a marker is
    built for every sub-run, and the data files are the same each time)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return CONTENT_PREFIX + h.hexdigest()


def _data_identity(value, root):
    """What identifies one data source in a marker: a file by its content (the
    same data matches wherever it lies, and a file edited in place does not);
    a directory (a TFDS `data_dir`) or a path that is not there by its path
    relative to `root`. A relative path is one from a saved marker, relative
    to the root it was written for."""
    if isinstance(value, dict):
        return {k: _data_identity(v, root) for k, v in value.items()}
    if not isinstance(value, str) or value.startswith(CONTENT_PREFIX):
        return value
    path = Path(os.path.normpath(value if os.path.isabs(value) else root / value))  # lexically: the inverse of relpath
    try:
        if path.is_file():
            stat = path.stat()
            return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        pass  # unreadable: identified by its path, as a missing file is
    return _relative_to(value, root)


# Config fields added after comparisons were first recorded, with their defaults. A
# marker leaves such a field out while it holds its default, so a sub-run recorded
# before the field existed (which trained as the default does) still matches.
LATER_FIELDS = {
    "tasks.*.role": "target",
}


def _omit_later_defaults(config):
    """`config` (a marker's config dict, changed in place) without the `LATER_FIELDS` at their defaults."""
    for path, default in LATER_FIELDS.items():
        section, _, key = path.rpartition(".")
        if section == "tasks.*":
            holders = [t for t in config.get("tasks") or [] if isinstance(t, dict)]
        else:
            holder = config.get(section) if section else config
            holders = [holder] if isinstance(holder, dict) else []
        for holder in holders:
            if key in holder and holder[key] == default:
                del holder[key]
    return config


def _marker(raw, root):
    """What identifies a sub-run: its config, with every data file replaced by
    a hash of its content and teacher paths made relative to the comparison's
    root. The same comparison in any directory or clone, with the same data
    anywhere, matches; other data does not. A recorded marker with paths
    (older comparisons: absolute, or relative to the root they ran in) is read
    the same way, through the files those paths name from `root`."""
    marker = json.loads(json.dumps({"config": raw}))
    root = Path(root).resolve()
    if isinstance(marker["config"], dict):
        _omit_later_defaults(marker["config"])
    for task in (marker["config"] or {}).get("tasks", []):
        if not isinstance(task, dict):
            continue
        if task.get("teacher"):
            task["teacher"] = _relative_to(task["teacher"], root)
        data = task.get("data")
        if isinstance(data, dict):
            for key in DATA_SOURCES:
                if key in data:
                    data[key] = _data_identity(data[key], root)
    return marker


def examples_fingerprint(examples):
    """A hash of the test examples (texts and labels, in order): predictions
    recorded against other examples are not reused."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, e.text_pair, sorted(e.labels.items())], default=list).encode("utf-8"))
    return f"{len(examples)}:{h.hexdigest()[:16]}"


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished(path, marker, root, need_model=False):
    """True when `path` holds a finished sub-run of this exact config: its records,
    and its model where the caller needs it (a teacher, a serving measurement)."""
    if not all((path / n).exists() for n in RECORD_FILES[:3]):
        return False
    if need_model and not (path / "model.keras").exists():
        return False
    if not (path / "model.keras").exists() and not (path / "compare_result.json").exists():
        return False
    saved = _read_json(path / "compare_run.json")
    return isinstance(saved, dict) and _marker(saved.get("config"), root) == marker and _same_policy(path, marker)


def _same_policy(path, marker):
    """Whether the run in `path` trained under the dtype policy its config gives
    here: `train.precision: auto` resolves per machine (bfloat16 on one,
    float32 on another), and a comparison continued elsewhere must not mix
    the two. A run.json without `precision` is from before it was recorded,
    when every run trained in float32."""
    from keras_mtl.precision import resolve_precision

    train_section = ((marker or {}).get("config") or {}).get("train") or {}
    if "precision" not in train_section:
        return True  # a hand-made marker: nothing to check
    info = _read_json(path / "run.json") or {}
    return (info.get("precision") or "float32") == resolve_precision(train_section["precision"])[0]


def _as_prediction(value):
    return tuple(value) if isinstance(value, list) else value  # tag sequences and label sets are tuples


def _recorded_result(path, fingerprint):
    """(params, predictions) from compare_result.json, or None when it is missing
    or was computed on other test examples."""
    saved = _read_json(path / "compare_result.json")
    if not isinstance(saved, dict) or saved.get("test") != fingerprint:
        return None
    try:
        predictions = {t: {int(i): _as_prediction(v) for i, v in pairs} for t, pairs in saved["predictions"].items()}
        return int(saved["params"]), predictions
    except (KeyError, TypeError, ValueError, AttributeError):  # a damaged record: the run is not reused from it
        return None


def _train_run(loaded, path, verbose, reuse, log, test_examples=None, root=None, records=None, need_model=False):
    """Train one run into `path` (or reuse a finished identical one, from `path`
    or from the `records` directory); its results, with its parameter count and
    its predictions on `test_examples` (None without them: no predictions,
    and a finished run needs its model to be reused). `root`: the comparison's
    directory (default: the parent of `path`)."""
    from keras_mtl.train import train
    from keras_mtl.workdir import write_json

    root = Path(root) if root is not None else path.parent
    marker = _marker(loaded.raw, root)
    if test_examples is None:
        need_model = True  # the parameter count comes from the model
    fingerprint = examples_fingerprint(test_examples) if test_examples is not None else None
    rel = path.relative_to(root)
    finished = reuse and _finished(path, marker, root, need_model)
    if reuse and records is not None and not finished and not need_model and _finished(records / rel, marker, root):
        path.mkdir(parents=True, exist_ok=True)  # a run finished in another session: its records stand in for it
        for name in RECORD_FILES:
            shutil.copy2(records / rel / name, path / name)
        finished = True
    recorded = None
    if finished and fingerprint is not None:
        recorded = _recorded_result(path, fingerprint)
        finished = recorded is not None or (path / "model.keras").exists()
        log(f"  reusing {path}" if finished else
            f"  {path}: recorded on other test examples and without its model: retraining")
    elif finished:
        log(f"  reusing {path}")
    if finished:
        write_json(path / "compare_run.json", marker)  # the portable form (older comparisons wrote paths)
    if not finished:
        import keras

        keras.backend.clear_session()
        for name in RECORD_FILES:
            (path / name).unlink(missing_ok=True)
        started = time.time()
        train(loaded, workdir=path, verbose=verbose)
        log(f"  trained {path} in {time.time() - started:.0f} s")
        write_json(path / "compare_run.json", marker)
    if recorded is None and test_examples is None:
        recorded = _params_and_predictions(path, None)
    elif recorded is None:
        recorded = _params_and_predictions(path, test_examples)
        write_json(path / "compare_result.json", {
            "params": recorded[0],
            "test": fingerprint,
            "predictions": {t: [[i, p] for i, p in sorted(got.items())] for t, got in recorded[1].items()},
        }, compact=True)
    if records is not None:
        (records / rel).mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (path / name).exists():  # compare_result.json only with test examples
                shutil.copy2(path / name, records / rel / name)
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    info = RunRecord.read(path / "run.json")
    params, predictions = recorded
    return {"report": report, "info": info, "params": params, "predictions": predictions,
            "has_model": (path / "model.keras").exists(), "marker": marker}


def _params_and_predictions(path, test_examples):
    """The parameter count of the run in `path`, and its per-example predictions
    on `test_examples` (the multi-task config's test split, so every run of a
    comparison is scored on the same indices): {task: {index: prediction}}."""
    import keras

    from keras_mtl.data.pipeline import encode_split
    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.evaluate import predict_split
    from keras_mtl.workdir import load_run

    keras.backend.clear_session()
    run = load_run(path)
    model = run.load_model()
    if test_examples is None:
        return int(model.count_params()), None
    encoder = make_encoder(run.vocabulary, run.config.model)
    encoded = encode_split(test_examples, encoder, run.config.tasks, run.classes)
    predicted = predict_split(model, encoded, run.config, run.classes, encoder.pad_id) if len(test_examples) else {}
    predictions = {t: dict(zip((int(i) for i in idx), preds)) for t, (idx, preds) in predicted.items()}
    return int(model.count_params()), predictions


def _samples(runs, names, primary, tasks_cfg, test_examples):
    """The `bootstrap_compare` samples: per task the true labels of its test
    examples and every seed's multi-task and single-task predictions, on the
    same (sorted) example indices."""
    out = {}
    for t in names:
        idx = sorted(runs[0]["mtl"]["predictions"].get(t, {}))
        mtl, single = [], []
        for s in runs:
            for kind, side in (("mtl", mtl), (t, single)):
                got = runs[s][kind]["predictions"].get(t, {})
                if sorted(got) != idx:
                    raise ModelError(
                        f"compare: task {t!r}: the {'multi' if kind == 'mtl' else 'single'}-task run of seed {s} "
                        f"predicted {len(got)} test examples, the multi-task run of seed 0 {len(idx)}"
                    )
                side.append([got[i] for i in idx])
        out[t] = {
            "metric": primary[t],
            "truth": [test_examples[i].labels[t] for i in idx],
            "indices": idx,
            "mtl": mtl,
            "single": single,
            "options": {"positive_class": tasks_cfg[t].positive_class},
        }
    return out


def serving_calls(version_dir):
    """[(signature name, its input names)]: the calls that answer every task of
    an export: `serving_default`, and each task it does not answer (a pair
    task of a model that also has single-text tasks) through its own signature."""
    from keras_mtl.serving.layout import read_metadata, resolve_version_dir, signature_inputs

    meta = read_metadata(resolve_version_dir(version_dir)) or {}
    inputs = signature_inputs(meta)
    tasks = list(meta.get("tasks") or {})
    answered = set(meta.get("serving_default") or tasks)
    return [("serving_default", inputs["serving_default"])] + [(t, inputs[t]) for t in tasks if t not in answered]


def serving_throughput(version_dirs, texts, batch_size=32, repeats=5, pairs=None):
    """{key: (inputs/s, seconds)}: each SavedModel answering every one of its
    tasks for the same inputs (`serving_calls`): a signature that takes
    `text` gets `texts`, one that takes `text` and `text_pair` gets `pairs`
    ((text, text_pair) tuples, as many as `texts`).

    Every model is warmed up, then timed over all inputs (batches of
    `batch_size`) in `repeats` interleaved rounds (A B C, A B C, ...) so
    load changes on a shared machine hit every model alike; best round.
    """
    import tensorflow as tf

    from keras_mtl.serving.predict import load_signature

    def batches(names):
        if list(names) == ["text"]:
            return [{"text": tf.constant(texts[i : i + batch_size], tf.string)} for i in range(0, len(texts), batch_size)]
        if not pairs:
            raise ValueError("serving_throughput: a signature takes text pairs; pass `pairs`")
        return [
            {"text": tf.constant([a for a, _ in pairs[i : i + batch_size]], tf.string),
             "text_pair": tf.constant([b for _, b in pairs[i : i + batch_size]], tf.string)}
            for i in range(0, len(pairs), batch_size)
        ]

    plans = {}
    for key, path in version_dirs.items():
        plan = []
        for name, names in serving_calls(path):
            loaded, fn, _ = load_signature(path, None if name == "serving_default" else name)
            feeds = batches(names)
            for feed in feeds[:2]:
                fn(**feed)  # warm-up
            plan.append((loaded, fn, feeds))
        plans[key] = plan
    best = {key: float("inf") for key in plans}
    for _ in range(repeats):
        for key, plan in plans.items():
            start = time.perf_counter()
            for _, fn, feeds in plan:
                for feed in feeds:
                    out = fn(**feed)
                _ = {k: v.numpy() for k, v in out.items()}
            best[key] = min(best[key], time.perf_counter() - start)
    return {key: (len(texts) / secs, secs) for key, secs in best.items()}


def _fixed_inputs(data, n):
    """`n` fixed test texts, and `n` fixed test pairs (empty without pair tasks),
    repeated when the test split has fewer."""
    rng = np.random.default_rng(0)

    def pick(values):
        values = sorted(values)
        if not values:
            return []
        picked = [values[i] for i in rng.permutation(len(values))[:n]]
        while len(picked) < n:  # few test texts: repeat them
            picked += picked[: n - len(picked)]
        return picked

    examples = data.splits["test"] or data.splits["train"]
    texts = pick({ex.text for ex in examples})
    pairs = pick({ex.texts for ex in examples if ex.text_pair is not None})
    return texts, pairs


def _scores(runs, model, names, primary, higher, cfg, test_examples, bootstrap, log):
    """Per-task scores of `runs[seed][model]` against the single-task runs, delta-m, and their
    paired-bootstrap intervals (`bootstrap_compare`)."""
    metrics = {}
    for t in names:
        task_cfg = cfg.task(t)
        row = {"metric": primary[t], "higher_is_better": higher[t], "all": {}}
        for m in task_cfg.metrics:
            row["all"][m] = {
                "mtl": mean_std([runs[s][model]["report"]["tasks"].get(t, {}).get(m) for s in runs]),
                "single": mean_std([runs[s][t]["report"]["tasks"].get(t, {}).get(m) for s in runs]),
            }
        row["mtl"] = row["all"][primary[t]]["mtl"]
        row["single"] = row["all"][primary[t]]["single"]
        metrics[t] = row
    dm = delta_m(
        {t: metrics[t]["mtl"]["mean"] for t in names},
        {t: metrics[t]["single"]["mean"] for t in names},
        higher,
    )
    per_seed = [
        delta_m(
            {t: runs[s][model]["report"]["tasks"].get(t, {}).get(primary[t]) for t in names},
            {t: runs[s][t]["report"]["tasks"].get(t, {}).get(primary[t]) for t in names},
            higher,
        )["delta_m"]
        for s in runs
    ]
    started = time.time()
    view = {s: {**runs[s], "mtl": runs[s][model]} for s in runs}
    samples = _samples(view, names, primary, {t: cfg.task(t) for t in names}, test_examples)
    log(f"bootstrap ({model}): {int(bootstrap)} replicates over {len(runs)} seed(s) and "
        f"{sum(len(x['truth']) for x in samples.values())} test labels")
    boot = bootstrap_compare(samples, replicates=int(bootstrap), seed=BOOTSTRAP_SEED, level=LEVEL)
    for t in names:
        metrics[t]["ci"] = boot["tasks"][t]
        metrics[t]["verdict"] = boot["tasks"][t]["verdict"]
    unsettled = _unsettled_names(boot["tasks"], boot["delta_m"])
    if unsettled:
        log(f"bootstrap ({model}): the verdicts of {', '.join(unsettled)} are not settled by {int(bootstrap)} "
            "replicates (a bound within Monte Carlo error of 0): rerun with a larger --bootstrap")
    return {"metrics": metrics, "dm": dm, "per_seed": per_seed, "boot": boot,
            "seconds": round(time.time() - started, 1), "samples": samples}


def compare(
    config,
    workdir,
    seeds=DEFAULT_SEEDS,
    tasks=None,
    max_steps=None,
    overrides=(),
    budget=DEFAULT_BUDGET,
    bootstrap=DEFAULT_REPLICATES,
    serving_texts=256,
    serving_batch=32,
    verbose=0,
    reuse=True,
    log=print,
    distill=False,
    records=None,
):
    """Train and compare the multi-task model with single-task baselines.

    Args:
        config: a config path, `LoadedConfig` or dict.
        workdir: output directory.
        seeds: int. Seeds 0..seeds-1 (each run gets `--set seed=S`);
            default 3.
        tasks: optional list (or comma string) of task names to compare;
            the multi-task run then uses only these tasks.
        max_steps: cap on the multi-task run's total steps (the epoch count
            is kept; steps per epoch shrink). The single-task budgets follow.
        overrides: `KEY=VALUE` strings applied to the config first.
        budget: `"labelled"` (default: task-t labels the multi-task run
            sees, counting examples shared by tasks) or `"drawn"` (examples
            drawn for the task).
        bootstrap: int >= 1, the number of paired bootstrap replicates of
            the 95% confidence intervals (`bootstrap_compare`).
        serving_texts: number of fixed test texts (and text pairs, for pair
            tasks) timed through each
            exported SavedModel (0 skips the serving comparison).
        serving_batch: batch size of the serving measurement.
        verbose: passed to `train` (0 silent, 1 progress).
        reuse: keep a sub-run whose work dir holds a finished run of the
            identical config (resume an interrupted comparison).
        log: callable for progress lines.
        distill: also train, per seed, the multi-task model distilled from
            that seed's single-task runs (every task's `teacher`, with
            teacher annealing: keras_mtl.distill) on the multi-task budget,
            and compare it with the baselines the same way
            (`result["distilled"]`).
        records: optional directory that keeps, for every finished
            sub-run, the small files the report needs (`RECORD_FILES`: its
            config marker, reports, parameter count and test predictions;
            no model), and the report itself. A sub-run recorded there with
            the identical config is not trained again, so a comparison too
            long for one sitting goes on in another work dir or on another
            machine; the serving measurement needs one seed's models in
            `workdir`, and a distilled run still to train needs its
            teachers' models (retrained when only their records exist).

    Returns:
        dict: the content of `compare.json`.
    """
    from keras_mtl.data.load import load_task_data  # the plan needs the example count only: no vocabulary
    from keras_mtl.model import sees_task
    from keras_mtl.prepare import plan_steps

    if budget not in BUDGETS:
        raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}. Received: budget={budget!r}")
    if int(seeds) < 1:
        raise ConfigError(f"--seeds must be >= 1. Received: {seeds}")
    if int(bootstrap) < 1:
        raise ConfigError(f"--bootstrap must be >= 1. Received: {bootstrap}")
    if max_steps is not None and int(max_steps) < 1:
        raise ConfigError(f"--max-steps must be >= 1. Received: {max_steps}")
    if records is not None and Path(records).exists() and not Path(records).is_dir():
        raise ConfigError(f"--records must be a directory; {records} is a file")
    root = Path(workdir)
    started = time.time()
    loaded = load_config(config, overrides)
    raw = loaded.raw
    if tasks is not None:
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        raw = subset_raw(raw, list(tasks))
    base = _with(raw, ())
    root.mkdir(parents=True, exist_ok=True)  # after the checks: a bad --tasks leaves nothing behind
    cfg = base.config
    names = cfg.target_task_names  # compared: the targets; auxiliary tasks train in the multi-task run only
    auxiliary = cfg.auxiliary_task_names
    primary = {t.name: t.primary_metric for t in cfg.tasks}
    higher = {t: higher_is_better(m) for t, m in primary.items()}

    # === The multi-task plan (max_steps keeps the epoch count) ===
    data = load_task_data(base)
    epochs, spe = capped_plan(*plan_steps(cfg.train, len(data.splits["train"])), max_steps)
    mtl_overrides = [f"train.epochs={epochs}", f"train.steps_per_epoch={spe}"]
    # With task conditioning or adapters an example trains only the task it was
    # drawn for (one pass per task), so the labels seen are the examples drawn.
    overlap = _label_overlap(data, cfg.task_names) if budget == "labelled" and not sees_task(cfg.model) else None
    texts, pairs = _fixed_inputs(data, serving_texts) if serving_texts else ([], [])
    test_examples = data.splits["test"]  # every run predicts these: paired samples
    del data

    runs = {}  # seed -> {"mtl": result, task: result}
    budgets = None
    records = Path(records) if records else None

    def run(raw_config, overrides, path, need_model=False):
        return _train_run(_with(raw_config, overrides), path, verbose, reuse, log, test_examples, root, records, need_model)

    for seed in range(int(seeds)):
        sdir = root / f"seed{seed}"
        log(f"seed {seed}: multi-task ({', '.join(cfg.task_names)}), {epochs} x {spe} steps")
        runs[seed] = {"mtl": run(raw, [f"seed={seed}", *mtl_overrides], sdir / "mtl")}
        info = runs[seed]["mtl"]["info"]
        if budgets is None:
            sched = info.sampling_schedule
            budgets = task_budgets(sched["probabilities"], sched["tasks"], info.steps_per_epoch, cfg.train.batch_size, overlap)
        teachers_needed = False
        if distill:  # the multi-task model again, each task learning from this seed's single-task run
            taught = copy.deepcopy(raw)
            for task in taught["tasks"]:
                if task["name"] in names:  # auxiliary tasks have no single-task run: they keep their gold labels
                    task["teacher"] = str((sdir / f"single-{task['name']}").resolve())
            student_overrides = [f"seed={seed}", *mtl_overrides]
            student = _marker(_with(taught, student_overrides).raw, root)
            homes = [sdir] + ([records / sdir.relative_to(root)] if records is not None else [])
            # the teachers' models are needed while their student is still to train
            teachers_needed = not (reuse and any(_finished(h / "distilled", student, root) for h in homes))
        for t in names:
            b = budgets[t]
            log(f"seed {seed}: single-task {t}, {b['epochs']} x {b['steps_per_epoch']} steps")
            single_raw = subset_raw(raw, [t])
            single_raw["name"] = f"{cfg.name}-{t}"[:64]
            over = [f"seed={seed}", f"train.epochs={b['epochs']}", f"train.steps_per_epoch={b['steps_per_epoch']}"]
            runs[seed][t] = run(single_raw, over, sdir / f"single-{t}", need_model=teachers_needed)
        if distill:
            log(f"seed {seed}: multi-task distilled from the single-task runs, {epochs} x {spe} steps")
            runs[seed]["distilled"] = run(taught, student_overrides, sdir / "distilled")

    # === Metrics and confidence intervals (paired bootstrap over the test examples) ===
    scored = _scores(runs, "mtl", names, primary, higher, cfg, test_examples, bootstrap, log)
    metrics, dm, dm_per_seed, boot, boot_seconds, samples = (
        scored["metrics"], scored["dm"], scored["per_seed"], scored["boot"], scored["seconds"], scored["samples"]
    )
    _write_predictions(root / "test_predictions.json", samples, list(runs))
    distilled = None
    if distill:
        d = _scores(runs, "distilled", names, primary, higher, cfg, test_examples, bootstrap, log)
        distilled = {
            "metrics": d["metrics"],
            "delta_m": {"value_pct": d["dm"]["delta_m"], "per_seed_pct": d["per_seed"], "included": d["dm"]["included"],
                        "excluded": d["dm"]["excluded"], "per_task": d["dm"]["per_task"], "ci": d["boot"]["delta_m"],
                        "verdict": d["boot"]["delta_m"]["verdict"]},
            "fit_seconds": mean_std([runs[s]["distilled"]["report"]["seconds"]["fit"] for s in runs]),
        }

    # === Cost ===
    params = {"mtl": runs[0]["mtl"]["params"], "single": {t: runs[0][t]["params"] for t in names}}
    params["single_total"] = sum(params["single"].values())
    params["ratio_mtl_to_singles"] = params["mtl"] / params["single_total"]
    fit = {
        "mtl": mean_std([runs[s]["mtl"]["report"]["seconds"]["fit"] for s in runs]),
        "single": {t: mean_std([runs[s][t]["report"]["seconds"]["fit"] for s in runs]) for t in names},
    }
    fit["single_total"] = sum(fit["single"][t]["mean"] for t in names)
    steps = {
        "mtl": epochs * spe,
        "single": {t: runs[0][t]["info"].epochs * runs[0][t]["info"].steps_per_epoch for t in names},
    }
    auxiliary_cost = None
    if auxiliary:  # what the auxiliary tasks added to the multi-task run: their share of its draws
        share = sum(budgets[t]["p"] for t in auxiliary)
        auxiliary_cost = {
            "tasks": auxiliary,
            "share_of_draws": share,
            "steps": share * epochs * spe,
            "fit_seconds": share * fit["mtl"]["mean"] if fit["mtl"]["mean"] is not None else None,
        }

    serving = None
    if texts:
        # the first seed whose models are all here (a run taken from --records has none)
        served = next((s for s in runs if all(runs[s][k]["has_model"] for k in ["mtl", *names])), None)
        if served is None:
            serving = earlier_serving([root, *([records] if records is not None else [])], runs, names,
                                      len(texts), serving_batch)
            if serving is None:
                log("serving: skipped: no seed has all its models in the work dir (runs taken from --records have none)")
            else:
                log(f"serving: no seed has its models here; the table is the measurement of {serving['measured_at']} "
                    f"on the same models of seed {serving['seed']} (their records match)")
        else:
            log(f"serving: exporting seed {served}'s models and timing {len(texts)} texts at batch {serving_batch}")
            serving = _serving(root / f"seed{served}", names, texts, pairs, serving_batch,
                               mtl_tasks=names if auxiliary else None)
            serving.update(seed=served, models=models_digest(runs[served], names),
                           measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    curves = _curves(runs, names, primary)
    result = {
        "name": cfg.name,
        "tasks": names,
        **({"auxiliary_tasks": auxiliary_cost} if auxiliary_cost else {}),
        "seeds": list(runs),
        "backend": runs[0]["mtl"]["report"].get("backend"),
        "split": "test",
        "budget": {
            "mode": budget,
            "per_task": budgets,
            "labels_are_examples": budget == "labelled" and overlap is None,  # task conditioning: one task a pass
        },
        "mtl_plan": {"epochs": epochs, "steps_per_epoch": spe, "total_steps": epochs * spe, "batch_size": cfg.train.batch_size},
        "max_steps": max_steps,
        "overrides": list(overrides),
        "steps": steps,
        "metrics": metrics,
        "delta_m": {
            "value_pct": dm["delta_m"],
            "per_seed_pct": dm_per_seed,
            "convention": SIGN_CONVENTION,
            "near_zero_threshold": NEAR_ZERO,
            "included": dm["included"],
            "excluded": dm["excluded"],
            "per_task": dm["per_task"],
            "ci": boot["delta_m"],
            "verdict": boot["delta_m"]["verdict"],
        },
        "bootstrap": {
            "method": boot["method"],
            "seeds_resampled": boot["seeds_resampled"],
            "replicates": boot["replicates"],
            "seed": boot["seed"],
            "level": boot["level"],
            "seconds": boot_seconds,
            "predictions": "test_predictions.json",
        },
        "params": params,
        "fit_seconds": fit,
        "distilled": distilled,  # with distill: the distilled multi-task model against the same baselines
        "serving": serving,
        "curves": curves,
        "seconds": round(time.time() - started, 1),
    }
    plots = write_plots(result, root)
    result["plots"] = [p.name for p in plots]
    from keras_mtl.workdir import write_json

    write_json(root / "compare.json", result)
    (root / "compare.md").write_text(compare_markdown(result), encoding="utf-8")
    if records is not None:
        for name in COMPARE_FILES:
            if (root / name).exists():
                shutil.copy2(root / name, records / name)
    log(f"wrote {root / 'compare.json'}, {root / 'compare.md'}, {', '.join(p.name for p in plots)}")
    return result


def _write_predictions(path, samples, seeds):
    """test_predictions.json: the paired samples the intervals were computed from."""
    from keras_mtl.workdir import write_json

    write_json(
        path,
        {
            "split": "test",
            "seeds": seeds,
            "tasks": {
                t: {
                    "metric": x["metric"],
                    "indices": x["indices"],
                    "truth": x["truth"],
                    "mtl": x["mtl"],
                    "single": x["single"],
                    "options": x["options"],
                }
                for t, x in samples.items()
            },
        },
    )


def models_digest(seed_runs, names):
    """What identifies the models a serving measurement timed: a hash of the
    markers of one seed's multi-task and single-task runs (their configs, with
    data files by content)."""
    markers = [seed_runs[k].get("marker") for k in ["mtl", *names]]
    if any(m is None for m in markers):
        return None
    return hashlib.sha256(json.dumps(markers, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def earlier_serving(dirs, runs, names, texts, batch):
    """The serving measurement of an earlier invocation, from the first of
    `dirs` whose `compare.json` has one that timed the same models (the same
    seed, and `models_digest` of its runs equal to this invocation's: a run
    retrained since, or other data, does not match) on as many inputs at the
    same batch; None if none does. A comparison rebuilt from `--records` has no
    models to time, and keeps the table this way instead of losing it."""
    for d in dirs:
        saved = _read_json(Path(d) / "compare.json")
        s = saved.get("serving") if isinstance(saved, dict) else None
        if not isinstance(s, dict) or s.get("seed") not in runs or not s.get("models"):
            continue
        if s.get("texts") != texts or s.get("batch_size") != batch or set(s.get("single") or ()) != set(names):
            continue
        if s["models"] == models_digest(runs[s["seed"]], names):
            return {**s, "reused": True}
    return None


def _serving(seed_dir, names, texts, pairs, batch, mtl_tasks=None):
    """Export seed_dir's multi-task run (its `mtl_tasks` heads; default all)
    and its single-task runs, and time them answering every task in `names`."""
    from keras_mtl.export import export

    out = {"batch_size": batch, "texts": len(texts), "pairs": bool(pairs), "single": {}}
    exported = {}
    for key in ["mtl", *names]:
        path = seed_dir / ("mtl" if key == "mtl" else f"single-{key}")
        base = seed_dir.parent / "export" / ("mtl" if key == "mtl" else f"single-{key}")
        shutil.rmtree(base, ignore_errors=True)
        exported[key] = export(path, out=base, warmup=False, tasks=mtl_tasks if key == "mtl" else None)
    timed = serving_throughput(exported, texts, batch, pairs=pairs)
    tps, secs = timed["mtl"]
    out["mtl"] = {"texts_per_s": tps, "seconds": secs, "tasks_answered": len(names),
                  "calls": len(serving_calls(exported["mtl"]))}
    total = 0.0
    for t in names:
        tps_t, secs_t = timed[t]
        out["single"][t] = {"texts_per_s": tps_t, "seconds": secs_t, "tasks_answered": 1}
        total += secs_t
    out["singles_all_tasks_texts_per_s"] = len(texts) / total
    out["speedup"] = total / secs  # time of T single models / time of the one MTL model, same texts, all tasks
    return out


def _curves(runs, names, primary):
    """task -> {"epochs": [...], "mtl": mean per epoch, "single": mean per epoch} from run.json history."""
    out = {}
    for t in names:
        key = f"dev_{t}_{primary[t]}"
        entry = {}
        for kind in ("mtl", "single"):
            per_seed = []
            for s in runs:
                hist = runs[s]["mtl" if kind == "mtl" else t]["info"].history
                per_seed.append([(int(r["epoch"]), r[key]) for r in hist if key in r])
            epochs = sorted({e for seq in per_seed for e, _ in seq})
            means, stds = [], []
            for e in epochs:
                vals = [v for seq in per_seed for ep, v in seq if ep == e]
                means.append(float(np.mean(vals)))
                stds.append(float(np.std(vals)) if len(vals) > 1 else 0.0)
            entry[kind] = {"epochs": epochs, "mean": means, "std": stds}
        out[t] = entry
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _scale(metric):
    return 1.0 if metric == "mse" else 100.0


def _fmt(stat, metric):
    if stat["mean"] is None:
        return "n/a"
    k = _scale(metric)
    digits = 4 if metric == "mse" else 2
    text = f"{k * stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {k * stat['std']:.{digits}f}"
    return text


def _ci(low, high, k=1.0, digits=2, signed=True):
    if low is None or high is None:
        return "n/a"
    f = "+" if signed else ""
    return f"[{k * low:{f}.{digits}f}, {k * high:{f}.{digits}f}]"


BUDGET_TEXT = {
    "labelled": "task-t labels the multi-task run sees, counting examples shared by tasks",
    "drawn": "examples drawn for the task: p_t x batch x total steps",
}


def _verdict(ci, fallback="n/a"):
    """A verdict cell: the interval's verdict, marked where the replicate count does not settle it."""
    if not ci:
        return fallback
    return ci.get("verdict", fallback) + (" (unsettled)" if ci.get("settled") is False else "")


def _unsettled_names(task_cis, dm_ci, label=""):
    """The names of the verdicts (tasks, then `Δm`) whose interval the replicate count does not settle."""
    names = [f"{label}{t}" for t, ci in task_cis.items() if (ci or {}).get("settled") is False]
    return names + ([f"{label}Δm"] if (dm_ci or {}).get("settled") is False else [])


def _unsettled(result):
    """`_unsettled_names` of a report: the multi-task model's, then the distilled one's."""
    found = []
    for label, part in (("", result), ("distilled ", result.get("distilled"))):
        if part:
            found += _unsettled_names({t: row.get("ci") for t, row in part["metrics"].items()},
                                      part["delta_m"].get("ci"), label)
    return found


def compare_markdown(result):
    names = result["tasks"]
    n = len(result["seeds"])
    dm = result["delta_m"]
    boot = result.get("bootstrap")
    pct = f"{100 * boot['level']:g}%" if boot else "95%"
    lines = [
        f"# {result['name']}: multi-task vs single-task",
        "",
        f"Test split; mean ± std over {n} seed{'s' if n > 1 else ''} ({', '.join(map(str, result['seeds']))})"
        + ("" if n > 1 else " (one seed: no std)")
        + f"; per-task budget `{result['budget']['mode']}` ({BUDGET_TEXT[result['budget']['mode']]})"
        + f"; backend {result['backend']}. Scores in % (mse raw).",
    ]
    if boot:
        lines += [
            "",
            f"{pct} CI: " + (
                "two-level bootstrap: seeds and test examples "
                if boot.get("seeds_resampled") and n > 1 else "paired bootstrap over the test examples ")
            + f"({boot['replicates']} replicates, seed {boot['seed']}; "
            + ("each replicate draws each side's seeds with replacement, and one resample of a task's test examples, "
               "the same for both models; the metric averaged over the drawn seeds: the interval holds the seed spread "
               "and the test-set sampling). " if boot.get("seeds_resampled") and n > 1 else
               "the same resample for both models, the metric averaged over the seeds within each replicate). ")
            + f"Verdict: `{BETTER}` / `{WORSE}` when the interval of the gain lies above / below 0, "
            f"else `{UNDECIDED}`.",
        ]
    lines += [
        "",
        f"| task | metric | multi-task | single-task | Δ abs (points) | {pct} CI of Δ abs | verdict | Δ rel % | in Δm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in names:
        row = result["metrics"][t]
        pt = dm["per_task"][t]
        m = row["metric"]
        k = _scale(m)
        digits = 4 if m == "mse" else 2
        arrow = "" if row["higher_is_better"] else " (lower is better)"
        gain = "n/a" if pt["gain"] is None else f"{k * pt['gain']:+.{digits}f}"
        rel = "n/a" if pt["relative_pct"] is None else f"{pt['relative_pct']:+.2f}"
        ci = row.get("ci")
        interval = _ci(ci["gain"]["low"], ci["gain"]["high"], k, digits) if ci else "n/a"
        lines.append(
            f"| {t} | {m}{arrow} | {_fmt(row['mtl'], m)} | {_fmt(row['single'], m)} | {gain} | {interval} | "
            f"{_verdict(ci, row.get('verdict', 'n/a'))} | {rel} | {'yes' if pt['included'] else 'no'} |"
        )
    value = dm["value_pct"]
    dci = dm.get("ci")
    lines += [
        "",
        (
            f"**Δm = {value:+.2f}%**"
            + (f", {pct} CI {_ci(dci['low'], dci['high'])}%: **{_verdict(dci)}**," if dci and dci["low"] is not None else "")
            + f" over {len(dm['included'])} of {len(names)} tasks"
        )
        if value is not None
        else "**Δm = n/a** (no task has a usable baseline)",
        "",
        f"Sign convention: {dm['convention']} Δ abs and Δ rel are sign-adjusted the same way "
        "(> 0: the multi-task model is better).",
    ]
    unsettled = _unsettled(result) if boot else []
    if unsettled:
        lines += [""]
        lines.append(
            f"**Unsettled verdicts** ({', '.join(unsettled)}): the share of replicates on the far side of 0 is within "
            f"{MC_Z:g} Monte Carlo standard errors of the {100 * (1 - boot['level']) / 2:g}% tail at "
            f"{boot['replicates']} replicates, so another replicate seed or count could turn the verdict: rerun "
            "with a larger `--bootstrap` (e.g. 10 times as many; the runs are reused).")
    if n > 1:
        lines += [""] if unsettled else []
        lines.append("Δm per seed: " + ", ".join(f"{v:+.2f}%" if v is not None else "n/a" for v in dm["per_seed_pct"]) + ".")
    for t, reason in dm["excluded"].items():
        lines.append(f"- `{t}` is left out of Δm: {reason}; its absolute difference is in the table.")
    others = [
        (t, m, v) for t in names for m, v in result["metrics"][t]["all"].items() if m != result["metrics"][t]["metric"]
    ]
    if boot:
        lines += [
            "",
            f"## Confidence intervals ({pct}, primary metric)",
            "",
            f"| task | test examples | multi-task | {pct} CI | single-task | {pct} CI | Δ abs | {pct} CI | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in names:
            ci = result["metrics"][t].get("ci") or {}
            m = result["metrics"][t]["metric"]
            k, digits = _scale(m), (4 if m == "mse" else 2)

            def point(x, signed=False):
                return "n/a" if x["point"] is None else f"{k * x['point']:{'+' if signed else ''}.{digits}f}"

            if not ci or ci["mtl"]["point"] is None:
                lines.append(f"| {t} | {ci.get('n', 0)} | n/a | | n/a | | n/a | | n/a |")
                continue
            lines.append(
                f"| {t} | {ci['n']} | {point(ci['mtl'])} | {_ci(ci['mtl']['low'], ci['mtl']['high'], k, digits, False)} | "
                f"{point(ci['single'])} | {_ci(ci['single']['low'], ci['single']['high'], k, digits, False)} | "
                f"{point(ci['gain'], True)} | {_ci(ci['gain']['low'], ci['gain']['high'], k, digits)} | {_verdict(ci)} |"
            )
        lines += [
            "",
            "Points: the mean over seeds of each seed's test score (the means of the first table). "
            f"Δm's interval uses {dci['replicates_used'] if dci else 0} of {boot['replicates']} replicates "
            "(a replicate whose baseline is 0 has no relative change). The paired samples: "
            f"`{boot['predictions']}`.",
        ]
    d = result.get("distilled")
    if d:
        ddm, ddci = d["delta_m"], d["delta_m"].get("ci")
        lines += [
            "",
            "## Distilled multi-task model",
            "",
            "The multi-task model trained again on the same budget, each task learning from its seed's single-task "
            "run (`teacher`) with teacher annealing: target = λ gold + (1 - λ) teacher, λ from 0 to 1 "
            "(keras_mtl.distill).",
            "",
            f"| task | metric | distilled | single-task | Δ abs (points) | {pct} CI of Δ abs | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in names:
            row, pt = d["metrics"][t], ddm["per_task"][t]
            m, k = row["metric"], _scale(row["metric"])
            digits = 4 if m == "mse" else 2
            gain = "n/a" if pt["gain"] is None else f"{k * pt['gain']:+.{digits}f}"
            ci = row.get("ci")
            interval = _ci(ci["gain"]["low"], ci["gain"]["high"], k, digits) if ci else "n/a"
            lines.append(f"| {t} | {m} | {_fmt(row['mtl'], m)} | {_fmt(row['single'], m)} | {gain} | {interval} | "
                         f"{_verdict(ci, row.get('verdict', 'n/a'))} |")
        if ddm["value_pct"] is not None:
            lines += [
                "",
                f"**Δm (distilled) = {ddm['value_pct']:+.2f}%**"
                + (f", {pct} CI {_ci(ddci['low'], ddci['high'])}%: **{_verdict(ddci)}**" if ddci and ddci["low"] is not None else "")
                + ("; per seed: " + ", ".join(f"{v:+.2f}%" if v is not None else "n/a" for v in ddm["per_seed_pct"])
                   if n > 1 else "")
                + f". Fit time {d['fit_seconds']['mean']:.1f} s (mean over seeds).",
            ]
    if others:
        lines += ["", "Other metrics (not in Δm):", "", "| task | metric | multi-task | single-task |", "|---|---|---|---|"]
        for t, m, v in others:
            lines.append(f"| {t} | {m} | {_fmt(v['mtl'], m)} | {_fmt(v['single'], m)} |")
    b = result["budget"]
    plan = result["mtl_plan"]
    lines += [
        "",
        "## Budget",
        "",
        f"Multi-task run: {plan['epochs']} epochs x {plan['steps_per_epoch']} steps = {plan['total_steps']} steps "
        f"at batch {plan['batch_size']}"
        + (f" (capped by --max-steps {result['max_steps']})" if result.get("max_steps") else "")
        + f". Per-task budget mode: `{b['mode']}` ({BUDGET_TEXT[b['mode']]})."
        + (
            " The encoder sees the task (task conditioning or adapters), so an example trains only the task "
            "it was drawn for: the labels seen are the examples drawn."
            if b.get("labels_are_examples")
            else ""
        ),
        "",
        "| task | mean p_t | examples | single-task steps (epochs x steps) |",
        "|---|---|---|---|",
    ]
    for t in names:
        x = b["per_task"][t]
        lines.append(f"| {t} | {x['p']:.3f} | {x['examples']:.0f} | {x['epochs'] * x['steps_per_epoch']} ({x['epochs']} x {x['steps_per_epoch']}) |")
    aux = result.get("auxiliary_tasks")
    if aux:
        for t in aux["tasks"]:
            x = b["per_task"][t]
            lines.append(f"| {t} (auxiliary) | {x['p']:.3f} | {x['examples']:.0f} | none: not compared |")
        fit_part = f", about {aux['fit_seconds']:.0f} s of its fit time" if aux.get("fit_seconds") is not None else ""
        lines += [
            "",
            f"Auxiliary tasks ({', '.join(aux['tasks'])}: `role: auxiliary`) train in the multi-task run only, to help "
            f"the targets: they have no single-task baseline and are not in Δm. They drew {100 * aux['share_of_draws']:.1f}% "
            f"of its examples: about {aux['steps']:.0f} of its {plan['total_steps']} steps{fit_part}.",
        ]
    p, f = result["params"], result["fit_seconds"]
    lines += [
        "",
        "## Cost",
        "",
        "| | multi-task | single-task models (sum) | ratio |",
        "|---|---|---|---|",
        f"| parameters | {p['mtl']:,} | {p['single_total']:,} ({len(names)} models) | {p['ratio_mtl_to_singles']:.2f} |",
        f"| training steps | {result['steps']['mtl']} | {sum(result['steps']['single'].values())} | "
        f"{result['steps']['mtl'] / max(1, sum(result['steps']['single'].values())):.2f} |",
        f"| fit time (s, mean over seeds) | {f['mtl']['mean']:.1f} | {f['single_total']:.1f} | "
        f"{f['mtl']['mean'] / max(f['single_total'], 1e-9):.2f} |",
    ]
    s = result.get("serving")
    if s:
        lines += [
            "",
            f"## Serving (seed {s.get('seed', 0)}'s exported SavedModels, {s['texts']} fixed test "
            + ("inputs: texts, and text pairs for the pair tasks" if s.get("pairs") else "texts")
            + f", batch {s['batch_size']}, "
            "best of 5 interleaved rounds)",
            "",
            f"| model | answers | {'inputs' if s.get('pairs') else 'texts'}/s |",
            "|---|---|---|",
            f"| multi-task | all {len(names)} tasks in "
            + ("one call" if s["mtl"].get("calls", 1) == 1 else f"{s['mtl']['calls']} calls (serving_default and pair-task signatures)")
            + f" | {s['mtl']['texts_per_s']:.1f} |",
        ]
        for t in names:
            lines.append(f"| single-task {t} | {t} | {s['single'][t]['texts_per_s']:.1f} |")
        lines += [
            f"| {len(names)} single-task models in turn | all {len(names)} tasks | {s['singles_all_tasks_texts_per_s']:.1f} |",
            "",
            f"Serving speedup (time of the {len(names)} single-task models / time of the multi-task model, same texts, "
            f"every task answered): **{s['speedup']:.2f}x** (ideal: {len(names)}x).",
        ]
        if s.get("reused"):
            lines.append(f"Measured on {s.get('measured_at', 'an earlier date')} by an earlier invocation, on the same "
                         "models (their sub-run records match); this one had no models to time.")
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in result["plots"]) + "."]
    lines += ["", f"Compared in {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def write_plots(result, root):
    """curves.png (dev primary metric per epoch) and deltas.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    root = Path(root)
    names = result["tasks"]
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for i, t in enumerate(names):
        ax = axes[i // cols][i % cols]
        m = result["metrics"][t]["metric"]
        k = _scale(m)
        for kind, label, color in (("mtl", "multi-task", "tab:blue"), ("single", "single-task", "tab:orange")):
            c = result["curves"][t][kind]
            if not c["epochs"]:
                continue
            x = np.asarray(c["epochs"])
            y = k * np.asarray(c["mean"])
            ax.plot(x, y, marker="o", ms=3, color=color, label=label)
            if len(result["seeds"]) > 1:
                sd = k * np.asarray(c["std"])
                ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.2, lw=0)
        ax.set_title(f"{t}: dev {m}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    seeds = len(result["seeds"])
    fig.suptitle(f"{result['name']}: validation curves (mean over {seeds} seed{'s' if seeds > 1 else ''})", fontsize=9)
    fig.tight_layout()
    curves = root / "curves.png"
    fig.savefig(curves, dpi=90)
    plt.close(fig)

    dm = result["delta_m"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(names) + 3), 2.8))
    rel = [dm["per_task"][t]["relative_pct"] for t in names]
    x = np.arange(len(names))
    a1.bar(
        x,
        [0.0 if v is None else v for v in rel],
        color=["lightgray" if v is None else ("tab:green" if v >= 0 else "tab:red") for v in rel],
    )
    for xi, v in zip(x, rel):
        if v is None:
            a1.text(xi, 0, "excluded", ha="center", va="bottom", fontsize=7, rotation=90)
        else:
            a1.text(xi, v, f"{v:+.1f}", ha="center", va="bottom" if v >= 0 else "top", fontsize=7)
    a1.axhline(0, color="black", lw=0.8)
    dci = dm.get("ci") or {}
    title = "relative Δ % (Δm = " + ("n/a" if dm["value_pct"] is None else f"{dm['value_pct']:+.2f}%") + (
        f", 95% CI [{dci['low']:+.2f}, {dci['high']:+.2f}]" if dci.get("low") is not None else ""
    ) + ")"
    a1.set_title(title, fontsize=9)
    gains = [dm["per_task"][t]["gain"] for t in names]
    a2.bar(
        x,
        [0.0 if g is None else _scale(result["metrics"][t]["metric"]) * g for t, g in zip(names, gains)],
        color=["lightgray" if g is None else ("tab:green" if g >= 0 else "tab:red") for g in gains],
    )
    has_ci = False
    for xi, t, g in zip(x, names, gains):
        if g is not None:
            k = _scale(result["metrics"][t]["metric"])
            v = k * g
            ci = (result["metrics"][t].get("ci") or {}).get("gain") or {}
            if ci.get("low") is not None:  # the 95% interval of the gain as an error bar
                has_ci = True
                a2.errorbar(
                    xi, v, yerr=[[max(0.0, v - k * ci["low"])], [max(0.0, k * ci["high"] - v)]],
                    color="black", capsize=3, lw=0.8,
                )
            a2.text(xi + 0.08, v, f"{v:+.2f}", ha="left", va="bottom" if v >= 0 else "top", fontsize=7)
    a2.axhline(0, color="black", lw=0.8)
    a2.set_title("absolute Δ (points)" + (", 95% CI bars" if has_ci else ""), fontsize=9)
    for ax in (a1, a2):
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8, rotation=20)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.18)
    fig.suptitle("multi-task minus single-task, primary metric (> 0: multi-task better)", fontsize=9)
    fig.tight_layout()
    deltas = root / "deltas.png"
    fig.savefig(deltas, dpi=90)
    plt.close(fig)
    return [curves, deltas]


# --------------------------------------------------------------------------
# CLI (wired by keras_mtl/cli.py as `keras-mtl compare`)
# --------------------------------------------------------------------------


def _at_least_one(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_compare_arguments(parser):
    """Add the `keras-mtl compare` arguments to an argparse (sub)parser."""
    parser.add_argument("config", help="experiment YAML")
    parser.add_argument("--workdir", help="output dir (default runs/<name>-compare)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"seeds 0..N-1 (default {DEFAULT_SEEDS})")
    parser.add_argument("--tasks", help="comma-separated subset of the tasks (the multi-task run uses only these)")
    parser.add_argument("--max-steps", type=int, help="cap the multi-task run's total steps (quick runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument(
        "--budget", choices=BUDGETS, default=DEFAULT_BUDGET,
        help="per-task budget of the single-task runs: task labels the multi-task run sees (labelled, default) "
        "or examples drawn for the task (drawn)",
    )
    parser.add_argument(
        "--bootstrap", type=_at_least_one, default=DEFAULT_REPLICATES, metavar="N",
        help=f"paired bootstrap replicates of the 95%% confidence intervals (default {DEFAULT_REPLICATES})",
    )
    parser.add_argument("--serving-texts", type=int, default=256, help="test texts timed through the SavedModels (0: skip)")
    parser.add_argument("--no-reuse", action="store_true", help="retrain sub-runs even if an identical finished one exists")
    parser.add_argument("--distill", action="store_true",
                        help="also train the multi-task model distilled from each seed's single-task runs (teacher annealing)")
    parser.add_argument("--records", metavar="DIR",
                        help="keep every finished sub-run's records (no model) and the report in DIR, and reuse "
                        "the sub-runs recorded there: a comparison spread over sessions or machines")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    return parser


def run_compare_cli(args):
    """Run `keras-mtl compare` from parsed arguments; prints compare.md. Returns the exit status."""
    loaded = load_config(args.config, args.set)
    workdir = args.workdir or os.path.join("runs", f"{loaded.config.name}-compare")
    compare(
        args.config,
        workdir,
        overrides=args.set,
        seeds=args.seeds,
        tasks=args.tasks,
        max_steps=args.max_steps,
        budget=args.budget,
        bootstrap=args.bootstrap,
        serving_texts=args.serving_texts,
        verbose=0 if args.quiet else 1,
        reuse=not args.no_reuse,
        distill=args.distill,
        records=args.records,
    )
    print((Path(workdir) / "compare.md").read_text(encoding="utf-8"))
    print(f"work dir: {workdir}")
    return 0


def main(argv=None):
    import argparse

    parser = add_compare_arguments(argparse.ArgumentParser(prog="keras-mtl compare", description=__doc__.splitlines()[0]))
    return run_compare_cli(parser.parse_args(argv))


if __name__ == "__main__":
    import sys

    sys.exit(main())
