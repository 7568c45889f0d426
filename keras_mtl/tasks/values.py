"""Signature output values -> plain JSON values, whatever path they came by.

A direct signature call gives numpy arrays (strings as bytes), TF Serving
REST gives JSON lists (strings as str, float32 as their shortest decimal) and
gRPC gives `tf.make_ndarray` arrays; these helpers read all three the same.
Floats go through float32 (the contract's dtype) to the shortest decimal
that round-trips, so 0.9 comes back as 0.9 on every path.
"""

from typing import Any

import numpy as np

from keras_mtl.errors import ServingError


def as_str(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return as_str(value.item())
    return str(value)


def as_float(value: Any) -> float:
    """float32 value (numpy or JSON double) -> shortest round-trip decimal."""
    value = scalar(value)
    try:
        return float(str(np.float32(value)))
    except (TypeError, ValueError):
        raise ServingError(f"expected a number, got {value!r}") from None


def scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0]
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def as_list(row: Any) -> list:
    if isinstance(row, np.ndarray):
        return row.reshape(-1).tolist() if row.ndim != 1 else row.tolist()
    if isinstance(row, (list, tuple)):
        return list(row)
    return [row]
