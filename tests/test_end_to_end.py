"""YAML -> train -> work dir -> evaluate -> SavedModel -> served without Keras.

One tiny demo-based run per task-conditioning mode (the session's `tiny_run`
of conftest.py for `embedding`) is exported once for the module; the
SavedModels are then loaded in ONE subprocess that runs with `keras`,
`keras_hub`, `keras_mtl` and `jax` blocked from importing and only the TF
Text op libraries loaded (what TF Serving has: `serve_without_keras`), and
its outputs are checked against the Keras model of the run.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONDITIONINGS = ("embedding", "none")
MAX_LEN = 16  # the tiny run's model.max_sequence_length (conftest.py)
TASKS = ("topic", "sentiment", "pos")
LONG_TEXT = " ".join(["the lovely striker scored a goal ."] * 4)  # 28 words > MAX_LEN pieces
TEXTS = [
    "the chef cooked a soup .",
    "",
    LONG_TEXT,
    "a terrible storm fell suddenly .",
    "Zebra \u00fcber caf\u00e9 \U0001f600 .",
]


@pytest.fixture(scope="module")
def e2e(tiny_run, train_tiny, serve_without_keras, tmp_path_factory):
    from keras_mtl.serving.export import export
    from keras_mtl.serving.layout import version_dirs

    runs = {}
    for cond in CONDITIONINGS:
        root = tmp_path_factory.mktemp(f"e2e-{cond}")
        run = tiny_run if cond == "embedding" else train_tiny(cond, root)  # the session's run: not written into
        base = root / "saved"
        first = export(run["workdir"], out=base)
        runs[cond] = {**run, "base": base, "first": first, "versions_after_first": version_dirs(base)}
    # Versioning: a second export of the same run is version 2; --keep 1 prunes 1.
    main = runs["embedding"]
    main["second"] = export(main["workdir"], out=main["base"], keep=1)
    main["versions_after_second"] = version_dirs(main["base"])
    latest = {cond: (r.get("second") or r["first"]) for cond, r in runs.items()}
    served = serve_without_keras(list(latest.values()), TEXTS, empty_batch=True)
    for cond, r in runs.items():
        r["version_dir"] = latest[cond]
        r["served"] = served[str(latest[cond])]
    return {"runs": runs, "modules": served["modules"]}


@pytest.fixture(scope="module")
def keras_outputs(e2e):
    """Each run's Keras model (model.keras) on TEXTS, encoded as the run encodes."""
    import tensorflow as tf

    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.run import load_run

    result = {}
    for cond, r in e2e["runs"].items():
        run = load_run(r["workdir"])
        model = run.load_model()
        encoder = make_encoder(run.vocabulary, run.config.model)
        enc = encoder(tf.constant(TEXTS))
        ids = enc["token_ids"].to_tensor(default_value=encoder.pad_id).numpy()
        x = {"token_ids": ids, "padding_mask": ids != encoder.pad_id}
        probs = {}
        if run.config.model.sees_task:
            for t, name in enumerate(run.config.task_names):
                out = model.predict_on_batch({**x, "task_ids": np.full([len(TEXTS)], t, np.int32)})
                probs[name] = np.asarray(out[name])
        else:
            out = model.predict_on_batch(x)
            probs = {name: np.asarray(out[name]) for name in run.config.task_names}
        # Every word's tag as evaluation reads it (a long text in windows: keras_mtl.data.windows).
        from keras_mtl.data.example import Example
        from keras_mtl.evaluation import predict_split

        examples = [Example(t, {"pos": ("X",) * len(t.split())}) for t in TEXTS]
        tags = dict(zip(*predict_split(model, run.encode(examples), run.config, run.classes, encoder.pad_id)["pos"]))
        result[cond] = {
            "run": run,
            "probs": probs,
            "ids": ids,
            "word_starts": enc["word_starts"].to_list(),
            "truncated": enc["truncated"].numpy().tolist(),
            "tags": [list(tags[i]) for i in range(len(TEXTS))],
        }
    return result


# ------------------------------------------------------------------ the work dir


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_work_dir_holds_every_file(e2e, cond):
    wd = e2e["runs"][cond]["workdir"]
    for name in ("config.yaml", "vocab.txt", "run.json", "model.keras", "metrics.csv", "report.json", "report.md"):
        assert (wd / name).is_file(), name
    assert (wd / "logs").is_dir() and any((wd / "logs").rglob("*"))
    assert not (wd / "backup").exists(), "BackupAndRestore state is removed after training"
    info = json.loads((wd / "run.json").read_text())
    assert info["backend"] == "tensorflow"
    assert info["classes"]["sentiment"] == ["negative", "positive"]
    assert info["epochs"] * info["steps_per_epoch"] <= 3
    assert info["max_sequence_length"] == MAX_LEN
    vocab = (wd / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_metrics_csv_has_per_task_dev_columns(e2e):
    wd = e2e["runs"]["embedding"]["workdir"]
    with open(wd / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    for column in ("dev_topic_accuracy", "dev_topic_macro_f1", "dev_sentiment_accuracy", "dev_pos_token_accuracy"):
        assert column in rows[0], column
        assert 0.0 <= float(rows[0][column]) <= 1.0
    assert "train_loss" in rows[0]


def test_report_has_every_task(e2e):
    r = e2e["runs"]["embedding"]
    wd = r["workdir"]
    report = json.loads((wd / "report.json").read_text())
    assert report == json.loads(json.dumps(r["report"]))
    assert set(report["tasks"]) == set(TASKS)
    assert set(report["tasks"]["topic"]) == {"accuracy", "macro_f1"}
    assert report["examples"] == {"topic": 16, "sentiment": 16, "pos": 16}
    md = (wd / "report.md").read_text()
    for task in TASKS:
        assert f"| {task} |" in md


def test_saved_config_reloads_identically(e2e):
    from keras_mtl.config import config_from_dict, load_config

    r = e2e["runs"]["embedding"]
    assert load_config(r["workdir"] / "config.yaml").config == config_from_dict(r["config"]).config


def test_evaluate_run_gives_per_task_metrics(e2e):
    from keras_mtl.evaluation import evaluate_run

    r = e2e["runs"]["embedding"]
    result = evaluate_run(r["workdir"])
    assert set(result["tasks"]) == set(TASKS)
    assert set(result["tasks"]["topic"]) == {"accuracy", "macro_f1"}
    for task, values in result["tasks"].items():
        for metric, value in values.items():
            assert 0.0 <= value <= 1.0, (task, metric)
    # The test split is what training reported on: the same numbers.
    for task in TASKS:
        for metric, value in result["tasks"][task].items():
            assert value == pytest.approx(r["report"]["tasks"][task][metric], abs=1e-9)
    dev = evaluate_run(r["workdir"], split="dev")
    assert dev["examples"] == {"topic": 16, "sentiment": 16, "pos": 16}


def test_evaluation_silences_only_the_expected_retracing_warning(e2e):
    import logging

    from keras_mtl import evaluation

    evaluation.evaluate_run(e2e["runs"]["embedding"]["workdir"], split="dev")
    tf_logger = logging.getLogger("tensorflow")
    assert evaluation._RETRACING_FILTER in tf_logger.filters
    assert tf_logger.filters.count(evaluation._RETRACING_FILTER) == 1  # installed once, however often called

    def record(msg):
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, msg, None, None)

    retracing = ("5 out of the last 57 calls to <function TensorFlowTrainer.make_predict_function.<locals>."
                 "one_step_on_data_distributed at 0x7f> triggered tf.function retracing. Tracing is expensive")
    assert not evaluation._RETRACING_FILTER.filter(record(retracing))
    assert evaluation._RETRACING_FILTER.filter(record("some other TensorFlow warning"))


# ------------------------------------------------------------------ export


def test_export_versions_and_keep(e2e):
    r = e2e["runs"]["embedding"]
    base = r["base"]
    assert r["first"] == base / "1"
    assert r["versions_after_first"] == [1]
    assert r["second"] == base / "2"
    assert r["versions_after_second"] == [2], "--keep 1 prunes version 1"
    assert sorted(p.name for p in base.iterdir()) == ["2"], "no .tmp-* directory may remain"
    version = base / "2"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables").is_dir()
    meta = json.loads((version / "assets.extra" / "keras_mtl.json").read_text())
    assert {name: spec["type"] for name, spec in meta["tasks"].items()} == {
        "topic": "classification", "sentiment": "classification", "pos": "tagging"}
    assert meta["max_sequence_length"] == MAX_LEN
    assert meta["task_conditioning"] == "embedding"


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_no_tmp_dirs_remain(e2e, cond):
    base = e2e["runs"][cond]["base"]
    assert not [p for p in base.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_empty_batch_gives_empty_outputs(e2e, cond):
    shapes = e2e["runs"][cond]["served"]["empty_batch_shapes"]
    assert isinstance(shapes, dict), f"an empty batch failed in the signature: {shapes}"
    assert shapes and all(shape[0] == 0 for shape in shapes.values()), shapes


def test_served_without_keras_or_keras_mtl(e2e):
    assert e2e["modules"] == [], f"imported in the serving process: {e2e['modules']}"


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_signature_and_output_layout(e2e, cond):
    served = e2e["runs"][cond]["served"]
    assert "serving_default" in served["signatures"] and "serve_tokens" in served["signatures"]
    assert served["inputs"] == ["text"]
    out = served["outputs"]
    expected = {"num_words", "truncated", "windows", "pos_tags"}
    for task in ("topic", "sentiment"):
        expected |= {f"{task}_label", f"{task}_probabilities", f"{task}_classes"}
    assert set(out) == expected
    for name, value in out.items():
        assert len(value) == len(TEXTS), f"{name}: batch must be dim 0"
    assert served["dtypes"]["topic_probabilities"] == "float32"
    assert served["dtypes"]["num_words"] == "int32"
    assert served["dtypes"]["truncated"] == "bool"
    assert out["topic_classes"][0] == ["food", "sports", "tech", "weather"]
    assert out["num_words"] == [len(t.split()) for t in TEXTS]
    assert out["truncated"][1:3] == [False, True]  # "" and the long text (cut for topic and sentiment)
    assert out["windows"][1] == 1 and out["windows"][2] > 1  # the long text's tags come from windows
    assert all(len(row) == max(len(t.split()) for t in TEXTS) for row in out["pos_tags"])
    assert out["pos_tags"][1] == [""] * len(out["pos_tags"][1])  # the empty text has no words


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_served_probabilities_equal_the_keras_model(e2e, keras_outputs, cond):
    out = e2e["runs"][cond]["served"]["outputs"]
    k = keras_outputs[cond]
    for task in ("topic", "sentiment"):
        served = np.asarray(out[f"{task}_probabilities"], np.float32)
        np.testing.assert_allclose(served, k["probs"][task], atol=1e-5, err_msg=f"{cond}/{task}")
        np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)
        classes = k["run"].classes[task]
        assert out[f"{task}_label"] == [classes[i] for i in k["probs"][task].argmax(axis=1)]


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_served_tags_are_the_argmax_at_first_pieces(e2e, keras_outputs, cond):
    out = e2e["runs"][cond]["served"]["outputs"]
    k = keras_outputs[cond]
    classes = k["run"].classes["pos"]
    probs, length = k["probs"]["pos"], k["ids"].shape[1]
    width = len(out["pos_tags"][0])
    for i, starts in enumerate(k["word_starts"]):
        if TEXTS[i] == LONG_TEXT:
            continue
        expected = [classes[int(np.argmax(probs[i, s]))] if s < length else "" for s in starts]
        expected += [""] * (width - len(expected))
        assert out["pos_tags"][i] == expected, TEXTS[i]
    # The long text: every word gets a tag, read in windows as evaluation reads it.
    n_words = len(LONG_TEXT.split())
    long_tags = out["pos_tags"][2][:n_words]
    assert "" not in long_tags and long_tags == k["tags"][2]
    assert [row[: len(t.split())] for row, t in zip(out["pos_tags"], TEXTS)] == k["tags"]
    assert out["truncated"] == k["truncated"]  # topic and sentiment read the long text cut, as before
    assert k["truncated"][1:3] == [False, True]


def test_saved_model_cli_lists_the_signature(e2e):
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"{cli} not found")
    version = e2e["runs"]["embedding"]["version_dir"]
    proc = subprocess.run(
        [str(cli), "show", "--dir", str(version), "--all"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signature_def['serving_default']" in proc.stdout
    section = proc.stdout.split("signature_def['serving_default']")[1]
    assert "inputs['text']" in section and "DT_STRING" in section
    assert "outputs['pos_tags']" in section


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_predict_equals_the_served_outputs(e2e, cond):
    from keras_mtl.serving.layout import read_metadata
    from keras_mtl.serving.predict import predict
    from keras_mtl.serving.outputs import outputs_to_predictions

    r = e2e["runs"][cond]
    meta = read_metadata(r["version_dir"])
    expected = outputs_to_predictions(r["served"]["outputs"], meta["tasks"])
    got = predict(r["base"], TEXTS)  # the base dir: its newest version
    assert got == expected
    assert set(got[0]) == set(TASKS) | {"_meta"}
    assert got[2]["_meta"] == {"num_words": len(LONG_TEXT.split()), "truncated": True, "windows": got[2]["_meta"]["windows"]}
    assert got[2]["_meta"]["windows"] > 1 and "" not in got[2]["pos"]["tags"]
    assert got[1]["pos"] == {"tags": []}
    assert len(got[0]["pos"]["tags"]) == len(TEXTS[0].split())


# ------------------------------------------------------------------ errors


def test_export_of_a_dir_without_a_trained_model(tmp_path, e2e):
    from keras_mtl.errors import ModelError
    from keras_mtl.serving.export import export

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no trained model here"):
        export(empty, out=tmp_path / "out")
    with pytest.raises(ModelError, match="work dir not found"):
        export(tmp_path / "missing", out=tmp_path / "out")
    # A run whose model.keras is gone (training interrupted).
    partial = tmp_path / "partial"
    partial.mkdir()
    wd = e2e["runs"]["embedding"]["workdir"]
    for name in ("config.yaml", "vocab.txt", "run.json"):
        (partial / name).write_bytes((wd / name).read_bytes())
    with pytest.raises(ModelError, match="missing model.keras"):
        export(partial, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_predict_on_a_dir_that_is_not_a_saved_model(tmp_path, e2e):
    from keras_mtl.errors import ModelError
    from keras_mtl.serving.predict import predict

    with pytest.raises(ModelError, match="not a SavedModel"):
        predict(e2e["runs"]["embedding"]["workdir"], ["a text"])  # a work dir, not an export
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match="not a SavedModel"):
        predict(tmp_path / "junk", ["a text"])
    with pytest.raises(ModelError, match="not found"):
        predict(tmp_path / "missing", ["a text"])
