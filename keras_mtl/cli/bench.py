"""`keras-mtl bench [ARGS]`: run bench/run_all.py (in a source checkout) with ARGS."""

import argparse
import importlib.util
import sys
from pathlib import Path

from keras_mtl.errors import KerasMTLError

HELP = "run the benchmarks (bench/run_all.py) and print their figures"
# Every argument after `bench` goes to bench/run_all.py unparsed (`--help` too; no --verbose or number checks here).
FORWARDS_ARGUMENTS = True


def add_arguments(parser):
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="arguments of bench/run_all.py (see python bench/run_all.py --help)")


def run(args):
    script = Path(__file__).resolve().parents[2] / "bench" / "run_all.py"
    if not script.exists():
        raise KerasMTLError(f"{script}: the benchmark scripts live in the source checkout (bench/)")
    spec = importlib.util.spec_from_file_location("bench_run_all", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent.parent))
    spec.loader.exec_module(module)
    program = sys.argv[0]
    sys.argv[0] = "keras-mtl bench"  # run_all's usage and error lines name this command
    try:
        return module.main(args.bench_args)
    finally:
        sys.argv[0] = program
