"""The work dir of `train`: what a failed, interrupted, resumed or concurrent run does to it.

* A re-train that fails (a bad data row, in any split, of any kind) leaves the
  previous run's files byte for byte, and `load_run`/`export` still work on it.
* A run interrupted after an epoch (an exception out of `fit`, standing in for
  a kill: `tests/test_resume.py` does the real SIGKILL) resumes from
  `WORKDIR/backup/` to exactly the rows of an uninterrupted run, dropout on,
  and replaces the previous model only when it is complete.
* Resuming with another config stops with one line naming the fields
  (old -> new) and `--fresh`; the work dir stays resumable, and `fresh=True`
  starts over.
* One `train` per work dir: a second one is refused, naming the work dir and
  the holder's PID; the lock dies with its process.

All in-process on tiny models (a few steps each); the lock tests need no model.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
RESULT_FILES = ("config.yaml", "vocab.txt", "run.json", "model.keras", "metrics.csv", "report.json", "report.md")
WORDS = "the a chef storm robot coach cloud laptop cooked arrived compiled trained drifted crashed soup code team".split()
SPLIT_ROWS = {"train": 48, "dev": 12, "test": 12}


def _rows(n, offset):
    rows = []
    for i in range(n):
        k = i + offset
        words = [WORDS[(k * 7 + j * 3) % len(WORDS)] for j in range(3 + k % 4)]
        rows.append(f"{' '.join(words)} {k}\t{'pos' if k % 3 else 'neg'}")
    return rows


def write_data(root):
    offset = 0
    for split, n in SPLIT_ROWS.items():
        (root / f"{split}.tsv").write_text("\n".join(["sentence\tlabel"] + _rows(n, offset)) + "\n", encoding="utf-8")
        offset += n


def tiny_raw(root, **train):
    return {
        "name": "wd",
        "seed": 5,
        "tasks": [
            {"name": "mood", "type": "classification", "metrics": ["accuracy"],
             "data": {"format": "delimited", "train": str(root / "train.tsv"), "dev": str(root / "dev.tsv"),
                      "test": str(root / "test.tsv")}},
            {"name": "pos", "type": "tagging", "metrics": ["token_accuracy"], "loss_weight": 0.5,
             "data": {"format": "demo", "kind": "pos", "train": 32, "dev": 8, "test": 8}},
        ],
        "model": {"vocabulary_size": 120, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.1, "task_conditioning": "embedding"},
        "train": {"batch_size": 8, "epochs": 3, "steps_per_epoch": 4, "learning_rate": 0.003,
                  "bucket_lengths": [16], "eval_batch_size": 64, **train},
    }


def snapshot(workdir):
    return {name: (workdir / name).read_bytes() for name in RESULT_FILES}


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def numbers(row):
    return {k: float(v) for k, v in row.items() if (k.startswith("train_") or k.startswith("dev_")) and v != ""}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run (its files' bytes kept), the data and config it came from."""
    from keras_mtl.training import train

    root = tmp_path_factory.mktemp("trained")
    write_data(root)
    workdir = root / "run"
    train(tiny_raw(root), workdir=workdir, verbose=0)
    return root, workdir, snapshot(workdir)


# --- a failed re-train keeps the previous run -------------------------------


@settings(max_examples=12, deadline=None)
@given(
    split=st.sampled_from(sorted(SPLIT_ROWS)),
    row=st.integers(0, min(SPLIT_ROWS.values()) - 1),
    kind=st.sampled_from(["no tab", "empty label", "empty text"]),
)
def test_retrain_with_a_bad_row_keeps_the_previous_run(trained, split, row, kind):
    from keras_mtl.errors import DataError
    from keras_mtl.training import train
    from keras_mtl.run import load_run

    root, workdir, before = trained
    path = root / f"{split}.tsv"
    good = path.read_text(encoding="utf-8")
    lines = good.splitlines()
    text, label = lines[row + 1].split("\t")
    lines[row + 1] = {"no tab": f"{text} {label}", "empty label": f"{text}\t", "empty text": f"\t{label}"}[kind]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        with pytest.raises(DataError, match=rf"{split}.tsv:{row + 2}"):
            train(tiny_raw(root, learning_rate=0.01), workdir=workdir, verbose=0)
    finally:
        path.write_text(good, encoding="utf-8")
    assert snapshot(workdir) == before  # model, metrics, report, config, vocab, run.json: untouched
    assert not (workdir / "backup").exists()
    assert load_run(workdir).config.train.learning_rate == 0.003


def test_failed_retrain_leaves_an_exportable_run(trained, tmp_path):
    from keras_mtl.errors import DataError
    from keras_mtl.serving.export import export
    from keras_mtl.training import train

    root, workdir, before = trained
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine row\tpos\nno tab in this row\n", encoding="utf-8")
    raw = tiny_raw(root)
    raw["tasks"][0]["data"]["train"] = str(tmp_path / "train.tsv")
    with pytest.raises(DataError, match=r"train.tsv:3: expected at least 2 fields"):
        train(raw, workdir=workdir, verbose=0)
    assert snapshot(workdir) == before
    version = export(workdir, out=tmp_path / "saved", warmup=False)
    assert (Path(version) / "saved_model.pb").exists()


# --- interrupted, resumed, compared ------------------------------------------


def test_interrupted_run_keeps_the_previous_model_and_resumes_exactly(tmp_path, interrupt_after):
    """Dropout on: the resumed epochs equal an uninterrupted run's (the seed
    generators' states are part of the backup), and until the new run is
    complete the work dir still holds the previous one."""
    from keras_mtl.training import train
    from keras_mtl.run import load_run

    write_data(tmp_path)
    workdir, reference = tmp_path / "run", tmp_path / "reference"
    train(tiny_raw(tmp_path, epochs=1, steps_per_epoch=2), workdir=workdir, verbose=0)  # the "previous" run
    previous = snapshot(workdir)

    interrupt_after(2)
    with pytest.raises(interrupt_after.error):
        train(tiny_raw(tmp_path), workdir=workdir, verbose=0)
    assert snapshot(workdir) == previous  # the interrupted run wrote only into backup/
    assert load_run(workdir).info.epochs == 1
    assert [r["epoch"] for r in csv_rows(workdir / "backup" / "metrics.csv")] == ["1", "2"]

    # the resume may change what cannot matter (the evaluation batch size)
    interrupt_after.ended.clear()
    train(tiny_raw(tmp_path, eval_batch_size=5), workdir=workdir, verbose=0)
    assert interrupt_after.ended == [3]  # resumed: epoch 3 only
    train(tiny_raw(tmp_path), workdir=reference, verbose=0)
    assert not (workdir / "backup").exists()
    resumed, ref = csv_rows(workdir / "metrics.csv"), csv_rows(reference / "metrics.csv")
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in ref] == ["1", "2", "3"]
    for mine, theirs in zip(resumed, ref):
        a, b = numbers(mine), numbers(theirs)
        assert a.keys() == b.keys() and a
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-5, (mine["epoch"], key, a[key], b[key])
    assert load_run(workdir).info.epochs == 3


def test_run_killed_after_its_last_epoch_finishes_without_training_again(tmp_path, interrupt_after):
    """Killed after the last epoch's backup (while testing or saving): the
    same command trains no epoch, and writes the model and report."""
    from keras_mtl.training import train

    write_data(tmp_path)
    workdir = tmp_path / "run"
    interrupt_after(2)
    with pytest.raises(interrupt_after.error):
        train(tiny_raw(tmp_path, epochs=2, steps_per_epoch=2), workdir=workdir, verbose=0)
    assert not (workdir / "model.keras").exists()
    interrupt_after.ended.clear()
    report = train(tiny_raw(tmp_path, epochs=2, steps_per_epoch=2), workdir=workdir, verbose=0)
    assert interrupt_after.ended == [] and report["epochs"] == 2
    assert [r["epoch"] for r in csv_rows(workdir / "metrics.csv")] == ["1", "2"]
    assert set(RESULT_FILES) <= {p.name for p in workdir.iterdir()} and not (workdir / "backup").exists()


@settings(max_examples=20, deadline=None)
@given(moved=st.integers(0, len(RESULT_FILES)), previous=st.booleans())
def test_results_moved_in_place_all_or_on_the_next_train(tmp_path_factory, moved, previous):
    """A kill while a complete run's files replace the old ones (after the
    COMPLETE marker): the next `train` (here: `promote_staged`, its first step)
    finishes the move; before the marker nothing is moved."""
    from keras_mtl.workdir import RunFiles, promote_staged

    files = RunFiles(tmp_path_factory.mktemp("promote"))
    stage = files.staged()
    stage.root.mkdir()
    for name in RESULT_FILES:
        if previous:
            (files.root / name).write_text(f"old {name}")
        (stage.root / name).write_text(f"new {name}")
    assert not promote_staged(files)  # no marker: the staged run is not complete
    assert all((stage.root / name).exists() for name in RESULT_FILES)
    files.complete_marker.write_text("")
    for name in RESULT_FILES[:moved]:  # the killed promotion got this far
        os.replace(stage.root / name, files.root / name)
    assert promote_staged(files)
    assert {name: (files.root / name).read_text() for name in RESULT_FILES} == {n: f"new {n}" for n in RESULT_FILES}
    assert not files.backup.exists()


def test_resume_with_another_config_is_refused_in_one_line(tmp_path, interrupt_after):
    from keras_mtl.errors import ConfigError
    from keras_mtl.training import train

    write_data(tmp_path)
    workdir = tmp_path / "run"
    interrupt_after(1)
    with pytest.raises(interrupt_after.error):
        train(tiny_raw(tmp_path), workdir=workdir, verbose=0)
    backup = sorted(p.relative_to(workdir) for p in (workdir / "backup").rglob("*"))

    with pytest.raises(ConfigError) as e:
        train(tiny_raw(tmp_path, learning_rate=0.01), workdir=workdir, verbose=0)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert "train.learning_rate: 0.003 -> 0.01" in msg and "--fresh" in msg and str(workdir / "backup") in msg, msg

    shape = tiny_raw(tmp_path)
    shape["model"]["hidden_dim"] = 32
    with pytest.raises(ConfigError) as e:
        train(shape, workdir=workdir, verbose=0)
    msg = str(e.value)
    assert "\n" not in msg and "model.hidden_dim: 16 -> 32" in msg and "could not be loaded" not in msg, msg

    with pytest.raises(ConfigError, match=r"epochs \(train.epochs, --max-steps\): 3 -> 1"):
        train(tiny_raw(tmp_path), workdir=workdir, max_steps=4, verbose=0)
    assert sorted(p.relative_to(workdir) for p in (workdir / "backup").rglob("*")) == backup  # untouched

    # a backup from before a field existed (here: train.keep, tasks[].teacher) resumes with its default
    state_path = workdir / "backup" / "run_state.json"
    state = json.loads(state_path.read_text())
    del state["config"]["train"]["keep"]
    for task in state["config"]["tasks"]:
        del task["teacher"]
    state_path.write_text(json.dumps(state))

    # still resumable as started ...
    report = train(tiny_raw(tmp_path), workdir=workdir, verbose=0)
    assert report["epochs"] == 3 and [r["epoch"] for r in csv_rows(workdir / "metrics.csv")] == ["1", "2", "3"]

    # ... or started over with fresh=True (the CLI's --fresh)
    interrupt_after(1)
    with pytest.raises(interrupt_after.error):
        train(tiny_raw(tmp_path), workdir=workdir, verbose=0)
    report = train(tiny_raw(tmp_path, learning_rate=0.01), workdir=workdir, fresh=True, verbose=0)
    assert report["epochs"] == 3 and not (workdir / "backup").exists()
    assert yaml.safe_load((workdir / "config.yaml").read_text())["train"]["learning_rate"] == 0.01


def test_config_changes_names_each_changed_field():
    from keras_mtl.workdir import config_changes

    old = {"name": "x", "tasks": [{"name": "a", "loss_weight": 1.0, "unseen_labels": "warn"}],
           "model": {"dropout": 0.1}, "train": {"eval_batch_size": 64, "learning_rate": 0.001}}

    @given(
        field=st.sampled_from([("model", "dropout"), ("train", "learning_rate"), ("name",)]),
        value=st.one_of(st.floats(allow_nan=False), st.text(max_size=5), st.none()),
    )
    def check(field, value):
        import copy

        new = copy.deepcopy(old)
        node = new
        for part in field[:-1]:
            node = node[part]
        before = node[field[-1]]
        node[field[-1]] = value
        expected = [] if value == before else [(".".join(field), before, value)]
        assert config_changes(old, new) == expected

    check()
    new = {**old, "tasks": [{"name": "a", "loss_weight": 2.0, "unseen_labels": "error"}],
           "train": {"eval_batch_size": 8, "learning_rate": 0.001}}
    assert config_changes(old, new) == [("tasks.a.loss_weight", 1.0, 2.0), ("tasks.a.unseen_labels", "warn", "error"),
                                        ("train.eval_batch_size", 64, 8)]
    assert config_changes(old, new, ["train.eval_batch_size", "tasks.*.unseen_labels"]) == [("tasks.a.loss_weight", 1.0, 2.0)]
    assert config_changes(old, {**old, "tasks": [{"name": "b"}]}) == [("tasks", "a", "b")]
    added = config_changes(old, {**old, "seed": 3})
    assert [(f, n) for f, _, n in added] == [("seed", 3)]


# --- one train per work dir ---------------------------------------------------


def test_second_train_in_a_locked_workdir_is_refused(tmp_path):
    from keras_mtl.training import train
    from keras_mtl.workdir import WorkdirBusy, workdir_lock

    write_data(tmp_path)
    workdir = tmp_path / "run"
    with workdir_lock(workdir):
        with pytest.raises(WorkdirBusy) as e:
            train(tiny_raw(tmp_path), workdir=workdir, verbose=0)
    msg = str(e.value)
    assert str(workdir) in msg and f"pid {os.getpid()}" in msg and "\n" not in msg, msg
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # refused before writing anything


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def lock_holder(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield workdir, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_lock_names_the_other_process_and_dies_with_it(lock_holder):
    from keras_mtl.workdir import WorkdirBusy, workdir_lock

    workdir, proc = lock_holder
    with pytest.raises(WorkdirBusy, match=rf"{workdir}: work dir in use by another `keras-mtl train` \(pid {proc.pid}\)"):
        with workdir_lock(workdir):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with workdir_lock(workdir):  # a SIGKILLed holder leaves the file, not the lock
        assert (workdir / ".lock").read_text().strip() == str(os.getpid())


def test_cli_train_in_a_busy_workdir_is_one_error_line(lock_holder, tmp_path):
    workdir, proc = lock_holder
    write_data(tmp_path)
    config = tmp_path / "wd.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env["KERAS_BACKEND"] = "tensorflow"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "train", str(config), "--workdir", str(workdir), "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    errors = [line for line in out.stderr.splitlines() if line.startswith("keras-mtl train: error:")]
    assert len(errors) == 1 and f"pid {proc.pid}" in errors[0] and str(workdir) in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert proc.poll() is None and time.time() - started < 300


@pytest.mark.parametrize("max_steps", [0, -1, 2.5, True, "3"])
def test_max_steps_must_be_a_positive_integer(tmp_path, max_steps):
    # Checked before anything is read or written (was: 0 trained the full schedule).
    from keras_mtl.errors import ConfigError
    from keras_mtl.training import train

    write_data(tmp_path)
    with pytest.raises(ConfigError, match=r"max_steps \(--max-steps\) must be an integer >= 1"):
        train(tiny_raw(tmp_path), workdir=tmp_path / "run", max_steps=max_steps, verbose=0)
    assert not (tmp_path / "run").exists()


def test_run_record_round_trips_and_names_a_bad_file(tmp_path):
    # run.json has one schema (RunRecord) that train, meta-train, adapt and the benchmarks write.
    from keras_mtl.errors import ModelError
    from keras_mtl.record import RunRecord

    record = RunRecord(classes={"t": ["a", "b"]}, task_types={"t": "classification"}, epochs=2, history=[{"epoch": 1}])
    record.write(tmp_path / "run.json")
    back = RunRecord.read(tmp_path / "run.json")
    assert back == record and back.backend and back.keras_mtl_version
    assert "meta" not in (tmp_path / "run.json").read_text()  # unset fields are left out
    (tmp_path / "bad.json").write_text('{"task_types": {}, "colour": 1}')  # no classes: not a record
    with pytest.raises(ModelError, match=r"bad\.json: not a keras-mtl run record .*classes"):
        RunRecord.read(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match=r"list\.json: not a keras-mtl run record .*a JSON list"):
        RunRecord.read(tmp_path / "list.json")


def test_a_run_json_from_a_newer_keras_mtl_is_read_and_its_new_keys_kept(tmp_path):
    """A newer run.json (keys this version does not know) is read, with one warning
    naming the keys per set of them, and written back with them."""
    import json
    import warnings

    from keras_mtl.record import RunRecord

    data = {"classes": {"t": ["a", "b"]}, "task_types": {"t": "classification"}, "colour": "blue", "window": {"n": 3}}
    (tmp_path / "run.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"run\.json: fields this keras-mtl does not know \(colour, window\)"):
        record = RunRecord.read(tmp_path / "run.json")
    assert record.classes == data["classes"] and record.extra == {"colour": "blue", "window": {"n": 3}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same keys again: no second warning
        RunRecord.read(tmp_path / "run.json")
    record.write(tmp_path / "again.json")
    written = json.loads((tmp_path / "again.json").read_text())
    assert written["colour"] == "blue" and written["window"] == {"n": 3} and "extra" not in written


# --- a work dir that is not a run: the user's files are never overwritten ------

USER_CONFIG = "# my experiment: keep these comments\n"


def _user_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_train_refuses_a_workdir_holding_user_files_named_like_a_runs(trained, tmp_path):
    """A dir with the user's config.yaml and report.md (not a run): refused in one
    line naming them, nothing written. A dir holding a finished run is still
    replaced by the new run, and unrelated files (notes.txt) are left alone."""
    from keras_mtl.training import train
    from keras_mtl.workdir import NotARunWorkdir

    root, _, _ = trained
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text(USER_CONFIG + yaml.safe_dump(tiny_raw(root)), encoding="utf-8")
    (mine / "report.md").write_text("# my notes on the run\n", encoding="utf-8")
    (mine / "notes.txt").write_text("todo\n", encoding="utf-8")
    before = _user_files(mine)
    with pytest.raises(NotARunWorkdir) as e:
        train(tiny_raw(root), workdir=mine, verbose=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{mine}: not a keras-mtl work dir"), msg
    assert "config.yaml, report.md" in msg and "notes.txt" not in msg, msg
    assert _user_files(mine) == before  # not even a .lock or backup/

    # a finished run (here a copy of one) is replaced as before; notes.txt stays
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    (run / "notes.txt").write_text("todo\n", encoding="utf-8")
    train(tiny_raw(root, learning_rate=0.01), workdir=run, max_steps=2, verbose=0)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["learning_rate"] == 0.01
    assert (run / "notes.txt").read_text() == "todo\n"


def test_training_from_the_workdirs_own_config_yaml_is_refused(trained, tmp_path, capsys):
    """`keras-mtl train DIR/config.yaml --workdir DIR` would replace the user's
    config (comments, relative paths) with the run's copy: one error line, the
    file untouched; also where DIR holds a finished run."""
    import shutil

    from keras_mtl.cli import main

    root, _, _ = trained
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    config = fresh / "config.yaml"
    config.write_text(USER_CONFIG + yaml.safe_dump(tiny_raw(root)), encoding="utf-8")
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    (run / "config.yaml").write_text(USER_CONFIG + (run / "config.yaml").read_text(), encoding="utf-8")
    for workdir in (fresh, run):
        before = _user_files(workdir)
        code = main(["train", str(workdir / "config.yaml"), "--workdir", str(workdir), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1, err
        prefix = f"keras-mtl train: error: {workdir / 'config.yaml'}: the config file is the work dir's own"
        assert err.startswith(prefix), err
        assert "copy it out of" in err, err
        assert _user_files(workdir) == before


def test_which_workdirs_are_runs(trained, tmp_path):
    import shutil

    from keras_mtl.workdir import NotARunWorkdir, check_workdir, is_run

    check_workdir(tmp_path / "new")  # absent: fine, nothing created
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    check_workdir(empty)
    assert is_run(trained[1]) and not is_run(empty)

    # compare removes run.json before retraining: its model.keras (a Keras archive) still marks a run
    leftovers = tmp_path / "leftovers"
    shutil.copytree(trained[1], leftovers)
    (leftovers / "run.json").unlink()
    check_workdir(leftovers)
    # a damaged model.keras in a finished run: retraining it is allowed
    damaged = tmp_path / "damaged"
    shutil.copytree(trained[1], damaged)
    (damaged / "model.keras").write_bytes(b"PK")
    check_workdir(damaged)
    # a killed first run: only its backup/
    killed = tmp_path / "killed"
    (killed / "backup").mkdir(parents=True)
    (killed / "backup" / "run_state.json").write_text("{}")
    check_workdir(killed)

    foreign = tmp_path / "foreign"
    (foreign / "backup").mkdir(parents=True)
    (foreign / "backup" / "photos.tar").write_text("x")  # train deletes a run's backup/: not this one
    (foreign / "metrics.csv").write_text("a,b\n")
    with pytest.raises(NotARunWorkdir, match=r"would overwrite metrics\.csv, backup/ in it"):
        check_workdir(foreign)
    not_json = tmp_path / "not-json"
    not_json.mkdir()
    (not_json / "run.json").write_text('{"my": "own file"}')
    with pytest.raises(NotARunWorkdir, match=r"would overwrite run\.json in it"):
        check_workdir(not_json)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(NotARunWorkdir, match="an existing file, not a directory"):
        check_workdir(a_file)
