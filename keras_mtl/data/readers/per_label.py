"""One file per label, one example a line (e.g. Pang & Lee polarity data).

Example YAML:

    tasks:
      - name: polarity
        type: classification
        data:
          format: per_label
          train:
            positive: ../shared/data/sentence_polarity/rt-polarity.pos
            negative: ../shared/data/sentence_polarity/rt-polarity.neg

Each split is a mapping from a label name to the file holding that label's
examples. Examples come label by label, in the mapping's order, and line by
line within each file, streamed (a generator: one file open at a time). So
the stream is sorted by label: whoever consumes it in order (a shuffle
buffer) must mix it across the whole split, not within a window.
"""

from pathlib import PurePath

import pydantic

from keras_mtl.data.example import Example
from keras_mtl.data.readers import iter_lines
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.errors import DataError
from keras_mtl.tasks.labels import class_name


class PerLabelOptions(ReaderOptions):
    """Options of the `per_label` format."""

    skip_blank_lines: bool = pydantic.Field(
        True,
        description=(
            "Skip lines that are empty or only whitespace. false: such a line "
            "is an error naming the file and line."
        ),
    )
    encoding: str = pydantic.Field(
        "utf-8", description="Text encoding of the files, e.g. `latin-1`."
    )


def _shape_error(request, found):
    split = request.split or "train"
    where = f"{request.source}: " if isinstance(request.source, (str, PurePath)) else ""
    return DataError(
        f"{where}task {request.task_name!r}, split {split!r}: the per_label "
        f"format expects a mapping from each label to its file, e.g. "
        f"`{split}: {{positive: path, negative: path}}`; found {found}"
    )


def read_per_label(request):
    """Read one file per label into classification `Example`s, a line at a time (a generator).

    `request.source` is a dict `{label: path}`. Each line of each file is the
    text of one example (stripped of surrounding whitespace) whose label is
    the dict key (converted to a string). `origin` is `path:line`.

    Raises:
        DataError: the source is not a non-empty mapping of label to path;
            a file is missing, not decodable or has no examples; or a line is
            blank while `skip_blank_lines` is false.
    """
    options = request.options
    source = request.source
    if not isinstance(source, dict):
        raise _shape_error(request, f"{type(source).__name__} {source!r:.200}")
    if not source:
        raise _shape_error(request, "an empty mapping")
    for key, path in source.items():
        label = class_name(key)  # a non-blank string (stripped) or an integer (`1`: the class "1")
        if label is None:
            raise _shape_error(request, f"the label {key!r}")
        if not isinstance(path, (str, PurePath)):
            raise _shape_error(
                request, f"{type(path).__name__} {path!r:.200} as the file of label {key!r}"
            )
        path = str(path)
        count = 0
        for index, line in enumerate(iter_lines(path, options.encoding)):
            text = line.strip()
            if not text:
                if options.skip_blank_lines:
                    continue
                raise DataError(
                    f"{path}:{index + 1}: blank line (set `skip_blank_lines: "
                    f"true` to skip such lines)"
                )
            count += 1
            yield Example(text=text, labels={request.task_name: label}, origin=f"{path}:{index + 1}")
        if count == 0:
            raise DataError(
                f"{path}: no examples found for label {label!r} (the file is "
                f"empty or has only blank lines)"
            )


register_reader(
    "per_label", options=PerLabelOptions, task_types=("classification",)
)(read_per_label)
read = read_per_label
