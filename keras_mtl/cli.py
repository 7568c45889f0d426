"""`keras-mtl`: the command line. Parses arguments, calls the library; no logic.

    keras-mtl train CONFIG [--workdir DIR] [--set KEY=VALUE ...] [--max-steps N]
    keras-mtl evaluate WORKDIR [--split test] [--json]
    keras-mtl export WORKDIR [--out saved_models/<name>] [--keep N]
    keras-mtl predict MODEL_DIR|URL TEXT...
    keras-mtl data CONFIG [--json]
    keras-mtl serve saved_models/<name> [--port 8500 --rest-port 8501] [--dry-run]
    keras-mtl compare CONFIG [--seeds N] [--tasks a,b] [--max-steps N]
    keras-mtl meta-train CONFIG / keras-mtl adapt WORKDIR NEW_TASK_CONFIG --shots K
    keras-mtl search CONFIG [--algorithm random|grid|bayesian] [--trials N]
    keras-mtl bench [--tiny]

User errors (bad config, data, model dir, request) print one clear message
and exit with status 2, never a traceback.
"""

import argparse
import json
import os
import sys

from keras_mtl.errors import KerasMTLError


def _cmd_train(args):
    from keras_mtl.config import load_config
    from keras_mtl.train import train

    loaded = load_config(args.config, args.set)
    workdir = args.workdir or os.path.join("runs", loaded.config.name)
    report = train(loaded, workdir=workdir, max_steps=args.max_steps, verbose=0 if args.quiet else 1)
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

    print(export(args.workdir, out=args.out, keep=args.keep))
    return 0


def _cmd_predict(args):
    texts = args.texts
    if args.model.startswith(("http://", "https://", "grpc://")):
        from keras_mtl.serving import predict_remote

        results = predict_remote(args.model, texts)
    else:
        from keras_mtl.predict import predict

        results = predict(args.model, texts)
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return 0


def _cmd_data(args):
    from keras_mtl.config import load_config
    from keras_mtl.data.summary import data_summary, format_summary

    summary = data_summary(load_config(args.config, args.set))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_serve(args):
    from keras_mtl.serving import serve

    return serve(args.model_base, port=args.port, rest_port=args.rest_port, dry_run=args.dry_run)


def build_parser():
    p = argparse.ArgumentParser(prog="keras-mtl", description="Multi-task Transformers on Keras 3.")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the multi-task model of a config")
    t.add_argument("config")
    t.add_argument("--workdir", help="output dir (default runs/<name>)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    t.add_argument("--max-steps", type=int, help="cap the total training steps")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_cmd_train)

    e = sub.add_parser("evaluate", help="per-task metrics of a trained work dir")
    e.add_argument("workdir")
    e.add_argument("--split", default="test", choices=["train", "dev", "test"])
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=_cmd_evaluate)

    x = sub.add_parser("export", help="write a versioned SavedModel for TF Serving")
    x.add_argument("workdir")
    x.add_argument("--out", help="model base dir (default saved_models/<name>)")
    x.add_argument("--keep", type=int, help="keep only the newest N versions")
    x.set_defaults(fn=_cmd_export)

    pr = sub.add_parser("predict", help="predict every task for some texts")
    pr.add_argument("model", help="saved_models/<name>[/<version>], http://host:8501/v1/models/<name> or grpc://host:8500/<name>")
    pr.add_argument("texts", nargs="+")
    pr.set_defaults(fn=_cmd_predict)

    d = sub.add_parser("data", help="counts, labels, lengths and overlaps of a config's data")
    d.add_argument("config")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=_cmd_data)

    s = sub.add_parser("serve", help="write TF Serving configs and start (or print how to start) the server")
    s.add_argument("model_base")
    s.add_argument("--port", type=int, default=8500)
    s.add_argument("--rest-port", type=int, default=8501)
    s.add_argument("--dry-run", action="store_true")
    s.set_defaults(fn=_cmd_serve)
    # Commands whose arguments are defined next to their implementation.
    for name, module, add, run, text in (
        ("compare", "keras_mtl.compare", "add_compare_arguments", "run_compare_cli",
         "single-task baselines vs the multi-task model: per-task deltas and delta-m"),
        ("meta-train", "keras_mtl.meta", "add_meta_train_arguments", "run_meta_train_cli",
         "Reptile meta-training of the shared encoder across the configured tasks"),
        ("adapt", "keras_mtl.meta", "add_adapt_arguments", "run_adapt_cli",
         "fit a new task from K examples per class, starting from a work dir"),
        ("search", "keras_mtl.search", "add_search_arguments", "run_search_cli",
         "search task loss weights (and sampling temperature) with KerasTuner"),
    ):
        c = sub.add_parser(name, help=text)
        c.set_defaults(fn=_lazy(module, run))
        _add_arguments(c, module, add)
    b = sub.add_parser("bench", help="run the benchmarks (bench/run_all.py) and print their figures")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(fn=_cmd_bench)
    return p


def _lazy(module, attr):
    def run(args):
        import importlib

        return getattr(importlib.import_module(module), attr)(args)

    return run


def _add_arguments(parser, module, attr):
    import importlib

    getattr(importlib.import_module(module), attr)(parser)


def _cmd_bench(args):
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "bench" / "run_all.py"
    if not script.exists():
        from keras_mtl.errors import KerasMTLError

        raise KerasMTLError(f"{script}: the benchmark scripts live in the source checkout (bench/)")
    spec = importlib.util.spec_from_file_location("bench_run_all", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent.parent))
    spec.loader.exec_module(module)
    return module.main(args.bench_args)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.fn(args)
    except KerasMTLError as e:
        print(f"keras-mtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
