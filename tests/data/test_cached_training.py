"""Training reads the prepared cache: the streamed input is the in-memory one, bit for bit.

`prepare(cache=...)` writes the config's entry on the first call and opens it
on later ones (no data file is read then); its training split is streamed
from the shards (`data.cached.CachedTrainSplit`). Every batch the training
input yields, and the plan (sizes, schedule, buckets, class weights), must
equal what `prepare()` in memory gives, in every mode that changes the
stream: task conditioning, per-task batches, the expected loss normalizer,
balanced class weights, tagging, windows of long texts, sentence pairs.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from keras_mtl.config import load_config
from keras_mtl.data import cache as cache_lib
from keras_mtl.prepare import cache_of, prepare

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
SMALL = [
    "tasks.topic.data.train=60",
    "tasks.sentiment.data.train=40",
    "tasks.pos.data.train=30",
    "train.batch_size=8",
    "train.epochs=3",
    "train.bucket_lengths=auto",
    "train.num_buckets=3",
]
VARIANTS = {
    "mixed": ["train.sampling=annealed"],
    "conditioned_per_task_expected": [
        "model.task_conditioning=embedding", "train.batch_mode=per_task", "train.loss_normalizer=expected",
    ],
    "class_weights_expected": ["tasks.topic.class_weights=balanced", "train.loss_normalizer=expected"],
    "windows": ["model.max_sequence_length=8", "model.long_inputs=windows", "model.max_windows=3"],
    "one_task_shuffle_buffer": ["tasks=[topic]", "train.shuffle_buffer=7"],
}


def _batches(prepared, n):
    out = []
    for x, y, sw in prepared.train_dataset().take(n).as_numpy_iterator():
        out.append((x, y, sw))
    return out


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
        for da, db in ((xa, xb), (ya, yb), (wa, wb)):
            assert sorted(da) == sorted(db)
            for k in da:
                assert da[k].dtype == db[k].dtype, k
                np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def _overrides(variant):
    over = SMALL + VARIANTS[variant]
    if "tasks=[topic]" in over:  # keep only the first task
        over = [o for o in over if not o.startswith("tasks.") and o != "tasks=[topic]"]
        over += ["tasks.topic.data.train=60"]
    return over


def _loaded(variant):
    loaded = load_config(DEMO, _overrides(variant))
    if "tasks=[topic]" in VARIANTS[variant]:
        raw = dict(loaded.raw)
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] == "topic"]
        loaded = load_config(raw)
    return loaded


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_cached_stream_is_the_in_memory_stream(variant, tmp_path):
    loaded = _loaded(variant)
    memory = prepare(loaded, max_steps=12)
    cache = cache_lib.Cache(tmp_path / "cache")
    cold = prepare(loaded, max_steps=12, cache=cache)
    assert cold.entry is not None and memory.entry is None
    assert type(cold.encoded["train"]).__name__ == "CachedTrainSplit"
    for field in ("epochs", "steps_per_epoch", "sizes", "present", "bucket_lengths", "class_weights"):
        assert getattr(cold.plan, field) == getattr(memory.plan, field), field
    np.testing.assert_array_equal(cold.plan.schedule, memory.plan.schedule)
    assert cold.vocabulary == memory.vocabulary and cold.classes == memory.classes
    steps = 3 * cold.plan.steps_per_epoch + 2  # past the first epoch: the repeat of each task's stream too
    _assert_same_batches(_batches(cold, steps), _batches(memory, steps))
    # dev and test read back as they were encoded, with their examples
    for split in ("dev", "test"):
        a, b = cold.encoded[split], memory.encoded[split]
        assert [(e.text, e.labels, e.text_pair) for e in a.examples] == [(e.text, e.labels, e.text_pair)
                                                                        for e in b.examples]
        assert [t.tolist() for t in a.token_ids] == [t.tolist() for t in b.token_ids]
        assert [t.tolist() for t in a.word_starts] == [t.tolist() for t in b.word_starts]
        np.testing.assert_array_equal(a.row_example, b.row_example)
        np.testing.assert_array_equal(a.num_windows, b.num_windows)
        for task in a.labels:
            np.testing.assert_array_equal(a.weights[task], b.weights[task])


def test_a_warm_run_reads_no_data_file(tmp_path, monkeypatch):
    """The second prepare opens the entry: no reader runs, and it streams the same batches."""
    data = tmp_path / "data.tsv"
    rows = [f"{'good' if i % 2 else 'bad'} movie number {i} was {'fine' if i % 3 else 'long'}\t{i % 2}"
            for i in range(80)]
    data.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    raw = {
        "name": "warm", "seed": 2,
        "tasks": [{"name": "s", "type": "classification", "data": {"format": "delimited", "train": str(data)}}],
        "model": {"vocabulary_size": 60, "max_sequence_length": 12, "hidden_dim": 8, "num_layers": 1,
                  "num_heads": 1, "intermediate_dim": 8},
        "train": {"batch_size": 4, "epochs": 1, "bucket_lengths": [6]},
    }
    loaded = load_config(raw)
    cache = cache_lib.Cache(tmp_path / "cache")
    cold = prepare(loaded, max_steps=6, cache=cache)
    from keras_mtl.data import load

    def no_reading(*args, **kwargs):
        raise AssertionError("a warm run read the data")

    monkeypatch.setattr(load, "read_task", no_reading)
    monkeypatch.setattr("keras_mtl.prepare.load_task_data", no_reading)
    warm = prepare(loaded, max_steps=6, cache=cache)
    assert warm.entry.key == cold.entry.key and warm.vocabulary == cold.vocabulary
    _assert_same_batches(_batches(warm, 6), _batches(cold, 6))


def test_the_entry_is_the_one_keras_mtl_prepare_writes(tmp_path, capsys):
    from keras_mtl.cli import main

    loaded = load_config(DEMO, SMALL)
    cache_dir = tmp_path / "cache"
    assert main(["prepare", str(DEMO), "--cache-dir", str(cache_dir), *sum((["--set", o] for o in SMALL), [])]) == 0
    (entry_dir,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    prepared = prepare(loaded, max_steps=3, cache=cache_of(loaded, cache_dir))
    assert prepared.entry.path == entry_dir
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 1
    assert json.loads((entry_dir / "manifest.json").read_text())["meta"]["tasks"] == loaded.config.task_names


def test_a_warm_run_still_applies_unseen_labels(tmp_path):
    """`unseen_labels` is not in the key: a warm run warns, or fails under `error`, as reading the data did."""
    root = tmp_path
    (root / "train.tsv").write_text("sentence\tlabel\na b\tx\nc d\ty\ne f\tx\n", encoding="utf-8")
    (root / "dev.tsv").write_text("sentence\tlabel\na c\tz\n", encoding="utf-8")
    raw = {
        "name": "unseen",
        "tasks": [{"name": "t", "type": "classification", "unseen_labels": "warn",
                   "data": {"format": "delimited", "train": str(root / "train.tsv"), "dev": str(root / "dev.tsv")}}],
        "model": {"vocabulary_size": 30, "max_sequence_length": 8},
    }
    cache = cache_lib.Cache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="labels never seen in train"):
        prepare(load_config(raw), cache=cache)
    with pytest.warns(UserWarning, match="labels never seen in train"):
        prepare(load_config(raw), cache=cache)  # warm
    raw["tasks"][0]["unseen_labels"] = "error"
    from keras_mtl.errors import DataError

    with warnings.catch_warnings(), pytest.raises(DataError, match=r"dev.tsv:2: task 't': label 'z' in dev"):
        warnings.simplefilter("ignore")
        prepare(load_config(raw), cache=cache)


def test_train_rows_read_back_are_the_encoded_training_split(tmp_path):
    """meta-train's random access: the training rows read back whole equal the in-memory encoding."""
    loaded = _loaded("windows")
    memory = prepare(loaded, plan=False).encoded["train"]
    held = prepare(loaded, plan=False, cache=cache_lib.Cache(tmp_path), train_rows=True).encoded["train"]
    assert held.examples == [] and len(held) == len(memory)
    assert [t.tolist() for t in held.token_ids] == [t.tolist() for t in memory.token_ids]
    np.testing.assert_array_equal(held.row_example, memory.row_example)
    np.testing.assert_array_equal(held.num_windows, memory.num_windows)
    for task in memory.labels:
        np.testing.assert_array_equal(held.weights[task], memory.weights[task])
        a, b = held.labels[task], memory.labels[task]
        assert [np.asarray(x).tolist() for x in a] == [np.asarray(x).tolist() for x in b], task


def test_the_vocabulary_is_learned_from_the_bounded_sample(tmp_path):
    """`cache.vocabulary_sample` bounds the texts a vocabulary is learned from (`wordpiece.vocabulary_sample`)."""
    from keras_mtl.data.load import load_task_data
    from keras_mtl.data.tokenize import compute_vocabulary
    from keras_mtl.data.wordpiece import vocabulary_sample
    from keras_mtl.prepare import tokenization_for

    loaded = load_config(DEMO, SMALL + ["cache.vocabulary_sample=20"])
    config, data = loaded.config, load_task_data(loaded)
    texts = [t for ex in data.splits["train"] for t in (ex.text, ex.text_pair) if t is not None]
    assert len(set(texts)) > 20
    sample = vocabulary_sample(texts, 20)
    assert len(sample) == 20
    expected = compute_vocabulary(sample, config.model.vocabulary_size, config.model.lowercase, config.task_names)
    assert tokenization_for(config, data).vocabulary == expected
    everything = load_config(DEMO, SMALL)  # the default (1M) holds every text: the vocabulary of all of them
    all_texts = sorted(set(texts))
    assert tokenization_for(everything.config, data).vocabulary == compute_vocabulary(
        all_texts, config.model.vocabulary_size, config.model.lowercase, config.task_names)
    assert expected != tokenization_for(everything.config, data).vocabulary


def test_a_task_stream_reads_only_the_blocks_holding_its_rows(tmp_path, monkeypatch):
    """A task whose rows lie at the end of the split (a small second task) reads no block before them,
    and its rows are those of reading every block."""
    from keras_mtl.data import cached

    tasks = load_config(DEMO, SMALL).config.tasks  # topic, sentiment (classification), pos (tagging)
    columns = {"token_ids": cache_lib.Column("int32", (None,))}
    for t in tasks:
        token_level = t.name == "pos"
        columns[f"labels/{t.name}"] = cache_lib.Column("int32", (None,) if token_level else ())
        columns[f"weights/{t.name}"] = cache_lib.Column("float32")
    rows = []
    for i in range(48):  # rows 0-39: topic only; 40-47: pos only; sentiment: rows 5 and 30
        owner = "topic" if i < 40 else "pos"
        row = {"token_ids": np.arange(1 + i % 5, dtype=np.int32)}
        for t in tasks:
            labelled = t.name == owner or (t.name == "sentiment" and i in (5, 30))
            row[f"weights/{t.name}"] = np.float32(labelled)
            row[f"labels/{t.name}"] = (np.full([1 + i % 5], i % 3 if labelled else -1, np.int32) if t.name == "pos"
                                       else np.int32(i % 2))
        rows.append(row)
    entry = cache_lib.Cache(tmp_path).write("0" * 32, {"train": rows, "dev": [], "test": []}, columns, block_rows=4)
    split = cached.CachedTrainSplit(entry, tasks)
    read = []
    original = cache_lib.read_rows

    def counting(entry, split_name, start, stop, columns=None):
        read.append((start, stop))
        return original(entry, split_name, start, stop, columns)

    monkeypatch.setattr(cache_lib, "read_rows", counting)
    wanted = list(columns)
    expected = {}
    for t in tasks:
        everything = list(cache_lib.iter_blocks(entry, "train", columns=wanted))
        read.clear()
        own = list(split.blocks(wanted, task=t.name))
        kept = [b for b in everything if (b[f"weights/{t.name}"] > 0).any()]
        assert len(own) == len(kept)
        for a, b in zip(own, kept):
            assert sorted(a) == sorted(b)
            for k in a:
                parts = [v if isinstance(v, tuple) else (v,) for v in (a[k], b[k])]  # (values, row_splits)
                for x, y in zip(*parts):
                    np.testing.assert_array_equal(x, y, err_msg=k)
        expected[t.name] = list(read)
    assert expected == {"topic": [(s, s + 4) for s in range(0, 40, 4)], "sentiment": [(4, 8), (28, 32)],
                        "pos": [(40, 44), (44, 48)]}


def test_a_warm_run_reads_no_held_out_example_when_none_is_unseen(tmp_path, monkeypatch):
    """The unseen-label pass over dev's and test's examples runs only when the entry's meta records
    unseen labels (`test_a_warm_run_still_applies_unseen_labels`: when it does)."""
    from keras_mtl.data import cached

    loaded = load_config(DEMO, SMALL)
    cache = cache_lib.Cache(tmp_path / "cache")
    cold = prepare(loaded, max_steps=3, cache=cache)
    assert all(cold.entry.meta["unseen"][t] == {} for t in loaded.config.task_names)

    def no_reading(self):
        raise AssertionError("a warm run read the held-out examples")

    monkeypatch.setattr(cached.ExampleFile, "__iter__", no_reading)
    warm = prepare(loaded, max_steps=3, cache=cache)
    assert warm.entry.key == cold.entry.key
