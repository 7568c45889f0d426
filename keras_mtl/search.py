"""Search the task loss weights, the sampling temperature and any config field with KerasTuner.

    keras-mtl search configs/demo.yaml --algorithm random --trials 8 --max-steps 300
    keras-mtl search configs/glue_pairs_minilm.yaml --algorithm grid --weights none \
        --choice train.learning_rate=2e-5,3e-5,5e-5 --choice train.epochs=3,5
    keras-mtl train runs/demo-search/best.yaml

Each trial is one `keras_mtl.training.train` run of the config with `--set`
overrides for the sampled values (`tasks.<task>.loss_weight`,
`train.temperature` with `search_temperature`, and each `--choice` field),
scored on the dev metrics of the epoch whose weights the run kept (the last
one, or the best one with `train.keep: best`) by `objective`; the best config
goes to WORKDIR/best.yaml. The search spaces, objectives and files:
docs/meta_learning.md#loss-weight-search-kerastuner.
"""

import json
import math
import time
from pathlib import Path

import yaml

from keras_mtl.config import load_config
from keras_mtl.errors import ConfigError, DataError, KerasMTLError
from keras_mtl.record import RunRecord
from keras_mtl.workdir import RunFiles

ALGORITHMS = ("random", "grid", "bayesian")
AGGREGATES = ("mean", "min")
WEIGHT_VALUES = (0.25, 0.5, 1.0, 2.0, 4.0)
WEIGHT_RANGE = (0.1, 10.0)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)



def valid_objectives(config):
    """The objective names a config accepts: mean, min and every task name."""
    return list(AGGREGATES) + list(config.task_names)


def parse_choice_values(text):
    """The values of one `--choice KEY=V1,V2,...`: ints where all are ints,
    else floats where all are numbers, else booleans (true/false), else
    strings (KerasTuner's Choice takes values of one type)."""
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    for cast in (int, float):
        try:
            return [cast(v) for v in values]
        except ValueError:
            pass
    if values and all(v.lower() in ("true", "false") for v in values):
        return [v.lower() == "true" for v in values]
    return values


def check_choices(loaded, choices):
    """Raise ConfigError unless every `choices` field takes each of its values
    (the error names the field and the value), before any trial trains."""
    problems = []
    for key, values in (choices or {}).items():
        if not values:
            problems.append(f"--choice {key}: no values (expected {key}=V1,V2,...)")
            continue
        for value in values:
            try:
                load_config(loaded, [f"{key}={value}"])
            except ConfigError as e:
                problems.append(f"--choice {key}={value}: {e}")
    if problems:
        raise ConfigError("search: " + "; ".join(problems))


def check_search_args(config, algorithm, objective, trials, weights, search_tasks=None, choices=None,
                      search_temperature=False):
    """Raise ConfigError for an unknown algorithm/objective/task or a bad space."""
    problems = []
    if algorithm not in ALGORITHMS:
        problems.append(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    valid = valid_objectives(config)
    if objective not in valid:
        problems.append(
            f"unknown objective {objective!r}; expected one of {', '.join(AGGREGATES)} "
            f"or a task name ({', '.join(config.task_names)})"
        )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        problems.append(f"trials must be an integer >= 1. Received: trials={trials!r}")
    if weights is None:
        if not choices and not search_temperature:
            problems.append("nothing to search: with --weights none give --choice KEY=V1,V2,... or --search-temperature")
    elif weights == "log":
        if algorithm == "grid":
            problems.append("grid search needs a discrete set of weights, not 'log' (give values, e.g. 0.5,1,2)")
    else:
        try:
            values = [float(v) for v in weights]
        except (TypeError, ValueError):
            values = []
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            problems.append(f"weights must be 'log' or a non-empty list of numbers >= 0. Received: {weights!r}")
    for name in search_tasks or ():
        if name not in config.task_names:
            problems.append(f"unknown task {name!r} to search; tasks: {', '.join(config.task_names)}")
    searched = set() if weights is None else {f"tasks.{t}.loss_weight" for t in search_tasks or ()}
    if search_temperature:
        searched |= {"train.temperature", "train.sampling"}
    for key in choices or {}:
        if key in searched:
            problems.append(f"--choice {key} is already searched (--weights / --search-temperature): give it one way")
    if problems:
        raise ConfigError("search: " + "; ".join(problems))


def task_scores(row, config):
    """{task: (metric name, value)} of the primary dev metrics in a history row."""
    out, missing = {}, []
    for task in config.tasks:
        key = f"dev_{task.name}_{task.primary_metric}"
        if key in row and row[key] is not None:
            out[task.name] = (task.primary_metric, float(row[key]))
        else:
            missing.append(task.name)
    if missing:
        raise DataError(
            f"search: no dev score for task(s) {', '.join(missing)} (the run has no dev examples for them); "
            "give a `dev:` source or set splits.dev_fraction > 0"
        )
    return out


def objective_value(row, config, objective):
    """The objective of one trial (higher is better) from its last history row."""
    from keras_mtl.metrics import METRICS

    scores = task_scores(row, config)
    signed = {t: (v if METRICS[m].higher_is_better else -v) for t, (m, v) in scores.items()}
    if objective == "mean":
        return sum(signed.values()) / len(signed)
    if objective == "min":
        return min(signed.values())
    return signed[objective]


def _hyperparameters(config, weights, search_tasks, search_temperature, temperatures, choices=None):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for task in config.tasks:
        if task.name not in search_tasks or weights is None:
            continue
        name = f"loss_weight_{task.name}"
        if weights == "log":
            lo, hi = WEIGHT_RANGE
            hp.Float(name, lo, hi, sampling="log", default=min(max(task.loss_weight, lo), hi))
        else:
            values = sorted({float(v) for v in weights})
            default = min(values, key=lambda v: abs(v - task.loss_weight))
            hp.Choice(name, values, default=default)
    if search_temperature:
        values = sorted({float(v) for v in temperatures})
        default = min(values, key=lambda v: abs(v - config.train.temperature))
        hp.Choice("temperature", values, default=default)
    for key, values in (choices or {}).items():
        hp.Choice(key, list(values))
    return hp


def overrides_for(values, config):
    """`--set` strings for a dict of hyperparameter values (the `--choice`
    fields are named by their config keys, such as train.learning_rate)."""
    sets = []
    for task in config.tasks:
        key = f"loss_weight_{task.name}"
        if key in values:
            sets.append(f"tasks.{task.name}.loss_weight={float(values[key]):.6g}")
    if "temperature" in values:
        sets += ["train.sampling=temperature", f"train.temperature={float(values['temperature']):.6g}"]
    for key, value in values.items():
        if "." in key:  # a --choice field
            sets.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return sets


def scored_row(record):
    """The history row a trial is scored on: the epoch whose weights the run
    kept (`train.keep: best` -> the best dev epoch), else the last row."""
    history = record.history
    if record.kept_epoch is not None:
        row = next((r for r in history if r.get("epoch") == record.kept_epoch), None)
        if row is not None:
            return row
    return history[-1]


def _tuner_class(algorithm):
    import keras_tuner as kt

    base = {"random": kt.RandomSearch, "grid": kt.GridSearch, "bayesian": kt.BayesianOptimization}[algorithm]

    class LossWeightTuner(base):
        """A KerasTuner tuner whose trial is one keras-mtl training run."""

        def __init__(self, runner, **kwargs):
            self.runner = runner
            super().__init__(**kwargs)

        def run_trial(self, trial, *args, **kwargs):
            return self.runner(trial, Path(self.get_trial_dir(trial.trial_id)))

    LossWeightTuner.__name__ = f"LossWeight{base.__name__}"
    return LossWeightTuner


class _Runner:
    """Trains one trial; remembers what each trial scored."""

    def __init__(self, loaded, base_overrides, objective, max_steps, verbose):
        self.loaded = loaded
        self.base = list(base_overrides)
        self.objective = objective
        self.max_steps = max_steps
        self.verbose = verbose
        self.records = {}
        self.fatal = None

    def __call__(self, trial, trial_dir):
        import keras
        import keras_tuner as kt

        from keras_mtl.training import TrainingFailed, train

        values = dict(trial.hyperparameters.values)
        sets = overrides_for(values, self.loaded.config)
        run_dir = trial_dir / "run"
        record = {"trial": trial.trial_id, "hyperparameters": values, "overrides": sets, "workdir": str(run_dir)}
        self.records[trial.trial_id] = record
        keras.backend.clear_session()
        started = time.time()
        try:
            train(self.loaded, workdir=run_dir, overrides=self.base + sets, max_steps=self.max_steps, verbose=1 if self.verbose > 1 else 0)
            run_record = RunRecord.read(RunFiles(run_dir).run)
            if not run_record.history:
                raise DataError(f"search: trial {trial.trial_id}: run.json has no history rows")
            row = scored_row(run_record)
            config = load_config(self.loaded, self.base + sets).config
            scores = task_scores(row, config)
            value = objective_value(row, config, self.objective)
        except TrainingFailed as e:
            record.update(status="FAILED", message=str(e), seconds=round(time.time() - started, 1))
            raise kt.errors.FailedTrialError(str(e)) from None
        except KerasMTLError as e:
            # A bad config or data fails every trial the same way: stop the search.
            record.update(status="FAILED", message=str(e))
            self.fatal = e
            raise kt.errors.FatalError(str(e)) from None
        record.update(
            status="COMPLETED",
            objective=value,
            dev={t: {m: v} for t, (m, v) in scores.items()},
            seconds=round(time.time() - started, 1),
        )
        return {"objective": value}


def search(
    config, workdir=None, algorithm="random", trials=10, objective="mean", *, overrides=(), max_steps=None,
    search_temperature=False, weights=WEIGHT_VALUES, temperatures=TEMPERATURES, tasks=None, choices=None,
    seed=0, resume=False, verbose=0,
):
    """Search the loss weights, optionally the temperature, and any config
    fields given in `choices` of `config`.

    Args:
        config: a path, a `LoadedConfig` or a dict.
        workdir: output dir (default `runs/<name>-search`).
        algorithm: "random", "grid" or "bayesian" (KerasTuner oracles).
        trials: the number of trials (training runs).
        objective: "mean", "min" or a task name (see the module docstring).
        overrides: `KEY=VALUE` strings applied to the config of every trial
            (and kept in best.yaml).
        max_steps: cap on the training steps of each trial.
        search_temperature: also search `train.temperature` (trials then use
            `train.sampling: temperature`).
        weights: the lambda values to choose from, "log" for a
            log-uniform [0.1, 10], or None: the weights are not searched.
        temperatures: the tau values to choose from.
        tasks: the tasks whose weight is searched (default all).
        choices: {config key: [values] or "V1,V2,..."}: more fields to
            search, each a choice among its values (`--choice
            train.learning_rate=2e-5,5e-5`).
        seed: the oracle's seed.
        resume: continue a search in `workdir` instead of starting over.
        verbose: 0 quiet, 1 KerasTuner's per-trial summary, 2 also training progress.

    Returns:
        dict: "best" (trial, objective, hyperparameters, overrides, dev
        scores), "trials" (every trial), "best_config" (path of best.yaml),
        "yaml" (its text), "objective", "algorithm", "workdir".
    """
    loaded = load_config(config, overrides)
    cfg = loaded.config
    search_tasks = list(tasks) if tasks else list(cfg.task_names)
    # "2e-5,5e-5" as the command line gives it, or a list of values
    choices = {str(k): parse_choice_values(v) if isinstance(v, str) else list(v) for k, v in (choices or {}).items()}
    check_search_args(cfg, algorithm, objective, trials, weights, search_tasks, choices, search_temperature)
    check_choices(loaded, choices)
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ConfigError(f"search: max_steps must be an integer >= 1. Received: max_steps={max_steps!r}")
    import keras_tuner as kt

    root = Path(workdir) if workdir else Path("runs") / f"{cfg.name}-search"
    root.mkdir(parents=True, exist_ok=True)
    hp = _hyperparameters(cfg, weights, search_tasks, search_temperature, temperatures, choices)
    runner = _Runner(loaded, (), objective, max_steps, verbose)
    tuner = _tuner_class(algorithm)(
        runner,
        objective=kt.Objective("objective", direction="max"),
        max_trials=trials,
        seed=seed,
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
        directory=str(root),
        project_name="search",
        overwrite=not resume,
    )
    try:
        tuner.search(verbose=1 if verbose else 0)
    except kt.errors.FatalError:
        if runner.fatal is not None:
            raise runner.fatal from None
        raise
    except RuntimeError as e:  # too many consecutive failed trials
        raise KerasMTLError(f"search stopped: {e}") from None

    summary = _trial_summary(tuner, runner)
    completed = [t for t in summary if t["status"] == "COMPLETED" and t.get("objective") is not None]
    if not completed:
        messages = "; ".join(f"trial {t['trial']}: {t.get('message', '').strip().splitlines()[-1:] or ''}" for t in summary)
        raise KerasMTLError(f"search: no trial completed ({messages})")
    best = max(completed, key=lambda t: t["objective"])
    best_sets = overrides_for(best["hyperparameters"], cfg)
    best_loaded = load_config(loaded, best_sets)
    header = (
        f"# Best of {len(completed)} trials of `keras-mtl search` ({algorithm}, objective {objective} = "
        f"{best['objective']:.4f}, trial {best['trial']}).\n"
        f"# Searched: {', '.join(sorted(best['hyperparameters']))}. Data paths are absolute.\n"
        f"# Train with: keras-mtl train {root / 'best.yaml'}\n"
    )
    text = header + yaml.safe_dump(best_loaded.raw, sort_keys=False)
    best_path = root / "best.yaml"
    best_path.write_text(text, encoding="utf-8")
    result = {
        "algorithm": algorithm,
        "objective": objective,
        "workdir": str(root),
        "best": {**best, "overrides": best_sets},
        "trials": summary,
        "best_config": str(best_path),
        "yaml": text,
    }
    (root / "search").mkdir(exist_ok=True)
    (root / "search" / "trials.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "yaml"}, indent=2) + "\n", encoding="utf-8"
    )
    return result


def _trial_summary(tuner, runner):
    out = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        record = dict(runner.records.get(trial_id, {"trial": trial_id}))
        record.setdefault("hyperparameters", dict(trial.hyperparameters.values))
        record.setdefault("overrides", overrides_for(record["hyperparameters"], runner.loaded.config))
        status = getattr(trial.status, "value", trial.status)
        record["status"] = str(status) if status is not None else record.get("status", "UNKNOWN")
        if trial.score is not None and record.get("objective") is None:
            record["objective"] = float(trial.score)  # a resumed search: scored in an earlier process
        if trial.message and "message" not in record:
            record["message"] = str(trial.message).strip().splitlines()[-1]
        out.append(record)
    return out


def format_trials(result):
    """A markdown table of the trials, best first."""
    rows = sorted(result["trials"], key=lambda t: -(t.get("objective") if t.get("objective") is not None else -math.inf))
    names = sorted({k for t in rows for k in t.get("hyperparameters", {})})
    lines = [
        f"| trial | {' | '.join(names)} | objective ({result['objective']}) | status |",
        "|---|" + "---|" * len(names) + "---|---|",
    ]
    for t in rows:
        hp = t.get("hyperparameters", {})
        vals = " | ".join(f"{hp[n]:.4g}" if isinstance(hp.get(n), (int, float)) and not isinstance(hp.get(n), bool)
                          else str(hp.get(n, "")) for n in names)
        obj = t.get("objective")
        lines.append(f"| {t['trial']} | {vals} | {'' if obj is None else f'{obj:.4f}'} | {t['status']} |")
    return "\n".join(lines)
