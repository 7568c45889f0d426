import collections
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data.example import Example
from keras_mtl.data.readers import get_reader
from keras_mtl.errors import DataError

from helpers import examples_or_data_error, read_all, write_text
from helpers import shared_data as shared

FIXTURES = Path(__file__).parent / "fixtures"


def read(path, task_type="classification", fmt="delimited", task="t", **options):
    return read_all(fmt, str(path), task, task_type, **options)


def write(tmp_path, text, name="data.tsv"):
    return write_text(tmp_path, text, name)


def labels(examples, task="t"):
    return [ex.labels[task] for ex in examples]


# ---------------------------------------------------------------- delimited


def test_registration():
    for name in ("delimited", "jsonl"):
        reader = get_reader(name)
        assert set(reader.task_types) == {"classification", "multilabel", "regression"}
        assert reader.source_is_path


def test_tsv_with_header_keeps_quotes_as_text():
    path = FIXTURES / "tiny.tsv"
    examples = read(path)
    assert [ex.text for ex in examples] == [
        "hide new secretions from the parental units",
        "the \" conan \" of the 21st century , she said 'yes'",
        "it 's a charming and often affecting journey .",
    ]
    assert labels(examples) == ["0", "1", "1"]
    assert [ex.origin for ex in examples] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_tsv_without_header_by_index():
    examples = read(FIXTURES / "tiny_noheader.tsv", header=False, text_column=3, label_column=1)
    assert len(examples) == 3
    assert examples[1].text == "One more pseudo generalization or I'm giving up."
    assert labels(examples) == ["1", "0", "1"]
    assert examples[0].origin.endswith("tiny_noheader.tsv:1")


def test_csv_minimal_quoting_by_suffix():
    path = FIXTURES / "tiny.csv"
    examples = read(path, text_column="text", label_column="label")
    assert [ex.text for ex in examples] == [
        "Hello, world",
        'She said "hi" twice',
        "plain text here",
        "a text\nover two lines",
    ]
    assert labels(examples) == ["greeting", "greeting", "other", "other"]
    assert [ex.origin for ex in examples] == [f"{path}:{n}" for n in (2, 3, 4, 5)]


def test_int_columns_with_header():
    examples = read(FIXTURES / "tiny.csv", text_column=1, label_column=2)
    assert examples[0].text == "Hello, world"


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"sentence\tlabel\r\nfine film \t1\r\nbad film\t0\r\n")
    examples = read(path)
    assert [ex.text for ex in examples] == ["fine film", "bad film"]
    assert labels(examples) == ["1", "0"]


def test_explicit_delimiter_and_quoting(tmp_path):
    path = write(tmp_path, 'label;text\npos;"a; b"\n', name="data.txt")
    assert read(path, delimiter=";", quoting="minimal", text_column="text")[0].text == "a; b"
    path = write(tmp_path, "a b\tx\n", name="data.csv")
    (ex,) = read(path, header=False, delimiter="\\t", text_column=0, label_column=1)
    assert ex.text == "a b"


def test_multilabel(tmp_path):
    path = write(tmp_path, "text\tlabels\nfilm one\tdrama, comedy,drama\nfilm two\t\n")
    examples = read(path, task_type="multilabel", text_column="text", label_column="labels")
    assert labels(examples) == [("drama", "comedy"), ()]
    path = write(tmp_path, "text\tlabels\nfilm\tdrama|war\n")
    assert labels(read(path, task_type="multilabel", text_column=0, label_column="labels", label_separator="|")) == [
        ("drama", "war")
    ]


def test_regression(tmp_path):
    path = write(tmp_path, "text\tlabel\nok\t3.5\nalso\t-1\n")
    assert labels(read(path, task_type="regression", text_column="text")) == [3.5, -1.0]


@pytest.mark.parametrize("value", ["high", "nan", "inf", ""])
def test_regression_label_not_a_number(tmp_path, value):
    path = write(tmp_path, f"text\tlabel\nok\t1\nbad\t{value}\n")
    with pytest.raises(DataError, match=r"data\.tsv:3: regression label .* is not a finite number"):
        read(path, task_type="regression", text_column="text")


def test_header_name_not_found_lists_names(tmp_path):
    path = write(tmp_path, "index\tsentence\n0\thello\n")
    with pytest.raises(DataError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}:1: no column named 'label'")
    assert "'index', 'sentence'" in message


def test_empty_text(tmp_path):
    path = write(tmp_path, "sentence\tlabel\nfine\t1\n  \t0\n")
    with pytest.raises(DataError, match=r"data\.tsv:3: empty text"):
        read(path)
    assert labels(read(path, skip_empty_text=True)) == ["1"]


# (file text, file name, `read` arguments, the DataError it raises: a regex)
BAD_FILES = [
    pytest.param("text\tlabel\nok\ta\nbad\ta,zz\n", "data.tsv",
                 {"task_type": "multilabel", "text_column": "text", "labels": ["a", "b"]},
                 r"data\.tsv:3: unknown label 'zz'.*'a', 'b'", id="multilabel_unknown_label"),
    pytest.param("text\tlabel\nok\ta\nbad\tc\n", "data.tsv", {"text_column": "text", "labels": ["a", "b"]},
                 r"data\.tsv:3: unknown label 'c'", id="classification_unknown_label"),
    pytest.param("sentence\tlabel\ngood\t1\nno label here\n", "data.tsv", {},
                 r"data\.tsv:3: expected at least 2 fields .* found 1", id="too_few_fields"),
    pytest.param("hello\t1\n", "data.tsv", {"header": False},
                 r"data\.tsv: text_column is the name 'sentence' but `header: false`", id="name_without_header"),
    pytest.param("sentence\tlabel\nhello\t1\n", "data.tsv", {"label_column": 5},
                 r"data\.tsv:1: label_column is 5 but the header has only 2", id="index_beyond_header"),
    pytest.param("sentence\tlabel\nfine\t\n", "data.tsv", {}, r"data\.tsv:2: empty label", id="empty_label"),
    pytest.param('text,label\nok,1\n"never closed,1\nmore,0\n', "data.csv", {"text_column": "text"},
                 r"data\.csv:3: malformed CSV row: a quoted field is never closed", id="unclosed_quote_in_csv"),
    pytest.param('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', "d.jsonl", {"fmt": "jsonl"},
                 r"d\.jsonl:2: invalid JSON", id="jsonl_invalid_json"),
    pytest.param('["a", "x"]\n', "d.jsonl", {"fmt": "jsonl"}, r"d\.jsonl:1: expected a JSON object, found a list",
                 id="jsonl_not_an_object"),
    pytest.param('{"text": "a", "label": "x"}\n{"sentence": "b", "label": "y"}\n', "d.jsonl", {"fmt": "jsonl"},
                 r"d\.jsonl:2: no field 'text'; the object has fields: 'sentence', 'label'",
                 id="jsonl_missing_field_lists_fields"),
]


@pytest.mark.parametrize("text, name, options, error", BAD_FILES)
def test_bad_file_is_a_data_error(tmp_path, text, name, options, error):
    path = write(tmp_path, text, name=name)
    with pytest.raises(DataError, match=error):
        read(path, **options)


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(DataError, match=r"data\.tsv: the file is empty"):
        read(write(tmp_path, ""))
    with pytest.raises(DataError, match=r"data\.tsv: no rows found"):
        read(write(tmp_path, "sentence\tlabel\n"))


def test_options_validation():
    options = get_reader("delimited").options
    for bad in (
        {"delimiter": "ab"},
        {"text_column": -1},
        {"quoting": "all"},
        {"label_separator": ""},
        {"bogus": 1},
        {"text_column": 1.5},
    ):
        with pytest.raises(pydantic.ValidationError):
            options(**bad)
    assert options(delimiter="tab").delimiter == "\t"


@pytest.mark.real_data
def test_real_sst2():
    train = read(shared("sst2", "train_full.tsv"))
    assert len(train) == 67349
    assert collections.Counter(labels(train)) == {"1": 37569, "0": 29780}
    assert train[0].text == "hide new secretions from the parental units"
    dev = read(shared("sst2", "dev.tsv"))
    assert len(dev) == 872
    assert collections.Counter(labels(dev)) == {"1": 444, "0": 428}
    test = read(shared("sst2", "test-labeled.tsv"))  # CRLF line endings
    assert len(test) == 1821
    assert collections.Counter(labels(test)) == {"1": 904, "0": 917}
    assert not any("\r" in ex.text for ex in test)
    with pytest.raises(DataError, match=r"test\.tsv:1: no column named 'label'.*'index', 'sentence'"):
        read(shared("sst2", "test.tsv"))


@pytest.mark.real_data
def test_real_cola():
    options = dict(header=False, text_column=3, label_column=1)
    train = read(shared("cola_public", "raw", "in_domain_train.tsv"), **options)
    assert len(train) == 8551
    assert collections.Counter(labels(train)) == {"1": 6023, "0": 2528}
    assert train[0].text == "Our friends won't buy this analysis, let alone the next one we propose."
    dev = read(shared("cola_public", "raw", "in_domain_dev.tsv"), **options)
    assert len(dev) == 527
    assert collections.Counter(labels(dev)) == {"1": 365, "0": 162}


TSV_PIECES = list("ab \t\n\r\",'#;1.é\x00\x0c") + ["\t1\n", "sentence\tlabel\n", '"x\ty"', "0.5", "nan"]
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TASK_TYPES = st.sampled_from(["classification", "multilabel", "regression"])


def fuzz_bytes(pieces, max_size):
    """A file's bytes: up to `max_size` pieces of the format, or up to 120 bytes of anything."""
    return st.one_of(
        st.lists(st.sampled_from(pieces), max_size=max_size).map(lambda p: "".join(p).encode("utf-8")),
        st.binary(max_size=120),
    )


@FUZZ
@given(data=fuzz_bytes(TSV_PIECES, 50), task_type=TASK_TYPES, suffix=st.sampled_from([".tsv", ".csv"]),
       header=st.booleans())
def test_fuzz_delimited(tmp_path, data, task_type, suffix, header):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    columns = dict(text_column="sentence", label_column="label") if header else dict(text_column=0, label_column=1)
    examples = examples_or_data_error(read, path, task_type=task_type, header=header, **columns)
    if examples is not None:
        check_examples(examples, task_type)


def check_examples(examples, task_type):
    assert examples
    for ex in examples:
        assert isinstance(ex, Example)
        assert isinstance(ex.text, str) and ex.text
        label = ex.labels["t"]
        if task_type == "classification":
            assert isinstance(label, str) and label
        elif task_type == "multilabel":
            assert isinstance(label, tuple) and all(isinstance(x, str) and x for x in label)
        else:
            assert isinstance(label, float)


# -------------------------------------------------------------------- jsonl


def read_jsonl(path, task_type="classification", **options):
    return read(path, task_type=task_type, fmt="jsonl", **options)


def test_jsonl_fixture_all_task_types():
    path = FIXTURES / "tiny.jsonl"
    examples = read_jsonl(path)
    assert [ex.text for ex in examples] == ["a gripping thriller", "dull and flat", "no tags here"]
    assert labels(examples) == ["pos", "neg", "1"]
    assert [ex.origin for ex in examples] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert labels(read_jsonl(path, "multilabel", label_field="tags")) == [("film", "thriller"), ("film",), ()]
    assert labels(read_jsonl(path, "regression", label_field="score")) == [4.5, 1.0, 2.25]


@pytest.mark.parametrize(
    "line, task_type, expected",
    [
        ('{"text": 5, "label": "x"}', "classification", "field 'text' must be a string, found an integer"),
        ('{"text": "a", "label": 1.5}', "classification", "found a number"),
        ('{"text": "a", "label": true}', "classification", "found a boolean"),
        ('{"text": "a", "label": "x"}', "multilabel", "must be a list of labels"),
        ('{"text": "a", "label": [null]}', "multilabel", "found null"),
        ('{"text": "a", "label": "3"}', "regression", "must be a number for a regression task, found a string"),
        ('{"text": "a", "label": NaN}', "regression", "not a finite number"),
        ('{"text": "a", "label": 1' + "0" * 400 + "}", "regression", "not a finite number"),
    ],
)
def test_jsonl_wrong_types(tmp_path, line, task_type, expected):
    path = write(tmp_path, line + "\n", name="d.jsonl")
    with pytest.raises(DataError) as info:
        read_jsonl(path, task_type)
    assert str(info.value).startswith(f"{path}:1: ")
    assert expected in str(info.value)


def test_jsonl_empty_text_and_unknown_label(tmp_path):
    path = write(tmp_path, '{"text": " ", "label": "x"}\n{"text": "b", "label": "y"}\n', name="d.jsonl")
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'text' is empty"):
        read_jsonl(path)
    assert labels(read_jsonl(path, skip_empty_text=True)) == ["y"]
    with pytest.raises(DataError, match=r"d\.jsonl:2: unknown label 'y'"):
        read_jsonl(path, skip_empty_text=True, labels=["x"])


def test_jsonl_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"d\.jsonl: no examples found"):
        read_jsonl(write(tmp_path, "\n \n", name="d.jsonl"))


JSON_PIECES = ['{"text": ', '"a b"', ', "label": ', '"x"', "1", "[", "]", "}", "\n", "null", "1e999", ",", '"', "\\u12"]


@FUZZ
@given(data=fuzz_bytes(JSON_PIECES, 40), task_type=TASK_TYPES)
def test_fuzz_jsonl(tmp_path, data, task_type):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    examples = examples_or_data_error(read_jsonl, path, task_type)
    if examples is not None:
        check_examples(examples, task_type)


# ---------------------------------------------------- the second text of a pair


@pytest.mark.parametrize(
    "fmt, options, message",
    [
        # the label read as the second text
        ("delimited", {"text_pair_column": "label"}, r"'label' is also the label column \(label_column\)"),
        ("delimited", {"text_pair_column": " gold ", "label_column": "gold"}, r"is also the label column"),
        ("delimited", {"header": False, "text_column": 0, "label_column": 2, "text_pair_column": 2},
         r"2 is also the label column \(label_column\): the model would read each example's label as its second text"),
        ("jsonl", {"text_pair_field": "label"}, r"'label' is also the label field \(label_field\)"),
        ("jsonl", {"label_field": "y", "text_pair_field": "y"}, r"'y' is also the label field"),
        ("tfds", {"name": "glue/rte", "text_pair_feature": "label"}, r"'label' is also the label feature \(label_feature\)"),
        # the text paired with itself
        ("delimited", {"text_pair_column": "sentence"}, r"'sentence' is also the text column \(text_column\): "
                                                        r"each example would be its text paired with itself"),
        ("delimited", {"text_column": 3, "text_pair_column": 3}, r"3 is also the text column"),
        ("jsonl", {"text_field": "a", "text_pair_field": "a"}, r"'a' is also the text field \(text_field\)"),
        ("tfds", {"name": "glue/rte", "text_feature": "s", "text_pair_feature": "s"}, r"'s' is also the text feature"),
    ],
)
def test_the_second_text_is_neither_the_text_nor_the_label(fmt, options, message):
    with pytest.raises(pydantic.ValidationError, match=message) as info:
        get_reader(fmt).options.model_validate(options, strict=True)
    [error] = info.value.errors()
    assert error["loc"] == (next(k for k in options if k.startswith("text_pair_")),)  # blamed on the pair option

