"""`keras-mtl evaluate WORKDIR`: per-task metrics of a trained work dir."""

import json

HELP = "per-task metrics of a trained work dir"


def add_arguments(parser):
    parser.add_argument("workdir", help="a trained work dir")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"], help="the split to score (default test)")
    parser.add_argument("--json", action="store_true", help='print {"tasks": {task: {metric: value}}} as JSON')


def run(args):
    # lazy: imports TensorFlow/Keras (start-up time of --help and argument errors)
    from keras_mtl.evaluation import evaluate_run, report_markdown

    result = evaluate_run(args.workdir, split=args.split)
    if args.json:
        print(json.dumps({"tasks": result["tasks"]}, indent=2))
    else:
        print(report_markdown(f"{args.workdir}: {args.split} metrics", result["tasks"], result["examples"]))
    return 0
