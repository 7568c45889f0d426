"""keras_mtl.serving.layout: the on-disk layout of a model base.

Versions (listing, the next free number, resolving a base or a version dir),
`assets.extra/` (keras_mtl.json, warmup records), the temporary directory a
version is written into and its cleanup, and the lock under which a version
is published. Whole exports through this layout: tests/test_export_*.py and
tests/test_end_to_end.py.
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from keras_mtl.errors import ModelError
from keras_mtl.serving.layout import (
    LOCK_FILE,
    base_lock,
    default_base,
    find_versions,
    metadata_path,
    next_version,
    prune,
    publish,
    read_metadata,
    read_model_info,
    remove_stale_temporaries,
    resolve_version_dir,
    staging_dir,
    version_dirs,
    warmup_path,
    write_assets_extra,
)

def _version(base, v, pb=True):
    path = Path(base) / str(v)
    path.mkdir(parents=True)
    if pb:
        (path / "saved_model.pb").write_bytes(b"")
    return path


# ---------------------------------------------------------------------------
# paths and versions


def test_names_are_the_tf_serving_layout(tmp_path):
    assert default_base("demo") == Path("saved_models") / "demo"
    assert metadata_path(tmp_path / "3") == tmp_path / "3" / "assets.extra" / "keras_mtl.json"
    assert warmup_path(tmp_path / "3") == tmp_path / "3" / "assets.extra" / "tf_serving_warmup_requests"


def test_versions_and_next_version(tmp_path):
    assert version_dirs(tmp_path / "missing") == [] and next_version(tmp_path / "missing") == 1
    _version(tmp_path, 1)
    _version(tmp_path, 10)
    _version(tmp_path, 2, pb=False)
    (tmp_path / "11").write_text("a stray file named like a version")
    (tmp_path / ".tmp-12-abcd1234-1").mkdir()
    (tmp_path / "models.config").write_text("")
    assert version_dirs(tmp_path) == [1, 2, 10]
    assert find_versions(tmp_path) == [1, 10], "only versions holding a saved_model.pb are servable"
    assert next_version(tmp_path) == 12, "a stray file `11` counts, a temporary does not"


def test_resolve_version_dir(tmp_path):
    _version(tmp_path, 1)
    _version(tmp_path, 2)
    assert resolve_version_dir(tmp_path) == tmp_path / "2"
    assert resolve_version_dir(tmp_path / "1") == tmp_path / "1"
    _version(tmp_path, 3, pb=False)
    with pytest.raises(ModelError, match="no integer version directory holding one"):
        resolve_version_dir(tmp_path)


# ---------------------------------------------------------------------------
# assets.extra


def test_metadata_round_trip_and_errors(tmp_path):
    version = _version(tmp_path, 1)
    assert read_metadata(version) is None and read_model_info(tmp_path) == {}
    write_assets_extra(version, {"name": "demo", "tasks": {}}, warmup=False)
    assert sorted(p.name for p in (version / "assets.extra").iterdir()) == ["keras_mtl.json"]
    assert metadata_path(version).read_text() == '{\n  "name": "demo",\n  "tasks": {}\n}\n'
    assert read_metadata(version) == read_model_info(tmp_path) == read_model_info(tmp_path, 1) == {
        "name": "demo", "tasks": {}}
    metadata_path(version).write_text("[1, 2]")
    with pytest.raises(ModelError, match="expected a JSON object, got list"):
        read_model_info(tmp_path)
    metadata_path(version).write_text("{not json")
    with pytest.raises(ModelError, match="keras_mtl.json: cannot read the export metadata"):
        read_metadata(version)


def test_warmup_records_hold_one_serving_default_request(tmp_path):
    pytest.importorskip("tensorflow_serving")
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import prediction_log_pb2

    version = _version(tmp_path, 1)
    write_assets_extra(version, {"name": "demo"})
    records = list(tf.data.TFRecordDataset(str(warmup_path(version))).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert list(request.inputs) == ["text"] and request.inputs["text"].string_val == [b"keras mtl warmup request", b""]


# ---------------------------------------------------------------------------
# writing a version


def test_staging_dir_name_and_cleanup(tmp_path):
    _version(tmp_path, 4)
    dead = tmp_path / ".tmp-5-deadbeef-999999999"  # no such pid
    dead.mkdir()
    with staging_dir(tmp_path) as tmp:
        assert not dead.exists(), "a dead export's temporary is removed first"
        prefix, version, token, pid = tmp.name.split("-")
        assert (prefix, version, len(token), pid) == (".tmp", "5", 8, str(os.getpid()))
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"")
        remove_stale_temporaries(tmp_path)
        assert tmp.exists(), "a live export's temporary stays"
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4"]


def test_publish_keeps_newest_and_leaves_no_lock(tmp_path):
    for v in (1, 2):
        _version(tmp_path, v)
    tmp = tmp_path / ".tmp-3-x-1"
    tmp.mkdir()
    assert publish(tmp, tmp_path, keep=2) == tmp_path / "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]
    prune(tmp_path, 1)
    assert version_dirs(tmp_path) == [3]
    with pytest.raises(ModelError, match=r"keep \(--keep\) must be an integer >= 1"):
        prune(tmp_path, 0)


def test_export_lock_is_exclusive(tmp_path):
    """`base_lock` excludes another process until released."""
    probe = textwrap.dedent(
        """
        import fcntl, os, sys
        if not os.path.exists(sys.argv[1]):
            sys.exit(print("free"))
        fd = os.open(sys.argv[1], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("locked")
        else:
            print("free")
        """
    )

    def other_process_sees():
        out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / LOCK_FILE)],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    with base_lock(tmp_path):
        assert other_process_sees() == "locked"
    assert other_process_sees() == "free"
    assert not (tmp_path / LOCK_FILE).exists(), "the lock file is removed on release"


def test_export_lock_serialises_processes(tmp_path, subprocess_env):
    """Four processes taking the lock 200 times each: never two inside together.

    Each holder appends "enter"/"leave" to a log inside the lock; the log must
    alternate. Holders that find the lock file unlinked by the previous holder
    start over on a new one (the inode check in base_lock).
    """
    script = textwrap.dedent(
        """
        import os, sys, time
        from keras_mtl.serving.layout import base_lock
        base, log, go = sys.argv[1], sys.argv[2], sys.argv[3]
        while not os.path.exists(go):  # all start together
            time.sleep(0.001)
        for _ in range(200):
            with base_lock(base):
                with open(log, "a") as f:
                    f.write("enter\\n")
                time.sleep(0.0005)
                with open(log, "a") as f:
                    f.write("leave\\n")
        """
    )
    base, log, go = tmp_path / "base", tmp_path / "log", tmp_path / "go"
    base.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(base), str(log), str(go)],
                              env=subprocess_env(), cwd=tmp_path)
             for _ in range(4)]
    time.sleep(2)
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    lines = log.read_text().split()
    assert len(lines) == 4 * 200 * 2
    assert lines == ["enter", "leave"] * (4 * 200), "two holders were inside the lock at once"
    assert not (base / LOCK_FILE).exists()


def test_publish_skips_taken_numbers(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "2").write_text("a stray file named like a version")
    tmp = tmp_path / ".tmp-1-x-1"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"")
    assert next_version(tmp_path) == 3
    assert publish(tmp, tmp_path) == tmp_path / "3"
    assert (tmp_path / "3" / "saved_model.pb").exists() and not tmp.exists()


# ---------------------------------------------------------------------------
# the base dir: a version folder is not one; what an export created it removes


def test_a_version_folder_is_refused_as_the_base(tmp_path):
    from keras_mtl.serving.layout import prepare_base

    base = tmp_path / "M"
    _version(base, 1)
    for wrong in (base / "1", base / "2"):  # the existing version, and a new number beside it
        with pytest.raises(ModelError) as e:
            prepare_base(wrong, create=False)
        msg = str(e.value)
        assert msg.startswith(f"--out {wrong}: this is a version folder of the model base {base}"), msg
        assert f"pass the base, --out {base}" in msg and "\n" not in msg, msg
        assert not (wrong / "1").exists() and not (base / "2").exists()
    other = tmp_path / "elsewhere"
    _version(other, 3)
    with pytest.raises(ModelError, match="version folder"):
        prepare_base(other / "3")  # holds saved_model.pb, whatever its name
    assert prepare_base(base) == base
    assert prepare_base(tmp_path / "2024") == tmp_path / "2024"  # a base named by digits, no versions beside it


def test_cli_export_into_a_version_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    from keras_mtl.cli import main

    base = tmp_path / "M"
    _version(base, 1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["export", str(tmp_path / "no-run-needed"), "--out", str(base / "1")])  # refused before loading
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"keras-mtl export: error: --out {base / '1'}: this is a version folder"), err
    assert f"--out {base}" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_missing_dirs_and_remove_empty_dirs(tmp_path):
    from keras_mtl.serving.layout import missing_dirs, prepare_base, remove_empty_dirs

    base = tmp_path / "a" / "b" / "c"
    created = missing_dirs(base)
    assert created == [base, tmp_path / "a" / "b", tmp_path / "a"]
    prepare_base(base)
    (tmp_path / "a" / "keep.txt").write_text("the user's")
    remove_empty_dirs(created)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "keep.txt").exists()
    assert missing_dirs(tmp_path) == []
