"""`keras-mtl data CONFIG`: what the data looks like before training on it."""

import collections
import dataclasses

import numpy as np

from keras_mtl.data import progress, windows
from keras_mtl.data.load import SPLITS
from keras_mtl.tasks import get_task_type


def _lengths(values):
    if not values:
        return {"min": 0, "mean": 0.0, "p95": 0, "max": 0}
    a = np.asarray(values)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "p95": int(np.percentile(a, 95)), "max": int(a.max())}


def summarize_data(config, data, encoder=None):
    """Per task and split: counts, label counts, word/piece lengths, truncation, windows.

    `pieces` are the uncut lengths (with `[CLS]`, and a pair's `[SEP]`s).
    `truncated` counts the texts whose pieces the task drops as it reads
    them (keras_mtl.data.windows): a sentence task under `long_inputs:
    truncate / head_tail` cuts a text longer than `max_sequence_length`; a
    task reading windows (tagging, and `long_inputs: windows`) drops only
    what a word longer than a whole window has past it (and a pair's
    `text_pair` beyond its share). Such a task also gets `windows` (texts
    read in several windows, and the most windows of one text) and, in the
    training split, `over_max_windows` (texts with more windows than
    `model.max_windows`, whose later windows are not trained) and, for
    tagging, `untrained_words` (their labelled words no kept window trains).

    (`keras_mtl.prepare.data_summary` loads the data and picks the encoder.)

    Args:
        config: ExperimentConfig.
        data: its `TaskData` (`load_task_data`).
        encoder: the run's `TextEncoder`, for the word-piece lengths and
            truncation (None: words only).
    """
    pieces = _piece_lengths(encoder, data, config) if encoder is not None else None
    tasks = {task.name: _task_summary(task, data, pieces, config.model) for task in config.tasks}
    merged = {split: len(data.splits[split]) for split in SPLITS}
    return {
        "name": config.name,
        "max_sequence_length": config.model.max_sequence_length,
        "long_inputs": config.model.long_inputs,
        "max_windows": config.model.max_windows,
        "tasks": tasks,
        "merged_examples": merged,
        "overlap": data.overlap,
        "dropped_from_train": data.dropped,
    }


def _piece_lengths(encoder, data, config, chunk=8192):
    """`{(text, text_pair): Measured}` of every distinct text (or pair) of every task and split.

    Tasks on the same file share their texts: each is encoded once.
    """
    from keras_mtl.data.tokenize import encode_pieces

    keys = list(
        dict.fromkeys(
            ex.texts for task in config.tasks for split in SPLITS for ex in data.per_task[task.name][split]
        )
    )
    lengths = {}
    with progress.step("measuring word-piece lengths", total=len(keys)) as advance:
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            out = encode_pieces(encoder, [a for a, _ in part], [b for _, b in part])
            lengths.update((key, _measure(encoder, *uncut)) for key, uncut in zip(part, out))
            advance(len(part))
    return lengths


@dataclasses.dataclass(frozen=True)
class Measured:
    """One text (pair) as the encoder reads it."""

    pieces: int  # uncut, with [CLS] (and a pair's two [SEP])
    cut_text: bool  # the cut encoding (truncate / head_tail) drops pieces of `text`
    cut_text_pair: bool  # ... of `text_pair`
    windows: int  # windows when read in windows
    over_long: bool  # read in windows, a word longer than a whole window loses pieces
    untrained: int  # words no window within `max_windows` reads (labelled ones stay untrained)


def _measure(encoder, pieces, word_lengths, pair_pieces):
    rule = encoder.windowing
    if pair_pieces is None:
        content, extra = encoder.max_length - 1, 1
        cut_text, cut_pair = len(pieces) > content, False
    else:
        content, keep_b = windows.pair_lengths(len(pieces), len(pair_pieces), encoder.max_length - 3)
        extra = 3 + len(pair_pieces)
        cut_text, cut_pair = content < len(pieces), keep_b < len(pair_pieces)
    starts, ends = windows.split_words(word_lengths, content, rule.stride_for(content))
    untrained = 0
    if len(starts) > rule.max_windows:
        kept = windows.reads(word_lengths, starts, ends, rule.merge)[: rule.max_windows]
        untrained = len(word_lengths) - len(np.unique(np.concatenate(kept)))
    over_long = bool(len(word_lengths) and np.max(word_lengths) > content)
    return Measured(len(pieces) + extra, cut_text, cut_pair, len(starts), over_long, untrained)


def _task_summary(task, data, pieces, model_cfg):
    kind = get_task_type(task.type)
    windowed = kind.token_level or model_cfg.long_inputs == "windows"
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
            entry["pieces"] = _lengths([m.pieces for m in measured])
            cut_text = [m.over_long if windowed else m.cut_text for m in measured]
            cut_pair = [m.cut_text_pair for m in measured]
            entry["truncated"] = int(sum(a or b for a, b in zip(cut_text, cut_pair)))
            if pairs:  # which side lost pieces (a pair may lose on both)
                entry["truncated_text"] = int(sum(cut_text))
                entry["truncated_text_pair"] = int(sum(cut_pair))
            if windowed:
                entry["windows"] = {"texts": int(sum(m.windows > 1 for m in measured)),
                                    "max": int(max(m.windows for m in measured))}
                if split == "train":
                    entry["over_max_windows"] = int(sum(m.windows > model_cfg.max_windows for m in measured))
                    if kind.token_level:
                        entry["untrained_words"] = int(sum(m.untrained for m in measured))
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
    head = f"data of {summary['name']} (max_sequence_length {summary['max_sequence_length']}"
    if "long_inputs" in summary:
        head += f"; long texts: tagging in windows, sentence tasks {summary['long_inputs']}"
    lines = [head + ")", ""]
    for name, task in summary["tasks"].items():
        kind = f"{task['type']}, sentence pairs" if task.get("pairs") else task["type"]
        lines.append(f"task {name} ({kind})")
        for split, e in task["splits"].items():
            pieces = e.get("pieces")
            piece_txt = f", pieces mean {pieces['mean']} / p95 {pieces['p95']} / max {pieces['max']}" if pieces else ""
            trunc = f", truncated {e['truncated']}" if "truncated" in e else ""
            if "truncated_text_pair" in e:
                trunc += f" (cut in text {e['truncated_text']}, in text_pair {e['truncated_text_pair']})"
            if e.get("windows", {}).get("texts"):
                trunc += f", in windows {e['windows']['texts']} (at most {e['windows']['max']})"
            if e.get("over_max_windows"):
                trunc += f", over max_windows {e['over_max_windows']}"
                if "untrained_words" in e:
                    trunc += f" ({e['untrained_words']} labelled words untrained)"
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
