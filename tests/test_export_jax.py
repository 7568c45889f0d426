"""Export on the JAX backend: jax2tf inside the SavedModel, served by TensorFlow alone.

A JAX subprocess (KERAS_BACKEND=jax) trains 2 steps, exports, and computes
the JAX model's outputs on a few texts (tokenized by the run's encoder, the
same TF graph the SavedModel holds). A second subprocess with TensorFlow
and the TF Text op libraries only (keras, keras_hub, keras_mtl blocked)
loads the SavedModel and calls `serving_default` on the texts and
`serve_tokens` on the same token ids. Outputs must be present and equal to
the JAX outputs within 1e-4 (the same float32 graph compiled by XLA on both
sides; measured differences are ~1e-8).

The model runs in the SavedModel as an `XlaCallModule` op (jax2tf native
serialization): TF Serving must be started with
`--xla_cpu_compilation_enabled=true` to run it on CPU, which
`keras_mtl.serving` adds when keras_mtl.json says backend "jax".
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the brilliant chef cooked a soup .", "a storm arrived", "", "Zebra \u00fcber caf\u00e9 ."]
XLA_FLAG = "--xla_cpu_compilation_enabled=true"


def tiny_config():
    demo = lambda kind, n: {"format": "demo", "kind": kind, "train": n, "dev": 8, "test": 0}  # noqa: E731
    return {
        "name": "jaxexport",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification", "data": demo("topic", 48)},
            {"name": "pos", "type": "tagging", "data": demo("pos", 24)},
        ],
        "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.0, "task_conditioning": "embedding"},
        "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 2, "bucket_lengths": [16]},
    }


JAX_SCRIPT = textwrap.dedent(
    r'''
    import json, os, sys, traceback
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np
    from keras_mtl.config import config_from_dict
    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.export import export
    from keras_mtl.train import train
    from keras_mtl.workdir import load_run

    args = json.loads(sys.argv[1])
    result = {"backend": keras.backend.backend()}
    train(config_from_dict(args["config"]), workdir=args["workdir"], max_steps=2, verbose=0)
    try:
        result["version"] = str(export(args["workdir"], out=args["base"], warmup=False))
    except Exception as e:
        result["export_error"] = f"{type(e).__name__}: {e}"[-3000:]
        result["export_traceback"] = traceback.format_exc()[-6000:]

    run = load_run(args["workdir"])
    model = run.load_model()
    encoder = make_encoder(run.vocabulary, run.config.model)
    enc = encoder(args["texts"])
    # padded to max_sequence_length: serve_tokens may be traced at that fixed length
    max_len = run.config.model.max_sequence_length
    ids = enc["token_ids"].to_tensor(default_value=encoder.pad_id, shape=[None, max_len]).numpy().astype("int32")
    starts = enc["word_starts"].to_tensor(default_value=-1).numpy()
    n, tasks = len(args["texts"]), run.config.tasks
    x = {"token_ids": np.tile(ids, [len(tasks), 1]), "padding_mask": np.tile(ids != encoder.pad_id, [len(tasks), 1]),
         "task_ids": np.repeat(np.arange(len(tasks), dtype="int32"), n)}
    out = {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}
    result["tokens"] = {k: v.tolist() for k, v in x.items()}
    result["outputs"] = {k: v.tolist() for k, v in out.items()}
    per_text = {t.name: out[t.name][i * n:(i + 1) * n] for i, t in enumerate(tasks)}
    result["topic_probabilities"] = per_text["topic"].tolist()
    classes = run.classes["pos"]
    length = ids.shape[1]
    result["pos_tags"] = [[classes[int(np.argmax(per_text["pos"][r, s]))] if 0 <= s < length else "" for s in row]
                          for r, row in enumerate(starts.tolist())]
    print("RESULT " + json.dumps(result), flush=True)
    '''
)

# TensorFlow plus the TF Text op libraries, nothing else (what TF Serving has).
SERVE_SCRIPT = textwrap.dedent(
    r'''
    import glob, importlib.abc, importlib.machinery, importlib.util, json, os, sys

    BLOCKED = ("keras", "keras_hub", "keras_nlp", "keras_mtl", "tf_keras", "jax")

    class _Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ModuleNotFoundError(f"{spec.name} is blocked in this test", name=spec.name)

        def exec_module(self, module):
            raise ModuleNotFoundError(module.__name__)

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in BLOCKED:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None:
                spec.loader = _Refuse()
            return spec

    sys.meta_path.insert(0, _Block())
    import numpy as np
    import tensorflow as tf

    text_dir = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
    for lib in sorted(glob.glob(os.path.join(text_dir, "python", "ops", "_*.so"))):
        tf.load_op_library(lib)

    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    args = json.loads(sys.argv[1])
    loaded = tf.saved_model.load(args["version"])
    out = loaded.signatures["serving_default"](text=tf.constant(args["texts"], dtype=tf.string))
    result = {"signatures": sorted(loaded.signatures),
              "serving": {k: plain(v.numpy().tolist()) for k, v in out.items()},
              "dtypes": {k: v.dtype.name for k, v in out.items()}}
    tokens = args["tokens"]
    feed = {"token_ids": tf.constant(tokens["token_ids"], tf.int32),
            "padding_mask": tf.constant(tokens["padding_mask"], tf.bool),
            "task_ids": tf.constant(tokens["task_ids"], tf.int32)}
    if "serve_tokens" in loaded.signatures:
        got = loaded.signatures["serve_tokens"](**feed)
    else:
        got = loaded.serve_tokens(feed)
    result["tokens"] = {k: v.numpy().tolist() for k, v in got.items()}
    result["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("RESULT " + json.dumps(result), flush=True)
    '''
)


def _env(backend=None):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def _result(proc):
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def jax_export(tmp_path_factory):
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("jax-export")
    args = {"config": tiny_config(), "workdir": str(root / "run"), "base": str(root / "saved"), "texts": TEXTS}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(args)],
                          capture_output=True, text=True, env=_env("jax"), cwd=root, timeout=900)
    return _result(proc)


def test_jax_export_is_served_by_tensorflow_alone(jax_export):
    assert jax_export["backend"] == "jax"
    assert "export_error" not in jax_export, (
        "export on the JAX backend failed:\n" + jax_export["export_error"] + "\n" + jax_export.get("export_traceback", "")
    )
    version = jax_export["version"]
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT,
         json.dumps({"version": version, "texts": TEXTS, "tokens": jax_export["tokens"]})],
        capture_output=True, text=True, env={k: v for k, v in _env().items() if k != "PYTHONPATH"}, cwd="/", timeout=600,
    )
    served = _result(proc)
    assert served["modules"] == [], served["modules"]
    out = served["serving"]
    expected_keys = {"topic_label", "topic_probabilities", "topic_classes", "pos_tags", "num_words", "truncated"}
    assert expected_keys <= set(out), sorted(out)
    assert served["dtypes"]["topic_probabilities"] == "float32"
    assert all(len(out[k]) == len(TEXTS) for k in expected_keys)

    # serving_default (tokenizer + model) == the JAX model on the same tokens
    np.testing.assert_allclose(out["topic_probabilities"], jax_export["topic_probabilities"], atol=1e-4)
    assert out["pos_tags"] == jax_export["pos_tags"]
    # serve_tokens: every task's full output
    for task, values in jax_export["outputs"].items():
        np.testing.assert_allclose(served["tokens"][task], values, atol=1e-4, err_msg=task)


def test_jax_export_metadata_asks_for_xla(jax_export):
    if "export_error" in jax_export:
        pytest.skip("export failed: see test_jax_export_is_served_by_tensorflow_alone")
    from keras_mtl.serving.layout import read_metadata
    from keras_mtl.serving import serve_command

    version = Path(jax_export["version"])
    assert read_metadata(version)["backend"] == "jax"
    # TF Serving disables XLA:CPU JIT by default; the XlaCallModule op needs it
    assert XLA_FLAG in serve_command(version.parent)
