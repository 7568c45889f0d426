"""The streamed cold path (data.streamed) writes the cache entry the in-memory path writes.

`prepare.entry_data_for(loaded)` reads the training data a block at a time, holding hashes of its texts;
`entry_data_for(loaded, streamed=False)` reads every split into memory (`load_task_data`). Both entries
must hold the same rows in the same order, the same label maps, vocabulary, held-out examples and reports:
their manifests list every file with its SHA-256, so the manifests are compared.
"""

import random
from pathlib import Path

import numpy as np
import pytest

from keras_mtl.config import load_config
from keras_mtl.data import streamed
from keras_mtl.data.cache import Cache
from keras_mtl.errors import DataError
from keras_mtl.prepare import cache_key, entry_data_for

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
WORDS = "the a cat dog runs sat on mat big small red blue quickly and or not".split()


def _sentences(rng, n):
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 14))]
        out.append((words, [w.upper()[:2] for w in words], [rng.choice(["B-NP", "I-NP", "O"]) for _ in words]))
    return out


def _conll(path, sentences):
    path.write_text("".join("".join(f"{w} {p} {c}\n" for w, p, c in zip(*s)) + "\n" for s in sentences),
                    encoding="utf-8")


def _data(tmp_path):
    """POS and chunk tags on mostly the same sentences (some repeated, some in one task only), a test file
    sharing sentences with train (dropped by `splits.leaks: drop`) and a classification task on some of the
    same texts."""
    rng = random.Random(0)
    common = _sentences(rng, 240)
    pos = common + common[:15] + _sentences(rng, 30)
    chunk = common[100:] + common[:100] + common[:15] + common[:5] + _sentences(rng, 20)
    held = common[200:210] + _sentences(rng, 10)
    _conll(tmp_path / "pos.conll", pos)
    _conll(tmp_path / "chunk.conll", chunk)
    _conll(tmp_path / "test.conll", held)
    rows = [(" ".join(s[0]), rng.choice(["yes", "no"])) for s in common[::3] + _sentences(rng, 40)]
    (tmp_path / "cls.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows),
                                      encoding="utf-8")
    tasks = [
        {"name": "pos", "type": "tagging",
         "data": {"format": "conll", "train": "pos.conll", "test": "test.conll", "label_column": 1}},
        {"name": "chunk", "type": "tagging", "data": {"format": "conll", "train": "chunk.conll", "label_column": 2}},
        {"name": "cls", "type": "classification",
         "data": {"format": "delimited", "train": "cls.tsv", "text_column": "sentence"}},
    ]
    return tasks


def _config(tmp_path, tasks, **model):
    import yaml

    raw = {"name": "streamed", "tasks": tasks,
           "splits": {"seed": 3, "dev_fraction": 0.2, "test_fraction": 0.1, "leaks": "drop"},
           "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                     "num_heads": 2, "intermediate_dim": 32, **model}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_config(path)


def _entries(tmp_path, loaded):
    key = cache_key(loaded.config)
    manifests = []
    for streamed_path in (False, True):
        cache = Cache(tmp_path / f"cache-{streamed_path}")
        entry, built = cache.get_or_write(key, lambda s=streamed_path: entry_data_for(loaded, streamed=s))
        assert built
        manifests.append(entry.manifest)
    return manifests


def _assert_same_entry(memory, stream):
    for part in ("columns", "splits", "files", "meta"):
        assert memory[part] == stream[part], part


@pytest.mark.parametrize("variant", ["merged", "windows"])
def test_the_streamed_entry_is_the_in_memory_entry(tmp_path, monkeypatch, variant):
    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 37)  # several blocks, rows of an example across two
    model = {"max_sequence_length": 8, "long_inputs": "windows", "max_windows": 3} if variant == "windows" else {}
    loaded = _config(tmp_path, _data(tmp_path), **model)
    memory, stream = _entries(tmp_path, loaded)
    _assert_same_entry(memory, stream)
    meta = stream["meta"]
    assert meta["dropped"]["pos"] > 0 and meta["dropped"]["chunk"] > 0  # leaks: drop did drop
    rows, examples = stream["splits"]["train"]["rows"], meta["examples"]["train"]
    assert rows > examples if variant == "windows" else rows == examples  # windows: texts read in several rows
    # merged across tasks: fewer training examples than the tasks' together
    scanned = streamed.StreamedData(loaded)
    assert scanned.train_examples < sum(scan.kept for scan in scanned.scans)
    assert any(scanned.followers[1].values()) and any(scanned.followers[2].values())


def test_the_demo_config_streams_to_the_same_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 100)
    loaded = load_config(DEMO, ["tasks.topic.data.train=300", "tasks.sentiment.data.train=80",
                                "tasks.pos.data.train=120", "splits.leaks=drop"])
    _assert_same_entry(*_entries(tmp_path, loaded))


@pytest.mark.parametrize("seed", range(4))
def test_merge_plan_is_merge_by_text(seed):
    """Rows are (text, j-th occurrence) pairs, made by the first task that has one."""
    from keras_mtl.data.example import Example
    from keras_mtl.data.load import merge_by_text
    from keras_mtl.data.splits import as_hash_array, texts_hash

    rng = random.Random(seed)
    per_task = {
        name: {"train": [Example(rng.choice(texts), {name: str(i)}, f"{name}:{i}") for i in range(n)]}
        for name, n, texts in (("x", 30, "abcdefg"), ("y", 25, "cdefghij"), ("z", 40, "abcdefghijk"), ("w", 5, "uv"))
    }
    merged = merge_by_text(per_task, "train")
    hashes = [as_hash_array(b"".join(texts_hash(ex.text) for ex in by["train"])) for by in per_task.values()]
    leaders, followers = streamed.merge_plan(hashes)
    rows = []
    for (name, by), lead, follow in zip(per_task.items(), leaders, followers):
        for i, ex in enumerate(by["train"]):
            if lead[i]:
                rows.append(Example(ex.text, dict(ex.labels), ex.origin))
        for i, row in follow.items():
            assert not lead[i]
            rows[row].labels.update(by["train"][i].labels)
    assert [(ex.text, ex.labels, ex.origin) for ex in rows] == [(ex.text, ex.labels, ex.origin) for ex in merged]


def test_a_bad_line_raises_naming_file_and_line_and_writes_nothing(tmp_path):
    tasks = _data(tmp_path)
    with open(tmp_path / "cls.tsv", "a", encoding="utf-8") as f:
        f.write("only one field\n")
    loaded = _config(tmp_path, tasks)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"cls\.tsv:\d+: "):
        cache.get_or_write(cache_key(loaded.config), lambda: entry_data_for(loaded))
    assert cache.entries() == []
    empty = _data(tmp_path)
    (tmp_path / "pos.conll").write_text("   \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pos\.conll: no sentences found"):
        entry_data_for(_config(tmp_path, empty))


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_config_streams_to_the_same_entry(tmp_path, path):
    """Every shipped config whose data is here (TensorFlow, the real data: slow)."""
    loaded = load_config(path)
    try:
        memory = entry_data_for(loaded, streamed=False)
    except (DataError, OSError) as e:  # its data (or a preset's tokenizer) is not on this machine
        pytest.skip(f"{path.name}: {e}")
    key = cache_key(loaded.config)
    first = Cache(tmp_path / "memory").get_or_write(key, lambda: memory)[0].manifest
    second = Cache(tmp_path / "stream").get_or_write(key, lambda: entry_data_for(loaded))[0].manifest
    _assert_same_entry(first, second)


def test_a_file_changed_between_passes_raises(tmp_path):
    loaded = _config(tmp_path, _data(tmp_path))
    scanned = streamed.StreamedData(loaded)
    with open(tmp_path / "cls.tsv", "a", encoding="utf-8") as f:
        f.write("a new sentence\tyes\n")
    with pytest.raises(DataError, match=r"task 'cls': the training data gave .* did a file change"):
        list(scanned.train_texts())


def _rows_of(block):
    """The rows (dicts) of a `ColumnBlock`: what a writer was given before blocks."""
    columns = {}
    for name, value in block.columns.items():
        if isinstance(value, tuple):
            values, lengths = value
            columns[name] = np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
        else:
            columns[name] = list(value)
    return [{name: columns[name][i] for name in columns} for i in range(block.rows)]


def _pair_task(tmp_path):
    rng = random.Random(5)
    rows = [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))),
             " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))), rng.choice(["same", "other"]))
            for _ in range(150)]
    (tmp_path / "pairs.tsv").write_text("a\tb\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows),
                                        encoding="utf-8")
    return {"name": "pairs", "type": "classification",
            "data": {"format": "delimited", "train": "pairs.tsv", "text_column": "a", "text_pair_column": "b"}}


@pytest.mark.parametrize("variant", ["merged", "windows", "pairs"])
def test_column_blocks_write_the_bytes_rows_write(tmp_path, monkeypatch, variant):
    """`ColumnBlock`s (what a cold run writes) and the same rows given one dict a row make the same files (the
    manifest's SHA-256 of each), blocks cut where shards end."""
    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 37)
    tasks = _data(tmp_path) + ([_pair_task(tmp_path)] if variant == "pairs" else [])
    model = {"max_sequence_length": 8, "long_inputs": "windows", "max_windows": 3} if variant == "windows" else {}
    loaded = _config(tmp_path, tasks, **model)
    key = cache_key(loaded.config)
    manifests = []
    for as_rows in (False, True):
        def build(as_rows=as_rows):
            data = entry_data_for(loaded)
            if as_rows:
                data.splits = {s: (row for block in blocks for row in _rows_of(block))
                               for s, blocks in data.splits.items()}
            return data

        entry, _ = Cache(tmp_path / f"cache-{as_rows}").get_or_write(key, build, shard_rows=100, block_rows=16)
        manifests.append(entry.manifest)
    _assert_same_entry(*manifests)
    assert len(manifests[0]["splits"]["train"]["shards"]) > 2


def _write_entry(tmp_path, loaded, name):
    from keras_mtl.prepare import write_entry

    return write_entry(loaded, Cache(tmp_path / name))[0].manifest


def test_encoding_processes_write_the_entry_a_thread_writes(tmp_path, monkeypatch):
    """`cache.encode_processes: 2` (blocks encoded in two spawned processes, taken back in turn) writes the
    entry the in-thread path writes, windows and merged rows included, and leaves no process behind."""
    import multiprocessing

    from keras_mtl.data import encode_process

    started, start = [], encode_process.EncodeProcesses.__init__
    monkeypatch.setattr(encode_process.EncodeProcesses, "__init__",
                        lambda self, count: (started.append(count), start(self, count))[1])
    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 37)  # several blocks to each process
    model = {"max_sequence_length": 8, "long_inputs": "windows", "max_windows": 3}
    tasks = _data(tmp_path) + [_pair_task(tmp_path)]
    manifests = []
    for processes in (0, 2):
        loaded = _config(tmp_path, tasks, **model)
        loaded.config.cache.encode_processes = processes
        manifests.append(_write_entry(tmp_path, loaded, f"cache-{processes}"))
    _assert_same_entry(*manifests)
    assert started == [2] and multiprocessing.active_children() == []


def test_an_error_in_an_encoding_process_is_raised_as_in_a_thread(tmp_path, monkeypatch):
    """An error raised while a process encodes a block reaches the caller as the in-thread path raises it;
    no entry, no temporary and no process is left."""
    import multiprocessing

    monkeypatch.setattr(streamed, "BLOCK_EXAMPLES", 37)
    in_blocks = streamed.in_blocks

    def broken(items, block):  # an example encoding cannot read, in the third block
        items = (ex if i != 100 else ex.__class__(None, ex.labels, ex.origin, ex.text_pair)
                 for i, ex in enumerate(items))
        return in_blocks(items, block)

    monkeypatch.setattr(streamed, "in_blocks", broken)
    errors = []
    for processes in (0, 1):
        loaded = _config(tmp_path, _data(tmp_path))
        loaded.config.cache.encode_processes = processes
        with pytest.raises(Exception) as raised:
            _write_entry(tmp_path, loaded, f"cache-{processes}")
        errors.append((type(raised.value), str(raised.value)))
        directory = tmp_path / f"cache-{processes}"
        assert Cache(directory).entries() == [] and not [p for p in directory.iterdir() if ".tmp-" in p.name]
    assert errors[0] == errors[1], errors
    assert multiprocessing.active_children() == []


def test_encoding_processes_are_opt_in():
    """`cache.encode_processes` defaults to 0 (the worker thread: measured fastest on 2 cores), takes N >= 0,
    and a bad value is a config error naming the field."""
    import pytest

    from keras_mtl.config import CacheConfig
    assert CacheConfig().encode_processes == 0 and CacheConfig(encode_processes=2).encode_processes == 2
    for bad in (-1, "auto"):
        with pytest.raises(Exception, match="encode_processes"):
            CacheConfig(encode_processes=bad)
