"""`keras-mtl meta-train CONFIG`: Reptile meta-training of the shared encoder (docs/meta_learning.md)."""

from pathlib import Path

from keras_mtl.meta.reptile import INNER_OPTIMIZERS, meta_train

HELP = "Reptile meta-training of the shared encoder across the configured tasks"


def add_arguments(parser):
    parser.add_argument("config", help="experiment config whose tasks are meta-trained on")
    parser.add_argument("--workdir", help="output dir (default runs/<name>-meta)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--inner-steps", type=int, default=5, help="optimizer steps per task per meta step (k, default 5)")
    parser.add_argument("--meta-steps", type=int, default=200, help="outer Reptile steps (default 200)")
    parser.add_argument("--inner-lr", type=float, default=1e-3, help="inner optimizer learning rate (default 1e-3)")
    parser.add_argument("--meta-lr", type=float, default=1.0, help="outer step size epsilon in (0, 1] (default 1.0)")
    parser.add_argument("--meta-batch-size", type=int, default=1, help="tasks per meta step (default 1)")
    parser.add_argument("--inner-batch-size", type=int, help="examples per inner batch (default train.batch_size)")
    parser.add_argument("--inner-optimizer", choices=INNER_OPTIMIZERS, default="adam")
    parser.add_argument("--task-sampling", default="uniform", help="uniform (default) or a train.sampling strategy")
    parser.add_argument("--no-anneal", action="store_true", help="keep meta-lr constant (default: linear decay to 0)")
    parser.add_argument("--eval-every", type=int, help="score the dev split every N meta steps (always at the end)")
    parser.add_argument("--quiet", action="store_true")


def run(args):
    root = meta_train(
        args.config,
        workdir=args.workdir,
        inner_steps=args.inner_steps,
        meta_steps=args.meta_steps,
        inner_lr=args.inner_lr,
        meta_lr=args.meta_lr,
        overrides=args.set,
        meta_batch_size=args.meta_batch_size,
        inner_batch_size=args.inner_batch_size,
        inner_optimizer=args.inner_optimizer,
        task_sampling=args.task_sampling,
        anneal=not args.no_anneal,
        eval_every=args.eval_every,
        verbose=0 if args.quiet else 1,
    )
    print((Path(root) / "report.md").read_text(encoding="utf-8"))
    print(f"work dir: {root}")
    return 0
