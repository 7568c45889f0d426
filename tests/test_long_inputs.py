"""Long texts end to end (issue 28): a 5,000-word text on a model of 32 pieces gets a tag
for every word from `predict`, from the SavedModel loaded by TensorFlow alone (what TF
Serving runs) and from evaluation, and their answers agree within 1e-5; on TensorFlow
and on JAX. The window rule itself is tests/data/test_windows.py."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCE = "the brilliant chef cooked quickly near the old kitchen ."
LONG = " ".join([SENTENCE] * 500)  # 5,000 words
TEXTS = [LONG, SENTENCE, "", "a terrible storm fell suddenly ."]
VARIANTS = {  # model settings of the three runs
    "defaults": {"task_conditioning": "embedding"},  # window_merge: mean, long_inputs: truncate
    "central-windows": {"task_conditioning": "none", "window_merge": "central", "long_inputs": "windows"},
    "head-tail": {"task_conditioning": "none", "long_inputs": "head_tail", "window_stride": 5},
}


def _keras_answers(workdir, texts):
    """Evaluation's reading of `texts` (keras_mtl.evaluation.predict_split): tags and probabilities."""
    from keras_mtl.data.example import Example
    from keras_mtl.evaluation import predict_split
    from keras_mtl.run import load_run

    run = load_run(workdir)
    model, encoder = run.load_model(), run.encoder()
    topic = run.classes["topic"][0]
    examples = [Example(t, {"pos": ("X",) * len(t.split()), "topic": topic}) for t in texts]
    split = run.encode(examples, encoder=encoder)
    tags = dict(zip(*predict_split(model, split, run.config, run.classes, encoder.pad_id)["pos"]))
    raw = dict(zip(*predict_split(model, split, run.config, run.classes, encoder.pad_id, raw=True)["topic"]))
    return {"tags": [list(tags[i]) for i in range(len(texts))],
            "topic": [raw[i]["topic"][0].tolist() for i in range(len(texts))],
            "windows": split.num_windows.tolist()}


@pytest.fixture(scope="module")
def long_runs(tiny_config, tmp_path_factory):
    from keras_mtl.config import config_from_dict
    from keras_mtl.serving.export import export
    from keras_mtl.training import train

    runs = {}
    for name, model in VARIANTS.items():
        root = tmp_path_factory.mktemp(f"long-{name}")
        config = tiny_config(name=f"long-{name}", tasks=("topic", "pos"), bucket_lengths=[16, 32])
        config["model"].update(max_sequence_length=32, **model)
        train(config_from_dict(config), workdir=root / "run", max_steps=3, verbose=0)
        runs[name] = {"workdir": root / "run", "version": export(root / "run", out=root / "saved", warmup=False)}
    return runs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_word_of_a_5000_word_text_is_tagged_alike_by_keras_and_the_export(long_runs, variant,
                                                                                  serve_without_keras):
    from keras_mtl.serving.predict import predict

    run = long_runs[variant]
    keras = _keras_answers(run["workdir"], TEXTS)
    served = serve_without_keras([run["version"]], TEXTS, calls=[{"signature": "pos", "inputs": {"text": TEXTS}}])
    assert served["modules"] == []
    out = served[str(run["version"])]["outputs"]
    assert out["num_words"] == [len(t.split()) for t in TEXTS] and out["num_words"][0] == 5000
    tags = [row[:n] for row, n in zip(out["pos_tags"], out["num_words"])]
    assert "" not in tags[0], "no word is left without a tag"
    assert tags == keras["tags"]
    np.testing.assert_allclose(out["topic_probabilities"], keras["topic"], atol=1e-5, rtol=0)
    assert out["windows"] == keras["windows"] and out["windows"][0] > 300 and out["windows"][2:] == [1, 1]
    # truncated: something was dropped; only a sentence task reading a long text cut does that
    cut = VARIANTS[variant].get("long_inputs", "truncate") != "windows"
    assert out["truncated"] == [cut and n > 1 for n in keras["windows"]] and out["truncated"][0] == cut
    pos_only = served[str(run["version"])]["calls"][0]["outputs"]
    assert pos_only["pos_tags"] == out["pos_tags"] and pos_only["truncated"] == [False] * 4
    # keras-mtl predict (the local signature, the REST/gRPC decoder): every tag, `_meta` with the windows
    answer = predict(run["version"], TEXTS[:2])
    assert answer[0]["pos"]["tags"] == tags[0] and answer[0]["_meta"]["windows"] == out["windows"][0]
    assert answer[1]["_meta"] == {"num_words": 10, "truncated": out["truncated"][1], "windows": out["windows"][1]}


def test_a_long_text_costs_about_its_windows(long_runs):
    """A 10-window text against a 1-window one, in one process (bench/serving.py measures it properly)."""
    import time

    import tensorflow as tf

    from keras_mtl.serving.predict import load_signature

    _, fn, _ = load_signature(long_runs["defaults"]["version"])
    words = LONG.split()
    one = tf.constant([" ".join(words[:5])])
    assert int(fn(text=one)["windows"][0]) == 1
    ten = next(t for n in range(5, 400) for t in [tf.constant([" ".join(words[:n])])] if fn(text=t)["windows"][0] == 10)

    def best(text, n=15):
        fn(text=text)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn(text=text)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best(ten) < 12 * best(one) + 0.01  # the slack: timer noise on a tiny model


JAX_SCRIPT = textwrap.dedent(
    r'''
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    from keras_mtl.config import config_from_dict
    from keras_mtl.data.example import Example
    from keras_mtl.evaluation import predict_split
    from keras_mtl.serving.export import export
    from keras_mtl.training import train
    from keras_mtl.run import load_run

    args = json.loads(sys.argv[1])
    train(config_from_dict(args["config"]), workdir=args["workdir"], max_steps=2, verbose=0)
    version = str(export(args["workdir"], out=args["base"], warmup=False))
    run = load_run(args["workdir"])
    model, encoder = run.load_model(), run.encoder()
    examples = [Example(t, {"pos": ("X",) * len(t.split()), "topic": run.classes["topic"][0]}) for t in args["texts"]]
    split = run.encode(examples, encoder=encoder)
    tags = dict(zip(*predict_split(model, split, run.config, run.classes, encoder.pad_id)["pos"]))
    raw = dict(zip(*predict_split(model, split, run.config, run.classes, encoder.pad_id, raw=True)["topic"]))
    print("RESULT " + json.dumps({
        "backend": keras.backend.backend(), "version": version, "windows": split.num_windows.tolist(),
        "tags": [list(tags[i]) for i in range(len(examples))],
        "topic": [raw[i]["topic"][0].tolist() for i in range(len(examples))],
    }), flush=True)
    '''
)


def test_jax_trains_evaluates_and_exports_long_texts_in_windows(tiny_config, tmp_path, subprocess_env, result_of,
                                                                 serve_without_keras):
    pytest.importorskip("jax")
    texts = [" ".join([SENTENCE] * 30), SENTENCE]  # 300 words
    config = tiny_config(name="long-jax", seed=0, tasks=("topic", "pos"), dev=8, test=0, steps_per_epoch=2,
                         bucket_lengths=[16], jit_compile="auto")
    config["model"]["window_merge"] = "mean"
    args = {"config": config, "workdir": str(tmp_path / "run"), "base": str(tmp_path / "saved"), "texts": texts}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          env=subprocess_env("jax"), cwd=tmp_path, timeout=900)
    jax = result_of(proc)
    assert jax["backend"] == "jax" and jax["windows"][0] > 10
    served = serve_without_keras([jax["version"]], texts)[jax["version"]]["outputs"]
    tags = [row[:n] for row, n in zip(served["pos_tags"], served["num_words"])]
    assert "" not in tags[0] and len(tags[0]) == 300
    assert tags == jax["tags"]
    np.testing.assert_allclose(served["topic_probabilities"], jax["topic"], atol=1e-4)
    assert served["windows"] == jax["windows"]
