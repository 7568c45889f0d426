"""The methods table: every multi-task method on one config, same steps, same seeds.

    python bench/methods.py                       # configs/glue_conll.yaml, 2 seeds, 4 x 250 steps
    python bench/methods.py --seeds 3 --epochs 4 --steps-per-epoch 1000
    python bench/methods.py --only hard,pcgrad    # a subset of the rows (names below)
    python bench/methods.py --tiny                # demo config, seconds (tests/test_bench.py)

Each row is the config with a few `--set` overrides (a switch of keras-mtl,
nothing else changed) and is trained from scratch with `keras_mtl.training.train`
for the same number of steps (`train.epochs` x `train.steps_per_epoch`) and
the same seeds (`seed=S`; the data split seed is fixed, so every row is scored
on the same dev examples). The table reports, per task, the primary metric on
the dev split after the last epoch (mean ± std over seeds), their mean, and
the fit time per step relative to the first row. Rows:

* sharing and conditioning, each added alone to hard sharing (the config's
  own setting is `task_conditioning: none`): task embedding, task token,
  task-adaptive gates, task attention pooling, task relation, MMoE, adapters;
* loss weightings (sampling and sharing as in the config): uncertainty, DWA,
  RLW, GradNorm, PCGrad (static = the first row);
* samplings: proportional, temperature (tau = 2), annealed (uniform = the
  first row).

Finished runs are reused when their work dir holds a finished run of the
identical config (an interrupted table resumes). No figure is edited by
hand: `run_all.py --only methods` or this script rewrites the table between
the `<!-- bench:methods -->` markers of BENCHMARKS.md.
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "methods"
DEFAULT_CONFIG = common.ROOT / "configs" / "glue_conll.yaml"
TINY_CONFIG = common.ROOT / "configs" / "demo.yaml"

# (key, group, label, overrides)
ROWS = (
    ("hard", "sharing", "hard sharing (the config: conditioning none, static, its sampling)", []),
    ("embedding", "sharing", "+ task embedding (`task_conditioning: embedding`)", ["model.task_conditioning=embedding"]),
    ("token", "sharing", "+ task token (`task_conditioning: token`)", ["model.task_conditioning=token"]),
    ("gates", "sharing", "+ task-adaptive gates (`task_gates: true`)", ["model.task_gates=true"]),
    ("attention", "sharing", "+ task attention pooling (`pooling: attention`)", ["model.pooling=attention"]),
    ("relation", "sharing", "+ task relation (`task_relation: true`)", ["model.task_relation=true"]),
    ("mmoe", "sharing", "MMoE, 4 experts (`num_experts: 4`)", ["model.num_experts=4"]),
    ("adapters", "sharing", "+ per-task adapters (`adapter_dim: 16`)", ["model.adapter_dim=16"]),
    ("uncertainty", "loss weighting", "uncertainty (Kendall et al.)", ["train.loss_weighting=uncertainty"]),
    ("dwa", "loss weighting", "DWA (Liu et al.)", ["train.loss_weighting=dwa"]),
    ("rlw", "loss weighting", "RLW (Lin et al.)", ["train.loss_weighting=rlw"]),
    ("gradnorm", "loss weighting", "GradNorm (Chen et al.)", ["train.loss_weighting=gradnorm"]),
    ("pcgrad", "loss weighting", "PCGrad (Yu et al.)", ["train.loss_weighting=pcgrad"]),
    ("proportional", "sampling", "proportional", ["train.sampling=proportional"]),
    ("temperature", "sampling", "temperature, tau = 2", ["train.sampling=temperature", "train.temperature=2"]),
    ("annealed", "sampling", "annealed (Stickland & Murray)", ["train.sampling=annealed"]),
)
TINY_ROWS = ("hard", "embedding", "gates", "pcgrad", "annealed")


def run_rows(config_path, rows, seeds, budget, root, log, verbose=0):
    """Train every (row, seed); {key: [per-seed {"dev": {task: value}, "seconds_per_step": s}]}."""
    from keras_mtl.compare import train_run
    from keras_mtl.config import load_config

    out = {}
    for key, _, label, overrides in rows:
        out[key] = []
        for seed in seeds:
            loaded = load_config(str(config_path), [*budget, f"seed={seed}", *overrides])
            cfg = loaded.config
            path = Path(root) / f"{key}-seed{seed}"
            started = time.time()
            run = train_run(loaded, path, verbose, True, log)
            history = run["info"].history
            last = history[-1] if history else {}
            dev = {t.name: last.get(f"dev_{t.name}_{t.primary_metric}") for t in cfg.tasks}
            steps = run["info"].epochs * run["info"].steps_per_epoch
            out[key].append({
                "seed": seed,
                "dev": dev,
                "test": {t.name: run["report"]["tasks"].get(t.name, {}).get(t.primary_metric) for t in cfg.tasks},
                "fit_seconds": run["report"]["seconds"]["fit"],
                "seconds_per_step": run["report"]["seconds"]["fit"] / steps,
                "steps": steps,
                "final_loss_weights": run["info"].final_loss_weights,
            })
            log(f"  {key} seed {seed}: dev {dev} ({time.time() - started:.0f} s)")
    return out


def _stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(runs, tasks):
    """Per row: mean/std of each task's dev metric, of their mean, and time per step."""
    table = {}
    for key, seeds in runs.items():
        row = {t: _stat([s["dev"][t] for s in seeds]) for t in tasks}
        means = [statistics.mean(s["dev"][t] for t in tasks) for s in seeds if all(s["dev"][t] is not None for t in tasks)]
        row["mean"] = _stat(means)
        row["seconds_per_step"] = statistics.mean(s["seconds_per_step"] for s in seeds)
        table[key] = row
    return table


def _fmt(stat, scale=100.0):
    mean, std = stat
    if mean is None:
        return "n/a"
    return f"{scale * mean:.2f}" + (f" ± {scale * std:.2f}" if std is not None else "")


def markdown(result):
    if result.get("skipped"):
        return f"Skipped: {result['skipped']}"
    tasks, metrics = result["tasks"], result["primary_metrics"]
    table = result["table"]
    first = next(iter(table))
    base_time = table[first]["seconds_per_step"]
    labels = {k: (g, label) for k, g, label, _ in ROWS}
    header = ["group", "row"] + [f"{t} {metrics[t]}" for t in tasks] + ["mean", "time/step"]
    rows = []
    for key, row in table.items():
        group, label = labels[key]
        rows.append([group, label] + [_fmt(row[t]) for t in tasks] + [_fmt(row["mean"]), f"{row['seconds_per_step'] / base_time:.2f}x"])
    seeds = result["seeds"]
    head = (
        f"`{result['config']}`, from scratch; every row {result['steps']} steps "
        f"({result['epochs']} epochs x {result['steps_per_epoch']}) at batch {result['batch_size']}, "
        f"seeds {', '.join(map(str, seeds))}; dev split after the last epoch, mean"
        f"{' ± std over seeds' if len(seeds) > 1 else ' (one seed: no std)'}; scores in %. "
        f"time/step: fit seconds per step relative to the first row "
        f"({1000 * base_time:.0f} ms/step), backend {result['backend']}.\n\n"
    )
    return head + common.md_table(header, rows)


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="default configs/glue_conll.yaml (--tiny: configs/demo.yaml)")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 (default 2)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=250)
    p.add_argument("--only", help="comma-separated row keys: " + ", ".join(k for k, *_ in ROWS))
    p.add_argument("--workdir", default=None, help="default runs/methods-<config name>")
    p.add_argument("--markdown", default=str(common.ROOT / "BENCHMARKS.md"))
    p.add_argument("--no-markdown", action="store_true")
    args = p.parse_args(argv)
    run = common.Run(NAME, args)
    config_path = Path(args.config) if args.config else (TINY_CONFIG if args.tiny else DEFAULT_CONFIG)
    keys = [k.strip() for k in args.only.split(",")] if args.only else [k for k, *_ in ROWS if not args.tiny or k in TINY_ROWS]
    unknown = [k for k in keys if k not in {r[0] for r in ROWS}]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(k for k, *_ in ROWS)}")
    rows = [r for r in ROWS if r[0] in keys]
    if "hard" not in keys:  # the reference row of time/step and of every "+"
        rows = [ROWS[0], *rows]
    epochs, steps = (2, 5) if args.tiny else (args.epochs, args.steps_per_epoch)
    seeds = list(range(1 if args.tiny else args.seeds))
    budget = [f"train.epochs={epochs}", f"train.steps_per_epoch={steps}"]

    import keras

    from keras_mtl.config import load_config
    from keras_mtl.errors import KerasMTLError

    try:
        cfg = load_config(str(config_path), budget).config
    except KerasMTLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if run.skipped_for_missing_data(cfg):
        return 0
    root = Path(args.workdir or common.ROOT / "runs" / f"methods-{cfg.name}")
    run.say(f"== {NAME}: {common._rel(str(config_path))}, {len(rows)} rows x {len(seeds)} seeds, {epochs} x {steps} steps, into {root}")
    runs = run_rows(config_path, rows, seeds, budget, root, run.say if not args.quiet else (lambda *_: None))
    tasks = cfg.task_names
    run.result.update({
        "config": common._rel(str(config_path)),
        "tasks": tasks,
        "primary_metrics": {t.name: t.primary_metric for t in cfg.tasks},
        "seeds": seeds,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "steps": epochs * steps,
        "batch_size": cfg.train.batch_size,
        "backend": keras.backend.backend(),
        "runs": runs,
        "table": summarize(runs, tasks),
    })
    run.say(markdown(run.result))
    path = run.write()
    if not args.no_markdown and not args.tiny:
        from bench.run_all import SCRIPTS, update_markdown

        update_markdown({n: common.load_result(n, args.results_dir) for n in SCRIPTS}, args.markdown)
        run.say(f"updated {args.markdown}")
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
