"""Config loading: every bad input is one ConfigError naming file, line and field."""

import re
import textwrap
from pathlib import Path

import pytest

from keras_mtl.config import (
    ExperimentConfig,
    config_from_dict,
    load_config,
    reader_options,
)
from keras_mtl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"

# Line numbers below refer to this text (line 1 is `name: tiny`).
TINY = """\
name: tiny
tasks:
  - name: topic
    type: classification
    metrics: [accuracy]
    data: {format: demo, kind: topic, train: 20}
  - name: sentiment
    type: classification
    data: {format: demo, kind: sentiment, train: 20}
model:
  hidden_dim: 16
train:
  batch_size: 8
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# ------------------------------------------------------------------ the file


def test_missing_file_names_the_path(tmp_path):
    msg = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg
    assert "not found" in msg


def test_directory_instead_of_file(tmp_path):
    msg = error_of(tmp_path)
    assert str(tmp_path) in msg and "directory" in msg


def test_empty_file(tmp_path):
    msg = error_of(write(tmp_path, "# only a comment\n"))
    assert msg.startswith(f"{tmp_path / 'cfg.yaml'}:") and "empty" in msg


def test_yaml_syntax_error_shows_the_line(tmp_path):
    path = write(tmp_path, "name: tiny\nmodel:\n  hidden_dim: 16\n   num_layers: 1\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:4:"), msg
    assert "YAML syntax error" in msg


def test_top_level_must_be_a_mapping(tmp_path):
    msg = error_of(write(tmp_path, "- a\n- b\n"))
    assert "mapping" in msg and "list" in msg


def test_python_object_tag_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = write(
        tmp_path,
        f'name: !!python/object/apply:os.system ["touch {marker}"]\ntasks: []\n',
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:1:"), msg
    assert "not allowed" in msg
    assert not marker.exists(), "the YAML tag ran a command"


def test_python_object_tag_in_set_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = write(tmp_path, TINY)
    msg = error_of(path, [f'name=!!python/object/apply:os.system ["touch {marker}"]'])
    assert msg.startswith("--set name=")
    assert "cannot parse value" in msg
    assert not marker.exists()


def test_non_utf8_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    msg = error_of(path)
    assert str(path) in msg and "UTF-8" in msg


# ------------------------------------------------------------------ fields


def test_missing_required_field(tmp_path):
    path = write(
        tmp_path,
        """\
        name: tiny
        tasks:
          - name: topic
            data: {format: demo, kind: topic, train: 20}
        """,
    )
    msg = error_of(path)
    assert msg == f"{path}:3: tasks[0].type: required field is missing"


def test_mistyped_field(tmp_path):
    path = write(tmp_path, TINY.replace("batch_size: 8", 'batch_size: "big"'))
    msg = error_of(path)
    assert msg.startswith(f"{path}:13: train.batch_size: "), msg
    assert "valid integer" in msg


def test_out_of_range_field(tmp_path):
    path = write(tmp_path, TINY.replace("batch_size: 8", "batch_size: 0"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:13: train.batch_size: "), msg
    assert "greater than or equal to 1" in msg


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, TINY.replace("hidden_dim: 16", "hiden_dim: 16"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:11: model.hiden_dim: unknown key 'hiden_dim'"), msg
    assert "did you mean 'hidden_dim'?" in msg


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, TINY + "trian:\n  epochs: 2\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:14: trian: unknown key 'trian'; did you mean 'train'?"), msg


def test_unknown_task_type_lists_the_types(tmp_path):
    path = write(tmp_path, TINY.replace("type: classification\n    data: {format: demo, kind: sentiment",
                                        "type: clasification\n    data: {format: demo, kind: sentiment"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:8: tasks[1].type: unknown task type 'clasification'"), msg
    assert "expected one of classification, multilabel, regression, tagging" in msg


def test_unknown_metric_for_the_task_type(tmp_path):
    path = write(tmp_path, TINY.replace("metrics: [accuracy]", "metrics: [token_accuracy]"))
    msg = error_of(path)
    assert "unknown metric 'token_accuracy' for a classification task" in msg
    assert "expected one of accuracy" in msg
    # The field path is tasks[0].metrics and the line is the `metrics:` line (5).
    assert msg.startswith(f"{path}:5: tasks[0].metrics: "), msg


def test_duplicate_task_names(tmp_path):
    path = write(tmp_path, TINY.replace("name: sentiment", "name: topic"))
    msg = error_of(path)
    assert "tasks[1].name: duplicate task name 'topic' (also tasks[0])" in msg
    # The line is the second task's `name:` line (7), not the `tasks:` line.
    assert msg.startswith(f"{path}:7: "), msg


def test_bad_task_name(tmp_path):
    path = write(tmp_path, TINY.replace("name: sentiment", "name: Senti-ment"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:7: tasks[1].name: "), msg
    assert "lowercase" in msg


def test_unknown_data_format(tmp_path):
    path = write(tmp_path, TINY.replace("format: demo, kind: sentiment", "format: tsvv, kind: sentiment"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:9: tasks[1].data.format: unknown data format 'tsvv'"), msg
    assert "delimited" in msg and "demo" in msg  # lists the formats


def test_unknown_reader_option_suggests_the_closest(tmp_path):
    path = write(
        tmp_path,
        """\
        name: tiny
        tasks:
          - name: topic
            type: classification
            data:
              format: demo
              kind: topic
              seedd: 3
              train: 20
        """,
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:8: tasks[0].data.seedd: unknown option 'seedd' for format 'demo'"), msg
    assert "did you mean 'seed'?" in msg


def test_reader_that_cannot_serve_the_task_type(tmp_path):
    path = write(tmp_path, TINY.replace("format: demo, kind: sentiment, train: 20", "format: conll, train: x.txt"))
    # conll serves tagging only; label_column is also required, but the type
    # mismatch is the first problem reported for the task.
    msg = error_of(path)
    assert msg.startswith(f"{path}:9: tasks[1].data.format: "), msg
    assert "cannot serve a classification task" in msg


def test_several_problems_are_reported_together(tmp_path):
    text = TINY.replace("hidden_dim: 16", "hiden_dim: 16").replace("batch_size: 8", "batch_size: big")
    msg = error_of(write(tmp_path, text))
    lines = msg.splitlines()
    assert len(lines) == 2, msg
    assert "model.hiden_dim" in lines[0] and "train.batch_size" in lines[1]


def test_heads_must_divide_hidden_dim(tmp_path):
    msg = error_of(write(tmp_path, TINY.replace("hidden_dim: 16", "hidden_dim: 16\n  num_heads: 3")))
    assert "model" in msg and "divisible by num_heads (3)" in msg


def test_temperature_must_be_positive(tmp_path):
    msg = error_of(write(tmp_path, TINY + "  temperature: 0\n"))
    assert "train.temperature: temperature must be > 0" in msg


def test_bucket_lengths_auto_or_an_increasing_list(tmp_path):
    assert load_config(write(tmp_path, TINY)).config.train.bucket_lengths == "auto"
    loaded = load_config(write(tmp_path, TINY + "  bucket_lengths: auto\n  num_buckets: 12\n"))
    assert loaded.config.train.num_buckets == 12
    msg = error_of(write(tmp_path, TINY + "  bucket_lengths: [32, 16]\n"))
    assert "cfg.yaml:14: train.bucket_lengths" in msg and "increasing" in msg, msg
    msg = error_of(write(tmp_path, TINY + "  bucket_lengths: automatic\n"))
    assert "train.bucket_lengths" in msg, msg
    msg = error_of(write(tmp_path, TINY + "  num_buckets: 0\n"))
    assert "cfg.yaml:14: train.num_buckets" in msg and "greater than or equal to 1" in msg, msg


# ------------------------------------------------------------------ --set


def test_set_applies_and_validates(tmp_path):
    path = write(tmp_path, TINY)
    loaded = load_config(path, ["train.batch_size=16", "model.hidden_dim=32", "train.sampling=uniform"])
    assert loaded.config.train.batch_size == 16
    assert loaded.config.model.hidden_dim == 32
    assert loaded.config.train.sampling == "uniform"
    assert loaded.raw["train"]["batch_size"] == 16


def test_set_invalid_value_is_an_error(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["train.batch_size=0"])
    assert "train.batch_size" in msg and "greater than or equal to 1" in msg


def test_set_invalid_value_names_the_override(tmp_path):
    # The bad value comes from the command line, not from line 13 of the file
    # (which says `batch_size: 8`): the message should say so.
    msg = error_of(write(tmp_path, TINY), ["train.batch_size=0"])
    assert "--set train.batch_size=0" in msg, msg


def test_set_by_task_name(tmp_path):
    loaded = load_config(write(tmp_path, TINY), ["tasks.sentiment.loss_weight=2"])
    assert loaded.config.task("sentiment").loss_weight == 2.0
    assert loaded.config.task("topic").loss_weight == 1.0


def test_set_by_task_index(tmp_path):
    loaded = load_config(write(tmp_path, TINY), ["tasks[1].metrics=[accuracy, mcc]"])
    assert loaded.config.tasks[1].metrics == ["accuracy", "mcc"]
    assert loaded.config.tasks[1].primary_metric == "accuracy"


def test_set_reader_option(tmp_path):
    loaded = load_config(write(tmp_path, TINY), ["tasks.topic.data.seed=7"])
    assert reader_options(loaded.config.task("topic")).seed == 7


def test_set_unknown_field_suggests_the_closest(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["model.hiden_dim=8"])
    assert msg.startswith("--set model.hiden_dim=8: model.hiden_dim: no such field"), msg
    assert "did you mean 'hidden_dim'?" in msg


def test_set_unknown_task_name(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["tasks.topik.loss_weight=2"])
    assert "no task named 'topik'" in msg and "topic, sentiment" in msg


def test_set_index_out_of_range(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["tasks[5].loss_weight=2"])
    assert "index 5 out of range" in msg


def test_set_without_equals(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["train.batch_size"])
    assert "expected KEY=VALUE" in msg


# ------------------------------------------------------------------ data paths


def test_relative_data_paths_resolve_against_the_config_dir(tmp_path):
    conf_dir = tmp_path / "configs"
    conf_dir.mkdir()
    path = write(
        conf_dir,
        """\
        name: paths
        tasks:
          - name: sst
            type: classification
            data:
              format: delimited
              train: data/train.tsv
              dev: ../shared/dev.tsv
              test: /abs/test.tsv
          - name: topic
            type: classification
            data: {format: demo, kind: topic, train: 20}
        """,
    )
    loaded = load_config(path)
    data = loaded.config.task("sst").data
    assert data.train == str((conf_dir / "data" / "train.tsv").resolve())
    assert data.dev == str((tmp_path / "shared" / "dev.tsv").resolve())
    assert data.test == "/abs/test.tsv"
    # The demo reader's sources are counts, not paths: left alone.
    assert loaded.config.task("topic").data.train == 20
    # The saved form (work dir config.yaml) carries the absolute paths.
    assert loaded.raw["tasks"][0]["data"]["train"] == data.train


def test_per_label_mapping_paths_are_resolved(tmp_path):
    path = write(
        tmp_path,
        """\
        name: paths
        tasks:
          - name: subj
            type: classification
            data:
              format: per_label
              train: {subjective: a/quote.txt, objective: a/plot.txt}
        """,
    )
    data = load_config(path).config.tasks[0].data
    assert data.train == {
        "subjective": str((tmp_path / "a" / "quote.txt").resolve()),
        "objective": str((tmp_path / "a" / "plot.txt").resolve()),
    }


# ------------------------------------------------------------------ the demo config


def test_demo_config_loads():
    loaded = load_config(DEMO)
    config = loaded.config
    assert config.name == "demo"
    assert config.task_names == ["topic", "sentiment", "pos"]
    assert [t.type for t in config.tasks] == ["classification", "classification", "tagging"]
    assert config.task("topic").metrics == ["accuracy", "macro_f1"]
    assert config.task("pos").loss_weight == 0.5
    assert config.model.task_conditioning == "embedding"
    assert config.train.bucket_lengths == [16, 24]
    assert reader_options(config.task("pos")).kind == "pos"
    assert loaded.path == DEMO


def test_demo_config_round_trips():
    loaded = load_config(DEMO)
    dumped = loaded.config.model_dump()
    assert ExperimentConfig.model_validate(dumped) == loaded.config
    again = config_from_dict(loaded.raw)
    assert again.config == loaded.config
    assert again.raw == loaded.raw
    assert again.config.model_dump() == dumped


def test_default_metric_filled_in():
    raw = {
        "name": "x",
        "tasks": [
            {"name": "a", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}},
            {"name": "b", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 5}},
        ],
    }
    config = config_from_dict(raw).config
    assert config.task("a").metrics == ["accuracy"]
    assert config.task("b").metrics == ["token_accuracy"]


def test_config_from_dict_does_not_mutate_its_input():
    raw = {"name": "x", "tasks": [{"name": "a", "type": "classification",
                                   "data": {"format": "demo", "kind": "topic", "train": 5}}]}
    before = repr(raw)
    config_from_dict(raw, overrides=["train.batch_size=3"])
    assert repr(raw) == before


def test_config_from_dict_errors_name_the_source():
    with pytest.raises(ConfigError, match=re.escape("<dict>: tasks: ")):
        config_from_dict({"name": "x", "tasks": []})
