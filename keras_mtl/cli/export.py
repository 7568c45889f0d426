"""`keras-mtl export WORKDIR`: a versioned SavedModel for TF Serving; prints the version dir."""

from keras_mtl.serving.export import export

HELP = "write a versioned SavedModel for TF Serving"


def add_arguments(parser):
    parser.add_argument("workdir", help="a trained work dir")
    parser.add_argument("--out", help="model base dir (default saved_models/<name>)")
    parser.add_argument("--keep", type=int, help="keep only the newest N versions")
    parser.add_argument("--tasks", help="export only these tasks (comma-separated): their heads and signatures")


def run(args):
    print(export(args.workdir, out=args.out, keep=args.keep, tasks=args.tasks))
    return 0
