from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_mtl.data.readers import get_reader
from keras_mtl.errors import DataError

from helpers import check_word_tags, examples_or_data_error, read_all, write_text

FIXTURES = Path(__file__).parent / "fixtures"
UD = FIXTURES / "tiny.conllu"


def read(path, task="tags", **options):
    return read_all("conllu", str(path), task, "tagging", **options)


def word_line(word_id, form="w", upos="X", deprel="dep"):
    return f"{word_id}\t{form}\t{form}\t{upos}\t_\t_\t0\t{deprel}\t_\t_\n"


def write(tmp_path, text):
    return write_text(tmp_path, text, "data.conllu")


def test_registered_for_tagging_only():
    assert get_reader("conllu").task_types == ("tagging",)


def test_fixture_upos_skips_multiword_tokens_and_empty_nodes():
    examples = read(UD)
    assert [ex.text for ex in examples] == [
        "Mary 's dog did n't bark .",
        "Sue likes coffee and Bill tea .",
    ]
    assert examples[0].labels["tags"] == ("PROPN", "PART", "NOUN", "AUX", "PART", "VERB", "PUNCT")
    assert examples[1].labels["tags"] == ("PROPN", "VERB", "NOUN", "CCONJ", "PROPN", "NOUN", "PUNCT")
    # origin: the sentence's first line, its first comment.
    assert [ex.origin for ex in examples] == [f"{UD}:1", f"{UD}:13"]
    for ex in examples:
        assert len(ex.words) == len(ex.labels["tags"])


def test_fixture_other_columns():
    (first, second) = read(UD, column="xpos")
    assert first.labels["tags"][:3] == ("NNP", "POS", "NN")
    (first, second) = read(UD, column="feats")
    assert first.labels["tags"][3] == "Mood=Ind|Tense=Past"
    assert first.labels["tags"][1] == "_"


def test_fixture_deprel_subtypes_keep_and_strip():
    kept = read(UD, column="deprel")
    assert kept[0].labels["tags"][0] == "nmod:poss"
    stripped = read(UD, column="deprel", deprel_subtypes="strip")
    assert stripped[0].labels["tags"][0] == "nmod"
    assert stripped[1].labels["tags"] == ("nsubj", "root", "obj", "cc", "conj", "orphan", "punct")
    # Stripping only applies to deprel.
    assert read(UD, column="upos", deprel_subtypes="strip")[0].labels["tags"][0] == "PROPN"


def test_form_with_space_becomes_underscore(tmp_path):
    path = write(tmp_path, word_line(1, "New York") + word_line(2, "is"))
    (ex,) = read(path)
    assert ex.text == "New_York is"


def test_wrong_number_of_fields(tmp_path):
    path = write(tmp_path, word_line(1) + "2 w w X _ _ 0 dep _ _\n")
    with pytest.raises(DataError, match=r"data\.conllu:2: expected 10 tab-separated fields .* found 1"):
        read(path)


def test_malformed_id(tmp_path):
    path = write(tmp_path, "# c\n" + word_line(1) + word_line("2a"))
    with pytest.raises(DataError, match=r"data\.conllu:3: malformed ID '2a'"):
        read(path)


def test_ids_out_of_order(tmp_path):
    path = write(tmp_path, word_line(1) + word_line(3))
    with pytest.raises(DataError, match=r"data\.conllu:2: word ID 3 out of order: expected 2"):
        read(path)


def test_ids_must_restart_after_blank_line(tmp_path):
    path = write(tmp_path, word_line(1) + "\n" + word_line(2))
    with pytest.raises(DataError, match=r"data\.conllu:3: word ID 2 out of order: expected 1"):
        read(path)


def test_missing_blank_line_between_sentences(tmp_path):
    path = write(tmp_path, word_line(1) + word_line(2) + word_line(1))
    with pytest.raises(DataError, match=r"data\.conllu:3: .*blank line missing"):
        read(path)


def test_comments_only_is_empty(tmp_path):
    path = write(tmp_path, "# sent_id = 1\n# text = nothing\n\n")
    with pytest.raises(DataError, match=r"data\.conllu: no sentences found"):
        read(path)


def test_bad_option_values():
    options = get_reader("conllu").options
    with pytest.raises(pydantic.ValidationError):
        options(column="lemma")
    with pytest.raises(pydantic.ValidationError):
        options(deprel_subtypes="drop")
    with pytest.raises(pydantic.ValidationError):
        options(colum="upos")


FIELDS = ["1", "2", "3", "1-2", "8.1", "x", "_", "NOUN", "nmod:poss", "#", " ", "é"]
PIECES = ["\t", "\n", "\n\n", "# c\n", word_line(1), word_line(2), word_line("1-2"), word_line("1.1")] + FIELDS


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.lists(st.sampled_from(PIECES), max_size=40).map(lambda p: "".join(p).encode("utf-8")),
        st.binary(max_size=120),
    ),
    column=st.sampled_from(["upos", "xpos", "feats", "deprel"]),
    subtypes=st.sampled_from(["keep", "strip"]),
)
def test_fuzz_gives_examples_or_data_error(tmp_path, data, column, subtypes):
    path = tmp_path / "fuzz.conllu"
    path.write_bytes(data)
    examples = examples_or_data_error(read, path, column=column, deprel_subtypes=subtypes)
    if examples is not None:
        check_word_tags(examples, "tags")
