"""Config -> per-task examples, carved splits, merged across tasks, data errors."""

import warnings
from pathlib import Path

import pytest

from keras_mtl.config import config_from_dict, load_config
from keras_mtl.data import readers
from keras_mtl.data.example import Example
from keras_mtl.data.load import load_task_data, merge_by_text
from keras_mtl.errors import DataError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"

# Sources of the in-memory test reader, by name.
SOURCES = {}


def _read_memory(request):
    return [Example(e.text, {request.task_name: lab}, e.origin) for e, lab in SOURCES[request.source]]


@pytest.fixture
def memory_reader(monkeypatch):
    """Registers format `memory`: `train: NAME` reads SOURCES[NAME]."""
    readers.reader_names()  # import the built-in readers first
    reader = readers.Reader("memory", _read_memory, readers.NoOptions, readers.TASK_TYPES, False)
    monkeypatch.setitem(readers.READERS, "memory", reader)
    SOURCES.clear()
    yield SOURCES
    SOURCES.clear()


def ex(text, label, origin):
    return (Example(text, {}, origin), label)


def task(name, type_="classification", **data):
    return {"name": name, "type": type_, "data": {"format": "memory", **data}}


def config(*tasks, **top):
    return config_from_dict({"name": "t", "tasks": list(tasks), **top}).config


# ------------------------------------------------------------------ demo config


def test_demo_config_classes_and_split_sizes():
    data = load_task_data(load_config(DEMO).config)
    assert data.classes == {
        "topic": ["food", "sports", "tech", "weather"],
        "sentiment": ["negative", "positive"],
        "pos": ["ADJ", "ADV", "DET", "NOUN", "PREP", "PUNCT", "VERB"],
    }
    sizes = {t: {s: len(v) for s, v in by.items()} for t, by in data.per_task.items()}
    assert sizes == {
        "topic": {"train": 1200, "dev": 200, "test": 200},
        "sentiment": {"train": 240, "dev": 100, "test": 100},
        "pos": {"train": 600, "dev": 100, "test": 100},
    }
    # Merging never loses a label: each task keeps all its examples.
    for split in ("train", "dev", "test"):
        for name in ("topic", "sentiment", "pos"):
            assert len(data.examples(split, name)) == sizes[name][split]
        total = sum(len(e.labels) for e in data.splits[split])
        assert total == sum(sizes[n][split] for n in sizes)
        assert len(data.splits[split]) <= total
    assert data.unseen == {"topic": {}, "sentiment": {}, "pos": {}}
    assert set(data.overlap) >= {"texts", "shared", "leaks"}


def test_demo_is_deterministic():
    a = load_task_data(load_config(DEMO, ["tasks.topic.data.train=50"]).config)
    b = load_task_data(load_config(DEMO, ["tasks.topic.data.train=50"]).config)
    assert [(e.text, e.labels) for e in a.splits["train"]] == [(e.text, e.labels) for e in b.splits["train"]]


def test_missing_dev_and_test_are_carved_from_train():
    raw = {"name": "c", "tasks": [{"name": "topic", "type": "classification",
                                  "data": {"format": "demo", "kind": "topic", "train": 300}}],
           "splits": {"dev_fraction": 0.2, "test_fraction": 0.1}}
    data = load_task_data(config_from_dict(raw).config)
    by = data.per_task["topic"]
    assert sum(len(v) for v in by.values()) == 300
    assert 30 < len(by["dev"]) < 90 and 10 < len(by["test"]) < 60
    assert not {e.text for e in by["train"]} & {e.text for e in by["test"]}


# ------------------------------------------------------------------ merging


def test_merge_by_text_merges_tasks_and_keeps_duplicates_within_a_task():
    per_task = {
        "a": {"train": [Example("x", {"a": "1"}, "a:1"), Example("x", {"a": "2"}, "a:2"),
                        Example("y", {"a": "1"}, "a:3")]},
        "b": {"train": [Example("x", {"b": "p"}, "b:1"), Example("z", {"b": "q"}, "b:2"),
                        Example("x", {"b": "r"}, "b:3"), Example("x", {"b": "s"}, "b:4")]},
    }
    merged = merge_by_text(per_task, "train")
    assert [(e.text, e.labels) for e in merged] == [
        ("x", {"a": "1", "b": "p"}),
        ("x", {"a": "2", "b": "r"}),
        ("y", {"a": "1"}),
        ("z", {"b": "q"}),
        ("x", {"b": "s"}),
    ]
    # The inputs are not modified.
    assert per_task["a"]["train"][0].labels == {"a": "1"}


def test_merge_through_load_task_data(memory_reader):
    memory_reader["a"] = [ex("the cat sat", "x", "a.tsv:2"), ex("a dog ran", "y", "a.tsv:3"),
                          ex("the cat sat", "y", "a.tsv:4")]
    memory_reader["b"] = [ex("the cat sat", "pos", "b.tsv:2"), ex("birds fly", "neg", "b.tsv:3")]
    cfg = config(task("ta", train="a", dev="a", test="a"), task("tb", train="b", dev="b", test="b"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_task_data(cfg)
    train = data.splits["train"]
    assert [(e.text, e.labels) for e in train] == [
        ("the cat sat", {"ta": "x", "tb": "pos"}),
        ("a dog ran", {"ta": "y"}),
        ("the cat sat", {"ta": "y"}),
        ("birds fly", {"tb": "neg"}),
    ]
    assert data.classes == {"ta": ["x", "y"], "tb": ["neg", "pos"]}


# ------------------------------------------------------------------ errors


def test_zero_training_examples():
    raw = {"name": "z", "tasks": [{"name": "topic", "type": "classification",
                                  "data": {"format": "demo", "kind": "topic", "train": 0, "dev": 10}}]}
    with pytest.raises(DataError, match="'topic'") as info:
        load_task_data(config_from_dict(raw).config)
    assert "no training examples" in str(info.value)


def test_one_class_only(memory_reader):
    memory_reader["a"] = [ex("one", "x", "a.tsv:1"), ex("two", "x", "a.tsv:2")]
    with pytest.raises(DataError) as info:
        load_task_data(config(task("ta", train="a", dev="a", test="a")))
    assert str(info.value) == (
        "tasks[0].data.train: task 'ta': the training data (train: 'a') has 1 class (x); "
        "a classification task needs at least 2"
    )


@pytest.mark.parametrize("type_, label", [("regression", "2.5"), ("classification", "x"), ("tagging", ("N",))])
def test_leaks_drop_that_empties_a_task_names_the_drop(memory_reader, type_, label):
    """Every training text of `ta` is another task's test text: splits.leaks: drop removes them all."""
    memory_reader["ta"] = [ex("one", label, "a.tsv:1"), ex("two", label, "a.tsv:2")]
    memory_reader["tadev"] = [ex("five", label, "ad.tsv:1")]
    memory_reader["held"] = [ex("one", "p", "b.tsv:1"), ex("two", "q", "b.tsv:2"), ex("three", "p", "b.tsv:3")]
    cfg = config(task("ta", type_, train="ta", dev="tadev", test="tadev"), task("tb", train="held", dev="held", test="held"),
                 splits={"leaks": "drop"})
    with pytest.raises(DataError) as info:
        load_task_data(cfg)
    assert str(info.value) == (
        "tasks[0].data.train: task 'ta': no training examples left: splits.leaks: drop removed all 2 of them "
        "(every one's text is also in some task's dev or test split); give this task other data, or set "
        "splits.leaks: keep (`keras-mtl data` lists the leaks)"
    )


def test_leaks_drop_that_leaves_one_class_says_how_many_it_removed(memory_reader):
    memory_reader["ta"] = [ex("one", "x", "a.tsv:1"), ex("two", "y", "a.tsv:2"), ex("three", "x", "a.tsv:3")]
    memory_reader["tadev"] = [ex("five", "x", "ad.tsv:1")]
    memory_reader["held"] = [ex("two", "p", "b.tsv:1"), ex("four", "q", "b.tsv:2")]
    cfg = config(task("ta", train="ta", dev="tadev", test="tadev"), task("tb", train="held", dev="held", test="held"),
                 splits={"leaks": "drop"})
    with pytest.raises(DataError, match=r"has 1 class after splits.leaks: drop removed 1 of its examples"):
        load_task_data(cfg)


def test_empty_training_text_names_file_and_line(memory_reader):
    memory_reader["a"] = [ex("fine", "x", "fake.tsv:2"), ex("   ", "y", "fake.tsv:3")]
    with pytest.raises(DataError) as info:
        load_task_data(config(task("ta", train="a", dev="a", test="a")))
    assert str(info.value).startswith("fake.tsv:3: empty text")
    assert "'ta'" in str(info.value)


def test_empty_dev_text_names_file_and_line(memory_reader):
    memory_reader["a"] = [ex("fine", "x", "train.tsv:2"), ex("good", "y", "train.tsv:3")]
    memory_reader["d"] = [ex("fine", "x", "dev.tsv:2"), ex("", "y", "dev.tsv:3")]
    with pytest.raises(DataError) as info:
        load_task_data(config(task("ta", train="a", dev="d", test="a")))
    assert str(info.value).startswith("dev.tsv:3: empty text"), str(info.value)


def test_empty_text_in_a_tsv_file(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\ta\n\tb\n", encoding="utf-8")
    raw = {"name": "e", "tasks": [{"name": "sst", "type": "classification",
                                  "data": {"format": "delimited", "train": "train.tsv"}}]}
    cfg = config_from_dict(raw, base_dir=tmp_path).config
    with pytest.raises(DataError) as info:
        load_task_data(cfg)
    assert str(info.value).startswith(f"{tmp_path / 'train.tsv'}:3: empty text"), str(info.value)


def _unseen_files(tmp_path, mode=None):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nan apple\ta\na bear\tb\nmore apples\ta\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nsome apple\ta\na cat\tc\nthe cat\tc\n")
    t = {"name": "sst", "type": "classification",
         "data": {"format": "delimited", "train": "train.tsv", "dev": "dev.tsv", "test": "train.tsv"}}
    if mode:
        t["unseen_labels"] = mode
    return config_from_dict({"name": "u", "tasks": [t]}, base_dir=tmp_path).config


def test_unseen_dev_label_warns_by_default(tmp_path):
    with pytest.warns(UserWarning, match=r"task 'sst': labels never seen in train \(dev: c\)"):
        data = load_task_data(_unseen_files(tmp_path))
    assert data.unseen["sst"] == {"dev": {"c": 2}}
    assert data.classes["sst"] == ["a", "b"]
    assert len(data.per_task["sst"]["dev"]) == 3  # kept, scored as errors


def test_unseen_dev_label_is_an_error_when_asked(tmp_path):
    with pytest.raises(DataError) as info:
        load_task_data(_unseen_files(tmp_path, "error"))
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'dev.tsv'}:3: task 'sst': label 'c' in dev never occurs in train"), msg


def test_unseen_tag_is_reported(memory_reader):
    memory_reader["tr"] = [ex("a b", ("X", "Y"), "tr:1"), ex("c", ("X",), "tr:2")]
    memory_reader["te"] = [ex("a b", ("X", "Z"), "te:1")]
    with pytest.raises(DataError, match=r"^te:1: task 'tg': label 'Z' in test"):
        load_task_data(config({**task("tg", "tagging", train="tr", dev="tr", test="te"),
                               "unseen_labels": "error"}))


def test_missing_data_file_names_the_path(tmp_path):
    raw = {"name": "m", "tasks": [{"name": "sst", "type": "classification",
                                  "data": {"format": "delimited", "train": "nope/train.tsv"}}]}
    cfg = config_from_dict(raw, base_dir=tmp_path).config
    with pytest.raises(DataError) as info:
        load_task_data(cfg)
    path = (tmp_path / "nope" / "train.tsv").resolve()
    assert str(info.value) == f"tasks[0].data.train: file not found: {path} (task 'sst')"


def test_missing_conll_file_names_the_path(tmp_path):
    raw = {"name": "m", "tasks": [{"name": "pos", "type": "tagging",
                                  "data": {"format": "conll", "train": "train.txt", "label_column": 1}}]}
    cfg = config_from_dict(raw, base_dir=tmp_path).config
    with pytest.raises(DataError, match="file not found") as info:
        load_task_data(cfg)
    assert str(tmp_path / "train.txt") in str(info.value)


# ------------------------------------------------ errors name the config line


def _write_config(tmp_path, task_yaml, name="exp.yaml"):
    path = tmp_path / name
    path.write_text("name: m\ntasks:\n" + task_yaml, encoding="utf-8")
    return path


def _line_of(path, needle):
    return next(i + 1 for i, line in enumerate(path.read_text().split("\n")) if needle in line)


def _write_files(root, files):
    """{relative path: text} written below `root` (folders made)."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _load_error(path, overrides=()):
    """The message of the DataError that loading the data of the config at `path` raises."""
    with pytest.raises(DataError) as info:
        load_task_data(load_config(path, overrides))
    return str(info.value)


SST_YAML = """\
  - name: sst
    type: classification
    data:
      format: delimited
      train: data/train.tsv
      test: data/test.tsv
"""


def test_missing_data_file_names_the_config_line(tmp_path):
    _write_files(tmp_path, {"data/train.tsv": "sentence\tlabel\ngood\tpos\nbad\tneg\n"})
    path = _write_config(tmp_path, SST_YAML)
    missing = (tmp_path / "data" / "test.tsv").resolve()
    assert _load_error(path) == (
        f"{path}:{_line_of(path, 'test: data/test.tsv')}: tasks[0].data.test: file not found: {missing} (task 'sst')"
    )
    # A path set by --set has no line in the file: the message says so.
    other = (tmp_path / "data" / "other.tsv").resolve()
    assert _load_error(path, ["tasks.sst.data.test=data/other.tsv"]) == (
        f"tasks[0].data.test (set by --set): file not found: {other} (task 'sst')"
    )


def test_missing_per_label_file_names_its_config_line(tmp_path):
    (tmp_path / "a.pos").write_text("good\n")
    path = _write_config(tmp_path, """\
  - name: pol
    type: classification
    data:
      format: per_label
      train:
        positive: a.pos
        negative: a.neg
""")
    assert _load_error(path) == (
        f"{path}:{_line_of(path, 'negative: a.neg')}: tasks[0].data.train.negative: file not found: "
        f"{(tmp_path / 'a.neg').resolve()} (task 'pol')"
    )


def test_a_directory_instead_of_a_data_file(tmp_path):
    (tmp_path / "data" / "train.tsv").mkdir(parents=True)
    path = _write_config(tmp_path, SST_YAML)
    with pytest.raises(DataError, match=r":\d+: tasks\[0\]\.data\.train: is a directory, expected a data file: "):
        load_task_data(load_config(path))


def test_one_class_error_names_the_file_and_the_config_line(tmp_path):
    _write_files(tmp_path, {"data/train.tsv": "sentence\tlabel\ngood\tpos\nfine\tpos\n",
                            "data/test.tsv": "sentence\tlabel\nbad\tneg\n"})
    path = _write_config(tmp_path, SST_YAML)
    train = (tmp_path / "data" / "train.tsv").resolve()
    assert _load_error(path) == (
        f"{path}:{_line_of(path, 'train: data/train.tsv')}: tasks[0].data.train: task 'sst': the training "
        f"data ({train}) has 1 class after carving dev out of it (pos); a classification task needs at least 2"
    )


# ------------------------------------------------------------------ the f1 metric's positive class


def _sentiment_with(**task_fields):
    return config_from_dict({"name": "t", "tasks": [
        {"name": "sentiment", "type": "classification",
         "data": {"format": "demo", "kind": "sentiment", "train": 40, "dev": 8, "test": 8}, **task_fields}]}).config


def test_f1_needs_a_positive_class_the_task_has():
    with pytest.raises(DataError) as e:
        load_task_data(_sentiment_with(metrics=["f1"]))
    assert "tasks[0].positive_class (default '1'): '1' is not a class of task 'sentiment' " \
        "(its classes: negative, positive); the f1 metric scores that class" in str(e.value)
    with pytest.raises(DataError, match=r"tasks\[0\].positive_class: 'pos' is not a class"):
        load_task_data(_sentiment_with(metrics=["f1"], positive_class="pos"))
    data = load_task_data(_sentiment_with(metrics=["f1", "accuracy"], positive_class="positive"))
    assert data.classes["sentiment"] == ["negative", "positive"]
    # without f1 the positive class is not needed
    load_task_data(_sentiment_with(metrics=["accuracy"]))
