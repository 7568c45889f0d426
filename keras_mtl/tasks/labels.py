"""Raw label values -> the `Example` labels of a type: the rules the types share.

A task type reads the labels of a data file in `label_from_text` (a TSV/CSV
field), `label_from_json` (a decoded JSON value) and `label_from_tfds` (a
TFDS feature value). What cannot be a label raises `LabelError` with a
one-line message that does not say where the label is: the reader prefixes
its place (`path:line: `), so the user reads `train.tsv:7: empty label in
column 'label'`. Only the standard library is imported here.
"""

from typing import Any, Iterable, Optional, Sequence


class LabelError(ValueError):
    """A raw label the task type cannot read; the reader prefixes where it is."""


def json_type_name(value: Any) -> str:
    """What a decoded JSON value is, in words ("a string", "a list", "null", ...)."""
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def class_name(value: Any) -> Optional[str]:
    """The class name that `value` stands for: a non-blank string (stripped) or an
    integer (`1` is the class "1"; a boolean is not an integer here); else None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def unique(names: Iterable[str]) -> tuple:
    """`names` without repeats, in first-seen order (a multilabel label)."""
    return tuple(dict.fromkeys(names))


def check_allowed(names: Iterable[str], allowed: Optional[Sequence[str]]) -> None:
    """LabelError at the first of `names` not in `allowed` (the reader option `labels`; None: any)."""
    if allowed is None:
        return
    for name in names:
        if name not in allowed:
            raise LabelError(
                f"unknown label {name!r}; the allowed labels (option `labels`) are: {', '.join(map(repr, allowed))}"
            )


def tfds_class_name(value: Any, names: Optional[Sequence[str]], split: str) -> str:
    """One class name from a decoded TFDS scalar: a `ClassLabel` id (named by `names`),
    another integer (its digits) or a string (bytes as UTF-8).

    Raises:
        LabelError: the value is -1 (TFDS's label of an unlabelled split; the
            message names `split`), an id past `names`, not UTF-8 or blank.
    """
    if hasattr(value, "item") and getattr(value, "shape", ()) == ():
        value = value.item()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise LabelError("the label is not valid UTF-8") from None
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise LabelError(
                f"label {value}: split {split!r} is unlabelled (TFDS stores -1 for test splits without "
                f"public labels); use a labelled split such as `validation` or a slice of `train`"
            )
        if names is not None:
            if value >= len(names):
                raise LabelError(f"label {value} is out of range for the {len(names)} class names")
            return names[value]
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise LabelError(f"cannot use {value!r:.80} as a class label")
