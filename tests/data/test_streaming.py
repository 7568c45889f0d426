"""Readers stream (issue 27): a line is read, its example yielded; nothing holds a whole file.

A bad line of a large file fails when it is reached, with the message of
today, after reading about one chunk of the file, not all of it. The bytes a
reader takes from the file are counted by wrapping `Path.open`.
"""

import codecs
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data import readers
from keras_mtl.data.readers import ReadRequest, get_reader, iter_lines, split_lines
from keras_mtl.errors import DataError

LINES = 200_000


class _Counting:
    """A binary file that counts the bytes read from it."""

    def __init__(self, f, counter):
        self.f, self.counter = f, counter

    def read(self, n=-1):
        data = self.f.read(n)
        self.counter["bytes"] += len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


CHUNK = 64 * 1024


@pytest.fixture
def bytes_read(monkeypatch):
    """{"bytes": n}: what readers read through `Path.open` during the test (chunks of 64 KiB)."""
    monkeypatch.setattr(readers, "READ_CHUNK_BYTES", CHUNK)
    counter = {"bytes": 0}
    real_open = pathlib.Path.open

    def counting_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return _Counting(f, counter) if "b" in mode else f

    monkeypatch.setattr(pathlib.Path, "open", counting_open)
    return counter


def request(fmt, source, task_type="classification", **options):
    reader = get_reader(fmt)
    return reader, ReadRequest(source, reader.options(**options), "t", task_type, "train")


def first_error(fmt, source, task_type="classification", **options):
    reader, req = request(fmt, source, task_type, **options)
    with pytest.raises(DataError) as info:
        for _ in reader.read(req):
            pass
    return str(info.value)


def big_file(path, first_lines, filler):
    """`first_lines`, then `filler` up to LINES lines: a file of several MiB."""
    path.write_text("".join(line + "\n" for line in first_lines) + filler * (LINES - len(first_lines)), "utf-8")
    assert path.stat().st_size > 20 * CHUNK
    return path


CASES = [
    # (format, file name, first lines (line 3 is bad), filler, options, task type, message)
    ("delimited", "t.tsv", ["sentence\tlabel", "good film\tpos", "no label here"], "a fine film\tneg\n", {},
     "classification", "{path}:3: expected at least 2 fields separated by '\\t', found 1"),
    ("jsonl", "t.jsonl", ['{"text": "a", "label": "x"}', '{"text": "b", "label": "y"}', '{"text": 3, "label": "x"}'],
     '{"text": "a fine film", "label": "x"}\n', {}, "classification",
     "{path}:3: field 'text' must be a string, found an integer: 3"),
    ("conll", "t.conll", ["The DT", "dog NN", "barks"], "A DT\ncat NN\n\n", {"label_column": 1}, "tagging",
     "{path}:3: expected 2 columns, found 1; token 'barks' has no label in column 1"),
    ("conllu", "t.conllu", ["1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_", "2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_",
                            "3\tbarks"], "1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n\n", {}, "tagging",
     "{path}:3: expected 10 tab-separated fields"),
]


@pytest.mark.parametrize("fmt, name, first, filler, options, task_type, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_line_3_of_a_large_file_fails_after_reading_one_chunk(
    tmp_path, bytes_read, fmt, name, first, filler, options, task_type, message
):
    path = big_file(tmp_path / name, first, filler)
    error = first_error(fmt, str(path), task_type, **options)
    assert error.startswith(message.format(path=path)), error
    assert 0 < bytes_read["bytes"] <= CHUNK  # the first chunk only, of a file of > 20 chunks


def test_per_label_fails_at_a_blank_line_without_reading_the_rest(tmp_path, bytes_read):
    pos = big_file(tmp_path / "pos.txt", ["a good film", "a fine film", ""], "a great film\n")
    neg = big_file(tmp_path / "neg.txt", ["a bad film"], "a dull film\n")
    error = first_error("per_label", {"positive": str(pos), "negative": str(neg)}, skip_blank_lines=False)
    assert error.startswith(f"{pos}:3: blank line"), error
    assert bytes_read["bytes"] <= CHUNK  # neither the rest of pos.txt nor neg.txt


def test_a_reader_yields_its_first_example_before_reading_the_rest(tmp_path, bytes_read):
    path = big_file(tmp_path / "t.tsv", ["sentence\tlabel", "good film\tpos"], "a fine film\tneg\n")
    reader, req = request("delimited", str(path))
    stream = reader.read(req)
    first = next(stream)
    assert (first.text, first.labels, first.origin) == ("good film", {"t": "pos"}, f"{path}:2")
    assert bytes_read["bytes"] <= CHUNK
    assert sum(1 for _ in stream) == LINES - 2  # and the rest follows
    assert bytes_read["bytes"] == path.stat().st_size


def test_the_demo_reader_generates_on_demand():
    reader, req = request("demo", 10**12, kind="topic")  # a trillion examples: only a stream can start
    stream = reader.read(req)
    assert [next(stream).origin for _ in range(3)] == ["demo:topic/train:1", "demo:topic/train:2", "demo:topic/train:3"]


# ------------------------------------------------------------ iter_lines: chunk boundaries

PIECES = ["a", "é", "€", "𝄞", " ", "\t", "\r", "\n", "\r\n", "\u2028", "\x85", "\ufeff"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    text=st.lists(st.sampled_from(PIECES), max_size=40).map("".join),
    bom=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
    chunk=st.integers(1, 9),
)
def test_iter_lines_reads_in_chunks_what_split_lines_gives_for_the_whole_text(
    tmp_path, monkeypatch, text, bom, encoding, chunk
):
    """Any chunk size, any place a multi-byte character or a \\r\\n is cut: the lines of the whole text."""
    if encoding == "latin-1":
        text = text.encode("latin-1", "replace").decode("latin-1")
    monkeypatch.setattr(readers, "READ_CHUNK_BYTES", chunk)
    path = tmp_path / "f.txt"
    path.write_bytes((codecs.BOM_UTF8 if bom and encoding == "utf-8" else b"") + text.encode(encoding))
    whole = text[1:] if text.startswith("\ufeff") and not (bom and encoding == "utf-8") else text
    if "\n" not in whole and "\r" in whole.rstrip("\r"):
        with pytest.raises(DataError, match="bare carriage return"):
            list(iter_lines(path, encoding))
    else:
        assert list(iter_lines(path, encoding)) == split_lines(whole)


@SETTINGS
@given(
    before=st.lists(st.sampled_from(["ab\n", "é", "€\n", "𝄞", "x"]), max_size=20).map("".join),
    bad=st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]),
    chunk=st.integers(1, 9),
)
def test_a_decoding_error_names_the_byte_offset_in_the_whole_file(tmp_path, monkeypatch, before, bad, chunk):
    monkeypatch.setattr(readers, "READ_CHUNK_BYTES", chunk)
    raw = before.encode("utf-8") + bad + b" tail\n"
    path = tmp_path / "f.txt"
    path.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError) as whole:
        raw.decode("utf-8")
    with pytest.raises(DataError) as info:
        list(iter_lines(path))
    assert str(info.value).startswith(f"{path}: byte offset {whole.value.start}: not valid utf-8 ({whole.value.reason})")


def test_iter_lines_errors_before_reading(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        next(iter_lines(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="is a directory"):
        next(iter_lines(tmp_path))
    (tmp_path / "f.txt").write_text("x\n")
    with pytest.raises(DataError, match=r"unknown encoding 'no-such-codec'"):
        next(iter_lines(tmp_path / "f.txt", "no-such-codec"))
