"""Signature outputs -> per-task JSON, shared by local predict and every client.

The exported `serving_default` signature returns named, batch-major tensors
(see `keras_mtl.serving` for the full contract). `outputs_to_predictions`
turns them into one plain dict per text:

    {"sentiment": {"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}},
     "pos":       {"tags": ["B-NP", "I-NP"]},
     "score":     {"value": 0.3},
     "topics":    {"labels": ["a", "c"], "probabilities": {"a": 0.8, ...}},
     "_meta":     {"num_words": 2, "truncated": False, "windows": 1}}

The same function is fed by a direct signature call (numpy arrays, strings as
bytes), by TF Serving REST (JSON lists, strings as str, float32 written as
their shortest decimal) and by gRPC (`tf.make_ndarray`), so answers are
identical whatever the path (`keras_mtl.tasks.values`: floats go through
float32 to the shortest decimal that round-trips, 0.9 and not
0.8999999761581421). Each task's dict is its type's `prediction`
(keras_mtl.tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keras_mtl.errors import ServingError
from keras_mtl.tasks import get_task_type, task_type_names
from keras_mtl.tasks.values import scalar

META_KEYS = ("num_words", "truncated", "windows")


def validate_texts(texts: Any, what: str = "text") -> list[str | bytes]:
    """Check a request batch; returns it as a list of str/bytes.

    str is sent as UTF-8 text; bytes are sent as they are (REST: base64 in a
    `{"b64": ...}` object, since JSON can only carry valid Unicode strings).
    Empty strings are valid (the model encodes them). `what` names the items
    in errors ("text", or "text_pair" for the second texts of pairs).
    """
    if isinstance(texts, (str, bytes)):
        raise ServingError(
            f"{what}s must be a list of strings, got a single {type(texts).__name__}; "
            "wrap it in a list"
        )
    if texts is None:
        raise ServingError(f"no {what}s given")
    try:
        items = list(texts)
    except TypeError:
        raise ServingError(
            f"{what}s must be a list of strings, got {type(texts).__name__}"
        ) from None
    if not items:
        raise ServingError(f"no {what}s given")
    out: list[str | bytes] = []
    for i, text in enumerate(items):
        if isinstance(text, (bytearray, memoryview)):
            text = bytes(text)
        if isinstance(text, bytes):
            out.append(bytes(text))
        elif isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ServingError(
                    f"{what} at index {i} is not valid Unicode ({err.reason} at "
                    f"character {err.start}); pass it as bytes instead"
                ) from None
            out.append(str(text))
        else:
            raise ServingError(
                f"{what} at index {i} is {type(text).__name__}, not str or bytes"
            )
    return out


def validate_text_pairs(texts: Sequence[str | bytes], text_pairs: Any) -> list[str | bytes] | None:
    """None when `text_pairs` is None; else the second texts, checked like
    `validate_texts`, one per text of `texts` (already validated)."""
    if text_pairs is None:
        return None
    pairs = validate_texts(text_pairs, "text_pair")
    if len(pairs) != len(texts):
        raise ServingError(
            f"{len(pairs)} text_pairs for {len(texts)} texts: give one text_pair per text, in order"
        )
    return pairs


def task_outputs(outputs: Mapping[str, Any], task: str, task_names: Sequence[str]) -> dict[str, Any]:
    """The outputs of one task (`<task>_label`, `<task>_tags`, ...) and the
    common `num_words` / `truncated`, out of a signature's outputs for several
    tasks. A key belongs to the longest task name it starts with, so with
    tasks `pos` and `pos_fine`, `pos_fine_tags` is pos_fine's.
    """
    def owner(key: str) -> str | None:
        found = [name for name in task_names if key.startswith(f"{name}_")]
        return max(found, key=len) if found else None

    return {key: value for key, value in outputs.items()
            if key in META_KEYS or owner(key) == task}


def _primary_suffixes() -> dict[str, str]:
    """Task type -> the output suffix that identifies it (`_label`, `_tags`, ...)."""
    return {name: get_task_type(name).primary_output for name in task_type_names()}


def _task_types(tasks: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, str]:
    if tasks is None:
        found: dict[str, str] = {}
        for key in keys:
            for task_type, suffix in _primary_suffixes().items():
                # "T_labels" never ends with "_label": the suffixes cannot clash
                if key.endswith(suffix) and len(key) > len(suffix):
                    found[key[: -len(suffix)]] = task_type
        return {name: found[name] for name in sorted(found)}
    types: dict[str, str] = {}
    for name, spec in tasks.items():
        task_type = spec.get("type") if isinstance(spec, Mapping) else spec
        if task_type not in task_type_names():
            raise ServingError(
                f"task {name!r} has unknown type {task_type!r}; "
                f"expected one of {', '.join(task_type_names())}"
            )
        types[str(name)] = task_type
    # sorted like the inferred case, so JSON text is identical either way
    return {name: types[name] for name in sorted(types)}


def output_task_names(keys: Sequence[str]) -> list[str]:
    """The task names that output names show (`T_label`, `T_tags`, ...), sorted."""
    return list(_task_types(None, list(keys)))


def outputs_to_predictions(
    outputs: Mapping[str, Any], tasks: Mapping[str, Any] | None = None
) -> list[dict]:
    """Turn named, batch-major signature outputs into one per-task dict per text.

    Args:
      outputs: output name -> array (numpy, or nested lists as decoded from
        REST JSON), all with the batch as dim 0. Strings may be bytes or str.
      tasks: task name -> type ("classification", "tagging", "regression",
        "multilabel"), or the `tasks` mapping of keras_mtl.json (values with a
        "type" and optional "classes"). None: inferred from output names
        (`T_label`, `T_tags`, `T_value`, `T_labels`); other keys are ignored.

    Returns:
      one dict per text, tasks in name order then `_meta`; `_meta` holds `num_words`, `truncated` (pieces of
      the text were dropped) and `windows` (the windows a long text was read in) when the outputs have them. Tags are cut to `num_words` (trailing "" dropped when
      there is no `num_words`); multilabel `labels` drop the "" entries.
    """
    if not outputs:
        raise ServingError("the model returned no outputs")
    outputs = dict(outputs)
    sizes = {key: len(value) for key, value in outputs.items()}
    batch = next(iter(sizes.values()))
    if any(n != batch for n in sizes.values()):
        raise ServingError(
            "outputs do not share the batch dimension: "
            + ", ".join(f"{k}={n}" for k, n in sorted(sizes.items()))
        )
    types = _task_types(tasks, list(outputs))
    if not types:
        raise ServingError(
            "no task outputs found (expected names ending in "
            + ", ".join(_primary_suffixes().values())
            + "); got: "
            + ", ".join(sorted(outputs))
        )

    def need(task: str):
        def fetch(key: str) -> Any:
            if key not in outputs:
                raise ServingError(
                    f"task {task!r} ({types[task]}) needs output {key!r}; the model "
                    f"returned: {', '.join(sorted(outputs))}"
                )
            return outputs[key]

        return fetch

    heads = {}
    for task, task_type in types.items():
        spec = tasks.get(task) if tasks is not None else None
        classes = spec.get("classes") if isinstance(spec, Mapping) else None
        heads[task] = get_task_type(task_type)(task, [str(c) for c in classes or ()])

    num_words = outputs.get("num_words")
    truncated = outputs.get("truncated")
    windows = outputs.get("windows")  # exports from before long texts were read in windows lack it
    results: list[dict] = []
    for i in range(batch):
        n_words = int(scalar(num_words[i])) if num_words is not None else None
        pred: dict[str, Any] = {
            task: head.prediction(outputs, i, need(task), n_words) for task, head in heads.items()
        }
        meta: dict[str, Any] = {}
        if n_words is not None:
            meta["num_words"] = n_words
        if truncated is not None:
            meta["truncated"] = bool(scalar(truncated[i]))
        if windows is not None:
            meta["windows"] = int(scalar(windows[i]))
        pred["_meta"] = meta
        results.append(pred)
    return results
