"""Work dir -> one SavedModel serving every task from raw text.

Writes `saved_models/<name>/<version>/` (integer versions: the TF Serving
layout). The version is written to a temporary directory beside it and
renamed into place, so a half-written version never exists. The version
number is chosen, and the directory renamed into place (and old versions
pruned), while holding an exclusive lock (flock) on
`<base>/.keras_mtl_export.lock`, so concurrent exports to one base get
distinct versions; the lock file is removed when the lock is released.

Signature `serving_default`: `text` string [B] ->
    <task>_label [B], <task>_probabilities [B, C], <task>_classes [B, C]   classification
    <task>_labels [B, C] ("" where not predicted), _probabilities, _classes  multilabel
    <task>_tags [B, W] (one per whitespace word, "" past each row's end)      tagging
    <task>_value [B]                                                          regression
    num_words [B] int32, truncated [B] bool (text cut at max_sequence_length)
Every output has the batch as first dimension (TF Serving's REST row format
needs that), and every head is float32. A second signature, `serve_tokens`,
takes the encoded `token_ids`/`padding_mask`[/`task_ids`] directly.
"""

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

from keras_mtl.errors import ModelError

METADATA = "keras_mtl.json"
LOCK_FILE = ".keras_mtl_export.lock"


def version_dirs(base):
    """Sorted integer version numbers under a model base directory."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base):
    """One more than the largest integer-named entry (a stray file `3` counts too)."""
    base = Path(base)
    taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(taken) + 1 if taken else 1


def check_keep(keep):
    """`keep` (newest versions to keep after an export): None or an int >= 1."""
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ModelError(
            f"keep (--keep) must be an integer >= 1, the number of newest versions to keep; got {keep!r}"
        )
    return keep


def prepare_base(base, create=True):
    """Create the model base dir (`create`), or say in one line why it cannot be used."""
    base = Path(base)
    for parent in [base, *base.parents]:
        if parent.exists() and not parent.is_dir():
            what = "the output dir" if parent == base else f"{parent} (a parent of the output dir)"
            raise ModelError(
                f"--out {base}: {what} is an existing file, not a directory; "
                "pass a directory (saved_models/<name>)"
            )
        if parent.exists():
            break
    if not create:
        return base
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"--out {base}: cannot create the directory: {err.strerror or err}") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise ModelError(f"--out {base}: the directory is not writable")
    return base


@contextlib.contextmanager
def base_lock(base):
    """Exclusive lock on a model base (blocks while another export holds it).

    Held only while a version number is chosen, the finished version renamed
    into place and old versions pruned: the slow part of an export (writing
    the SavedModel) runs unlocked, so concurrent exports overlap. The lock
    file is removed before the lock is released, so the base holds only
    versions afterwards; a waiter that then finds its file unlinked or
    replaced starts over on the current one.
    """
    path = Path(base) / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # not POSIX: the rename in _publish still never overwrites a version
        fcntl = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ModelError(f"{path}: cannot open the export lock file: {err.strerror or err}") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                break  # a filesystem without locks: rely on the rename check alone
            os.close(fd)
            raise ModelError(f"{path}: cannot lock: {err.strerror or err}") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the holder before us removed (or replaced) this file: retry
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # releases the lock


def _publish(tmp, base):
    """Rename the finished `tmp` to the next free version (caller holds the lock)."""
    for _ in range(1000):
        final = Path(base) / str(next_version(base))
        if final.exists():  # only a racing, non-locking writer
            continue
        try:
            os.rename(tmp, final)  # atomic on one filesystem: the version appears complete
        except OSError as err:
            # an entry appeared at `final` between the check and the rename
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                continue
            raise ModelError(f"cannot rename {tmp} to {final}: {err.strerror or err}") from None
        return final
    raise ModelError(f"{base}: could not find a free version number to export to")


def _build_serving_fn(model_fn, encoder, tasks, classes, per_task, fixed_length=None):
    import tensorflow as tf

    pad_id = encoder.pad_id
    class_consts = {t.name: tf.constant(classes[t.name] or [""], tf.string) for t in tasks}
    num_tasks = len(tasks)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        enc = encoder(text)
        # JAX exports are traced at one fixed length (jax2tf cannot bound a symbolic one).
        shape = None if fixed_length is None else [None, fixed_length]
        ids = enc["token_ids"].to_tensor(default_value=pad_id, shape=shape)
        # An empty request batch ([0] texts) gives [0, 0] ids: pad to length 1
        # so that [CLS] pooling has a position to read (every text has one).
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]], constant_values=pad_id)
        batch = tf.shape(ids)[0]
        length = tf.shape(ids)[1]
        inputs = {"token_ids": ids, "padding_mask": tf.not_equal(ids, pad_id)}
        if per_task:
            inputs = {k: tf.tile(v, [num_tasks, 1]) for k, v in inputs.items()}
            inputs["task_ids"] = tf.repeat(tf.range(num_tasks, dtype=tf.int32), batch)
        out = model_fn(inputs)
        result = {"num_words": enc["num_words"], "truncated": enc["truncated"]}
        starts = enc["word_starts"].to_tensor(default_value=-1)
        for t, task in enumerate(tasks):
            y = tf.cast(out[task.name], tf.float32)
            if per_task:
                y = y[t * batch : (t + 1) * batch]
            names = class_consts[task.name]
            if task.type == "classification":
                result[f"{task.name}_label"] = tf.gather(names, tf.argmax(y, axis=-1))
                result[f"{task.name}_probabilities"] = y
                result[f"{task.name}_classes"] = tf.tile(names[None, :], [batch, 1])
            elif task.type == "multilabel":
                tiled = tf.tile(names[None, :], [batch, 1])
                result[f"{task.name}_labels"] = tf.where(y > 0.5, tiled, tf.fill(tf.shape(tiled), ""))
                result[f"{task.name}_probabilities"] = y
                result[f"{task.name}_classes"] = tiled
            elif task.type == "regression":
                result[f"{task.name}_value"] = tf.reshape(y, [batch])
            else:
                predicted = tf.argmax(y, axis=-1, output_type=tf.int32)  # [B, L]
                valid = tf.logical_and(starts >= 0, starts < length)
                picked = tf.gather(predicted, tf.clip_by_value(starts, 0, length - 1), batch_dims=1)
                tags = tf.gather(names, picked)
                result[f"{task.name}_tags"] = tf.where(valid, tags, tf.fill(tf.shape(tags), ""))
        return result

    return serving_default


def _model_signature(model, per_task, length=None):
    import tensorflow as tf

    spec = {
        "token_ids": tf.TensorSpec([None, length], tf.int32, name="token_ids"),
        "padding_mask": tf.TensorSpec([None, length], tf.bool, name="padding_mask"),
    }
    if per_task:
        spec["task_ids"] = tf.TensorSpec([None], tf.int32, name="task_ids")
    return [spec]


def build_archive(run, model=None):
    """An `ExportArchive` holding the model, the tokenizer and both endpoints."""
    import keras

    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.model import needs_task_ids

    model = model or run.load_model()
    encoder = make_encoder(run.vocabulary, run.config.model)
    per_task = needs_task_ids(run.config.model)
    archive = keras.export.ExportArchive()
    kwargs, length = {}, None
    if keras.backend.backend() == "jax":
        kwargs["jax2tf_kwargs"] = {"native_serialization": True}
        length = run.config.model.max_sequence_length
    model_fn = archive.track_and_add_endpoint(
        "serve_tokens", model, input_signature=_model_signature(model, per_task, length), **kwargs
    )
    archive.track(encoder.tokenizer)
    serving_fn = _build_serving_fn(model_fn, encoder, run.config.tasks, run.classes, per_task, length)
    archive.add_endpoint("serving_default", serving_fn)
    return archive


def metadata(run):
    import keras
    import tensorflow as tf

    from keras_mtl import __version__

    return {
        "name": run.config.name,
        "tasks": {
            t.name: {"type": t.type, "classes": run.classes[t.name], "metrics": t.metrics} for t in run.config.tasks
        },
        "max_sequence_length": run.config.model.max_sequence_length,
        "task_conditioning": run.config.model.task_conditioning,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_mtl_version": __version__,
        "needs": "import tensorflow_text (registers the tokenizer ops) before tf.saved_model.load",
    }


def export(workdir, out=None, keep=None, warmup=True, verbose=False):
    """Export a trained work dir as the next version under `out`.

    Args:
        workdir: a trained work dir (`keras-mtl train`).
        out: model base directory. Defaults to `saved_models/<name>`.
        keep: keep only the newest `keep` versions after writing (an int
            >= 1; checked before anything is written).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs
            `tensorflow-serving-api`; skipped with a note otherwise).

    Concurrent exports to the same `out` each get their own version: the
    SavedModels are written side by side into temporary directories, and the
    version is chosen and renamed into place under a lock on the base dir.

    Returns:
        Path of the new version directory.
    """
    from keras_mtl.workdir import load_run, write_json

    keep = check_keep(keep)
    if out is not None:
        prepare_base(out, create=False)  # an --out naming a file fails before the model loads
    run = load_run(workdir)
    base = prepare_base(out if out is not None else Path("saved_models") / run.config.name)
    remove_stale_temporaries(base)
    # `.tmp-<version>-<token>-<pid>`: the version in the name is provisional (the
    # next one at start; the final one is chosen under the lock once the
    # SavedModel is complete), the token keeps two exports of one process apart,
    # and the pid lets a later export remove it once this process is gone.
    tmp = base / f".tmp-{next_version(base)}-{uuid.uuid4().hex[:8]}-{os.getpid()}"
    try:
        archive = build_archive(run)
        archive.write_out(str(tmp), verbose=verbose)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        write_json(extra / METADATA, metadata(run))
        if warmup:
            write_warmup(extra, _warmup_texts(run))
        with base_lock(base):
            final = _publish(tmp, base)
            if keep:
                prune(base, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def remove_stale_temporaries(base):
    """Delete `.tmp-<version>-[<token>-]<pid>` dirs left by an export that was killed."""
    for tmp in Path(base).glob(".tmp-*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(base, keep):
    """Remove all but the newest `keep` versions (never the newest)."""
    check_keep(keep)
    for v in version_dirs(base)[:-keep]:
        shutil.rmtree(Path(base) / str(v))


def _warmup_texts(run):
    return ["keras mtl warmup request", ""]


def write_warmup(extra_dir, texts):
    """TF Serving warmup records (PredictionLog protos in a TFRecord file)."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        print("note: tensorflow-serving-api not installed; no warmup file written (pip install keras-mtl[serving])")
        return None
    import tensorflow as tf

    path = Path(extra_dir) / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(path)) as writer:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name="serving_default"),
            inputs={"text": tf.make_tensor_proto(texts, dtype=tf.string)},
        )
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())
    return path


def resolve_version_dir(model_dir):
    """A SavedModel version dir from a version dir or a model base dir (newest version)."""
    path = Path(model_dir)
    if (path / "saved_model.pb").exists():
        return path
    versions = version_dirs(path)
    if versions and (path / str(versions[-1]) / "saved_model.pb").exists():
        return path / str(versions[-1])
    if not path.exists():
        raise ModelError(f"{path}: not found")
    if not path.is_dir():
        raise ModelError(
            f"{path}: is a file, not a model directory; pass saved_models/<name> or "
            "saved_models/<name>/<version> as written by `keras-mtl export`"
        )
    raise ModelError(
        f"{path}: not a SavedModel (no saved_model.pb) and no integer version directory holding one; "
        "pass saved_models/<name> or saved_models/<name>/<version> as written by `keras-mtl export`"
    )


def read_metadata(version_dir):
    """`assets.extra/keras_mtl.json` of a version (None when absent)."""
    path = Path(version_dir) / "assets.extra" / METADATA
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{path}: cannot read the export metadata: {' '.join(str(err).split())}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta
