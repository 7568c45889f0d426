"""Multi-host training input: each JAX process streams its own share of the cached rows.

* `row_owners` / `check_shares` (keras_mtl/data/cached.py): which process
  streams which training row; `local_batches` (keras_mtl/distribute.py): a
  process's batches padded to one shape, the `expected` normalizer rescaled.
* Two JAX processes on 127.0.0.1 (CPU, one device each, Gloo collectives)
  run `train()` on a tiny two-task config from one cache entry. Each must
  read only its share of the training rows (the shares are disjoint and
  their union is every row), and its metrics must be those of ONE process
  (`distribution: none`) trained on the same global batches: the two
  processes' parts of every batch, built here in one process and joined.

Tolerance: |a - b| <= 1e-4 on the train losses and dev metrics, as in
tests/test_distribute.py (the same float32 math; only the summation order of
the all-reduce differs, ~1e-7 a step; a wrong normalizer is off by a factor
of 2, a wrong batch by >= 1e-3).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config as distributed_config

from keras_mtl.data.cached import check_shares, row_owners
from keras_mtl.errors import DataError

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4


# --------------------------------------------------------------------------
# Shares
# --------------------------------------------------------------------------


def _weights(*spans, rows):
    """task -> float32 [rows]: 1 on each task's (start, stop) span."""
    out = {}
    for name, (start, stop) in spans:
        w = np.zeros([rows], np.float32)
        w[start:stop] = 1
        out[name] = w
    return out


@pytest.mark.parametrize("processes", [2, 3, 8])
def test_row_owners_share_every_task_evenly_whatever_the_order(processes):
    # rows sorted by task (a merged file), with a few rows labelled for both tasks
    weights = _weights(("a", (0, 700)), ("b", (690, 1000)), rows=1000)
    owners = row_owners(weights, processes)
    assert owners.min() >= 0 and owners.max() < processes
    for name, w in weights.items():
        counts = np.bincount(owners[w > 0], minlength=processes)
        n = int((w > 0).sum())
        # within one row a group of evenly (3 groups: a only, both, b only)
        assert counts.max() - counts.min() <= 3, (name, counts)
        assert counts.sum() == n
    # one process's rows lie in few runs (one per group): reading them reads no other row
    from keras_mtl.data.cache.read import runs_of

    for p in range(processes):
        assert len(runs_of(np.flatnonzero(owners == p))) <= 3
    # deterministic: every process computes the same owners
    np.testing.assert_array_equal(owners, row_owners(weights, processes))


def test_check_shares_refuses_a_task_too_small_to_share():
    weights = _weights(("big", (0, 100)), ("tiny", (100, 102)), rows=102)
    check_shares(row_owners(weights, 2), weights, 2)  # 2 rows, 2 processes: one each
    with pytest.raises(DataError, match=r"task 'tiny': its 2 training rows cannot be shared by 3 processes"):
        check_shares(row_owners(weights, 3), weights, 3)


def test_local_batches_pad_to_one_length_and_rescale_expected():
    import tensorflow as tf

    from keras_mtl.distribute import local_batches

    x = {"token_ids": tf.constant([[5, 6, 0], [7, 0, 0]], tf.int32),
         "padding_mask": tf.constant([[True, True, False], [True, False, False]])}
    y = {"pos": tf.constant([[1, 2, 0], [3, 0, 0]], tf.int32), "topic": tf.constant([1, 0], tf.int32)}
    sw = {"pos": tf.constant([[0.5, 0.5, 0], [1, 0, 0]], tf.float32), "topic": tf.constant([0.25, 0.5], tf.float32)}
    # an unknown length dimension, as bucketing gives
    batch = (x, y, sw)
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * t.shape.rank, t.dtype), batch)
    ds = tf.data.Dataset.from_generator(lambda: iter([batch]), output_signature=spec)
    (bx, by, bsw), = list(local_batches(ds, 2, pad_id=9, length=5, loss_normalizer="expected").as_numpy_iterator())
    np.testing.assert_array_equal(bx["token_ids"], [[5, 6, 0, 9, 9], [7, 0, 0, 9, 9]])
    np.testing.assert_array_equal(bx["padding_mask"], [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(by["pos"], [[1, 2, 0, 0, 0], [3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(by["topic"], [1, 0])
    np.testing.assert_allclose(bsw["pos"], [[0.25, 0.25, 0, 0, 0], [0.5, 0, 0, 0, 0]])
    np.testing.assert_allclose(bsw["topic"], [0.125, 0.25])
    (_, _, same), = list(local_batches(ds, 2, pad_id=9, length=5, loss_normalizer="batch").as_numpy_iterator())
    np.testing.assert_allclose(same["topic"], [0.25, 0.5])  # `batch`: the mean over the global batch, unscaled


# --------------------------------------------------------------------------
# Two JAX processes on this machine
# --------------------------------------------------------------------------


def tiny_config(cache_dir):
    # two bucket lengths: the processes' batches are padded to one shape
    config = distributed_config(("topic", "pos"), "embedding", name="multihost", steps_per_epoch=5,
                                bucket_lengths=[12, 16])
    return {**config, "cache": {"dir": str(cache_dir)}}


# A process of the job: `train()` with data_parallel over both processes' devices, recording the training
# rows it reads (every `read_runs` of the streamed input).
WORKER = textwrap.dedent(
    r'''
    import csv, json, os, sys
    args = json.loads(sys.argv[1])
    from keras_mtl import distribute
    distribute.initialize_multihost()  # from KERAS_MTL_*
    from keras_mtl.data import cached
    read = set()
    original = cached.read_runs

    def recording(entry, split, runs, columns=None):
        read.update((split, a, b) for a, b in runs)
        return original(entry, split, runs, columns)

    cached.read_runs = recording
    from keras_mtl.training import train
    cfg = args["config"]
    cfg["train"]["distribution"] = "data_parallel"
    workdir = os.path.join(args["root"], f"p{args['pid']}")
    train(cfg, workdir=workdir, verbose=0)
    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(workdir, "run.json")) as f:
        replicas = json.load(f)["replicas"]
    import jax
    print("RESULT " + json.dumps({"rows": rows, "replicas": replicas, "read": sorted(read),
                                  "process": jax.process_index(), "processes": jax.process_count()}), flush=True)
    '''
)

# One process, one device: `train()` on the global batches the two processes make, each one the
# concatenation of process 0's part and process 1's part (built with the processes' own code).
REFERENCE = textwrap.dedent(
    r'''
    import csv, json, os, sys
    args = json.loads(sys.argv[1])
    import tensorflow as tf
    from keras_mtl import distribute, prepare as prep
    cfg = args["config"]
    cfg["train"]["distribution"] = "none"
    own = prep.PreparedRun.train_dataset

    def global_batches(self):
        parts = []
        for p in range(2):
            part = prep.prepare(self.loaded, cache=prep.cache_of(self.loaded), num_processes=2, process_id=p)
            parts.append(distribute.local_batches(own(part), 2, pad_id=part.pad_id,
                                                  length=max(part.plan.bucket_lengths),
                                                  loss_normalizer=part.config.train.loss_normalizer))
        join = lambda a, b: tf.nest.map_structure(lambda u, v: tf.concat([u, v], 0), a, b)  # noqa: E731
        return tf.data.Dataset.zip(tuple(parts)).map(join)

    prep.PreparedRun.train_dataset = global_batches
    from keras_mtl.training import train
    workdir = os.path.join(args["root"], "reference")
    train(cfg, workdir=workdir, verbose=0)
    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    from keras_mtl.config import load_config
    entry = prep.prepare(cfg, cache=prep.cache_of(load_config(cfg)), plan=False).entry
    print("RESULT " + json.dumps({"rows": rows, "train_rows": entry.rows("train")}), flush=True)
    '''
)

# What JAX says when its CPU backend cannot run collectives across processes, or cannot start the job.
CANNOT_START = ("Multiprocess computations aren't implemented", "UNIMPLEMENTED", "cannot join the job")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_MTL_", "JAX_", "XLA_"))}
    env.pop("KERAS_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", **extra)
    return env


def _result(proc, what, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish in time:\n{err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    return proc.returncode, (json.loads(lines[-1][7:]) if lines else None), err


def _floats(row, prefix):
    return {k: float(v) for k, v in row.items() if k.startswith(prefix) and v != ""}


@pytest.mark.slow
def test_two_processes_read_disjoint_shares_and_train_as_one_process_on_the_global_batch(tmp_path):
    pytest.importorskip("jax")
    config = tiny_config(tmp_path / "cache")
    port = _free_port()
    # the reference writes the cache entry; the workers open it (or wait on its lock)
    reference = subprocess.Popen(
        [sys.executable, "-c", REFERENCE, json.dumps({"root": str(tmp_path), "config": config})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps({"root": str(tmp_path), "config": config, "pid": pid})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=_env(KERAS_MTL_COORDINATOR=f"127.0.0.1:{port}", KERAS_MTL_NUM_PROCESSES="2",
                     KERAS_MTL_PROCESS_ID=str(pid)),
        )
        for pid in range(2)
    ]
    deadline = time.time() + 600
    outs = [_result(p, f"worker {i}", max(1, deadline - time.time())) for i, p in enumerate(workers)]
    rc, expected, err = _result(reference, "the one-process reference", max(1, deadline - time.time()))
    assert rc == 0 and expected, f"the one-process reference failed:\n{err[-4000:]}"
    if any(rc != 0 for rc, _, _ in outs):
        text = "\n".join(err[-4000:] for _, _, err in outs)
        hit = next((line for line in text.splitlines() if any(s in line for s in CANNOT_START)), None)
        if hit:
            pytest.skip(f"jax.distributed cannot run two CPU processes here: {hit.strip()}")
        pytest.fail(f"multi-host workers failed:\n{text}")
    results = [res for _, res, _ in outs]

    # each process read only its own rows: disjoint shares, whose union is every training row
    shares = []
    for pid, res in enumerate(results):
        assert (res["process"], res["processes"], res["replicas"]) == (pid, 2, 2)
        rows = set()
        for split, a, b in res["read"]:
            assert split == "train"
            rows.update(range(a, b))
        shares.append(rows)
    total = expected["train_rows"]
    assert total > 100 and all(0.3 * total < len(s) < 0.7 * total for s in shares), [len(s) for s in shares]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(total))

    # the losses and dev metrics of the global batch, in both processes, are one process's
    want = expected["rows"]
    assert len(want) == 2 and "train_topic_loss" in want[0] and "train_pos_loss" in want[0]
    for res in results:
        got = res["rows"]
        assert len(got) == len(want)
        for a, b in zip(want, got):
            for prefix in ("train_", "dev_"):
                wa, gb = _floats(a, prefix), _floats(b, prefix)
                assert wa and wa.keys() == gb.keys()
                assert all(abs(wa[k] - gb[k]) <= TOL for k in wa), (prefix, wa, gb)


def test_the_parts_of_two_processes_make_a_global_batch_of_the_configured_size_and_weights(tmp_path):
    """In one process: the two processes' parts (disjoint shares of the rows) joined are global batches
    of `train.batch_size`, with the `expected` weights a one-process batch has (1 / (B x mean units))."""
    import tensorflow as tf

    from keras_mtl.config import load_config
    from keras_mtl.distribute import local_batches
    from keras_mtl.prepare import cache_of, prepare

    loaded = load_config(tiny_config(tmp_path / "cache"))
    one = prepare(loaded, cache=cache_of(loaded))
    parts = [prepare(loaded, cache=cache_of(loaded), num_processes=2, process_id=p) for p in range(2)]
    shares = [set(part.encoded["train"].share().tolist()) for part in parts]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(len(one.encoded["train"])))
    length = max(one.plan.bucket_lengths)
    raw = [list(part.train_dataset().take(10).as_numpy_iterator()) for part in parts]
    assert all(x["token_ids"].shape[0] == 4 for steps in raw for x, _, _ in steps)
    # each process buckets its own rows: their parts differ in length (what the padding is for)
    assert any(a[0]["token_ids"].shape[1] != b[0]["token_ids"].shape[1] for a, b in zip(*raw))
    # a process's stream is the same on every run: a resumed run skips the finished steps (as `train` does)
    for part, steps in zip(parts, raw):
        again = list(part.train_dataset().skip(5).take(5).as_numpy_iterator())
        for got, want in zip(again, steps[5:]):
            for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
                np.testing.assert_array_equal(a, b)
    ready = [local_batches(part.train_dataset(), 2, pad_id=part.pad_id, length=length,
                           loss_normalizer="expected") for part in parts]
    joined = tf.data.Dataset.zip(tuple(ready)).map(
        lambda a, b: tf.nest.map_structure(lambda u, v: tf.concat([u, v], 0), a, b))
    single = list(one.train_dataset().take(10).as_numpy_iterator())
    compared = 0
    for (x, y, sw), (_, _, sw1) in zip(joined.take(10).as_numpy_iterator(), single):
        assert x["token_ids"].shape == (8, length)
        # topic, a whole-text task: its weight is one constant a labelled row, 1 / (B x mean units)
        got, want = sw["topic"][sw["topic"] > 0], sw1["topic"][sw1["topic"] > 0]
        if len(got) and len(want):
            np.testing.assert_allclose(got, want[0], rtol=1e-6)
            compared += 1
    assert compared >= 5


def test_per_task_batches_the_processes_draw_the_same_task_every_step(tmp_path):
    """`batch_mode: per_task`: every process draws the same task at a step, so a global batch holds one task."""
    from keras_mtl.config import load_config
    from keras_mtl.prepare import cache_of, prepare

    config = tiny_config(tmp_path / "cache")
    config["train"]["batch_mode"] = "per_task"
    loaded = load_config(config)
    parts = [prepare(loaded, cache=cache_of(loaded), num_processes=2, process_id=p) for p in range(2)]

    def tasks_of(part):  # the tasks weighted in each batch (the demo tasks share no text)
        return [tuple(t for t in ("topic", "pos") if sw[t].any())
                for _, _, sw in part.train_dataset().take(12).as_numpy_iterator()]

    first, second = tasks_of(parts[0]), tasks_of(parts[1])
    assert first == second
    assert all(len(t) == 1 for t in first) and {t for (t,) in first} == {"topic", "pos"}
