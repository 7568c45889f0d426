"""dev and test stream like train: never held as examples on the cold write, read back without an object a row.

The cold write (`prepare.write_entry`, `data.streamed`) writes each task's dev and test examples (given, or
carved from train) to scratch files as it reads them and encodes them a block at a time; a run reads them
back as flat columns (`cached.RaggedRows`) and their examples from the entry's file (`cached.ExampleFile`).
The scores of a model on them are those of the in-memory path.
"""

from pathlib import Path

import numpy as np
import pytest

from keras_mtl.config import load_config
from keras_mtl.data import cache as cache_lib
from keras_mtl.data import cached, streamed
from keras_mtl.data.example import Example
from keras_mtl.prepare import cache_key, entry_data_for, prepare, write_entry

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _carving_config(tmp_path, rows=1200):
    """One classification task, dev and test carved from a train file (about 540 held-out examples)."""
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
    lines = [f"{words[i % 10]} {words[(i // 10) % 10]} {words[(i // 100) % 10]} row {i}\t{'yes' if i % 3 else 'no'}"
             for i in range(rows)]
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return load_config({
        "name": "held",
        "seed": 5,
        "tasks": [{"name": "c", "type": "classification", "data": {"format": "delimited", "train": str(data)}}],
        "splits": {"seed": 3, "dev_fraction": 0.25, "test_fraction": 0.2},
        "model": {"vocabulary_size": 80, "max_sequence_length": 12, "hidden_dim": 8, "num_layers": 1,
                  "num_heads": 1, "intermediate_dim": 8},
        "train": {"batch_size": 4, "epochs": 1, "bucket_lengths": [8, 12], "eval_batch_size": 16},
    })


class _LiveExamples:
    """Counts the `Example` objects alive at once (the most, over a run), by patching its constructor and
    adding a finalizer to the class."""

    def __init__(self, monkeypatch):
        self.live = self.most = 0
        init = Example.__init__

        def counted_init(ex, *args, **kwargs):
            init(ex, *args, **kwargs)
            self.live += 1
            self.most = max(self.most, self.live)

        def counted_del(ex):
            self.live -= 1

        monkeypatch.setattr(Example, "__init__", counted_init)
        monkeypatch.setattr(Example, "__del__", counted_del, raising=False)


def _write(loaded, cache, streamed_path):
    key = cache_key(loaded.config)
    if streamed_path:
        return write_entry(loaded, cache)[0]
    return cache.get_or_write(key, lambda: entry_data_for(loaded, streamed=False))[0]


def test_the_cold_write_never_holds_the_held_out_splits(tmp_path, monkeypatch):
    """At most a few blocks of examples are alive while the entry is written, though dev and test hold
    ~540 examples; the in-memory path (the control) holds them all, so the probe does count them."""
    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 32)
    loaded = _carving_config(tmp_path)
    probe = _LiveExamples(monkeypatch)
    memory = _write(loaded, cache_lib.Cache(tmp_path / "memory"), streamed_path=False)
    held = memory.meta["examples"]["dev"] + memory.meta["examples"]["test"]
    assert held > 0.4 * 1200 and probe.most >= 1200  # the control: every example at once

    probe.live = probe.most = 0
    cache = cache_lib.Cache(tmp_path / "stream")
    entry = _write(loaded, cache, streamed_path=True)
    assert entry.meta["examples"] == memory.meta["examples"]
    # the encoder's lookahead (2 blocks pending, a third submitted), the block being written, the one being
    # read, and a few examples in passing: under 6 blocks (192), a third of the held-out examples
    assert probe.most <= 6 * 32 < held / 2, probe.most
    assert [p.name for p in cache.directory.iterdir() if ".tmp-" in p.name] == []  # the scratch files are gone
    assert entry.manifest["splits"] == memory.manifest["splits"]  # the same rows, file for file


def test_dev_and_test_rows_and_examples_are_not_held_when_read_back(tmp_path):
    loaded = _carving_config(tmp_path)
    run = prepare(loaded, max_steps=2, cache=cache_lib.Cache(tmp_path / "cache"))
    for split in ("dev", "test"):
        encoded = run.encoded[split]
        assert isinstance(encoded.token_ids, cached.RaggedRows) and isinstance(encoded.word_starts, cached.RaggedRows)
        assert isinstance(encoded.examples, cached.ExampleFile) and isinstance(run.data.splits[split], cached.ExampleFile)
        examples = list(encoded.examples)  # read a line at a time
        assert len(examples) == len(encoded.examples) == run.entry.meta["examples"][split]
        for i in (0, len(examples) // 2, len(examples) - 1, -1):  # a line by its offset
            assert encoded.examples[i] == examples[i]
        with pytest.raises(IndexError):
            encoded.examples[len(examples)]
        assert [len(t) for t in encoded.token_ids] == encoded.token_ids.lengths().tolist()
        rows = [t.tolist() for t in encoded.token_ids]
        assert encoded.token_ids[-1].tolist() == rows[-1] and len(rows) == len(encoded) > 0
        with pytest.raises(IndexError):
            encoded.token_ids[len(rows)]


def _predictions_and_scores(prepared, split):
    import keras

    from keras_mtl.evaluation import predict_split, score
    from keras_mtl.model import build_network

    keras.utils.set_random_seed(11)
    model = build_network(prepared.config, prepared.classes, prepared.vocabulary)
    encoded = prepared.encoded[split]
    predictions = predict_split(model, encoded, prepared.config, prepared.classes, prepared.pad_id)
    return predictions, score(prepared.config, encoded, predictions)


@pytest.mark.parametrize("overrides", [
    [],  # a file of dev and test each, three tasks (tagging among them), merged across tasks
    ["model.max_sequence_length=8", "model.long_inputs=windows", "train.bucket_lengths=[8]"],  # several rows
])
def test_scores_on_streamed_dev_and_test_are_the_in_memory_scores(tmp_path, overrides):
    loaded = load_config(DEMO, ["tasks.topic.data.train=60", "tasks.topic.data.dev=40", "tasks.sentiment.data.train=40",
                                "tasks.pos.data.train=30", "tasks.pos.data.test=30", *overrides])
    memory = prepare(loaded, max_steps=2)
    cache = cache_lib.Cache(tmp_path / "cache")
    cold = prepare(loaded, max_steps=2, cache=cache)
    warm = prepare(loaded, max_steps=2, cache=cache)
    for split in ("dev", "test"):
        want_predictions, want_scores = _predictions_and_scores(memory, split)
        assert any(idx for idx, _ in want_predictions.values())
        for run in (cold, warm):
            predictions, scores = _predictions_and_scores(run, split)
            assert scores == want_scores, split
            for task, (idx, preds) in want_predictions.items():
                got_idx, got_preds = predictions[task]
                assert got_idx == idx
                assert [np.asarray(p).tolist() for p in got_preds] == [np.asarray(p).tolist() for p in preds]


def test_carved_dev_and_test_score_as_in_memory(tmp_path):
    loaded = _carving_config(tmp_path, rows=300)
    memory = prepare(loaded, max_steps=2)
    cold = prepare(loaded, max_steps=2, cache=cache_lib.Cache(tmp_path / "cache"))
    for split in ("dev", "test"):
        assert [ex.text for ex in cold.data.splits[split]] == [ex.text for ex in memory.data.splits[split]]
        assert _predictions_and_scores(cold, split) == _predictions_and_scores(memory, split)



def test_a_bad_dev_line_names_its_line_and_leaves_no_scratch_files(tmp_path):
    loaded = _carving_config(tmp_path, rows=100)
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nalpha beta\tyes\nonly one field\nbeta gamma\tno\n", encoding="utf-8")
    raw = dict(loaded.raw)
    raw["tasks"] = [{**raw["tasks"][0], "data": {**raw["tasks"][0]["data"], "dev": str(dev)}}]
    cache = cache_lib.Cache(tmp_path / "cache")
    from keras_mtl.errors import DataError

    with pytest.raises(DataError, match=r"dev\.tsv:3: "):
        write_entry(load_config(raw), cache)
    assert cache.entries() == [] and [p.name for p in cache.directory.iterdir() if ".tmp-" in p.name] == []
    dev.write_text("sentence\tlabel\nalpha beta\tyes\nbeta gamma\tno\n", encoding="utf-8")
    entry, built = write_entry(load_config(raw), cache)
    assert built and entry.meta["examples"]["dev"] == 2
    assert [ex.origin for ex in cached.task_data(entry).splits["dev"]] == [f"{dev}:2", f"{dev}:3"]
