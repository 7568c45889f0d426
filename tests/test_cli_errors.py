"""Every user error of the command line: exit status 2 and one `error:` line.

A walk over bad invocations of every command (bad arguments, configs,
paths), run in-process through `keras_mtl.cli.main` (fast), plus a few real
subprocesses that check what a person sees on stderr: no TensorFlow start-up
lines, no library warnings, one line per error.
"""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_mtl import cli
from keras_mtl.cli import app, main
from keras_mtl.cli import evaluate as evaluate_command

from helpers import cli_tiny_yaml

REPO = Path(__file__).resolve().parents[1]

TINY = cli_tiny_yaml("cli-errors")

# name -> config text; every one holds exactly one mistake.
CONFIGS = {
    "tiny": TINY,
    "token_ids": TINY.replace("name: topic", "name: token_ids"),
    "embedding": TINY.replace("name: topic", "name: embedding"),
    "encoder_0": TINY.replace("name: pos", "name: encoder_0"),
    "topic_pool": TINY.replace("name: pos", "name: topic_pool"),
    "padding_mask": TINY.replace("name: pos", "name: padding_mask"),
    "temperature_nan": TINY + "  temperature: .nan\n",
    "learning_rate_inf": TINY + "  learning_rate: .inf\n",
    "loss_weight_inf": TINY.replace("type: classification\n", "type: classification\n    loss_weight: .inf\n"),
    "epochs_true": TINY.replace("epochs: 1", "epochs: true"),
    "batch_size_string": TINY.replace("batch_size: 8", 'batch_size: "32"'),
    "duplicate_key": TINY + "  epochs: 2\n",
    "bucket_too_long": TINY.replace("bucket_lengths: [8]", "bucket_lengths: [8, 64]"),
    "syntax": TINY + "  - oops\n",
    "unknown_key": TINY + "  epochz: 2\n",
    "task_type": TINY.replace("type: tagging", "type: taging"),
    "missing_data": TINY.replace(
        "data: {format: demo, kind: pos, train: 24, dev: 8, test: 8}",
        "data: {format: conll, train: no-such.txt, label_column: 1}",
    ),
    "not_a_mapping": "- just\n- a list\n",
    "empty": "# nothing\n",
    "python_tag": TINY.replace("name: cli-errors", "name: !!python/object/apply:os.getcwd []"),
    "duplicate_task": TINY.replace("name: pos", "name: topic"),
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    for name, text in CONFIGS.items():
        (root / f"{name}.yaml").write_text(text, encoding="utf-8")
    (root / "bad-utf8.yaml").write_bytes(b"name: \xff\n")
    (root / "empty-dir").mkdir()
    (root / "a-file.txt").write_text("not a directory\n", encoding="utf-8")
    return root


# (command, argv, fragments the one error line must hold). In argv, {x}
# is the path of x.yaml in the fixture dir, {dir} the fixture dir itself.
BAD = [
    # ---- argparse: unknown command/option, bad numbers, missing arguments
    (None, [], ["the following arguments are required: COMMAND"]),
    (None, ["fly"], ["invalid choice: 'fly'"]),
    (None, ["--backend", "theano", "data", "{tiny}"], ["argument --backend: invalid choice"]),
    ("train", ["train"], ["required: config"]),
    ("train", ["train", "{tiny}", "--bogus"], ["unrecognized arguments: --bogus"]),
    ("train", ["train", "{tiny}", "--max-steps", "0"], ["--max-steps: must be >= 1, got 0"]),
    ("train", ["train", "{tiny}", "--max-steps", "-1"], ["--max-steps: must be >= 1, got -1"]),
    ("train", ["train", "{tiny}", "--max-steps", "ten"], ["--max-steps: expected an integer, got 'ten'"]),
    # ---- configs: one mistake each, named by file:line and field
    ("train", ["train", "{token_ids}"], ["token_ids.yaml:3: tasks[0].name", "'token_ids' is reserved"]),
    ("train", ["train", "{embedding}"], ["embedding.yaml:3: tasks[0].name", "model layer"]),
    ("train", ["train", "{encoder_0}"], ["encoder_0.yaml:6: tasks[1].name", "transformer layer 0"]),
    ("train", ["train", "{topic_pool}"], ["topic_pool.yaml:6: tasks[1].name", "layer of task 'topic'"]),
    ("data", ["data", "{padding_mask}"], ["padding_mask.yaml:6: tasks[1].name", "model input"]),
    ("train", ["train", "{temperature_nan}"], ["temperature_nan.yaml:22: train.temperature", "finite"]),
    ("train", ["train", "{learning_rate_inf}"], ["learning_rate_inf.yaml:22: train.learning_rate", "finite"]),
    ("train", ["train", "{loss_weight_inf}"], ["loss_weight_inf.yaml:5: tasks[0].loss_weight", "finite"]),
    ("train", ["train", "{epochs_true}"], ["epochs_true.yaml:19: train.epochs", "valid integer", "true (a boolean)"]),
    ("train", ["train", "{batch_size_string}"], ["batch_size_string.yaml:18: train.batch_size", "'32' (a string)"]),
    ("train", ["train", "{duplicate_key}"], ["duplicate_key.yaml:22: duplicate key 'epochs'", "line 19"]),
    ("train", ["train", "{bucket_too_long}"], ["bucket_too_long.yaml:20: train.bucket_lengths", "max_sequence_length (16)"]),
    ("data", ["data", "{syntax}"], ["syntax.yaml:22:", "YAML syntax error"]),
    ("data", ["data", "{unknown_key}"], ["unknown_key.yaml:22: train.epochz: unknown key", "did you mean 'epochs'?"]),
    ("data", ["data", "{task_type}"], ["task_type.yaml:7: tasks[1].type: unknown task type 'taging'"]),
    ("data", ["data", "{missing_data}"], ["tasks[1].data.train", "no-such.txt"]),
    ("data", ["data", "{not_a_mapping}"], ["must be a mapping"]),
    ("data", ["data", "{empty}"], ["the file is empty"]),
    ("data", ["data", "{python_tag}"], ["python/object/apply"]),
    ("data", ["data", "{duplicate_task}"], ["duplicate task name 'topic'"]),
    ("data", ["data", "{bad-utf8}"], ["not valid UTF-8"]),
    ("data", ["data", "{missing}"], ["missing.yaml: config file not found"]),
    ("train", ["train", "{dir}/empty-dir"], ["is a directory, expected a YAML config file"]),
    # ---- --set: blamed on the argument, one line
    ("train", ["train", "{tiny}", "--set", "model=3", "--set", "model.hidden_dim=8"],
     ["--set model.hidden_dim=8: cannot set model.hidden_dim: model is 3 (an integer), not a mapping"]),
    ("train", ["train", "{tiny}", "--set", "train.epochs=["], ["--set train.epochs=[: invalid YAML value"]),
    ("data", ["data", "{tiny}", "--set", "train.epochs={a: 1"], ["--set train.epochs={a: 1: invalid YAML value"]),
    ("train", ["train", "{tiny}", "--set", "train.epochs"], ["--set train.epochs: expected KEY=VALUE"]),
    ("train", ["train", "{tiny}", "--set", "train.epochz=2"], ["--set train.epochz=2: train.epochz: no such field"]),
    ("train", ["train", "{tiny}", "--set", "tasks.topic.data.seedd=1"], ["--set tasks.topic.data.seedd=1: tasks[0].data.seedd"]),
    ("train", ["train", "{tiny}", "--set", "tasks.topik.loss_weight=2"], ["no task named 'topik'"]),
    ("train", ["train", "{tiny}", "--set", "train.temperature=.nan"], ["--set train.temperature=.nan", "finite"]),
    ("train", ["train", "{tiny}", "--set", "tasks.topic.loss_weight=-.inf"], ["tasks[0].loss_weight", "finite"]),
    ("data", ["data", "{tiny}", "--set", "train.batch_size='8'"], ["--set train.batch_size='8'", "valid integer"]),
    # ---- prepare: the cache (keras_mtl.data.cache)
    ("prepare", ["prepare"], ["give CONFIG to prepare, or --list / --clear"]),
    ("prepare", ["prepare", "{tiny}", "--list", "--clear"], ["--list and --clear go alone"]),
    ("prepare", ["prepare", "--key", "abc"], ["--key goes with --clear"]),
    ("prepare", ["prepare", "{tiny}", "--clear", "--key", "abc"], ["--clear takes CONFIG or --key KEY, not both"]),
    ("prepare", ["prepare", "{missing}"], ["missing.yaml: config file not found"]),
    ("prepare", ["prepare", "{duplicate_key}", "--list"], ["duplicate key 'epochs'"]),
    ("prepare", ["prepare", "--list", "--cache-dir", "{dir}/a-file.txt"], ["a-file.txt: is a file, expected the cache directory"]),
    ("prepare", ["prepare", "--clear", "--key", "zz", "--cache-dir", "{dir}/empty-dir"], ["no cache entry 'zz'"]),
    ("prepare", ["prepare", "{tiny}", "--set", "cache.vocabulary_sample=0"], ["cache.vocabulary_sample", "greater than or equal to 1"]),
    # ---- evaluate / export / predict / serve: paths
    ("evaluate", ["evaluate", "{dir}/nowhere"], ["work dir not found"]),
    ("evaluate", ["evaluate", "{dir}/empty-dir", "--json"], ["no trained model here"]),
    ("evaluate", ["evaluate", "{dir}/empty-dir", "--split", "validation"], ["argument --split: invalid choice"]),
    ("export", ["export", "{dir}/nowhere"], ["work dir not found"]),
    ("export", ["export", "{dir}/empty-dir", "--out", "{dir}/saved"], ["no trained model here"]),
    ("export", ["export", "{dir}/empty-dir", "--keep", "two"], ["argument --keep: invalid int value"]),
    ("predict", ["predict", "{dir}/nowhere", "a text"], ["not found"]),
    ("predict", ["predict", "{dir}/empty-dir", "a text"], ["not a SavedModel"]),
    ("predict", ["predict", "{dir}/a-file.txt", "a text"], ["is a file"]),
    ("predict", ["predict", "{dir}/empty-dir"], ["required: texts"]),
    ("predict", ["predict", "{dir}/empty-dir", "a", "b", "--task", "rte", "--text-pair", "c"],
     ["1 --text-pair for 2 TEXT: give one --text-pair per TEXT, in order"]),
    ("predict", ["predict", "{dir}/empty-dir", "--input", "{dir}/a-file.txt", "--text-pair", "c"],
     ["--text-pair goes with TEXT arguments; with --input FILE give text_pair in the file"]),
    ("predict", ["predict", "{dir}/empty-dir", "a", "--task", "rte", "--text-pair", "c"], ["not a SavedModel"]),
    ("serve", ["serve", "{dir}/nowhere", "--dry-run"], ["does not exist"]),
    ("serve", ["serve", "{dir}/empty-dir", "--dry-run"], ["no servable version"]),
    ("serve", ["serve", "{dir}/empty-dir", "--port", "0"], ["argument --port: must be in 1..65535"]),
    ("serve", ["serve", "{dir}/empty-dir", "--rest-port", "70000"], ["argument --rest-port: must be in 1..65535"]),
    # ---- compare / meta-train / adapt / search
    ("compare", ["compare", "{missing}"], ["config file not found"]),
    ("compare", ["compare", "{token_ids}"], ["'token_ids' is reserved"]),
    ("compare", ["compare", "{tiny}", "--seeds", "0"], ["argument --seeds: must be >= 1"]),
    ("compare", ["compare", "{tiny}", "--max-steps", "0"], ["argument --max-steps: must be >= 1"]),
    ("compare", ["compare", "{tiny}", "--tasks", "nope"], ["no task named 'nope'"]),
    ("compare", ["compare", "{tiny}", "--budget", "all"], ["argument --budget: invalid choice"]),
    ("meta-train", ["meta-train", "{duplicate_key}"], ["duplicate key 'epochs'"]),
    ("meta-train", ["meta-train", "{tiny}", "--meta-steps", "0"], ["argument --meta-steps: must be >= 1"]),
    ("meta-train", ["meta-train", "{tiny}", "--inner-lr", "nan"], ["argument --inner-lr: expected a finite number"]),
    ("meta-train", ["meta-train", "{tiny}", "--meta-lr", "2"], ["meta_lr must be in (0, 1]"]),
    ("meta-train", ["meta-train", "{tiny}", "--task-sampling", "bogus"], ["unknown task sampling 'bogus'"]),
    ("adapt", ["adapt", "{dir}/nowhere", "{tiny}", "--shots", "2"], ["work dir not found"]),
    ("adapt", ["adapt", "{dir}/nowhere", "{tiny}"], ["required: --shots"]),
    ("adapt", ["adapt", "{dir}/nowhere", "{tiny}", "--shots", "0"], ["argument --shots: must be >= 1"]),
    ("adapt", ["adapt", "{dir}/nowhere", "{tiny}", "--shots", "2", "--lr", "-1"], ["argument --lr: must be > 0"]),
    ("search", ["search", "{missing}"], ["config file not found"]),
    ("search", ["search", "{tiny}", "--algorithm", "bogus"], ["unknown algorithm 'bogus'"]),
    ("search", ["search", "{tiny}", "--objective", "bogus"], ["unknown objective 'bogus'"]),
    ("search", ["search", "{tiny}", "--trials", "0"], ["argument --trials: must be >= 1"]),
    ("search", ["search", "{tiny}", "--max-steps", "-1"], ["argument --max-steps: must be >= 1"]),
    ("search", ["search", "{tiny}", "--weights", "x"], ["argument --weights"]),
    ("search", ["search", "{tiny}", "--tasks", "nope"], ["unknown task 'nope'"]),
    # ---- round 3: predict input
    ("predict", ["predict", "{dir}/empty-dir", "--input", "-"],
     ["standard input (-) has no file extension to tell its format from: give --format jsonl|tsv"]),
    ("predict", ["predict", "{dir}/empty-dir", "--input", "-", "--format", "jsonl", "--header"],
     ["<stdin>: --header is for TSV input; JSON Lines has no header line"]),
    ("predict", ["predict", "{dir}/empty-dir", "--input", "{dir}/a-file.txt", "--format", "jsonl", "--header"],
     ["a-file.txt: --header is for TSV input"]),
    ("predict", ["predict", "{dir}/empty-dir", "--input", "{dir}/empty-dir"],
     ["empty-dir: is a directory, expected an input file"]),
    ("predict", ["predict", "{dir}/empty-dir", "fine", "\udcff\udcfe"],
     ["TEXT 2 is not valid UTF-8 (byte 1 is 0xff): give texts in UTF-8"]),
    ("predict", ["predict", "{dir}/empty-dir", "a", "--task", "rte", "--text-pair", "caf\udce9"],
     ["--text-pair 1 is not valid UTF-8 (byte 4 is 0xe9)"]),
    # ---- round 3: adapt, pairs, teachers
    ("data", ["data", "{tiny}", "--set", "tasks.topic.data={format: delimited, train: t.tsv, text_pair_column: label}"],
     ["--set tasks.topic.data={format: delimited, train: t.tsv, text_pair_column: label}: "
      "tasks[0].data.text_pair_column: 'label' is also the label column (label_column)"]),
    ("train", ["train", "{tiny}", "--set",
               "tasks.topic.data={format: delimited, train: t.tsv, text_column: s1, text_pair_column: s1}"],
     ["tasks[0].data.text_pair_column: 's1' is also the text column (text_column)", "paired with itself"]),
    ("data", ["data", "{tiny}", "--set", "tasks.topic.data={format: jsonl, train: t.jsonl, text_pair_field: label}"],
     ["tasks[0].data.text_pair_field: 'label' is also the label field (label_field)"]),
    ("train", ["train", "{tiny}", "--set", "tasks.topic.data={format: jsonl, train: t.jsonl, text_field: a, text_pair_field: a}"],
     ["tasks[0].data.text_pair_field: 'a' is also the text field (text_field)"]),
    ("data", ["data", "{tiny}", "--set", "tasks.topic.data={format: tfds, name: glue/rte, train: train, text_pair_feature: label}"],
     ["tasks[0].data.text_pair_feature: 'label' is also the label feature (label_feature)"]),
    ("compare", ["compare", "{tiny}", "--set",
                 "tasks.topic.data={format: tfds, name: glue/rte, train: train, text_feature: s, text_pair_feature: s}"],
     ["tasks[0].data.text_pair_feature: 's' is also the text feature (text_feature)"]),
    # ---- finetune: a multi-task run to start from, and one of its tasks
    ("finetune", ["finetune", "{dir}/nowhere"], ["required: --task"]),
    ("finetune", ["finetune", "{dir}/nowhere", "--task", "rte"], ["work dir not found"]),
    ("finetune", ["finetune", "{dir}/empty-dir", "--task", "rte"], ["no trained model here"]),
    ("finetune", ["finetune", "{dir}/nowhere", "--task", "rte", "--max-steps", "0"], ["--max-steps: must be >= 1"]),
    # ---- round 3: work dirs, disks, damaged models
    ("train", ["train", "{tiny}", "--set", "train.keep=best", "--set", "splits.dev_fraction=0",
               "--set", "tasks.topic.data.dev=null", "--set", "tasks.pos.data.dev=null"],
     ["--set train.keep=best: train.keep: best keeps the epoch with the best dev score, but no task has dev data",
      "splits.dev_fraction is 0"]),
    ("serve", ["serve", "{dir}/nowhere", "--dry-run", "--config-dir", "{dir}/serving-config"], ["does not exist"]),
]


def _argv(argv, root):
    out = []
    for arg in argv:
        arg = arg.replace("{dir}", str(root))
        out.append(re.sub(r"\{([a-z0-9_-]+)\}", lambda m: str(root / f"{m.group(1)}.yaml"), arg))
    return out


def invoke(argv):
    """(exit status, stdout, stderr) of `keras-mtl argv`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(code, err, command, fragments=()):
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"keras-mtl {command}: error: " if command else "keras-mtl: error: "
    assert lines[0].startswith(prefix), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_every_command_is_walked():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [app.command_name(module) for module in cli.COMMANDS]  # one module per command
    walked = {command for command, _, _ in BAD if command}
    assert walked == set(sub.choices) - {"bench"}  # bench hands its arguments to bench/run_all.py


@pytest.mark.parametrize("command, argv, fragments", BAD, ids=[" ".join(a) or "(none)" for _, a, _ in BAD])
def test_user_error_exits_2_with_one_error_line(paths, command, argv, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default work dirs (runs/...) land here, if anything runs at all
    code, out, err = invoke(_argv(argv, paths))
    assert_one_error_line(code, err, command, [f.replace("{dir}", str(paths)) for f in fragments])
    assert out == ""
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # refused before any work


def test_several_config_problems_give_one_error_line_each(paths, tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(TINY.replace("hidden_dim: 16", "hiden_dim: 16").replace("epochs: 1", "epochs: true"))
    code, _, err = invoke(["data", str(path)])
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert all(line.startswith(f"keras-mtl data: error: {path}:") for line in lines), err
    assert "model.hiden_dim" in lines[0] and "train.epochs" in lines[1]


def test_a_multi_line_message_never_spills_over(monkeypatch):
    from keras_mtl.errors import ModelError

    def fail(args):
        raise ModelError("first problem\n   second   problem\n\n")

    monkeypatch.setattr(evaluate_command, "run", fail)
    code, _, err = invoke(["evaluate", "x"])
    assert code == 2
    assert err.splitlines() == ["keras-mtl evaluate: error: first problem", "keras-mtl evaluate: error: second problem"]


def test_an_unreadable_user_path_is_a_user_error(monkeypatch, tmp_path):
    target = tmp_path / "wd"

    def fail(args):
        raise PermissionError(13, "Permission denied", str(target / "model.keras"))

    monkeypatch.setattr(evaluate_command, "run", fail)
    code, _, err = invoke(["evaluate", str(target)])
    assert_one_error_line(code, err, "evaluate", [f"{target / 'model.keras'}: Permission denied"])


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only user errors are one line: anything else is a bug to report, with its traceback."""

    def boom(args):
        raise RuntimeError("internal bug")

    monkeypatch.setattr(evaluate_command, "run", boom)
    with pytest.raises(RuntimeError, match="internal bug"):
        main(["evaluate", str(tmp_path)])

    def missing_internal_file(args):
        open("/nonexistent/keras_mtl/internal.txt")

    monkeypatch.setattr(evaluate_command, "run", missing_internal_file)
    with pytest.raises(FileNotFoundError):
        main(["evaluate", str(tmp_path)])


def test_startup_noise_is_dropped_and_other_stderr_kept(capfd):
    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796184939.008331    5528 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796184939.008616    5528 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
        "E0000 00:00:1796185010.132164    6088 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    )
    with app._captured_stderr():
        os.write(2, noise.encode())
        os.write(2, b"reading data/train.txt ...\n")
    assert capfd.readouterr().err == "reading data/train.txt ...\n"
    with pytest.raises(ImportError):
        with app._captured_stderr():
            os.write(2, noise.encode())
            raise ImportError("libcudart.so: cannot open shared object file")
    assert capfd.readouterr().err == noise  # a failed import shows everything


# ------------------------------------------------------------------ real processes


def _run(*argv, timeout=300, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_MTL_PROGRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", *map(str, argv)],
        capture_output=True, text=True, env=env, cwd=cwd or REPO, timeout=timeout,
    )


# A progress line of a slow step (keras_mtl.data.progress): allowed on stderr.
PROGRESS = re.compile(r"^.+( \.\.\.|: done in .+|: stopped in .+)$")


def _noise(stderr):
    """The stderr lines that are neither progress nor a keras-mtl message."""
    return [
        line for line in stderr.splitlines()
        if line.strip() and not PROGRESS.match(line.replace("\r", "")) and not line.startswith("keras-mtl")
    ]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["data", "--help"], ["search", "--help"]])
def test_help_is_quiet(argv):
    proc = _run(*argv, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: keras-mtl")


def test_data_on_the_demo_config_prints_nothing_on_stderr():
    proc = _run("data", "configs/demo.yaml")
    assert proc.returncode == 0, proc.stderr
    assert _noise(proc.stderr) == [], proc.stderr
    assert "Warning" not in proc.stderr and "WARNING" not in proc.stderr
    assert "task topic (classification)" in proc.stdout


def test_a_user_error_after_tensorflow_loaded_is_one_clean_line(tmp_path):
    """A data error is found after TensorFlow is imported: still exactly one line."""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine day\tpos\nbroken row without a tab\n")
    config = tmp_path / "bad-row.yaml"
    config.write_text(TINY.replace(
        "data: {format: demo, kind: topic, train: 24, dev: 8, test: 8}",
        "data: {format: delimited, train: train.tsv}",
    ).replace("type: classification", "type: classification\n    metrics: [accuracy]"))
    proc = _run("--backend", "tensorflow", "train", config, "--workdir", tmp_path / "wd", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("keras-mtl train: error: ") and "train.tsv:3" in lines[0], lines[0]


def test_a_short_train_prints_no_library_noise(tmp_path):
    """fit() on a tf.data dataset: no TensorFlow log lines, no Keras `shuffle=True` warning."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    proc = _run("train", config, "--workdir", tmp_path / "wd", "--max-steps", "1", "--quiet", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _noise(proc.stderr) == [], proc.stderr
    assert "shuffle" not in proc.stderr and "cuInit" not in proc.stderr and "cudart" not in proc.stderr
    assert "work dir:" in proc.stdout


def test_library_warnings_are_hidden_and_ours_kept(monkeypatch, recwarn):
    import warnings

    def warn(args):
        warnings.warn_explicit(
            "`shuffle=True` was passed, but will be ignored", UserWarning, "epoch_iterator.py", 74,
            module="keras.src.trainers.epoch_iterator",
        )
        warnings.warn_explicit("some deprecation", DeprecationWarning, "x.py", 1, module="tensorflow.python.x")
        warnings.warn("task 'topic': labels never seen in train", UserWarning)
        return 0

    monkeypatch.setattr(evaluate_command, "run", warn)
    assert main(["evaluate", "x"]) == 0
    assert [str(w.message) for w in recwarn] == ["task 'topic': labels never seen in train"]
    assert app._one_line_warning("a\n  b", UserWarning, "f.py", 1) == "keras-mtl: warning: a b\n"
