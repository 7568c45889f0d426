"""The files of a training run, and loading them back.

    WORKDIR/
      config.yaml      the validated config (data paths absolute)
      vocab.txt        the WordPiece vocabulary (learned from train)
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
"""

import contextlib
import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import yaml

from keras_mtl.errors import ModelError

# The files of a finished run, in the order a finished run's staged files replace them.
RESULT_FILES = ("model.keras", "vocab.txt", "config.yaml", "run.json", "metrics.csv", "report.json", "report.md")


class WorkdirBusy(ModelError):
    """Another process is training into the work dir."""


def _path(relative, doc=None):
    """A `RunFiles` property: the path `relative` below the run's root."""
    return property(lambda self: self.root / relative, doc=doc)


@dataclasses.dataclass
class RunFiles:
    root: Path

    config = _path("config.yaml")
    vocab = _path("vocab.txt")
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


def _write_text(path, text):
    """Write `path` whole or not at all (a `.tmp` file renamed over it)."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path, data, compact=False):
    """Write `data` as JSON, atomically; `compact`: one line, no spaces (large records)."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2, sort_keys=False)
    _write_text(path, text + "\n")


def save_config(files, loaded):
    _write_text(files.config, yaml.safe_dump(loaded.raw, sort_keys=False))


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
    shutil.rmtree(files.backup, ignore_errors=True)
    return True


def config_changes(old, new, ignore=()):
    """The differences between two saved configs (`LoadedConfig.raw`), as
    `(field, old value, new value)` triples; fields matching a pattern in
    `ignore` (`train.eval_batch_size`, `tasks.*.unseen_labels`) are skipped.

    Tasks are compared by name (`tasks.topic.loss_weight`); a changed task
    list is one change of `tasks`.
    """
    import fnmatch

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


@dataclasses.dataclass
class RunRecord:
    """`run.json`: what a trained run was built with. Every writer (train,
    meta-train, adapt, the benchmarks) fills this one record; `load_run`
    checks a work dir's file against it."""

    classes: dict  # task -> its class names (tags for tagging), in head order
    task_types: dict  # task -> classification | multilabel | regression | tagging
    max_sequence_length: Optional[int] = None  # tokens per text, [CLS] included
    pad_id: Optional[int] = None  # the padding token id of the vocabulary
    train_sizes: Optional[dict] = None  # task -> labelled training examples
    epochs: Optional[int] = None  # epochs trained (1 for meta-training)
    steps_per_epoch: Optional[int] = None  # optimizer steps per epoch
    replicas: Optional[int] = None  # data-parallel replicas the run trained on
    history: list = dataclasses.field(default_factory=list)  # per epoch: losses and dev metrics
    keep: Optional[str] = None  # train.keep: last | best
    kept_epoch: Optional[int] = None  # the epoch whose weights model.keras holds (1-based)
    kept_dev_score: Optional[float] = None  # its mean primary dev metric (negated where lower is better)
    class_weights: Optional[dict] = None  # task -> per-class loss weights (class_weights: balanced)
    sampling_schedule: Optional[dict] = None  # {"tasks", "probabilities": per epoch}
    bucket_lengths: Optional[list] = None  # padded lengths of the training batches
    loss_weighting: Optional[str] = None  # train.loss_weighting
    final_loss_weights: Optional[dict] = None  # task -> lambda at the end of training
    meta: Optional[dict] = None  # Reptile's settings (meta-train)
    adapted_from: Optional[str] = None  # the work dir a few-shot run started from (adapt)
    adapt: Optional[dict] = None  # the few-shot run's settings and result (adapt)
    keras_mtl_version: Optional[str] = None  # filled in by `write`
    backend: Optional[str] = None  # filled in by `write`
    keras_version: Optional[str] = None  # filled in by `write`
    precision: Optional[str] = None  # the dtype policy it trained under (train.precision, auto resolved); by `write`

    @classmethod
    def for_config(cls, config, classes, **fields):
        """A record of `config`'s tasks (types, sequence length) with `fields`."""
        return cls(
            classes=classes,
            task_types={t.name: t.type for t in config.tasks},
            max_sequence_length=config.model.max_sequence_length,
            **fields,
        )

    def write(self, path):
        import keras

        from keras_mtl import __version__

        self.keras_mtl_version = self.keras_mtl_version or __version__
        self.backend = self.backend or keras.backend.backend()
        self.keras_version = self.keras_version or keras.__version__
        self.precision = self.precision or keras.mixed_precision.global_policy().name
        first = ("keras_mtl_version", "backend", "keras_version")
        record = dataclasses.asdict(self)
        ordered = {k: record[k] for k in first} | {k: v for k, v in record.items() if k not in first}
        write_json(path, {k: v for k, v in ordered.items() if v is not None})

    @classmethod
    def read(cls, path):
        """The record in `path`; a ModelError names the file when it is not one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise ModelError(f"{path}: not a keras-mtl run record ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


class _Absent:
    def __repr__(self):
        return "(absent)"


_ABSENT = _Absent()


@dataclasses.dataclass
class Run:
    """A trained run loaded back from its work dir."""

    files: RunFiles
    config: object  # ExperimentConfig
    info: RunRecord  # run.json
    vocabulary: list

    @property
    def classes(self):
        return self.info.classes

    def load_model(self):
        import keras
        import keras_hub  # noqa: F401  (registers pretrained backbones)

        import keras_mtl.layers  # noqa: F401  (registers custom layers)

        return keras.saving.load_model(self.files.model, compile=False)


def load_run(workdir) -> Run:
    """Load a finished run, or say clearly what is missing."""
    files = RunFiles(Path(workdir))
    if not files.root.is_dir():
        raise ModelError(f"{files.root}: work dir not found")
    missing = [p.name for p in (files.config, files.vocab, files.run, files.model) if not p.exists()]
    if missing:
        raise ModelError(
            f"{files.root}: no trained model here (missing {', '.join(missing)}); "
            f"run `keras-mtl train CONFIG --workdir {files.root}` first"
        )
    from keras_mtl.config import load_config
    from keras_mtl.data.tokenize import load_vocabulary

    loaded = load_config(files.config)
    return Run(files, loaded.config, RunRecord.read(files.run), load_vocabulary(files.vocab))
