"""Predict with an exported SavedModel, exactly as TF Serving would run it.

Only TensorFlow and tensorflow_text are used here (no Keras model code): the
same signature TF Serving calls, and the same `outputs_to_predictions` the
REST and gRPC clients use, so local and remote answers are identical.
"""

from keras_mtl.errors import ModelError, ServingError
from keras_mtl.serving.layout import read_metadata, resolve_version_dir
from keras_mtl.serving.outputs import outputs_to_predictions, validate_texts


def load_signature(model_dir):
    """The `serving_default` function of a SavedModel (a version or base dir)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    version_dir = resolve_version_dir(model_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as e:  # corrupt or foreign SavedModel
        detail = " ".join(str(e).split())[:300]
        raise ModelError(f"{version_dir}: cannot load the SavedModel: {type(e).__name__}: {detail}") from None
    if "serving_default" not in loaded.signatures:
        raise ModelError(f"{version_dir}: the SavedModel has no serving_default signature")
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    if set(inputs) != {"text"} or inputs["text"].dtype != tf.string:
        raise ModelError(
            f"{version_dir}: serving_default takes {sorted(inputs)}, not one string input `text`; "
            "is this a keras-mtl export?"
        )
    return loaded, fn, version_dir


def predict(model_dir, texts, batch_size=64):
    """Per-text predictions for every task: a list of dicts (see serving docs).

    Args:
        model_dir: `saved_models/<name>` (newest version) or a version dir.
        texts: list of str (or bytes).
    """
    import tensorflow as tf

    if isinstance(texts, (str, bytes)):
        raise ServingError("texts must be a list of strings, not one string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    texts = validate_texts(texts)
    loaded, fn, version_dir = load_signature(model_dir)
    meta = read_metadata(version_dir)
    tasks = meta.get("tasks") if meta else None
    results = []
    for i in range(0, len(texts), batch_size):
        out = fn(text=tf.constant(texts[i : i + batch_size], dtype=tf.string))
        results += outputs_to_predictions({k: v.numpy() for k, v in out.items()}, tasks)
    return results


# --------------------------------------------------------------------------
# Batch prediction from files (`keras-mtl predict MODEL --input F`)
# --------------------------------------------------------------------------

PAIR_UNSUPPORTED = "`text_pair` given, but the model takes single texts only (it has no sentence-pair task)"


class _Predictor:
    """texts (and text pairs) -> per-text dicts, for a local export, a URL or a callable."""

    def __init__(self, model, batch_size, timeout):
        self.tasks = None  # task names, when known before the first batch
        self.pairs = False  # whether a line may carry `text_pair`
        if callable(model):
            self.name = getattr(model, "__name__", "predictor")
            self.tasks = getattr(model, "tasks", None)
            self.pairs = bool(getattr(model, "supports_pairs", False))
            self._fn = model
            return
        model = str(model)
        self.name = model
        if model.startswith(("http://", "https://", "grpc://")):
            from keras_mtl.serving.client import predict_remote

            self._fn = lambda texts: predict_remote(model, texts, timeout=timeout, max_batch_size=batch_size)
            return
        import tensorflow as tf

        loaded, fn, version_dir = load_signature(model)
        meta = read_metadata(version_dir)
        meta_tasks = meta.get("tasks") if meta else None
        if meta_tasks:
            self.tasks = list(meta_tasks)

        def local(texts):
            out = fn(text=tf.constant(texts, dtype=tf.string))
            return outputs_to_predictions({k: v.numpy() for k, v in out.items()}, meta_tasks)

        self._loaded = loaded  # keeps the signature's variables alive
        self._fn = local

    def __call__(self, texts, text_pairs):
        if self.pairs:
            results = self._fn(texts, text_pairs=text_pairs)
        else:
            results = self._fn(texts)
        results = list(results)
        if len(results) != len(texts):
            raise ServingError(f"{self.name}: {len(results)} predictions for {len(texts)} texts")
        return results


def _check_task(task, names, model):
    if task is not None and task not in names:
        raise ServingError(
            f"{model}: no task {task!r}; the model's tasks are {', '.join(sorted(names)) or '(none)'}"
        )


def predict_file(model, input_path, output_path=None, *, task=None, batch_size=32, strict=False,
                 format=None, header=False, stderr=None, timeout=30):
    """Predict every line of a JSON Lines or TSV file, streaming, in input order.

    Writes one JSON line per input line (the header line of a TSV with
    `header=True` excepted), in input order: the per-text predictions (only
    `task`'s and `_meta` when `task` is given), or for a bad line
    `{"line": N, "error": "..."}`, also reported on `stderr` as
    `FILE:N: reason`. With `strict=True` the file is checked first and the
    first bad line raises `DataError("FILE:N: reason")` before anything is
    predicted or written. The file is read and predicted `batch_size` lines at
    a time, so memory does not grow with its size; `output_path` is written to
    a temporary file renamed into place at the end (no partial output on an
    error).

    Args:
        model: a local export (`saved_models/<name>[/<version>]`), a TF
            Serving URL (`http(s)://...`, `grpc://...`) or a callable
            `texts -> list of per-text dicts` (optional attributes `tasks`
            and `supports_pairs`).
        input_path: `.jsonl` (`text`, optional `text_pair` fields) or `.tsv`
            (text, optional text_pair column); see `keras_mtl.serving.input_file`.
        output_path: a file path, a writable text stream, or None (stdout).
        task: keep only this task's outputs (an unknown task is an error
            naming the model's tasks).
        batch_size: lines per model call (and per request to a server).
        format: 'jsonl' or 'tsv' instead of the extension's.
        header: a TSV's first line is a header (skipped).
        stderr: where bad lines are reported (default `sys.stderr`).

    Returns:
        {"lines": input lines, "predicted": lines predicted, "errors": bad lines,
         "output": output path or None}
    """
    import json
    import os
    import sys
    from pathlib import Path

    from keras_mtl.data import progress
    from keras_mtl.errors import DataError
    from keras_mtl.serving.input_file import count_lines, input_format, read_records

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    fmt = input_format(input_path, format)
    total = max(0, count_lines(input_path) - (1 if header else 0))  # also: the file exists
    predictor = _Predictor(model, batch_size, timeout)
    if predictor.tasks is not None:
        _check_task(task, predictor.tasks, predictor.name)
    where = str(input_path)

    def problem(record):
        if record.error:
            return record.error
        if record.text_pair is not None and not predictor.pairs:
            return PAIR_UNSUPPORTED
        return None

    if strict:  # nothing predicted or written unless every line is good
        for record in read_records(input_path, fmt, header):
            reason = problem(record)
            if reason:
                raise DataError(f"{where}:{record.line}: {reason}")

    report = stderr if stderr is not None else sys.stderr
    counts = {"lines": 0, "predicted": 0, "errors": 0, "output": None}
    tmp = None
    if output_path is None:
        out = sys.stdout
    elif hasattr(output_path, "write"):
        out = output_path
    else:
        target = Path(output_path)
        counts["output"] = str(target)
        if target.is_dir():
            raise ServingError(f"{target}: is a directory, expected an output file")
        if target.exists() and target.resolve() == Path(input_path).resolve():
            raise ServingError(f"{target}: the output file is the input file")
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            out = open(tmp, "w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise ServingError(f"{target}: cannot write the output: {e.strerror or e}") from None
    tasks_checked = predictor.tasks is not None

    def flush(pending):
        nonlocal tasks_checked
        good = [r for r, _ in pending if r is not None]
        results = iter(predictor([r.text for r in good], [r.text_pair for r in good]) if good else [])
        lines = []
        for record, error in pending:
            if record is None:
                lines.append(json.dumps(error, ensure_ascii=False))
                continue
            result = next(results)
            if not tasks_checked:
                _check_task(task, [k for k in result if not k.startswith("_")], predictor.name)
                tasks_checked = True
            if task is not None:
                result = {k: v for k, v in result.items() if k == task or k == "_meta"}
            lines.append(json.dumps(result, ensure_ascii=False))
        if lines:
            out.write("\n".join(lines) + "\n")

    try:
        with progress.step(f"predicting {progress.display_path(where)}", total=total) as advance:
            pending = []
            for record in read_records(input_path, fmt, header):
                counts["lines"] += 1
                reason = problem(record)
                if reason:
                    if strict:  # the file changed since it was checked
                        raise DataError(f"{where}:{record.line}: {reason}")
                    counts["errors"] += 1
                    print(f"{where}:{record.line}: {reason}", file=report)
                    pending.append((None, {"line": record.line, "error": reason}))
                else:
                    counts["predicted"] += 1
                    pending.append((record, None))
                if len(pending) >= batch_size:
                    flush(pending)
                    advance(len(pending))
                    pending = []
            flush(pending)
            advance(len(pending))
        out.flush()
        if tmp is not None:
            out.close()
            os.replace(tmp, target)
            tmp = None
    finally:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
    return counts
