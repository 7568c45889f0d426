"""Surviving a kill: `keras-mtl train` SIGKILLed mid-epoch resumes from its backup.

Three CLI processes on the same tiny config and seed, dropout ON (0.1, as in
the default configs):

* A: killed (SIGKILL) early in epoch 3, once its backup holds epoch 2
  (`WORKDIR/backup/checkpoint/training_metadata.json`; the run's metrics.csv
  is in `WORKDIR/backup/` too until the run is complete);
* the same command with another learning rate: refused in one line that
  names the field, the backup left as it was;
* B: the same command again, which must resume at epoch 3 (the backup in
  `WORKDIR/backup/`), finish, write report.json and remove backup/;
* R: an uninterrupted reference run (started beside A).

Checks and tolerances:

* epochs 1-2 (trained by A before the kill) equal R's rows to 1e-5: same
  seed, same data stream, deterministic CPU kernels; only float formatting
  is allowed to differ;
* B's epochs 3-4 equal R's too (1e-5): the restored weights and optimizer
  state, the restored states of the Dropout layers' seed generators (not
  part of `save_weights`: without them the resumed epochs draw other dropout
  masks, ~1e-2 off), and the training stream continued where A stopped
  (train.py skips the finished epochs' batches of the iterator-independent
  stream), so the resumed run trains on exactly the batches, and the masks,
  of the uninterrupted one. A
  restart from scratch would repeat epoch 1's loss (checked separately, in
  case the tolerance ever has to be loosened).
"""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

EPOCHS = 4
STEPS = 40  # per epoch: long enough that the kill lands inside epoch 3


def write_config(tmp_path):
    demo = lambda kind, n: {"format": "demo", "kind": kind, "train": n, "dev": 16, "test": 16}  # noqa: E731
    config = {
        "name": "resume",
        "seed": 3,
        "tasks": [
            {"name": "topic", "type": "classification", "metrics": ["accuracy"], "data": demo("topic", 160)},
            {"name": "pos", "type": "tagging", "metrics": ["token_accuracy"], "loss_weight": 0.5, "data": demo("pos", 80)},
        ],
        "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.1, "task_conditioning": "embedding"},
        "train": {"batch_size": 8, "epochs": EPOCHS, "steps_per_epoch": STEPS, "learning_rate": 0.003,
                  "bucket_lengths": [16], "eval_batch_size": 64},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _start(env, config, workdir, log, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "keras_mtl.cli", "train", str(config), "--workdir", str(workdir), *extra],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=config.parent,
    )


def _rows(workdir, unfinished=False):
    """metrics.csv of a finished run, or (`unfinished`) of the run in progress (in backup/)."""
    path = Path(workdir) / "metrics.csv"
    if unfinished and (Path(workdir) / "backup" / "metrics.csv").exists():
        path = Path(workdir) / "backup" / "metrics.csv"
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):  # caught mid-write
        return []


def _backup_epoch(workdir):
    """The last epoch the unfinished run in `workdir` committed to its backup (0: none)."""
    try:
        return int(json.loads((Path(workdir) / "backup" / "checkpoint" / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):  # not there yet (or replaced just now)
        return 0


def _wait(proc, log, timeout):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"training did not finish in {timeout} s:\n{Path(log).read_text()[-3000:]}")


def _metrics(row, prefix):
    return {k: float(v) for k, v in row.items() if k.startswith(prefix) and v != ""}


def test_sigkill_mid_epoch_then_resume(tmp_path, subprocess_env):
    config, env = write_config(tmp_path), subprocess_env()
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    proc_a = _start(env, config, killed, tmp_path / "a.log")
    proc_r = _start(env, config, reference, tmp_path / "r.log")
    try:
        deadline = time.time() + 600
        while _backup_epoch(killed) < 2:
            if proc_a.poll() is not None:
                pytest.fail(f"run A ended before epoch 2:\n{(tmp_path / 'a.log').read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("run A did not finish epoch 2 in 600 s")
            time.sleep(0.05)
        epoch_seconds = float(_rows(killed, unfinished=True)[1]["seconds"])
        time.sleep(min(2.0, 0.3 * epoch_seconds))  # into epoch 3, well before its end
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(timeout=60)
    finally:
        if proc_a.poll() is None:
            proc_a.kill()
    assert proc_a.returncode == -signal.SIGKILL
    rows = _rows(killed, unfinished=True)
    assert [r["epoch"] for r in rows] == ["1", "2"], f"the kill came after epoch 3 ended ({epoch_seconds} s/epoch): raise STEPS"
    assert (killed / "backup").is_dir(), "no backup to resume from"
    assert not (killed / "report.json").exists()

    # the same work dir with another learning rate: one error line, the backup untouched
    backup = sorted((p.relative_to(killed), p.stat().st_mtime_ns) for p in (killed / "backup").rglob("*"))
    proc_c = _start(env, config, killed, tmp_path / "c.log", "--set", "train.learning_rate=0.01")
    _wait(proc_c, tmp_path / "c.log", 300)
    out_c = (tmp_path / "c.log").read_text()
    assert proc_c.returncode == 2, out_c[-3000:]
    errors = [line for line in out_c.splitlines() if line.startswith("keras-mtl train: error:")]
    assert len(errors) == 1 and "train.learning_rate: 0.003 -> 0.01" in errors[0] and "--fresh" in errors[0], out_c[-3000:]
    assert "Traceback" not in out_c
    assert sorted((p.relative_to(killed), p.stat().st_mtime_ns) for p in (killed / "backup").rglob("*")) == backup

    # B: the same command again
    proc_b = _start(env, config, killed, tmp_path / "b.log")
    _wait(proc_b, tmp_path / "b.log", 900)
    out_b = (tmp_path / "b.log").read_text()
    assert proc_b.returncode == 0, out_b[-4000:]
    assert "Epoch 3/4" in out_b and "Epoch 1/4" not in out_b and "Epoch 2/4" not in out_b, out_b[-3000:]
    assert (killed / "report.json").exists()
    assert not (killed / "backup").exists(), "backup/ must be removed when training ends"
    resumed = _rows(killed)
    assert [r["epoch"] for r in resumed] == ["1", "2", "3", "4"]  # earlier rows kept, no duplicates
    run = json.loads((killed / "run.json").read_text())
    assert [r["epoch"] for r in run["history"]] == [1, 2, 3, 4]

    _wait(proc_r, tmp_path / "r.log", 900)
    assert proc_r.returncode == 0, (tmp_path / "r.log").read_text()[-4000:]
    ref = _rows(reference)
    assert [r["epoch"] for r in ref] == ["1", "2", "3", "4"]

    # every epoch, including the resumed 3-4: the same training as the uninterrupted run
    for mine, theirs in zip(resumed, ref):
        a, b = _metrics(mine, "train_") | _metrics(mine, "dev_"), _metrics(theirs, "train_") | _metrics(theirs, "dev_")
        assert a.keys() == b.keys() and a
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-5, (mine["epoch"], key, a, b)

    # epoch 3 continues from the restored weights (a restart from scratch would repeat epoch 1's loss)
    loss = lambda row: float(row["train_loss"])  # noqa: E731
    assert loss(resumed[2]) < loss(resumed[0]) - 0.05, (loss(resumed[0]), loss(resumed[2]))
    report, report_ref = (json.loads((d / "report.json").read_text()) for d in (killed, reference))
    assert report["epochs"] == report_ref["epochs"] == EPOCHS
    print("resumed vs reference, last epoch:", json.dumps({"resumed": resumed[3], "reference": ref[3]}))
