"""The on-disk layout of an export: a TF Serving model base directory.

    saved_models/<name>/                  the model base (`default_base`, or --out)
        1/ 2/ ...                         integer versions, each a SavedModel:
            saved_model.pb  variables/  assets/
            assets.extra/keras_mtl.json                (`read_metadata`)
            assets.extra/tf_serving_warmup_requests    (TF Serving replays it at load)
        models.config  models.local.config  batching.config  monitoring.config
                                          (`keras-mtl serve`: keras_mtl.serving.server_config)
        .tmp-<version>-<token>-<pid>/     a version being written (`staging_dir`)
        .keras_mtl_export.lock            exists only while a version is published

TF Serving serves the integer directories and ignores every other entry,
which is why the config files and the temporaries can live beside the
versions. This module is the only place that builds these paths: `export`
writes through `staging_dir`, `write_assets_extra` and `publish`; `predict`
and `keras-mtl serve` read through `resolve_version_dir`, `find_versions`
and `read_metadata`. docs/export_layout.md describes the layout and why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

from keras_mtl.disk import pid_alive
from keras_mtl.errors import ModelError

DEFAULT_ROOT = Path("saved_models")
SAVED_MODEL = "saved_model.pb"
ASSETS_EXTRA = "assets.extra"
METADATA = "keras_mtl.json"
WARMUP = "tf_serving_warmup_requests"
WARMUP_TEXTS = ("keras mtl warmup request", "")
LOCK_FILE = ".keras_mtl_export.lock"
TMP_PREFIX = ".tmp-"
# written beside the versions by keras_mtl.serving.server_config
MODEL_CONFIG = "models.config"
LOCAL_MODEL_CONFIG = "models.local.config"
BATCHING_CONFIG = "batching.config"
MONITORING_CONFIG = "monitoring.config"

_HOW_TO_PASS = "pass saved_models/<name> or saved_models/<name>/<version> as written by `keras-mtl export`"


# --------------------------------------------------------------------------
# paths


def default_base(name):
    """`saved_models/<name>` (relative to the working directory)."""
    return DEFAULT_ROOT / name


def version_path(base, version):
    return Path(base) / str(int(version))


def metadata_path(version_dir):
    return Path(version_dir) / ASSETS_EXTRA / METADATA


def warmup_path(version_dir):
    return Path(version_dir) / ASSETS_EXTRA / WARMUP


# --------------------------------------------------------------------------
# versions


def version_dirs(base):
    """Sorted integer version numbers under a model base (with a SavedModel or not)."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base):
    """One more than the largest integer-named entry (a stray file `3` counts too)."""
    base = Path(base)
    taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(taken) + 1 if taken else 1


def find_versions(model_base: str | os.PathLike) -> list[int]:
    """Sorted integer versions under `model_base` that hold a saved_model.pb (what TF Serving can serve)."""
    base = Path(model_base)
    if not base.is_dir():
        what = "is a file" if base.exists() else "does not exist"
        raise ModelError(f"model base {base} {what}; expected a directory of "
                         "integer version dirs (saved_models/<name>/<version>/)")
    versions, without_pb, others = [], [], []
    for entry in sorted(base.iterdir()):
        if entry.is_dir() and entry.name.isdigit():
            if (entry / SAVED_MODEL).is_file():
                versions.append(int(entry.name))
            else:
                without_pb.append(entry.name)
        else:
            others.append(entry.name + ("/" if entry.is_dir() else ""))
    if versions:
        return sorted(versions)
    found = []
    if without_pb:
        found.append(f"version dirs without {SAVED_MODEL}: " + ", ".join(without_pb))
    if others:
        shown = others[:10] + (["..."] if len(others) > 10 else [])
        found.append("other entries: " + ", ".join(shown))
    hint = ""
    if (base / SAVED_MODEL).is_file():
        hint = f"; {base} is itself a SavedModel: pass its parent directory"
    raise ModelError(
        f"no servable version in {base}: TF Serving needs <base>/<integer version>/"
        f"{SAVED_MODEL}; found {'; '.join(found) or 'nothing'}{hint}"
    )


def is_export(path):
    """Whether `path` is an export: a SavedModel version dir, or a model base
    holding one (an integer version dir with a saved_model.pb)."""
    path = Path(path)
    if (path / SAVED_MODEL).is_file():
        return True
    return any((version_path(path, v) / SAVED_MODEL).is_file() for v in version_dirs(path))


def resolve_version_dir(model_dir):
    """A SavedModel version dir from a version dir or a model base dir (newest version)."""
    path = Path(model_dir)
    if (path / SAVED_MODEL).exists():
        return path
    versions = version_dirs(path)
    if versions and (version_path(path, versions[-1]) / SAVED_MODEL).exists():
        return version_path(path, versions[-1])
    if not path.exists():
        raise ModelError(f"{path}: not found")
    if not path.is_dir():
        raise ModelError(f"{path}: is a file, not a model directory; {_HOW_TO_PASS}")
    raise ModelError(
        f"{path}: not a SavedModel (no {SAVED_MODEL}) and no integer version directory holding one; {_HOW_TO_PASS}"
    )


# --------------------------------------------------------------------------
# assets.extra


def read_metadata(version_dir):
    """`assets.extra/keras_mtl.json` of a version (None when absent)."""
    path = metadata_path(version_dir)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{path}: cannot read the export metadata: {' '.join(str(err).split())}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def read_model_info(model_base: str | os.PathLike, version: int | None = None) -> dict:
    """keras_mtl.json of `version` of a model base (default: the latest servable); {} when absent."""
    if version is None:
        version = find_versions(model_base)[-1]
    return read_metadata(version_path(model_base, version)) or {}


def write_assets_extra(version_dir, metadata, warmup=True):
    """Write `assets.extra/`: keras_mtl.json, and the warmup records when `warmup`."""
    from keras_mtl.disk import write_json

    extra = Path(version_dir) / ASSETS_EXTRA
    extra.mkdir(exist_ok=True)
    write_json(metadata_path(version_dir), metadata)
    if warmup:
        write_warmup(version_dir, signature_inputs(metadata))


def signature_inputs(metadata):
    """{signature name: its input names} of an export, from its metadata.

    `serving_default` and one signature per task; an export from before
    per-task signatures has `serving_default` (`text`) only.
    """
    tasks = (metadata or {}).get("tasks") or {}
    if not all("inputs" in t for t in tasks.values()):
        return {"serving_default": ["text"]}
    default = metadata.get("serving_default") or list(tasks)
    out = {"serving_default": list(tasks[default[0]]["inputs"]) if default and default[0] in tasks else ["text"]}
    out.update({name: list(t["inputs"]) for name, t in tasks.items()})
    return out


def write_warmup(version_dir, signatures=None, texts=WARMUP_TEXTS):
    """TF Serving warmup records (PredictionLog protos in a TFRecord file): one
    request per signature (`signature_inputs`; default: `serving_default` with
    `text`), so that TF Serving traces each before it serves. Its path, or None."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        print("note: tensorflow-serving-api not installed; no warmup file written (pip install keras-mtl[serving])")
        return None
    import tensorflow as tf

    path = warmup_path(version_dir)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name, inputs in (signatures or {"serving_default": ["text"]}).items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=name),
                inputs={key: tf.make_tensor_proto(list(texts), dtype=tf.string) for key in inputs},
            )
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


# --------------------------------------------------------------------------
# writing a version: base dir, temporaries, lock, publish, prune


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
    """Create the model base dir (`create`), or say in one line why it cannot be used.

    A version folder (`M/1`, holding saved_model.pb, or an integer-named dir
    beside such versions) is refused: exporting into it would write `M/1/1`,
    which TF Serving (and `keras-mtl serve`) do not serve; the base is `M`.
    """
    base = Path(base)
    if (base / SAVED_MODEL).is_file() or (base.name.isdigit() and _has_versions(base.parent)):
        raise ModelError(
            f"--out {base}: this is a version folder of the model base {base.parent} (TF Serving serves "
            f"<base>/<version>/); pass the base, --out {base.parent}: export picks the next version number"
        )
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


def _has_versions(path):
    """Whether `path` holds an integer version dir with a SavedModel."""
    return any((version_path(path, v) / SAVED_MODEL).is_file() for v in version_dirs(path))


def missing_dirs(path):
    """`path` and its ancestors that do not exist yet, deepest first (what `prepare_base` would create)."""
    missing = []
    for p in [Path(path), *Path(path).parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def remove_empty_dirs(dirs):
    """Remove the directories `dirs` (deepest first) that are empty: undo `prepare_base` after a failed export."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:  # not empty (another export wrote into it), or gone
            return


@contextlib.contextmanager
def staging_dir(base):
    """A fresh temporary directory in `base` to write a version into; removed on exit.

    `.tmp-<version>-<token>-<pid>`: the version in the name is provisional (the
    next one at start; `publish` chooses the final one under the lock), the
    token keeps two exports of one process apart, and the pid lets a later
    export remove it once this process is gone. Stale ones are removed first.
    """
    remove_stale_temporaries(base)
    tmp = Path(base) / f"{TMP_PREFIX}{next_version(base)}-{uuid.uuid4().hex[:8]}-{os.getpid()}"
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(base):
    """Delete `.tmp-<version>-[<token>-]<pid>` dirs left by an export that was killed."""
    for tmp in Path(base).glob(f"{TMP_PREFIX}*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def base_lock(base):
    """Exclusive lock on a model base (blocks while another export holds it).

    Held only while a version number is chosen, the finished version renamed
    into place and old versions pruned (`publish`): the slow part of an export
    (writing the SavedModel) runs unlocked, so concurrent exports overlap. The
    lock file is removed before the lock is released, so the base holds only
    versions afterwards; a waiter that then finds its file unlinked or
    replaced starts over on the current one.
    """
    path = Path(base) / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # not POSIX: the rename in publish still never overwrites a version
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


def publish(tmp, base, keep=None):
    """Rename the finished `tmp` to the next free version, then keep the newest `keep`.

    Both under `base_lock`, so concurrent exports get distinct versions. The
    rename is atomic on one filesystem: the version appears complete or not at all.
    """
    with base_lock(base):
        final = _rename_to_free_version(tmp, base)
        if keep:
            prune(base, keep)
    return final


def _rename_to_free_version(tmp, base):
    for _ in range(1000):
        final = version_path(base, next_version(base))
        if final.exists():  # only a racing, non-locking writer
            continue
        try:
            os.rename(tmp, final)
        except OSError as err:
            # an entry appeared at `final` between the check and the rename
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                continue
            raise ModelError(f"cannot rename {tmp} to {final}: {err.strerror or err}") from None
        return final
    raise ModelError(f"{base}: could not find a free version number to export to")


def prune(base, keep):
    """Remove all but the newest `keep` versions (never the newest)."""
    check_keep(keep)
    for v in version_dirs(base)[:-keep]:
        shutil.rmtree(version_path(base, v))
