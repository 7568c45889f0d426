"""Sentence-level data in TSV/CSV files (`delimited`) or JSON Lines (`jsonl`).

Example YAML:

    tasks:
      - name: sst2                  # TSV with a header `sentence<TAB>label`
        type: classification
        data:
          format: delimited
          train: ../shared/data/sst2/train_full.tsv
          dev: ../shared/data/sst2/dev.tsv
          text_column: sentence
          label_column: label
      - name: cola                  # TSV without a header
        type: classification
        data:
          format: delimited
          train: ../shared/data/cola_public/raw/in_domain_train.tsv
          dev: ../shared/data/cola_public/raw/in_domain_dev.tsv
          header: false
          text_column: 3
          label_column: 1
      - name: rte                   # sentence pairs: two text columns
        type: classification
        data:
          format: delimited
          train: ../shared/data/rte/train.tsv
          test: ../shared/data/rte/dev.tsv
          quoting: none             # its sentences hold `"` that are not CSV quotes
          text_column: sentence1
          text_pair_column: sentence2
          label_column: label
      - name: topics
        type: multilabel
        data:
          format: jsonl              # {"text": "...", "label": ["a", "b"]}
          train: topics.jsonl
          text_field: text
          label_field: label

A task that sets `text_pair_column` (`jsonl`: `text_pair_field`) is a
sentence-pair task: every row has a second text, and an empty one is an error
naming the line (or, with `skip_empty_text`, a skipped row).

Labels follow the conventions of `keras_mtl.data.example`: classification
labels are strings (a label `1` in a file is the class name "1"), multilabel
labels are tuples of strings (in file order, without repeats) and regression
labels are floats. The task's type reads them (`TaskType.label_from_text`,
`label_from_json`); the reader adds where the label is to its errors.
"""

import csv
import json
from pathlib import Path
from typing import List, Literal, Optional, Union

import pydantic

from keras_mtl.data.example import Example
from keras_mtl.data.readers import iter_lines
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.errors import DataError
from keras_mtl.tasks import LabelError, get_task_type
from keras_mtl.tasks.labels import json_type_name

SENTENCE_TASK_TYPES = ("classification", "multilabel", "regression")

Column = Union[pydantic.StrictInt, pydantic.StrictStr]


def same_column(a, b):
    """Whether two `delimited` columns are surely the same: two indexes, or two names
    (stripped, as the header is read). A name and an index are told apart by the header only."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a.strip() == b.strip()
    return False


def check_second_text(value, info, others, what, same=lambda a, b: a == b):
    """A pair option's validator (declared after `others`): the second text must not be read
    from the text's or the label's column (field, feature), else a ValueError saying which.

    `others` are (text option, label option) of the options model; `info.data` holds
    those of them that are valid.
    """
    if value is None:
        return value
    text, label = others
    if same(value, info.data.get(label)):
        raise ValueError(
            f"{value!r} is also the label {what} ({label}): the model would read each example's label as "
            f"its second text; name the {what} that holds the second text"
        )
    if same(value, info.data.get(text)):
        raise ValueError(
            f"{value!r} is also the text {what} ({text}): each example would be its text paired with "
            f"itself; name the {what} that holds the second text"
        )
    return value


class _LabelledRecordOptions(ReaderOptions):
    """The options that `delimited` and `jsonl` share: which labels and texts a record may have."""

    labels: Optional[List[str]] = pydantic.Field(
        None,
        description=(
            "Classification and multilabel tasks: the allowed labels. A label "
            "not in this list is an error naming the line. null: any label."
        ),
    )
    skip_empty_text: bool = pydantic.Field(
        False,
        description=(
            "Skip rows (objects) whose text (or, in a pair task, second text) is "
            "empty. false (the default): an empty text is an error naming the line."
        ),
    )


class DelimitedOptions(_LabelledRecordOptions):
    """Options of the `delimited` (TSV/CSV) format."""

    text_column: Column = pydantic.Field(
        "sentence",
        description=(
            "The column holding the text: a column name from the header row "
            "(needs `header: true`) or a 0-based column index (allowed with "
            "or without a header)."
        ),
    )
    label_column: Column = pydantic.Field(
        "label",
        description=(
            "The column holding the label: a header name or a 0-based index, "
            "as for `text_column`."
        ),
    )
    # After text_column and label_column: its validator compares it with them.
    text_pair_column: Optional[Column] = pydantic.Field(
        None,
        description=(
            "Sentence-pair tasks: the column holding the second text (a header "
            "name or a 0-based index, as for `text_column`). null (the default): "
            "a single-text task."
        ),
    )
    header: bool = pydantic.Field(
        True,
        description="Whether the first line is a header row of column names.",
    )
    delimiter: Optional[str] = pydantic.Field(
        None,
        description=(
            "The one-character field delimiter. null (the default): by the "
            "file's suffix, `,` for `.csv` and a tab for anything else "
            "(`.tsv`, `.txt`, ...). Write a tab as \"\\t\" (in double quotes "
            "in YAML) or as `tab`."
        ),
    )
    quoting: Optional[Literal["none", "minimal"]] = pydantic.Field(
        None,
        description=(
            "`none`: quote characters are ordinary text and every line is one "
            "row (right for GLUE TSVs such as SST-2, whose sentences contain "
            "`\"`). `minimal`: CSV quoting, where a field may be wrapped in "
            "double quotes (and then may contain the delimiter, newlines and "
            "`\"\"`). null (the default): `minimal` for `.csv`, `none` "
            "otherwise."
        ),
    )
    label_separator: str = pydantic.Field(
        ",",
        min_length=1,
        description=(
            "Multilabel tasks: separates the labels inside the label field, "
            "e.g. `sports,politics`. Blank labels are dropped, so an empty "
            "field is an example with no labels."
        ),
    )
    encoding: str = pydantic.Field(
        "utf-8", description="Text encoding of the file, e.g. `latin-1`."
    )

    @pydantic.field_validator("text_column", "text_pair_column", "label_column")
    @classmethod
    def _non_negative(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("a column index must be 0 or more (0-based)")
        if isinstance(value, str) and not value.strip():
            raise ValueError("a column name must not be empty")
        return value

    @pydantic.field_validator("text_pair_column")
    @classmethod
    def _second_text_column(cls, value, info):
        return check_second_text(value, info, ("text_column", "label_column"), "column", same_column)

    @pydantic.field_validator("delimiter")
    @classmethod
    def _one_char(cls, value):
        if value is None:
            return value
        value = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)
        if len(value) != 1:
            raise ValueError(
                f"the delimiter must be one character, got {value!r} "
                f"(write a tab as \"\\t\" or `tab`)"
            )
        if value in "\r\n\"":
            raise ValueError(f"{value!r} cannot be a delimiter")
        return value


class JsonlOptions(_LabelledRecordOptions):
    """Options of the `jsonl` (JSON Lines) format."""

    text_field: str = pydantic.Field(
        "text",
        min_length=1,
        description="The key of each JSON object that holds the text (a string).",
    )
    label_field: str = pydantic.Field(
        "label",
        min_length=1,
        description=(
            "The key that holds the label: a string or integer (classification; "
            "`1` becomes the class name \"1\"), a list of strings or integers "
            "(multilabel), or a number (regression)."
        ),
    )
    # After text_field and label_field: its validator compares it with them.
    text_pair_field: Optional[str] = pydantic.Field(
        None,
        min_length=1,
        description=(
            "Sentence-pair tasks: the key that holds the second text (a string). "
            "null (the default): a single-text task."
        ),
    )
    encoding: str = pydantic.Field(
        "utf-8", description="Text encoding of the file (JSON Lines is UTF-8)."
    )

    @pydantic.field_validator("text_pair_field")
    @classmethod
    def _second_text_field(cls, value, info):
        return check_second_text(value, info, ("text_field", "label_field"), "field")


def _string_field(record, field, role, where):
    """`record[field]` stripped; a DataError naming the line unless it is a string."""
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r}{role} must be a string, found {json_type_name(value)}: {value!r:.80}")
    return value.strip()


def _empty_field(field, role, where):
    return DataError(f"{where}: field {field!r}{role} is empty (set `skip_empty_text: true` to skip such lines)")


def read_label(where, read, *args, **kwargs):
    """`read(*args, **kwargs)`: a task type's `label_from_text` (`_json`, `_tfds`)
    on one raw label; its LabelError becomes a DataError naming `where` (path:line)."""
    try:
        return read(*args, **kwargs)
    except LabelError as e:
        raise DataError(f"{where}: {e}") from None


def _resolve_column(column, names, header_where, what):
    """Returns the 0-based index of `column` given the header `names`."""
    if isinstance(column, int):
        return column
    if names is None:
        raise DataError(
            f"{header_where}: {what} is the name {column!r} but `header: false`; use a "
            f"0-based column index, or `header: true` if line 1 holds names"
        )
    stripped = [name.strip() for name in names]
    if column.strip() in stripped:
        return stripped.index(column.strip())
    raise DataError(
        f"{header_where}: no column named {column!r} ({what}); the header has: "
        f"{', '.join(map(repr, stripped))}"
    )


def _rows(path, lines, delimiter, quoting):
    """Yields (line number, fields) for each non-blank row of the file."""
    if quoting == "none":
        for index, line in enumerate(lines):
            if line.strip():
                yield index + 1, line.split(delimiter)
        return
    reader = csv.reader(
        (line + "\n" for line in lines), delimiter=delimiter, strict=True
    )
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            reason = str(e)
            if "end of data" in reason:
                reason = "a quoted field is never closed (reached end of file)"
            elif "new-line character seen in unquoted field" in reason:
                # Lines are split at \n and \r\n only; a bare \r is left in.
                reason = (
                    "a bare carriage return (\\r) in an unquoted field; quote "
                    "the field or give the file \\n or \\r\\n line ends"
                )
            raise DataError(
                f"{path}:{start}: malformed CSV row: {reason}; if quote "
                f"characters in this file are plain text, set `quoting: none`"
            ) from None
        lineno, start = start, reader.line_num + 1
        if fields and any(field.strip() for field in fields):
            yield lineno, fields


def read_delimited(request):
    """Read a TSV/CSV file into one `Example` per row, a row at a time (a generator).

    With `header: true` the first line names the columns. Blank lines are
    skipped; a row may have more fields than needed, but not fewer. The
    text is stripped of surrounding whitespace. `origin` is `path:line` of
    the row's first line.

    Raises:
        DataError: the file is missing, not decodable or has no rows; a
            column name is not in the header; a row has too few fields, an
            empty text (unless `skip_empty_text`), an empty or unknown label,
            or (regression) a label that is not a number.
    """
    options = request.options
    path = str(request.source)
    suffix = Path(path).suffix.lower()
    delimiter = options.delimiter or ("," if suffix == ".csv" else "\t")
    quoting = options.quoting or ("minimal" if suffix == ".csv" else "none")
    lines = iter_lines(path, options.encoding)
    rows = _rows(path, lines, delimiter, quoting)

    names, header_where = None, path
    if options.header:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: the file is empty (expected a header row)")
        header_where = f"{path}:{first[0]}"
        names = first[1]
    text_idx = _resolve_column(options.text_column, names, header_where, "text_column")
    label_idx = _resolve_column(
        options.label_column, names, header_where, "label_column"
    )
    pair_idx = None
    if options.text_pair_column is not None:
        pair_idx = _resolve_column(
            options.text_pair_column, names, header_where, "text_pair_column"
        )
    columns = [(text_idx, "text_column"), (label_idx, "label_column")]
    if pair_idx is not None:
        columns.append((pair_idx, "text_pair_column"))
    if names is not None:
        # Index columns given with a header must exist in the header too.
        for idx, what in columns:
            if idx >= len(names):
                raise DataError(
                    f"{header_where}: {what} is {idx} but the header has only "
                    f"{len(names)} column(s): {', '.join(map(repr, names))}"
                )
    needed = max(idx for idx, _ in columns) + 1
    label_desc = (
        f"column {names[label_idx].strip()!r}" if names else f"column {label_idx}"
    )
    kind = get_task_type(request.task_type)  # the type reads the labels

    count = 0
    for lineno, fields in rows:
        where = f"{path}:{lineno}"
        if len(fields) < needed:
            raise DataError(
                f"{where}: expected at least {needed} fields separated by "
                f"{delimiter!r}, found {len(fields)}"
            )
        text = fields[text_idx].strip()
        if not text:
            if options.skip_empty_text:
                continue
            raise DataError(
                f"{where}: empty text in column {text_idx} (set "
                f"`skip_empty_text: true` to skip such rows)"
            )
        text_pair = None
        if pair_idx is not None:
            text_pair = fields[pair_idx].strip()
            if not text_pair:
                if options.skip_empty_text:
                    continue
                pair_desc = (
                    f"column {names[pair_idx].strip()!r}" if names else f"column {pair_idx}"
                )
                raise DataError(
                    f"{where}: empty second text in {pair_desc} (text_pair_column; "
                    f"set `skip_empty_text: true` to skip such rows)"
                )
        label = read_label(
            where, kind.label_from_text, fields[label_idx], label_desc,
            separator=options.label_separator, allowed=options.labels,
        )
        count += 1
        yield Example(text=text, labels={request.task_name: label}, origin=where, text_pair=text_pair)

    if not count:
        raise DataError(
            f"{path}: no rows found (the file is empty"
            f"{' or has only a header' if options.header else ''})"
        )


def read_jsonl(request):
    """Read a JSON Lines file (one JSON object a line) into `Example`s, a line at a time (a generator).

    Blank lines are skipped. The text (`options.text_field`) must be a
    string and is stripped of surrounding whitespace; see `JsonlOptions` for
    the label types. `origin` is `path:line`.

    Raises:
        DataError: the file is missing, not decodable or has no objects; a
            line is not valid JSON or not an object; a field is missing (the
            message lists the fields present) or has the wrong type; a text
            is empty (unless `skip_empty_text`) or a label is unknown.
    """
    options = request.options
    path = str(request.source)
    lines = iter_lines(path, options.encoding)
    kind = get_task_type(request.task_type)  # the type reads the labels
    count = 0
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}:{index + 1}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{where}: invalid JSON ({e.msg} at column {e.colno})"
            ) from None
        except (ValueError, RecursionError) as e:
            raise DataError(f"{where}: invalid JSON ({e})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: expected a JSON object, found {json_type_name(record)}"
            )
        fields = [options.text_field, options.label_field]
        if options.text_pair_field is not None:
            fields.insert(1, options.text_pair_field)
        for field in fields:
            if field not in record:
                present = ", ".join(map(repr, record)) or "none"
                raise DataError(
                    f"{where}: no field {field!r}; the object has fields: "
                    f"{present}"
                )
        text = _string_field(record, options.text_field, "", where)
        if not text:
            if options.skip_empty_text:
                continue
            raise _empty_field(options.text_field, "", where)
        text_pair = None
        if options.text_pair_field is not None:
            text_pair = _string_field(record, options.text_pair_field, " (text_pair_field)", where)
            if not text_pair:
                if options.skip_empty_text:
                    continue
                raise _empty_field(options.text_pair_field, " (the second text, text_pair_field)", where)
        label = read_label(
            where, kind.label_from_json, record[options.label_field], options.label_field, allowed=options.labels
        )
        count += 1
        yield Example(text=text, labels={request.task_name: label}, origin=where, text_pair=text_pair)
    if not count:
        raise DataError(f"{path}: no examples found (the file is empty)")


register_reader(
    "delimited", options=DelimitedOptions, task_types=SENTENCE_TASK_TYPES
)(read_delimited)
register_reader("jsonl", options=JsonlOptions, task_types=SENTENCE_TASK_TYPES)(
    read_jsonl
)
read = read_delimited
