"""The `keras-mtl` command line: in-process for speed, one real subprocess for exit codes."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keras_mtl.cli import main

from helpers import cli_tiny_yaml

REPO = Path(__file__).resolve().parents[1]
SIZES = {"topic": (48, 16, 16), "pos": (24, 8, 8)}

TINY_YAML = cli_tiny_yaml(
    "cli-tiny", seed=0, metrics=["accuracy", "macro_f1"], topic=SIZES["topic"], vocabulary_size=150, epochs=2
)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(TINY_YAML, encoding="utf-8")
    workdir = root / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([
            "train", str(config), "--workdir", str(workdir),
            "--set", "train.batch_size=4", "--set", "tasks.topic.loss_weight=2",
            "--max-steps", "2", "--quiet",
        ])
    return {"root": root, "config": config, "workdir": workdir, "code": code, "stdout": stdout.getvalue()}


@pytest.fixture(scope="module")
def exported(cli_run):
    out = cli_run["root"] / "saved"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", str(cli_run["workdir"]), "--out", str(out)])
    return {"code": code, "stdout": stdout.getvalue(), "base": out}


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, command, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"keras-mtl {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------------ success paths


def test_data_json_has_per_task_split_counts(cli_run, capsys):
    code, out, _ = run_main(capsys, "data", cli_run["config"], "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["name"] == "cli-tiny"
    for task, (train, dev, test) in SIZES.items():
        splits = summary["tasks"][task]["splits"]
        assert {s: splits[s]["examples"] for s in splits} == {"train": train, "dev": dev, "test": test}
    assert summary["tasks"]["pos"]["type"] == "tagging"
    assert summary["tasks"]["topic"]["splits"]["train"]["labels"].keys() <= {"food", "sports", "tech", "weather"}


def test_data_text_and_set(cli_run, capsys):
    code, out, _ = run_main(capsys, "data", cli_run["config"], "--set", "tasks.topic.data.train=20")
    assert code == 0
    assert "task topic (classification)" in out
    assert "train      20 examples" in out


def test_train_with_set_and_max_steps(cli_run):
    assert cli_run["code"] == 0
    wd = cli_run["workdir"]
    assert f"work dir: {wd}" in cli_run["stdout"]
    assert "cli-tiny: test metrics" in cli_run["stdout"]  # report.md printed
    saved = yaml.safe_load((wd / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 4
    assert saved["tasks"][0]["loss_weight"] == 2.0
    info = json.loads((wd / "run.json").read_text())
    assert info["epochs"] * info["steps_per_epoch"] <= 2
    assert (wd / "model.keras").is_file() and (wd / "report.json").is_file()


def test_evaluate_json_prints_exactly_the_tasks(cli_run, capsys):
    code, out, _ = run_main(capsys, "evaluate", cli_run["workdir"], "--json")
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["tasks"]
    assert set(result["tasks"]) == {"topic", "pos"}
    assert set(result["tasks"]["topic"]) == {"accuracy", "macro_f1"}
    assert set(result["tasks"]["pos"]) == {"token_accuracy"}
    report = json.loads((cli_run["workdir"] / "report.json").read_text())
    for task, values in report["tasks"].items():
        assert result["tasks"][task] == pytest.approx(values)


def test_evaluate_markdown_on_dev(cli_run, capsys):
    code, out, _ = run_main(capsys, "evaluate", cli_run["workdir"], "--split", "dev")
    assert code == 0
    assert "dev metrics" in out and "| topic | accuracy |" in out and "| 16 |" in out


def test_export_prints_the_version_dir(exported):
    assert exported["code"] == 0
    printed = exported["stdout"].strip()
    assert printed == str(exported["base"] / "1")
    assert (Path(printed) / "saved_model.pb").is_file()


def test_predict_prints_one_json_object_per_text(exported, capsys):
    texts = ["the chef cooked a soup .", "a storm fell ."]
    code, out, _ = run_main(capsys, "predict", exported["base"], *texts)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(texts)
    for text, line in zip(texts, lines):
        pred = json.loads(line)
        assert set(pred) == {"topic", "pos", "_meta"}
        assert pred["topic"]["label"] in {"food", "sports", "tech", "weather"}
        assert set(pred["topic"]["probabilities"]) == {"food", "sports", "tech", "weather"}
        assert len(pred["pos"]["tags"]) == len(text.split())
        assert pred["_meta"] == {"num_words": len(text.split()), "truncated": False, "windows": 1}


# ------------------------------------------------------------------ user errors


def test_missing_config(tmp_path, capsys):
    code, _, err = run_main(capsys, "train", tmp_path / "nope.yaml", "--workdir", tmp_path / "wd")
    assert_user_error(code, err, "train", "nope.yaml", "not found")
    assert not (tmp_path / "wd").exists()
    code, _, err = run_main(capsys, "data", tmp_path / "nope.yaml")
    assert_user_error(code, err, "data", "not found")


def test_bad_set_value(cli_run, tmp_path, capsys):
    code, _, err = run_main(capsys, "train", cli_run["config"], "--workdir", tmp_path / "wd",
                            "--set", "train.batch_size=0")
    assert_user_error(code, err, "train", "train.batch_size", "greater than or equal to 1")
    assert not (tmp_path / "wd").exists()


def test_bad_set_field(cli_run, tmp_path, capsys):
    code, _, err = run_main(capsys, "train", cli_run["config"], "--workdir", tmp_path / "wd",
                            "--set", "train.batch_sise=4")
    assert_user_error(code, err, "train", "no such field", "did you mean 'batch_size'?")


def test_export_of_an_empty_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(capsys, "export", tmp_path / "empty", "--out", tmp_path / "saved")
    assert_user_error(code, err, "export", "no trained model here")
    assert out == ""


def test_predict_on_a_dir_that_is_not_a_saved_model(cli_run, capsys):
    code, out, err = run_main(capsys, "predict", cli_run["workdir"], "some text")
    assert_user_error(code, err, "predict", "not a SavedModel")
    assert out == ""


def test_evaluate_of_a_missing_workdir(tmp_path, capsys):
    code, _, err = run_main(capsys, "evaluate", tmp_path / "nowhere", "--json")
    assert_user_error(code, err, "evaluate", "work dir not found")


def test_usage_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "keras-mtl: error: argument COMMAND: invalid choice: 'fly' (choose from 'train', 'finetune', 'evaluate', "
        "'export', 'predict', 'data', 'prepare', 'serve', 'compare', 'meta-train', 'adapt', 'search', 'bench') "
        "(see 'keras-mtl --help')"
    ]
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "keras-mtl train: error: the following arguments are required: config (see 'keras-mtl train --help')"
    ]


def test_verbose_before_or_after_the_command():
    from keras_mtl import cli

    parser = cli.build_parser()
    assert parser.parse_args(["data", "c.yaml"]).verbose is False
    assert parser.parse_args(["--verbose", "data", "c.yaml"]).verbose is True
    assert parser.parse_args(["data", "c.yaml", "--verbose"]).verbose is True
    assert parser.parse_args(["-v", "train", "c.yaml", "--quiet"]).verbose is True


def test_console_entry_exit_code_and_clean_error(tmp_path):
    """The real entry point: exit status 2, one `error:` line, no traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "data", str(tmp_path / "missing.yaml"), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"keras-mtl data: error: {tmp_path / 'missing.yaml'}: config file not found"
    ]
    assert proc.stdout == ""


# ------------------------------------------------------------------ the cli package


def test_every_command_module_has_the_same_shape():
    """One way for every command: HELP (one line), add_arguments(parser), run(args)."""
    import argparse

    from keras_mtl import cli
    from keras_mtl.cli import app

    names = [app.command_name(m) for m in cli.COMMANDS]
    assert names == ["train", "finetune", "evaluate", "export", "predict", "data", "prepare", "serve", "compare",
                     "meta-train", "adapt", "search", "bench"]
    for module in cli.COMMANDS:
        assert isinstance(module.HELP, str) and module.HELP and "\n" not in module.HELP, module.__name__
        assert callable(module.add_arguments) and callable(module.run), module.__name__
        module.add_arguments(argparse.ArgumentParser())  # stands alone, too


def test_bench_hands_every_argument_on():
    from keras_mtl import cli

    args = cli.build_parser().parse_args(["bench", "--tiny", "--only", "machine", "--help"])
    assert args.bench_args == ["--tiny", "--only", "machine", "--help"]


def test_parsing_imports_neither_tensorflow_nor_keras():
    """`--help` and argument errors answer before TensorFlow/Keras is imported (start-up time)."""
    code = (
        "import sys\n"
        "from keras_mtl.cli import build_parser, main\n"
        "build_parser().parse_args(['train', 'c.yaml'])\n"
        "try:\n"
        "    main(['search', 'c.yaml', '--trials', '0'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 2\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "assert heavy == [], heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "keras-mtl search: error: argument --trials: must be >= 1, got 0 (see 'keras-mtl search --help')"
    ]


def test_python_m_keras_mtl_compare_is_the_compare_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.compare", str(tmp_path / "missing.yaml"), "--seeds", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "keras-mtl compare: error: argument --seeds: must be >= 1, got 0 (see 'keras-mtl compare --help')"
    ]
    proc = subprocess.run([sys.executable, "-m", "keras_mtl.compare", "--help"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: keras-mtl compare"), proc.stderr


@pytest.mark.slow
def test_predict_into_a_closed_pipe_stops_quietly(tiny_run, tmp_path):
    # `keras-mtl predict ... | head -1`: no BrokenPipeError traceback.
    import subprocess
    import sys

    from keras_mtl.serving.export import export

    version = export(tiny_run["workdir"], out=tmp_path / "m", warmup=False)
    texts = ["a b c ."] * 3000
    (tmp_path / "in.jsonl").write_text("".join('{"text": "%s"}\n' % t for t in texts), encoding="utf-8")
    shell = (
        f"{sys.executable} -m keras_mtl.cli predict {version} --input {tmp_path / 'in.jsonl'} --batch-size 500"
        " | head -1"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
