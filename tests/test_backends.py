"""Smoke tests on the other Keras backends, each in its own process.

The backend is fixed when Keras is first imported, so each check runs in a
fresh interpreter with KERAS_BACKEND set.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_jax_backend_trains_from_the_cli(tmp_path, tiny_config, subprocess_env):
    pytest.importorskip("jax")
    # One bucket length and one task group: JAX compiles as few shapes as possible.
    raw = tiny_config("none", name="backend-tiny", seed=0, tasks=("topic", "pos"), dev=8, test=8,
                      bucket_lengths=[16], jit_compile="auto")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "train", str(config), "--workdir", str(workdir),
         "--max-steps", "3", "--quiet"],
        capture_output=True, text=True, env=subprocess_env("jax"), cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["backend"] == "jax"
    assert set(report["tasks"]) == {"topic", "pos"}
    assert 0.0 <= report["tasks"]["pos"]["token_accuracy"] <= 1.0
    assert json.loads((workdir / "run.json").read_text())["backend"] == "jax"
    assert (workdir / "model.keras").is_file()


def test_jax_backend_trains_and_exports_sentence_pairs(tmp_path, tiny_pair_config, subprocess_env,
                                                      serve_without_keras):
    pytest.importorskip("jax")
    raw = tiny_pair_config(tmp_path, "embedding", name="backend-pairs", bucket_lengths=[16], jit_compile="auto")
    config = tmp_path / "pairs.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    workdir, base = tmp_path / "run", tmp_path / "saved"
    for argv in (["train", str(config), "--workdir", str(workdir), "--max-steps", "3", "--quiet"],
                 ["export", str(workdir), "--out", str(base)]):
        proc = subprocess.run([sys.executable, "-m", "keras_mtl.cli", *argv], capture_output=True, text=True,
                              env=subprocess_env("jax"), cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["backend"] == "jax" and set(report["tasks"]) == {"topic", "nli", "sts"}
    call = {"signature": "nli", "inputs": {"text": ["the cat sat", "a dog"], "text_pair": ["the cat", "a bird"]}}
    served = serve_without_keras([base / "1"], ["the cat"], calls=[call])[str(base / "1")]
    probabilities = served["calls"][0]["outputs"]["nli_probabilities"]
    assert len(probabilities) == 2 and all(abs(sum(row) - 1.0) < 1e-5 for row in probabilities)


TORCH_SCRIPT = textwrap.dedent(
    """
    import json, math
    import keras
    import numpy as np

    from keras_mtl.config import config_from_dict
    from keras_mtl.model import build_network, loss_for

    assert keras.backend.backend() == "torch", keras.backend.backend()
    config = config_from_dict({
        "name": "torch-tiny",
        "tasks": [
            {"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}},
            {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 5}},
        ],
        "model": {"vocabulary_size": 50, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "task_conditioning": "embedding"},
    }).config
    classes = {"topic": ["a", "b", "c"], "pos": ["D", "N", "V"]}
    model = build_network(config, classes, [f"piece{i}" for i in range(50)])
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss={t.name: loss_for(t) for t in config.tasks},
        loss_weights={t.name: t.loss_weight for t in config.tasks},
    )
    rng = np.random.default_rng(0)
    batch, length = 4, 8
    ids = rng.integers(5, 50, size=(batch, length)).astype("int32")
    ids[:, 0] = 2
    ids[:2, 6:] = 0
    x = {"token_ids": ids, "padding_mask": ids != 0, "task_ids": np.array([0, 1, 0, 1], "int32")}
    y = {"topic": rng.integers(0, 3, size=batch).astype("int32"),
         "pos": rng.integers(0, 3, size=(batch, length)).astype("int32")}
    sw = {"topic": np.array([1, 0, 1, 0], "float32"),
          "pos": (np.array([0, 1, 0, 1], "float32")[:, None] * (ids != 0)).astype("float32")}
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    changed = any(not np.allclose(a, np.array(w)) for a, w in zip(before, model.trainable_weights))
    out = model.predict_on_batch(x)
    print("RESULT " + json.dumps({
        "loss": float(loss), "changed": bool(changed),
        "shapes": {k: list(np.asarray(v).shape) for k, v in out.items()},
    }))
    """
)


def test_torch_backend_builds_and_fits_one_step(tmp_path, subprocess_env, result_of):
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip("PyTorch is not installed in this environment (make test installs torch==2.13.0)")
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT],
        capture_output=True, text=True, env=subprocess_env("torch"), cwd=tmp_path, timeout=600,
    )
    result = result_of(proc)
    assert result["loss"] == result["loss"] and result["loss"] < float("inf")
    assert result["changed"], "one fit step must update the weights"
    assert result["shapes"] == {"topic": [4, 3], "pos": [4, 8, 3]}
