"""The parser and the start-up/error machinery of `keras-mtl`, shared by every command.

- `build_parser(commands)`: the top-level parser (`--backend`, `--verbose`)
  and one subcommand per command module (`HELP`, `add_arguments`, `run`), in
  order; every integer option gets its bounds and every float option must be
  finite (`_INT_MINIMUM`, `_POSITIVE_FLOATS`), the same for all commands.
- `run(parser, argv)`: parses, quiets stderr, runs the command, and turns a
  user error into one `keras-mtl <command>: error: ...` line per problem
  with exit status 2; anything else is a bug and keeps its traceback.

This module imports nothing heavy: `--help` and argument errors answer
before TensorFlow is imported.
"""

import argparse
import contextlib
import importlib.machinery
import logging
import math
import os
import re
import sys
import tempfile
import warnings

from keras_mtl.data import progress
from keras_mtl.errors import KerasMTLError

PROG = "keras-mtl"
DESCRIPTION = "Multi-task Transformers on Keras 3."


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
    "bootstrap": 1,
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


def command_name(module):
    """The command a module defines: its last name, `_` as `-` (keras_mtl.cli.meta_train: meta-train)."""
    return module.__name__.rsplit(".", 1)[-1].replace("_", "-")


def build_parser(commands):
    """The `keras-mtl` parser: one subcommand per module of `commands`, in order.

    A command module has `HELP` (one line), `add_arguments(parser)` and
    `run(args) -> int`; one with `FORWARDS_ARGUMENTS = True` (bench) hands
    every argument after its name on unparsed (`--help` included): no
    `--verbose` or number checks of its own.
    """
    p = _Parser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    _add_verbose(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands:
        forwards = getattr(module, "FORWARDS_ARGUMENTS", False)
        # A command that forwards its arguments has no options of its own
        # (no `-` prefix, no -h): `bench --tiny` hands `--tiny` on instead of
        # argparse taking it for an unknown option of bench.
        options = {"prefix_chars": "+", "add_help": False} if forwards else {}
        command = sub.add_parser(command_name(module), help=module.HELP.replace("%", "%%"), **options)
        module.add_arguments(command)
        command.set_defaults(fn=module.run)
        if not forwards:
            # `--verbose` after the command too; SUPPRESS keeps a `--verbose`
            # given before it.
            _add_verbose(command, default=argparse.SUPPRESS)
            _check_numbers(command)
    p.set_defaults(commands=sub.choices)
    return p


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
# Running a command
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


def run(parser, argv=None):
    """Parse `argv` with `parser` (from `build_parser`) and run its command; the exit status."""
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict" and extra and not any(a.startswith("-") for a in extra):
        # TEXTs after an option (`predict MODEL --task t TEXT`): argparse leaves them over
        args.texts = [*args.texts, *extra]
        extra = []
    if extra:  # blamed on the command they were given to
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    del args.commands
    formatwarning = warnings.formatwarning
    _quiet(args.verbose)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    quiet = getattr(args, "quiet", False)
    if quiet:  # no progress lines either
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
