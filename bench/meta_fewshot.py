"""Few-shot adaptation to a held-out task: Reptile init vs multi-task init vs scratch.

    python bench/meta_fewshot.py [--tiny] [--meta-steps 200] [--inner-steps 5] \
        [--shots 8 16 32] [--seeds 0 1 2] [--steps 60] [--workdir runs/meta_fewshot]

1. Leak check: the sentences of the new task's test split (subjectivity) that
   occur in the meta-training data (configs/meta_polarity.yaml: polarity +
   CoLA) are counted per split; the meta-training train split must hold none
   (both configs carve dev/test by a hash of the text with the same `splits`,
   so the 4,175 subjective sentences shared with polarity land in the same
   split in both tasks).
2. (a) `keras_mtl.meta.reptile.meta_train` (Reptile) on polarity + CoLA -> WORKDIR/meta.
3. (b) `keras_mtl.training.train` on the same config (plain multi-task training,
   the config's epochs x steps_per_epoch = as many optimizer steps as
   meta_steps x inner_steps) -> WORKDIR/mtl.
4. For K in --shots and every seed: `keras_mtl.meta.adapt.adapt` to subjectivity
   (configs/adapt_subjectivity.yaml) from (a), from (b) and from scratch (c)
   (same network and vocabulary, random weights): K examples per class drawn
   with the seed, `--steps` fine-tuning steps, accuracy on the 10% test split.
   The seed draws the sample and the head's initialization; the same sample
   is used for the three inits.

Reports accuracy mean ± std (sample std over seeds) per init and K, and
writes bench/results/meta_fewshot.json. "Targets": the Reptile init's mean
gain over scratch and over the multi-task init (accuracy points, averaged
over K), >= 0 -- reported, not tuned for.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "meta_fewshot"
INITS = ("meta", "mtl", "scratch")
LABELS = {
    "meta": "(a) meta-learned init (Reptile)",
    "mtl": "(b) multi-task init (train)",
    "scratch": "(c) from scratch",
}


def leak_report(meta_loaded, task_loaded):
    """Counts of the new task's test sentences found in each meta-training split."""
    from keras_mtl.data.load import load_task_data
    from keras_mtl.data.splits import normalize_text

    meta_data = load_task_data(meta_loaded.config)
    new_data = load_task_data(task_loaded.config)
    test = {normalize_text(ex.text) for ex in new_data.splits["test"]}
    pool = {normalize_text(ex.text) for ex in new_data.splits["train"]}
    report = {
        "new_task_test_sentences": len(test),
        "in_meta_train": sum(normalize_text(ex.text) in test for ex in meta_data.splits["train"]),
        "in_meta_dev": sum(normalize_text(ex.text) in test for ex in meta_data.splits["dev"]),
        "in_meta_test": sum(normalize_text(ex.text) in test for ex in meta_data.splits["test"]),
        # Not a leak (no subjectivity label), but worth knowing: texts of the
        # K-shot pool the meta-trained encoder has read as polarity examples.
        "new_task_train_pool_in_meta_train": sum(normalize_text(ex.text) in pool for ex in meta_data.splits["train"]),
        "new_task_train_pool": len(pool),
    }
    return report


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--meta-config", default=str(common.ROOT / "configs" / "meta_polarity.yaml"))
    p.add_argument("--task-config", default=str(common.ROOT / "configs" / "adapt_subjectivity.yaml"))
    p.add_argument("--workdir", default=str(common.ROOT / "runs" / "meta_fewshot"))
    p.add_argument("--meta-steps", type=int, default=200)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=1e-3)
    p.add_argument("--meta-lr", type=float, default=1.0)
    p.add_argument("--shots", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60, help="fine-tuning steps of adapt")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the task config's)")
    p.add_argument("--reuse", action="store_true", help="reuse WORKDIR/meta and WORKDIR/mtl when they exist")
    args = p.parse_args(argv)
    common.quiet_tf()
    run = common.Run(NAME, args)

    import keras

    from keras_mtl.config import load_config
    from keras_mtl.meta.adapt import Adapter
    from keras_mtl.meta.reptile import meta_train
    from keras_mtl.training import train

    overrides = []
    if args.tiny:
        args.meta_steps, args.inner_steps, args.shots, args.seeds, args.steps = 4, 2, [2, 4], [0, 1], 3
        overrides = ["model.hidden_dim=16", "model.num_layers=1", "model.intermediate_dim=32", "model.vocabulary_size=500"]
    meta_loaded = load_config(args.meta_config, overrides)
    task_loaded = load_config(args.task_config)
    total_inner = args.meta_steps * args.inner_steps
    mtl_steps_per_epoch = max(1, total_inner // meta_loaded.config.train.epochs)
    root = Path(args.workdir)
    run.result["settings"] = {
        "meta_config": common._rel(args.meta_config),
        "task_config": common._rel(args.task_config),
        "meta_steps": args.meta_steps,
        "inner_steps": args.inner_steps,
        "inner_lr": args.inner_lr,
        "meta_lr": args.meta_lr,
        "mtl_steps": meta_loaded.config.train.epochs * mtl_steps_per_epoch,
        "shots": args.shots,
        "seeds": args.seeds,
        "adapt_steps": args.steps,
        "adapt_lr": args.lr or task_loaded.config.train.learning_rate,
        "adapt_batch_size": task_loaded.config.train.batch_size,
        "model": meta_loaded.config.model.model_dump(mode="json"),
    }

    # === 1. Leak check ===
    leaks = leak_report(meta_loaded, task_loaded)
    run.result["leak_check"] = leaks
    run.say(
        f"leak check: {leaks['new_task_test_sentences']} subjectivity test sentences; found in meta-training "
        f"train {leaks['in_meta_train']}, dev {leaks['in_meta_dev']}, test {leaks['in_meta_test']}"
    )
    if leaks["in_meta_train"]:
        raise SystemExit("subjectivity test sentences occur in the meta-training train split: fix `splits`")

    # === 2./3. The two pretrained inits ===
    timings = {}
    meta_dir, mtl_dir = root / "meta", root / "mtl"
    if not (args.reuse and (meta_dir / "model.keras").exists()):
        t = time.time()
        meta_train(
            meta_loaded, meta_dir, inner_steps=args.inner_steps, meta_steps=args.meta_steps,
            inner_lr=args.inner_lr, meta_lr=args.meta_lr, eval_every=max(1, args.meta_steps // 4),
            verbose=0 if args.quiet else 1,
        )
        timings["meta_train_s"] = round(time.time() - t, 1)
        keras.backend.clear_session()
    if not (args.reuse and (mtl_dir / "model.keras").exists()):
        t = time.time()
        train(meta_loaded, mtl_dir, overrides=[f"train.steps_per_epoch={mtl_steps_per_epoch}"], verbose=0)
        timings["mtl_train_s"] = round(time.time() - t, 1)
        keras.backend.clear_session()
    for key, d in (("meta", meta_dir), ("mtl", mtl_dir)):
        report = json.loads((d / "report.json").read_text())
        run.result[f"{key}_source_tasks_test"] = report["tasks"]
        run.result[f"{key}_train_seconds"] = report.get("seconds")
        run.say(f"{LABELS[key]} on its own tasks (test): {json.dumps(report['tasks'])}")

    # === 4. Adapt ===
    # One Adapter per init: data, network and compiled functions built once;
    # every run resets the weights (for its seed) and the optimizer state.
    t0 = time.time()
    adapters = {
        "meta": Adapter(meta_dir, task_loaded, learning_rate=args.lr, check_overlap=True),
        "mtl": Adapter(mtl_dir, task_loaded, learning_rate=args.lr, check_overlap=True),
        "scratch": Adapter(meta_dir, task_loaded, init="scratch", learning_rate=args.lr, check_overlap=False),
    }
    run.result["adapt_overlap_check"] = {k: a.overlap for k, a in adapters.items() if k != "scratch"}
    run.say(f"adapt leak check (test sentences in the work dir's train split): {run.result['adapt_overlap_check']}")
    rows = []
    for shots in args.shots:
        for seed in args.seeds:
            for init in INITS:
                r = adapters[init].run(shots, seed=seed, steps=args.steps)
                row = {
                    "init": init, "shots": shots, "seed": seed,
                    "accuracy": r["test"]["accuracy"], "macro_f1": r["test"].get("macro_f1"),
                    "final_train_loss": r["final_train_loss"],
                    "test_examples": r["test_examples"], "seconds": r["seconds"],
                }
                rows.append(row)
                run.say(
                    f"K={shots:>3} seed={seed} {init:<8} accuracy={100 * row['accuracy']:.2f}  "
                    f"final train loss={row['final_train_loss']:.3f}  ({r['seconds']:.0f} s)"
                )
    timings["adapt_s"] = round(time.time() - t0, 1)
    run.result["timings"] = timings
    run.result["runs"] = rows

    table = {}
    for init in INITS:
        for shots in args.shots:
            acc = [r["accuracy"] for r in rows if r["init"] == init and r["shots"] == shots]
            m, s = mean_std(acc)
            table[f"{init}/{shots}"] = {"mean": m, "std": s, "n": len(acc)}
    run.result["table"] = table
    run.say()
    run.say(markdown(run.result))

    def gain(other):
        diffs = [table[f"meta/{k}"]["mean"] - table[f"{other}/{k}"]["mean"] for k in args.shots]
        return 100 * statistics.fmean(diffs)

    run.target("Reptile init - scratch, accuracy points (mean over K)", gain("scratch"), 0.0, True, " pts")
    run.target("Reptile init - multi-task init, accuracy points (mean over K)", gain("mtl"), 0.0, True, " pts")
    run.write()
    return 0


def markdown(result):
    settings = result["settings"]
    shots = settings["shots"]
    header = ["init"] + [f"K = {k}" for k in shots]
    rows = []
    for init in INITS:
        cells = [LABELS[init]]
        for k in shots:
            cell = result["table"][f"{init}/{k}"]
            cells.append("n/a" if cell["mean"] is None else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}")
        rows.append(cells)
    lines = [
        f"Subjectivity test accuracy (%), mean ± std over {len(settings['seeds'])} seeds "
        f"({result['leak_check']['new_task_test_sentences']} test sentences), "
        f"{settings['adapt_steps']} fine-tuning steps at lr {settings['adapt_lr']:g}:",
        "",
        common.md_table(header, rows),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
