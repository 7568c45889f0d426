"""`compare(config, workdir)`: the multi-task model vs one single-task model per target task.

For every seed it trains (or reuses) the multi-task run, then one
single-task run per target task at the budget `task_budgets` gives, scores
every run on the same test examples, and writes `compare.json`, `compare.md`
and plots (docs/compare.md).
"""

import copy
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from keras_mtl.compare.plan import (
    BUDGETS,
    DEFAULT_BUDGET,
    capped_plan,
    config_with,
    entry_label_sets,
    label_overlap,
    subset_raw,
    task_budgets,
)
from keras_mtl.compare.report import compare_markdown, unsettled_names, write_plots
from keras_mtl.compare.runs import COMPARE_FILES, is_finished, paired_samples, run_marker, train_run
from keras_mtl.compare.serving import earlier_serving, fixed_inputs, measure_serving, models_digest
from keras_mtl.compare.stats import (
    BOOTSTRAP_SEED,
    DEFAULT_REPLICATES,
    LEVEL,
    NEAR_ZERO,
    SIGN_CONVENTION,
    bootstrap_compare,
    delta_m,
    higher_is_better,
    mean_std,
)
from keras_mtl.config import load_config
from keras_mtl.finetuning import StartFrom, finetune_raw
from keras_mtl.run import load_run
from keras_mtl.data.load import load_task_data
from keras_mtl.errors import ConfigError
from keras_mtl.prepare import cache_of, check_held_out_labels, plan_steps, write_entry
from keras_mtl.disk import write_json


DEFAULT_SEEDS = 3


def score_against_baselines(runs, model, names, primary, higher, cfg, test_examples, bootstrap, log):
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
    samples = paired_samples(view, names, primary, {t: cfg.task(t) for t in names}, test_examples)
    log(f"bootstrap ({model}): {int(bootstrap)} replicates over {len(runs)} seed(s) and "
        f"{sum(len(x['truth']) for x in samples.values())} test labels")
    boot = bootstrap_compare(samples, replicates=int(bootstrap), seed=BOOTSTRAP_SEED, level=LEVEL)
    for t in names:
        metrics[t]["ci"] = boot["tasks"][t]
        metrics[t]["verdict"] = boot["tasks"][t]["verdict"]
    unsettled = unsettled_names(boot["tasks"], boot["delta_m"])
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
    finetune=False,
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
        finetune: also fine-tune, per seed and target task, the multi-task
            run on that task with the single-task run's budget (MT-DNN's
            second stage, keras_mtl.finetuning), and compare these T models
            with the baselines the same way (`result["finetuned"]`).

    Returns:
        dict: the content of `compare.json`.
    """
    started = time.time()
    plan = comparison_plan(config, workdir, seeds, tasks, max_steps, overrides, budget, bootstrap, serving_texts, records)
    plan.verbose, plan.reuse, plan.log = verbose, reuse, log
    root, cfg, names = plan.root, plan.cfg, plan.names
    # seed -> {"mtl": result, task: result, "distilled": result, "finetuned-<task>": result}
    runs = {seed: _seed_runs(plan, seed, distill, finetune) for seed in range(int(seeds))}

    # === Metrics and confidence intervals (paired bootstrap over the test examples) ===
    scored = score_against_baselines(runs, "mtl", names, plan.primary, plan.higher, cfg, plan.test_examples, bootstrap, log)
    dm, boot = scored["dm"], scored["boot"]
    write_predictions(root / "test_predictions.json", scored["samples"], list(runs))
    distilled = None
    if distill:
        d = score_against_baselines(runs, "distilled", names, plan.primary, plan.higher, cfg, plan.test_examples,
                                    bootstrap, log)
        distilled = {
            "metrics": d["metrics"],
            "delta_m": {"value_pct": d["dm"]["delta_m"], "per_seed_pct": d["per_seed"], "included": d["dm"]["included"],
                        "excluded": d["dm"]["excluded"], "per_task": d["dm"]["per_task"], "ci": d["boot"]["delta_m"],
                        "verdict": d["boot"]["delta_m"]["verdict"]},
            "fit_seconds": mean_std([runs[s]["distilled"]["report"]["seconds"]["fit"] for s in runs]),
        }
    finetuned = _finetuned_scores(plan, runs, bootstrap) if finetune else None
    cost = _cost(plan, runs)
    result = {
        "name": cfg.name,
        "tasks": names,
        **({"auxiliary_tasks": cost["auxiliary"]} if cost["auxiliary"] else {}),
        "seeds": list(runs),
        "backend": runs[0]["mtl"]["report"].get("backend"),
        "split": "test",
        "budget": {
            "mode": budget,
            "per_task": plan.budgets,
            "labels_are_examples": budget == "labelled" and plan.overlap is None,  # task conditioning: one task a pass
        },
        "mtl_plan": {"epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch,
                     "total_steps": plan.epochs * plan.steps_per_epoch, "batch_size": cfg.train.batch_size},
        "max_steps": max_steps,
        "overrides": list(overrides),
        "steps": cost["steps"],
        "metrics": scored["metrics"],
        "delta_m": {
            "value_pct": dm["delta_m"],
            "per_seed_pct": scored["per_seed"],
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
            "seconds": scored["seconds"],
            "predictions": "test_predictions.json",
        },
        "params": cost["params"],
        "fit_seconds": cost["fit"],
        "distilled": distilled,  # with distill: the distilled multi-task model against the same baselines
        **({"finetuned": finetuned} if finetuned else {}),  # with finetune: the T fine-tuned models (MT-DNN)
        "serving": _serving_table(plan, runs, serving_batch, log),
        "curves": dev_curves(runs, names, plan.primary),
        "seconds": round(time.time() - started, 1),
    }
    _write_report(result, plan, log)
    return result


@dataclasses.dataclass
class ComparisonPlan:
    """What every sub-run of one comparison shares: its configs, budgets and test examples."""

    root: Path  # the comparison's work dir
    raw: dict  # the multi-task config (validated, `--tasks` applied)
    cfg: object  # its ExperimentConfig
    names: list  # the compared (target) tasks
    auxiliary: list  # the auxiliary tasks: in the multi-task run only
    primary: dict  # task -> its primary metric
    higher: dict  # task -> whether higher is better
    epochs: int  # of the multi-task run
    steps_per_epoch: int
    overlap: object  # `label_overlap` (the labelled budget), None for drawn or task conditioning
    test_examples: object  # every run predicts these: paired samples (an `ExampleFile`: read when used)
    texts: list  # the fixed serving inputs
    pairs: list
    records: object  # Path of --records, or None
    budgets: dict = None  # task -> single-task budget, from the first multi-task run
    verbose: int = 0  # train's progress output
    reuse: bool = True  # reuse finished identical sub-runs
    log: object = print  # callable for progress lines

    @property
    def mtl_overrides(self):
        return [f"train.epochs={self.epochs}", f"train.steps_per_epoch={self.steps_per_epoch}"]


def comparison_plan(config, workdir, seeds, tasks, max_steps, overrides, budget, bootstrap, serving_texts, records):
    """The checked arguments of `compare` and its `ComparisonPlan` (max_steps keeps the epoch count), from the
    multi-task config's cache entry (`plan_data`): no example of any split is held."""
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
    raw = load_config(config, overrides).raw
    if tasks is not None:
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        raw = subset_raw(raw, list(tasks))
    base = config_with(raw, ())
    root.mkdir(parents=True, exist_ok=True)  # after the checks: a bad --tasks leaves nothing behind
    cfg = base.config
    primary = {t.name: t.primary_metric for t in cfg.tasks}
    entry, test = plan_data(base)
    epochs, spe = capped_plan(*plan_steps(cfg.train, int(entry.meta["examples"]["train"])), max_steps)
    texts, pairs = [], []
    if serving_texts:  # a config without test examples times training texts: not in the entry, read in memory
        texts, pairs = fixed_inputs(test or load_task_data(base).splits["train"], serving_texts)
    return ComparisonPlan(
        root=root,
        raw=raw,
        cfg=cfg,
        names=cfg.target_task_names,
        auxiliary=cfg.auxiliary_task_names,
        primary=primary,
        higher={t: higher_is_better(m) for t, m in primary.items()},
        epochs=epochs,
        steps_per_epoch=spe,
        # With task conditioning or adapters an example trains only the task it was
        # drawn for (one pass per task), so the labels seen are the examples drawn.
        overlap=label_overlap(entry_label_sets(entry), cfg.task_names)
        if budget == "labelled" and not cfg.model.sees_task else None,
        test_examples=test,
        texts=texts,
        pairs=pairs,
        records=Path(records) if records else None,
    )


def plan_data(base):
    """(entry, test examples): the cache entry of the comparison's multi-task config `base` and its test
    examples (an `ExampleFile`: read from the entry when used, none held).

    The entry is the one the multi-task run trains from (the same config, hence the same key), written
    now when it is missing (`prepare.write_entry`), so the plan reads no example into memory: the
    training examples are counted in its meta, `entry_label_sets` reads the label overlap from its
    rows. An entry that was there is checked for dev/test labels never seen in train as `train` checks
    it (`check_held_out_labels`: the warning, or the error, before any run)."""
    from keras_mtl.data import cached  # lazy: the task types

    entry, built = write_entry(base, cache_of(base))
    data = cached.task_data(entry)
    if not built:  # reading the data checked this
        check_held_out_labels(base.config, data)
    return entry, data.splits["test"]


def _seed_runs(plan, seed, distill, finetune=False):
    """One seed's sub-runs: the multi-task run, a single-task run per target task
    (at `plan.budgets`, set from the first multi-task run), the distilled student,
    and the multi-task run fine-tuned on each target task (at its single-task budget)."""
    cfg, root, records, reuse, log = plan.cfg, plan.root, plan.records, plan.reuse, plan.log

    def sub_run(raw_config, overrides, path, need_model=False):
        return train_run(config_with(raw_config, overrides), path, plan.verbose, reuse, log, plan.test_examples, root,
                         records, need_model)

    sdir = root / f"seed{seed}"
    log(f"seed {seed}: multi-task ({', '.join(cfg.task_names)}), {plan.epochs} x {plan.steps_per_epoch} steps")
    mtl_overrides = [f"seed={seed}", *plan.mtl_overrides]
    # the fine-tuned runs start from the multi-task run's model: it is needed while one is still to train
    start_needed = finetune and plan.budgets is not None and not all(
        _finetuned_finished(plan, sdir, t, mtl_overrides) for t in plan.names)
    out = {"mtl": sub_run(plan.raw, mtl_overrides, sdir / "mtl", need_model=start_needed)}
    if plan.budgets is None:
        info = out["mtl"]["info"]
        sched = info.sampling_schedule
        plan.budgets = task_budgets(sched["probabilities"], sched["tasks"], info.steps_per_epoch, cfg.train.batch_size,
                                    plan.overlap)
    teachers_needed = False
    if distill:  # the multi-task model again, each task learning from this seed's single-task run
        taught = copy.deepcopy(plan.raw)
        for task in taught["tasks"]:
            if task["name"] in plan.names:  # auxiliary tasks have no single-task run: they keep their gold labels
                task["teacher"] = str((sdir / f"single-{task['name']}").resolve())
        student_overrides = [f"seed={seed}", *plan.mtl_overrides]
        student = run_marker(config_with(taught, student_overrides).raw, root)
        homes = [sdir] + ([records / sdir.relative_to(root)] if records is not None else [])
        # the teachers' models are needed while their student is still to train
        teachers_needed = not (reuse and any(is_finished(h / "distilled", student, root) for h in homes))
    for t in plan.names:
        b = plan.budgets[t]
        log(f"seed {seed}: single-task {t}, {b['epochs']} x {b['steps_per_epoch']} steps")
        single_raw = subset_raw(plan.raw, [t])
        single_raw["name"] = f"{cfg.name}-{t}"[:64]
        over = [f"seed={seed}", f"train.epochs={b['epochs']}", f"train.steps_per_epoch={b['steps_per_epoch']}"]
        out[t] = sub_run(single_raw, over, sdir / f"single-{t}", need_model=teachers_needed)
    if distill:
        log(f"seed {seed}: multi-task distilled from the single-task runs, {plan.epochs} x {plan.steps_per_epoch} steps")
        out["distilled"] = sub_run(taught, student_overrides, sdir / "distilled")
    if finetune:
        for t in plan.names:
            b = plan.budgets[t]
            log(f"seed {seed}: the multi-task run fine-tuned on {t}, {b['epochs']} x {b['steps_per_epoch']} steps")
            ft_raw, over = _finetuned_config(plan, t, mtl_overrides)
            start = (out["mtl"]["marker"], lambda t=t: StartFrom(load_run(sdir / "mtl"), t))
            out[f"finetuned-{t}"] = train_run(config_with(ft_raw, over), sdir / f"finetuned-{t}", plan.verbose, reuse,
                                              log, plan.test_examples, root, records, start=start)
    return out


def _finetuned_config(plan, task, mtl_overrides):
    """(raw config, overrides) of the multi-task run fine-tuned on `task` at its single-task budget:
    the multi-task run's own config reduced to the task (`finetuning.finetune_raw`), as `keras-mtl finetune` makes it."""
    b = plan.budgets[task]
    mtl_raw = config_with(plan.raw, mtl_overrides).raw
    return finetune_raw(mtl_raw, task), [f"train.epochs={b['epochs']}", f"train.steps_per_epoch={b['steps_per_epoch']}"]


def _finetuned_finished(plan, sdir, task, mtl_overrides):
    """Whether the fine-tuned run of `task` is finished here or in --records (then no model needs to start it)."""
    raw, over = _finetuned_config(plan, task, mtl_overrides)
    mtl_marker = run_marker(config_with(plan.raw, mtl_overrides).raw, plan.root)
    marker = {**run_marker(config_with(raw, over).raw, plan.root), "start": mtl_marker}
    homes = [sdir] + ([plan.records / sdir.relative_to(plan.root)] if plan.records is not None else [])
    return plan.reuse and any(is_finished(h / f"finetuned-{task}", marker, plan.root) for h in homes)


def _finetuned_scores(plan, runs, bootstrap):
    """The T fine-tuned models of each seed, as one model answering every target task
    (task t by the run fine-tuned on t), against the same single-task baselines."""
    for s in runs:
        parts = {t: runs[s][f"finetuned-{t}"] for t in plan.names}
        runs[s]["finetuned"] = {
            "report": {"tasks": {t: parts[t]["report"]["tasks"].get(t, {}) for t in plan.names},
                       "seconds": {"fit": sum(p["report"]["seconds"]["fit"] for p in parts.values())}},
            "predictions": {t: parts[t]["predictions"].get(t, {}) for t in plan.names},
            "params": sum(p["params"] for p in parts.values()),
        }
    f = score_against_baselines(runs, "finetuned", plan.names, plan.primary, plan.higher, plan.cfg,
                                plan.test_examples, bootstrap, plan.log)
    return {
        "metrics": f["metrics"],
        "delta_m": {"value_pct": f["dm"]["delta_m"], "per_seed_pct": f["per_seed"], "included": f["dm"]["included"],
                    "excluded": f["dm"]["excluded"], "per_task": f["dm"]["per_task"], "ci": f["boot"]["delta_m"],
                    "verdict": f["boot"]["delta_m"]["verdict"]},
        # what they cost: the multi-task run's training, then T runs; T models at serving time
        "fit_seconds": mean_std([runs[s]["finetuned"]["report"]["seconds"]["fit"] for s in runs]),
        "steps": {t: runs[0][f"finetuned-{t}"]["info"].epochs * runs[0][f"finetuned-{t}"]["info"].steps_per_epoch
                  for t in plan.names},
        "params": runs[0]["finetuned"]["params"],
        "models": len(plan.names),
    }


def _cost(plan, runs):
    """Parameters, fit seconds and steps of the multi-task and single-task runs, and what the auxiliary tasks added."""
    names = plan.names
    params = {"mtl": runs[0]["mtl"]["params"], "single": {t: runs[0][t]["params"] for t in names}}
    params["single_total"] = sum(params["single"].values())
    params["ratio_mtl_to_singles"] = params["mtl"] / params["single_total"]
    fit = {
        "mtl": mean_std([runs[s]["mtl"]["report"]["seconds"]["fit"] for s in runs]),
        "single": {t: mean_std([runs[s][t]["report"]["seconds"]["fit"] for s in runs]) for t in names},
    }
    fit["single_total"] = sum(fit["single"][t]["mean"] for t in names)
    total_steps = plan.epochs * plan.steps_per_epoch
    steps = {
        "mtl": total_steps,
        "single": {t: runs[0][t]["info"].epochs * runs[0][t]["info"].steps_per_epoch for t in names},
    }
    auxiliary = None
    if plan.auxiliary:  # what the auxiliary tasks added to the multi-task run: their share of its draws
        share = sum(plan.budgets[t]["p"] for t in plan.auxiliary)
        auxiliary = {
            "tasks": plan.auxiliary,
            "share_of_draws": share,
            "steps": share * total_steps,
            "fit_seconds": share * fit["mtl"]["mean"] if fit["mtl"]["mean"] is not None else None,
        }
    return {"params": params, "fit": fit, "steps": steps, "auxiliary": auxiliary}


def _serving_table(plan, runs, batch, log):
    """Time one seed's exported models on the fixed inputs (or reuse an earlier
    measurement of the same models); None without serving inputs."""
    names, records = plan.names, plan.records
    if not plan.texts:
        return None
    # the first seed whose models are all here (a run taken from --records has none)
    served = next((s for s in runs if all(runs[s][k]["has_model"] for k in ["mtl", *names])), None)
    if served is None:
        serving = earlier_serving([plan.root, *([records] if records is not None else [])], runs, names,
                                  len(plan.texts), batch)
        if serving is None:
            log("serving: skipped: no seed has all its models in the work dir (runs taken from --records have none)")
        else:
            log(f"serving: no seed has its models here; the table is the measurement of {serving['measured_at']} "
                f"on the same models of seed {serving['seed']} (their records match)")
        return serving
    log(f"serving: exporting seed {served}'s models and timing {len(plan.texts)} texts at batch {batch}")
    serving = measure_serving(plan.root / f"seed{served}", names, plan.texts, plan.pairs, batch,
                              mtl_tasks=names if plan.auxiliary else None)
    serving.update(seed=served, models=models_digest(runs[served], names),
                   measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return serving


def _write_report(result, plan, log):
    """compare.json, compare.md and the plots in the work dir (and copies in --records)."""
    root = plan.root
    plots = write_plots(result, root)
    result["plots"] = [p.name for p in plots]
    write_json(root / "compare.json", result)
    (root / "compare.md").write_text(compare_markdown(result), encoding="utf-8")
    if plan.records is not None:
        for name in COMPARE_FILES:
            if (root / name).exists():
                shutil.copy2(root / name, plan.records / name)
    log(f"wrote {root / 'compare.json'}, {root / 'compare.md'}, {', '.join(p.name for p in plots)}")


def write_predictions(path, samples, seeds):
    """test_predictions.json: the paired samples the intervals were computed from."""
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


def dev_curves(runs, names, primary):
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
