"""`keras-mtl finetune WORKDIR --task T`: MT-DNN's second stage, one task of a multi-task run."""

import os

HELP = "fine-tune a trained multi-task run on one of its tasks (MT-DNN's second stage)"


def add_arguments(parser):
    parser.add_argument("workdir", help="work dir of the trained multi-task run")
    parser.add_argument("--task", required=True, help="the task to fine-tune (one of the run's)")
    parser.add_argument("--workdir", dest="out", help="output dir (default runs/<run name>-<task>-finetuned)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the fine-tuned run's config (its budget: train.epochs, ...)")
    parser.add_argument("--max-steps", type=int, help="cap the total training steps (>= 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    parser.add_argument("--fresh", action="store_true",
                        help="discard the backup of a killed run (WORKDIR/backup/) and start over")


def run(args):
    # lazy: imports TensorFlow/Keras (start-up time of --help and argument errors)
    from keras_mtl.finetuning import finetune, finetune_config
    from keras_mtl.run import load_run

    loaded = finetune_config(load_run(args.workdir), args.task, args.set)
    out = args.out or os.path.join("runs", loaded.config.name)
    finetune(args.workdir, args.task, out=out, overrides=args.set, max_steps=args.max_steps,
             verbose=0 if args.quiet else 1, fresh=args.fresh)
    print(open(os.path.join(out, "report.md"), encoding="utf-8").read())
    print(f"work dir: {out}")
    return 0
