"""Sentence-level data from TensorFlow Datasets (`format: tfds`).

Example YAML:

    tasks:
      - name: sst2
        type: classification
        data:
          format: tfds
          name: glue/sst2
          train: train[:90%]         # TFDS split names, not paths
          dev: train[90%:]
          test: validation
          text_feature: sentence
          label_feature: label

A sentence-pair task names its second text with `text_pair_feature` (for
`glue/rte`: `text_feature: sentence1`, `text_pair_feature: sentence2`).

The sources are TFDS split strings (slicing such as `train[:90%]` works).
`tensorflow_datasets` is imported only when a `tfds` task is read. A machine
without network access can read a dataset that was prepared earlier: set
`data_dir` to the directory holding it and `download: false`.
"""

from typing import Optional

import pydantic

from keras_mtl.data.example import Example
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.data.readers.delimited import check_second_text, read_label
from keras_mtl.errors import DataError
from keras_mtl.tasks import get_task_type


class TfdsOptions(ReaderOptions):
    """Options of the `tfds` format."""

    name: str = pydantic.Field(
        ...,
        min_length=1,
        description=(
            "The TFDS builder name, optionally with config and version, e.g. "
            "`glue/sst2` or `imdb_reviews:1.0.0` (required)."
        ),
    )
    text_feature: str = pydantic.Field(
        "sentence", description="The feature holding the text (a `Text` feature)."
    )
    label_feature: str = pydantic.Field(
        "label",
        description=(
            "The feature holding the label. A `ClassLabel` maps to its class "
            "names; other integers and strings become class names as written; "
            "regression tasks take its value as a float; multilabel tasks "
            "take a sequence (of `ClassLabel`s, integers or strings)."
        ),
    )
    # After text_feature and label_feature: its validator compares it with them.
    text_pair_feature: Optional[str] = pydantic.Field(
        None,
        min_length=1,
        description=(
            "Sentence-pair tasks: the feature holding the second text (a `Text` "
            "feature). null (the default): a single-text task."
        ),
    )
    data_dir: Optional[str] = pydantic.Field(
        None,
        description=(
            "Where TFDS keeps prepared datasets. null: the TFDS default "
            "(`~/tensorflow_datasets` or `$TFDS_DATA_DIR`)."
        ),
    )
    download: bool = pydantic.Field(
        True,
        description=(
            "Download and prepare the dataset if it is not yet in `data_dir`. "
            "false: use only what is already prepared (no network)."
        ),
    )

    @pydantic.field_validator("text_pair_feature")
    @classmethod
    def _second_text_feature(cls, value, info):
        return check_second_text(value, info, ("text_feature", "label_feature"), "feature")


def _first_line(error):
    """The first line of an error's message (TFDS messages can be long)."""
    text = str(error).strip() or type(error).__name__
    text = text.splitlines()[0]
    if isinstance(error, ModuleNotFoundError) and error.name:
        text += f" (pip install {error.name.split('.')[0]})"
    return text


def _class_names(feature):
    """The class names of a ClassLabel (or a sequence of them), else None."""
    names = getattr(feature, "names", None)
    if names is None:
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
    return list(names) if names is not None else None


def _text(record, feature, origin):
    """The decoded string of a text feature of one record."""
    text = record[feature]
    if hasattr(text, "item") and getattr(text, "shape", None) == ():
        text = text.item()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{origin}: byte offset {e.start}: the text is not valid UTF-8"
            ) from None
    if not isinstance(text, str):
        raise DataError(
            f"{origin}: feature {feature!r} is not a text feature (found {text!r:.80})"
        )
    return text


def read_tfds(request):
    """Read one split of a TFDS dataset into `Example`s, a record at a time (a generator).

    `request.source` is the split string. `origin` is
    `tfds:NAME/SPLIT:N` with N the 1-based position in the split. The
    dataset is iterated (`tfds.as_numpy`), never held whole; the class names
    come from the builder's features, not from a pass over the data. Two
    checks need the whole split and are raised after its last example: the
    split is empty, or every label is the unlabelled placeholder (the task
    type's `unlabelled_split`, asked one label at a time: a split is
    unlabelled when each of its labels is).

    Raises:
        DataError: tensorflow-datasets is missing; the builder is unknown or
            cannot be prepared (e.g. no network); the dataset is not prepared
            and `download` is false; the split or a feature does not exist
            (the message lists the features); a text is not valid UTF-8; or
            the split is unlabelled (labels of -1).
    """
    options = request.options
    name = options.name
    split = request.source
    if not isinstance(split, str) or not split.strip():
        raise DataError(
            f"tfds:{name}: task {request.task_name!r}: the {request.split} "
            f"source must be a TFDS split name such as `train` or "
            f"`train[:90%]`, found {split!r:.100}"
        )
    split = split.strip()
    where = f"tfds:{name}/{split}"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"{where}: the tfds format needs tensorflow-datasets "
            f"(pip install tensorflow-datasets)"
        ) from None

    try:
        builder = tfds.builder(name, data_dir=options.data_dir)
    except Exception as e:  # TFDS raises many kinds; all mean "cannot load".
        raise DataError(
            f"{where}: cannot load the TFDS builder {name!r}: {_first_line(e)} "
            f"(names look like `glue/sst2`; see "
            f"https://www.tensorflow.org/datasets/catalog)"
        ) from None

    if options.download:
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise DataError(
                f"{where}: downloading or preparing {name!r} failed: "
                f"{_first_line(e)} (without network, prepare the dataset "
                f"elsewhere, then set `data_dir` and `download: false`)"
            ) from None
    else:
        prepared = getattr(builder, "is_prepared", None)
        if prepared is not None and not prepared():
            raise DataError(
                f"{where}: {name!r} is not prepared in data_dir "
                f"{str(builder.data_dir)!r} and `download` is false; set "
                f"`download: true` or point `data_dir` at a prepared copy"
            )

    features = builder.info.features
    available = list(features.keys())
    wanted = [("text_feature", options.text_feature)]
    if options.text_pair_feature is not None:
        wanted.append(("text_pair_feature", options.text_pair_feature))
    wanted.append(("label_feature", options.label_feature))
    for option, feature in wanted:
        if feature not in available:
            raise DataError(
                f"{where}: {name!r} has no feature {feature!r} ({option}); "
                f"its features are: {', '.join(map(repr, available))}"
            )
    names = _class_names(features[options.label_feature])
    kind = get_task_type(request.task_type)  # the type reads the labels

    try:
        dataset = builder.as_dataset(split=split)
    except Exception as e:
        raise DataError(
            f"{where}: cannot read split {split!r} of {name!r}: "
            f"{_first_line(e)} (known splits: "
            f"{', '.join(map(repr, builder.info.splits.keys()))})"
        ) from None

    count, unlabelled = 0, True
    try:
        for index, record in enumerate(tfds.as_numpy(dataset)):
            origin = f"{where}:{index + 1}"
            text = _text(record, options.text_feature, origin)
            text_pair = None
            if options.text_pair_feature is not None:
                text_pair = _text(record, options.text_pair_feature, origin).strip()
                if not text_pair:
                    raise DataError(
                        f"{origin}: feature {options.text_pair_feature!r} (the "
                        f"second text, text_pair_feature) is empty"
                    )
            label = read_label(origin, kind.label_from_tfds, record[options.label_feature], names, split)
            unlabelled = unlabelled and kind.unlabelled_split([label])
            count += 1
            yield Example(text=text.strip(), labels={request.task_name: label}, origin=origin, text_pair=text_pair)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: reading {name!r} failed: {_first_line(e)}") from None

    if not count:
        raise DataError(f"{where}: the split has no examples")
    if unlabelled:
        raise DataError(
            f"{where}: every label is -1: split {split!r} is unlabelled (TFDS "
            f"stores -1 for test splits without public labels)"
        )


register_reader(
    "tfds",
    options=TfdsOptions,
    task_types=("classification", "regression", "multilabel"),
    source_is_path=False,
)(read_tfds)
read = read_tfds
