"""`keras-mtl`: the command line. Parses arguments, calls the library; no logic.

    keras-mtl [--verbose] train CONFIG [--workdir DIR] [--set KEY=VALUE ...] [--max-steps N]
    keras-mtl finetune WORKDIR --task T [--workdir DIR] [--set KEY=VALUE ...]
    keras-mtl evaluate WORKDIR [--split test] [--json]
    keras-mtl export WORKDIR [--out saved_models/<name>] [--keep N]
    keras-mtl predict MODEL_DIR|URL TEXT... [--text-pair P ...] | --input FILE.jsonl|.tsv [--output OUT.jsonl] [--task T] [--strict]
    keras-mtl data CONFIG [--json]
    keras-mtl prepare CONFIG | --list | --clear [--key KEY] [--cache-dir DIR]
    keras-mtl serve saved_models/<name> [--port 8500 --rest-port 8501] [--dry-run] [--config-dir DIR]
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

The package, one way for every command:

    app.py          the parser (numbers checked the same way in every command)
                    and the start-up/error machinery (quiet stderr, one
                    error line per user error, exit statuses)
    <command>.py    one module per command, in COMMANDS: `HELP` (one line),
                    `add_arguments(parser)` and `run(args) -> int`; argument
                    parsing and output only, the work is in the domain module
                    (train.py -> keras_mtl.training, compare.py ->
                    keras_mtl.compare, meta_train.py -> keras_mtl.meta.reptile,
                    ...). A command module imports its domain module at the
                    top unless that imports TensorFlow/Keras (train,
                    evaluate): those are imported in `run`, so that `--help`
                    and argument errors answer in a fraction of a second.
"""

from keras_mtl.cli import (
    adapt,
    app,
    bench,
    compare,
    data,
    evaluate,
    export,
    finetune,
    meta_train,
    predict,
    prepare,
    search,
    serve,
    train,
)

# The commands, in the order `keras-mtl --help` lists them.
COMMANDS = (train, finetune, evaluate, export, predict, data, prepare, serve, compare, meta_train, adapt, search, bench)


def build_parser():
    """The `keras-mtl` argument parser: one subcommand per module of COMMANDS."""
    return app.build_parser(COMMANDS)


def main(argv=None):
    """Run `keras-mtl argv` (default: sys.argv[1:]); returns the exit status."""
    return app.run(build_parser(), argv)
