"""`keras-mtl compare CONFIG`: the multi-task model vs one single-task model per task.

    from keras_mtl.compare import compare
    result = compare("configs/glue_conll.yaml", "runs/glue_conll-compare", seeds=3)

For every seed (default 3) it trains the config's multi-task model and one
single-task model per target task at the same per-task budget (default: the
task labels the multi-task run sees), exports them, and writes
`compare.json`, `compare.md` and plots with per-task metrics, parameters,
time, serving throughput and delta_m, each difference with a 95% paired
bootstrap confidence interval over the test examples and a verdict (better /
worse / not distinguishable). The budget rule, the files, the bootstrap and
the delta_m formula: docs/compare.md.

The package, one job a module:

    stats.py    delta_m, verdicts, the paired bootstrap (pure functions)
    plan.py     the multi-task plan and the single-task budgets
    runs.py     train or reuse a sub-run (markers, records), its predictions
    serving.py  the exported models' serving throughput
    report.py   compare.md and the plots
    core.py     compare(): the seeds, the sub-runs, the scores, the report

`keras-mtl compare`'s arguments live with the other commands, in
keras_mtl/cli/compare.py (`python -m keras_mtl.compare` runs that command).
"""

from keras_mtl.compare.core import (
    DEFAULT_SEEDS, ComparisonPlan, compare, comparison_plan, plan_data, score_against_baselines,
)
from keras_mtl.compare.plan import (
    BUDGETS, DEFAULT_BUDGET, capped_plan, config_with, entry_label_sets, label_overlap, label_sets_of, subset_raw,
    task_budgets,
)
from keras_mtl.compare.report import compare_markdown, metric_scale, write_plots
from keras_mtl.compare.runs import (
    COMPARE_FILES,
    CONTENT_PREFIX,
    LATER_FIELDS,
    RECORD_FILES,
    examples_fingerprint,
    is_finished,
    labels_at,
    paired_samples,
    recorded_result,
    run_marker,
    train_run,
)
from keras_mtl.compare.serving import earlier_serving, fixed_inputs, models_digest, serving_calls, serving_throughput
from keras_mtl.compare.stats import (
    BETTER,
    DEFAULT_REPLICATES,
    LEVEL,
    NEAR_ZERO,
    UNDECIDED,
    WORSE,
    bootstrap_compare,
    delta_m,
    higher_is_better,
    mean_std,
    resample_indices,
    resample_keys,
    resample_seeds,
    verdict,
    verdict_settled,
)

__all__ = [
    "BETTER", "BUDGETS", "COMPARE_FILES", "CONTENT_PREFIX", "ComparisonPlan", "DEFAULT_BUDGET", "DEFAULT_REPLICATES",
    "DEFAULT_SEEDS", "LATER_FIELDS", "LEVEL", "NEAR_ZERO", "RECORD_FILES", "UNDECIDED", "WORSE",
    "bootstrap_compare", "capped_plan", "compare", "compare_markdown", "comparison_plan", "config_with",
    "delta_m", "earlier_serving", "entry_label_sets", "examples_fingerprint", "fixed_inputs", "higher_is_better",
    "is_finished", "label_overlap", "label_sets_of", "labels_at", "mean_std", "metric_scale", "models_digest",
    "paired_samples", "plan_data", "recorded_result", "resample_indices", "resample_keys", "resample_seeds",
    "run_marker", "score_against_baselines", "serving_calls", "serving_throughput", "subset_raw", "task_budgets", "train_run", "verdict", "verdict_settled", "write_plots",
]
