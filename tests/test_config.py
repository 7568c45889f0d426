"""Config loading: every bad input is one ConfigError naming file, line and field."""

import math
import re
import textwrap
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    assert "invalid YAML value" in msg
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


# One mistake in TINY each: (the text, how the message starts, what else it says).
FIELD_ERRORS = [
    pytest.param(TINY.replace("batch_size: 8", 'batch_size: "big"'), "{path}:13: train.batch_size: ",
                 ["valid integer"], id="mistyped_field"),
    pytest.param(TINY.replace("batch_size: 8", "batch_size: 0"), "{path}:13: train.batch_size: ",
                 ["greater than or equal to 1"], id="out_of_range_field"),
    pytest.param(TINY.replace("hidden_dim: 16", "hiden_dim: 16"), "{path}:11: model.hiden_dim: unknown key 'hiden_dim'",
                 ["did you mean 'hidden_dim'?"], id="unknown_key_suggests_the_closest"),
    pytest.param(TINY + "trian:\n  epochs: 2\n", "{path}:14: trian: unknown key 'trian'; did you mean 'train'?",
                 [], id="unknown_top_level_key"),
    pytest.param(TINY.replace("type: classification\n    data: {format: demo, kind: sentiment",
                              "type: clasification\n    data: {format: demo, kind: sentiment"),
                 "{path}:8: tasks[1].type: unknown task type 'clasification'",
                 ["expected one of classification, multilabel, regression, tagging"], id="unknown_task_type_lists_the_types"),
    # The field path is tasks[0].metrics and the line is the `metrics:` line (5).
    pytest.param(TINY.replace("metrics: [accuracy]", "metrics: [token_accuracy]"), "{path}:5: tasks[0].metrics: ",
                 ["unknown metric 'token_accuracy' for a classification task", "expected one of accuracy"],
                 id="unknown_metric_for_the_task_type"),
    # The line is the second task's `name:` line (7), not the `tasks:` line.
    pytest.param(TINY.replace("name: sentiment", "name: topic"), "{path}:7: ",
                 ["tasks[1].name: duplicate task name 'topic' (also tasks[0])"], id="duplicate_task_names"),
    pytest.param(TINY.replace("name: sentiment", "name: Senti-ment"), "{path}:7: tasks[1].name: ", ["lowercase"],
                 id="bad_task_name"),
    pytest.param(TINY.replace("format: demo, kind: sentiment", "format: tsvv, kind: sentiment"),
                 "{path}:9: tasks[1].data.format: unknown data format 'tsvv'", ["delimited", "demo"],  # lists the formats
                 id="unknown_data_format"),
    # conll serves tagging only; label_column is also required, but the type
    # mismatch is the first problem reported for the task.
    pytest.param(TINY.replace("format: demo, kind: sentiment, train: 20", "format: conll, train: x.txt"),
                 "{path}:9: tasks[1].data.format: ", ["cannot serve a classification task"],
                 id="reader_that_cannot_serve_the_task_type"),
]


@pytest.mark.parametrize("text, start, fragments", FIELD_ERRORS)
def test_a_field_error_names_file_line_and_field(tmp_path, text, start, fragments):
    path = write(tmp_path, text)
    msg = error_of(path)
    assert msg.startswith(start.format(path=path)), msg
    for fragment in fragments:
        assert fragment in msg, msg


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


# One bad --set on TINY each: (the override, how the message starts, what else it says).
SET_ERRORS = [
    pytest.param("train.batch_size=0", "", ["train.batch_size", "greater than or equal to 1"],
                 id="invalid_value_is_an_error"),
    # The bad value comes from the command line, not from line 13 of the file
    # (which says `batch_size: 8`): the message should say so.
    pytest.param("train.batch_size=0", "", ["--set train.batch_size=0"], id="invalid_value_names_the_override"),
    pytest.param("model.hiden_dim=8", "--set model.hiden_dim=8: model.hiden_dim: no such field",
                 ["did you mean 'hidden_dim'?"], id="unknown_field_suggests_the_closest"),
    pytest.param("tasks.topik.loss_weight=2", "", ["no task named 'topik'", "topic, sentiment"], id="unknown_task_name"),
    pytest.param("tasks[5].loss_weight=2", "", ["index 5 out of range"], id="index_out_of_range"),
    pytest.param("train.batch_size", "", ["expected KEY=VALUE"], id="without_equals"),
]


@pytest.mark.parametrize("override, start, fragments", SET_ERRORS)
def test_set_error(tmp_path, override, start, fragments):
    msg = error_of(write(tmp_path, TINY), [override])
    assert msg.startswith(start), msg
    for fragment in fragments:
        assert fragment in msg, msg


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


# ------------------------------------------------------------------ strict, finite values (issue 11)


def _fields(annotation_types):
    """(--set key, field info) of every field of the given types, in every config section."""
    from keras_mtl.config import ModelConfig, SplitConfig, TaskConfig, TrainConfig

    sections = {"tasks[0]": TaskConfig, "model": ModelConfig, "train": TrainConfig, "splits": SplitConfig}
    found = []
    for prefix, model in sections.items():
        for name, field in model.model_fields.items():
            if field.annotation in annotation_types:
                found.append((f"{prefix}.{name}", field))
    return found


FLOAT_FIELDS = [key for key, _ in _fields((float,))]
INT_FIELDS = [key for key, _ in _fields((int, typing.Optional[int]))]
BOOL_FIELDS = [key for key, _ in _fields((bool,))]


def test_the_field_lists_are_not_empty():
    assert {"tasks[0].loss_weight", "train.learning_rate", "train.temperature", "model.dropout"} <= set(FLOAT_FIELDS)
    assert {"train.epochs", "train.batch_size", "model.hidden_dim", "splits.seed"} <= set(INT_FIELDS)
    assert {"model.lowercase", "model.task_gates"} <= set(BOOL_FIELDS)


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_non_finite_floats_are_refused_in_every_float_field(tmp_path, key, value):
    msg = error_of(write(tmp_path, TINY), [f"{key}={value}"])
    assert msg == f"--set {key}={value}: {key}: Input should be a finite number; got {value.lower()} (a number)", msg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(FLOAT_FIELDS), value=st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_value_is_finite_or_refused(tmp_path, key, value):
    text = yaml.safe_dump(value).splitlines()[0]
    try:
        loaded = load_config(write(tmp_path, TINY), [f"{key}={text}"])
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"--set {key}={text}: "), msg
        if not math.isfinite(value):
            assert "finite number" in msg, msg
        else:
            assert "valid number" not in msg and "finite" not in msg, msg  # a range check, not a type error
    else:
        assert math.isfinite(value)
        section, name = key.split(".")
        obj = loaded.config.tasks[0] if section == "tasks[0]" else getattr(loaded.config, section)
        assert getattr(obj, name) == value


def test_nan_in_the_file_names_file_line_and_field(tmp_path):
    path = write(tmp_path, TINY + "  temperature: .nan\n")
    assert error_of(path) == f"{path}:14: train.temperature: Input should be a finite number; got .nan (a number)"
    path = write(tmp_path, TINY.replace("metrics: [accuracy]", "metrics: [accuracy]\n    loss_weight: .inf"))
    assert error_of(path).startswith(f"{path}:6: tasks[0].loss_weight: Input should be a finite number")


@pytest.mark.parametrize("key", INT_FIELDS)
@pytest.mark.parametrize("value, shown", [("true", "true (a boolean)"), ("'32'", "'32' (a string)"), ("2.5", "2.5 (a number)")])
def test_integer_fields_take_integers_only(tmp_path, key, value, shown):
    msg = error_of(write(tmp_path, TINY), [f"{key}={value}"])
    assert msg.startswith(f"--set {key}={value}: {key}: Input should be a valid integer; got {shown}"), msg
    assert "\n" not in msg


@pytest.mark.parametrize("key", BOOL_FIELDS)
@pytest.mark.parametrize("value", ["1", "'true'", "0.0"])
def test_boolean_fields_take_booleans_only(tmp_path, key, value):
    msg = error_of(write(tmp_path, TINY), [f"{key}={value}"])
    assert msg.startswith(f"--set {key}={value}: {key}: Input should be a valid boolean; got "), msg


@pytest.mark.parametrize("key", FLOAT_FIELDS)
def test_float_fields_accept_integers(tmp_path, key):
    for value in (1, 0):  # one of them is in range for every float field
        try:
            loaded = load_config(write(tmp_path, TINY), [f"{key}={value}"])
        except ConfigError as e:
            assert "valid number" not in str(e), str(e)
            continue
        section, name = key.split(".")
        obj = loaded.config.tasks[0] if section == "tasks[0]" else getattr(loaded.config, section)
        assert getattr(obj, name) == value and isinstance(getattr(obj, name), float)
        return
    pytest.fail(f"{key}: neither 1 nor 0 was accepted")


def test_epochs_true_and_quoted_batch_size_in_the_file(tmp_path):
    path = write(tmp_path, TINY.replace("batch_size: 8", 'batch_size: "32"'))
    assert error_of(path) == (
        f"{path}:13: train.batch_size: Input should be a valid integer; got '32' (a string): "
        "write the number without quotes"
    )
    path = write(tmp_path, TINY + "  epochs: true\n")
    assert error_of(path) == f"{path}:14: train.epochs: Input should be a valid integer; got true (a boolean)"


def test_reader_options_are_strict_too(tmp_path):
    path = write(tmp_path, TINY.replace("kind: topic, train: 20", "kind: topic, train: 20, seed: '3'"))
    assert error_of(path).startswith(f"{path}:6: tasks[0].data.seed: Input should be a valid integer; got '3'")


def test_exponent_without_a_dot_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` as a string; strict floats would refuse it.
    loaded = load_config(write(tmp_path, TINY + "  learning_rate: 1e-3\n  weight_decay: 2E-2\n"))
    assert loaded.config.train.learning_rate == 0.001 and loaded.config.train.weight_decay == 0.02
    assert load_config(write(tmp_path, TINY), ["train.learning_rate=5e-4"]).config.train.learning_rate == 0.0005


# ------------------------------------------------------------------ duplicate keys


@pytest.mark.parametrize(
    "text, line, first, key",
    [
        (TINY + "name: other\n", 14, 1, "name"),  # top level
        (TINY + "  batch_size: 16\n", 14, 13, "batch_size"),  # a section
        (TINY.replace("    type: classification\n    metrics", "    type: classification\n    type: tagging\n    metrics"), 5, 4, "type"),
        (TINY.replace("kind: topic, train: 20", "kind: topic, train: 20, kind: pos"), 6, 6, "kind"),  # flow mapping
        (TINY + "model:\n  num_layers: 1\n", 14, 10, "model"),  # a whole section twice
    ],
)
def test_duplicate_keys_are_errors_naming_both_lines(tmp_path, text, line, first, key):
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{line}: duplicate key {key!r} (also at line {first}; a key may appear once in a mapping)"


def test_merge_keys_may_be_overridden(tmp_path):
    text = TINY.replace("model:\n  hidden_dim: 16\n", "base: &base {hidden_dim: 32, num_layers: 1}\nmodel:\n  <<: *base\n  hidden_dim: 16\n")
    path = write(tmp_path, text)
    # `base` is not a config key (reported as such); the merge itself is fine.
    assert "duplicate" not in error_of(path)


def test_duplicate_key_in_a_set_value(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["model={hidden_dim: 8, hidden_dim: 16}"])
    assert msg.startswith("--set model={hidden_dim: 8, hidden_dim: 16}: invalid YAML value: duplicate key 'hidden_dim'"), msg


# ------------------------------------------------------------------ task names the model uses (issue 11)


def _reserved_examples():
    from keras_mtl.config import MODEL_INPUTS, MODEL_LAYERS, NUMBERED_LAYERS, SIGNATURES, task_layers

    names = list(MODEL_INPUTS) + list(MODEL_LAYERS) + [f"{p}_{i}" for p in NUMBERED_LAYERS for i in (0, 1, 11)]
    names += list(SIGNATURES)  # a task's signature is named like the task
    return names + [f"topic_{suffix}" for suffix in task_layers()]  # the model's and the task types'


@pytest.mark.parametrize("name", _reserved_examples())
def test_task_named_like_a_model_input_or_layer_is_refused(tmp_path, name):
    path = write(tmp_path, TINY.replace("name: sentiment", f"name: {name}"))
    msg = error_of(path)
    assert msg.startswith(f"{path}:7: tasks[1].name: task name {name!r} is reserved: it is the name of "), msg
    assert "\n" not in msg


def test_task_pool_beside_task_names_the_other_task(tmp_path):
    path = write(tmp_path, TINY.replace("name: sentiment", "name: topic_pool"))
    assert error_of(path) == (
        f"{path}:7: tasks[1].name: task name 'topic_pool' is reserved: it is the name of a layer of "
        "task 'topic' (its pooling); rename the task"
    )
    # Without a task `topic`, `topic_pool` is an ordinary name.
    text = TINY.replace("name: sentiment", "name: topic_pool").replace("name: topic\n", "name: subject\n")
    assert load_config(write(tmp_path, text)).config.task_names == ["subject", "topic_pool"]


def test_numbered_names_that_the_model_does_not_use_are_free():
    from keras_mtl.config import model_name_clash

    for name in ("encoder", "encoder_", "encoder_01", "encoder_x", "encoders_0", "my_embedding", "topic_pooled"):
        assert model_name_clash(name, ["topic"]) is None, name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z"), b=st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z"))
def test_any_task_name_loads_or_is_refused_in_one_line(tmp_path, a, b):
    from keras_mtl.config import model_name_clash

    # Quoted: `name: yes` would be a boolean (and refused as such).
    path = write(tmp_path, TINY.replace("name: topic\n", f"name: '{a}'\n").replace("name: sentiment\n", f"name: '{b}'\n"))
    try:
        loaded = load_config(path)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(f"{path}:"), msg
        assert a == b or model_name_clash(a, [a, b]) or model_name_clash(b, [a, b]), msg
    else:
        assert loaded.config.task_names == [a, b]
        assert not model_name_clash(a, [a, b]) and not model_name_clash(b, [a, b])


def _network_with_every_layer(variant):
    """A model with every optional layer (`variant`: its sentence pooling), its config."""
    from keras_mtl.model import build_network

    tasks = [
        {"name": "a", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 4}},
        {"name": "b", "type": "regression", "data": {"format": "demo", "kind": "topic", "train": 4}},
        {"name": "c", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 4}},
    ]
    model = {
        "hidden_dim": 8, "num_heads": 2, "intermediate_dim": 8, "num_layers": 2, "adapter_dim": 4,
        "num_experts": 2, "task_relation": True, "task_gates": True, "pooling": variant,
        "task_conditioning": "embedding" if variant == "cls" else "token",
    }
    config = ExperimentConfig.model_validate({"name": "x", "tasks": tasks, "model": model})
    return build_network(config, {t: ["p", "q"] for t in "abc"}, [f"piece{i}" for i in range(50)]), config


@pytest.mark.parametrize("variant", ["cls", "attention"])
def test_reserved_names_cover_every_layer_and_input_of_the_model(variant):
    """The tables in config.py against the layers `build_network` really creates."""
    from keras_mtl.config import model_name_clash
    from keras_mtl.layers import TaskHead

    network, config = _network_with_every_layer(variant)
    names = [layer.name for layer in network.layers] + [str(i.name).split(":")[0] for i in network.inputs]
    for name in names:
        assert name in config.task_names or model_name_clash(name, config.task_names), (
            f"layer {name!r} of the model is not in config.py's reserved names"
        )
    for task in config.task_names:  # a task's own layer is the head its type built (gate, dropout inside)
        head = network.get_layer(task)
        assert isinstance(head, TaskHead) and head.gate and head.output is network.output[task]


def test_every_reserved_per_task_layer_is_one_the_model_creates():
    """The other way round: no per-task suffix is reserved for a layer that no model has."""
    from keras_mtl.config import task_layers

    built = set()
    for variant in ("cls", "attention"):
        network, config = _network_with_every_layer(variant)
        built |= {layer.name[len(t) + 1 :] for layer in network.layers for t in config.task_names
                  if layer.name.startswith(f"{t}_")}
    assert set(task_layers()) == built == {"pool", "attention_pool"}


# ------------------------------------------------------------------ buckets, --set blame (issue 11)


def test_bucket_lengths_above_max_sequence_length_are_refused(tmp_path):
    text = TINY.replace("hidden_dim: 16", "hidden_dim: 16\n  max_sequence_length: 32")
    path = write(tmp_path, text + "  bucket_lengths: [8, 33]\n")
    assert error_of(path) == (
        f"{path}:15: train.bucket_lengths: 33 is longer than model.max_sequence_length (32); "
        "bucket lengths must be <= it. Received: [8, 33]"
    )
    assert load_config(write(tmp_path, text + "  bucket_lengths: [8, 32]\n")).config.train.bucket_lengths == [8, 32]
    msg = error_of(write(tmp_path, text + "  bucket_lengths: [8, 16]\n"), ["model.max_sequence_length=12"])
    assert "train.bucket_lengths: 16 is longer than model.max_sequence_length (12)" in msg


def test_set_into_a_scalar_is_one_line(tmp_path):
    msg = error_of(write(tmp_path, TINY), ["model=3", "model.hidden_dim=8"])
    assert msg == "--set model.hidden_dim=8: cannot set model.hidden_dim: model is 3 (an integer), not a mapping"
    msg = error_of(write(tmp_path, TINY), ["tasks.topic.data=x", "tasks.topic.data.seed=1"])
    assert msg.startswith("--set tasks.topic.data.seed=1: cannot set tasks[0].data.seed: tasks[0].data is x (a string)")


def test_set_into_an_empty_section(tmp_path):
    path = write(tmp_path, TINY.replace("model:\n  hidden_dim: 16\n", "model:\n"))
    assert load_config(path, ["model.hidden_dim=32"]).config.model.hidden_dim == 32
    assert error_of(path) == f"{path}:10: model: expected a mapping (key: value entries); got null (empty)"


@pytest.mark.parametrize("value", ["[", "{a: 1", "'unclosed", "a: b: c", "[1, 2]]", "@x"])
def test_bad_set_yaml_value_is_one_line(tmp_path, value):
    msg = error_of(write(tmp_path, TINY), [f"train.epochs={value}"])
    assert msg.startswith(f"--set train.epochs={value}: invalid YAML value"), msg
    assert "\n" not in msg


def test_bad_reader_option_from_set_blames_the_set(tmp_path):
    path = write(tmp_path, TINY)
    msg = error_of(path, ["tasks.topic.data.seedd=3"])
    assert msg.startswith("--set tasks.topic.data.seedd=3: tasks[0].data.seedd: unknown option 'seedd'"), msg
    msg = error_of(path, ["tasks.topic.data.format=demoo"])
    assert msg.startswith("--set tasks.topic.data.format=demoo: tasks[0].data.format: unknown data format"), msg
    # The same option in the file is blamed on its line.
    path = write(tmp_path, TINY.replace("kind: topic, train: 20", "kind: topic, train: 20, seedd: 3"))
    assert error_of(path).startswith(f"{path}:6: tasks[0].data.seedd: unknown option")


def test_section_made_by_set_is_blamed_on_the_set(tmp_path):
    path = write(tmp_path, TINY.replace("model:\n  hidden_dim: 16\n", ""))
    msg = error_of(path, ["model.hidden_dim=10", "model.num_heads=4"])
    assert msg.startswith("--set model.") and "divisible by num_heads (4)" in msg, msg
    # A problem in a file section that a --set changed names both.
    msg = error_of(write(tmp_path, TINY), ["model.num_heads=3"])
    assert msg.startswith(f"{tmp_path / 'cfg.yaml'}:10 (with --set model.num_heads=3): model: "), msg


def test_every_config_field_says_what_it_is_in_one_line():
    from keras_mtl import config as config_module

    sections = [config_module.DataConfig, config_module.TaskConfig, config_module.ModelConfig,
                config_module.TrainConfig, config_module.SplitConfig, config_module.CacheConfig,
                config_module.ExperimentConfig]
    for section in sections:
        for name, field in section.model_fields.items():
            where = f"{section.__name__}.{name}"
            assert field.description, f"{where}: no Field(description=...)"
            assert "\n" not in field.description and len(field.description) <= 110, where


def test_load_config_accepts_a_path_a_dict_or_a_loaded_config():
    # One entry point for train, meta, compare and search.
    from pathlib import Path

    from keras_mtl.config import load_config

    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    loaded = load_config(path)
    assert load_config(loaded) is loaded
    assert load_config(loaded, ["train.epochs=7"]).config.train.epochs == 7
    assert load_config(loaded.raw, ["seed=11"]).config.seed == 11
    assert load_config(str(path)).raw == loaded.raw


def test_positive_class_is_for_classification_tasks(tmp_path):
    text = TINY.replace("name: sentiment\n", "name: sentiment\n    positive_class: pos\n")
    assert load_config(write(tmp_path, text)).config.task("sentiment").positive_class == "pos"
    regression = {"name": "r", "tasks": [{"name": "r", "type": "regression", "positive_class": "1",
                                          "data": {"format": "jsonl", "train": "x.jsonl"}}]}
    with pytest.raises(ConfigError, match="positive_class applies to classification tasks, not to a regression task"):
        config_from_dict(regression)
    regression["tasks"][0]["positive_class"] = None  # the default: not set
    assert config_from_dict(regression).config.tasks[0].positive_class is None


def test_class_weights_are_for_types_with_one_class_per_example():
    tagging = {"name": "t", "tasks": [{"name": "t", "type": "tagging", "class_weights": "balanced",
                                       "data": {"format": "demo", "kind": "pos", "train": 4}}]}
    with pytest.raises(ConfigError) as info:
        config_from_dict(tagging)
    assert "class_weights: 'balanced' applies to classification tasks, not to a tagging task" in str(info.value)


def test_splits_leaks_is_keep_or_drop(tmp_path):
    assert load_config(write(tmp_path, TINY)).config.splits.leaks == "keep"
    with pytest.raises(ConfigError, match="splits.leaks"):
        load_config(write(tmp_path, TINY), ["splits.leaks=remove"])


def test_a_second_text_read_from_the_label_or_the_text_names_its_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: pairs
        tasks:
          - name: rte
            type: classification
            data:
              format: delimited
              train: rte.tsv
              text_column: sentence1
              text_pair_column: label
          - name: nli
            type: classification
            data:
              format: jsonl
              train: nli.jsonl
              text_field: premise
              label_field: gold
              text_pair_field: premise
          - name: glue_rte
            type: classification
            data: {format: tfds, name: glue/rte, train: train, text_feature: sentence1, text_pair_feature: label}
        """,
    )
    lines = error_of(path).splitlines()
    assert lines == [
        f"{path}:9: tasks[0].data.text_pair_column: 'label' is also the label column (label_column): the model "
        "would read each example's label as its second text; name the column that holds the second text",
        f"{path}:17: tasks[1].data.text_pair_field: 'premise' is also the text field (text_field): each example "
        "would be its text paired with itself; name the field that holds the second text",
        f"{path}:20: tasks[2].data.text_pair_feature: 'label' is also the label feature (label_feature): the model "
        "would read each example's label as its second text; name the feature that holds the second text",
    ]
    # An override that makes the mistake is blamed for it.
    fixed = path.read_text().replace("text_pair_column: label", "text_pair_column: sentence2")
    fixed = fixed.replace("text_pair_field: premise", "text_pair_field: hypothesis").replace(
        "text_pair_feature: label", "text_pair_feature: sentence2")
    path.write_text(fixed)
    assert load_config(path).config.pair_task_names == ["rte", "nli", "glue_rte"]
    # A name and an index may be one column or two: only the header tells (read time).
    assert reader_options(load_config(path, ["tasks.rte.data.text_pair_column=0"]).config.task("rte")).text_pair_column == 0
    msg = error_of(path, ["tasks.rte.data.text_pair_column=sentence1"])
    assert msg.startswith("--set tasks.rte.data.text_pair_column=sentence1: tasks[0].data.text_pair_column: "
                          "'sentence1' is also the text column (text_column)"), msg
