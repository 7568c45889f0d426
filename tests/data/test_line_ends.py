"""Lines end at \\n and \\r\\n only, in every reader (issue 11, defect 4).

`str.splitlines()` also breaks at \\v, \\f, \\x1c-\\x1e, \\x85, U+2028 and
U+2029 (and a bare \\r). Such a character inside a text must stay inside its
record: the record reads back as written, and an error further down the file
names the line `grep -n` would. Each test writes records holding arbitrary
mixes of these characters, in every reader, with LF and CRLF line ends.
"""

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data.readers import ReadRequest, get_reader, open_text, split_lines
from keras_mtl.data.readers.conll import clean_token
from keras_mtl.errors import DataError

# Every boundary of str.splitlines() except \n and \r\n.
BREAKS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
assert all(len(("a" + c + "b").splitlines()) == 2 for c in BREAKS)
# The same without a bare \r (a stray \r at the end of a line is a line end).
NOT_CR = [c for c in BREAKS if c != "\r"]

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _text(breaks, min_words=1, max_words=4):
    """Texts of words (letters) with line-break characters in and between them."""
    word = st.lists(st.sampled_from(list("abc") + breaks), min_size=1, max_size=6).map("".join)
    word = word.filter(lambda w: w.strip())  # some visible character
    glue = st.sampled_from([" "] + breaks)
    return st.lists(st.tuples(word, glue), min_size=min_words, max_size=max_words).map(
        lambda parts: "".join(w + g for w, g in parts)
    )


LABELS = st.sampled_from(["pos", "neg"])
EOL = st.sampled_from(["\n", "\r\n"])


def request(path_or_source, fmt, task_type="classification", **options):
    reader = get_reader(fmt)
    return reader, ReadRequest(path_or_source, reader.options(**options), "t", task_type, "train")


def read(source, fmt, task_type="classification", **options):
    reader, req = request(source, fmt, task_type, **options)
    return list(reader.read(req))  # a reader streams: take the whole stream


def data_error(source, fmt, task_type="classification", **options):
    with pytest.raises(DataError) as info:
        read(source, fmt, task_type, **options)
    return str(info.value)


def both_labels(rows):
    return rows + [("x", "pos"), ("y", "neg")]


# ------------------------------------------------------------ split_lines


@given(lines=st.lists(st.text(alphabet=st.sampled_from(list("ab \t") + NOT_CR)), max_size=8), eol=EOL)
def test_split_lines_inverts_joining_with_a_line_end(lines, eol):
    text = "".join(line + eol for line in lines)
    assert split_lines(text) == lines
    if lines and lines[-1]:  # no line end after the last (non-empty) line
        assert split_lines(text[: -len(eol)]) == lines


def test_split_lines_examples():
    assert split_lines("") == []
    assert split_lines("a\u2028b\x85c\r\nd\n") == ["a\u2028b\x85c", "d"]
    assert split_lines("a\rb\n\n") == ["a\rb", ""]
    assert split_lines("a\r\r\n") == ["a\r"]


def test_bare_cr_line_ends_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "mac.tsv"
    path.write_bytes(b"sentence\tlabel\rgood\tpos\rbad\tneg\r")
    with pytest.raises(DataError, match=r"bare carriage return.*\\r\\n line ends"):
        open_text(path)
    path.write_bytes(b"one line\r")  # a single line ending in \r is fine
    assert open_text(path) == ["one line"]


# ------------------------------------------------------------ delimited


@SETTINGS
@given(rows=st.lists(st.tuples(_text(BREAKS), LABELS), min_size=1, max_size=6), eol=EOL)
def test_tsv_rows_round_trip_and_errors_name_the_line(tmp_path, rows, eol):
    rows = both_labels(rows)
    path = tmp_path / "data.tsv"
    body = "sentence\tlabel" + eol + "".join(f"{t}\t{l}{eol}" for t, l in rows)
    path.write_bytes(body.encode("utf-8"))
    examples = read(str(path), "delimited")
    assert [(e.text, e.labels["t"]) for e in examples] == [(t.strip(), l) for t, l in rows]
    assert [e.origin for e in examples] == [f"{path}:{i + 2}" for i in range(len(rows))]
    # One more row without a label: the error names its line.
    path.write_bytes((body + "a\x1cb\u2028c" + eol).encode("utf-8"))
    assert data_error(str(path), "delimited").startswith(
        f"{path}:{len(rows) + 2}: expected at least 2 fields separated by '\\t', found 1"
    )


@SETTINGS
@given(rows=st.lists(st.tuples(_text(BREAKS), LABELS), min_size=1, max_size=6), eol=EOL)
def test_csv_rows_round_trip_and_errors_name_the_line(tmp_path, rows, eol):
    rows = both_labels(rows)
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator=eol)
    writer.writerow(["sentence", "label"])
    writer.writerows(rows)
    path = tmp_path / "data.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    examples = read(str(path), "delimited")
    assert [(e.text, e.labels["t"]) for e in examples] == [(t.strip(), l) for t, l in rows]
    assert [e.origin for e in examples] == [f"{path}:{i + 2}" for i in range(len(rows))]
    path.write_bytes((out.getvalue() + '"a\u2028b",' + eol).encode("utf-8"))
    assert data_error(str(path), "delimited").startswith(f"{path}:{len(rows) + 2}: empty label")


def test_csv_bare_cr_in_an_unquoted_field_says_so(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("sentence,label\ngood,pos\nba\rd,neg\n", encoding="utf-8")
    message = data_error(str(path), "delimited")
    assert message.startswith(f"{path}:3: malformed CSV row: a bare carriage return"), message
    assert "universal-newline" not in message


@SETTINGS
@given(rows=st.lists(st.tuples(_text(BREAKS), LABELS), min_size=1, max_size=6), eol=EOL)
def test_jsonl_round_trips_raw_line_separators(tmp_path, rows, eol):
    rows = both_labels(rows)
    # ensure_ascii=False writes U+2028, U+2029 and \x85 raw (valid JSON).
    body = "".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + eol for t, l in rows)
    path = tmp_path / "data.jsonl"
    path.write_bytes(body.encode("utf-8"))
    examples = read(str(path), "jsonl")
    assert [(e.text, e.labels["t"]) for e in examples] == [(t.strip(), l) for t, l in rows]
    assert [e.origin for e in examples] == [f"{path}:{i + 1}" for i in range(len(rows))]
    path.write_bytes((body + '{"text": "a\u2028b"}' + eol).encode("utf-8"))
    assert data_error(str(path), "jsonl").startswith(f"{path}:{len(rows) + 1}: no field 'label'")


def test_jsonl_with_a_raw_u2028_in_a_string(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a\u2028b", "label": "x"}\n{"text": "c", "label": "y"}\n', encoding="utf-8")
    examples = read(str(path), "jsonl")
    assert [(e.text, e.origin) for e in examples] == [("a\u2028b", f"{path}:1"), ("c", f"{path}:2")]


# ------------------------------------------------------------ per_label


@SETTINGS
@given(
    texts=st.lists(_text(BREAKS), min_size=1, max_size=6),
    other=st.lists(_text(BREAKS), min_size=1, max_size=3),
    eol=EOL,
)
def test_per_label_lines_round_trip_and_errors_name_the_line(tmp_path, texts, other, eol):
    pos, neg = tmp_path / "a.pos", tmp_path / "a.neg"
    pos.write_bytes("".join(t + eol for t in texts).encode("utf-8"))
    neg.write_bytes("".join(t + eol for t in other).encode("utf-8"))
    examples = read({"pos": str(pos), "neg": str(neg)}, "per_label")
    assert [(e.text, e.labels["t"]) for e in examples] == [(t.strip(), "pos") for t in texts] + [
        (t.strip(), "neg") for t in other
    ]
    assert [e.origin for e in examples[: len(texts)]] == [f"{pos}:{i + 1}" for i in range(len(texts))]
    pos.write_bytes("".join(t + eol for t in texts + ["", "z"]).encode("utf-8"))
    message = data_error({"pos": str(pos), "neg": str(neg)}, "per_label", skip_blank_lines=False)
    assert message.startswith(f"{pos}:{len(texts) + 1}: blank line"), message


# ------------------------------------------------------------ conll / conllu


def _tokens(breaks):
    return st.lists(
        st.lists(st.sampled_from(list("abc") + breaks), min_size=1, max_size=5)
        .map("".join)
        .filter(lambda w: clean_token(w)),  # not only whitespace
        min_size=1,
        max_size=4,
    )


@SETTINGS
@given(
    sentences=st.lists(_tokens(BREAKS), min_size=1, max_size=4),
    separator=st.sampled_from([None, "\t"]),
    eol=EOL,
)
def test_conll_tokens_round_trip_and_errors_name_the_line(tmp_path, sentences, separator, eol):
    sep = separator or " "
    lines, starts = [], []
    for tokens in sentences:
        starts.append(len(lines) + 1)
        lines += [f"{tok}{sep}T{i % 2}" for i, tok in enumerate(tokens)] + [""]
    path = tmp_path / "data.txt"
    path.write_bytes("".join(line + eol for line in lines).encode("utf-8"))
    examples = read(str(path), "conll", "tagging", label_column=1, separator=separator)
    assert [e.text for e in examples] == [" ".join(clean_token(t) for t in tokens) for tokens in sentences]
    assert [e.origin for e in examples] == [f"{path}:{n}" for n in starts]
    for e in examples:
        assert len(e.text.split()) == len(e.labels["t"])
    path.write_bytes("".join(line + eol for line in lines + ["a\u2028b"]).encode("utf-8"))
    message = data_error(str(path), "conll", "tagging", label_column=1, separator=separator)
    assert message.startswith(f"{path}:{len(lines) + 1}: "), message


@SETTINGS
@given(sentences=st.lists(_tokens(BREAKS), min_size=1, max_size=4), eol=EOL)
def test_conllu_forms_round_trip_and_errors_name_the_line(tmp_path, sentences, eol):
    lines, starts = [], []
    for tokens in sentences:
        starts.append(len(lines) + 1)
        lines.append("# text = \u2028" + " ".join(tokens))
        lines += [f"{i + 1}\t{tok}\t_\tNOUN\t_\t_\t0\troot\t_\t_" for i, tok in enumerate(tokens)] + [""]
    path = tmp_path / "data.conllu"
    path.write_bytes("".join(line + eol for line in lines).encode("utf-8"))
    examples = read(str(path), "conllu", "tagging")
    assert [e.text for e in examples] == [" ".join(clean_token(t) for t in tokens) for tokens in sentences]
    assert [e.origin for e in examples] == [f"{path}:{n}" for n in starts]
    path.write_bytes("".join(line + eol for line in lines + ["1\ta\u2028b\t_"]).encode("utf-8"))
    message = data_error(str(path), "conllu", "tagging")
    assert message.startswith(f"{path}:{len(lines) + 1}: expected 10 tab-separated fields"), message


def test_conll_no_break_space_inside_a_token(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("10\xa0000 CD\npeople NNS\n", encoding="utf-8")
    [example] = read(str(path), "conll", "tagging", label_column=1)
    assert example.text == "10_000 people"
    assert example.labels["t"] == ("CD", "NNS")
