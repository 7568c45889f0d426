"""compare.md and the plots of a comparison (from the `compare.json` dict)."""

import math
from pathlib import Path

import numpy as np

from keras_mtl.compare.stats import BETTER, MC_Z, UNDECIDED, WORSE


def metric_scale(metric):
    return 1.0 if metric == "mse" else 100.0



def format_stat(stat, metric):
    if stat["mean"] is None:
        return "n/a"
    k = metric_scale(metric)
    digits = 4 if metric == "mse" else 2
    text = f"{k * stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {k * stat['std']:.{digits}f}"
    return text



def format_interval(low, high, k=1.0, digits=2, signed=True):
    if low is None or high is None:
        return "n/a"
    f = "+" if signed else ""
    return f"[{k * low:{f}.{digits}f}, {k * high:{f}.{digits}f}]"
BUDGET_TEXT = {
    "labelled": "task-t labels the multi-task run sees, counting examples shared by tasks",
    "drawn": "examples drawn for the task: p_t x batch x total steps",
}



def verdict_cell(ci, fallback="n/a"):
    """A verdict cell: the interval's verdict, marked where the replicate count does not settle it."""
    if not ci:
        return fallback
    return ci.get("verdict", fallback) + (" (unsettled)" if ci.get("settled") is False else "")



def unsettled_names(task_cis, dm_ci, label=""):
    """The names of the verdicts (tasks, then `Δm`) whose interval the replicate count does not settle."""
    names = [f"{label}{t}" for t, ci in task_cis.items() if (ci or {}).get("settled") is False]
    return names + ([f"{label}Δm"] if (dm_ci or {}).get("settled") is False else [])



def unsettled_verdicts(result):
    """`unsettled_names` of a report: the multi-task model's, then the distilled and fine-tuned ones'."""
    found = []
    for label, part in (("", result), ("distilled ", result.get("distilled")), ("finetuned ", result.get("finetuned"))):
        if part:
            found += unsettled_names({t: row.get("ci") for t, row in part["metrics"].items()},
                                      part["delta_m"].get("ci"), label)
    return found



def compare_markdown(result):
    """compare.md: the report of a comparison (`compare.json`'s dict), section by section."""
    lines = []
    for section in (_summary_lines, _delta_m_lines, _interval_lines, _distilled_lines, _finetuned_lines,
                    _other_metric_lines, _budget_lines, _cost_lines, _serving_lines):
        lines += section(result)
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in result["plots"]) + "."]
    lines += ["", f"Compared in {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _summary_lines(result):
    """The title, the method and the main table: per task, both models and the gain."""
    names, n, dm, boot = result["tasks"], len(result["seeds"]), result["delta_m"], result.get("bootstrap")
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
        k = metric_scale(m)
        digits = 4 if m == "mse" else 2
        arrow = "" if row["higher_is_better"] else " (lower is better)"
        gain = "n/a" if pt["gain"] is None else f"{k * pt['gain']:+.{digits}f}"
        rel = "n/a" if pt["relative_pct"] is None else f"{pt['relative_pct']:+.2f}"
        ci = row.get("ci")
        interval = format_interval(ci["gain"]["low"], ci["gain"]["high"], k, digits) if ci else "n/a"
        lines.append(
            f"| {t} | {m}{arrow} | {format_stat(row['mtl'], m)} | {format_stat(row['single'], m)} | {gain} | {interval} | "
            f"{verdict_cell(ci, row.get('verdict', 'n/a'))} | {rel} | {'yes' if pt['included'] else 'no'} |"
        )
    return lines


def _delta_m_lines(result):
    """Delta-m with its interval, unsettled verdicts, delta-m per seed, tasks left out."""
    names, n, dm, boot = result["tasks"], len(result["seeds"]), result["delta_m"], result.get("bootstrap")
    pct = f"{100 * boot['level']:g}%" if boot else "95%"
    lines = []
    value = dm["value_pct"]
    dci = dm.get("ci")
    lines += [
        "",
        (
            f"**Δm = {value:+.2f}%**"
            + (f", {pct} CI {format_interval(dci['low'], dci['high'])}%: **{verdict_cell(dci)}**," if dci and dci["low"] is not None else "")
            + f" over {len(dm['included'])} of {len(names)} tasks"
        )
        if value is not None
        else "**Δm = n/a** (no task has a usable baseline)",
        "",
        f"Sign convention: {dm['convention']} Δ abs and Δ rel are sign-adjusted the same way "
        "(> 0: the multi-task model is better).",
    ]
    unsettled = unsettled_verdicts(result) if boot else []
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
    return lines


def _interval_lines(result):
    """The confidence-interval table of each model and of the gain."""
    names, dm, boot = result["tasks"], result["delta_m"], result.get("bootstrap")
    pct = f"{100 * boot['level']:g}%" if boot else "95%"
    dci = dm.get("ci")
    lines = []
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
            k, digits = metric_scale(m), (4 if m == "mse" else 2)

            def point(x, signed=False):
                return "n/a" if x["point"] is None else f"{k * x['point']:{'+' if signed else ''}.{digits}f}"

            if not ci or ci["mtl"]["point"] is None:
                lines.append(f"| {t} | {ci.get('n', 0)} | n/a | | n/a | | n/a | | n/a |")
                continue
            lines.append(
                f"| {t} | {ci['n']} | {point(ci['mtl'])} | {format_interval(ci['mtl']['low'], ci['mtl']['high'], k, digits, False)} | "
                f"{point(ci['single'])} | {format_interval(ci['single']['low'], ci['single']['high'], k, digits, False)} | "
                f"{point(ci['gain'], True)} | {format_interval(ci['gain']['low'], ci['gain']['high'], k, digits)} | {verdict_cell(ci)} |"
            )
        lines += [
            "",
            "Points: the mean over seeds of each seed's test score (the means of the first table). "
            f"Δm's interval uses {dci['replicates_used'] if dci else 0} of {boot['replicates']} replicates "
            "(a replicate whose baseline is 0 has no relative change). The paired samples: "
            f"`{boot['predictions']}`.",
        ]
    return lines


def _distilled_lines(result):
    """The distilled multi-task model against the same baselines."""
    return _variant_lines(
        result, "distilled", "Distilled multi-task model",
        "The multi-task model trained again on the same budget, each task learning from its seed's single-task "
        "run (`teacher`) with teacher annealing: target = λ gold + (1 - λ) teacher, λ from 0 to 1 "
        "(keras_mtl.distill).",
        lambda d: f". Fit time {d['fit_seconds']['mean']:.1f} s (mean over seeds).",
    )


def _finetuned_lines(result):
    """The multi-task run fine-tuned on each target task (MT-DNN) against the same baselines."""
    def cost(f):
        steps = ", ".join(f"{t} {n}" for t, n in f["steps"].items())
        return (
            f". Cost: the multi-task run, then {f['models']} fine-tuning runs ({steps} steps: the single-task "
            f"budgets; fit {f['fit_seconds']['mean']:.1f} s, mean over seeds), and {f['models']} models at serving "
            f"time ({f['params']:,} parameters in all), as many as the single-task models."
        )

    return _variant_lines(
        result, "finetuned", "Fine-tuned per task (MT-DNN)",
        "Each seed's multi-task run fine-tuned on each target task alone, with that task's single-task budget, "
        "starting from the shared encoder and the task's head (MT-DNN's second stage, `keras-mtl finetune`); "
        "task t is answered by the run fine-tuned on t.",
        cost,
    )


def _variant_lines(result, key, title, intro, tail):
    """A section for another model of the multi-task run's (distilled, fine-tuned) against the same baselines."""
    names, n, boot = result["tasks"], len(result["seeds"]), result.get("bootstrap")
    pct = f"{100 * boot['level']:g}%" if boot else "95%"
    lines = []
    d = result.get(key)
    if d:
        ddm, ddci = d["delta_m"], d["delta_m"].get("ci")
        lines += [
            "",
            f"## {title}",
            "",
            intro,
            "",
            f"| task | metric | {key} | single-task | Δ abs (points) | {pct} CI of Δ abs | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in names:
            row, pt = d["metrics"][t], ddm["per_task"][t]
            m, k = row["metric"], metric_scale(row["metric"])
            digits = 4 if m == "mse" else 2
            gain = "n/a" if pt["gain"] is None else f"{k * pt['gain']:+.{digits}f}"
            ci = row.get("ci")
            interval = format_interval(ci["gain"]["low"], ci["gain"]["high"], k, digits) if ci else "n/a"
            lines.append(f"| {t} | {m} | {format_stat(row['mtl'], m)} | {format_stat(row['single'], m)} | {gain} | {interval} | "
                         f"{verdict_cell(ci, row.get('verdict', 'n/a'))} |")
        if ddm["value_pct"] is not None:
            lines += [
                "",
                f"**Δm ({key}) = {ddm['value_pct']:+.2f}%**"
                + (f", {pct} CI {format_interval(ddci['low'], ddci['high'])}%: **{verdict_cell(ddci)}**" if ddci and ddci["low"] is not None else "")
                + ("; per seed: " + ", ".join(f"{v:+.2f}%" if v is not None else "n/a" for v in ddm["per_seed_pct"])
                   if n > 1 else "")
                + tail(d),
            ]
    return lines


def _other_metric_lines(result):
    """Every metric of a task besides its primary one."""
    names = result["tasks"]
    lines = []
    others = [
        (t, m, v) for t in names for m, v in result["metrics"][t]["all"].items() if m != result["metrics"][t]["metric"]
    ]
    if others:
        lines += ["", "Other metrics (not in Δm):", "", "| task | metric | multi-task | single-task |", "|---|---|---|---|"]
        for t, m, v in others:
            lines.append(f"| {t} | {m} | {format_stat(v['mtl'], m)} | {format_stat(v['single'], m)} |")
    return lines


def _budget_lines(result):
    """The multi-task plan and each task's single-task budget (auxiliary tasks: what they drew)."""
    names = result["tasks"]
    lines = []
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
    return lines


def _cost_lines(result):
    """Parameters, steps and fit time of the multi-task model against the single-task models."""
    names = result["tasks"]
    lines = []
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
    return lines


def _serving_lines(result):
    """The serving throughput of the exported models."""
    names = result["tasks"]
    lines = []
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
    return lines


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
        k = metric_scale(m)
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
        [0.0 if g is None else metric_scale(result["metrics"][t]["metric"]) * g for t, g in zip(names, gains)],
        color=["lightgray" if g is None else ("tab:green" if g >= 0 else "tab:red") for g in gains],
    )
    has_ci = False
    for xi, t, g in zip(x, names, gains):
        if g is not None:
            k = metric_scale(result["metrics"][t]["metric"])
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
