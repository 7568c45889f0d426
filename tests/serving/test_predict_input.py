"""`predict --input` from pipes and standard input, and what can go wrong around it
(issue 25, round 3): a pipe read in full (never counted away first), `--header`
refused for JSON Lines, messages naming the CLI's options, temporaries of a
killed run removed, a full disk as one error.

Most tests use a fake predictor (a callable), like tests/serving/test_predict_file.py;
the subprocess and CLI tests use the fake exports of tests/serving/test_predict.py.
"""

import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keras_mtl.errors import DataError, ServingError
from keras_mtl.serving.predict import predict_file

from helpers import import_path

REPO = Path(__file__).resolve().parents[2]
N = 100


def echo(texts):
    return [{"echo": {"label": t}, "_meta": {"num_words": len(t.split())}} for t in texts]


def _records(n=N):
    return [{"text": f"text number {i}", "id": i} for i in range(n)]


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _cli(argv):
    """(exit status, stdout, stderr) of `keras-mtl argv`, in-process."""
    import contextlib

    from keras_mtl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _one_error(code, err):
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-mtl predict: error: "), err
    return lines[0]


FAKES = import_path(Path(__file__).with_name("test_predict.py"), "_fake_exports_input")  # its fakes' answers


# --------------------------------------------------------------------------
# Pipes and standard input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_a_real_pipe_into_the_cli_is_predicted_line_for_line(fakes, subprocess_env, tmp_path, source):
    """`cat in.jsonl | keras-mtl predict M --input -|/dev/stdin --format jsonl --output o.jsonl`."""
    rows = _records()
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "keras_mtl.cli", "predict", str(fakes["mixed"]), "--input", source,
         "--format", "jsonl", "--output", str(out), "--batch-size", "16"],
        input=_jsonl(rows), capture_output=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = _lines(out)
    assert len(got) == len(rows)
    assert [g["sentiment"] for g in got] == [FAKES.sentiment_of(r["text"]) for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]  # no temporary left


def _feed(path_or_fd, data):
    """Write `data` into a FIFO path or a pipe's write end from a thread; closes it."""

    def run():
        if isinstance(path_or_fd, int):
            fd = path_or_fd
        else:
            fd = os.open(path_or_fd, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class _Rescue:
    """If a reader blocks opening a FIFO with no writer left, open it for writing
    once and close it (the reader then sees end of file), so a bug fails the
    test instead of hanging it."""

    def __init__(self, fifo, after=15.0):
        self.fifo, self.after, self.done = fifo, after, threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        if self.done.wait(self.after):
            return
        while not self.done.is_set():
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            time.sleep(0.2)


@pytest.mark.parametrize("strict", [False, True])
def test_a_fifo_path_is_read_in_full(tmp_path, strict):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    rows = _records()
    writer = _feed(str(fifo), _jsonl(rows))
    rescue = _Rescue(fifo)
    out = tmp_path / "out.jsonl"
    try:
        counts = predict_file(echo, fifo, out, format="jsonl", batch_size=7, strict=strict)
    finally:
        rescue.done.set()
    writer.join(5)
    assert counts == {"lines": N, "predicted": N, "errors": 0, "output": str(out)}
    assert [g["echo"]["label"] for g in _lines(out)] == [r["text"] for r in rows]


@pytest.mark.parametrize("strict", [False, True])
def test_an_os_pipe_path_is_read_in_full(tmp_path, strict):
    """`--input <(cat in.jsonl)`: a /dev/fd/N path of a pipe."""
    read_fd, write_fd = os.pipe()
    rows = _records()
    writer = _feed(write_fd, _jsonl(rows))
    out = tmp_path / "out.jsonl"
    try:
        counts = predict_file(echo, f"/dev/fd/{read_fd}", out, format="jsonl", batch_size=7, strict=strict)
    finally:
        os.close(read_fd)
    writer.join(5)
    assert counts["lines"] == N and counts["predicted"] == N
    assert [g["echo"]["label"] for g in _lines(out)] == [r["text"] for r in rows]


def test_a_pipe_is_predicted_batch_by_batch_while_the_rest_is_still_unwritten(tmp_path):
    """Streaming (issue 27: memory does not grow with the input): the first batch is predicted
    and written out before the writer has sent the rest, which it sends only after that."""
    read_fd, write_fd = os.pipe()
    rows = _records(5 * 7)
    first_call, out = threading.Event(), tmp_path / "out.jsonl"
    pending_at_calls = []

    def write():
        with os.fdopen(write_fd, "wb") as f:
            f.write(_jsonl(rows[:7]))
            f.flush()
            first_call.wait(30)  # the rest only once a batch was predicted
            f.write(_jsonl(rows[7:]))

    def predictor(texts):
        pending_at_calls.append(len(texts))
        first_call.set()
        return echo(texts)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    start = time.monotonic()
    try:
        counts = predict_file(predictor, f"/dev/fd/{read_fd}", out, format="jsonl", batch_size=7)
    finally:
        os.close(read_fd)
    writer.join(5)
    assert time.monotonic() - start < 25, "the first batch waited for the whole input"
    assert counts["lines"] == len(rows) and pending_at_calls == [7] * 5
    assert [g["echo"]["label"] for g in _lines(out)] == [r["text"] for r in rows]


def test_strict_on_a_pipe_checks_every_line_before_predicting(tmp_path):
    read_fd, write_fd = os.pipe()
    rows = [json.dumps(r) for r in _records()]
    rows[49] = "{oops"
    _feed(write_fd, ("\n".join(rows) + "\n").encode())
    calls = []

    def predictor(texts):
        calls.append(len(texts))
        return echo(texts)

    out = tmp_path / "out.jsonl"
    try:
        with pytest.raises(DataError, match=rf"^/dev/fd/{read_fd}:50: invalid JSON"):
            predict_file(predictor, f"/dev/fd/{read_fd}", out, format="jsonl", strict=True)
    finally:
        os.close(read_fd)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_standard_input_is_dash_and_named_stdin(tmp_path, monkeypatch):
    data = _jsonl(_records(3)) + b"not json\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    err = io.StringIO()
    out = tmp_path / "out.jsonl"
    counts = predict_file(echo, "-", out, format="jsonl", stderr=err)
    assert counts == {"lines": 4, "predicted": 3, "errors": 1, "output": str(out)}
    assert len(_lines(out)) == 4
    assert err.getvalue().startswith("<stdin>:4: invalid JSON")


def test_standard_input_or_a_pipe_needs_a_format(tmp_path):
    with pytest.raises(DataError) as info:
        predict_file(echo, "-")
    assert str(info.value) == ("standard input (-) has no file extension to tell its format from: "
                               "give format='jsonl' or format='tsv'")
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(DataError, match=rf"^/dev/fd/{read_fd}: a pipe or device, with no file extension"):
            predict_file(echo, f"/dev/fd/{read_fd}")
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_file_cut_short_while_read_is_an_error_not_a_short_output(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_records(5000)))

    def truncating(texts, calls=[]):
        calls.append(1)
        if len(calls) == 1:
            src.write_bytes(b"")  # another process empties the file under the reader
        return echo(texts)

    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=rf"^{src}: only \d+ of its 5000 lines could be read "
                                        r"\(the file changed while it was read\); nothing was written"):
        predict_file(truncating, src, out, batch_size=16)
    assert list(tmp_path.iterdir()) == [src]


# --------------------------------------------------------------------------
# --header, directories, and messages that name the caller's options
# --------------------------------------------------------------------------


def test_header_with_json_lines_is_an_error(tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    src.write_bytes(_jsonl(_records(2)))
    calls = []
    with pytest.raises(DataError) as info:
        predict_file(lambda texts: calls.append(texts) or echo(texts), src, tmp_path / "o.jsonl", header=True)
    assert str(info.value) == (f"{src}: header=True is for TSV input; JSON Lines has no header line "
                               "(every line is a record)")
    assert calls == [] and list(tmp_path.iterdir()) == [src]
    # through the CLI: the option's name; refused before the model is opened
    code, out, err = _cli(["predict", tmp_path / "no-model", "--input", src, "--header",
                           "--output", tmp_path / "o.jsonl"])
    assert _one_error(code, err) == (f"keras-mtl predict: error: {src}: --header is for TSV input; JSON Lines "
                                     "has no header line (every line is a record)")
    assert out == "" and list(tmp_path.iterdir()) == [src]


def test_a_directory_as_input_is_named_a_directory(tmp_path):
    with pytest.raises(DataError) as info:
        predict_file(echo, tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, expected an input file"
    code, _, err = _cli(["predict", tmp_path / "no-model", "--input", tmp_path])
    line = _one_error(code, err)
    assert line.endswith(f"{tmp_path}: is a directory, expected an input file") and "extension" not in line


def test_cli_format_message_names_the_option(tmp_path):
    code, _, err = _cli(["predict", tmp_path / "no-model", "--input", "-"])
    assert _one_error(code, err) == ("keras-mtl predict: error: standard input (-) has no file extension to "
                                     "tell its format from: give --format jsonl|tsv")
    (tmp_path / "x.csv").write_text('{"text": "a"}\n')
    code, _, err = _cli(["predict", tmp_path / "no-model", "--input", tmp_path / "x.csv"])
    assert _one_error(code, err).endswith("or give --format jsonl|tsv")
    with pytest.raises(DataError, match=r"or give format='jsonl' or format='tsv'$"):  # the Python API
        predict_file(echo, tmp_path / "x.csv")


def test_cli_text_that_is_not_utf8_names_the_argument_not_bytes(tmp_path):
    bad = os.fsdecode(b"\xff\xfe")  # what Python makes of `predict M $'\xff\xfe'`
    code, out, err = _cli(["predict", tmp_path / "no-model", "fine", bad])
    line = _one_error(code, err)
    assert line == ("keras-mtl predict: error: TEXT 2 is not valid UTF-8 (byte 1 is 0xff): give texts in UTF-8 "
                    "(convert them, e.g. with iconv -t UTF-8)")
    assert "bytes" not in line and out == ""
    code, _, err = _cli(["predict", tmp_path / "no-model", "a", "--task", "rte", "--text-pair",
                         os.fsdecode("caf\xe9".encode("latin-1"))])
    assert "--text-pair 1 is not valid UTF-8 (byte 4 is 0xe9)" in _one_error(code, err)


class _TooLarge:
    """urllib's opener for a TF Serving whose batching allows 32 texts per request."""

    def __init__(self):
        self.sizes = []

    def open(self, request, timeout):
        import urllib.error

        size = len(json.loads(request.data)["instances"])
        self.sizes.append(size)
        body = {"error": f"Task size {size} is larger than maximum input batch size 32"}
        raise urllib.error.HTTPError(request.full_url, 400, "Bad Request", {}, io.BytesIO(json.dumps(body).encode()))


def test_the_servers_batch_limit_advice_names_the_callers_option(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: _TooLarge())
    url = "http://127.0.0.1:1/v1/models/m"
    texts = [f"t{i}" for i in range(40)]
    code, _, err = _cli(["predict", url, *texts, "--batch-size", "64"])
    line = _one_error(code, err)
    assert line.endswith("(this server takes at most 32 texts per request: pass --batch-size 32)"), line
    assert "max_batch_size" not in line

    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_records(40)))
    code, _, err = _cli(["predict", url, "--input", src, "--batch-size", "64", "--output", tmp_path / "o.jsonl"])
    assert _one_error(code, err).endswith("pass --batch-size 32)")
    assert list(tmp_path.iterdir()) == [src]
    with pytest.raises(ServingError, match=r"pass batch_size=32\)$"):  # predict_file's own argument
        predict_file(url, src, tmp_path / "o.jsonl", batch_size=64)


# --------------------------------------------------------------------------
# --output: temporaries of a killed run, a full disk
# --------------------------------------------------------------------------

_KILLED_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from keras_mtl.serving.predict import predict_file

calls = []

def slow(texts):
    calls.append(1)
    if len(calls) > 1:
        time.sleep(600)  # killed here
    return [{"echo": {"label": t}} for t in texts]

predict_file(slow, sys.argv[1], sys.argv[2], batch_size=2)
"""


def test_the_temporary_of_a_killed_predict_is_removed_by_the_next(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_records(10)))
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(src), str(out), str(REPO)])
    left = tmp_path / f".out.jsonl.tmp-{child.pid}"
    try:
        deadline = time.monotonic() + 60
        while not left.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert left.exists() and not out.exists()  # what `kill -9` leaves behind

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".out.jsonl.tmp-{alive.pid}"  # another predict, still writing
        running.write_text("partial\n")
        other = tmp_path / f".other.jsonl.tmp-{child.pid}"  # another output's: not ours to judge
        other.write_text("x\n")
        predict_file(echo, src, out)
        assert not left.exists() and running.exists() and other.exists()
        assert len(_lines(out)) == 10
        from keras_mtl.serving.predict import remove_stale_outputs

        assert remove_stale_outputs(out) == []
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_outputs(out) == [running]


class _FullDisk(io.FileIO):
    """A file on a disk with `room` bytes free: writing more fails with ENOSPC."""

    room = 0

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _full_disk_open(room):
    def fake_open(path, mode="r", encoding=None, newline=None):
        assert mode == "w"
        raw = type("Full", (_FullDisk,), {"room": room})(path, "w")
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, newline=newline)

    return fake_open


@pytest.mark.parametrize("room", [20_000, 100])  # full while writing, or at the last flush
def test_a_full_disk_is_one_error_naming_the_output_and_leaves_nothing(tmp_path, monkeypatch, room):
    import keras_mtl.serving.predict as predict_module

    monkeypatch.setattr(predict_module, "open", _full_disk_open(room), raising=False)
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_records(2000 if room > 1000 else 5)))
    out = tmp_path / "out.jsonl"
    with pytest.raises(ServingError) as info:
        predict_file(echo, src, out, batch_size=64)
    assert str(info.value) == (f"{out}: cannot write the output: no space left on device; "
                               "nothing was written (the partial output is removed)")
    assert list(tmp_path.iterdir()) == [src]


def test_cli_full_disk_is_one_error_line(fakes, tmp_path, monkeypatch):
    import keras_mtl.serving.predict as predict_module

    monkeypatch.setattr(predict_module, "open", _full_disk_open(10), raising=False)
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_records(3)))
    out = tmp_path / "out.jsonl"
    code, stdout, err = _cli(["predict", fakes["mixed"], "--input", src, "--output", out])
    assert _one_error(code, err) == (f"keras-mtl predict: error: {out}: cannot write the output: no space left "
                                     "on device; nothing was written (the partial output is removed)")
    assert stdout == "" and list(tmp_path.iterdir()) == [src]
