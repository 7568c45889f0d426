"""`keras-mtl train CONFIG`: train the multi-task model of a config into a work dir."""

import os

from keras_mtl.config import load_config

HELP = "train the multi-task model of a config"


def add_arguments(parser):
    parser.add_argument("config", help="experiment YAML")
    parser.add_argument("--workdir", help="output dir (default runs/<name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--max-steps", type=int, help="cap the total training steps (>= 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    parser.add_argument("--fresh", action="store_true",
                        help="discard the backup of a killed run (WORKDIR/backup/) and start over")


def run(args):
    from keras_mtl.training import train  # lazy: imports TensorFlow/Keras (start-up time of --help and argument errors)

    loaded = load_config(args.config, args.set)
    workdir = args.workdir or os.path.join("runs", loaded.config.name)
    report = train(loaded, workdir=workdir, max_steps=args.max_steps, verbose=0 if args.quiet else 1, fresh=args.fresh)
    print(open(os.path.join(workdir, "report.md"), encoding="utf-8").read())
    print(f"work dir: {workdir}")
    return 0 if report else 1
