"""`keras-mtl data CONFIG`: counts, labels, lengths and overlaps of a config's data."""

import json

from keras_mtl.config import load_config
from keras_mtl.data.summary import format_summary
from keras_mtl.prepare import data_summary

HELP = "counts, labels, lengths and overlaps of a config's data"


def add_arguments(parser):
    parser.add_argument("config", help="experiment YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON (every cross-split leak pair)")


def run(args):
    loaded = load_config(args.config, args.set)
    summary = data_summary(loaded)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary, verbose=args.verbose))
    return 0
