"""The `keras-mtl data` report: one leak line per split, details on demand."""

import json

from keras_mtl.config import config_from_dict
from keras_mtl.data.summary import format_summary, leak_lines
from keras_mtl.prepare import data_summary

CONLL = """\
Confidence NN B-NP
in IN B-PP
the DT B-NP
pound NN I-NP

Chancellor NNP O
of IN B-PP
the DT B-NP
Exchequer NNP I-NP

Rockwell NNP B-NP
said VBD B-VP
it PRP B-NP
"""


def _treebank_config(tmp_path):
    """Three tagging tasks on one file, whose test file repeats a train sentence."""
    (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
    (tmp_path / "test.txt").write_text(CONLL.split("\n\n")[0] + "\n\nShe PRP B-NP\nsaid VBD B-VP\n", encoding="utf-8")
    tasks = [
        {"name": name, "type": "tagging",
         "data": {"format": "conll", "train": "train.txt", "dev": "train.txt", "test": "test.txt", "label_column": col}}
        for name, col in (("pos", 1), ("chunk", 2), ("pos2", 1))
    ]
    return config_from_dict({"name": "tb", "tasks": tasks}, base_dir=tmp_path)


def test_one_warning_line_per_split_with_counts(tmp_path):
    summary = data_summary(_treebank_config(tmp_path), tokenize=False)
    # The details stay in the JSON: 3 tasks x 3 tasks, for dev and for test.
    assert len(summary["overlap"]["leaks"]) == 18
    json.dumps(summary)
    text = format_summary(summary)
    warnings = [line for line in text.split("\n") if "WARNING" in line]
    assert warnings == [
        "WARNING: 3 dev texts occur in training data too, so a model is scored on texts it trained on "
        "(per task: pos 3, chunk 3, pos2 3; --verbose lists the task pairs; "
        "splits.leaks: drop removes them from training)",
        "WARNING: 1 test text occurs in training data too, so a model is scored on texts it trained on "
        "(per task: pos 1, chunk 1, pos2 1; --verbose lists the task pairs; "
        "splits.leaks: drop removes them from training)",
    ]
    assert "texts of" not in text


def test_leaks_drop_removes_held_out_texts_from_every_train_split(tmp_path):
    def summary(leaks):
        (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
        (tmp_path / "test.txt").write_text(CONLL.split("\n\n")[0] + "\n", encoding="utf-8")  # a train sentence
        tasks = [
            {"name": name, "type": "tagging",
             "data": {"format": "conll", "train": "train.txt", "test": "test.txt", "label_column": col}}
            for name, col in (("pos", 1), ("chunk", 2))
        ]
        config = {"name": "tb", "tasks": tasks, "splits": {"dev_fraction": 0.0, "leaks": leaks}}
        return data_summary(config_from_dict(config, base_dir=tmp_path), tokenize=False)

    before, after = summary("keep"), summary("drop")
    assert before["overlap"]["leaks_by_split"]["test"]["texts"] == 1
    assert after["overlap"]["leaks"] == [] and not after["overlap"].get("leaks_by_split")
    assert after["dropped_from_train"] == {"pos": 1, "chunk": 1}
    for task in ("pos", "chunk"):
        examples = [s["tasks"][task]["splits"]["train"]["examples"] for s in (before, after)]
        assert examples[1] == examples[0] - 1
    text = format_summary(after)
    assert "WARNING" not in text
    assert "removed from train (splits.leaks: drop; their texts are in some task's dev or test): pos: 1, chunk: 1" in text


def test_verbose_lists_every_pair_under_its_split(tmp_path):
    summary = data_summary(_treebank_config(tmp_path), tokenize=False)
    lines = format_summary(summary, verbose=True).split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("WARNING: 3 dev"))
    assert lines[first + 1] == "  3 texts of pos:dev also occur in pos:train"
    assert all(line.startswith("  3 texts of ") for line in lines[first + 1 : first + 10])
    assert lines[first + 10].startswith("WARNING: 1 test text occurs")
    assert len([line for line in lines if "texts of" in line]) == 18
    assert "--verbose" not in "\n".join(lines)


def test_no_leaks_no_lines():
    assert leak_lines({"texts": {}, "shared": {}, "leaks": [], "leaks_by_split": {}}) == []
