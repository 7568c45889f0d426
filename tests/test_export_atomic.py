"""Export atomicity: a SIGKILLed export never leaves a half-written version.

`export` writes the version into `BASE/.tmp-<version>-<token>-<pid>` and
renames it to `BASE/<version>` when complete. Here version 1 of the
session's tiny run (conftest.py) is exported, then a second export runs in a
subprocess and is SIGKILLed as soon as its `.tmp-*` directory appears (while
it writes). Then:

* version 1 still loads and answers `serving_default` in a subprocess that
  has only TensorFlow and the TF Text op libraries (keras, keras_hub,
  keras_mtl and jax blocked from importing, as in TF Serving:
  `serve_without_keras` of conftest.py);
* no `2/` exists (TF Serving would load a half-written version 2);
* the next export writes version 2 (the stale `.tmp-*` is not a version);
* the stale `.tmp-*` of the killed export is removed by that next export
  (it is not a version and TF Serving ignores it, but it would keep its disk
  space forever).
"""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXTS = ["the brilliant chef cooked a soup .", "", "a storm arrived"]


# The second export, killed as soon as its `.tmp-*` directory appears (while
# tf.saved_model.save writes into it). So that a loaded machine cannot let it
# finish before the kill lands, it stops for good before its last steps
# (writing keras_mtl.json, renaming into place): the kill always comes before
# the rename.
EXPORT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import keras_mtl.disk
    from keras_mtl.serving.export import export

    def hang(*args, **kwargs):
        time.sleep(600)

    keras_mtl.disk.write_json = hang
    os.replace = os.rename = hang
    export(sys.argv[1], out=sys.argv[2], warmup=False)
    """
)


def test_killed_export_leaves_no_version(tmp_path, tiny_run, subprocess_env, serve_without_keras):
    from keras_mtl.serving.export import export
    from keras_mtl.serving.layout import version_dirs

    workdir, base = tiny_run["workdir"], tmp_path / "saved"
    first = export(workdir, out=base, warmup=False)
    assert first == base / "1" and version_dirs(base) == [1]

    proc = subprocess.Popen(
        [sys.executable, "-c", EXPORT_SCRIPT, str(workdir), str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(), cwd=tmp_path,
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
    served = serve_without_keras([first], TEXTS)
    assert served["modules"] == []
    probs = served[str(first)]["outputs"]["topic_probabilities"]
    assert len(probs) == len(TEXTS) and all(abs(sum(row) - 1.0) < 1e-4 for row in probs)

    # the next export writes version 2, complete, beside (or over) the stale directory
    second = export(workdir, out=base, warmup=False)
    assert second == base / "2" and version_dirs(base) == [1, 2]
    served = serve_without_keras([first, second], TEXTS)
    np.testing.assert_allclose(
        served[str(second)]["outputs"]["topic_probabilities"], served[str(first)]["outputs"]["topic_probabilities"],
        atol=1e-6,
    )

    left = sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-"))
    assert not left, f"the next export left the killed export's temporary directory behind: {left}"
