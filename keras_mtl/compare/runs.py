"""The sub-runs of a comparison: train or reuse one, and read what the report needs.

A sub-run is identified by its marker (`run_marker`: its config, with every
data file replaced by a hash of its content), so a finished identical run is
reused, from its work dir or from a records directory (`--records`: the
small files the report needs, `RECORD_FILES`, without the model).
"""

import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from keras_mtl.errors import ModelError
from keras_mtl import precision
from keras_mtl.disk import write_json
from keras_mtl.record import RunRecord
from keras_mtl.workdir import RunFiles


# What a finished sub-run leaves that the report needs: its config marker, its
# reports, and its parameter count and test predictions. A records directory
# (`--records`) keeps copies of these small files, so a comparison spread over
# several machines or sessions goes on where it stopped without the models.
RECORD_FILES = ("compare_run.json", RunFiles(Path()).report_json.name, RunFiles(Path()).run.name, "compare_result.json")
COMPARE_FILES = ("compare.json", "compare.md", "curves.png", "deltas.png")  # test_predictions.json: rebuilt from the runs
DATA_SOURCES = ("train", "dev", "test", "data_dir")  # the data keys of a task that may hold file paths
CONTENT_PREFIX = "sha256:"  # a data file in a marker: its content, wherever it lies



def _relative_to(value, root):
    """`value` with every absolute path in it (a str, or the values of a dict) made relative to `root`."""
    if isinstance(value, dict):
        return {k: _relative_to(v, root) for k, v in value.items()}
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, root)
    return value



@functools.lru_cache(maxsize=256)
def _file_digest(path, size, mtime_ns):
    """sha256 of a file's bytes (cached per path, size and mtime: a marker is
    built for every sub-run, and the data files are the same each time)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return CONTENT_PREFIX + h.hexdigest()



def _data_identity(value, root):
    """What identifies one data source in a marker: a file by its content (the
    same data matches wherever it lies, and a file edited in place does not);
    a directory (a TFDS `data_dir`) or a path that is not there by its path
    relative to `root`. A relative path is one from a saved marker, relative
    to the root it was written for."""
    if isinstance(value, dict):
        return {k: _data_identity(v, root) for k, v in value.items()}
    if not isinstance(value, str) or value.startswith(CONTENT_PREFIX):
        return value
    path = Path(os.path.normpath(value if os.path.isabs(value) else root / value))  # lexically: the inverse of relpath
    try:
        if path.is_file():
            stat = path.stat()
            return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        pass  # unreadable: identified by its path, as a missing file is
    return _relative_to(value, root)



# Config fields added after comparisons were first recorded, with their defaults. A
# marker leaves such a field out while it holds its default, so a sub-run recorded
# before the field existed (which trained as the default does) still matches.
LATER_FIELDS = {
    "tasks.*.role": "target",
    "model.window_stride": None,  # long texts (issue 28): windows for tagging, long_inputs for sentence tasks
    "model.window_merge": "mean",
    "model.max_windows": 16,
    "model.long_inputs": "truncate",
    "cache.vocabulary_sample": 1_000_000,
}
# Config sections that never change what a run learns (where the prepared data is
# kept, how its files are identified, how many processes encode it): left out of every marker, so a comparison
# continued with another cache directory reuses its runs.
MARKER_IGNORES = ("cache.dir", "cache.full_hash", "cache.encode_processes")



def _omit_later_defaults(config):
    """`config` (a marker's config dict, changed in place) without the `LATER_FIELDS` at their defaults."""
    ignored = {path: None for path in MARKER_IGNORES}
    for path, default in [*ignored.items(), *LATER_FIELDS.items()]:
        section, _, key = path.rpartition(".")
        if section == "tasks.*":
            holders = [t for t in config.get("tasks") or [] if isinstance(t, dict)]
        else:
            holder = config.get(section) if section else config
            holders = [holder] if isinstance(holder, dict) else []
        for holder in holders:
            if key in holder and (path in ignored or holder[key] == default):
                del holder[key]
    if config.get("cache") == {}:  # a section left empty: as a config from before it existed
        del config["cache"]
    return config



def run_marker(raw, root):
    """What identifies a sub-run: its config, with every data file replaced by
    a hash of its content and teacher paths made relative to the comparison's
    root. The same comparison in any directory or clone, with the same data
    anywhere, matches; other data does not. A recorded marker with paths
    (older comparisons: absolute, or relative to the root they ran in) is read
    the same way, through the files those paths name from `root`."""
    marker = json.loads(json.dumps({"config": raw}))
    root = Path(root).resolve()
    if isinstance(marker["config"], dict):
        _omit_later_defaults(marker["config"])
    for task in (marker["config"] or {}).get("tasks", []):
        if not isinstance(task, dict):
            continue
        if task.get("teacher"):
            task["teacher"] = _relative_to(task["teacher"], root)
        data = task.get("data")
        if isinstance(data, dict):
            for key in DATA_SOURCES:
                if key in data:
                    data[key] = _data_identity(data[key], root)
    return marker



def examples_fingerprint(examples):
    """A hash of the test examples (texts and labels, in order): predictions
    recorded against other examples are not reused."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, e.text_pair, sorted(e.labels.items())], default=list).encode("utf-8"))
    return f"{len(examples)}:{h.hexdigest()[:16]}"



def read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None



def is_finished(path, marker, root, need_model=False):
    """True when `path` holds a finished sub-run of this exact config: its records,
    and its model where the caller needs it (a teacher, a serving measurement)."""
    if not all((path / n).exists() for n in RECORD_FILES[:3]):
        return False
    if need_model and not RunFiles(path).model.exists():
        return False
    if not RunFiles(path).model.exists() and not (path / "compare_result.json").exists():
        return False
    saved = read_json(path / "compare_run.json")
    if not isinstance(saved, dict):
        return False
    # the config read as a marker now reads it (data by content); a start (a fine-tuned run's) as it was written
    found = {**saved, **run_marker(saved.get("config"), root)}
    return found == marker and _same_policy(path, marker)



def _same_policy(path, marker):
    """Whether the run in `path` trained under the dtype policy its config gives
    here: `train.precision: auto` resolves per machine (bfloat16 on one,
    float32 on another), and a comparison continued elsewhere must not mix
    the two. A run.json without `precision` is from before it was recorded,
    when every run trained in float32."""
    train_section = ((marker or {}).get("config") or {}).get("train") or {}
    if "precision" not in train_section:
        return True  # a hand-made marker: nothing to check
    info = read_json(RunFiles(path).run) or {}
    return (info.get("precision") or "float32") == precision.resolve_precision(train_section["precision"])[0]



def _as_prediction(value):
    return tuple(value) if isinstance(value, list) else value  # tag sequences and label sets are tuples



def recorded_result(path, fingerprint):
    """(params, predictions) from compare_result.json, or None when it is missing
    or was computed on other test examples."""
    saved = read_json(path / "compare_result.json")
    if not isinstance(saved, dict) or saved.get("test") != fingerprint:
        return None
    try:
        predictions = {t: {int(i): _as_prediction(v) for i, v in pairs} for t, pairs in saved["predictions"].items()}
        return int(saved["params"]), predictions
    except (KeyError, TypeError, ValueError, AttributeError):  # a damaged record: the run is not reused from it
        return None



def train_run(loaded, path, verbose, reuse, log, test_examples=None, root=None, records=None, need_model=False,
              start=None):
    """Train one run into `path` (or reuse a finished identical one, from `path`
    or from the `records` directory); its results, with its parameter count and
    its predictions on `test_examples` (None without them: no predictions,
    and a finished run needs its model to be reused). `root`: the comparison's
    directory (default: the parent of `path`).

    `start`: a fine-tuned run's starting point, `(marker, make)`: the marker of
    the run it starts from (part of this run's marker: another start is
    another run) and a function giving the `finetuning.StartFrom` (called only
    when the run trains, so a recorded run needs no model to start from)."""
    from keras_mtl.training import train  # lazy: imports TensorFlow (start-up time of the CLI's argument errors)

    root = Path(root) if root is not None else path.parent
    marker = run_marker(loaded.raw, root)
    if start is not None:
        marker["start"] = start[0]
    if test_examples is None:
        need_model = True  # the parameter count comes from the model
    fingerprint = examples_fingerprint(test_examples) if test_examples is not None else None
    rel = path.relative_to(root)
    finished = reuse and is_finished(path, marker, root, need_model)
    if reuse and records is not None and not finished and not need_model and is_finished(records / rel, marker, root):
        path.mkdir(parents=True, exist_ok=True)  # a run finished in another session: its records stand in for it
        for name in RECORD_FILES:
            shutil.copy2(records / rel / name, path / name)
        finished = True
    recorded = None
    if finished and fingerprint is not None:
        recorded = recorded_result(path, fingerprint)
        finished = recorded is not None or RunFiles(path).model.exists()
        log(f"  reusing {path}" if finished else
            f"  {path}: recorded on other test examples and without its model: retraining")
    elif finished:
        log(f"  reusing {path}")
    if finished:
        write_json(path / "compare_run.json", marker)  # the portable form (older comparisons wrote paths)
    if not finished:
        import keras

        keras.backend.clear_session()
        for name in RECORD_FILES:
            (path / name).unlink(missing_ok=True)
        started = time.time()
        train(loaded, workdir=path, verbose=verbose, init_from=start[1]() if start is not None else None)
        log(f"  trained {path} in {time.time() - started:.0f} s")
        write_json(path / "compare_run.json", marker)
    if recorded is None and test_examples is None:
        recorded = _params_and_predictions(path, None)
    elif recorded is None:
        recorded = _params_and_predictions(path, test_examples)
        write_json(path / "compare_result.json", {
            "params": recorded[0],
            "test": fingerprint,
            "predictions": {t: [[i, p] for i, p in sorted(got.items())] for t, got in recorded[1].items()},
        }, compact=True)
    if records is not None:
        (records / rel).mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (path / name).exists():  # compare_result.json only with test examples
                shutil.copy2(path / name, records / rel / name)
    files = RunFiles(path)
    report = json.loads(files.report_json.read_text(encoding="utf-8"))
    info = RunRecord.read(files.run)
    params, predictions = recorded
    return {"report": report, "info": info, "params": params, "predictions": predictions,
            "has_model": RunFiles(path).model.exists(), "marker": marker}



def _params_and_predictions(path, test_examples):
    """The parameter count of the run in `path`, and its per-example predictions
    on `test_examples` (the multi-task config's test split, so every run of a
    comparison is scored on the same indices): {task: {index: prediction}}."""
    import keras  # lazy, as below: TensorFlow

    from keras_mtl.evaluation import predict_split
    from keras_mtl.run import load_run

    keras.backend.clear_session()
    run = load_run(path)
    model = run.load_model()
    if test_examples is None:
        return int(model.count_params()), None
    encoder = run.encoder()
    encoded = run.encode(test_examples, encoder=encoder)
    predicted = predict_split(model, encoded, run.config, run.classes, encoder.pad_id) if len(test_examples) else {}
    predictions = {t: dict(zip((int(i) for i in idx), preds)) for t, (idx, preds) in predicted.items()}
    return int(model.count_params()), predictions



def paired_samples(runs, names, primary, tasks_cfg, test_examples):
    """The `bootstrap_compare` samples: per task the true labels of its test
    examples and every seed's multi-task and single-task predictions, on the
    same (sorted) example indices. `test_examples` is read once, in order
    (an `ExampleFile` is not indexed example by example): only the labels of
    the predicted examples are kept."""
    indices = {}
    for t in names:
        idx = sorted(runs[0]["mtl"]["predictions"].get(t, {}))
        for s in runs:
            for kind in ("mtl", t):
                got = runs[s][kind]["predictions"].get(t, {})
                if sorted(got) != idx:
                    raise ModelError(
                        f"compare: task {t!r}: the {'multi' if kind == 'mtl' else 'single'}-task run of seed {s} "
                        f"predicted {len(got)} test examples, the multi-task run of seed 0 {len(idx)}"
                    )
        indices[t] = idx
    truth = labels_at(test_examples, {t: set(idx) for t, idx in indices.items()})
    out = {}
    for t in names:
        idx = indices[t]
        out[t] = {
            "metric": primary[t],
            "truth": [truth[t][i] for i in idx],
            "indices": idx,
            "mtl": [[runs[s]["mtl"]["predictions"].get(t, {})[i] for i in idx] for s in runs],
            "single": [[runs[s][t]["predictions"].get(t, {})[i] for i in idx] for s in runs],
            "options": {"positive_class": tasks_cfg[t].positive_class},
        }
    return out



def labels_at(examples, wanted):
    """task -> {index: label} of the examples whose indices are in `wanted[task]`, one pass over `examples`."""
    out = {t: {} for t in wanted}
    for i, ex in enumerate(examples):
        for t, idx in wanted.items():
            if i in idx:
                out[t][i] = ex.labels[t]
    return out
