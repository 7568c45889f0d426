"""`keras-mtl compare CONFIG`: single-task baselines vs the multi-task model (docs/compare.md)."""

import os
from pathlib import Path

from keras_mtl.compare import BUDGETS, DEFAULT_BUDGET, DEFAULT_REPLICATES, DEFAULT_SEEDS, compare
from keras_mtl.config import load_config

HELP = "single-task baselines vs the multi-task model: per-task deltas and delta-m with 95% bootstrap CIs"


def add_arguments(parser):
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
        "--bootstrap", type=int, default=DEFAULT_REPLICATES, metavar="N",
        help=f"paired bootstrap replicates of the 95%% confidence intervals (default {DEFAULT_REPLICATES})",
    )
    parser.add_argument("--serving-texts", type=int, default=256, help="test texts timed through the SavedModels (0: skip)")
    parser.add_argument("--no-reuse", action="store_true", help="retrain sub-runs even if an identical finished one exists")
    parser.add_argument("--distill", action="store_true",
                        help="also train the multi-task model distilled from each seed's single-task runs (teacher annealing)")
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune each seed's multi-task run on each target task with its single-task "
                        "budget (MT-DNN's second stage) and compare those models too")
    parser.add_argument("--records", metavar="DIR",
                        help="keep every finished sub-run's records (no model) and the report in DIR, and reuse "
                        "the sub-runs recorded there: a comparison spread over sessions or machines")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")


def run(args):
    """Run the comparison; prints compare.md and the work dir."""
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
        finetune=args.finetune,
        records=args.records,
    )
    print((Path(workdir) / "compare.md").read_text(encoding="utf-8"))
    print(f"work dir: {workdir}")
    return 0
