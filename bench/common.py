"""Shared helpers of the benchmark scripts (no TensorFlow import at module level).

Every script:
* takes `--tiny` (seconds-long smoke sizes), `--results-dir DIR` (default
  bench/results) and `--quiet`;
* prints its figures and its target (met / MISSED);
* writes `<results-dir>/<name>.json` with the figures, the target, the
  machine (CPU model, cores, versions) and `os.getloadavg()` at start and
  end (a benchmark's own threads keep the load near the core count; above
  `busy_load(cores)` other processes shared the machine, and every absolute
  figure is pessimistic);
* exposes `markdown(result) -> str`, the table `run_all.py` pastes into
  BENCHMARKS.md.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere: keras_mtl importable
    sys.path.insert(0, str(ROOT))


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where <name>.json goes")
    p.add_argument("--quiet", action="store_true")
    return p


def quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"})
    except OSError:
        pass
    return []


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("tensorflow", "keras", "keras-hub", "jax", "jaxlib", "torch", "numpy", "tensorflow-text")
        },
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }


def _memory_gib():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


class Run:
    """One benchmark run: collects figures and targets, writes the JSON."""

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.quiet = getattr(args, "quiet", False)
        self.started = time.time()
        self.result = {
            "name": name,
            "tiny": bool(getattr(args, "tiny", False)),
            "command": " ".join(["python", *[_rel(a) for a in sys.argv]]),
            "machine": machine_info(),
            "loadavg_start": list(os.getloadavg()),
            "targets": [],
        }

    def say(self, text=""):
        if not self.quiet:
            print(text, flush=True)

    def target(self, label, value, target, higher_is_better, unit="", detail=""):
        """Record and print one figure against its target; returns whether it is met."""
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        op = ">=" if higher_is_better else "<="
        status = "n/a" if met is None else ("met" if met else "MISSED")
        shown = "n/a" if value is None else f"{value:.3g}{unit}"
        self.result["targets"].append(
            {"label": label, "value": value, "target": target, "op": op, "unit": unit, "met": met, "detail": detail}
        )
        self.say(f"TARGET {label}: {shown} (target {op} {target:g}{unit}) -> {status}" + (f"  [{detail}]" if detail else ""))
        return met

    def write(self, results_dir=None):
        self.result["loadavg_end"] = list(os.getloadavg())
        self.result["seconds"] = round(time.time() - self.started, 1)
        self.result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        out = Path(results_dir or self.args.results_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        path.write_text(json.dumps(self.result, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        self.say(f"wrote {_rel(str(path))} ({self.result['seconds']:.0f} s, load average {self.result['loadavg_end'][0]:.2f})")
        return path

    def skipped_for_missing_data(self, config):
        """True (and a result saying why is written) when the config's data files are absent."""
        missing = missing_data_files(config)
        if not missing:
            return False
        msg = f"data files absent ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}); nothing measured"
        self.say(f"== {self.name}: SKIPPED: {msg}")
        self.result["skipped"] = msg
        self.write()
        return True


def _jsonable(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    return str(x)


def _rel(text):
    try:
        p = Path(text).resolve()
        return str(p.relative_to(ROOT)) if p.exists() else text
    except (ValueError, OSError):
        return text


def missing_data_files(config):
    """The data files a config names that do not exist (sorted): a benchmark
    on real data skips, saying which, where `../shared` is absent."""
    missing = []
    for task in config.tasks:
        for split in ("train", "dev", "test"):
            value = getattr(task.data, split)
            if isinstance(value, str) and ("/" in value or os.sep in value) and not Path(value).exists():
                missing.append(value)
    return sorted(set(missing))


def median(values):
    return statistics.median(values) if values else None


class StepTimer:
    """A Keras callback recording the wall time of every training batch."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []
                self._t = None

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                # logs hold backend tensors: reading the loss waits for the step.
                if logs and "loss" in logs:
                    float(logs["loss"])
                self.times.append(time.perf_counter() - self._t)

        return _Timer()


def load_result(name, results_dir=None):
    path = Path(results_dir or RESULTS_DIR) / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def targets_table(result):
    rows = []
    for t in result.get("targets", []):
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
        status = "n/a" if t["met"] is None else ("met" if t["met"] else "**missed**")
        rows.append([t["label"], value, f"{t['op']} {t['target']:g}{t['unit']}", status])
    return md_table(["figure", "measured", "target", "status"], rows) if rows else ""


def busy_load(cores):
    """The load average above which other processes shared the machine.

    A benchmark's own threads (TensorFlow's intra- and inter-op pools) keep
    the 1-minute load average near the core count on an otherwise idle
    machine, so one core's worth above it is the threshold.
    """
    return cores + 1


def load_note(result):
    cores = result["machine"]["cores"] or 1
    load = max(result["loadavg_start"][0], result.get("loadavg_end", [0])[0])
    if load > busy_load(cores):
        return (
            f"Load average {load:.1f} on {cores} cores during the run: other processes shared the CPU, "
            "so absolute figures are pessimistic; the ratios are measured within the run."
        )
    return f"Load average {load:.1f} on {cores} cores."


# --------------------------------------------------------------------------
# Models and batches shared by the training benchmarks
# --------------------------------------------------------------------------

# The demo-like heads: two sentence classifiers and one tagger.
DEMO_CLASSES = {
    "topic": ["food", "sports", "tech", "weather"],
    "sentiment": ["negative", "positive"],
    "pos": ["ADJ", "ADV", "DET", "NOUN", "PREP", "PUNCT", "VERB", "CONJ", "NUM", "PRON", "X", "INTJ"],
}
DEMO_TYPES = {"topic": "classification", "sentiment": "classification", "pos": "tagging"}

# Encoder sizes used by the benchmarks.
MINILM = {"hidden_dim": 384, "num_layers": 6, "num_heads": 12, "intermediate_dim": 1536, "vocabulary_size": 30522}
GLUE_CONLL = {"hidden_dim": 128, "num_layers": 2, "num_heads": 4, "intermediate_dim": 256, "vocabulary_size": 8000}
TINY = {"hidden_dim": 32, "num_layers": 1, "num_heads": 2, "intermediate_dim": 64, "vocabulary_size": 500}


def bench_config(encoder, seq, batch, tasks=("topic", "sentiment", "pos"), conditioning="none", dropout=0.1, jit="auto",
                 precision="float32"):
    """A validated keras-mtl config (demo-format data, never read) for a benchmark model."""
    from keras_mtl.config import config_from_dict

    raw = {
        "name": "bench",
        "tasks": [
            {"name": t, "type": DEMO_TYPES[t], "data": {"format": "demo", "kind": t, "train": 10}} for t in tasks
        ],
        "model": {**encoder, "max_sequence_length": seq, "dropout": dropout, "task_conditioning": conditioning},
        "train": {"batch_size": batch, "epochs": 1, "jit_compile": jit, "bucket_lengths": [seq], "precision": precision},
    }
    return config_from_dict(raw)


def build_compiled(loaded, total_steps=1000):
    """The keras-mtl model of `loaded`, wrapped and compiled exactly as
    keras_mtl.train does it (`keras_mtl.training.compiled_trainer`: the
    functional network inside a `MultiTaskTrainer`). The trainer's `network`
    attribute is the plain functional model."""
    import keras

    from keras_mtl.model import build_network
    from keras_mtl.training import compiled_trainer

    cfg = loaded.config
    classes = {t.name: DEMO_CLASSES[t.name] for t in cfg.tasks}
    keras.mixed_precision.set_global_policy(cfg.train.precision)  # as keras_mtl.training.train does
    vocabulary = [f"piece{i}" for i in range(cfg.model.vocabulary_size)]  # random ids: only its size matters
    return compiled_trainer(build_network(cfg, classes, vocabulary), cfg, total_steps)


def random_batches(n, seq, vocab, tasks=("topic", "sentiment", "pos"), full=True, seed=0, task_ids=False):
    """Numpy (x, y, sample_weight) for `n` examples of length `seq` (pad id 0).

    full=True: every position is a real token (no padding); otherwise each
    row has a random length in [seq/4, seq].
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(n, seq), dtype=np.int32)
    ids[:, 0] = 2  # [CLS]
    if not full:
        lengths = rng.integers(max(2, seq // 4), seq + 1, size=n)
        ids[np.arange(seq)[None, :] >= lengths[:, None]] = 0
    x = {"token_ids": ids, "padding_mask": ids != 0}
    if task_ids:
        x["task_ids"] = rng.integers(0, len(tasks), size=n).astype(np.int32)
    y, sw = {}, {}
    for t in tasks:
        if DEMO_TYPES[t] == "tagging":
            y[t] = rng.integers(0, len(DEMO_CLASSES[t]), size=(n, seq)).astype(np.int32)
            sw[t] = (ids != 0).astype(np.float32)
        else:
            y[t] = rng.integers(0, len(DEMO_CLASSES[t]), size=n).astype(np.int32)
            sw[t] = np.ones([n], np.float32)
    return x, y, sw
