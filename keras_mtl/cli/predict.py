"""`keras-mtl predict MODEL TEXT...` / `--input FILE`: predictions as JSON lines.

MODEL is an export (saved_models/<name>[/<version>]) or a TF Serving URL
(http://host:8501/v1/models/<name>, grpc://host:8500/<name>).
"""

import json

from keras_mtl.errors import ServingError
from keras_mtl.serving.client import with_batch_option
from keras_mtl.serving.predict import RemoteTask, check_task, predict, predict_file

HELP = "predict every task for some texts, or for every line of a file"


def add_arguments(parser):
    parser.add_argument("model", help="saved_models/<name>[/<version>], http://host:8501/v1/models/<name> or grpc://host:8500/<name>")
    parser.add_argument("texts", nargs="*", help="texts to predict (one JSON object per text is printed); or --input")
    parser.add_argument("--input", metavar="FILE", help="predict every line of FILE (.jsonl: {\"text\": ...[, \"text_pair\": ...]}; .tsv: text[<TAB>text_pair]), streaming; - reads standard input (give --format)")
    parser.add_argument("--output", metavar="FILE", help="with --input: write the JSON lines to FILE (default stdout)")
    parser.add_argument("--task", help="predict with this task's own signature: only its predictions (and _meta); a sentence-pair task needs --text-pair (or text_pair in --input)")
    parser.add_argument("--text-pair", action="append", metavar="PAIR", dest="text_pairs", help="the second text of a sentence pair, once per TEXT, in order (with --task PAIR_TASK)")
    parser.add_argument("--batch-size", type=int, help="texts per model call or server request (default 32)")
    parser.add_argument("--format", choices=["jsonl", "tsv"], help="with --input: the file's format (default: from its extension; needed for - and pipes)")
    parser.add_argument("--header", action="store_true", help="with --input: the TSV's first line is a header (TSV only)")
    parser.add_argument("--strict", action="store_true", help="with --input: a bad line is an error (nothing is written) instead of an error line")


def _check_arguments(args):
    """Raise ServingError for texts and options that do not go together, or texts not in UTF-8."""
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
    for what, values in (("TEXT", args.texts), ("--text-pair", pairs or [])):
        for number, value in enumerate(values, 1):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes the locale could not decode (kept as surrogates)
                where = ""
                try:
                    value.encode("utf-8", "surrogateescape").decode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate, not from the command line's bytes
                    pass
                except UnicodeDecodeError as e:
                    where = f" (byte {e.start + 1} is 0x{e.object[e.start]:02x})"
                raise ServingError(
                    f"{what} {number} is not valid UTF-8{where}: give texts in UTF-8 "
                    "(convert them, e.g. with iconv -t UTF-8)"
                ) from None


def run(args):
    _check_arguments(args)
    pairs = args.text_pairs
    if args.input is not None:
        predict_file(args.model, args.input, args.output, task=args.task, batch_size=args.batch_size or 32,
                     strict=args.strict, format=args.format, header=args.header,
                     options={"format": "--format", "header": "--header", "strict": "--strict",
                              "batch_size": "--batch-size"})
        return 0
    texts = args.texts
    if args.model.startswith(("http://", "https://", "grpc://")):
        remote = RemoteTask(args.model, args.task, max_batch_size=args.batch_size)
        try:
            results = remote(texts, pairs)
        except ServingError as e:  # the server's batch limit: advice naming --batch-size
            error = with_batch_option(e, "--batch-size")
            if error is e:
                raise
            raise error from None
    else:
        results = predict(args.model, texts, batch_size=args.batch_size or 64, task=args.task, text_pairs=pairs)
    if args.task is not None:
        check_task(args.task, [k for k in results[0] if not k.startswith("_")], args.model)
        results = [{k: v for k, v in r.items() if k in (args.task, "_meta")} for r in results]
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return 0
