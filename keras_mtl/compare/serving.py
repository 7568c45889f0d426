"""The serving side of a comparison: the exported models' throughput on the same inputs."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from keras_mtl.compare.runs import read_json
from keras_mtl.serving.layout import read_metadata, resolve_version_dir, signature_inputs


def serving_calls(version_dir):
    """[(signature name, its input names)]: the calls that answer every task of
    an export: `serving_default`, and each task it does not answer (a pair
    task of a model that also has single-text tasks) through its own signature."""
    meta = read_metadata(resolve_version_dir(version_dir)) or {}
    inputs = signature_inputs(meta)
    tasks = list(meta.get("tasks") or {})
    answered = set(meta.get("serving_default") or tasks)
    return [("serving_default", inputs["serving_default"])] + [(t, inputs[t]) for t in tasks if t not in answered]



def serving_throughput(version_dirs, texts, batch_size=32, repeats=5, pairs=None):
    """{key: (inputs/s, seconds)}: each SavedModel answering every one of its
    tasks for the same inputs (`serving_calls`): a signature that takes
    `text` gets `texts`, one that takes `text` and `text_pair` gets `pairs`
    ((text, text_pair) tuples, as many as `texts`).

    Every model is warmed up, then timed over all inputs (batches of
    `batch_size`) in `repeats` interleaved rounds (A B C, A B C, ...) so
    load changes on a shared machine hit every model alike; best round.
    """
    import tensorflow as tf  # lazy: start-up time

    from keras_mtl.serving.predict import load_signature

    def batches(names):
        if list(names) == ["text"]:
            return [{"text": tf.constant(texts[i : i + batch_size], tf.string)} for i in range(0, len(texts), batch_size)]
        if not pairs:
            raise ValueError("serving_throughput: a signature takes text pairs; pass `pairs`")
        return [
            {"text": tf.constant([a for a, _ in pairs[i : i + batch_size]], tf.string),
             "text_pair": tf.constant([b for _, b in pairs[i : i + batch_size]], tf.string)}
            for i in range(0, len(pairs), batch_size)
        ]

    plans = {}
    for key, path in version_dirs.items():
        plan = []
        for name, names in serving_calls(path):
            loaded, fn, _ = load_signature(path, None if name == "serving_default" else name)
            feeds = batches(names)
            for feed in feeds[:2]:
                fn(**feed)  # warm-up
            plan.append((loaded, fn, feeds))
        plans[key] = plan
    best = {key: float("inf") for key in plans}
    for _ in range(repeats):
        for key, plan in plans.items():
            start = time.perf_counter()
            for _, fn, feeds in plan:
                for feed in feeds:
                    out = fn(**feed)
                _ = {k: v.numpy() for k, v in out.items()}
            best[key] = min(best[key], time.perf_counter() - start)
    return {key: (len(texts) / secs, secs) for key, secs in best.items()}



def fixed_inputs(examples, n):
    """`n` fixed texts of `examples`, and `n` fixed pairs (empty without pair
    tasks), repeated when there are fewer: a seeded draw from the sorted
    distinct texts (and pairs).

    `examples`: any iterable of `Example`s (the comparison's test examples,
    an `ExampleFile`), read once. Holds the distinct texts and pairs of
    `examples` (a text once however many examples share it), not the
    examples: the sorted list is what the seeded permutation indexes.
    """
    rng = np.random.default_rng(0)

    def pick(values):
        values = sorted(values)
        if not values:
            return []
        picked = [values[i] for i in rng.permutation(len(values))[:n]]
        while len(picked) < n:  # few test texts: repeat them
            picked += picked[: n - len(picked)]
        return picked

    texts, pairs = set(), set()
    for ex in examples:
        texts.add(ex.text)
        if ex.text_pair is not None:
            pairs.add(ex.texts)
    return pick(texts), pick(pairs)



def models_digest(seed_runs, names):
    """What identifies the models a serving measurement timed: a hash of the
    markers of one seed's multi-task and single-task runs (their configs, with
    data files by content)."""
    markers = [seed_runs[k].get("marker") for k in ["mtl", *names]]
    if any(m is None for m in markers):
        return None
    return hashlib.sha256(json.dumps(markers, sort_keys=True).encode("utf-8")).hexdigest()[:16]



def earlier_serving(dirs, runs, names, texts, batch):
    """The serving measurement of an earlier invocation, from the first of
    `dirs` whose `compare.json` has one that timed the same models (the same
    seed, and `models_digest` of its runs equal to this invocation's: a run
    retrained since, or other data, does not match) on as many inputs at the
    same batch; None if none does. A comparison rebuilt from `--records` has no
    models to time, and keeps the table this way instead of losing it."""
    for d in dirs:
        saved = read_json(Path(d) / "compare.json")
        s = saved.get("serving") if isinstance(saved, dict) else None
        if not isinstance(s, dict) or s.get("seed") not in runs or not s.get("models"):
            continue
        if s.get("texts") != texts or s.get("batch_size") != batch or set(s.get("single") or ()) != set(names):
            continue
        if s["models"] == models_digest(runs[s["seed"]], names):
            return {**s, "reused": True}
    return None



def measure_serving(seed_dir, names, texts, pairs, batch, mtl_tasks=None):
    """Export seed_dir's multi-task run (its `mtl_tasks` heads; default all)
    and its single-task runs, and time them answering every task in `names`."""
    from keras_mtl.serving.export import export  # lazy: imports TensorFlow

    out = {"batch_size": batch, "texts": len(texts), "pairs": bool(pairs), "single": {}}
    exported = {}
    for key in ["mtl", *names]:
        path = seed_dir / ("mtl" if key == "mtl" else f"single-{key}")
        base = seed_dir.parent / "export" / ("mtl" if key == "mtl" else f"single-{key}")
        shutil.rmtree(base, ignore_errors=True)
        exported[key] = export(path, out=base, warmup=False, tasks=mtl_tasks if key == "mtl" else None)
    timed = serving_throughput(exported, texts, batch, pairs=pairs)
    tps, secs = timed["mtl"]
    out["mtl"] = {"texts_per_s": tps, "seconds": secs, "tasks_answered": len(names),
                  "calls": len(serving_calls(exported["mtl"]))}
    total = 0.0
    for t in names:
        tps_t, secs_t = timed[t]
        out["single"][t] = {"texts_per_s": tps_t, "seconds": secs_t, "tasks_answered": 1}
        total += secs_t
    out["singles_all_tasks_texts_per_s"] = len(texts) / total
    out["speedup"] = total / secs  # time of T single models / time of the one MTL model, same texts, all tasks
    return out
