"""Export atomicity: a SIGKILLed export never leaves a half-written version.

`export` writes the version into `BASE/.tmp-<version>-<token>-<pid>` and
renames it to `BASE/<version>` when complete. Here version 1 is exported, then a second
export runs in a subprocess and is SIGKILLed as soon as its `.tmp-*`
directory appears (while it writes). Then:

* version 1 still loads and answers `serving_default` in a subprocess that
  has only TensorFlow and the TF Text op libraries (keras, keras_hub and
  keras_mtl blocked from importing, as in TF Serving);
* no `2/` exists (TF Serving would load a half-written version 2);
* the next export writes version 2 (the stale `.tmp-*` is not a version);
* the stale `.tmp-*` of the killed export is removed by that next export
  (it is not a version and TF Serving ignores it, but it would keep its disk
  space forever).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the brilliant chef cooked a soup .", "", "a storm arrived"]


def tiny_config():
    demo = lambda kind, n: {"format": "demo", "kind": kind, "train": n, "dev": 8, "test": 0}  # noqa: E731
    return {
        "name": "atomic",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification", "data": demo("topic", 48)},
            {"name": "pos", "type": "tagging", "data": demo("pos", 24)},
        ],
        "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.0, "task_conditioning": "embedding"},
        "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 2, "bucket_lengths": [16]},
    }


# TensorFlow plus the TF Text op libraries, nothing else (what TF Serving has).
SERVE_SCRIPT = textwrap.dedent(
    r'''
    import glob, importlib.abc, importlib.machinery, importlib.util, json, os, sys

    BLOCKED = ("keras", "keras_hub", "keras_nlp", "keras_mtl", "tf_keras")

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
    import tensorflow as tf

    text_dir = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
    for lib in sorted(glob.glob(os.path.join(text_dir, "python", "ops", "_*.so"))):
        tf.load_op_library(lib)

    request = json.loads(sys.argv[1])
    result = {}
    for version_dir in request["dirs"]:
        fn = tf.saved_model.load(version_dir).signatures["serving_default"]
        out = fn(text=tf.constant(request["texts"], dtype=tf.string))
        result[version_dir] = {k: v.numpy().tolist() for k, v in out.items() if v.dtype.is_floating}
    result["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("RESULT " + json.dumps(result))
    '''
)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env["KERAS_BACKEND"] = "tensorflow"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def serve(dirs):
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, json.dumps({"dirs": [str(d) for d in dirs], "texts": TEXTS})],
        capture_output=True, text=True, env=env, cwd="/", timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])


# The second export, killed as soon as its `.tmp-*` directory appears (while
# tf.saved_model.save writes into it). So that a loaded machine cannot let it
# finish before the kill lands, it stops for good before its last steps
# (writing keras_mtl.json, renaming into place): the kill always comes before
# the rename.
EXPORT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import keras_mtl.workdir
    from keras_mtl.export import export

    def hang(*args, **kwargs):
        time.sleep(600)

    keras_mtl.workdir.write_json = hang
    os.replace = os.rename = hang
    export(sys.argv[1], out=sys.argv[2], warmup=False)
    """
)


def test_killed_export_leaves_no_version(tmp_path):
    from keras_mtl.config import config_from_dict
    from keras_mtl.export import export
    from keras_mtl.serving.layout import version_dirs
    from keras_mtl.train import train

    workdir, base = tmp_path / "run", tmp_path / "saved"
    train(config_from_dict(tiny_config()), workdir=workdir, verbose=0)
    first = export(workdir, out=base, warmup=False)
    assert first == base / "1" and version_dirs(base) == [1]

    proc = subprocess.Popen(
        [sys.executable, "-c", EXPORT_SCRIPT, str(workdir), str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path,
    )
    try:
        deadline, stale = time.time() + 600, []
        while not stale:
            stale = [p for p in base.iterdir() if p.name.startswith(".tmp-")]
            if proc.poll() is not None:
                pytest.fail(f"the export finished before it could be killed:\n{proc.stdout.read()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("no .tmp-* directory appeared in 600 s")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # while it writes
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (base / "2").exists(), "a killed export left a version directory"
    assert version_dirs(base) == [1]
    stale = sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-"))
    assert stale and stale[0].startswith(".tmp-2-") and stale[0].endswith(f"-{proc.pid}")

    # version 1 still serves, in a process with TensorFlow + TF Text ops only
    served = serve([first])
    assert served["modules"] == []
    probs = served[str(first)]["topic_probabilities"]
    assert len(probs) == len(TEXTS) and all(abs(sum(row) - 1.0) < 1e-4 for row in probs)

    # the next export writes version 2, complete, beside (or over) the stale directory
    second = export(workdir, out=base, warmup=False)
    assert second == base / "2" and version_dirs(base) == [1, 2]
    served = serve([first, second])
    np.testing.assert_allclose(
        served[str(second)]["topic_probabilities"], served[str(first)]["topic_probabilities"], atol=1e-6
    )

    left = sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-"))
    assert not left, f"the next export left the killed export's temporary directory behind: {left}"
