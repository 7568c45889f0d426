"""Batch prediction from files: `predict_file` and `keras-mtl predict MODEL --input F`.

Most tests use a fake predictor (a callable: texts -> per-text dicts) so they
run without TensorFlow; the end-to-end tests export the session's tiny run.
"""

import io
import json
from pathlib import Path

import pytest

from keras_mtl.errors import DataError, ServingError
from keras_mtl.serving import input_file
from keras_mtl.serving.predict import PAIR_UNSUPPORTED, predict_file

from helpers import import_path


class Fake:
    """Echoes each text; records the batch sizes it was called with."""

    tasks = None  # unknown up front, like a remote server

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(len(texts))
        return [{"echo": {"label": t}, "other": {"value": len(t)}, "_meta": {"num_words": 1}} for t in texts]


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


def test_order_and_counts_across_batches_and_the_reader_is_lazy(tmp_path, monkeypatch):
    n, batch = 5000, 64
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"t{i}", "id": i}) + "\n" for i in range(n)))
    parsed = []
    real_parse = input_file._parse_jsonl
    monkeypatch.setattr(input_file, "_parse_jsonl", lambda line: (parsed.append(1), real_parse(line))[1])
    seen_at_call = []
    fake = Fake()

    def predictor(texts):
        seen_at_call.append(len(parsed))
        return fake(texts)

    out = tmp_path / "out.jsonl"
    counts = predict_file(predictor, src, out, batch_size=batch)
    assert counts == {"lines": n, "predicted": n, "errors": 0, "output": str(out)}
    assert [r["echo"]["label"] for r in _lines(out)] == [f"t{i}" for i in range(n)]
    assert max(fake.calls) == batch and sum(fake.calls) == n
    # lazy: the first batch is predicted after one batch of lines was parsed, not the whole file
    assert seen_at_call[0] == batch and seen_at_call[-1] == n


def test_bad_lines_are_reported_and_marked_in_place(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    rows = [
        '{"text": "a"}',
        '{"text": "b"',  # 2 invalid JSON
        '{"id": 3}',  # 3 missing text
        '{"text": "  "}',  # 4 empty text
        '{"text": 5}',  # 5 not a string
        '["text"]',  # 6 not an object
        "",  # 7 empty line
        '{"text": "c", "text_pair": "d"}',  # 8 pair to a single-text model
        '{"text": "e"}',
    ]
    src.write_text("\n".join(rows) + "\n")
    err = tmp_path / "err.txt"
    with err.open("w") as stream:
        counts = predict_file(Fake(), src, tmp_path / "out.jsonl", batch_size=2, stderr=stream)
    assert counts["lines"] == 9 and counts["predicted"] == 2 and counts["errors"] == 7
    out = _lines(tmp_path / "out.jsonl")
    assert len(out) == 9
    assert out[0]["echo"]["label"] == "a" and out[8]["echo"]["label"] == "e"
    assert [o["line"] for o in out[1:8]] == [2, 3, 4, 5, 6, 7, 8]
    reported = err.read_text().splitlines()
    assert [r.split(": ", 1)[0] for r in reported] == [f"{src}:{i}" for i in range(2, 9)]
    assert "invalid JSON" in reported[0] and "missing `text`" in reported[1]
    assert "empty `text`" in reported[2] and "must be a string" in reported[3]
    assert "JSON object" in reported[4] and "empty line" in reported[5]
    assert PAIR_UNSUPPORTED in reported[6] and out[7]["error"] == PAIR_UNSUPPORTED


def test_tsv_fields_header_crlf_and_u2028(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_bytes(
        "text\ttext_pair\r\n"
        "one\u2028still one\r\n"  # 2: U+2028 is not a line break
        'say "hi"\rnot a break\n'  # 3: a bare \r and quotes are ordinary characters
        "a\tb\tc\n"  # 4: three fields
        "\t\n"  # 5: empty text
        "last".encode("utf-8")  # 6: no final line end
    )
    counts = predict_file(Fake(), src, tmp_path / "out.jsonl", header=True)
    assert counts == {"lines": 5, "predicted": 3, "errors": 2, "output": str(tmp_path / "out.jsonl")}
    out = _lines(tmp_path / "out.jsonl")
    assert out[0]["echo"]["label"] == "one\u2028still one"
    assert out[1]["echo"]["label"] == 'say "hi"\rnot a break'
    assert out[2]["line"] == 4 and "got 3" in out[2]["error"]
    assert out[3]["line"] == 5 and "empty text" in out[3]["error"]
    assert out[4]["echo"]["label"] == "last"
    err = capsys.readouterr().err
    assert f"{src}:4: expected 1 or 2 tab-separated fields" in err and f"{src}:5: empty text" in err
    # without --header line 1 is a record (with a text_pair: refused by a single-text model)
    out2 = tmp_path / "out2.jsonl"
    predict_file(Fake(), src, out2)
    assert _lines(out2)[0] == {"line": 1, "error": PAIR_UNSUPPORTED}


def test_jsonl_crlf_bom_and_u2028(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + '{"text": "x\u2028y"}\r\n{"text": "z"}\r\n'.encode("utf-8"))
    out = tmp_path / "out.jsonl"
    assert predict_file(Fake(), src, out)["predicted"] == 2
    assert [r["echo"]["label"] for r in _lines(out)] == ["x\u2028y", "z"]


def test_strict_is_an_error_with_no_output(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(100)) + "{oops\n")
    out = tmp_path / "out.jsonl"
    fake = Fake()
    with pytest.raises(DataError, match=rf"^{src}:101: invalid JSON"):
        predict_file(fake, src, out, batch_size=10, strict=True)
    assert fake.calls == [] and list(tmp_path.iterdir()) == [src]  # no output, no temporary
    assert capsys.readouterr().out == ""


def test_a_failure_midway_leaves_no_partial_output(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(50)))

    def failing(texts, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            raise ServingError("server went away")
        return Fake()(texts)

    with pytest.raises(ServingError):
        predict_file(failing, src, tmp_path / "out.jsonl", batch_size=10)
    assert list(tmp_path.iterdir()) == [src]


def test_task_selection_and_unknown_task(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    out = tmp_path / "out.jsonl"
    predict_file(Fake(), src, out, task="echo")
    assert _lines(out) == [{"echo": {"label": "a"}, "_meta": {"num_words": 1}}]
    with pytest.raises(ServingError, match="no task 'nope'; the model's tasks are echo, other"):
        predict_file(Fake(), src, tmp_path / "o2.jsonl", task="nope")
    assert not (tmp_path / "o2.jsonl").exists()

    def known(texts):  # tasks known up front (a local export's metadata): checked before reading
        raise AssertionError("not called")

    known.tasks = ["a", "b"]
    with pytest.raises(ServingError, match="the model's tasks are a, b"):
        predict_file(known, src, task="c")
    assert capsys.readouterr().out == ""


def test_file_and_format_errors(tmp_path):
    with pytest.raises(DataError, match="input file not found"):
        predict_file(Fake(), tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match="cannot tell the input format"):
        predict_file(Fake(), tmp_path / "x.csv")
    (tmp_path / "mac.tsv").write_bytes(b"a\rb\r")
    with pytest.raises(DataError, match="bare carriage return"):
        predict_file(Fake(), tmp_path / "mac.tsv")
    with pytest.raises(ServingError, match="batch_size"):
        predict_file(Fake(), tmp_path / "x.csv", batch_size=0)


def test_output_path_errors(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    with pytest.raises(ServingError, match="cannot write the output"):
        predict_file(Fake(), src, tmp_path / "no-such-dir" / "out.jsonl")
    with pytest.raises(ServingError, match="is a directory"):
        predict_file(Fake(), src, tmp_path)
    with pytest.raises(ServingError, match="the output file is the input file"):
        predict_file(Fake(), src, src)
    assert src.read_text() == '{"text": "a"}\n'


def test_count_lines_matches_the_reader(tmp_path):
    for data in (b"", b"a", b"a\n", b"a\r\nb", b"a\n\nb\n", b"\n"):
        path = tmp_path / "f.tsv"
        path.write_bytes(data)
        assert input_file.count_lines(path) == len(list(input_file.iter_lines(path))), data


def test_cli_argument_errors(tmp_path, capsys):
    from keras_mtl.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n')
    for argv, message in [
        (["predict", "m"], "required: texts (or --input FILE)"),
        (["predict", "m", "a text", "--input", str(src)], "either texts or --input"),
        (["predict", "m", "a text", "--strict"], "--strict needs --input"),
        (["predict", "m", "a text", "--output", "o.jsonl"], "--output needs --input"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as info:
        main(["predict", "m", "--input", str(src), "--batch-size", "0"])
    assert info.value.code == 2


# --------------------------------------------------------------------------
# End to end: a real export of the session's tiny run
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
    from keras_mtl.serving.export import export

    base = tmp_path_factory.mktemp("predict-file") / "saved"
    export(tiny_run["workdir"], out=str(base), warmup=False)
    return base


@pytest.mark.slow
def test_cli_end_to_end_on_a_real_export(tiny_export, tmp_path, capsys):
    from keras_mtl.cli import main
    from keras_mtl.serving.predict import predict

    texts = [f"the market rallied {i} times" for i in range(7)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({"text": t}) for t in texts[:3]] + ["not json"]
                             + [json.dumps({"text": t}) for t in texts[3:]]) + "\n")
    expected = predict(tiny_export, texts)

    out = tmp_path / "out.jsonl"
    assert main(["predict", str(tiny_export), "--input", str(src), "--output", str(out), "--batch-size", "2"]) == 0
    got = _lines(out)
    assert got[:3] == expected[:3] and got[4:] == expected[3:]
    assert got[3]["line"] == 4 and "invalid JSON" in got[3]["error"]
    assert f"{src}:4: invalid JSON" in capsys.readouterr().err

    # stdout, one task
    assert main(["predict", str(tiny_export), "--input", str(src), "--task", "topic"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # `windows`: what the answered tasks read; topic alone reads a long text once, cut (long_inputs: truncate)
    meta = {**expected[0]["_meta"], "windows": 1}
    assert len(lines) == 8 and lines[0] == {"topic": expected[0]["topic"], "_meta": meta}

    # unknown task: one line naming the model's tasks, exit 2, no output
    assert main(["predict", str(tiny_export), "--input", str(src), "--task", "nope",
                 "--output", str(tmp_path / "o2.jsonl")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "no task 'nope'" in err[0] and "pos, sentiment, topic" in err[0], err
    assert not (tmp_path / "o2.jsonl").exists() and captured.out == ""

    # --strict: exit 2 naming file and line, nothing written
    assert main(["predict", str(tiny_export), "--input", str(src), "--strict",
                 "--output", str(tmp_path / "o3.jsonl")]) == 2
    assert f"{src}:4: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o3.jsonl").exists()

    # positional texts take --task too
    assert main(["predict", str(tiny_export), texts[0], "--task", "pos"]) == 0
    # tagging alone drops nothing of a long text (windows); serving_default's topic cut it
    meta = {**expected[0]["_meta"], "truncated": False}
    assert json.loads(capsys.readouterr().out) == {"pos": expected[0]["pos"], "_meta": meta}


# --------------------------------------------------------------------------
# Sentence pairs and per-task signatures: fake exports (built by
# tests/serving/test_predict.py's build_fake_exports: the `fakes` fixture of
# tests/serving/conftest.py) and a fake TF Serving
# --------------------------------------------------------------------------


FAKES = import_path(Path(__file__).with_name("test_predict.py"), "_fake_exports")  # its fakes' answers


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pair_task_lines_from_a_local_export(fakes, tmp_path):
    rows = [
        {"text": "the good dog ran", "text_pair": "the good"},
        {"text": "a cat", "text_pair": "dog", "id": 7},
        {"text": "no pair here"},  # 3: a pair task needs text_pair
        {"text": "x y", "text_pair": "x"},
        {"text": "empty pair", "text_pair": "   "},  # 5: as `text`, an empty text_pair is a bad line
    ]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    err = io.StringIO()
    out = tmp_path / "out.jsonl"
    counts = predict_file(fakes["mixed"], src, out, task="rte", batch_size=2, stderr=err)
    assert counts == {"lines": 5, "predicted": 3, "errors": 2, "output": str(out)}
    got = _lines(out)
    for i in (0, 1, 3):
        text, pair = rows[i]["text"], rows[i]["text_pair"]
        assert got[i] == {"rte": FAKES.rte_of(text, pair), "_meta": FAKES.meta_of(text, pair)}
    missing = "missing `text_pair`: task 'rte' takes sentence pairs: it needs a `text_pair` for every text"
    assert got[2] == {"line": 3, "error": missing}
    assert got[4] == {"line": 5, "error": "empty `text_pair`"}
    assert err.getvalue().splitlines() == [f"{src}:3: {missing}", f"{src}:5: empty `text_pair`"]


def test_pair_task_lines_from_a_tsv(fakes, tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text("text\ttext_pair\nthe dog ran\tthe dog\na cat\tdog\nalone\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    counts = predict_file(fakes["mixed"], src, out, task="stsb", header=True, stderr=io.StringIO())
    assert counts["predicted"] == 2 and counts["errors"] == 1
    got = _lines(out)
    assert [g["stsb"]["value"] for g in got[:2]] == [pytest.approx(3.2), pytest.approx(2.1)]
    assert got[2]["line"] == 4 and got[2]["error"].startswith("missing `text_pair`: task 'stsb'")


def test_text_pair_on_a_single_text_task_or_serving_default_is_a_bad_line(fakes, tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "a good day"}, {"text": "b", "text_pair": "c"}])
    out = tmp_path / "out.jsonl"
    predict_file(fakes["mixed"], src, out, task="sentiment", stderr=io.StringIO())
    got = _lines(out)
    assert got[0] == {"sentiment": FAKES.sentiment_of("a good day"), "_meta": FAKES.meta_of("a good day")}
    assert got[1] == {"line": 2, "error": "`text_pair` given, but task 'sentiment' takes single texts"}
    # no task: serving_default (the single-text tasks); the message points at the pair tasks
    predict_file(fakes["mixed"], src, out, stderr=io.StringIO())
    got = _lines(out)
    assert sorted(got[0]) == ["_meta", "chunk", "sentiment"]
    assert got[1]["line"] == 2 and got[1]["error"] == (
        "`text_pair` given, but serving_default takes single texts; the sentence-pair tasks (rte, stsb) "
        "have their own signatures: choose one as the task")
    # an old export (no pair tasks): the message of before
    predict_file(fakes["old"], src, out, stderr=io.StringIO())
    assert _lines(out)[1] == {"line": 2, "error": PAIR_UNSUPPORTED}


def test_strict_pair_lines(fakes, tmp_path, capsys):
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "a b", "text_pair": "a"}, {"text": "c"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as info:
        predict_file(fakes["mixed"], src, out, task="rte", strict=True)
    assert str(info.value) == (f"{src}:2: missing `text_pair`: task 'rte' takes sentence pairs: "
                               "it needs a `text_pair` for every text")
    assert not out.exists()
    with pytest.raises(DataError, match=rf"^{src}:1: `text_pair` given, but task 'sentiment' takes single texts"):
        predict_file(fakes["mixed"], src, out, task="sentiment", strict=True)
    assert not out.exists() and capsys.readouterr().out == ""


def test_pairs_only_model_without_task(fakes, tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "a b c", "text_pair": "a b"}, {"text": "d"}])
    out = tmp_path / "out.jsonl"
    predict_file(fakes["pairs_only"], src, out, stderr=io.StringIO())
    got = _lines(out)
    assert got[0]["rte"] == FAKES.rte_of("a b c", "a b") and got[0]["stsb"] == {"value": pytest.approx(3.2)}
    assert got[1] == {"line": 2, "error": "missing `text_pair`: serving_default answers the sentence-pair "
                                          "tasks rte, stsb only: it needs a `text_pair` for every text"}


def test_unknown_task_of_a_local_export_is_refused_before_reading(fakes, tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(ServingError) as info:
        predict_file(fakes["mixed"], src, out, task="nope")
    assert str(info.value) == f"{fakes['mixed']}: no task 'nope'; the model's tasks are chunk, rte, sentiment, stsb"
    assert not out.exists()


def test_cli_input_with_a_pair_task(fakes, tmp_path, capsys):
    from keras_mtl.cli import main

    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": "the dog", "text_pair": "the"}, {"text": "lonely"}])
    assert main(["predict", str(fakes["mixed"]), "--input", str(src), "--task", "rte"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert lines[0] == {"rte": FAKES.rte_of("the dog", "the"), "_meta": FAKES.meta_of("the dog", "the")}
    assert lines[1]["line"] == 2 and f"{src}:2: missing `text_pair`: task 'rte'" in captured.err
    # unknown task: one line naming the model's tasks, exit 2
    assert main(["predict", str(fakes["mixed"]), "--input", str(src), "--task", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("no task 'nope'; the model's tasks are chunk, rte, sentiment, stsb")
    # --strict on a pair file missing a pair
    assert main(["predict", str(fakes["mixed"]), "--input", str(src), "--task", "rte", "--strict"]) == 2
    assert f"{src}:2: missing `text_pair`" in capsys.readouterr().err


class _FakeServing:
    """urllib's opener for TF Serving REST: signature -> inputs, answers as TF Serving.

    Every task's value is 10 * len(text) + len(text_pair), so an answer shows which
    text and pair it was computed from."""

    SIGNATURES = {"serving_default": ("text",), "topic": ("text",), "rte": ("text", "text_pair")}

    def __init__(self, signatures=None):
        self.signatures = signatures or self.SIGNATURES
        self.bodies = []

    def open(self, request, timeout):
        import urllib.error

        body = json.loads(request.data)
        self.bodies.append(body)
        name = body["signature_name"]
        rows = body["instances"]

        def fail(message):
            raise urllib.error.HTTPError(request.full_url, 400, "Bad Request", {},
                                         io.BytesIO(json.dumps({"error": message}).encode()))

        if name not in self.signatures:
            fail(f'Serving signature name: "{name}" not found in signature def')
        if set(rows[0]) != set(self.signatures[name]):
            fail(f"input size does not match signature: Missing but required: {{{','.join(self.signatures[name])}}}.")
        tasks = ["topic", "other"] if name == "serving_default" else [name]
        predictions = [{**{f"{t}_value": float(10 * len(r["text"]) + len(r.get("text_pair", ""))) for t in tasks},
                        "num_words": len(r["text"].split())} for r in rows]
        return _Response(json.dumps({"predictions": predictions}).encode())


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_url_with_a_task_uses_its_signature_and_the_first_line_decides_pairs(tmp_path, monkeypatch):
    import urllib.request

    fake = _FakeServing()
    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: fake)
    url = "http://127.0.0.1:1/v1/models/m"
    rows = [{"text": "abc", "text_pair": "de"}, {"text": "fghi", "text_pair": "j"}, {"text": "no pair"},
            {"text": "k", "text_pair": "lmn"}]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    err = io.StringIO()
    counts = predict_file(url, src, out, task="rte", batch_size=2, stderr=err)
    assert counts["predicted"] == 3 and counts["errors"] == 1
    got = _lines(out)
    assert [g.get("rte") for g in got] == [{"value": 32.0}, {"value": 41.0}, None, {"value": 13.0}]
    assert got[2] == {"line": 3, "error": "missing `text_pair`, but line 1 has one: the lines of a file are all "
                                          "single texts or all sentence pairs"}
    assert [b["signature_name"] for b in fake.bodies] == ["rte", "rte"]
    assert [[(r["text"], r["text_pair"]) for r in b["instances"]] for b in fake.bodies] == [
        [("abc", "de"), ("fghi", "j")], [("k", "lmn")]]

    # without a task a text_pair is a bad line (serving_default takes single texts)
    fake.bodies.clear()
    predict_file(url, src, out, stderr=io.StringIO())
    got = _lines(out)
    assert got[2]["topic"] == {"value": 70.0} and got[0]["line"] == 1
    assert "choose it as the task (--task)" in got[0]["error"]
    assert [b["signature_name"] for b in fake.bodies] == ["serving_default"]


def test_a_url_whose_server_predates_task_signatures(tmp_path, monkeypatch):
    import urllib.request

    fake = _FakeServing({"serving_default": ("text",)})
    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: fake)
    url = "http://127.0.0.1:1/v1/models/m"
    src = _write_jsonl(tmp_path / "in.jsonl", [{"text": f"t{i}"} for i in range(5)])
    out = tmp_path / "out.jsonl"
    predict_file(url, src, out, task="topic", batch_size=2)
    assert _lines(out) == [{"topic": {"value": 20.0}, "_meta": {"num_words": 1}}] * 5
    # the missing signature is found out once; then serving_default, that task's outputs only
    assert [b["signature_name"] for b in fake.bodies] == ["topic"] + ["serving_default"] * 3
    with pytest.raises(ServingError, match="no task 'nope': the served model has no signature 'nope', "
                                           "and its serving_default answers other, topic"):
        predict_file(url, src, tmp_path / "o2.jsonl", task="nope")
    assert not (tmp_path / "o2.jsonl").exists()
