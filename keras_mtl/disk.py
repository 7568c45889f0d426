"""Writing files safely: whole or not at all, and a full disk as one error.

`write_text` / `write_json` write a `.tmp` file and rename it over the
target, so a reader sees the old file or the new one, never half of one. A
full disk (or an exhausted quota) is `NoSpace`, one line naming the path,
whichever layer reports it (`is_disk_full`: Python, h5py, TensorFlow); what
was half-written is removed (`write_or_no_space`), and a writer that cannot
fail cleanly (HDF5) gets its bytes reserved first (`reserve_space`).
"""

import contextlib
import errno
import gc
import json
import os
import shutil
import sys
from pathlib import Path

from keras_mtl.errors import ModelError


class NoSpace(ModelError):
    """The filesystem is full (or the disk quota is exhausted): `path` could not be written.

    One line: `PATH: no space left on device[ while writing WHAT][; THEN]`.
    """

    def __init__(self, path, what="", then=""):
        self.path, self.what = path, what
        message = f"{path}: no space left on device" + (f" while writing {what}" if what else "")
        super().__init__(message + (f"; {then}" if then else ""))

# What a full disk says, whichever layer reports it: OSError(ENOSPC, EDQUOT),
# h5py ("errno = 28, error message = 'No space left on device'"), TensorFlow
# (ResourceExhaustedError / UnknownError "...: No space left on device").
_DISK_FULL_ERRNOS = tuple(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)

_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "errno = 28,")

def is_disk_full(error):
    """Whether `error` (or an exception it was raised from) says the disk is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(error).lower()
        if any(t in text for t in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False

@contextlib.contextmanager
def unraisable_disk_errors_hidden():
    """Drop the "Exception ignored in ... file write failed ... No space left"
    lines h5py prints (from its objects' `__del__`) while the block runs; any
    other unraisable exception is reported as usual.

    Yields a list that collects the dropped errors: h5py may report a failed
    write only there (its file's `close()` then returns as if all went well).
    """

    previous = sys.unraisablehook
    dropped = []

    def hook(unraisable):
        if is_disk_full(unraisable.exc_value):
            dropped.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield dropped
    finally:
        sys.unraisablehook = previous

def write_or_no_space(path, write, what):
    """`write()` (which writes the file `path`); a full disk -> `NoSpace` naming
    `path`, with the partial file removed.

    A library may still hold the file open after its failed write (h5py: the
    file object stays open and fails again when it is freed, printing
    hundreds of lines). So the file is truncated while the error is handled,
    which frees its blocks; once the error (and with it the writer's
    objects) is released, they close the file into the freed space, and the
    file is removed. h5py may also report a failed write only from `__del__`
    and return: that counts as a failure too. (Where HDF5's own `close()`
    fails it may still crash at exit: `reserve_space` first, for HDF5.)
    """

    with unraisable_disk_errors_hidden() as dropped:
        try:
            result = write()
        except Exception as err:
            if not is_disk_full(err):
                raise
            with contextlib.suppress(OSError):
                os.truncate(path, 0)
        else:
            if not dropped:
                return result
            # h5py failed to flush the file at close, said so only in __del__, and returned
            with contextlib.suppress(OSError):
                os.truncate(path, 0)
        gc.collect()  # the failed writer's objects close now
        with contextlib.suppress(OSError):
            os.unlink(path)
    raise NoSpace(path, what)

def reserve_space(path, nbytes, what):
    """Make sure `nbytes` more bytes fit on the filesystem of `path` before a
    writer that cannot fail cleanly writes it; `NoSpace` naming `path` otherwise.

    HDF5 (`save_weights`) does not stop at a failed write: h5py's `close()`
    then crashes the process (a segfault, after hundreds of lines of errors).
    So the bytes are allocated first, in a scratch file beside `path`
    (`posix_fallocate`, which also counts against a disk quota), and freed
    right before the real write. Where the filesystem cannot preallocate,
    its free space is compared instead.
    """
    scratch = Path(str(path) + ".reserve")
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            allocate = getattr(os, "posix_fallocate", None)
            try:
                if allocate is None:
                    raise OSError(errno.EOPNOTSUPP, "posix_fallocate is not available")
                allocate(fd, 0, int(nbytes))
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                if shutil.disk_usage(scratch.parent).free < nbytes:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        finally:
            os.close(fd)
    except OSError as err:
        if not is_disk_full(err):
            raise
        raise NoSpace(path, f"{what} (it needs about {_size(nbytes)})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)

def _size(nbytes):
    """`1.5 MiB`: a byte count for a message."""
    if nbytes < 1024:
        return f"{int(nbytes)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}"

def pid_alive(pid):
    """Whether process `pid` still runs (this one, or one of another user, counts as running).

    Used to tell a temporary of a killed writer (its pid in its name) from one being written now.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # no process has such an id
        return False
    return True


def write_text(path, text):
    """Write `path` whole or not at all (a `.tmp` file renamed over it; removed if the write fails)."""
    tmp = Path(str(path) + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)

def write_json(path, data, compact=False):
    """Write `data` as JSON, atomically; `compact`: one line, no spaces (large records)."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2, sort_keys=False)
    write_text(path, text + "\n")
