"""Export on the JAX backend: jax2tf inside the SavedModel, served by TensorFlow alone.

A JAX subprocess (KERAS_BACKEND=jax) trains 2 steps, exports, and computes
the JAX model's outputs on a few texts (tokenized by the run's encoder, the
same TF graph the SavedModel holds). A second subprocess with TensorFlow
and the TF Text op libraries only (keras, keras_hub, keras_mtl and jax
blocked: `serve_without_keras` of conftest.py) loads the SavedModel and
calls `serving_default` on the texts and `serve_tokens` on the same token
ids. Outputs must be present and equal to
the JAX outputs within 1e-4 (the same float32 graph compiled by XLA on both
sides; measured differences are ~1e-8).

The model runs in the SavedModel as an `XlaCallModule` op (jax2tf native
serialization): TF Serving must be started with
`--xla_cpu_compilation_enabled=true` to run it on CPU, which
`keras_mtl.serving` adds when keras_mtl.json says backend "jax".
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXTS = ["the brilliant chef cooked a soup .", "a storm arrived", "", "Zebra \u00fcber caf\u00e9 ."]
XLA_FLAG = "--xla_cpu_compilation_enabled=true"

JAX_SCRIPT = textwrap.dedent(
    r'''
    import json, os, sys, traceback
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np
    from keras_mtl.config import config_from_dict
    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.serving.export import export
    from keras_mtl.training import train
    from keras_mtl.run import load_run

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
    # every word's tag as evaluation reads it (a text longer than a window: in windows, issue 28)
    from keras_mtl.data.example import Example
    from keras_mtl.evaluation import predict_split
    examples = [Example(t, {"pos": ("X",) * len(t.split())}) for t in args["texts"]]
    read = dict(zip(*predict_split(model, run.encode(examples), run.config, run.classes, encoder.pad_id)["pos"]))
    result["pos_tags_read"] = [list(read[i]) for i in range(n)]
    print("RESULT " + json.dumps(result), flush=True)
    '''
)


@pytest.fixture(scope="module")
def jax_export(tmp_path_factory, tiny_config, subprocess_env, result_of):
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("jax-export")
    # Two tasks, one bucket, no test split: JAX compiles as few shapes as possible.
    config = tiny_config(name="jaxexport", seed=0, tasks=("topic", "pos"), dev=8, test=0,
                         steps_per_epoch=2, bucket_lengths=[16], jit_compile="auto")
    args = {"config": config, "workdir": str(root / "run"), "base": str(root / "saved"), "texts": TEXTS}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(args)],
                          capture_output=True, text=True, env=subprocess_env("jax"), cwd=root, timeout=900)
    return result_of(proc)


def test_jax_export_is_served_by_tensorflow_alone(jax_export, serve_without_keras):
    assert jax_export["backend"] == "jax"
    assert "export_error" not in jax_export, (
        "export on the JAX backend failed:\n" + jax_export["export_error"] + "\n" + jax_export.get("export_traceback", "")
    )
    version = jax_export["version"]
    result = serve_without_keras([version], TEXTS, tokens=jax_export["tokens"])
    assert result["modules"] == [], result["modules"]
    served = result[version]
    out = served["outputs"]
    expected_keys = {"topic_label", "topic_probabilities", "topic_classes", "pos_tags", "num_words", "truncated", "windows"}
    assert expected_keys <= set(out), sorted(out)
    assert served["dtypes"]["topic_probabilities"] == "float32"
    assert all(len(out[k]) == len(TEXTS) for k in expected_keys)

    # serving_default (tokenizer + model) == the JAX model on the same tokens
    np.testing.assert_allclose(out["topic_probabilities"], jax_export["topic_probabilities"], atol=1e-4)
    for served_tags, cut_tags, read_tags, text in zip(out["pos_tags"], jax_export["pos_tags"], jax_export["pos_tags_read"],
                                                      TEXTS):
        if "" not in cut_tags[: len(text.split())]:  # the text fits one window: as the JAX model on its tokens
            assert served_tags == cut_tags, text
        assert served_tags[: len(text.split())] == read_tags, text  # every word tagged, as evaluation reads it
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
