"""Precision quality: does a faster `train.precision` cost test quality? Same model, same seeds, same steps.

    python bench/precision_quality.py                    # configs/glue_conll.yaml, 3 seeds, 4 x 250 steps, auto
    python bench/precision_quality.py --candidate mixed_bfloat16 --seeds 5
    python bench/precision_quality.py --tiny             # demo config, seconds (tests/test_bench.py)

Each seed trains the config's multi-task model twice with
`keras_mtl.training.train`, identical but for `train.precision`: float32 and
the candidate (`auto`, the default since this check, is resolved on this
machine by keras_mtl.precision and named in the table). Both are scored on the same
test examples, and `keras_mtl.compare.bootstrap_compare` (the interval of
`keras-mtl compare`: paired over the test examples, seeds resampled) gives
each task's gain of the candidate over float32 with its 95% interval and a
verdict, and the same for delta_m. The candidate keeps quality when no task
and not delta_m is "worse": that is the target printed (a "not
distinguishable" with a wide interval says more seeds are needed, not that
the two are equal; the interval is in the table).

The plan is `keras-mtl compare`'s multi-task plan (`--max-steps` keeps the
epoch count), so the float32 runs are the multi-task runs of a comparison
of the same config and steps: where `--compare-records DIR` (default
bench/results/compare/<config name>) holds one with the identical config,
it is reused rather than trained again (BENCHMARKS.md section 1a's records
for glue_conll at 1,000 steps). Every finished run keeps its small records
(config, reports, test predictions) in `--records` (default
bench/results/precision_quality/<config name>), and a run recorded there is
not trained again.

Fit seconds per step of both sides are printed for information only: the
speed figures of precisions are bench/peer.py's and train_efficiency.py's
(one quiet run each); here the runs are minutes apart and the machine may
be shared.
"""

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "precision_quality"
DEFAULT_CONFIG = common.ROOT / "configs" / "glue_conll.yaml"
TINY_CONFIG = common.ROOT / "configs" / "demo.yaml"
REFERENCE = "float32"


def plan(loaded, max_steps):
    """(epochs, steps_per_epoch) of the config's multi-task run, capped as `keras-mtl compare --max-steps` caps it."""
    from keras_mtl.compare import capped_plan
    from keras_mtl.data.load import load_task_data
    from keras_mtl.prepare import plan_steps

    data = load_task_data(loaded)
    return capped_plan(*plan_steps(loaded.config.train, len(data.splits["train"])), max_steps), data.splits["test"]


def seed_from_compare(compare_records, seed, loaded, path, root):
    """Copy the comparison's recorded multi-task run of `seed` into `path` when its config is `loaded`'s; True if so."""
    from keras_mtl.compare import RECORD_FILES, is_finished, run_marker

    source = Path(compare_records) / f"seed{seed}" / "mtl"
    if not is_finished(source, run_marker(loaded.raw, root), root):
        return False
    path.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, path / name)
    return True


def train_both(config_path, seeds, max_steps, candidate, root, records, compare_records, log, verbose=0):
    """Train (or reuse) every seed's float32 and candidate run.

    Returns ({seed: {precision: run}}, test examples, (epochs, steps per
    epoch), (policy, why): what the candidate resolved to, seeds whose
    float32 run came from `compare_records`)."""
    from keras_mtl.compare import train_run
    from keras_mtl.config import load_config
    from keras_mtl.precision import resolve_precision

    policy, why = resolve_precision(candidate)
    (epochs, spe), test_examples = plan(load_config(str(config_path)), max_steps)
    budget = [f"train.epochs={epochs}", f"train.steps_per_epoch={spe}"]
    runs, reused = {}, []
    for seed in seeds:
        runs[seed] = {}
        for precision in dict.fromkeys((REFERENCE, policy)):
            overrides = [f"seed={seed}", *budget, f"train.precision={precision}"]
            loaded = load_config(str(config_path), overrides)
            path = Path(root) / f"seed{seed}" / precision
            keep = records  # a run the comparison's records hold is not copied into ours
            if precision == REFERENCE and compare_records and seed_from_compare(compare_records, seed, loaded, path, root):
                log(f"  seed {seed} {precision}: the multi-task run recorded in {common._rel(str(compare_records))}")
                reused.append(seed)
                keep = None
            started = time.time()
            runs[seed][precision] = train_run(loaded, path, verbose, True, log, test_examples, root, keep)
            log(f"  seed {seed} {precision}: {runs[seed][precision]['report']['seconds']['fit']:.0f} s of fit "
                f"({time.time() - started:.0f} s here)")
    return runs, test_examples, (epochs, spe), (policy, why), reused


def samples(runs, policy, cfg, test_examples):
    """`bootstrap_compare` samples (compare's own `paired_samples`) with the candidate as the `mtl` side and float32 as
    the `single` side of every task."""
    from keras_mtl.compare import paired_samples

    names = cfg.task_names
    sides = {s: {"mtl": runs[s][policy], **{t: runs[s][REFERENCE] for t in names}} for s in runs}
    return paired_samples(sides, names, {t.name: t.primary_metric for t in cfg.tasks}, {t.name: t for t in cfg.tasks},
                    test_examples)


def _pm(row, scale):
    lo, hi = row.get("low"), row.get("high")
    point = row.get("point")
    if point is None:
        return "n/a"
    return f"{scale * point:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]" if lo is not None else f"{scale * point:+.2f}"


def markdown(result):
    if result.get("skipped"):
        return f"Skipped: {result['skipped']}"
    from keras_mtl.compare import metric_scale, mean_std

    cand = result["candidate_policy"]
    boot = result["bootstrap"]
    rows = []
    for t, row in boot["tasks"].items():
        scale = metric_scale(row["metric"])
        f32, c = (mean_std(result["per_seed"][p][t]) for p in (REFERENCE, cand))
        fmt = lambda s: "n/a" if s["mean"] is None else (  # noqa: E731
            f"{scale * s['mean']:.2f}" + (f" ± {scale * s['std']:.2f}" if s["std"] is not None else ""))
        rows.append([t, row["metric"], fmt(f32), fmt(c), _pm(row["gain"], scale), row["verdict"]])
    dm = boot["delta_m"]
    rows.append(["Δm (%)", "", "", "", _pm({"point": dm["point"], "low": dm["low"], "high": dm["high"]}, 1.0), dm["verdict"]])
    step = result["seconds_per_step"]
    head = (
        f"`{result['config']}`, multi-task model from scratch, {result['steps']} steps "
        f"({result['epochs']} x {result['steps_per_epoch']}) at batch {result['batch_size']}, seeds "
        f"{', '.join(map(str, result['seeds']))}, backend {result['backend']}; test split, mean ± std over seeds; "
        f"gain = candidate - float32 (sign-adjusted), 95% interval of `keras-mtl compare`'s paired bootstrap "
        f"({boot['replicates']} replicates, seeds resampled). Candidate: `train.precision: {result['candidate']}` -> "
        f"`{cand}` ({result['candidate_why']}).\n\n"
    )
    table = common.md_table(["task", "metric", "float32", cand, "gain (95% CI)", "verdict"], rows)
    foot = (f"\n\nFit time per step (information only; the runs are not timed side by side): float32 "
            f"{1000 * step[REFERENCE]:.0f} ms, {cand} {1000 * step[cand]:.0f} ms "
            f"({step[REFERENCE] / step[cand]:.2f}x). "
            + ("Float32 runs reused from " + ", ".join(result["reused_from"]) + "." if result.get("reused_from") else ""))
    return head + table + foot


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="default configs/glue_conll.yaml (--tiny: configs/demo.yaml)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--max-steps", type=int, default=1000, help="cap of the multi-task steps, as keras-mtl compare's")
    p.add_argument("--candidate", default="auto", help="the train.precision compared with float32 (default auto)")
    p.add_argument("--workdir", default=None, help="default runs/precision_quality-<config name>")
    p.add_argument("--records", default=None, help="default bench/results/precision_quality/<config name> (--tiny: none)")
    p.add_argument("--compare-records", default=None,
                   help="a keras-mtl compare --records dir whose multi-task runs serve as the float32 runs when their "
                        "config is identical (default bench/results/compare/<config name>; --tiny: none)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    args = p.parse_args(argv)
    from keras_mtl.config import PRECISION

    if args.candidate not in PRECISION:
        p.error(f"--candidate: unknown precision {args.candidate!r}; expected one of {', '.join(PRECISION)}")
    run = common.Run(NAME, args)
    config_path = Path(args.config) if args.config else (TINY_CONFIG if args.tiny else DEFAULT_CONFIG)

    import keras

    from keras_mtl.compare import bootstrap_compare
    from keras_mtl.config import load_config
    from keras_mtl.errors import KerasMTLError

    try:
        cfg = load_config(str(config_path)).config
    except KerasMTLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if run.skipped_for_missing_data(cfg):
        return 0
    seeds = list(range(1 if args.tiny else args.seeds))
    max_steps = 10 if args.tiny else args.max_steps
    root = Path(args.workdir or common.ROOT / "runs" / f"precision_quality-{cfg.name}")
    # --tiny keeps no records unless asked: its runs are smoke tests
    records = Path(args.records) if args.records else (
        None if args.tiny else common.ROOT / "bench" / "results" / NAME / cfg.name)
    compare_records = Path(args.compare_records) if args.compare_records else (
        None if args.tiny else common.ROOT / "bench" / "results" / "compare" / cfg.name)
    log = run.say if not args.quiet else (lambda *_: None)
    run.say(f"== {NAME}: {common._rel(str(config_path))}, float32 vs train.precision={args.candidate}, "
            f"seeds {seeds}, at most {max_steps} steps, into {root}")
    runs, test_examples, (epochs, spe), (policy, why), reused = train_both(
        config_path, seeds, max_steps, args.candidate, root, records, compare_records, log)
    steps = epochs * spe
    run.result.update({
        "config": common._rel(str(config_path)),
        "seeds": seeds,
        "epochs": epochs,
        "steps_per_epoch": spe,
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "backend": keras.backend.backend(),
        "candidate": args.candidate,
        "candidate_policy": policy,
        "candidate_why": why,
        "per_seed": {p: {t.name: [runs[s][p]["report"]["tasks"].get(t.name, {}).get(t.primary_metric) for s in seeds]
                         for t in cfg.tasks} for p in runs[seeds[0]]},
        "seconds_per_step": {p: sum(runs[s][p]["report"]["seconds"]["fit"] for s in seeds) / len(seeds) / steps
                             for p in runs[seeds[0]]},
        "reused_from": ([f"{common._rel(str(compare_records))} (seeds {', '.join(map(str, reused))})"]
                        if reused else []),
    })
    if policy == REFERENCE:
        run.result["skipped"] = f"train.precision={args.candidate} is float32 on this machine ({why}): nothing to compare"
        run.say(f"  {run.result['skipped']}")
        return 0 if run.write() else 1
    boot = bootstrap_compare(samples(runs, policy, cfg, test_examples), replicates=min(args.bootstrap, 50) if args.tiny else args.bootstrap)
    run.result["bootstrap"] = boot
    run.say(markdown(run.result))
    worse = [t for t, row in boot["tasks"].items() if row["verdict"] == "worse"]
    if boot["delta_m"]["verdict"] == "worse":
        worse.append("delta_m")
    run.target(f"tasks worse in {policy} than float32", len(worse), 0, False, "",
               ", ".join(worse) if worse else "none: every task and delta_m better or not distinguishable")
    return 0 if run.write() else 1


if __name__ == "__main__":
    sys.exit(main())
