"""A loss that becomes NaN/inf stops training and names the task.

The `delimited` reader refuses `nan`/`inf` regression labels (a DataError
naming the line), so a task is made to blow up with a finite label instead:
every regression target is 1e30, whose squared error (1e60) overflows
float32 to inf on the first step that has the task's examples, while the
classification task's loss is still finite on that step. After that step
the weights are NaN and every task's loss follows, so the guard must report
the FIRST task, not all of them.
"""

import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow

SENTENCES = [
    "the brilliant chef cooked a soup .",
    "a terrible storm arrived today .",
    "the robot compiled the code again .",
    "one coach trained the team slowly .",
    "every cloud drifted near the stadium .",
    "this laptop crashed after the update .",
]


def write_config(tmp_path, huge=1e30):
    rows = ["sentence\tlabel"] + [f"{s}\t{huge if i % 2 else -huge}" for i, s in enumerate(SENTENCES * 6)]
    (tmp_path / "reg.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = {
        "name": "nan",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification",
             "data": {"format": "demo", "kind": "topic", "train": 48, "dev": 8, "test": 0}},
            {"name": "size", "type": "regression", "metrics": ["mse"],
             "data": {"format": "delimited", "train": "reg.tsv"}},
        ],
        "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.0, "task_conditioning": "none"},
        "train": {"batch_size": 16, "epochs": 2, "steps_per_epoch": 3, "bucket_lengths": [16]},
    }
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_delimited_reader_refuses_nan_labels(tmp_path):
    from keras_mtl.config import load_config
    from keras_mtl.data.load import load_task_data
    from keras_mtl.errors import DataError

    path = write_config(tmp_path)
    (tmp_path / "reg.tsv").write_text("sentence\tlabel\na b c\tnan\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"reg.tsv:2: regression label 'nan' .* not a finite number"):
        load_task_data(load_config(path).config)


def test_train_raises_training_failed_naming_the_task(tmp_path):
    from keras_mtl.config import load_config
    from keras_mtl.errors import KerasMTLError
    from keras_mtl.training import TrainingFailed, train

    workdir = tmp_path / "run"
    with pytest.raises(TrainingFailed) as e:
        train(load_config(write_config(tmp_path)), workdir=workdir, verbose=0)
    assert isinstance(e.value, KerasMTLError)
    msg = str(e.value)
    assert "task 'size'" in msg and "NaN/inf" in msg and "step 1 " in msg, msg
    assert "topic" not in msg, msg  # the first task only, not every task that followed
    # stopped: no model, no report, no backup to resume from
    assert not (workdir / "model.keras").exists()
    assert not (workdir / "report.json").exists()
    assert not (workdir / "backup").exists()


def test_cli_exit_status_2_one_error_line(tmp_path, subprocess_env):
    config = write_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "train", str(config), "--workdir", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("keras-mtl train: error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert "task 'size'" in errors[0] and "NaN/inf" in errors[0]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert not (tmp_path / "run" / "backup").exists()
