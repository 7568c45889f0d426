"""`keras-mtl data CONFIG`: what the data looks like before training on it."""

import collections

import numpy as np

from keras_mtl.data import progress
from keras_mtl.data.load import SPLITS
from keras_mtl.tasks import get_task_type


def _lengths(values):
    if not values:
        return {"min": 0, "mean": 0.0, "p95": 0, "max": 0}
    a = np.asarray(values)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "p95": int(np.percentile(a, 95)), "max": int(a.max())}


def summarize_data(config, data, encoder=None):
    """Per task and split: counts, label counts, word/piece lengths, truncation.

    (`keras_mtl.prepare.data_summary` loads the data and picks the encoder.)

    Args:
        config: ExperimentConfig.
        data: its `TaskData` (`load_task_data`).
        encoder: the run's `TextEncoder`, for the word-piece lengths and
            truncation (None: words only).
    """
    pieces = _piece_lengths(encoder, data, config) if encoder is not None else None
    tasks = {task.name: _task_summary(task, data, pieces) for task in config.tasks}
    merged = {split: len(data.splits[split]) for split in SPLITS}
    return {
        "name": config.name,
        "max_sequence_length": config.model.max_sequence_length,
        "tasks": tasks,
        "merged_examples": merged,
        "overlap": data.overlap,
        "dropped_from_train": data.dropped,
    }


def _piece_lengths(encoder, data, config, chunk=8192):
    """`{(text, text_pair): (pieces, cut text, cut text_pair)}` of every distinct
    text (or pair) of every task and split.

    Tasks on the same file share their texts: each is encoded once.
    """
    from keras_mtl.data.tokenize import encode_examples

    keys = list(
        dict.fromkeys(
            ex.texts for task in config.tasks for split in SPLITS for ex in data.per_task[task.name][split]
        )
    )
    lengths = {}
    with progress.step("measuring word-piece lengths", total=len(keys)) as advance:
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            out = encode_examples(encoder, [a for a, _ in part], [b for _, b in part])
            cuts = zip(out.truncated_text.tolist(), out.truncated_text_pair.tolist())
            lengths.update(zip(part, ((len(ids), *cut) for ids, cut in zip(out.token_ids, cuts))))
            advance(len(part))
    return lengths


def _task_summary(task, data, pieces):
    kind = get_task_type(task.type)
    pairs = any(ex.text_pair is not None for split in SPLITS for ex in data.per_task[task.name][split])
    per_split = {}
    for split in SPLITS:
        examples = data.per_task[task.name][split]
        labels = collections.Counter()
        for ex in examples:
            labels.update(kind.label_values(ex.labels[task.name]))
        entry = {
            "examples": len(examples),
            "words": _lengths([len(ex.words) for ex in examples]),
        }
        if not kind.has_classes:  # numeric labels
            vals = [float(ex.labels[task.name]) for ex in examples]
            entry["values"] = _lengths(vals) if vals else {}
        else:
            entry["labels"] = dict(labels.most_common())
        if pieces is not None and examples:
            measured = [pieces[ex.texts] for ex in examples]
            entry["pieces"] = _lengths([m[0] for m in measured])
            entry["truncated"] = int(sum(m[1] or m[2] for m in measured))
            if pairs:  # which side lost pieces (a pair may lose on both)
                entry["truncated_text"] = int(sum(m[1] for m in measured))
                entry["truncated_text_pair"] = int(sum(m[2] for m in measured))
        per_split[split] = entry
    summary = {"type": task.type, "splits": per_split, "unseen_labels": data.unseen[task.name]}
    if pairs:
        summary["pairs"] = True  # sentence pairs; "words" counts the first text
    return summary


def format_summary(summary, verbose=False):
    """The report `keras-mtl data` prints.

    Texts of a dev/test split that some task trains on (a leak) get one
    WARNING line per split, with counts per task; `verbose` adds one line per
    pair of task splits (the full list is in `summary["overlap"]["leaks"]`,
    i.e. in `keras-mtl data --json`, either way).
    """
    lines = [f"data of {summary['name']} (max_sequence_length {summary['max_sequence_length']})", ""]
    for name, task in summary["tasks"].items():
        kind = f"{task['type']}, sentence pairs" if task.get("pairs") else task["type"]
        lines.append(f"task {name} ({kind})")
        for split, e in task["splits"].items():
            pieces = e.get("pieces")
            piece_txt = f", pieces mean {pieces['mean']} / p95 {pieces['p95']} / max {pieces['max']}" if pieces else ""
            trunc = f", truncated {e['truncated']}" if "truncated" in e else ""
            if "truncated_text_pair" in e:
                trunc += f" (cut in text {e['truncated_text']}, in text_pair {e['truncated_text_pair']})"
            lines.append(
                f"  {split:5s} {e['examples']:7d} examples, words mean {e['words']['mean']} / max {e['words']['max']}"
                f"{piece_txt}{trunc}"
            )
            if "labels" in e and e["labels"]:
                top = list(e["labels"].items())
                shown = ", ".join(f"{k}: {v}" for k, v in top[:8]) + (f", ... ({len(top)} labels)" if len(top) > 8 else "")
                lines.append(f"        labels {shown}")
        if task["unseen_labels"]:
            lines.append(f"  labels not seen in train: {task['unseen_labels']}")
    lines.append("")
    lines.append(f"merged examples (tasks sharing a text become one example): {summary['merged_examples']}")
    overlap = summary["overlap"] if isinstance(summary["overlap"], dict) else {}
    shared = overlap.get("shared", {})
    if shared:
        lines.append("texts shared between tasks: " + ", ".join(f"{k}: {v}" for k, v in shared.items()))
    dropped = {task: n for task, n in summary.get("dropped_from_train", {}).items() if n}
    if dropped:
        lines.append(
            "removed from train (splits.leaks: drop; their texts are in some task's dev or test): "
            + ", ".join(f"{k}: {v}" for k, v in dropped.items())
        )
    lines += leak_lines(overlap, verbose)
    return "\n".join(lines)


def leak_lines(overlap, verbose=False):
    """One WARNING line per dev/test split holding texts that are trained on.

    Args:
        overlap: `splits.overlap_report(...)`.
        verbose: also one indented line per (task split, task train) pair.
    """
    leaks = overlap.get("leaks", [])
    by_split = overlap.get("leaks_by_split", {})
    lines = []
    for split, entry in by_split.items():
        per_task = ", ".join(f"{task} {n}" for task, n in entry["tasks"].items())
        noun = "text occurs" if entry["texts"] == 1 else "texts occur"
        hint = "" if verbose else "; --verbose lists the task pairs"
        lines.append(
            f"WARNING: {entry['texts']} {split} {noun} in training data too, so a model "
            f"is scored on texts it trained on (per task: {per_task}{hint}; "
            "splits.leaks: drop removes them from training)"
        )
        if verbose:
            for leak in leaks:
                if leak["text_in"].rsplit(":", 1)[1] == split:
                    lines.append(f"  {leak['count']} texts of {leak['text_in']} also occur in {leak['also_in']}")
    return lines
