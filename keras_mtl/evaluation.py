"""Per-task predictions and metrics, over the examples that have each label.

Keras' own per-output metrics average over every batch, zero-weight steps
included, which is wrong when a batch holds only some tasks' labels. Here
each task is scored on exactly the examples labelled for it, with the
metrics of `keras_mtl.metrics` computed on label strings.
"""

import logging

import numpy as np

from keras_mtl import metrics as metrics_lib
from keras_mtl.data.buckets import bucket_lengths
from keras_mtl.data.pipeline import eval_batches
from keras_mtl.tasks import for_task


class ExpectedRetracingFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning.

    Evaluation pads every batch to one of a few fixed lengths, so the predict
    function is traced once per length by design; TensorFlow warns after
    five traces, which reads like a bug to the user. Every other record
    passes.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING_FILTER = ExpectedRetracingFilter()


def predict_split(model, split, config, classes, pad_id=0, raw=False):
    """{task: (example indices, predicted labels)} for every task.

    With `raw`, each prediction is instead the model's output for the
    example (`merged_outputs`: {output: array with a batch axis of 1}, per
    word for tagging), e.g. to compare probabilities with an export's.

    A task reads the rows of `split` that it weighs (`split.weights`): an
    example with one such row is decoded from it, as before windows existed;
    a long text's several rows are merged (`merge_rows`: tagging takes each
    word from the window(s) that read it, `model.window_merge`; a sentence
    task under `long_inputs: windows` the mean of its windows' logits), so
    every word of every text gets a tag.
    """
    logging.getLogger("tensorflow").addFilter(_RETRACING_FILTER)  # idempotent
    tasks, m = config.tasks, config.model
    lengths = bucket_lengths(config.train.bucket_lengths, m.max_sequence_length)
    batch = config.train.eval_batch_size
    results = {t.name: ([], []) for t in tasks}
    heads = {t.name: for_task(t, classes[t.name]) for t in tasks}
    rows_read = {t.name: np.bincount(split.row_example[split.indices(t.name)], minlength=len(split.examples))
                 for t in tasks}
    # Only predictions are kept: the outputs of a text read in several rows wait for its last row
    # (`pending`: example -> [(row, its outputs)]), are merged and decoded then (`done`), and dropped.
    pending = {t.name: {} for t in tasks}
    done = {t.name: {} for t in tasks}
    if m.sees_task:
        groups = [(split.indices(t.name), i, [t]) for i, t in enumerate(tasks)]
    else:
        union = np.flatnonzero(sum(split.weights[t.name] for t in tasks) > 0)
        groups = [(union, None, tasks)]
    for indices, task_id, group in groups:
        for x, chunk in eval_batches(split, indices, batch, lengths, pad_id, task_id):
            out = {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}
            for task in group:
                idx, preds = results[task.name]
                head = heads[task.name]
                for row, i in enumerate(chunk):
                    if split.weights[task.name][i] > 0:
                        e = int(split.row_example[i])
                        if rows_read[task.name][e] == 1 and not raw:
                            idx.append(e)
                            preds.append(head.decode(out, row, split.word_starts[i]))
                        else:
                            outputs = {k: np.array(out[k][row]) for k in head.output_names}
                            parts = pending[task.name].setdefault(e, [])
                            parts.append((i, outputs))
                            if len(parts) == rows_read[task.name][e] and not raw:  # its last row: decode it now
                                done[task.name][e] = _decoded(head, split, pending[task.name].pop(e))
    for task in tasks:
        idx, preds = results[task.name]
        finished = {**done[task.name],
                    **{e: _decoded(heads[task.name], split, parts, raw) for e, parts in pending[task.name].items()}}
        for e in sorted(finished):
            idx.append(e)
            preds.append(finished[e])
    return results


def _decoded(head, split, parts, raw=False):
    """The prediction of one example read in several rows (`raw`: its merged outputs)."""
    merged, starts = merged_outputs(head, split, parts)
    return merged if raw else head.decode(merged, 0, starts)


def merged_outputs(head, split, parts):
    """The outputs of one example from its rows: `parts` = [(row, {output: its value})].

    Returns ({output: array [1, ...]}, word_starts) for `head.decode(outputs,
    0, word_starts)`. Tagging: per word ([1, W, ...]), from the rows whose
    `word_starts` read it (one under `window_merge: central`, all windows
    holding it under `mean`), merged with `head.merge_windows`; a sentence
    task: its rows merged. A single row's values are kept exactly.
    """
    if not head.token_level:
        return {k: head.merge_windows([o[k] for _, o in parts])[None] for k in parts[0][1]}, None
    words = len(split.word_starts[parts[0][0]])
    per_word = {k: [[] for _ in range(words)] for k in parts[0][1]}
    for row, outputs in parts:
        for w, position in enumerate(split.word_starts[row]):
            if position < len(split.token_ids[row]):
                for k, value in outputs.items():
                    per_word[k][w].append(value[position])
    read = [w for w in range(words) if per_word[head.output_names[0]][w]]
    starts = np.full([words], words, np.int64)  # a word no row read (past a max_windows bound) gets no tag
    starts[read] = np.arange(len(read))
    merged = {}
    for k, values in per_word.items():
        stacked = [head.merge_windows(values[w]) for w in read]
        merged[k] = np.stack(stacked)[None] if stacked else np.zeros([1, 0], np.float32)
    return merged, starts


def score(config, split, predictions):
    """{task: {metric: value}} from `predict_split` output."""
    scores = {}
    for task in config.tasks:
        idx, preds = predictions[task.name]
        truth = [split.examples[i].labels[task.name] for i in idx]
        if not idx:
            scores[task.name] = {m: None for m in task.metrics}
            continue
        options = {"positive_class": task.positive_class}
        scores[task.name] = {m: metrics_lib.compute_metric(m, truth, preds, **options) for m in task.metrics}
    return scores


def evaluate_split(model, split, config, classes, pad_id=0):
    return score(config, split, predict_split(model, split, config, classes, pad_id))


def report_markdown(title, scores, counts=None, extra_lines=()):
    lines = [f"# {title}", "", "| task | metric | value | examples |", "|---|---|---|---|"]
    for task, values in scores.items():
        for name, value in values.items():
            shown = "n/a" if value is None else f"{100 * value:.2f}" if name != "mse" else f"{value:.4f}"
            n = counts.get(task, "") if counts else ""
            lines.append(f"| {task} | {name} | {shown} | {n} |")
    lines.append("")
    lines.append("Scores are percentages (mse: raw), computed over the examples labelled for each task.")
    lines += list(extra_lines)
    return "\n".join(lines) + "\n"


def evaluate_run(workdir, split="test"):
    """Evaluate a trained work dir on a split -> {"tasks": {task: {metric: value}}}."""
    from keras_mtl.run import load_run

    run = load_run(workdir)
    model = run.load_model()  # a damaged model.keras: one error, before the data work
    encoder = run.encoder()
    enc = held_out_split(run, split, encoder)
    scores = evaluate_split(model, enc, run.config, run.classes, encoder.pad_id)
    counts = {t.name: int(len(enc.example_indices(t.name))) for t in run.config.tasks}
    return {"split": split, "tasks": scores, "examples": counts}


def held_out_split(run, split, encoder):
    """A split of a trained run's data, encoded as the run reads it (`EncodedSplit`).

    From the prepared cache: the entry its `train` read (keyed by the config,
    or for a fine-tuned run by its vocabulary), or one written now, keyed by
    the run's vocabulary, when there is none. An entry is used only when its
    vocabulary and label maps are the run's; otherwise (the data changed
    since and has other labels) the data is read and encoded in memory with
    the run's label maps, as before the cache.
    """
    from keras_mtl.config import load_config
    from keras_mtl.data import cached
    from keras_mtl.data.load import load_task_data
    from keras_mtl.prepare import cache_key, cache_of, check_held_out_labels, write_entry

    loaded = load_config(run.files.config)
    cache = cache_of(loaded)
    vocabulary = list(run.vocabulary)
    classes = {k: list(v) for k, v in run.classes.items()}
    for tokenization in (None, run.tokenization()):
        entry = cache.open(cache_key(loaded.config, tokenization))
        built = False
        if entry is None and tokenization is not None:
            entry, built = write_entry(loaded, cache, tokenization)
        if entry is None or cached.vocabulary_of(entry) != vocabulary or entry.meta.get("classes") != classes:
            continue
        data = cached.task_data(entry)
        if not built:
            check_held_out_labels(loaded.config, data)
        return cached.encoded_split(entry, split, data.splits[split], compact=True)
    data = load_task_data(run.config)
    return run.encode(data.splits[split], encoder=encoder)


def write_test_report(files, model, test, config, classes, pad_id, title, summary, **fields):
    """Score `model` on the encoded test split and write `report.json` / `report.md`.

    Args:
        files: the `RunFiles` to write into.
        title: the heading of report.md; `summary`: its last line.
        **fields: more entries of report.json (`seconds`, `epochs`, ...).

    Returns:
        dict: the content of report.json.
    """
    import keras

    from keras_mtl.disk import write_json

    scores = evaluate_split(model, test, config, classes, pad_id) if len(test) else {}
    counts = {t.name: int(len(test.example_indices(t.name))) for t in config.tasks}
    report = {
        "name": config.name,
        "split": "test",
        "tasks": scores,
        "examples": counts,
        "primary_metrics": {t.name: t.primary_metric for t in config.tasks},
        **fields,
        "backend": keras.backend.backend(),
    }
    write_json(files.report_json, report)
    files.report_md.write_text(report_markdown(title, scores, counts, ["", summary]), encoding="utf-8")
    return report
