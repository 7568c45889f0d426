"""CoNLL-style column files: one token a line, a blank line after each sentence.

Example YAML (CoNLL-2000 chunking, `WORD POS CHUNK`):

    tasks:
      - name: pos
        type: tagging
        data:
          format: conll
          train: ../shared/data/conll2000/train.txt
          test: ../shared/data/conll2000/test.txt
          label_column: 1
      # a `chunk` task: the same data with `label_column: 2`

Two tasks that read the same file get the same sentences, in the same order,
with the same `text`, so they can be merged by text afterwards.
"""

import re
from typing import Optional

import pydantic

from keras_mtl.data.example import Example
from keras_mtl.data.readers import iter_lines
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.errors import DataError

# Columns are separated by runs of spaces and tabs, as in the CoNLL shared
# tasks; not by `str.split()`'s Unicode whitespace (no-break space, U+2028,
# \x1c, ...), which can occur inside a token.
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


class ConllOptions(ReaderOptions):
    """Options of the `conll` format."""

    label_column: int = pydantic.Field(
        ...,
        ge=0,
        description=(
            "0-based column holding this task's tag (required). For "
            "CoNLL-2000 `WORD POS CHUNK`: 1 for POS tags, 2 for chunk tags."
        ),
    )
    token_column: int = pydantic.Field(
        0, ge=0, description="0-based column holding the token (word)."
    )
    separator: Optional[str] = pydantic.Field(
        None,
        min_length=1,
        description=(
            "What separates the columns of a line. null (the default): any run "
            "of spaces and tabs (other whitespace, such as a no-break space or "
            "U+2028, is part of the token and becomes `_`). A string such as "
            "\"\\t\": exactly that string, "
            "so that tokens may contain spaces (each whitespace run inside a "
            "token is then replaced by `_`, since `text` is split on "
            "whitespace)."
        ),
    )
    docstart: Optional[str] = pydantic.Field(
        "-DOCSTART-",
        description=(
            "A token that marks a document boundary (CoNLL-2003 style). Lines "
            "whose token is this value are dropped and end the current "
            "sentence. null: no such marker."
        ),
    )
    encoding: str = pydantic.Field(
        "utf-8", description="Text encoding of the file, e.g. `latin-1`."
    )


def clean_token(token):
    """Turn a token into one whitespace-free word.

    Each run of whitespace inside the token is replaced by a single `_` and
    leading/trailing whitespace is dropped, so that `" ".join(tokens).split()`
    gives back exactly one word per token. Returns "" for a blank token.
    """
    return "_".join(token.split())


END_OF_SENTENCE = object()  # what a line parser returns for a line that ends the sentence


def tagged_sentences(request, lines, parse, other_lines):
    """One tagging `Example` per sentence of `lines` (sentences end at blank lines), yielded
    as soon as the sentence ends (a generator: `lines` may be a stream).

    `parse(line, lineno, words_so_far)` is called on each non-blank line and
    returns `(word, tag)`, None (a line of the sentence without a word, such
    as a comment) or `END_OF_SENTENCE` (the line ends the sentence and is
    not part of it). An example's `text` is its words joined by spaces, its
    label the tuple of their tags, its `origin` `path:line` of the
    sentence's first line. No sentence at all is a `DataError` that says the
    file is empty or has only `other_lines`.
    """
    path = str(request.source)
    count = 0
    words, tags, first_line = [], [], None

    def sentence():
        return Example(text=" ".join(words), labels={request.task_name: tuple(tags)}, origin=f"{path}:{first_line}")

    for index, line in enumerate(lines):
        lineno = index + 1
        parsed = parse(line, lineno, len(words)) if line.strip() else END_OF_SENTENCE
        if parsed is END_OF_SENTENCE:
            if words:
                count += 1
                yield sentence()
            words, tags, first_line = [], [], None
            continue
        if first_line is None:
            first_line = lineno
        if parsed is not None:
            words.append(parsed[0])
            tags.append(parsed[1])
    if words:
        count += 1
        yield sentence()
    if not count:
        raise DataError(f"{path}: no sentences found (the file is empty or has only {other_lines})")


def read_conll(request):
    """Read a CoNLL column file into one tagging `Example` per sentence, a sentence at a time.

    Each non-blank line is one token: its columns are split on
    `options.separator` (runs of spaces and tabs when null). Blank lines end a
    sentence; several blank lines in a row, and a missing blank line at the
    end of the file, are fine. Lines whose token equals `options.docstart`
    are dropped and end the sentence.

    The example's `text` is the tokens joined by single spaces (see
    `clean_token` for tokens containing whitespace), its label is the tuple
    of tags from `options.label_column`, and its `origin` is `path:line` of
    the sentence's first token line.

    Raises:
        DataError: the file is missing, not decodable, has no sentences, has
            a line with a different number of columns than the file's first
            token line, or has a line without the token or label column.
    """
    options = request.options
    path = str(request.source)
    lines = iter_lines(path, options.encoding)
    token_col = options.token_column
    label_col = options.label_column
    needed = max(token_col, label_col) + 1

    expected = None  # (number of columns, line number where it was seen)

    def parse(line, lineno, _):
        nonlocal expected
        if options.separator is None:
            fields = _COLUMN_SEPARATOR.split(line.strip(" \t\r"))
        else:
            fields = line.split(options.separator)
        n = len(fields)
        if (
            options.docstart is not None
            and token_col < n
            and fields[token_col].strip() == options.docstart
        ):
            return END_OF_SENTENCE
        if n < needed:
            found = f"expected {expected[0]} columns, found {n}; " if expected else ""
            if token_col >= n:
                raise DataError(
                    f"{path}:{lineno}: {found}line has {n} column(s) but "
                    f"token_column is {token_col} (0-based): {line!r}"
                )
            raise DataError(
                f"{path}:{lineno}: {found}token {fields[token_col].strip()!r} "
                f"has no label in column {label_col} (0-based; the line has "
                f"{n} column(s)): {line!r}"
            )
        if expected is None:
            expected = (n, lineno)
        elif n != expected[0]:
            raise DataError(
                f"{path}:{lineno}: expected {expected[0]} columns, found {n} "
                f"(the first token line, line {expected[1]}, has "
                f"{expected[0]}): {line!r}"
            )
        token = clean_token(fields[token_col])
        if not token:
            raise DataError(
                f"{path}:{lineno}: empty token in column {token_col}: {line!r}"
            )
        tag = fields[label_col].strip()
        if not tag:
            raise DataError(
                f"{path}:{lineno}: token {token!r} has an empty label in "
                f"column {label_col}: {line!r}"
            )
        return token, tag

    yield from tagged_sentences(
        request, lines, parse, f"blank or {options.docstart or 'document-start'} lines"
    )


register_reader("conll", options=ConllOptions, task_types=("tagging",))(read_conll)
read = read_conll
