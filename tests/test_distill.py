"""Distillation from single-task teachers with teacher annealing (keras_mtl.distill)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml

from keras_mtl import distill
from keras_mtl.data import teachers
from keras_mtl.tasks import get_task_type


def test_annealing_lambda_rises_linearly_from_0_to_1():
    lam = [float(teachers.annealing_lambda(step, 5)) for step in range(7)]
    assert lam == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]  # start, middle, end, and past the end
    assert float(teachers.annealing_lambda(0, 1)) == 0.0


def test_anneal_mixes_gold_and_teacher_by_the_batch_step():
    # 3 steps: lambda 0, 0.5, 1
    gold_c, teacher_c = [1.0, 0.0], [0.2, 0.8]
    gold_t, teacher_t = [[0.0, 1.0], [1.0, 0.0]], [[0.6, 0.4], [0.5, 0.5]]
    y = {
        "c": tf.constant([gold_c + teacher_c]),  # [B, 2C]
        "r": tf.constant([[3.0, 1.0]]),  # [B, 2]: gold, teacher
        "t": tf.constant([[g + t for g, t in zip(gold_t, teacher_t)]]),  # [B, L, 2C]
        "plain": tf.constant([7]),  # not distilled: untouched
    }
    batch = ({"token_ids": tf.constant([[2, 5]])}, y, {"c": tf.constant([1.0])})
    ds = tf.data.Dataset.from_tensors(batch).repeat(3)
    out = list(teachers.anneal(ds, {"c": False, "r": True, "t": False}, total_steps=3))
    for step, lam in enumerate((0.0, 0.5, 1.0)):
        _, ys, sw = out[step]
        np.testing.assert_allclose(ys["c"], [lam * np.array(gold_c) + (1 - lam) * np.array(teacher_c)], atol=1e-6)
        np.testing.assert_allclose(ys["r"], [lam * 3.0 + (1 - lam) * 1.0], atol=1e-6)
        np.testing.assert_allclose(ys["t"], [lam * np.array(gold_t) + (1 - lam) * np.array(teacher_t)], atol=1e-6)
        assert ys["plain"].numpy().tolist() == [7] and sw["c"].numpy().tolist() == [1.0]


def test_each_type_stacks_gold_and_teacher():
    cls = get_task_type("classification")("c", ["a", "b", "c"])
    both = cls.distillation_columns(np.array([2, 0]), [np.array([0.1, 0.2, 0.7]), np.array([0.5, 0.5, 0.0])])
    np.testing.assert_allclose(both, [[0, 0, 1, 0.1, 0.2, 0.7], [1, 0, 0, 0.5, 0.5, 0.0]])
    reg = get_task_type("regression")("r")
    np.testing.assert_allclose(reg.distillation_columns(np.array([1.5, 2.0]), [np.float32(1.0), np.float32(3.0)]),
                               [[1.5, 1.0], [2.0, 3.0]])
    tag = get_task_type("tagging")("t", ["N", "V"])
    # a teacher's per-word distribution goes on the student's first pieces of those words
    pieces = tag.teacher_on_pieces(np.array([[0.9, 0.1], [0.3, 0.7]]), word_starts=[1, 3], length=5)
    np.testing.assert_allclose(pieces, [[0, 0], [0.9, 0.1], [0, 0], [0.3, 0.7], [0, 0]])
    (stacked,) = tag.distillation_columns([np.array([0, 0, 0, 1, 0])], [pieces])
    assert stacked.shape == (5, 4)
    np.testing.assert_allclose(stacked[3], [0, 1, 0.3, 0.7])
    # the teacher's own output: per word at its first pieces, words cut off left out
    outputs = {"t": np.arange(12, dtype=np.float32).reshape(1, 6, 2)}
    np.testing.assert_allclose(tag.teacher_target(outputs, 0, word_starts=[1, 4, 9]), [[2, 3], [8, 9]])


def test_loss_is_soft_only_for_a_task_with_a_teacher():
    from keras_mtl.config import config_from_dict
    from keras_mtl.model import loss_for

    tasks = config_from_dict({"name": "d", "tasks": [
        {"name": "topic", "type": "classification", "teacher": "runs/teacher",
         "data": {"format": "demo", "kind": "topic", "train": 5}},
        {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 5}},
    ]}).config.tasks
    assert type(loss_for(tasks[0])).__name__ == "CategoricalCrossentropy"
    assert type(loss_for(tasks[1])).__name__ == "SparseCategoricalCrossentropy"
    assert tasks[0].teacher.endswith("runs/teacher") and tasks[0].teacher.startswith("/")


# ------------------------------------------------------------------ a distilled run


@pytest.fixture(scope="module")
def teacher_run(tiny_config, tmp_path_factory):
    from keras_mtl.config import config_from_dict
    from keras_mtl.training import train

    root = tmp_path_factory.mktemp("teacher")
    raw = tiny_config("embedding", name="teacher", tasks=("topic",))
    train(config_from_dict(raw), workdir=root / "run", max_steps=3, verbose=0)
    return root / "run"


def _student(tiny_config, teacher):
    raw = tiny_config("embedding", name="student", tasks=("topic", "pos"))
    raw["tasks"][0]["teacher"] = str(teacher)
    return raw


def test_a_distilled_run_trains_from_cached_teacher_predictions(tiny_config, teacher_run, tmp_path, monkeypatch):
    from keras_mtl.config import config_from_dict
    from keras_mtl.prepare import prepare
    from keras_mtl.training import train

    raw = _student(tiny_config, teacher_run)
    workdir = tmp_path / "student"
    report = train(config_from_dict(raw), workdir=workdir, max_steps=3, verbose=0)
    assert set(report["tasks"]) == {"topic", "pos"}
    cache = workdir / "teachers" / "teacher_topic.npz"
    assert cache.is_file()

    # The cache is read back: predicting again would fail here.
    def no_prediction(*args, **kwargs):
        raise AssertionError("the teacher was run again")

    monkeypatch.setattr(distill, "_predict_with_run", no_prediction)
    from keras_mtl.data.load import load_task_data

    loaded = config_from_dict(raw)
    data = load_task_data(loaded)
    teachers = distill.teacher_targets(loaded.config, data.splits["train"], data.classes, workdir / "teachers")
    prepared = prepare(loaded, data=data, teachers=teachers)
    train_split = prepared.encoded["train"]
    topic = train_split.indices("topic")
    targets = np.stack([train_split.teacher["topic"][i] for i in topic])
    np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-5)  # the teacher's class distributions
    # The first batch is all teacher (lambda 0): its topic targets are teacher rows.
    x, y, sw = next(iter(prepared.train_dataset()))
    labelled = sw["topic"].numpy() > 0
    rows = np.asarray(y["topic"])[labelled]
    assert rows.shape[-1] == 4 and len(rows)
    assert all(np.isclose(targets, row, atol=1e-5).all(-1).any() for row in rows)
    assert np.asarray(y["pos"]).ndim == 2  # a task without a teacher keeps its class ids


def test_teacher_targets_from_an_export_equal_those_from_its_run(tiny_config, teacher_run, tmp_path):
    from keras_mtl.config import config_from_dict
    from keras_mtl.data.load import load_task_data
    from keras_mtl.serving.export import export

    version = export(teacher_run, out=tmp_path / "saved")
    config = config_from_dict(_student(tiny_config, teacher_run)).config
    data = load_task_data(config)
    task = config.task("topic")
    examples = data.examples("train", "topic")[:12]
    from_run = distill.teacher_predictions(task, data.classes["topic"], examples)
    from_export = distill.teacher_predictions(task.model_copy(update={"teacher": str(version)}),
                                              data.classes["topic"], examples)
    np.testing.assert_allclose(np.stack(from_export), np.stack(from_run), atol=1e-5)


def test_a_teacher_with_other_classes_or_without_the_task_is_refused(tiny_config, teacher_run):
    from keras_mtl.config import config_from_dict
    from keras_mtl.data.load import load_task_data
    from keras_mtl.errors import ConfigError

    config = config_from_dict(_student(tiny_config, teacher_run)).config
    data = load_task_data(config)
    examples = data.examples("train", "topic")[:4]
    with pytest.raises(ConfigError, match=r"tasks.topic.teacher: .* predicts classes food, sports, tech, weather, "
                                          r"but the task's training data has a, b"):
        distill.teacher_predictions(config.task("topic"), ["a", "b"], examples)
    pos = config.task("pos").model_copy(update={"teacher": str(teacher_run)})
    with pytest.raises(ConfigError, match=r"tasks.pos.teacher: the run .* has no task 'pos' \(its tasks: topic\)"):
        distill.teacher_predictions(pos, data.classes["pos"], data.examples("train", "pos")[:4])
    missing = config.task("topic").model_copy(update={"teacher": str(teacher_run.parent / "nowhere")})
    with pytest.raises(ConfigError, match="not a trained work dir"):
        distill.teacher_predictions(missing, data.classes["topic"], examples)


@pytest.mark.slow
def test_a_distilled_run_trains_on_jax(tiny_config, teacher_run, tmp_path, subprocess_env):
    pytest.importorskip("jax")
    raw = _student(tiny_config, teacher_run)
    raw["train"].update({"bucket_lengths": [16], "jit_compile": "auto"})
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "train", str(config), "--workdir", str(tmp_path / "run"),
         "--max-steps", "3", "--quiet"],
        capture_output=True, text=True, env=subprocess_env("jax"), cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["backend"] == "jax" and set(report["tasks"]) == {"topic", "pos"}
    assert (tmp_path / "run" / "teachers" / "teacher_topic.npz").is_file()


# ------------------------------------------------------------------ a teacher of another kind of task


@pytest.fixture(scope="module")
def pair_teacher_export(tiny_pair_run, tmp_path_factory):
    from keras_mtl.serving.export import export

    return export(tiny_pair_run["workdir"], out=tmp_path_factory.mktemp("pair-teacher") / "saved")


# The teacher (`tiny_pair_run`): nli, a classification task on sentence pairs;
# sts, a regression task on sentence pairs. Each student task reads the same
# data under the same name, but as another kind of task.
STUDENTS = {
    "single-text nli": ("nli", {"type": "classification", "drop_pair": True},
                        "is a classification task on sentence pairs, but task 'nli' is a classification task on "
                        "single texts"),
    "regression nli": ("nli", {"type": "regression", "label_field": "score"},
                       "is a classification task on sentence pairs, but task 'nli' is a regression task on "
                       "sentence pairs"),
    "classification sts": ("sts", {"type": "classification", "label_field": "label"},
                           "is a regression task on sentence pairs, but task 'sts' is a classification task on "
                           "sentence pairs"),
}


def _other_student(tiny_pair_config, root, teacher, name, change):
    from keras_mtl.config import config_from_dict

    raw = tiny_pair_config(root, name="student")
    [task] = [t for t in raw["tasks"] if t["name"] == name]
    change = dict(change)
    task["type"] = change.pop("type")
    if change.pop("drop_pair", False):
        del task["data"]["text_pair_field"]
    task["data"].update(change)
    task["teacher"] = str(teacher)
    task.pop("metrics", None)
    raw["tasks"] = [task]
    return raw, config_from_dict(raw).config


@pytest.mark.parametrize("teacher_kind", ["run", "export"])
@pytest.mark.parametrize("student", list(STUDENTS))
def test_a_teacher_of_another_type_or_input_is_refused(tiny_pair_config, tiny_pair_run, pair_teacher_export,
                                                       tmp_path, teacher_kind, student):
    from keras_mtl.data.load import load_task_data
    from keras_mtl.errors import ConfigError

    name, change, says = STUDENTS[student]
    teacher = tiny_pair_run["workdir"] if teacher_kind == "run" else pair_teacher_export
    _, config = _other_student(tiny_pair_config, tmp_path, teacher, name, change)
    data = load_task_data(config)
    task = config.task(name)
    with pytest.raises(ConfigError) as info:
        distill.teacher_predictions(task, data.classes[name], data.examples("train", name)[:4], tmp_path / "cache")
    message = str(info.value)
    assert message == (f"tasks.{name}.teacher: the teacher's task {name!r} ({str(teacher)!r}) {says}; "
                       "a teacher must be of the task's type and read the same input"), message
    assert not (tmp_path / "cache").exists()  # refused before predicting anything


def test_a_mismatched_teacher_is_one_error_line_of_train(tiny_pair_config, tiny_pair_run, tmp_path, capsys):
    from keras_mtl.cli import main

    raw, _ = _other_student(tiny_pair_config, tmp_path, tiny_pair_run["workdir"], *STUDENTS["single-text nli"][:2])
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    assert main(["train", str(config), "--workdir", str(tmp_path / "run"), "--max-steps", "1", "--quiet"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("keras-mtl train: error: tasks.nli.teacher: the teacher's task 'nli' "), line
    assert "a classification task on sentence pairs, but task 'nli' is a classification task on single texts" in line
    assert not (tmp_path / "run" / "model.keras").exists()


def test_an_export_without_metadata_of_another_type_is_refused(tiny_pair_config, pair_teacher_export, tmp_path):
    """An export without keras_mtl.json does not say its tasks' types: its answers tell."""
    import shutil

    from keras_mtl.data.load import load_task_data
    from keras_mtl.errors import ConfigError
    from keras_mtl.serving.layout import metadata_path

    version = tmp_path / "saved" / "1"
    shutil.copytree(pair_teacher_export, version)
    metadata_path(version).unlink()
    _, config = _other_student(tiny_pair_config, tmp_path, version, *STUDENTS["regression nli"][:2])
    data = load_task_data(config)
    with pytest.raises(ConfigError) as info:
        distill.teacher_predictions(config.task("nli"), data.classes["nli"], data.examples("train", "nli")[:4])
    assert str(info.value) == (
        f"tasks.nli.teacher: the export {str(version)!r} does not answer task 'nli' as a regression task does "
        "(its answer holds: label, probabilities); a teacher must be of the task's type"), str(info.value)
