"""`keras-mtl search CONFIG`: search task loss weights (and any config field) with KerasTuner."""

import argparse

from keras_mtl.errors import ConfigError
from keras_mtl.search import ALGORITHMS, WEIGHT_VALUES, format_trials, parse_choice_values, search

HELP = "search task loss weights (and sampling temperature) with KerasTuner"


def _weights_arg(text):
    if text.strip().lower() == "log":
        return "log"
    if text.strip().lower() == "none":
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'log' or comma-separated numbers, got {text!r}") from None


def _choices_arg(items):
    """{key: [values]} from the `--choice KEY=V1,V2,...` strings."""
    out = {}
    for item in items or ():
        key, sep, values = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"search: --choice {item!r}: expected KEY=V1,V2,... (e.g. train.learning_rate=2e-5,5e-5)")
        out[key.strip()] = parse_choice_values(values)
    return out


def add_arguments(parser):
    parser.add_argument("config")
    parser.add_argument("--workdir", help="output dir (default runs/<name>-search)")
    parser.add_argument("--algorithm", default="random", help=f"one of {', '.join(ALGORITHMS)} (default random)")
    parser.add_argument("--trials", type=int, default=10, help="number of training runs (default 10)")
    parser.add_argument("--objective", default="mean", help="mean (default), min or a task name: what the search maximizes")
    parser.add_argument("--max-steps", type=int, help="cap the training steps of each trial")
    parser.add_argument("--search-temperature", action="store_true", help="also search train.temperature (sampling: temperature)")
    parser.add_argument(
        "--weights",
        type=_weights_arg,
        default=WEIGHT_VALUES,
        help="loss weights to choose from, comma-separated (default 0.25,0.5,1,2,4), 'log' for log-uniform "
        "[0.1, 10], or 'none' (the weights are not searched)",
    )
    parser.add_argument("--choice", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="also search a config field among these values, e.g. train.learning_rate=2e-5,3e-5,5e-5 "
                        "(repeatable)")
    parser.add_argument("--tasks", help="comma-separated tasks whose weight is searched (default all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (every trial)")
    parser.add_argument("--seed", type=int, default=0, help="the search's seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the search in --workdir")
    parser.add_argument("--quiet", action="store_true")


def run(args):
    result = search(
        args.config,
        workdir=args.workdir,
        algorithm=args.algorithm,
        trials=args.trials,
        objective=args.objective,
        overrides=args.set,
        max_steps=args.max_steps,
        search_temperature=args.search_temperature,
        weights=args.weights,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
        choices=_choices_arg(args.choice),
        seed=args.seed,
        resume=args.resume,
        verbose=0 if args.quiet else 1,
    )
    print(format_trials(result))
    print()
    print(result["yaml"], end="")
    print(f"\nbest config: {result['best_config']}")
    return 0
