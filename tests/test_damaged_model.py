"""A damaged `model.keras` (truncated, overwritten, failing its checksums) is one
error line naming the file, in every command that loads a work dir's model.

Loading goes through one place, `keras_mtl.run.Run.load_model`: `export`,
`evaluate`, a teacher run (`tasks[i].teacher`), `compare`, `adapt`. Keras alone
says "File not found" for a file that exists (as a traceback); `export` also
used to leave an empty `--out` folder behind. The session's tiny run
(conftest.py) is copied, and the copy's model.keras damaged.
"""

import contextlib
import io
import shutil

import pytest
import yaml

from keras_mtl.cli import main


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "zeroed":  # a run of bytes inside the weights overwritten: the zip's CRC fails
        path.write_bytes(data[:40000] + bytes(1000) + data[41000:])
    else:
        raise ValueError(how)


@pytest.fixture
def damaged_run(tiny_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run["workdir"], workdir)
    _damage(workdir / "model.keras", "truncated")
    return workdir


def invoke(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_damaged_line(code, err, command, workdir):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"keras-mtl {command}: error: {workdir / 'model.keras'}: the model file is damaged"
    assert lines[0].startswith(prefix), lines[0]
    assert "File not found" not in lines[0] and "retrain the run" in lines[0], lines[0]


@pytest.mark.parametrize("how", ["truncated", "empty", "zeroed"])
def test_load_model_names_a_damaged_file(tiny_run, tmp_path, how):
    from keras_mtl.errors import ModelError
    from keras_mtl.run import load_run

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run["workdir"], workdir)
    assert load_run(workdir).load_model() is not None  # the intact copy loads
    _damage(workdir / "model.keras", how)
    with pytest.raises(ModelError) as e:
        load_run(workdir).load_model()
    msg = str(e.value)
    assert msg.startswith(f"{workdir / 'model.keras'}: the model file is damaged (") and "\n" not in msg, msg
    assert f"keras-mtl train CONFIG --workdir {workdir}" in msg, msg


def test_export_of_a_damaged_model_is_one_line_and_creates_nothing(damaged_run, tmp_path):
    out = tmp_path / "saved" / "m"
    code, stdout, err = invoke(["export", damaged_run, "--out", out])
    assert_damaged_line(code, err, "export", damaged_run)
    assert stdout == "" and not (tmp_path / "saved").exists()  # no empty --out folder left


def test_evaluate_of_a_damaged_model_is_one_line(damaged_run):
    code, stdout, err = invoke(["evaluate", damaged_run, "--json"])
    assert_damaged_line(code, err, "evaluate", damaged_run)
    assert stdout == ""


def test_a_damaged_teacher_run_is_one_line(damaged_run, tiny_config, tmp_path):
    """Teachers are loaded through `load_run(...).load_model()` too (keras_mtl.distill)."""
    config = tiny_config(name="student", tasks=("topic",))
    config["tasks"][0]["teacher"] = str(damaged_run)
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    workdir = tmp_path / "student"
    code, _, err = invoke(["train", path, "--workdir", workdir, "--quiet", "--max-steps", "2"])
    assert_damaged_line(code, err, "train", damaged_run)
    assert not (workdir / "model.keras").exists() and not (workdir / "backup").exists()
