"""The files of a training run, and loading them back.

    WORKDIR/
      config.yaml      the validated config (data paths absolute)
      vocab.txt        the WordPiece vocabulary (learned from train, or the preset's)
      tokenizer.json   a preset's tokenizer, whole (absent for a learned vocabulary)
      run.json         classes per task, backend, versions, sampling, timings
      model.keras      the trained model
      metrics.csv      per-epoch train losses and per-task dev metrics
      logs/            TensorBoard
      report.json, report.md   per-task test metrics
      backup/          the unfinished run (absent when none): see below
      .lock            held (flock) by the `train` writing into the work dir

A run never writes over the files of the previous one while it trains: it
writes everything into `backup/` (its config, vocabulary and metrics.csv, the
per-epoch checkpoint in `backup/checkpoint/`), and only once the new model
and report are complete does it move them over the old files (`os.replace`,
one file at a time, after a `backup/COMPLETE` marker so that a kill in
between is finished by the next `train`). A run that fails (bad data, NaN
loss) leaves the previous model, report and config as they were; a killed
run leaves `backup/`, from which the same command resumes.

A work dir that holds files named like a run's (config.yaml, report.md, ...)
but is not a keras-mtl run is refused (`check_workdir`), as is a config file
that is the work dir's own config.yaml: a run never overwrites a user's files.
A full disk is one error (`NoSpace`, `is_disk_full`), not a crash: what the
run half-wrote is removed, the previous run's files stay as they were.
"""

import contextlib
import dataclasses
import errno
import fnmatch
import os
import shutil
import zipfile
from pathlib import Path

import yaml

from keras_mtl.disk import write_text
from keras_mtl.errors import ModelError
from keras_mtl.record import RunRecord

# The files of a finished run, in the order a finished run's staged files replace them.
RESULT_FILES = (
    "model.keras", "vocab.txt", "tokenizer.json", "config.yaml", "run.json", "metrics.csv", "report.json", "report.md",
    "adapt.json",
)
OPTIONAL_RESULT_FILES = ("tokenizer.json", "adapt.json")  # a run that does not write it removes the previous run's

class WorkdirBusy(ModelError):
    """Another process is training into the work dir."""

class NotARunWorkdir(ModelError):
    """The work dir holds files a run would overwrite, and they are not a run's."""

def _path(relative, doc=None):
    """A `RunFiles` property: the path `relative` below the run's root."""
    return property(lambda self: self.root / relative, doc=doc)

@dataclasses.dataclass
class RunFiles:
    root: Path

    config = _path("config.yaml")
    vocab = _path("vocab.txt")
    tokenizer = _path("tokenizer.json", "A preset's tokenizer, kept whole (data.tokenize.tokenizer_record).")
    run = _path("run.json")
    model = _path("model.keras")
    metrics_csv = _path("metrics.csv")
    logs = _path("logs")
    backup = _path("backup")
    report_json = _path("report.json")
    report_md = _path("report.md")
    lock = _path(".lock")
    checkpoint = _path("backup/checkpoint", "The per-epoch training state of the unfinished run (`RunBackup`).")
    run_state = _path(
        "backup/run_state.json",
        "What the unfinished run was started with (config, plan, data), to check a resume against.",
    )
    complete_marker = _path("backup/COMPLETE")

    def staged(self):
        """The same files inside `backup/`, where an unfinished run writes them."""
        return RunFiles(self.backup)

def default_workdir(config):
    return Path("runs") / config.name

def save_config(files, loaded):
    write_text(files.config, yaml.safe_dump(loaded.raw, sort_keys=False))

@contextlib.contextmanager
def workdir_lock(root):
    """Hold `root/.lock` (an exclusive `flock`) while the block runs.

    The lock belongs to the open file: it is released when the block ends and
    also when the process dies (even by SIGKILL), so a stale lock file never
    blocks anyone. The holder's PID is written into the file for the message
    of whoever is refused.

    Raises:
        WorkdirBusy: another process (or another `train` in this one) holds it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection, as before
        yield
        return
    path = root / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise WorkdirBusy(
                f"{root}: work dir in use by another `keras-mtl train` ({who}); "
                "wait for it to finish, or train into another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock

def promote_staged(files):
    """Move the staged files of a complete run over the work dir's, then drop `backup/`.

    Call with the work dir locked, once every staged file is written and the
    `COMPLETE` marker is in place: each `os.replace` is atomic, so a reader
    sees either an old or a new file, never a partial one, and a kill midway
    is finished by the next call (the marker is still there).
    """
    staged = files.staged()
    if not files.complete_marker.exists():
        return False
    for name in RESULT_FILES:
        source = staged.root / name
        if source.exists():
            os.replace(source, files.root / name)
        elif name in OPTIONAL_RESULT_FILES:  # the previous run's, not this one's
            (files.root / name).unlink(missing_ok=True)
    shutil.rmtree(files.backup, ignore_errors=True)
    return True


def config_changes(old, new, ignore=()):
    """The differences between two saved configs (`LoadedConfig.raw`), as
    `(field, old value, new value)` triples; fields matching a pattern in
    `ignore` (`train.eval_batch_size`, `tasks.*.unseen_labels`) are skipped.

    Tasks are compared by name (`tasks.topic.loss_weight`); a changed task
    list is one change of `tasks`.
    """

    changes = []

    def walk(a, b, path):
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in ignore):
            return
        if path == "tasks" and isinstance(a, list) and isinstance(b, list):
            names_a, names_b = ([t.get("name") if isinstance(t, dict) else t for t in x] for x in (a, b))
            if names_a != names_b:
                changes.append(("tasks", ", ".join(map(str, names_a)), ", ".join(map(str, names_b))))
                return
            for name, ta, tb in zip(names_a, a, b):
                walk(ta, tb, f"tasks.{name}")
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else str(key))
            return
        if a != b:
            changes.append((path, a, b))

    walk(old, new, "")
    return changes

class _Absent:
    def __repr__(self):
        return "(absent)"

_ABSENT = _Absent()

def is_run(root):
    """Whether `root` holds a keras-mtl run (finished, or being moved into place).

    A run's `run.json` (a `RunRecord`), a `model.keras` that is a Keras
    archive, or a complete staged run in `backup/` (its `COMPLETE` marker).
    """
    files = RunFiles(Path(root))
    if files.complete_marker.is_file():
        return True
    if files.run.is_file():
        try:
            RunRecord.read(files.run)
            return True
        except ModelError:
            pass
    return files.model.is_file() and zipfile.is_zipfile(files.model)

def _foreign_backup(files):
    """A `backup/` that is not a keras-mtl run's (which `train` would delete)."""
    if not files.backup.exists():
        return False
    if not files.backup.is_dir():
        return True
    entries = {p.name for p in files.backup.iterdir()}
    # a run writes run_state.json first thing into backup/ (checkpoint/, COMPLETE later)
    return bool(entries) and not entries & {"run_state.json", "checkpoint", "COMPLETE"}

def check_workdir(root, config_path=None):
    """Refuse a work dir where `train` would overwrite files that are not a run's.

    Raises `NotARunWorkdir` (one line, naming the files) when `root` holds any
    of a run's file names (`RESULT_FILES`, a `backup/`) but is not a keras-mtl
    run (`is_run`); and when `config_path`, the config being trained, is one
    of those files in `root` (the run would replace `config.yaml` with its
    validated copy: the user's comments and relative paths would be lost). A
    finished run is replaced file by file as before; other files (notes.txt,
    data) are left alone.
    """
    root = Path(root)
    if config_path is not None and Path(config_path).name in RESULT_FILES:
        target = root / Path(config_path).name
        try:
            same = target.exists() and os.path.samefile(config_path, target)
        except OSError:
            same = False
        if same or Path(config_path).resolve() == target.resolve():
            raise NotARunWorkdir(
                f"{config_path}: the config file is the work dir's own {target.name}, which the run replaces "
                f"with its validated copy (comments dropped, data paths made absolute); copy it out of {root} "
                "and train from the copy, or train into another --workdir"
            )
    if not root.exists():
        return
    if not root.is_dir():
        raise NotARunWorkdir(f"{root}: the work dir is an existing file, not a directory; pass another --workdir")
    if is_run(root):
        return
    files = RunFiles(root)
    taken = [name for name in RESULT_FILES if (root / name).exists()]
    if _foreign_backup(files):
        taken.append("backup/")
    if taken:
        raise NotARunWorkdir(
            f"{root}: not a keras-mtl work dir (no run.json of a finished run), and training would overwrite "
            f"{', '.join(taken)} in it; train into a new or empty --workdir, or move those files away"
        )
