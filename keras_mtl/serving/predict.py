"""Predict with an exported SavedModel, exactly as TF Serving would run it.

Only TensorFlow and tensorflow_text are used here (no Keras model code): the
same signatures TF Serving calls, and the same `outputs_to_predictions` the
REST and gRPC clients use, so local and remote answers are identical.

Signatures of an export (`keras_mtl.json` tells which task takes what):

* `serving_default`: `text` -> the outputs of every single-text task (a
  model with sentence-pair tasks only: `text`, `text_pair` -> those tasks);
* one per task, named like the task: `text` (single-text task) or `text`,
  `text_pair` (sentence-pair task) -> that task's outputs;
* `serve_tokens` (token ids; not used here).

Exports older than per-task signatures have `serving_default` only, and
every task is single-text there: `task=` then reads that task's outputs of
`serving_default`.
"""

import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from keras_mtl.disk import pid_alive
from keras_mtl.errors import ModelError, ServingError
from keras_mtl.serving.layout import read_metadata, resolve_version_dir
from keras_mtl.serving.outputs import (
    output_task_names,
    outputs_to_predictions,
    task_outputs,
    validate_text_pairs,
    validate_texts,
)

DEFAULT_SIGNATURE = "serving_default"
TEXT = "text"
TEXT_PAIR = "text_pair"
SINGLE_INPUTS = (TEXT,)
PAIR_INPUTS = (TEXT, TEXT_PAIR)
_NOT_TASK_SIGNATURES = (DEFAULT_SIGNATURE, "serve_tokens")
PAIR_UNSUPPORTED = "`text_pair` given, but the model takes single texts only (it has no sentence-pair task)"


def _meta_tasks(meta):
    tasks = meta.get("tasks") if isinstance(meta, dict) else None
    return tasks if isinstance(tasks, dict) and tasks else None


def task_inputs(meta):
    """Task name -> its signature inputs, ("text",) or ("text", "text_pair"), from
    keras_mtl.json (a task without `inputs`, as in old exports: ("text",))."""
    out = {}
    for name, spec in (_meta_tasks(meta) or {}).items():
        inputs = spec.get("inputs") if isinstance(spec, dict) else None
        out[name] = tuple(inputs) if isinstance(inputs, (list, tuple)) and inputs else SINGLE_INPUTS
    return out


def default_tasks(meta):
    """The tasks `serving_default` answers: keras_mtl.json's `serving_default`,
    else (old exports) the single-text tasks, else every task."""
    listed = meta.get("serving_default") if isinstance(meta, dict) else None
    inputs = task_inputs(meta)
    if isinstance(listed, list) and listed:
        return [name for name in listed if name in inputs]
    single = [name for name, kind in inputs.items() if kind == SINGLE_INPUTS]
    return single or list(inputs)


def check_task(task, names, model):
    if task is not None and task not in names:
        raise ServingError(
            f"{model}: no task {task!r}; the model's tasks are {', '.join(sorted(names)) or '(none)'}"
        )


class Signature:
    """One serving signature of a loaded export, ready to predict (`open_signature`).

    Attributes:
        loaded: the loaded SavedModel (keeps the variables alive).
        fn: the signature's concrete function (`fn(text=...[, text_pair=...])`).
        version_dir: the SavedModel directory.
        name: the signature's name: `serving_default` or the task's.
        task: the task asked for, or None (`serving_default`).
        inputs: ("text",) or ("text", "text_pair").
        model_tasks: every task of the model (names), or None when unknown.
        pair_tasks: the model's sentence-pair tasks (names, from the metadata).
    """

    def __init__(self, loaded, fn, version_dir, name, task, inputs, model_tasks, pair_tasks, decode, keep):
        self.loaded = loaded
        self.fn = fn
        self.version_dir = version_dir
        self.name = name
        self.task = task
        self.inputs = inputs
        self.model_tasks = model_tasks
        self.pair_tasks = pair_tasks
        self._decode = decode  # the `tasks` of outputs_to_predictions (None: inferred)
        self._keep = keep  # (task, task names): only that task's outputs (old exports)

    @property
    def takes_pairs(self):
        return self.inputs == PAIR_INPUTS

    def pair_refusal(self):
        """Why a text_pair cannot go to this signature."""
        if self.task is not None:
            return f"`text_pair` given, but task {self.task!r} takes single texts"
        if self.pair_tasks:
            return (f"`text_pair` given, but serving_default takes single texts; the sentence-pair "
                    f"tasks ({', '.join(self.pair_tasks)}) have their own signatures: choose one as the task")
        return PAIR_UNSUPPORTED

    def pair_requirement(self):
        """Why this signature needs a text_pair for every text."""
        if self.task is not None:
            return f"task {self.task!r} takes sentence pairs: it needs a `text_pair` for every text"
        if self.pair_tasks:
            return (f"serving_default answers the sentence-pair tasks {', '.join(self.pair_tasks)} only: "
                    "it needs a `text_pair` for every text")
        return "serving_default takes sentence pairs: it needs a `text_pair` for every text"

    def check_pairs(self, given):
        """ServingError unless text pairs are `given` exactly when the signature takes them."""
        if given and not self.takes_pairs:
            raise ServingError(self.pair_refusal().replace("`text_pair` given", "text_pairs given", 1))
        if not given and self.takes_pairs:
            raise ServingError(self.pair_requirement())

    def outputs(self, texts, text_pairs=None):
        """The signature's outputs (numpy, batch-major) for validated texts (and pairs)."""
        import tensorflow as tf

        self.check_pairs(text_pairs is not None)
        inputs = {TEXT: tf.constant(texts, dtype=tf.string)}
        if text_pairs is not None:
            inputs[TEXT_PAIR] = tf.constant(text_pairs, dtype=tf.string)
        out = {k: v.numpy() for k, v in self.fn(**inputs).items()}
        if self._keep is not None:
            out = task_outputs(out, *self._keep)
        return out

    def predict(self, texts, text_pairs=None):
        """Per-text predictions (the JSON dicts of `outputs_to_predictions`)."""
        return outputs_to_predictions(self.outputs(texts, text_pairs), self._decode)


def _signature_inputs(fn, name, version_dir):
    import tensorflow as tf

    specs = fn.structured_input_signature[1]
    names = tuple(sorted(specs))
    if names not in (SINGLE_INPUTS, PAIR_INPUTS) or any(spec.dtype != tf.string for spec in specs.values()):
        raise ModelError(
            f"{version_dir}: signature {name!r} takes {list(names)}, not the string inputs `text` "
            "(and `text_pair`); is this a keras-mtl export?"
        )
    return names


def open_signature(model_dir, task=None):
    """The signature that answers `task` (None: `serving_default`) of an export.

    `model_dir` is `saved_models/<name>` (newest version) or a version dir.
    A task the model lacks is a `ServingError` naming its tasks; an export
    without per-task signatures answers a (single-text) task from
    `serving_default`, keeping that task's outputs only.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    if task is not None and (not isinstance(task, str) or not task):
        raise ServingError(f"task must be a task name, got {task!r}")
    version_dir = resolve_version_dir(model_dir)
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as e:  # corrupt or foreign SavedModel
        detail = " ".join(str(e).split())[:300]
        raise ModelError(f"{version_dir}: cannot load the SavedModel: {type(e).__name__}: {detail}") from None
    meta = read_metadata(version_dir)
    meta_tasks = _meta_tasks(meta)
    inputs_of = task_inputs(meta)
    pair_tasks = sorted(name for name, kind in inputs_of.items() if kind == PAIR_INPUTS)
    model_tasks = list(meta_tasks) if meta_tasks else None
    signatures = loaded.signatures

    def default():
        if DEFAULT_SIGNATURE not in signatures:
            raise ModelError(f"{version_dir}: the SavedModel has no serving_default signature")
        return signatures[DEFAULT_SIGNATURE]

    keep = None
    if task is None:
        name, fn = DEFAULT_SIGNATURE, default()
        decode = {t: meta_tasks[t] for t in default_tasks(meta)} if meta_tasks else None
    else:
        if model_tasks is not None:
            check_task(task, model_tasks, model_dir)
        decode = {task: meta_tasks[task]} if meta_tasks else None
        if task in signatures and task not in _NOT_TASK_SIGNATURES:
            name, fn = task, signatures[task]
        else:  # an export without per-task signatures
            name, fn = DEFAULT_SIGNATURE, default()
            answered = default_tasks(meta) if meta_tasks else output_task_names(fn.structured_outputs)
            if model_tasks is None:
                check_task(task, answered, model_dir)
            if task not in answered:
                raise ModelError(
                    f"{version_dir}: the export has no signature {task!r}, and serving_default does not "
                    f"answer task {task!r}; export the model again"
                )
            keep = (task, model_tasks or answered)
    inputs = _signature_inputs(fn, name, version_dir)
    return Signature(loaded, fn, version_dir, name, task, inputs, model_tasks, pair_tasks, decode, keep)


def load_signature(model_dir, task=None):
    """(loaded SavedModel, signature function, version dir) for `task` (None: `serving_default`).

    With `task`, the signature named like the task; an export without
    per-task signatures gives `serving_default` narrowed to that task's
    outputs (and `num_words`, `truncated`, `windows`). A task the model lacks is a
    `ServingError` naming the model's tasks. The function takes `text=`, or
    `text=` and `text_pair=` (string tensors [B]) for a sentence-pair task.
    """
    signature = open_signature(model_dir, task)
    fn = signature.fn
    if signature._keep is not None:
        concrete, keep = fn, signature._keep

        def fn(**inputs):
            return task_outputs(concrete(**inputs), *keep)

        fn.structured_input_signature = concrete.structured_input_signature
    return signature.loaded, fn, signature.version_dir


def predict(model_dir, texts, batch_size=64, *, task=None, text_pairs=None):
    """Per-text predictions: a list of dicts (see serving docs).

    Args:
        model_dir: `saved_models/<name>` (newest version) or a version dir.
        texts: list of str (or bytes).
        batch_size: texts per signature call.
        task: None: every task `serving_default` answers (the single-text
            tasks); a task name: that task's signature and predictions only.
        text_pairs: the second texts, one per text, for a sentence-pair task
            (or for `serving_default` of a model with pair tasks only).
    """
    if isinstance(texts, (str, bytes)):
        raise ServingError("texts must be a list of strings, not one string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    texts = validate_texts(texts)
    pairs = validate_text_pairs(texts, text_pairs)
    signature = open_signature(model_dir, task)
    signature.check_pairs(pairs is not None)
    results = []
    for i in range(0, len(texts), batch_size):
        chunk_pairs = None if pairs is None else pairs[i : i + batch_size]
        results += signature.predict(texts[i : i + batch_size], chunk_pairs)
    return results


class RemoteTask:
    """Predictions from a TF Serving URL, for `task`'s signature (None: serving_default).

    A server whose export predates per-task signatures answers "signature
    not found": a single-text task is then read from `serving_default`
    (remembered for later calls), and a task that is not there either is an
    error naming the tasks `serving_default` answers.
    """

    def __init__(self, url, task=None, timeout=30, max_batch_size=None):
        self.url = url
        self.task = task
        self.timeout = timeout
        self.max_batch_size = max_batch_size
        self.fallback = False  # task read from serving_default's outputs

    def __call__(self, texts, text_pairs=None):
        from keras_mtl.serving.client import UnknownSignature, predict_remote

        kwargs = dict(timeout=self.timeout, max_batch_size=self.max_batch_size, text_pairs=text_pairs)
        if self.task is None:
            return predict_remote(self.url, texts, **kwargs)
        if not self.fallback:
            try:
                return predict_remote(self.url, texts, signature_name=self.task, **kwargs)
            except UnknownSignature:
                self.fallback = True
        if text_pairs is not None:
            raise ServingError(
                f"{self.url}: the served model has no signature {self.task!r}, which a sentence-pair "
                "task needs (an export older than per-task signatures has no sentence-pair tasks)"
            )
        results = predict_remote(self.url, texts, **kwargs)
        names = [k for k in results[0] if not k.startswith("_")] if results else []
        if self.task not in names:
            raise ServingError(
                f"{self.url}: no task {self.task!r}: the served model has no signature {self.task!r}, "
                f"and its serving_default answers {', '.join(sorted(names)) or '(none)'}"
            )
        return [{k: v for k, v in r.items() if k in (self.task, "_meta")} for r in results]


# --------------------------------------------------------------------------
# Batch prediction from files (`keras-mtl predict MODEL --input F`)
# --------------------------------------------------------------------------

REMOTE_PAIR_NEEDS_TASK = (
    "`text_pair` given, but serving_default takes single texts; a sentence-pair task is served "
    "by its own signature: choose it as the task (--task)"
)


class _Predictor:
    """texts (and text pairs) -> per-text dicts, for a local export, a URL or a callable.

    `pairs` says which lines it takes: "never" (no `text_pair`), "always"
    (a `text_pair` on every line: a sentence-pair signature), "optional" (a
    callable with `supports_pairs`), or "first" (a URL with a task, whose
    signature's inputs are not known here: the file's first good line
    decides, and every line must then be like it).
    """

    def __init__(self, model, batch_size, timeout, task=None, batch_option="batch_size"):
        self.tasks = None  # task names, when known before the first batch
        self.pairs = "never"
        self._refusal = PAIR_UNSUPPORTED
        self._requirement = None
        self._first = None  # ("first" mode) (line, has text_pair) of the first good line
        if callable(model):
            self.name = getattr(model, "__name__", "predictor")
            self.tasks = getattr(model, "tasks", None)
            if getattr(model, "supports_pairs", False):
                self.pairs = "optional"
                self._fn = lambda texts, pairs: model(texts, text_pairs=pairs)
            else:
                self._fn = lambda texts, pairs: model(texts)
            return
        model = str(model)
        self.name = model
        if model.startswith(("http://", "https://", "grpc://")):
            remote = RemoteTask(model, task, timeout=timeout, max_batch_size=batch_size)

            def ask(texts, pairs):
                from keras_mtl.serving.client import with_batch_option

                try:
                    return remote(texts, pairs)
                except ServingError as e:  # the server's batch limit: advice naming `batch_option`
                    error = with_batch_option(e, batch_option)
                    if error is e:
                        raise
                    raise error from None

            self._fn = ask
            if task is None:
                self._refusal = REMOTE_PAIR_NEEDS_TASK
            else:
                self.pairs = "first"
            return
        signature = open_signature(model, task)
        self.tasks = signature.model_tasks
        if signature.takes_pairs:
            self.pairs = "always"
            self._requirement = f"missing `text_pair`: {signature.pair_requirement()}"
        else:
            self._refusal = signature.pair_refusal()
        self._signature = signature  # keeps the signature's variables alive
        self._fn = signature.predict

    def problem(self, record):
        """Why a good record (`record.error` is None) cannot go to this model, or None."""
        has_pair = record.text_pair is not None
        if self.pairs == "never":
            return self._refusal if has_pair else None
        if self.pairs == "always":
            return None if has_pair else self._requirement
        if self.pairs == "first":
            if self._first is None or self._first[0] == record.line:
                self._first = (record.line, has_pair)
                return None
            line, first_has_pair = self._first
            if has_pair == first_has_pair:
                return None
            if has_pair:
                return (f"`text_pair` given, but line {line} has none: the lines of a file are all "
                        "single texts or all sentence pairs")
            return (f"missing `text_pair`, but line {line} has one: the lines of a file are all "
                    "single texts or all sentence pairs")
        return None

    def __call__(self, texts, text_pairs):
        if self.pairs != "optional" and all(p is None for p in text_pairs):
            text_pairs = None
        results = list(self._fn(texts, text_pairs))
        if len(results) != len(texts):
            raise ServingError(f"{self.name}: {len(results)} predictions for {len(texts)} texts")
        return results


def output_temporary(target):
    """Where `predict_file` writes `target` before renaming it into place:
    `.<name>.tmp-<pid>` beside it."""

    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def remove_stale_outputs(target):
    """Delete the temporaries of `target` (`.<name>.tmp-<pid>`) left by a
    `predict_file` whose process is gone (killed); returns their paths.
    Those of running processes are left alone."""

    target = Path(target)
    prefix = f".{target.name}.tmp-"
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = name[len(prefix):]
        if not (name.startswith(prefix) and pid.isdigit()) or pid_alive(int(pid)):
            continue
        path = target.parent / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def predict_file(model, input_path, output_path=None, *, task=None, batch_size=32, strict=False,
                 format=None, header=False, stderr=None, timeout=30, options=None):
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
    error; temporaries left by a killed run are removed by the next run to the
    same output). Input that could not all be read (a file cut short while it
    was read) is an error, never a short output.

    Args:
        model: a local export (`saved_models/<name>[/<version>]`), a TF
            Serving URL (`http(s)://...`, `grpc://...`) or a callable
            `texts -> list of per-text dicts` (optional attributes `tasks`
            and `supports_pairs`).
        input_path: `.jsonl` (`text`, optional `text_pair` fields) or `.tsv`
            (text, optional text_pair column); see `keras_mtl.serving.input_file`.
            `-` is standard input; it and a pipe (`/dev/stdin`, `<(...)`, a
            FIFO) are read once, as they come (with `strict`, through a
            temporary copy), and need `format`.
        output_path: a file path, a writable text stream, or None (stdout).
        task: predict with this task's signature and keep only its outputs
            (an unknown task is an error naming the model's tasks). A local
            export's sentence-pair task needs `text_pair` on every line, a
            single-text task (and `serving_default`, without `task`) refuses
            it; for a URL with `task` the first good line decides whether
            every line is a pair or none is.
        batch_size: lines per model call (and per request to a server).
        format: 'jsonl' or 'tsv' instead of the extension's.
        header: a TSV's first line is a header (skipped); an error for JSON Lines.
        stderr: where bad lines are reported (default `sys.stderr`).
        options: how messages name the arguments `format`, `header`,
            `strict` and `batch_size` (e.g. the CLI's `{"format": "--format"}`);
            by default as the Python arguments.

    Returns:
        {"lines": input lines, "predicted": lines predicted, "errors": bad lines,
         "output": output path or None}
    """

    from keras_mtl.data import progress
    from keras_mtl.errors import DataError
    from keras_mtl.serving.input_file import (
        count_lines,
        display_name,
        input_format,
        input_kind,
        open_input,
        read_records,
    )

    options = dict(options or {})

    def flag(name):  # a boolean argument, as the caller names it
        return options.get(name) or f"{name}=True"

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ServingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    kind = input_kind(input_path)  # a missing file or a directory is named as such, first
    where = display_name(input_path)
    fmt = input_format(input_path, format, option=options.get("format"))
    if header and fmt == "jsonl":
        raise DataError(f"{where}: {flag('header')} is for TSV input; JSON Lines has no header line "
                        "(every line is a record)")
    total = count_lines(input_path) if kind == "file" else None  # a pipe is read once: not counted
    if total is not None and header:
        total = max(0, total - 1)
    predictor = _Predictor(model, batch_size, timeout, task, batch_option=options.get("batch_size", "batch_size"))
    if predictor.tasks is not None:
        check_task(task, predictor.tasks, predictor.name)

    def problem(record):
        if record.error:
            return record.error
        return predictor.problem(record)

    source, spool = input_path, None

    def records():
        if spool is not None:
            spool.seek(0)
        return read_records(source, fmt, header, name=where)

    report = stderr if stderr is not None else sys.stderr
    counts = {"lines": 0, "predicted": 0, "errors": 0, "output": None}
    out = tmp = target = None
    try:
        if strict:  # nothing predicted or written unless every line is good
            if kind != "file":  # read once only: keep a copy to check, then to predict
                spool = tempfile.TemporaryFile(prefix="keras-mtl-predict-")
                try:
                    with open_input(input_path) as stream:
                        shutil.copyfileobj(stream, spool)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    raise DataError(f"{where}: cannot keep a copy of the input to check it first "
                                    f"({flag('strict')}): no space left on device in "
                                    f"{tempfile.gettempdir()}") from None
                source = spool
            checked = 0
            for record in records():
                checked += 1
                reason = problem(record)
                if reason:
                    raise DataError(f"{where}:{record.line}: {reason}")
            total = checked

        if output_path is None:
            out = sys.stdout
        elif hasattr(output_path, "write"):
            out = output_path
        else:
            target = Path(output_path)
            counts["output"] = str(target)
            if target.is_dir():
                raise ServingError(f"{target}: is a directory, expected an output file")
            if kind != "stdin" and target.exists() and target.resolve() == Path(input_path).resolve():
                raise ServingError(f"{target}: the output file is the input file")
            remove_stale_outputs(target)
            tmp = output_temporary(target)
            try:
                out = open(tmp, "w", encoding="utf-8", newline="\n")
            except OSError as e:
                tmp = None
                raise ServingError(f"{target}: cannot write the output: {e.strerror or e}") from None
        ours = tmp is not None or out is sys.stdout  # a stream the caller gave reports its own errors

        def write_failed(e):
            why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            name = target if target is not None else "standard output"
            removed = "; nothing was written (the partial output is removed)" if tmp is not None else ""
            return ServingError(f"{name}: cannot write the output: {why}{removed}")

        def write(text):
            try:
                out.write(text)
            except BrokenPipeError:  # `| head`: the reader left (the CLI stops quietly)
                raise
            except OSError as e:
                if not ours:
                    raise
                raise write_failed(e) from None

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
                    check_task(task, [k for k in result if not k.startswith("_")], predictor.name)
                    tasks_checked = True
                if task is not None:
                    result = {k: v for k, v in result.items() if k == task or k == "_meta"}
                lines.append(json.dumps(result, ensure_ascii=False))
            if lines:
                write("\n".join(lines) + "\n")

        shown = "standard input" if kind == "stdin" else progress.display_path(where)
        with progress.step(f"predicting {shown}", total=total) as advance:
            pending = []
            for record in records():
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
        if total is not None and counts["lines"] < total:
            # never a short output reported as a success
            written = "nothing was written" if tmp is not None else "the output is incomplete"
            raise DataError(f"{where}: only {counts['lines']} of its {total} lines could be read "
                            f"(the file changed while it was read); {written}")
        try:
            out.flush()
            if tmp is not None:
                out.close()
                os.replace(tmp, target)
                tmp = None
        except BrokenPipeError:
            raise
        except OSError as e:
            if not ours:
                raise
            raise write_failed(e) from None
    finally:
        if spool is not None:
            spool.close()
        if tmp is not None:
            try:
                out.close()  # flushes what is buffered: may fail again (a full disk)
            except OSError:
                pass
            tmp.unlink(missing_ok=True)
    return counts
