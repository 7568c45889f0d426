from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data.readers import get_reader
from keras_mtl.errors import DataError

from helpers import check_word_tags, examples_or_data_error, read_all, write_text
from helpers import shared_data as shared

FIXTURES = Path(__file__).parent / "fixtures"


def read(path, task="pos", **options):
    return read_all("conll", str(path), task, "tagging", **options)


def write(tmp_path, text, name="data.txt"):
    return write_text(tmp_path, text, name)


def test_registered_for_tagging_only():
    reader = get_reader("conll")
    assert reader.task_types == ("tagging",)
    assert reader.source_is_path


def test_fixture_sentences_docstart_and_blank_lines():
    path = FIXTURES / "tiny.conll"
    examples = read(path, label_column=1)
    assert [ex.text for ex in examples] == [
        "Confidence in the pound .",
        "Rockwell said",
        "He left",  # after a -DOCSTART- line, no trailing blank line
    ]
    assert examples[0].labels == {"pos": ("NN", "IN", "DT", "NN", ".")}
    assert examples[2].labels == {"pos": ("PRP", "VBD")}
    assert [ex.origin for ex in examples] == [f"{path}:3", f"{path}:10", f"{path}:13"]
    for ex in examples:
        assert len(ex.words) == len(ex.labels["pos"])


def test_two_columns_of_one_file_give_the_same_sentences():
    path = FIXTURES / "tiny.conll"
    pos = read(path, task="pos", label_column=1)
    chunk = read(path, task="chunk", label_column=2)
    assert [ex.text for ex in pos] == [ex.text for ex in chunk]
    assert [ex.origin for ex in pos] == [ex.origin for ex in chunk]
    assert chunk[0].labels == {"chunk": ("B-NP", "B-PP", "B-NP", "I-NP", "O")}


def test_docstart_null_keeps_the_token(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\nHi O\n")
    (ex,) = read(path, label_column=1, docstart=None)
    assert ex.text == "-DOCSTART- Hi"


def test_tab_separator_token_with_spaces(tmp_path):
    path = write(tmp_path, "New  York\tNNP\nis\tVBZ\n\n\n\nok\tJJ\n\n")
    examples = read(path, label_column=1, separator="\t")
    assert examples[0].text == "New_York is"
    assert examples[0].labels["pos"] == ("NNP", "VBZ")
    assert examples[1].text == "ok"


def test_custom_token_column_and_crlf(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"1 Hello X\r\n2 world Y\r\n\r\n")
    (ex,) = read(path, token_column=1, label_column=2)
    assert ex.text == "Hello world"
    assert ex.labels["pos"] == ("X", "Y")


def test_missing_label_column(tmp_path):
    path = write(tmp_path, "a DT\nx\n")
    with pytest.raises(DataError) as info:
        read(path, label_column=1)
    message = str(info.value)
    assert message.startswith(f"{path}:2: ")
    assert "expected 2 columns, found 1" in message
    assert "token 'x' has no label in column 1" in message


# (file text, reader options, the DataError it raises: a regex)
BAD_FILES = [
    pytest.param("a DT B-NP\nb NN I-NP\n\nc NN\n", {"label_column": 1},
                 r"data\.txt:4: expected 3 columns, found 2 \(the first token line, line 1, has 3\)",
                 id="column_count_differs"),
    pytest.param("a DT\n", {"label_column": 2}, r"data\.txt:1: token 'a' has no label in column 2",
                 id="missing_label_column_on_first_line"),
    pytest.param("a\t\n", {"label_column": 1, "separator": "\t"}, r"data\.txt:1: token 'a' has an empty label",
                 id="empty_label_with_tab_separator"),
    pytest.param("\n\n-DOCSTART- -X- O\n\n", {"label_column": 1}, r"data\.txt: no sentences found", id="empty_file"),
]


@pytest.mark.parametrize("text, options, error", BAD_FILES)
def test_bad_file_is_a_data_error(tmp_path, text, options, error):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=error):
        read(path, **options)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: data file not found"):
        read(tmp_path / "nope.txt", label_column=1)


def test_options_forbid_unknown_and_require_label_column():
    options = get_reader("conll").options
    with pytest.raises(pydantic.ValidationError):
        options(label_column=1, labl_column=2)
    with pytest.raises(pydantic.ValidationError):
        options()
    with pytest.raises(pydantic.ValidationError):
        options(label_column=1, separator="")


@pytest.mark.real_data
def test_real_latin1_readme():
    readme = shared("conll2000", "README")
    with pytest.raises(DataError) as info:
        read(readme, label_column=1)
    message = str(info.value)
    assert message.startswith(f"{readme}: byte offset 7334: not valid utf-8")
    assert "encoding" in message
    # With the right encoding the bytes decode; the README is prose, not
    # CoNLL columns, so the error is now about its columns, with a line.
    with pytest.raises(DataError) as info:
        read(readme, label_column=1, encoding="latin-1")
    assert str(info.value).startswith(f"{readme}:")
    assert "byte offset" not in str(info.value)


@pytest.mark.real_data
def test_real_conll2000():
    train = shared("conll2000", "train.txt")
    pos = read(train, task="pos", label_column=1)
    chunk = read(train, task="chunk", label_column=2)
    assert len(pos) == 8936
    assert sum(len(ex.labels["pos"]) for ex in pos) == 211727
    assert [ex.text for ex in pos] == [ex.text for ex in chunk]
    assert len({tag for ex in pos for tag in ex.labels["pos"]}) == 44
    assert len({tag for ex in chunk for tag in ex.labels["chunk"]}) == 22
    assert pos[0].words[:3] == ["Confidence", "in", "the"]
    assert all(len(ex.words) == len(ex.labels["pos"]) for ex in pos)
    test = read(shared("conll2000", "test.txt"), task="chunk", label_column=2)
    assert len(test) == 2012
    assert sum(len(ex.words) for ex in test) == 47377
    assert test[0].text.startswith("Rockwell International Corp.")


PIECES = list("ab \t\n\r-_#.:\x0b\x0c\u2028\xa0é") + ["-DOCSTART-", "B-NP", "\n\n", "x NN O\n"]
CONLL_TEXT = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        CONLL_TEXT.map(lambda s: s.encode("utf-8")),
        st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=120),
    ),
    separator=st.sampled_from([None, "\t", " "]),
)
def test_fuzz_gives_examples_or_data_error(tmp_path, data, separator):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(data)
    examples = examples_or_data_error(read, path, label_column=1, separator=separator)
    if examples is None:
        return
    check_word_tags(examples, "pos")
    for ex in examples:
        assert ex.text == " ".join(ex.text.split())
