"""Signature outputs -> per-task JSON, shared by local predict and every client.

The exported `serving_default` signature returns named, batch-major tensors
(see `keras_mtl.serving` for the full contract). `outputs_to_predictions`
turns them into one plain dict per text:

    {"sentiment": {"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}},
     "pos":       {"tags": ["B-NP", "I-NP"]},
     "score":     {"value": 0.3},
     "topics":    {"labels": ["a", "c"], "probabilities": {"a": 0.8, ...}},
     "_meta":     {"num_words": 2, "truncated": False}}

The same function is fed by a direct signature call (numpy arrays, strings as
bytes), by TF Serving REST (JSON lists, strings as str, float32 written as
their shortest decimal) and by gRPC (`tf.make_ndarray`), so answers are
identical whatever the path. Floats are normalised through float32 (the
contract's dtype) to the shortest decimal that round-trips, so 0.9 comes
back as 0.9 and not 0.8999999761581421 on every path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_mtl.errors import ServingError

TASK_TYPES = ("classification", "tagging", "regression", "multilabel")

# The output that identifies a task of each type (used to infer tasks).
PRIMARY_SUFFIX = {
    "classification": "_label",
    "tagging": "_tags",
    "regression": "_value",
    "multilabel": "_labels",
}
META_KEYS = ("num_words", "truncated")


def validate_texts(texts: Any) -> list[str | bytes]:
    """Check a request batch; returns it as a list of str/bytes.

    str is sent as UTF-8 text; bytes are sent as they are (REST: base64 in a
    `{"b64": ...}` object, since JSON can only carry valid Unicode strings).
    """
    if isinstance(texts, (str, bytes)):
        raise ServingError(
            f"texts must be a list of strings, got a single {type(texts).__name__}; "
            "wrap it in a list"
        )
    if texts is None:
        raise ServingError("no texts given")
    try:
        items = list(texts)
    except TypeError:
        raise ServingError(
            f"texts must be a list of strings, got {type(texts).__name__}"
        ) from None
    if not items:
        raise ServingError("no texts given")
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
                    f"text at index {i} is not valid Unicode ({err.reason} at "
                    f"character {err.start}); pass it as bytes instead"
                ) from None
            out.append(str(text))
        else:
            raise ServingError(
                f"text at index {i} is {type(text).__name__}, not str or bytes"
            )
    return out


def _as_str(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return _as_str(value.item())
    return str(value)


def _as_float(value: Any) -> float:
    """float32 value (numpy or JSON double) -> shortest round-trip decimal."""
    value = _scalar(value)
    try:
        return float(str(np.float32(value)))
    except (TypeError, ValueError):
        raise ServingError(f"expected a number, got {value!r}") from None


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0]
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def _as_list(row: Any) -> list:
    if isinstance(row, np.ndarray):
        return row.reshape(-1).tolist() if row.ndim != 1 else row.tolist()
    if isinstance(row, (list, tuple)):
        return list(row)
    return [row]


def _task_types(tasks: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, str]:
    if tasks is None:
        found: dict[str, str] = {}
        for key in keys:
            for task_type, suffix in PRIMARY_SUFFIX.items():
                # "T_labels" never ends with "_label": the suffixes cannot clash
                if key.endswith(suffix) and len(key) > len(suffix):
                    found[key[: -len(suffix)]] = task_type
        return {name: found[name] for name in sorted(found)}
    types: dict[str, str] = {}
    for name, spec in tasks.items():
        task_type = spec.get("type") if isinstance(spec, Mapping) else spec
        if task_type not in TASK_TYPES:
            raise ServingError(
                f"task {name!r} has unknown type {task_type!r}; "
                f"expected one of {', '.join(TASK_TYPES)}"
            )
        types[str(name)] = task_type
    # sorted like the inferred case, so JSON text is identical either way
    return {name: types[name] for name in sorted(types)}


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
      one dict per text, tasks in name order then `_meta`; `_meta` holds `num_words` and `truncated` when the
      outputs have them. Tags are cut to `num_words` (trailing "" dropped when
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
            + ", ".join(PRIMARY_SUFFIX.values())
            + "); got: "
            + ", ".join(sorted(outputs))
        )

    def need(key: str, task: str) -> Any:
        if key not in outputs:
            raise ServingError(
                f"task {task!r} ({types[task]}) needs output {key!r}; the model "
                f"returned: {', '.join(sorted(outputs))}"
            )
        return outputs[key]

    spec_classes: dict[str, list[str]] = {}
    if tasks is not None:
        for name, spec in tasks.items():
            if isinstance(spec, Mapping) and spec.get("classes"):
                spec_classes[str(name)] = [str(c) for c in spec["classes"]]

    num_words = outputs.get("num_words")
    truncated = outputs.get("truncated")
    results: list[dict] = []
    for i in range(batch):
        pred: dict[str, Any] = {}
        n_words = int(_scalar(num_words[i])) if num_words is not None else None
        for task, task_type in types.items():
            if task_type == "regression":
                pred[task] = {"value": _as_float(need(f"{task}_value", task)[i])}
            elif task_type == "tagging":
                tags = [_as_str(t) for t in _as_list(need(f"{task}_tags", task)[i])]
                if n_words is not None:
                    tags = tags[: max(n_words, 0)]
                else:
                    while tags and tags[-1] == "":
                        tags.pop()
                pred[task] = {"tags": tags}
            else:
                probs = [_as_float(p) for p in _as_list(need(f"{task}_probabilities", task)[i])]
                if f"{task}_classes" in outputs or task not in spec_classes:
                    classes = [_as_str(c) for c in _as_list(need(f"{task}_classes", task)[i])]
                else:
                    classes = spec_classes[task]
                if len(classes) != len(probs):
                    raise ServingError(
                        f"task {task!r}: {len(classes)} classes but "
                        f"{len(probs)} probabilities"
                    )
                prob_map = dict(zip(classes, probs))
                if task_type == "classification":
                    label = _as_str(_scalar(need(f"{task}_label", task)[i]))
                    pred[task] = {"label": label, "probabilities": prob_map}
                else:
                    labels = [
                        _as_str(x) for x in _as_list(need(f"{task}_labels", task)[i])
                    ]
                    pred[task] = {
                        "labels": [x for x in labels if x != ""],
                        "probabilities": prob_map,
                    }
        meta: dict[str, Any] = {}
        if n_words is not None:
            meta["num_words"] = n_words
        if truncated is not None:
            meta["truncated"] = bool(_scalar(truncated[i]))
        pred["_meta"] = meta
        results.append(pred)
    return results
