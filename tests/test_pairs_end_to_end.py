"""Sentence pairs from a config to a served answer, and the per-task signatures.

The session's `tiny_pair_run` (conftest.py: pair tasks `nli` and `sts` and the
single-text `topic`, `task_conditioning: embedding`) and a `none` variant are
exported; the SavedModels are loaded in one subprocess that can import only
TensorFlow and the TF Text op libraries (`serve_without_keras`, what TF
Serving has), which calls each signature. Its answers must equal the Keras
model of the run within 1e-5.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONDITIONINGS = ("embedding", "none")
LONG = " ".join(["the big red cat sat on the mat"] * 3)  # > 16 pieces: cut longest-first
TEXTS = ["the cat sat on the mat", "a dog ran", LONG, "Zebra \u00fcber caf\u00e9 \U0001f600"]
PAIRS = ["the cat sat", "", "a small bird", LONG]
SINGLE = ["the chef cooked a soup .", "a terrible storm fell suddenly ."]
SIGNATURES = ["nli", "serve_tokens", "serving_default", "sts", "topic"]


def calls():
    pair = {"text": TEXTS, "text_pair": PAIRS}
    return [
        {"signature": "nli", "inputs": pair},
        {"signature": "sts", "inputs": pair},
        {"signature": "topic", "inputs": {"text": SINGLE}},
        {"signature": "nli", "inputs": {"text": TEXTS}},  # no text_pair: refused
        {"signature": "nli", "inputs": {"text": TEXTS, "text_pair": PAIRS[:2]}},  # 4 texts, 2 pairs
    ]


@pytest.fixture(scope="module")
def pairs_e2e(tiny_pair_run, train_tiny_pairs, serve_without_keras, tmp_path_factory):
    from keras_mtl.serving.export import export

    runs = {}
    for cond in CONDITIONINGS:
        root = tmp_path_factory.mktemp(f"pairs-{cond}")
        run = tiny_pair_run if cond == "embedding" else train_tiny_pairs(cond, root)
        runs[cond] = {**run, "version": export(run["workdir"], out=root / "saved")}
    only_nli = export(tiny_pair_run["workdir"], out=tmp_path_factory.mktemp("only-nli") / "saved", tasks="nli")
    dirs = [r["version"] for r in runs.values()] + [only_nli]
    served = serve_without_keras(dirs, SINGLE, calls=calls())
    for r in runs.values():
        r["served"] = served[str(r["version"])]
    return {"runs": runs, "only_nli": only_nli, "only_nli_served": served[str(only_nli)],
            "modules": served["modules"]}


def keras_answers(workdir, texts, pairs=None):
    """{task: the Keras model's output} on texts (or pairs), each task run with its own id."""
    import tensorflow as tf

    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.run import load_run

    run = load_run(workdir)
    model = run.load_model()
    encoder = make_encoder(run.vocabulary, run.config.model)
    enc = encoder(tf.constant(texts)) if pairs is None else encoder(tf.constant(texts), tf.constant(pairs))
    ids = enc["token_ids"].to_tensor(default_value=encoder.pad_id).numpy()
    x = {"token_ids": ids, "padding_mask": ids != encoder.pad_id}
    out = {}
    for t, name in enumerate(run.config.task_names):
        feed = {**x, "task_ids": np.full([len(texts)], t, np.int32)} if run.config.model.sees_task else x
        out[name] = np.asarray(model.predict_on_batch(feed)[name])
    return out, enc, run


def test_served_without_keras_or_keras_mtl(pairs_e2e):
    assert pairs_e2e["modules"] == [], f"imported in the serving process: {pairs_e2e['modules']}"


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_every_task_has_its_signature(pairs_e2e, cond):
    served = pairs_e2e["runs"][cond]["served"]
    assert served["signatures"] == SIGNATURES
    nli, sts, topic = served["calls"][:3]
    assert nli["inputs"] == sts["inputs"] == ["text", "text_pair"]
    assert topic["inputs"] == ["text"]
    # serving_default keeps the single-text tasks (here: topic), from `text`
    assert served["inputs"] == ["text"]
    assert set(served["outputs"]) == {"topic_label", "topic_probabilities", "topic_classes", "num_words", "truncated", "windows"}
    assert set(nli["outputs"]) == {"nli_label", "nli_probabilities", "nli_classes", "num_words", "truncated", "windows"}
    assert set(sts["outputs"]) == {"sts_value", "num_words", "truncated", "windows"}


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_pair_signatures_equal_the_keras_model(pairs_e2e, cond):
    r = pairs_e2e["runs"][cond]
    expected, enc, run = keras_answers(r["workdir"], TEXTS, PAIRS)
    nli, sts = r["served"]["calls"][:2]
    np.testing.assert_allclose(nli["outputs"]["nli_probabilities"], expected["nli"], atol=1e-5)
    np.testing.assert_allclose(sts["outputs"]["sts_value"], expected["sts"].reshape(-1), atol=1e-5)
    classes = run.classes["nli"]
    assert nli["outputs"]["nli_label"] == [classes[i] for i in expected["nli"].argmax(-1)]
    assert nli["outputs"]["truncated"] == enc["truncated"].numpy().tolist() == [False, False, True, True]
    assert nli["outputs"]["num_words"] == [len(t.split()) for t in TEXTS]


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_a_single_text_task_signature_equals_serving_default_and_keras(pairs_e2e, cond):
    r = pairs_e2e["runs"][cond]
    expected, _, _ = keras_answers(r["workdir"], SINGLE)
    topic = r["served"]["calls"][2]["outputs"]
    np.testing.assert_allclose(topic["topic_probabilities"], expected["topic"], atol=1e-5)
    np.testing.assert_allclose(r["served"]["outputs"]["topic_probabilities"], expected["topic"], atol=1e-5)


def test_bad_pair_requests_are_refused(pairs_e2e):
    no_pair, mismatch = pairs_e2e["runs"]["embedding"]["served"]["calls"][3:]
    assert "text_pair" in no_pair["error"]
    assert "text and text_pair must hold as many strings" in mismatch["error"]


def test_export_of_some_tasks_keeps_only_their_heads(pairs_e2e):
    served = pairs_e2e["only_nli_served"]
    assert served["signatures"] == ["nli", "serve_tokens", "serving_default"]
    # no single-text task left: serving_default is the pair tasks' (text, text_pair)
    assert served["inputs"] == ["text", "text_pair"]
    nli = served["calls"][0]
    full = pairs_e2e["runs"]["embedding"]["served"]["calls"][0]
    np.testing.assert_allclose(nli["outputs"]["nli_probabilities"], full["outputs"]["nli_probabilities"], atol=1e-6)
    assert [c.get("error", "")[:20] for c in served["calls"][1:3]] == ["KeyError: 'sts'"[:20], "KeyError: 'topic'"[:20]]
    meta = json.loads((pairs_e2e["only_nli"] / "assets.extra" / "keras_mtl.json").read_text())
    assert list(meta["tasks"]) == ["nli"] and meta["serving_default"] == ["nli"]
    assert meta["tasks"]["nli"]["inputs"] == ["text", "text_pair"]


def test_metadata_names_each_signature_inputs(pairs_e2e):
    version = pairs_e2e["runs"]["embedding"]["version"]
    meta = json.loads((version / "assets.extra" / "keras_mtl.json").read_text())
    assert {name: t["inputs"] for name, t in meta["tasks"].items()} == {
        "topic": ["text"], "nli": ["text", "text_pair"], "sts": ["text", "text_pair"]}
    assert meta["serving_default"] == ["topic"]


def test_warmup_requests_cover_every_signature(pairs_e2e):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api writes the warmup records")
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    version = pairs_e2e["runs"]["embedding"]["version"]
    requests = {}
    for record in tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests")):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        requests[request.model_spec.signature_name] = sorted(request.inputs)
    assert requests == {"serving_default": ["text"], "topic": ["text"], "nli": ["text", "text_pair"],
                        "sts": ["text", "text_pair"]}


def test_the_pair_model_reads_segments_off_the_separator(pairs_e2e):
    from keras_mtl.run import load_run

    model = load_run(pairs_e2e["runs"]["embedding"]["workdir"]).load_model()
    encoder = model.get_layer("shared_encoder")
    assert encoder.segment_ids is not None and encoder.segment_ids.name == "segment_ids"
    assert encoder.segment_embedding is not None and encoder.segment_embedding.name == "segment_embedding"
    assert encoder.segment_embedding.get_weights()[0].shape[0] == 2


def test_a_single_text_model_has_no_segment_layers_and_one_signature_per_task(tiny_run, serve_without_keras,
                                                                              tmp_path):
    """serving_default of an all-single-text model is what it was: `text` -> every task."""
    from keras_mtl.serving.export import export
    from keras_mtl.run import load_run

    model = load_run(tiny_run["workdir"]).load_model()
    encoder = model.get_layer("shared_encoder")
    assert encoder.segment_ids is None and encoder.segment_embedding is None
    version = export(tiny_run["workdir"], out=tmp_path / "saved")
    served = serve_without_keras([version], SINGLE, calls=[{"signature": "pos", "inputs": {"text": SINGLE}}])
    answer = served[str(version)]
    assert answer["signatures"] == ["pos", "sentiment", "serve_tokens", "serving_default", "topic"]
    assert answer["inputs"] == ["text"]
    assert {"topic_label", "sentiment_label", "pos_tags", "num_words", "truncated"} <= set(answer["outputs"])
    assert answer["calls"][0]["outputs"]["pos_tags"] == answer["outputs"]["pos_tags"]


def test_export_cli_rejects_an_unknown_task(tiny_pair_run, subprocess_env, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "export", str(tiny_pair_run["workdir"]), "--out",
         str(tmp_path / "saved"), "--tasks", "nli,nope"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "keras-mtl export: error: tasks (--tasks): no task 'nope'; the run's tasks are topic, nli, sts"]
    assert not (tmp_path / "saved").exists()
