"""A full disk is one error line (`NoSpace`, exit 2), not a crash.

`train` on a nearly full filesystem used to end in a segfault (exit 139) after
hundreds of lines of h5py errors, leaving a truncated checkpoint; `export` in
a `ResourceExhaustedError` traceback. Now:

* `train` stops at the first write that finds the disk full, with one line
  naming the file and "no space left on device"; the previous run's files are
  unchanged, what the run half-wrote is removed, the epochs it finished stay
  in `backup/`, and the same command resumes once there is space. The
  checkpoint (HDF5, which crashes rather than fails when a write does not
  fit) is only written after its size is reserved.
* `export` removes its temporary directory (and the `--out` dir, if it
  created it); earlier versions are untouched.

Fast tests inject ENOSPC (an `OSError`, TensorFlow's `ResourceExhaustedError`)
in-process; two slow ones fill a real small tmpfs, mounted in a private mount
namespace (`unshare -m`; skipped, saying why, where that cannot be done).
"""

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from keras_mtl.cli import main

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def invoke(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_error_line(code, err, command):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"keras-mtl {command}: error: "), lines[0]
    assert "no space left on device" in lines[0], lines[0]
    return lines[0]


def digest(root):
    """{relative path: sha256} of every file under `root`."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*")) if p.is_file()
    }


def previous_run_files(root):
    return {k: v for k, v in digest(root).items() if "/" not in k and k != ".lock"}


@pytest.fixture
def epochs_ended(monkeypatch):
    """The epochs (1-based) that end in the trainings run during the test."""
    import keras

    ended = []
    real = keras.callbacks.TensorBoard.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        real(self, epoch, logs)
        ended.append(epoch + 1)

    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", on_epoch_end)
    return ended


@pytest.fixture
def previous(tiny_run, tiny_config, tmp_path):
    """A work dir holding a finished run (a copy of the session's tiny run), and a
    2-epoch config to train into it again."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run["workdir"], workdir)
    config = tiny_config("embedding", epochs=2, steps_per_epoch=2)
    return workdir, config, previous_run_files(workdir)


# ---------------------------------------------------------------- the pieces


def test_is_disk_full_reads_each_layers_error():
    import tensorflow as tf

    from keras_mtl.disk import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, NO_SPACE, "/x"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # h5py: "[Errno 28] Can't synchronously write data (file write failed: ..., errno = 28, error message = ...)"
    assert is_disk_full(RuntimeError("Can't decrement id ref count (file write failed: time = x, filename = 'a.h5', "
                                     "file descriptor = 5, errno = 28, error message = 'No space left on device')"))
    assert is_disk_full(tf.errors.ResourceExhaustedError(None, None, f"/m/.tmp-1/saved_model.pb.tmp1; {NO_SPACE}"))
    try:
        try:
            raise OSError(errno.ENOSPC, NO_SPACE)
        except OSError as inner:
            raise ValueError("saving failed") from inner
    except ValueError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096]"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("File not found"))


def test_write_or_no_space_removes_what_it_half_wrote(tmp_path):
    from keras_mtl.disk import NoSpace, reserve_space, write_or_no_space

    target = tmp_path / "a.weights.h5"

    def half_write():
        target.write_bytes(b"\x89HDF" + bytes(5000))
        raise OSError(errno.ENOSPC, NO_SPACE, str(target))

    with pytest.raises(NoSpace) as e:
        write_or_no_space(target, half_write, "the checkpoint of epoch 3")
    assert str(e.value) == f"{target}: no space left on device while writing the checkpoint of epoch 3"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermissionError):  # anything else is not a full disk
        write_or_no_space(target, lambda: (_ for _ in ()).throw(PermissionError(13, "Permission denied")), "x")
    assert write_or_no_space(target, lambda: 7, "x") == 7

    reserve_space(target, 1 << 20, "x")  # fits: nothing left behind
    assert list(tmp_path.iterdir()) == []
    too_much = shutil.disk_usage(tmp_path).free + (1 << 30)
    with pytest.raises(NoSpace, match=r"while writing the checkpoint of epoch 1 \(it needs about [\d.]+ [KMGT]iB\)$"):
        reserve_space(target, too_much, "the checkpoint of epoch 1")
    assert list(tmp_path.iterdir()) == []


def test_reserve_space_without_preallocation_compares_the_free_space(tmp_path, monkeypatch):
    from keras_mtl.disk import NoSpace, reserve_space

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    free = shutil.disk_usage(tmp_path).free
    reserve_space(tmp_path / "f", 1024, "a file")
    with pytest.raises(NoSpace, match="no space left on device while writing a file"):
        reserve_space(tmp_path / "f", free * 2, "a file")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- train, ENOSPC injected


def test_a_checkpoint_that_does_not_fit_stops_training_and_the_same_command_resumes(previous, monkeypatch,
                                                                                   epochs_ended):
    """The 2nd epoch's checkpoint finds the disk full (half of it written): one
    NoSpace naming it; the previous run's files unchanged; backup/ holds epoch 1's
    commit and nothing half-written; with space again, the same call resumes at
    epoch 2 and replaces the previous run."""
    import keras

    from keras_mtl.training import train
    from keras_mtl.disk import NoSpace

    workdir, config, before = previous
    real = keras.Model.save_weights
    saves = []

    def save_weights(self, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 2:
            Path(filepath).write_bytes(b"\x89HDF" + bytes(3000))
            raise OSError(errno.ENOSPC, f"Can't synchronously write data ({NO_SPACE})")
        return real(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    with pytest.raises(NoSpace) as e:
        train(config, workdir=workdir, verbose=0)
    msg = str(e.value)
    checkpoint = workdir / "backup" / "checkpoint"
    assert msg.startswith(
        f"{checkpoint / 'epoch-2.weights.h5'}: no space left on device while writing the checkpoint of epoch 2; "
        "the previous run's files are unchanged; its epochs up to 1 are kept in"
    ), msg
    assert "\n" not in msg and "rerun the same command to resume" in msg, msg
    assert previous_run_files(workdir) == before
    assert sorted(p.name for p in checkpoint.iterdir()) == ["epoch-1.weights.h5", "training_metadata.json"]
    assert not [p for p in workdir.rglob("*") if p.name.endswith((".tmp", ".reserve"))]

    monkeypatch.setattr(keras.Model, "save_weights", real)
    epochs_ended.clear()
    train(config, workdir=workdir, verbose=0)
    assert epochs_ended == [2]  # resumed, not started over
    assert not (workdir / "backup").exists()
    assert json.loads((workdir / "run.json").read_text())["epochs"] == 2


def test_the_checkpoint_is_reserved_before_hdf5_writes_it(previous, monkeypatch):
    """HDF5 crashes (segfault at exit) after a write that did not fit: the
    checkpoint's bytes are allocated first, and a disk without them never
    reaches `save_weights`."""
    import keras

    from keras_mtl.training import train
    from keras_mtl.disk import NoSpace

    workdir, config, before = previous
    saves = []
    monkeypatch.setattr(keras.Model, "save_weights", lambda self, path, *a, **k: saves.append(path))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(NoSpace, match=r"epoch-1\.weights\.h5: no space left on device while writing the checkpoint "
                                      r"of epoch 1 \(it needs about [\d.]+ KiB\); the previous run's files are "
                                      r"unchanged; nothing of this run was kept"):
        train(config, workdir=workdir, verbose=0)
    assert saves == []
    assert previous_run_files(workdir) == before
    assert not (workdir / "backup").exists()


def test_a_model_that_does_not_fit_keeps_the_finished_epochs(previous, monkeypatch, epochs_ended):
    import keras

    from keras_mtl.training import train
    from keras_mtl.disk import NoSpace

    workdir, config, before = previous
    real = keras.Model.save

    def save(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04" + bytes(2000))
        raise OSError(errno.ENOSPC, NO_SPACE, str(filepath))

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(NoSpace) as e:
        train(config, workdir=workdir, verbose=0)
    assert str(e.value).startswith(
        f"{workdir / 'backup' / 'model.keras'}: no space left on device while writing the trained model; "
        "the previous run's files are unchanged; its epochs up to 2 are kept in"
    ), str(e.value)
    assert previous_run_files(workdir) == before
    assert not (workdir / "backup" / "model.keras").exists()
    monkeypatch.setattr(keras.Model, "save", real)
    epochs_ended.clear()
    train(config, workdir=workdir, verbose=0)
    assert epochs_ended == []  # both epochs were kept: only the model and report are written
    assert (workdir / "model.keras").exists() and not (workdir / "backup").exists()


def test_cli_train_on_a_full_disk_anywhere_is_one_line(previous, monkeypatch, tmp_path):
    """TensorFlow's own writers (TensorBoard here) report a full disk as a
    ResourceExhaustedError: the same one line, naming the work dir."""
    import keras
    import tensorflow as tf

    workdir, config, before = previous

    def full(self, epoch, logs=None):
        raise tf.errors.ResourceExhaustedError(None, None, f"{workdir}/logs/train/events.out.tfevents.1; {NO_SPACE}")

    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", full)
    path = tmp_path / "two-epochs.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    code, out, err = invoke(["train", path, "--workdir", workdir, "--quiet"])
    line = one_error_line(code, err, "train")
    assert line.startswith(f"keras-mtl train: error: {workdir}: no space left on device; "), line
    assert previous_run_files(workdir) == before


# ---------------------------------------------------------------- export, ENOSPC injected


@pytest.mark.parametrize("existing", [True, False])
def test_cli_export_on_a_full_disk_is_one_line_and_leaves_no_trace(tiny_run, tmp_path, monkeypatch, existing):
    import tensorflow as tf

    base = tmp_path / "saved" / "m"
    if existing:  # an earlier version stays as it was
        (base / "1" / "variables").mkdir(parents=True)
        (base / "1" / "saved_model.pb").write_bytes(b"version 1")
    before = digest(tmp_path)

    import keras_mtl.serving.export as export_module

    def write_out(filepath, **kwargs):  # TensorFlow's SavedModel writer on a full disk, halfway
        Path(filepath, "variables").mkdir(parents=True)
        Path(filepath, "variables", "variables.data-00000-of-00001").write_bytes(bytes(4000))
        raise tf.errors.ResourceExhaustedError(None, None, f"{filepath}/saved_model.pb.tmp1; {NO_SPACE}")

    real_build = export_module.build_archive

    def build_archive(*args, **kwargs):
        archive = real_build(*args, **kwargs)
        archive.write_out = write_out
        return archive

    monkeypatch.setattr(export_module, "build_archive", build_archive)
    code, out, err = invoke(["export", tiny_run["workdir"], "--out", base])
    line = one_error_line(code, err, "export")
    assert line == (
        f"keras-mtl export: error: --out {base}: no space left on device while writing the export; "
        "no version was written and the earlier ones are as they were; free some space and rerun"
    ), line
    assert out == ""
    assert digest(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["1", "m", "saved", "saved_model.pb", "variables"]
                                                           if existing else [])


# ---------------------------------------------------------------- a real full tmpfs

# Runs as `unshare -m python -c DRIVER ARGS`: in a private mount namespace it
# mounts a small tmpfs, copies `copies` in, fills it up to `free` bytes, runs
# `argv` (keras-mtl), then records its exit status, stderr and the files (with
# their hashes) before and after; with `rerun`, frees the space and runs argv
# again. The tmpfs vanishes with the namespace, so everything is checked in there.
DRIVER = textwrap.dedent(
    r"""
    import hashlib, json, os, shutil, subprocess, sys

    args = json.loads(sys.argv[1])
    mnt = args["mnt"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + args["size"], "tmpfs", mnt], check=True)
    for source, name in args["copies"]:
        shutil.copytree(source, os.path.join(mnt, name))

    def files():
        out = {}
        for root, dirs, names in os.walk(mnt):
            for name in names:
                path = os.path.join(root, name)
                if name != "filler":
                    with open(path, "rb") as f:
                        out[os.path.relpath(path, mnt)] = hashlib.sha256(f.read()).hexdigest()
            for name in dirs:
                out[os.path.relpath(os.path.join(root, name), mnt) + "/"] = "dir"
        return out

    def run():
        proc = subprocess.run(args["argv"], capture_output=True, text=True, env=args["env"], cwd=args["cwd"],
                              timeout=500)
        return {"rc": proc.returncode, "stderr": proc.stderr[-20000:], "stdout": proc.stdout[-2000:]}

    st = os.statvfs(mnt)
    with open(os.path.join(mnt, "filler"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - args["free"]))
    result = {"before": files()}
    result["first"] = run()
    result["after"] = files()
    if args.get("rerun"):
        os.remove(os.path.join(mnt, "filler"))
        result["second"] = run()
        result["final"] = files()
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture
def tmpfs_driver(tmp_path, subprocess_env, result_of):
    """tmpfs_driver(argv, copies, free, rerun=False): run keras-mtl argv ({mnt}: the
    tmpfs) on a small tmpfs filled up to `free` bytes; returns the driver's record."""
    unshare = shutil.which("unshare")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    if unshare is None:
        pytest.skip("no `unshare` command: cannot mount a private tmpfs to fill up")
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe_dir}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace (unshare -m; needs root or "
                    f"CAP_SYS_ADMIN): {' '.join(probe.stderr.split())[:300]}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in subprocess_env("tensorflow").items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}

    def drive(argv, copies, free, rerun=False):
        args = {
            "mnt": str(mnt), "size": "8m", "free": free, "rerun": rerun, "copies": [[str(s), n] for s, n in copies],
            "argv": [sys.executable, "-m", "keras_mtl.cli", *[str(a).replace("{mnt}", str(mnt)) for a in argv]],
            "env": env, "cwd": str(tmp_path),
        }
        proc = subprocess.run([unshare, "-m", sys.executable, "-c", DRIVER, json.dumps(args)],
                              capture_output=True, text=True, timeout=1200)
        return result_of(proc), mnt

    return drive


@pytest.mark.slow
def test_train_on_a_real_full_tmpfs(tiny_run, tiny_config, tmp_path, tmpfs_driver):
    """64 KiB free: the run's small files fit, its first checkpoint does not. One
    error line, exit 2 (was: a segfault, exit 139, after ~900 lines of h5py
    errors); the previous run unchanged, nothing half-written left; with the
    space back, the same command trains and replaces the previous run."""
    config = tmp_path / "again.yaml"
    config.write_text(yaml.safe_dump(tiny_config("embedding", epochs=2, steps_per_epoch=2)), encoding="utf-8")
    record, mnt = tmpfs_driver(["train", config, "--workdir", "{mnt}/run", "--quiet"],
                               [(tiny_run["workdir"], "run")], free=64 * 1024, rerun=True)
    first = record["first"]
    assert first["rc"] == 2, first["stderr"][-3000:]
    line = one_error_line(first["rc"], first["stderr"], "train")
    assert line.startswith(f"keras-mtl train: error: {mnt}/run/backup/checkpoint/epoch-1.weights.h5: no space left "
                           "on device while writing the checkpoint of epoch 1"), line
    before, after = record["before"], record["after"]
    for files in (before, after):
        files.pop("run/.lock")  # holds the pid of the last train
    assert {k: v for k, v in after.items() if k in before} == before  # the previous run: byte for byte
    added = sorted(k for k in after if k not in before)
    assert all(k.startswith("run/logs/") for k in added), added  # only TensorBoard's log of the attempt
    second = record["second"]
    assert second["rc"] == 0, second["stderr"][-3000:]
    final = record["final"]
    assert final["run/model.keras"] != before["run/model.keras"] and "run/backup/" not in final


@pytest.mark.slow
def test_export_on_a_real_full_tmpfs(tiny_run, tmp_path, tmpfs_driver):
    earlier = tmp_path / "earlier"
    (earlier / "1" / "variables").mkdir(parents=True)
    (earlier / "1" / "saved_model.pb").write_bytes(b"an earlier version")
    record, mnt = tmpfs_driver(["export", tiny_run["workdir"], "--out", "{mnt}/m"], [(earlier, "m")],
                               free=64 * 1024)
    first = record["first"]
    line = one_error_line(first["rc"], first["stderr"], "export")
    assert line.startswith(f"keras-mtl export: error: --out {mnt}/m: no space left on device while writing the "
                           "export; no version was written"), line
    assert first["stdout"] == ""
    assert record["after"] == record["before"]  # version 1 as it was; no 2/, no .tmp-*, no lock file
