import collections
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data.example import Example
from keras_mtl.data.readers import get_reader
from keras_mtl.errors import DataError

from helpers import examples_or_data_error, read_all
from helpers import shared_data as shared

FIXTURES = Path(__file__).parent / "fixtures"


def read(source, task="polarity", split="train", **options):
    return read_all("per_label", source, task, "classification", split, **options)


def test_registered_for_classification_only():
    reader = get_reader("per_label")
    assert reader.task_types == ("classification",)


def test_fixture_label_by_label_line_by_line():
    pos, neg = FIXTURES / "tiny.pos", FIXTURES / "tiny.neg"
    examples = read({"positive": str(pos), "negative": str(neg)})
    assert [(ex.text, ex.labels["polarity"]) for ex in examples] == [
        ("a gripping thriller .", "positive"),
        ("the best film of the year .", "positive"),
        ("dull and flat .", "negative"),
        ("not worth the ticket .", "negative"),  # trailing spaces stripped
    ]
    assert [ex.origin for ex in examples] == [f"{pos}:1", f"{pos}:3", f"{neg}:1", f"{neg}:2"]


def test_int_keys_become_strings():
    examples = read({1: str(FIXTURES / "tiny.pos"), 0: str(FIXTURES / "tiny.neg")})
    assert {ex.labels["polarity"] for ex in examples} == {"1", "0"}


def test_blank_line_is_an_error_when_not_skipped():
    pos = FIXTURES / "tiny.pos"
    with pytest.raises(DataError, match=r"tiny\.pos:2: blank line"):
        read({"positive": str(pos)}, skip_blank_lines=False)


@pytest.mark.parametrize("source", ["/data/rt-polarity.pos", ["a", "b"], None])
def test_non_mapping_source_explains_the_shape(source):
    with pytest.raises(DataError) as info:
        read(source, split="dev")
    message = str(info.value)
    assert "`dev: {positive: path, negative: path}`" in message
    assert "'polarity'" in message
    if isinstance(source, str):
        assert message.startswith(f"{source}: ")


def test_empty_mapping_and_bad_values():
    with pytest.raises(DataError, match="found an empty mapping"):
        read({})
    with pytest.raises(DataError, match="as the file of label 'positive'"):
        read({"positive": 3})
    with pytest.raises(DataError, match="the label None"):
        read({None: str(FIXTURES / "tiny.pos")})


def test_empty_file_names_the_file(tmp_path):
    empty = tmp_path / "empty.neg"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.neg: no examples found for label 'negative'"):
        read({"positive": str(FIXTURES / "tiny.pos"), "negative": str(empty)})


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.pos: data file not found"):
        read({"positive": str(tmp_path / "nope.pos")})
    bad = tmp_path / "bad.pos"
    bad.write_bytes(b"caf\xe9 .\n")
    with pytest.raises(DataError, match=r"bad\.pos: byte offset 3: not valid utf-8"):
        read({"positive": str(bad)})
    (ex,) = read({"positive": str(bad)}, encoding="latin-1")
    assert ex.text == "café ."


def test_options_forbid_unknown():
    with pytest.raises(pydantic.ValidationError):
        get_reader("per_label").options(skip_blank=True)


@pytest.mark.real_data
def test_real_polarity_and_subjectivity():
    polarity = read(
        {
            "positive": str(shared("sentence_polarity", "rt-polarity.pos")),
            "negative": str(shared("sentence_polarity", "rt-polarity.neg")),
        }
    )
    assert collections.Counter(ex.labels["polarity"] for ex in polarity) == {"positive": 5331, "negative": 5331}
    assert polarity[0].text.startswith("the rock is destined to be the 21st century's new \" conan \"")
    subjectivity = read(
        {
            "subjective": str(shared("subjectivity", "quote.tok.gt9.5000")),
            "objective": str(shared("subjectivity", "plot.tok.gt9.5000")),
        },
        task="subjectivity",
    )
    assert collections.Counter(ex.labels["subjectivity"] for ex in subjectivity) == {
        "subjective": 5000,
        "objective": 5000,
    }


@pytest.mark.real_data
def test_real_latin1_readme_lines():
    readme = shared("conll2000", "README")
    with pytest.raises(DataError, match="byte offset 7334"):
        read({"readme": str(readme)})
    examples = read({"readme": str(readme)}, encoding="latin-1")
    assert any("é" in ex.text for ex in examples)


PIECES = list("ab \t\n\r\x0b\x0c\x1c\x85\u2028é") + ["a film .", "\n\n"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.one_of(
        st.lists(st.sampled_from(PIECES), max_size=30).map(lambda p: "".join(p).encode("utf-8")),
        st.binary(max_size=80),
    ),
    second=st.binary(max_size=40),
    skip=st.booleans(),
)
def test_fuzz_gives_examples_or_data_error(tmp_path, first, second, skip):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(first)
    b.write_bytes(second)
    examples = examples_or_data_error(read, {"a": str(a), "b": str(b)}, where=(str(a), str(b)), skip_blank_lines=skip)
    if examples is None:
        return
    assert examples
    for ex in examples:
        assert isinstance(ex, Example)
        assert ex.text and ex.text == ex.text.strip()
        assert ex.labels["polarity"] in ("a", "b")
