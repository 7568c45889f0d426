"""CoNLL-U files (Universal Dependencies): one tagging example per sentence.

Example YAML:

    tasks:
      - name: upos
        type: tagging
        data:
          format: conllu
          train: ud/en_ewt-ud-train.conllu
          dev: ud/en_ewt-ud-dev.conllu
          column: upos
      - name: deprel
        type: tagging
        data:
          format: conllu
          train: ud/en_ewt-ud-train.conllu
          column: deprel
          deprel_subtypes: strip     # nmod:poss -> nmod

Each word line has 10 tab-separated fields: ID FORM LEMMA UPOS XPOS FEATS
HEAD DEPREL DEPS MISC. Comment lines (`# ...`) are ignored; multiword-token
lines (ID `1-2`) and empty nodes (ID `8.1`) are skipped, so the example's
`text` is the FORM column of the regular word lines joined by spaces.
"""

import re
from typing import Literal

import pydantic

from keras_mtl.data.readers import iter_lines
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.data.readers.conll import clean_token
from keras_mtl.data.readers.conll import tagged_sentences
from keras_mtl.errors import DataError

COLUMNS = {"upos": 3, "xpos": 4, "feats": 5, "deprel": 7}
_WORD_ID = re.compile(r"[0-9]+")
_RANGE_ID = re.compile(r"[0-9]+-[0-9]+")
_EMPTY_ID = re.compile(r"[0-9]+\.[0-9]+")


class ConlluOptions(ReaderOptions):
    """Options of the `conllu` format."""

    column: Literal["upos", "xpos", "feats", "deprel"] = pydantic.Field(
        "upos",
        description=(
            "Which CoNLL-U field is the tag: `upos` (universal POS), `xpos` "
            "(language-specific POS), `feats` (the whole morphological "
            "feature string, e.g. `Number=Sing|Person=3`) or `deprel` "
            "(dependency relation). An unspecified value `_` is kept as the "
            "tag `_`."
        ),
    )
    deprel_subtypes: Literal["keep", "strip"] = pydantic.Field(
        "keep",
        description=(
            "With `column: deprel`: `keep` relation subtypes (`nmod:poss`) or "
            "`strip` them to the universal relation (`nmod`). Ignored for "
            "other columns."
        ),
    )
    encoding: str = pydantic.Field(
        "utf-8", description="Text encoding of the file (CoNLL-U is UTF-8)."
    )


def read_conllu(request):
    """Read a CoNLL-U file into one tagging `Example` per sentence, a sentence at a time.

    Sentences are separated by blank lines. The example's `text` is the FORM
    of each regular word line joined by single spaces (whitespace inside a
    FORM becomes `_`), its label is the tuple of values of `options.column`,
    and its `origin` is `path:line` of the sentence's first line (its first
    comment line when it has comments).

    Raises:
        DataError: the file is missing, not decodable or has no sentences; a
            line does not have 10 tab-separated fields; an ID is not an
            integer, a range (`1-2`) or a decimal (`8.1`); or the word IDs of
            a sentence are not 1, 2, ..., n in order.
    """
    options = request.options
    path = str(request.source)
    lines = iter_lines(path, options.encoding)
    col = COLUMNS[options.column]
    strip_subtype = options.column == "deprel" and options.deprel_subtypes == "strip"

    def parse(line, lineno, words_so_far):
        if line.startswith("#"):
            return None
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataError(
                f"{path}:{lineno}: expected 10 tab-separated fields (ID FORM "
                f"LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), found "
                f"{len(fields)}: {line!r}"
            )
        word_id = fields[0]
        if _RANGE_ID.fullmatch(word_id) or _EMPTY_ID.fullmatch(word_id):
            return None  # multiword token or empty node: not a word of `text`
        if not _WORD_ID.fullmatch(word_id):
            raise DataError(
                f"{path}:{lineno}: malformed ID {word_id!r}: expected an "
                f"integer word ID, a multiword range like `1-2` or an empty "
                f"node like `8.1`"
            )
        expected_id = words_so_far + 1
        if word_id.lstrip("0") != str(expected_id):  # no int(): huge IDs
            raise DataError(
                f"{path}:{lineno}: word ID {word_id} out of order: expected "
                f"{expected_id} (word IDs of a sentence must be 1, 2, ..., n; "
                f"is a blank line missing between two sentences?)"
            )
        form = clean_token(fields[1])
        if not form:
            raise DataError(f"{path}:{lineno}: empty FORM for word {word_id}")
        tag = fields[col].strip()
        if strip_subtype:
            tag = tag.split(":", 1)[0]
        if not tag:
            raise DataError(
                f"{path}:{lineno}: empty {options.column.upper()} for word "
                f"{word_id} (use `_` for an unspecified value)"
            )
        return form, tag

    yield from tagged_sentences(request, lines, parse, "comments and blank lines")


register_reader("conllu", options=ConlluOptions, task_types=("tagging",))(read_conllu)
read = read_conllu
