"""`keras-mtl adapt WORKDIR NEW_TASK_CONFIG --shots K`: fit a new task from K examples per class."""

import json

from keras_mtl.meta.adapt import INITS, adapt, format_adapt_result

HELP = "fit a new task from K examples per class, starting from a work dir"


def add_arguments(parser):
    parser.add_argument("workdir", help="work dir of meta-train (or train) to start from")
    parser.add_argument("new_task_config", help="config holding the new classification task")
    parser.add_argument("--shots", type=int, required=True, help="training examples per class (K)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the K-shot sample and the head (default 0)")
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps (default 100)")
    parser.add_argument("--init", choices=INITS, default="pretrained", help="pretrained (default) or scratch (baseline)")
    parser.add_argument("--task", help="the task to adapt to when the config has several")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the config's train.learning_rate)")
    parser.add_argument("--batch-size", type=int,
                        help="fine-tuning batch size (default: train.batch_size, capped at the sample size)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of the new-task config")
    parser.add_argument("--out", help="save the adapted network as a work dir here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args):
    result = adapt(
        args.workdir,
        args.new_task_config,
        args.shots,
        seed=args.seed,
        steps=args.steps,
        overrides=args.set,
        task=args.task,
        init=args.init,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        out=args.out,
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "sample"}, indent=2))
    else:
        print(format_adapt_result(result))
    return 0
