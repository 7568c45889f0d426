"""`keras-mtl`: the command line. Parses arguments, calls the library; no logic.

    keras-mtl [--verbose] train CONFIG [--workdir DIR] [--set KEY=VALUE ...] [--max-steps N]
    keras-mtl evaluate WORKDIR [--split test] [--json]
    keras-mtl export WORKDIR [--out saved_models/<name>] [--keep N]
    keras-mtl predict MODEL_DIR|URL TEXT... [--text-pair P ...] | --input FILE.jsonl|.tsv [--output OUT.jsonl] [--task T] [--strict]
    keras-mtl data CONFIG [--json]
    keras-mtl serve saved_models/<name> [--port 8500 --rest-port 8501] [--dry-run]
    keras-mtl compare CONFIG [--seeds 3] [--tasks a,b] [--max-steps N] [--budget labelled|drawn] [--bootstrap 1000] [--distill] [--records DIR]
    keras-mtl meta-train CONFIG / keras-mtl adapt WORKDIR NEW_TASK_CONFIG --shots K
    keras-mtl search CONFIG [--algorithm random|grid|bayesian] [--trials N]
    keras-mtl bench [--tiny]

User errors (bad arguments, config, data, model dir, request) print one line
per problem, `keras-mtl <command>: error: ...`, and exit with status 2, never
a traceback; anything else is a bug and keeps its traceback.

stderr is for what the user needs: TensorFlow's C++ start-up lines (oneDNN,
`cudart_stub`, `failed call to cuInit`), absl/TensorFlow Python log records
and third-party warnings are hidden unless `--verbose` (before or after the
command) is given.
"""

import argparse
import contextlib
import json
import math
import os
import re
import sys

from keras_mtl.errors import KerasMTLError

PROG = "keras-mtl"


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one `PROG: error: ...` line (exit 2)."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# The smallest value each integer option accepts (by dest, in every command):
# a count of steps, seeds or examples below it is a user error, not a silent
# "use the default" or a traceback deep inside.
_INT_MINIMUM = {
    "max_steps": 1,
    "seeds": 1,
    "trials": 1,
    "shots": 1,
    "steps": 1,
    "inner_steps": 1,
    "meta_steps": 1,
    "meta_batch_size": 1,
    "inner_batch_size": 1,
    "batch_size": 1,
    "eval_every": 1,
    "serving_texts": 0,
    "seed": 0,
    "port": 1,
    "rest_port": 1,
}
_INT_MAXIMUM = {"port": 65535, "rest_port": 65535}


def _checked_int(minimum, maximum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


# Float options that must be > 0 (learning rates, step sizes), by dest.
_POSITIVE_FLOATS = ("lr", "inner_lr", "meta_lr")


def _checked_float(positive):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _check_numbers(parser):
    """Give int options of `parser` their minimum; every float option must be finite."""
    for action in parser._actions:
        if action.type is int:
            if action.dest in _INT_MINIMUM:
                action.type = _checked_int(_INT_MINIMUM[action.dest], _INT_MAXIMUM.get(action.dest))
        elif action.type is float:
            action.type = _checked_float(action.dest in _POSITIVE_FLOATS)


def _add_verbose(parser, default=False):
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=default,
        help="also show library log lines and warnings (TensorFlow start-up, Keras, absl)",
    )


def build_parser():
    p = _Parser(prog=PROG, description="Multi-task Transformers on Keras 3.")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    _add_verbose(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train the multi-task model of a config")
    t.add_argument("config", help="experiment YAML")
    t.add_argument("--workdir", help="output dir (default runs/<name>)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    t.add_argument("--max-steps", type=int, help="cap the total training steps (>= 1)")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    t.add_argument("--fresh", action="store_true", help="discard the backup of a killed run (WORKDIR/backup/) and start over")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("evaluate", help="per-task metrics of a trained work dir")
    e.add_argument("workdir", help="a trained work dir")
    e.add_argument("--split", default="test", choices=["train", "dev", "test"], help="the split to score (default test)")
    e.add_argument("--json", action="store_true", help='print {"tasks": {task: {metric: value}}} as JSON')
    e.set_defaults(fn=_cmd_evaluate)

    x = sub.add_parser("export", help="write a versioned SavedModel for TF Serving")
    x.add_argument("workdir", help="a trained work dir")
    x.add_argument("--out", help="model base dir (default saved_models/<name>)")
    x.add_argument("--keep", type=int, help="keep only the newest N versions")
    x.add_argument("--tasks", help="export only these tasks (comma-separated): their heads and signatures")
    x.set_defaults(fn=_cmd_export)

    pr = sub.add_parser("predict", help="predict every task for some texts, or for every line of a file")
    pr.add_argument("model", help="saved_models/<name>[/<version>], http://host:8501/v1/models/<name> or grpc://host:8500/<name>")
    pr.add_argument("texts", nargs="*", help="texts to predict (one JSON object per text is printed); or --input")
    pr.add_argument("--input", metavar="FILE", help="predict every line of FILE (.jsonl: {\"text\": ...[, \"text_pair\": ...]}; .tsv: text[<TAB>text_pair]), streaming")
    pr.add_argument("--output", metavar="FILE", help="with --input: write the JSON lines to FILE (default stdout)")
    pr.add_argument("--task", help="predict with this task's own signature: only its predictions (and _meta); a sentence-pair task needs --text-pair (or text_pair in --input)")
    pr.add_argument("--text-pair", action="append", metavar="PAIR", dest="text_pairs", help="the second text of a sentence pair, once per TEXT, in order (with --task PAIR_TASK)")
    pr.add_argument("--batch-size", type=int, help="texts per model call or server request (default 32)")
    pr.add_argument("--format", choices=["jsonl", "tsv"], help="with --input: the file's format (default: from its extension)")
    pr.add_argument("--header", action="store_true", help="with --input: the TSV's first line is a header")
    pr.add_argument("--strict", action="store_true", help="with --input: a bad line is an error (nothing is written) instead of an error line")
    pr.set_defaults(fn=_cmd_predict)

    d = sub.add_parser("data", help="counts, labels, lengths and overlaps of a config's data")
    d.add_argument("config", help="experiment YAML")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    d.add_argument("--json", action="store_true", help="print the full report as JSON (every cross-split leak pair)")
    d.set_defaults(fn=_cmd_data)

    s = sub.add_parser("serve", help="write TF Serving configs and start (or print how to start) the server")
    s.add_argument("model_base", help="the export's model base dir (saved_models/<name>)")
    s.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    s.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    s.add_argument("--dry-run", action="store_true", help="write the config files and print the commands; do not start")
    s.set_defaults(fn=_cmd_serve)
    # Commands whose arguments are defined next to their implementation.
    for name, module, add, run, text in (
        ("compare", "keras_mtl.compare", "add_compare_arguments", "run_compare_cli",
         "single-task baselines vs the multi-task model: per-task deltas and delta-m with 95%% bootstrap CIs"),
        ("meta-train", "keras_mtl.meta.reptile", "add_meta_train_arguments", "run_meta_train_cli",
         "Reptile meta-training of the shared encoder across the configured tasks"),
        ("adapt", "keras_mtl.meta.adapt", "add_adapt_arguments", "run_adapt_cli",
         "fit a new task from K examples per class, starting from a work dir"),
        ("search", "keras_mtl.search", "add_search_arguments", "run_search_cli",
         "search task loss weights (and sampling temperature) with KerasTuner"),
    ):
        c = sub.add_parser(name, help=text)
        c.set_defaults(fn=_lazy(module, run))
        _add_arguments(c, module, add)
    for command in sub.choices.values():
        # `--verbose` after the command too; SUPPRESS keeps a `--verbose`
        # given before it.
        _add_verbose(command, default=argparse.SUPPRESS)
        _check_numbers(command)
    b = sub.add_parser("bench", help="run the benchmarks (bench/run_all.py) and print their figures")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of bench/run_all.py (see python bench/run_all.py --help)")
    b.set_defaults(fn=_cmd_bench)
    p.set_defaults(commands=sub.choices)
    return p


def _lazy(module, attr):
    def run(args):
        import importlib

        return getattr(importlib.import_module(module), attr)(args)

    return run


def _add_arguments(parser, module, attr):
    import importlib

    getattr(importlib.import_module(module), attr)(parser)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _cmd_train(args):
    from keras_mtl.config import load_config
    from keras_mtl.train import train

    loaded = load_config(args.config, args.set)
    workdir = args.workdir or os.path.join("runs", loaded.config.name)
    report = train(loaded, workdir=workdir, max_steps=args.max_steps, verbose=0 if args.quiet else 1, fresh=args.fresh)
    print(open(os.path.join(workdir, "report.md"), encoding="utf-8").read())
    print(f"work dir: {workdir}")
    return 0 if report else 1


def _cmd_evaluate(args):
    from keras_mtl.evaluate import evaluate_run, report_markdown

    result = evaluate_run(args.workdir, split=args.split)
    if args.json:
        print(json.dumps({"tasks": result["tasks"]}, indent=2))
    else:
        print(report_markdown(f"{args.workdir}: {args.split} metrics", result["tasks"], result["examples"]))
    return 0


def _cmd_export(args):
    from keras_mtl.export import export

    print(export(args.workdir, out=args.out, keep=args.keep, tasks=args.tasks))
    return 0


def _cmd_predict(args):
    from keras_mtl.errors import ServingError

    if args.input is None:
        if not args.texts:
            raise ServingError("the following arguments are required: texts (or --input FILE)")
        for flag in ("output", "format", "header", "strict"):
            if getattr(args, flag):
                raise ServingError(f"--{flag} needs --input FILE")
    elif args.texts:
        raise ServingError("give either texts or --input FILE, not both")
    elif args.text_pairs is not None:
        raise ServingError("--text-pair goes with TEXT arguments; with --input FILE give text_pair in the file")
    pairs = args.text_pairs
    if pairs is not None and len(pairs) != len(args.texts):
        raise ServingError(
            f"{len(pairs)} --text-pair for {len(args.texts)} TEXT: give one --text-pair per TEXT, in order"
        )
    batch_size = args.batch_size or 32
    if args.input is not None:
        from keras_mtl.serving.predict import predict_file

        predict_file(args.model, args.input, args.output, task=args.task, batch_size=batch_size,
                     strict=args.strict, format=args.format, header=args.header)
        return 0
    texts = args.texts
    if args.model.startswith(("http://", "https://", "grpc://")):
        from keras_mtl.serving.predict import RemoteTask

        remote = RemoteTask(args.model, args.task, max_batch_size=args.batch_size)
        results = remote(texts, pairs)
    else:
        from keras_mtl.serving.predict import predict

        results = predict(args.model, texts, batch_size=args.batch_size or 64, task=args.task, text_pairs=pairs)
    if args.task is not None:
        from keras_mtl.serving.predict import _check_task

        _check_task(args.task, [k for k in results[0] if not k.startswith("_")], args.model)
        results = [{k: v for k, v in r.items() if k in (args.task, "_meta")} for r in results]
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return 0


def _cmd_data(args):
    from keras_mtl.config import load_config
    from keras_mtl.data.summary import data_summary, format_summary

    loaded = load_config(args.config, args.set)
    summary = data_summary(loaded)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary, verbose=args.verbose))
    return 0


def _cmd_serve(args):
    from keras_mtl.serving import serve

    return serve(args.model_base, port=args.port, rest_port=args.rest_port, dry_run=args.dry_run)


def _cmd_bench(args):
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "bench" / "run_all.py"
    if not script.exists():
        raise KerasMTLError(f"{script}: the benchmark scripts live in the source checkout (bench/)")
    spec = importlib.util.spec_from_file_location("bench_run_all", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent.parent))
    spec.loader.exec_module(module)
    return module.main(args.bench_args)


# --------------------------------------------------------------------------
# A quiet stderr
# --------------------------------------------------------------------------

# Packages whose warnings are for their developers, not for a keras-mtl user
# (e.g. Keras' "`shuffle=True` was passed, but will be ignored since the data
# `x` was provided as a tf.data.Dataset").
_THIRD_PARTY = (
    r"(keras|keras_hub|keras_nlp|keras_tuner|tensorflow|tensorflow_text|tensorflow_datasets|tf_keras"
    r"|jax|jaxlib|flax|torch|absl|google|h5py|numpy|scipy|sklearn|array_record|etils|optree|ml_dtypes)(\..*)?$"
)


def _quiet(verbose):
    """Keep stderr for what the user needs (call before TensorFlow is imported).

    - `TF_CPP_MIN_LOG_LEVEL=3`: TensorFlow's C++ log lines after start-up
      (`failed call to cuInit`, cpu_feature_guard, XLA and oneDNN notes).
    - The lines TensorFlow's shared libraries log while they load (oneDNN,
      `cudart_stub`, "All log messages before absl::InitializeLog()") come
      before any setting is read: the first `import tensorflow` runs with the
      C-level stderr captured (shown again if the import fails).
    - absl and TensorFlow Python log records below ERROR, and warnings raised
      by third-party packages, are dropped; keras-mtl's own warnings stay,
      as one `warning:` line each.
    With `verbose` nothing is hidden.
    """
    if verbose:
        return
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc (TF Serving client) start-up lines
    os.environ.setdefault("GLOG_minloglevel", "2")
    for name in ("absl", "tensorflow", "jax", "jax._src.xla_bridge", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_THIRD_PARTY)
    warnings.formatwarning = _one_line_warning
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport("tensorflow"))


def _one_line_warning(message, category, filename, lineno, line=None):
    text = " ".join(str(message).split())
    return f"{PROG}: warning: {text}\n"


class _QuietImport:
    """A meta path finder: runs the first import of `name` with fd 2 captured."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        with _captured_stderr():
            self.loader.exec_module(module)


# What TensorFlow's libraries log while they load: absl-format records
# (`I0000 00:00:1796184939.008331 5528 port.cc:153] ...`), absl's banner, and
# the continuation line of the CPU-instructions note.
_STARTUP_NOISE = re.compile(
    r"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: )"
)


@contextlib.contextmanager
def _captured_stderr():
    """Send file descriptor 2 to a temporary file, then replay all but start-up noise.

    Everything is replayed if the body raises (the lines may explain why).
    """
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr to capture
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line in lines if failed or not _STARTUP_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _user_paths(args):
    """The paths given on the command line (to tell a user's missing file from a bug)."""
    paths = []
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and not item.startswith(("http://", "https://", "grpc://")):
                paths.append(os.path.abspath(item))
    return paths


def _is_user_path(filename, args):
    if not filename:
        return False
    target = os.path.abspath(os.fsdecode(filename))
    return any(target == p or target.startswith(p.rstrip(os.sep) + os.sep) for p in _user_paths(args))


def _report(command, message):
    prefix = f"{PROG} {command}: error: " if command else f"{PROG}: error: "
    lines = [" ".join(line.split()) for line in str(message).splitlines() if line.strip()] or ["failed"]
    for line in lines:  # one line per problem (a config may have several)
        print(prefix + line, file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict" and extra and not any(a.startswith("-") for a in extra):
        # TEXTs after an option (`predict MODEL --task t TEXT`): argparse leaves them over
        args.texts = [*args.texts, *extra]
        extra = []
    if extra:  # blamed on the command they were given to
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    del args.commands
    import warnings

    formatwarning = warnings.formatwarning
    _quiet(args.verbose)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    quiet = getattr(args, "quiet", False)
    if quiet:  # no progress lines either
        from keras_mtl.data import progress

        progress.set_enabled(False)
    try:
        return args.fn(args)
    except KerasMTLError as e:
        _report(args.command, e)
        return 2
    except BrokenPipeError:  # `keras-mtl predict ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error when Python flushes stdout
        return 141
    except OSError as e:
        # A file or directory named on the command line that cannot be read or
        # written is the user's to fix; any other OSError is a bug.
        if not _is_user_path(e.filename, args) and not _is_user_path(getattr(e, "filename2", None), args):
            raise
        _report(args.command, f"{e.filename}: {e.strerror or e}")
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
        if quiet:
            progress.set_enabled(None)


if __name__ == "__main__":
    sys.exit(main())
