"""Shared test fixtures: a tiny trained run, subprocess environments, and a
serving client that loads SavedModels with TensorFlow alone.

Test modules run with `--import-mode=importlib` and cannot import this file,
so the helpers are handed out as fixtures (plain functions that need no
fixture live in tests/helpers.py, which this file puts on `sys.path`):

* `tiny_config(...)` builds the config dict of a tiny demo-data run (three
  tasks: `topic`, `sentiment`, `pos`; 16-wide, one layer);
* `tiny_run` is that run trained once for the whole session (3 steps,
  `task_conditioning: embedding`); its work dir is read-only for tests:
  export it to a `tmp_path`, never write into it;
* `train_tiny(conditioning, root)` trains another variant the same way;
* `subprocess_env(backend)` is the environment of a child Python (the repo
  on PYTHONPATH, TensorFlow's start-up logs off);
* `result_of(proc)` reads the `RESULT <json>` line a child script prints;
* `tiny_pair_run` mixes two sentence-pair tasks (`nli`, `sts`) with `topic`
  (jsonl pairs written by `write_pair_data`), trained the same way;
* `serve_without_keras(dirs, texts, ...)` loads SavedModels in a child that
  can import TensorFlow and the TF Text op libraries only (keras, keras_hub,
  keras_mtl and jax are blocked), which is what TF Serving has, and returns
  what `serving_default` (and optionally `serve_tokens`) answered.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The prepared-data cache of every run the tests start (and of their child processes): one
# directory per session, never the user's ~/.cache/keras-mtl.
os.environ["KERAS_MTL_CACHE"] = tempfile.mkdtemp(prefix="keras-mtl-test-cache-")
TINY_MAX_LEN = 16

# `from helpers import ...` in test modules: tests/helpers.py holds the plain
# functions they share (appended, so that it shadows no installed module).
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))

# The three demo tasks of the tiny run (train examples each).
_TINY_TASKS = {
    "topic": {"type": "classification", "metrics": ["accuracy", "macro_f1"], "train": 64},
    "sentiment": {"type": "classification", "train": 32},
    "pos": {"type": "tagging", "loss_weight": 0.5, "train": 32},
}


def make_tiny_config(conditioning="embedding", *, name=None, seed=1, tasks=tuple(_TINY_TASKS), dev=16, test=16,
                     **train):
    """The config dict of a tiny demo-data run; `train` keys override the train section."""
    task_list = []
    for task in tasks:
        spec = dict(_TINY_TASKS[task])
        data = {"format": "demo", "kind": task, "train": spec.pop("train"), "dev": dev, "test": test}
        task_list.append({"name": task, **spec, "data": data})
    return {
        "name": name or f"tiny-{conditioning}",
        "seed": seed,
        "tasks": task_list,
        "model": {
            "vocabulary_size": 200, "max_sequence_length": TINY_MAX_LEN, "hidden_dim": 16, "num_layers": 1,
            "num_heads": 2, "intermediate_dim": 32, "dropout": 0.0, "task_conditioning": conditioning,
        },
        "train": {"batch_size": 8, "epochs": 1, "bucket_lengths": [8], "jit_compile": False, **train},
    }


def _train_config(config, root, max_steps=3):
    from keras_mtl.config import config_from_dict
    from keras_mtl.training import train

    workdir = Path(root) / "run"
    report = train(config_from_dict(config), workdir=workdir, max_steps=max_steps, verbose=0)
    return {"workdir": workdir, "report": report, "config": config}


def _train_tiny(conditioning, root, max_steps=3):
    return _train_config(make_tiny_config(conditioning), root, max_steps)


_PAIR_WORDS = "the a cat dog sat ran on under mat rug red blue big small bird fish".split()


def write_pair_data(root, n=96, seed=0):
    """Tiny sentence-pair data (jsonl): `label` entailment/other and a 0-5 `score`.

    A pair shares a share of its words: the label says whether it shares most,
    the score how much. Returns {split: path}.
    """
    import random

    rng = random.Random(seed)
    paths = {}
    for split, count in (("train", n), ("dev", n // 4), ("test", n // 4)):
        path = Path(root) / f"pairs_{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for _ in range(count):
                a = rng.choices(_PAIR_WORDS, k=rng.randint(3, 9))
                shared = rng.randint(0, len(a))
                b = a[:shared] + rng.choices(_PAIR_WORDS, k=rng.randint(1, 6))
                score = round(5.0 * shared / len(a), 2)
                label = "entailment" if shared * 2 > len(a) else "other"
                f.write(json.dumps({"a": " ".join(a), "b": " ".join(b), "label": label, "score": score}) + "\n")
        paths[split] = str(path)
    return paths


def make_tiny_pair_config(root, conditioning="embedding", *, name=None, seed=1, **train):
    """A tiny mixed config: pair tasks `nli` (classification) and `sts` (regression)
    on `write_pair_data(root)`, and the single-text demo task `topic`."""
    paths = write_pair_data(root)

    def pair_task(name, type_, label_field, **extra):
        data = {"format": "jsonl", "text_field": "a", "text_pair_field": "b", "label_field": label_field, **paths}
        return {"name": name, "type": type_, "data": data, **extra}

    config = make_tiny_config(conditioning, name=name or f"tiny-pairs-{conditioning}", seed=seed, tasks=("topic",),
                              **train)
    config["tasks"] += [pair_task("nli", "classification", "label"), pair_task("sts", "regression", "score")]
    return config


def _train_tiny_pairs(conditioning, root, max_steps=3):
    return _train_config(make_tiny_pair_config(root, conditioning), root, max_steps)


@pytest.fixture(scope="session")
def tiny_pair_run(tmp_path_factory):
    """A tiny run mixing pair tasks (`nli`, `sts`) and a single-text one (`topic`),
    trained once per session (`task_conditioning: embedding`). Do not write into it."""
    return _train_tiny_pairs("embedding", tmp_path_factory.mktemp("tiny-pair-run"))


@pytest.fixture(scope="session")
def tiny_pair_config():
    """`make_tiny_pair_config(root, conditioning="embedding", *, name, seed, **train)` (writes the pair data)."""
    return make_tiny_pair_config


@pytest.fixture(scope="session")
def train_tiny_pairs():
    """`train_tiny_pairs(conditioning, root, max_steps=3)`: another variant of `tiny_pair_run`."""
    return _train_tiny_pairs


@pytest.fixture(scope="session")
def tiny_config():
    """`make_tiny_config(conditioning="embedding", *, name, seed, tasks, dev, test, **train)`."""
    return make_tiny_config


@pytest.fixture(scope="session")
def train_tiny():
    """`train_tiny(conditioning, root, max_steps=3)` -> {"workdir", "report", "config"}."""
    return _train_tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny run (`task_conditioning: embedding`), trained once per session. Do not write into it."""
    return _train_tiny("embedding", tmp_path_factory.mktemp("tiny-run"))


class Interrupted(Exception):
    """Stands in for a kill after an epoch's backup was committed."""


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the next `train` stops (raises `interrupt_after.error`) at the end of epoch n.

    TensorBoard is the last callback of `train`: when it runs, the epoch's
    CSV row and backup are written, as when a process is killed between
    epochs. `interrupt_after.ended` lists the epochs (1-based) that ended.
    """
    import keras

    original = keras.callbacks.TensorBoard.on_epoch_end
    when = {}

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        control.ended.append(epoch + 1)
        if when.get("epoch") == epoch + 1:
            when.clear()
            raise Interrupted(f"after epoch {epoch + 1}")

    def control(n):
        when.update(epoch=n)

    control.ended = []
    control.error = Interrupted
    monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", on_epoch_end)
    return control


@contextlib.contextmanager
def _serving_in_thread(server):
    """Run a `socketserver` server's `serve_forever` in a daemon thread while the block runs."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def serving_in_thread():
    """`with serving_in_thread(server): ...`: a fake HTTP server answering in a thread."""
    return _serving_in_thread


def _subprocess_env(backend="tensorflow", repo_on_path=True):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS", "PYTHONPATH")}
    if repo_on_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    if backend:
        env["KERAS_BACKEND"] = backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


@pytest.fixture(scope="session")
def subprocess_env():
    """`subprocess_env(backend="tensorflow", repo_on_path=True)` -> the environment of a child Python."""
    return _subprocess_env


def _result_of(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="session")
def result_of():
    """`result_of(proc)`: the JSON of the last `RESULT ...` line of a finished child (exit 0 asserted)."""
    return _result_of


# The serving client: TensorFlow plus the TF Text op libraries, nothing else.
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
        # The spec is still found (TensorFlow asks where keras lives), but
        # loading it fails: `import tensorflow` tolerates a missing keras.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in BLOCKED:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None:
                spec.loader = _Refuse()
            return spec

    sys.meta_path.insert(0, _Block())

    import tensorflow as tf

    # `import tensorflow_text` would import tf.keras (its Keras layers); TF
    # Serving links the ops only, and so do we.
    text_dir = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
    for lib in sorted(glob.glob(os.path.join(text_dir, "python", "ops", "_*.so"))):
        tf.load_op_library(lib)

    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    request = json.load(sys.stdin)
    result = {}
    for version_dir in request["dirs"]:
        loaded = tf.saved_model.load(version_dir)
        fn = loaded.signatures["serving_default"]
        feed = {name: tf.constant(request["texts"], dtype=tf.string) for name in fn.structured_input_signature[1]}
        out = fn(**feed)  # `text` (and `text_pair`, the same strings, where serving_default takes pairs)
        answer = {
            "outputs": {k: plain(v.numpy().tolist()) for k, v in out.items()},
            "dtypes": {k: v.dtype.name for k, v in out.items()},
            "signatures": sorted(loaded.signatures),
            "inputs": sorted(fn.structured_input_signature[1]),
        }
        if request["empty_batch"]:
            try:  # TF Serving passes an empty "instances" list through as a [0] batch
                empty = {k: list(v.shape) for k, v in fn(text=tf.constant([], dtype=tf.string)).items()}
            except Exception as e:  # noqa: BLE001 - reported to the test
                empty = f"{type(e).__name__}: {str(e)[:500]}"
            answer["empty_batch_shapes"] = empty
        calls = []
        for call in request.get("calls") or []:  # named signatures, e.g. a pair task's
            try:
                sig = loaded.signatures[call["signature"]]
                got = sig(**{k: tf.constant(v, dtype=tf.string) for k, v in call["inputs"].items()})
                calls.append({
                    "outputs": {k: plain(v.numpy().tolist()) for k, v in got.items()},
                    "inputs": sorted(sig.structured_input_signature[1]),
                })
            except Exception as e:  # noqa: BLE001 - reported to the test
                calls.append({"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"})
        answer["calls"] = calls
        tokens = request["tokens"]
        if tokens is not None:  # the model alone, on token ids
            feed = {k: tf.constant(v, tf.bool if k == "padding_mask" else tf.int32) for k, v in tokens.items()}
            if "serve_tokens" in loaded.signatures:
                got = loaded.signatures["serve_tokens"](**feed)
            else:
                got = loaded.serve_tokens(feed)
            answer["tokens"] = {k: v.numpy().tolist() for k, v in got.items()}
        result[version_dir] = answer
    result["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("RESULT " + json.dumps(result))
    '''
)


def _serve_without_keras(dirs, texts, tokens=None, empty_batch=False, calls=()):
    request = {"dirs": [str(d) for d in dirs], "texts": list(texts), "tokens": tokens, "empty_batch": empty_batch,
               "calls": list(calls)}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT], input=json.dumps(request),
        capture_output=True, text=True, env=_subprocess_env(backend=None, repo_on_path=False), cwd="/", timeout=600,
    )
    return _result_of(proc)


@pytest.fixture(scope="session")
def serve_without_keras():
    """`serve_without_keras(dirs, texts, tokens=None, empty_batch=False, calls=())` -> {str(dir): answer, "modules": [...]}.

    Each answer holds `outputs`, `dtypes`, `signatures` and `inputs` of
    `serving_default` on `texts`; `empty_batch_shapes` with `empty_batch`;
    `calls`: for each `{"signature": name, "inputs": {name: [str, ...]}}` of
    `calls`, that signature's `outputs` and `inputs`, or its `error`;
    `tokens` (serve_tokens on the given token ids) with `tokens`. `modules`
    lists the blocked modules that were imported anyway (must be empty).
    """
    return _serve_without_keras
