"""`keras-mtl data CONFIG`: what the data looks like before training on it."""

import collections

import numpy as np

from keras_mtl.data.load import SPLITS, load_task_data


def _lengths(values):
    if not values:
        return {"min": 0, "mean": 0.0, "p95": 0, "max": 0}
    a = np.asarray(values)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "p95": int(np.percentile(a, 95)), "max": int(a.max())}


def data_summary(config, tokenize=True):
    """Per task and split: counts, label counts, word/piece lengths, truncation.

    Args:
        config: a LoadedConfig or ExperimentConfig.
        tokenize: also compute word-piece lengths (builds the vocabulary).
    """
    from keras_mtl.data.tokenize import compute_vocabulary, encode_texts, make_encoder

    config = getattr(config, "config", config)
    data = load_task_data(config)
    encoder = None
    if tokenize:
        if config.model.preset:
            encoder = make_encoder(None, config.model)
        else:
            texts = sorted({ex.text for ex in data.splits["train"]})
            vocab = compute_vocabulary(texts, config.model.vocabulary_size, config.model.lowercase, config.task_names)
            encoder = make_encoder(vocab, config.model)
    tasks = {}
    for task in config.tasks:
        per_split = {}
        for split in SPLITS:
            examples = data.per_task[task.name][split]
            labels = collections.Counter()
            for ex in examples:
                value = ex.labels[task.name]
                if task.type in ("tagging", "multilabel"):
                    labels.update(value)
                elif task.type == "classification":
                    labels[value] += 1
            entry = {
                "examples": len(examples),
                "words": _lengths([len(ex.words) for ex in examples]),
            }
            if task.type == "regression":
                vals = [float(ex.labels[task.name]) for ex in examples]
                entry["values"] = _lengths(vals) if vals else {}
            else:
                entry["labels"] = dict(labels.most_common())
            if encoder is not None and examples:
                ids, _, truncated = encode_texts(encoder, [ex.text for ex in examples])
                entry["pieces"] = _lengths([len(x) for x in ids])
                entry["truncated"] = int(truncated.sum())
            per_split[split] = entry
        tasks[task.name] = {"type": task.type, "splits": per_split, "unseen_labels": data.unseen[task.name]}
    merged = {split: len(data.splits[split]) for split in SPLITS}
    return {
        "name": config.name,
        "max_sequence_length": config.model.max_sequence_length,
        "tasks": tasks,
        "merged_examples": merged,
        "overlap": data.overlap,
    }


def format_summary(summary):
    lines = [f"data of {summary['name']} (max_sequence_length {summary['max_sequence_length']})", ""]
    for name, task in summary["tasks"].items():
        lines.append(f"task {name} ({task['type']})")
        for split, e in task["splits"].items():
            pieces = e.get("pieces")
            piece_txt = f", pieces mean {pieces['mean']} / p95 {pieces['p95']} / max {pieces['max']}" if pieces else ""
            trunc = f", truncated {e['truncated']}" if "truncated" in e else ""
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
    shared = summary["overlap"].get("shared", {}) if isinstance(summary["overlap"], dict) else {}
    if shared:
        lines.append("texts shared between tasks: " + ", ".join(f"{k}: {v}" for k, v in shared.items()))
    leaks = summary["overlap"].get("leaks", []) if isinstance(summary["overlap"], dict) else []
    for leak in leaks:
        lines.append(
            f"WARNING: {leak['count']} texts of {leak['text_in']} also occur in {leak['also_in']} "
            "(a test/dev text trained on)"
        )
    return "\n".join(lines)
