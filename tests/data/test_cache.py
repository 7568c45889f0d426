"""The prepared cache (keras_mtl.data.cache): its key, entries, lock and rename, damage.

Fast: entries of a few hundred rows, written with numpy; two tests start
processes (spawned: they import the cache module, not TensorFlow) to race two
writers and to kill a writer half-way. One test reads a split back through
tf.data.
"""

import json
import multiprocessing
import os
import shutil
import signal
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from keras_mtl.config import config_from_dict
from keras_mtl.data import cache as cache_lib
from keras_mtl.data import cached
from keras_mtl.data.cache import Cache, CacheKey, Column, EntryData, data_key, file_identity, iter_blocks
from keras_mtl.data.example import Example
from keras_mtl.data.splits import example_hash
from keras_mtl.errors import DataError
from keras_mtl.tasks import for_task

COLUMNS = {
    "token_ids": Column("int32", (None,)),
    "truncated": Column("bool"),
    "text_hash": Column("uint8", (16,)),
    "labels/multi": Column("float32", (3,)),
    "labels/tags": Column("int32", (None,)),
    "weights/tags": Column("float32"),
    "row_example": Column("int64"),
}


def make_rows(n, offset=0):
    """`n` deterministic rows of every kind of column (lists of 0 to 6 ids)."""
    rng = np.random.default_rng(offset)
    rows = []
    for i in range(offset, offset + n):
        length = int(rng.integers(0, 7))
        rows.append({
            "token_ids": rng.integers(0, 30000, length).astype(np.int32),
            "truncated": bool(i % 3 == 0),
            "text_hash": np.frombuffer(example_hash(f"text {i}"), np.uint8),
            "labels/multi": [float(i % 2), 0.0, 1.0],
            "labels/tags": list(range(i % 4)),
            "weights/tags": 0.5 * (i % 2),
            "row_example": i,
        })
    return rows


def flat(blocks):
    """The rows of numpy blocks, as (column -> python value) dicts."""
    out = []
    for block in blocks:
        n = len(block["truncated"])
        for r in range(n):
            row = {}
            for name, value in block.items():
                if isinstance(value, tuple):  # (values, row_splits)
                    values, splits = value
                    row[name] = values[splits[r]:splits[r + 1]].tolist()
                else:
                    row[name] = value[r].tolist()
            out.append(row)
    return out


def as_python(rows):
    return [{k: np.asarray(v).tolist() for k, v in row.items()} for row in rows]


KEY = CacheKey.of({"test": 1})


def write(cache, splits=None, key=KEY, **kwargs):
    splits = splits or {"train": make_rows(700), "dev": make_rows(30, 1000)}
    return cache.write(key, splits, COLUMNS, name="tiny", files={"vocab.txt": "[PAD]\n[UNK]\n"}, **kwargs)


# ------------------------------------------------------------------ rows in, rows out


def test_rows_read_back_as_written_across_shards_and_blocks(tmp_path):
    train, dev = make_rows(700), make_rows(30, 1000)
    entry = write(Cache(tmp_path), {"train": iter(train), "dev": iter(dev)}, shard_rows=256, block_rows=100)
    assert entry.rows("train") == 700 and entry.rows("dev") == 30
    assert [rows for _, rows in entry.shards("train")] == [256, 256, 188]
    assert entry.columns == COLUMNS and entry.name == "tiny"
    assert entry.file("vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert flat(iter_blocks(entry, "train")) == as_python(train)
    assert flat(iter_blocks(entry, "dev", block_rows=7)) == as_python(dev)
    # a subset of the columns
    assert flat(iter_blocks(entry, "dev", columns=["truncated"])) == [{"truncated": r["truncated"]} for r in dev]


@pytest.mark.parametrize("processes", [1, 2, 3, 5])
def test_process_shares_partition_a_split(tmp_path, processes):
    entry = write(Cache(tmp_path), shard_rows=256, block_rows=50)
    shares = [[r["row_example"] for r in flat(iter_blocks(entry, "train", num_processes=processes, process_id=p))]
              for p in range(processes)]
    assert sorted(sum(shares, [])) == list(range(700))  # every row once
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 50  # at most one block apart
    if processes > 1:  # strided blocks: each process has rows from the start and the end of the split
        assert all(min(s) < 50 * processes and max(s) >= 700 - 50 * processes for s in shares)


def test_shuffled_blocks_are_a_seeded_permutation(tmp_path):
    entry = write(Cache(tmp_path), block_rows=64)
    order = [r["row_example"] for r in flat(iter_blocks(entry, "train", seed=[3, 0]))]
    assert sorted(order) == list(range(700)) and order != list(range(700))
    assert order == [r["row_example"] for r in flat(iter_blocks(entry, "train", seed=[3, 0]))]
    assert order != [r["row_example"] for r in flat(iter_blocks(entry, "train", seed=[3, 1]))]


def test_read_split_gives_tf_data_rows_and_blocks(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rows = make_rows(300)
    entry = write(Cache(tmp_path), {"train": rows}, block_rows=64)
    got = list(cache_lib.read_split(entry, "train").as_numpy_iterator())
    assert as_python(got) == as_python(rows)
    block = next(iter(cache_lib.read_split(entry, "train", blocks=True, columns=["token_ids", "labels/multi"])))
    assert isinstance(block["token_ids"], tf.RaggedTensor) and block["token_ids"].shape[0] == 64
    assert block["labels/multi"].shape == (64, 3)
    # shuffled: a new order of blocks each epoch (each iteration), every row once
    dataset = cache_lib.read_split(entry, "train", shuffle_seed=7, columns=["row_example"])
    epochs = [[int(x["row_example"]) for x in dataset.as_numpy_iterator()] for _ in range(2)]
    assert all(sorted(e) == list(range(300)) for e in epochs) and epochs[0] != epochs[1]
    share = cache_lib.read_split(entry, "train", num_processes=2, process_id=1, columns=["row_example"])
    assert [int(x["row_example"]) for x in share.as_numpy_iterator()][:3] == [64, 65, 66]


def test_encoded_block_of_every_task_type(tmp_path):
    """An `EncodedSplit`'s rows (labels as each task type encodes them) round-trip."""
    examples = [
        Example("a b c", {"c": "x", "m": ("p",), "r": 0.5, "t": ("N", "V", "N")}),
        Example("d e", {"c": "y", "t": ("V", "N")}, text_pair="f"),
        Example("g", {"m": ("p", "q"), "r": -1.0}),
    ]
    token_ids = [np.array([2, 5, 6, 7], np.int32), np.array([2, 8, 9, 3, 10, 3], np.int32), np.array([2, 11], np.int32)]
    word_starts = [np.array([1, 2, 3], np.int32), np.array([1, 2], np.int32), np.array([1], np.int32)]
    types = {"c": ("classification", ["x", "y"]), "m": ("multilabel", ["p", "q"]), "r": ("regression", []),
             "t": ("tagging", ["N", "V"])}
    labels, weights = {}, {}
    for name, (kind, classes) in types.items():
        task = SimpleNamespace(name=name, type=kind, positive_class=None)
        labels[name], weights[name] = for_task(task, classes).encode_labels(examples, token_ids, word_starts)
    encoded = SimpleNamespace(examples=examples, token_ids=token_ids, word_starts=word_starts,
                              truncated=np.array([False, True, False]), labels=labels, weights=weights)
    columns = cached.encoded_columns(encoded, list(types))
    assert columns["labels/c"] == Column("int32") and columns["labels/m"] == Column("float32", (2,))
    assert columns["labels/r"] == Column("float32") and columns["labels/t"] == Column("int32", (None,))
    entry = Cache(tmp_path).write(KEY, {"train": [cached.encoded_block(encoded, list(types))]}, columns)
    (got,) = [flat(iter_blocks(entry, "train"))]
    assert [r["token_ids"] for r in got] == [t.tolist() for t in token_ids]
    assert [bytes(r["text_hash"]) for r in got] == [example_hash(e.text, e.text_pair) for e in examples]
    assert [r["labels/c"] for r in got] == [0, 1, 0] and [r["weights/c"] for r in got] == [1.0, 1.0, 0.0]
    assert [r["labels/m"] for r in got] == [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert [r["labels/t"] for r in got] == [labels["t"][i].tolist() for i in range(3)]
    assert [r["truncated"] for r in got] == [False, True, False]


# ------------------------------------------------------------------ concurrent writers


def _race(directory, start, results, slow):
    """A process that writes KEY (slowly) unless it finds it written; reports what it got."""
    cache = Cache(directory)
    start.wait()  # both at once, after their imports

    def build():
        time.sleep(slow)
        return EntryData({"train": make_rows(300)}, COLUMNS, {"writer": os.getpid()})

    entry, built = cache.get_or_write(KEY, build, name="race")
    rows = flat(iter_blocks(entry, "train"))
    results.put((os.getpid(), built, entry.meta["writer"], entry.manifest["created_by"]["pid"], len(rows)))


def test_two_processes_writing_the_same_key_leave_one_entry_that_both_read(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_race, args=(str(tmp_path), start, results, 1.0)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    built = [g for g in got if g[1]]
    assert len(built) == 1  # one wrote; the other waited for the lock and opened its entry
    winner = built[0][0]
    assert all(g[2] == winner and g[3] == winner and g[4] == 300 for g in got)  # the loser read the winner's
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY.digest, f"{KEY.digest}.lock"]  # no temporaries
    assert Cache(tmp_path).open(KEY) is not None


def _slow_writer(directory, rows, delay):
    def stream():
        for row in make_rows(rows):
            time.sleep(delay)
            yield row

    Cache(directory).write(KEY, {"train": stream()}, COLUMNS, block_rows=8)


def test_a_reader_never_sees_a_half_written_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_slow_writer, args=(str(tmp_path), 120, 0.01))
    writer.start()
    seen, entry = set(), None
    cache = Cache(tmp_path)
    while writer.is_alive() or entry is None:
        if (tmp_path / KEY.digest).exists():  # the entry's directory exists only complete
            assert (tmp_path / KEY.digest / cache_lib.MANIFEST).exists()
        seen.update(p.name.split("-")[0] for p in tmp_path.iterdir() if ".tmp" in p.name)
        entry = cache.open(KEY)
        if not writer.is_alive() and entry is None:
            break
        time.sleep(0.005)
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert seen == {f"{KEY.digest}.tmp"}  # it was written elsewhere, then renamed
    assert entry is not None and entry.rows("train") == 120


# ------------------------------------------------------------------ damage


def _killed_writer(directory):
    def stream():
        for i, row in enumerate(make_rows(500)):
            if i == 300:
                os.kill(os.getpid(), signal.SIGKILL)  # killed half-way (blocks of 100 are on disk)
            yield row

    Cache(directory).write(KEY, {"train": stream()}, COLUMNS, block_rows=100)


def test_a_killed_writer_leaves_a_stale_temporary_that_the_next_writer_removes(tmp_path):
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_killed_writer, args=(str(tmp_path),))
    writer.start()
    writer.join(timeout=120)
    assert writer.exitcode == -signal.SIGKILL
    cache = Cache(tmp_path)
    (temporary,) = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert any(temporary.rglob("*.values"))  # half-written
    assert cache.open(KEY) is None  # never read
    (info,) = cache.entries()
    assert info.state.startswith(f"stale temporary (pid {writer.pid} on ")
    entry, built = cache.get_or_write(KEY, lambda: EntryData({"train": make_rows(50)}, COLUMNS))
    assert built and entry.rows("train") == 50
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _damage(entry, how):
    directory, _ = entry.shards("train")[0]
    target = directory / "token_ids.values"
    data = bytearray(target.read_bytes())
    if how == "truncated":
        target.write_bytes(bytes(data[:-4]))
    elif how == "flipped byte":
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif how == "missing file":
        target.unlink()
    elif how == "no manifest":  # a half-written entry in place: as if renamed early
        (entry.path / cache_lib.MANIFEST).unlink()
    elif how == "bad manifest":
        (entry.path / cache_lib.MANIFEST).write_text('{"format": 1, "key": ')
    elif how == "extra file truncated":
        entry.file("vocab.txt").write_text("[PAD]\n")


DAMAGE = ["truncated", "flipped byte", "missing file", "no manifest", "bad manifest", "extra file truncated"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_entry_is_reported_once_removed_and_rebuilt_never_read(tmp_path, how):
    cache = Cache(tmp_path)
    entry = write(cache)
    _damage(entry, how)
    listed = {i.key: i.state for i in cache.entries(verify="sha256")}
    assert listed[KEY.digest].startswith("corrupt: ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.open(KEY) is None
    assert len(caught) == 1 and "corrupt prepared-data cache entry" in str(caught[0].message), caught
    assert not (tmp_path / KEY.digest).exists()
    built = []
    again, fresh = cache.get_or_write(KEY, lambda: built.append(1) or EntryData({"train": make_rows(700)}, COLUMNS))
    assert fresh and built == [1] and flat(iter_blocks(again, "train")) == as_python(make_rows(700))


def test_a_flipped_byte_passes_a_size_check_but_not_the_default_one(tmp_path):
    cache = Cache(tmp_path)
    _damage(write(cache), "flipped byte")
    assert cache.open(KEY, verify="size") is not None  # sizes match: only the SHA-256 tells
    with pytest.warns(UserWarning, match="does not match its SHA-256"):
        assert cache.open(KEY) is None


def test_a_failing_stream_leaves_nothing(tmp_path):
    def stream():
        yield from make_rows(250)
        raise DataError("data.tsv:251: expected at least 2 fields")

    cache = Cache(tmp_path)
    with pytest.raises(DataError, match="data.tsv:251"):
        cache.write(KEY, {"train": stream()}, COLUMNS, block_rows=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{KEY.digest}.lock"]


# ------------------------------------------------------------------ listing and clearing


def test_entries_find_and_clear(tmp_path):
    cache = Cache(tmp_path / "cache")
    assert cache.entries() == [] and cache.clear() == [] and not (tmp_path / "cache").exists()
    one = write(cache)
    other = write(cache, key=CacheKey.of({"test": 2}))
    infos = {i.key: i for i in cache.entries()}
    assert set(infos) == {one.key, other.key}
    assert infos[one.key].rows == {"train": 700, "dev": 30} and infos[one.key].bytes == one.bytes > 0
    assert infos[one.key].name == "tiny" and infos[one.key].state == "ok"
    assert cache.find(one.key[:6]) == one.key
    with pytest.raises(DataError, match="no cache entry 'ffff"):
        cache.find("ffffffff")
    with cache.lock(other.key):  # being written (the lock is held): clear leaves it
        assert cache.clear() == [one.path]
    assert [i.key for i in cache.entries()] == [other.key]
    assert cache.clear(other.key) == [other.path] and cache.entries() == []


def test_the_cache_directory_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_MTL_CACHE", str(tmp_path / "env"))
    assert cache_lib.default_dir() == tmp_path / "env" == cache_lib.cache_dir(None)
    monkeypatch.delenv("KERAS_MTL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_lib.default_dir() == tmp_path / "xdg" / "keras-mtl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_lib.default_dir() == Path("~/.cache/keras-mtl").expanduser()
    assert cache_lib.cache_dir("c", base=tmp_path) == tmp_path / "c"  # relative to the config file
    assert cache_lib.cache_dir("~/c") == Path("~/c").expanduser()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, expected the cache directory"):
        Cache(tmp_path / "file")


# ------------------------------------------------------------------ the key


def _config(path, **top):
    task = {"name": "s", "type": "classification",
            "data": {"format": "delimited", "train": str(path), "text_column": "sentence"}}
    raw = {"name": "k", "tasks": [task], **top}
    for dotted, value in list(top.items()):
        if "." in dotted:  # "model.max_sequence_length": 32 -> {"model": {...}}
            del raw[dotted]
            section, key = dotted.split(".")
            raw.setdefault(section, {})[key] = value
    return config_from_dict(raw).config


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(50)))
    return path


def test_every_input_of_the_rows_changes_the_key(data_file):
    base = data_key(_config(data_file))
    assert base == data_key(_config(data_file))  # deterministic
    changed = {
        "reader option": data_key(_config(data_file, **{"tasks": [{"name": "s", "type": "classification", "data": {
            "format": "delimited", "train": str(data_file), "text_column": "sentence", "skip_empty_text": True}}]})),
        "max_sequence_length": data_key(_config(data_file, **{"model.max_sequence_length": 32})),
        "lowercase": data_key(_config(data_file, **{"model.lowercase": False})),
        "vocabulary_size": data_key(_config(data_file, **{"model.vocabulary_size": 500})),
        "vocabulary sample": data_key(_config(data_file, **{"cache.vocabulary_sample": 10})),
        "split seed": data_key(_config(data_file, **{"splits.seed": 1})),
        "dev fraction": data_key(_config(data_file, **{"splits.dev_fraction": 0.2})),
        "leaks": data_key(_config(data_file, **{"splits.leaks": "drop"})),
        "vocabulary": data_key(_config(data_file), vocabulary=["[PAD]", "a"]),
        "label map": data_key(_config(data_file), classes={"s": ["0", "1"]}),
    }
    assert data_key(_config(data_file), vocabulary=["[PAD]", "b"]) != changed["vocabulary"]
    assert data_key(_config(data_file), classes={"s": ["1", "0"]}) != changed["label map"]
    for what, key in changed.items():
        assert key != base, what
    assert len({k.digest for k in changed.values()}) == len(changed)
    # What does not change the rows does not change the key.
    for top in ({"model.hidden_dim": 64}, {"train.epochs": 9}, {"seed": 5}, {"cache.dir": "/elsewhere"},
                {"cache.full_hash": False}):
        assert data_key(_config(data_file, **top)) == base, top
    # The file's content: a new row.
    with open(data_file, "a") as f:
        f.write("one more\t1\n")
    assert data_key(_config(data_file)) != base


def test_mtime_only_changes_the_cheap_identity_not_the_full_hash(data_file, tmp_path):
    cheap, full = data_key(_config(data_file)), data_key(_config(data_file), full_hash=True)
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes
    assert data_key(_config(data_file)) != cheap  # a rebuild, never a wrong entry
    assert data_key(_config(data_file), full_hash=True) == full
    # the same bytes elsewhere (copied with their mtime) are the same data
    copy = tmp_path / "elsewhere" / "copy.tsv"
    copy.parent.mkdir()
    shutil.copy2(data_file, copy)
    assert data_key(_config(copy)) == data_key(_config(data_file))


def test_the_cheap_identity_misses_only_a_middle_edit_that_keeps_size_and_mtime(tmp_path):
    path = tmp_path / "big.tsv"
    body = bytearray(b"sentence\tlabel\n" + b"a fine film\t1\n" * 300_000)  # 4.2 MB: a middle beyond both MiBs
    path.write_bytes(bytes(body))
    cheap, full = file_identity(path), file_identity(path, full_hash=True)
    stat = path.stat()
    body[len(body) // 2] = ord("b")  # an edit in the middle, then the old mtime back
    path.write_bytes(bytes(body))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_identity(path) == cheap  # documented: set cache.full_hash for such edits
    assert file_identity(path, full_hash=True) != full
    body[5] = ord("X")  # in the first MiB: the cheap identity sees it
    path.write_bytes(bytes(body))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_identity(path) != cheap


def test_key_parts_are_json_and_missing_files_do_not_fail(tmp_path):
    key = data_key(_config(tmp_path / "not-there.tsv"))
    assert key.parts["tasks"][0]["sources"]["train"] == {"missing": str(tmp_path / "not-there.tsv")}
    assert json.loads(json.dumps(key.parts)) == key.parts
    with pytest.raises(ValueError, match="cache key parts must be JSON"):
        cache_lib.fingerprint({"x": {1, 2}})


# ------------------------------------------------------------------ keras-mtl prepare


def _cli(*argv):
    import contextlib
    import io

    from keras_mtl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_prepare_list_and_clear(tmp_path):
    cache = Cache(tmp_path / "cache")
    one, other = write(cache), write(cache, key=CacheKey.of({"test": 2}))
    code, out, err = _cli("prepare", "--list", "--cache-dir", tmp_path / "cache")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "CONFIG", "CREATED", "SIZE", "ROWS", "(train/dev/test)", "STATE"]
    assert any(line.startswith(one.key) and "tiny" in line and "700/30" in line and line.endswith("ok") for line in lines)
    assert lines[-1].startswith(f"cache: {tmp_path / 'cache'} (2 complete entries, ")
    code, out, _ = _cli("prepare", "--clear", "--key", one.key[:5], "--cache-dir", tmp_path / "cache")
    assert code == 0 and f"removed 1 directory (entry {one.key})" in out
    assert [i.key for i in cache.entries()] == [other.key]
    code, out, _ = _cli("prepare", "--clear", "--cache-dir", tmp_path / "cache")
    assert code == 0 and "(every entry)" in out and cache.entries() == []
    code, out, _ = _cli("prepare", "--list", "--cache-dir", tmp_path / "nowhere")
    assert (code, out.strip()) == (0, f"cache: {tmp_path / 'nowhere'}: no entries")
    assert not (tmp_path / "nowhere").exists()


DEMO = """\
name: cached
tasks:
  - name: topic
    type: classification
    data: {format: demo, kind: topic, train: 60, dev: 12}
  - name: pos
    type: tagging
    data: {format: demo, kind: pos, train: 60, dev: 12, test: 12}
model: {vocabulary_size: 120, max_sequence_length: 16}
cache: {dir: the-cache}
"""


@pytest.mark.slow
def test_prepare_writes_the_rows_train_encodes(tmp_path):
    """`keras-mtl prepare CONFIG`: the entry holds exactly the encoded splits of `prepare()` (TensorFlow: slow)."""
    from keras_mtl.config import load_config
    from keras_mtl.prepare import prepare

    config = tmp_path / "c.yaml"
    config.write_text(DEMO, encoding="utf-8")
    code, out, err = _cli("prepare", config)
    assert code == 0, err
    assert "written in" in out and "(train/dev/test)" in out
    (info,) = Cache(tmp_path / "the-cache").entries()  # cache.dir: relative to the config file
    entry = Cache(tmp_path / "the-cache").open(info.key)
    assert entry.key == data_key(load_config(config).config).digest and entry.name == "cached"
    prepared = prepare(load_config(config), plan=False)
    assert entry.file("vocab.txt").read_text(encoding="utf-8").splitlines() == list(prepared.vocabulary)
    assert entry.meta["classes"] == prepared.data.classes
    for split in ("train", "dev", "test"):
        encoded = prepared.encoded[split]
        rows = flat(iter_blocks(entry, split))
        assert len(rows) == len(encoded)
        assert [r["token_ids"] for r in rows] == [t.tolist() for t in encoded.token_ids]
        assert [r["word_starts"] for r in rows] == [w.tolist() for w in encoded.word_starts]
        for task in ("topic", "pos"):
            labels = encoded.labels[task]
            assert [r[f"labels/{task}"] for r in rows] == [np.asarray(labels[i]).tolist() for i in range(len(rows))]
            assert [r[f"weights/{task}"] for r in rows] == encoded.weights[task].tolist()
    code, out, _ = _cli("prepare", config)  # warm: nothing to do
    assert code == 0 and "already in the cache: nothing to do" in out
    code, out, _ = _cli("prepare", config, "--clear")  # the config's own entry
    assert code == 0 and f"(entry {entry.key})" in out and Cache(tmp_path / "the-cache").entries() == []
