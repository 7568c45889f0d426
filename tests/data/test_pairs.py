"""Sentence-pair tasks: readers with a second text, merging, splits and leaks over pairs."""

import collections
import hashlib

import pytest

from keras_mtl.config import config_from_dict
from keras_mtl.data import readers
from keras_mtl.data.example import Example
from keras_mtl.config import is_pair_task
from keras_mtl.data.load import load_task_data, merge_by_text
from keras_mtl.data.pipeline import encode_split
from keras_mtl.data.splits import carve_splits, example_key, normalize_text, overlap_report, split_of
from keras_mtl.errors import DataError

from helpers import read_all, shared_data, write_text


def read(path, task_type="classification", fmt="delimited", task="t", **options):
    return read_all(fmt, str(path), task, task_type, **options)


def write(tmp_path, text, name="data.tsv"):
    return write_text(tmp_path, text, name)


def shared(*parts):
    return shared_data(
        *parts, missing="../shared/data not found beside the repo: the real-data pair tests need rte/, mrpc/ and stsb/")


# ------------------------------------------------------------------ delimited

PAIRS_TSV = (
    "sentence1\tsentence2\tlabel\n"
    'He said "yes.\tShe said "no".\t1\n'
    '"Quoted" start\tplain\t0\n'
    "\n"
    'a "lone quote\tanother " one\t1\n'
)


def test_delimited_pairs_with_quoting_none_keep_quotes_as_text(tmp_path):
    path = write(tmp_path, PAIRS_TSV)
    examples = read(path, quoting="none", text_column="sentence1", text_pair_column="sentence2")
    assert [(ex.text, ex.text_pair, ex.labels["t"]) for ex in examples] == [
        ('He said "yes.', 'She said "no".', "1"),
        ('"Quoted" start', "plain", "0"),
        ('a "lone quote', 'another " one', "1"),
    ]
    assert [ex.origin for ex in examples] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_delimited_pairs_by_index_without_header_and_regression(tmp_path):
    path = write(tmp_path, "x\ta man .\ta person .\t4.5\ny\tdogs\tcats\t0\n")
    examples = read(path, "regression", header=False, text_column=1, text_pair_column=2, label_column=3)
    assert [(ex.text, ex.text_pair, ex.labels["t"]) for ex in examples] == [
        ("a man .", "a person .", 4.5),
        ("dogs", "cats", 0.0),
    ]


def test_single_text_delimited_has_no_text_pair(tmp_path):
    path = write(tmp_path, PAIRS_TSV)
    examples = read(path, text_column="sentence1")
    assert all(ex.text_pair is None for ex in examples)


def test_delimited_empty_second_text_names_file_and_line(tmp_path):
    path = write(tmp_path, "sentence1\tsentence2\tlabel\na\tb\t1\nc\t  \t0\n")
    with pytest.raises(DataError) as e:
        read(path, text_column="sentence1", text_pair_column="sentence2")
    assert str(e.value).startswith(f"{path}:3: empty second text in column 'sentence2'")
    examples = read(path, text_column="sentence1", text_pair_column="sentence2", skip_empty_text=True)
    assert [ex.text for ex in examples] == ["a"]


def test_delimited_missing_second_text_names_file_and_line(tmp_path):
    path = write(tmp_path, "a\tb\t1\nc\t0\n")
    with pytest.raises(DataError, match=rf"^{path}:2: expected at least 3 fields"):
        read(path, header=False, text_column=0, text_pair_column=1, label_column=2)


def test_delimited_unknown_text_pair_column_names_file_and_line(tmp_path):
    path = write(tmp_path, PAIRS_TSV)
    with pytest.raises(DataError) as e:
        read(path, text_column="sentence1", text_pair_column="sentence3")
    message = str(e.value)
    assert message.startswith(f"{path}:1: no column named 'sentence3' (text_pair_column)")
    assert "'sentence1', 'sentence2', 'label'" in message
    with pytest.raises(DataError, match=rf"^{path}:1: text_pair_column is 7 but the header has only 3"):
        read(path, text_column="sentence1", text_pair_column=7)


# ---------------------------------------------------------------------- jsonl


def test_jsonl_pairs(tmp_path):
    path = write(
        tmp_path,
        '{"premise": " A \\"cat\\" sleeps ", "hypothesis": "An animal rests", "label": "entailment"}\n'
        '{"premise": "It rains", "hypothesis": "It is dry", "label": 0}\n',
        "pairs.jsonl",
    )
    examples = read(path, fmt="jsonl", text_field="premise", text_pair_field="hypothesis")
    assert [(ex.text, ex.text_pair, ex.labels["t"]) for ex in examples] == [
        ('A "cat" sleeps', "An animal rests", "entailment"),
        ("It rains", "It is dry", "0"),
    ]


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"text": "a", "label": "x"}', r":2: no field 'pair'; the object has fields: 'text', 'label'"),
        ('{"text": "a", "pair": "  ", "label": "x"}', r":2: field 'pair' \(the second text, text_pair_field\) is empty"),
        ('{"text": "a", "pair": null, "label": "x"}', r":2: field 'pair' \(text_pair_field\) must be a string, found null"),
    ],
)
def test_jsonl_missing_or_empty_second_text_names_file_and_line(tmp_path, line, match):
    path = write(tmp_path, '{"text": "ok", "pair": "fine", "label": "x"}\n' + line + "\n", "p.jsonl")
    with pytest.raises(DataError, match=match) as e:
        read(path, fmt="jsonl", text_pair_field="pair")
    assert str(e.value).startswith(f"{path}:2: ")


# ------------------------------------------------------- merge, splits, leaks


def test_merge_keys_on_text_and_text_pair():
    per_task = {
        "a": {"train": [Example("x", {"a": "1"}, "a:1", "p"), Example("x", {"a": "0"}, "a:2", "q"),
                        Example("x", {"a": "1"}, "a:3")]},
        "b": {"train": [Example("x", {"b": 2.0}, "b:1", "p"), Example("x", {"b": 1.0}, "b:2", "r")]},
    }
    merged = merge_by_text(per_task, "train")
    assert [(ex.text, ex.text_pair, ex.labels) for ex in merged] == [
        ("x", "p", {"a": "1", "b": 2.0}),  # the same pair in two tasks: one example
        ("x", "q", {"a": "0"}),  # the same text, another second text: another example
        ("x", None, {"a": "1"}),  # a single text never merges with a pair
        ("x", "r", {"b": 1.0}),
    ]


def _old_split_of(text, seed, dev_fraction, test_fraction):
    """split_of as it was before sentence pairs (a copy, to pin that single texts did not move)."""
    key = f"{seed}\x00{' '.join(text.lower().split())}".encode("utf-8", "surrogatepass")
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "dev" if u < test_fraction + dev_fraction else "train"


def test_single_text_splits_are_unchanged():
    texts = [f"synthetic sentence number {i} ." for i in range(3000)] + ["A fine film .", "  Ünïcode\tTEXT "]
    for seed, dev, test in ((0, 0.1, 0.1), (7, 0.1, 0.2), (13, 0.05, 0.0)):
        assert [split_of(t, seed, dev, test) for t in texts] == [_old_split_of(t, seed, dev, test) for t in texts]
    # pinned values, computed with the implementation before pairs (git HEAD before this change)
    assert [split_of(f"synthetic sentence number {i} .", 0, 0.3, 0.3) for i in range(12)] == [
        "train", "dev", "dev", "train", "dev", "test", "test", "dev", "test", "dev", "dev", "dev"
    ]
    assert split_of("A fine film .", 0, 0.0, 0.9815897653164759) == "train"
    assert split_of("A fine film .", 0, 0.0, 0.98158976531648) == "test"
    assert example_key("  The  Rock ") == normalize_text("  The  Rock ") == "the rock"


def test_pair_splits_hash_both_texts():
    firsts = [split_of("the same premise .", 0, 0.3, 0.3, text_pair=f"hypothesis {i}") for i in range(200)]
    assert set(firsts) == {"train", "dev", "test"}  # the second text moves the pair
    assert split_of(" The  premise ", 3, 0.2, 0.2, text_pair="A HYPO") == split_of("the premise", 3, 0.2, 0.2, "a hypo")
    assert example_key("a", "b c") != example_key("a b", "c") != example_key("a b c")
    train = [Example("p", {"t": "x"}, f"f:{i}", f"h{i}") for i in range(300)]
    carved = carve_splits({"train": train}, 0, 0.2, 0.2)
    for split, examples in carved.items():
        assert all(split_of(ex.text, 0, 0.2, 0.2, ex.text_pair) == split for ex in examples)
    assert all(len(carved[s]) > 20 for s in ("train", "dev", "test"))


def test_leak_report_counts_pairs():
    train = [Example("p", {"nli": "1"}, "f:1", "h1"), Example("p", {"nli": "1"}, "f:2", "h2"),
             Example("q", {"nli": "0"}, "f:3", "h3")]
    test = [Example(" P ", {"nli": "1"}, "g:1", "H1"),  # the same pair as train f:1: a leak
            Example("p", {"nli": "1"}, "g:2", "h9"),  # the same first text only: no leak
            Example("h1", {"nli": "1"}, "g:3", "p")]  # the texts swapped: another pair
    single = [Example("p", {"s": "x"}, "s:1"), Example("h1", {"s": "y"}, "s:2")]
    report = overlap_report({"nli": {"train": train, "test": test}, "s": {"train": single, "test": []}})
    assert report["texts"] == {"nli": 5, "s": 2}
    assert report["shared"] == {"nli|s": 0}  # a pair is not its single texts
    assert report["leaks"] == [{"text_in": "nli:test", "also_in": "nli:train", "count": 1}]
    assert report["leaks_by_split"] == {"test": {"texts": 1, "tasks": {"nli": 1}}}


# ------------------------------------------------------------ config and load


def _pair_config(tmp_path, skip_empty=False):
    pairs = write(tmp_path, "s1\ts2\tlabel\n" + "".join(f"premise {i}\thypo {i % 7}\t{i % 2}\n" for i in range(60)))
    sts = write(tmp_path, "".join(f'{{"a": "premise {i}", "b": "hypo {i % 7}", "score": {i % 5}}}\n' for i in range(60)),
                "sts.jsonl")
    single = write(tmp_path, "sentence\tlabel\n" + "".join(f"premise {i}\t{'ab'[i % 2]}\n" for i in range(60)),
                   "single.tsv")
    return config_from_dict({
        "name": "pairs",
        "tasks": [
            {"name": "nli", "type": "classification",
             "data": {"format": "delimited", "train": str(pairs), "text_column": "s1", "text_pair_column": "s2"}},
            {"name": "sts", "type": "regression",
             "data": {"format": "jsonl", "train": str(sts), "text_field": "a", "text_pair_field": "b",
                      "label_field": "score"}},
            {"name": "single", "type": "classification", "data": {"format": "delimited", "train": str(single)}},
        ],
    }).config


def test_config_mixes_pair_and_single_text_tasks(tmp_path):
    config = _pair_config(tmp_path)
    assert [is_pair_task(t) for t in config.tasks] == [True, True, False]
    data = load_task_data(config)
    for name, pair in (("nli", True), ("sts", True), ("single", False)):
        examples = [ex for split in ("train", "dev", "test") for ex in data.per_task[name][split]]
        assert len(examples) == 60
        assert all((ex.text_pair is not None) == pair for ex in examples)
    # nli and sts share every pair (merged); the single task shares none of them
    assert data.overlap["shared"] == {"nli|sts": 60, "nli|single": 0, "sts|single": 0}
    merged = [ex for split in ("train", "dev", "test") for ex in data.splits[split]]
    assert len(merged) == 120
    assert sum(set(ex.labels) == {"nli", "sts"} for ex in merged) == 60
    # the same split in both pair tasks
    for split in ("train", "dev", "test"):
        nli = {ex.texts for ex in data.per_task["nli"][split]}
        assert nli == {ex.texts for ex in data.per_task["sts"][split]}


def test_a_mixed_split_encodes_pairs_and_single_texts(tmp_path):
    from keras_mtl.data.tokenize import CLS, SEP
    from keras_mtl.prepare import tokenization_for

    config = _pair_config(tmp_path)
    data = load_task_data(config)
    tokenization = tokenization_for(config, data)
    vocabulary, encoder = tokenization.vocabulary, tokenization.encoder
    examples = data.splits["train"]
    split = encode_split(examples, encoder, config.tasks, data.classes)
    cls, sep = vocabulary.index(CLS), vocabulary.index(SEP)
    for ex, ids in zip(examples, split.token_ids):
        assert ids[0] == cls
        if ex.text_pair is None:
            assert sep not in ids.tolist()
        else:  # [CLS] a [SEP] b [SEP], each text encoded as on its own
            first = encoder([ex.text])["token_ids"].to_list()[0][1:]
            second = encoder([ex.text_pair])["token_ids"].to_list()[0][1:]
            assert ids.tolist() == [cls] + first + [sep] + second + [sep]
    assert any(ex.text_pair is None for ex in examples) and any(ex.text_pair is not None for ex in examples)
    # the vocabulary is learned from both texts of a pair
    assert config.pair_task_names == ["nli", "sts"]


def test_a_pair_task_needs_a_second_text_on_every_example(monkeypatch):
    readers.reader_names()

    class Opts(readers.ReaderOptions):
        text_pair_field: str = "b"

    def read_memory(request):
        return [Example("a", {request.task_name: "x"}, "mem:1", "b"), Example("c", {request.task_name: "y"}, "mem:2")]

    monkeypatch.setitem(readers.READERS, "mem", readers.Reader("mem", read_memory, Opts, readers.TASK_TYPES, False))
    config = config_from_dict({"name": "m", "tasks": [
        {"name": "t", "type": "classification", "data": {"format": "mem", "train": "x", "text_pair_field": "b"}}],
        "splits": {"dev_fraction": 0.0, "test_fraction": 0.0}}).config
    with pytest.raises(DataError, match=r"^mem:2: no second text in task 't' \(train\); a pair task"):
        load_task_data(config)


# ------------------------------------------------------------------ real data


@pytest.mark.parametrize(
    "name, options, task_type, rows, balance",
    [
        ("rte", {"text_column": "sentence1", "text_pair_column": "sentence2"}, "classification", 2490,
         {"0": 1249, "1": 1241}),
        ("mrpc", {"text_column": "#1 String", "text_pair_column": "#2 String", "label_column": "Quality"},
         "classification", 4076, {"1": 2753, "0": 1323}),
        ("stsb", {"text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "score"},
         "regression", 5749, None),
    ],
)
def test_real_pair_data(name, options, task_type, rows, balance):
    path = shared(name, "train.tsv")
    examples = read(path, task_type, quoting="none", **options)
    assert len(examples) == rows
    assert all(ex.text and ex.text_pair for ex in examples)
    assert any('"' in ex.text or '"' in ex.text_pair for ex in examples)  # the quoting trap is real
    labels = [ex.labels["t"] for ex in examples]
    if balance is not None:
        assert dict(collections.Counter(labels)) == balance
    else:
        assert min(labels) >= 0.0 and max(labels) <= 5.0
