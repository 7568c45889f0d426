"""Task types: one module per YAML `type:`, behind `TaskType` (docs/task_types.md).

    tasks:
      - name: pos
        type: tagging       # <- keras_mtl.tasks.tagging.Tagging

A type is a `TaskType` subclass registered with `@register_task_type`; the
built-in ones are `classification`, `multilabel`, `regression` and
`tagging`. `get_task_type(name)` gives the class, `for_task(task, classes)`
one task's object, and `TASK_TYPES` the registered names (sorted). A type
reads the labels of data files itself (`label_from_text`, ...), raising
`LabelError`. Importing this package imports numpy only.
"""

import importlib
import pkgutil

from keras_mtl.tasks.base import TaskType
from keras_mtl.tasks.labels import LabelError

_TYPES = {}


def register_task_type(cls):
    """Class decorator: registers a `TaskType` subclass under `cls.name`."""
    if not (isinstance(cls, type) and issubclass(cls, TaskType)) or not cls.name:
        raise TypeError(f"register_task_type takes a TaskType subclass with a `name`, got {cls!r}")
    _TYPES[cls.name] = cls
    return cls


def task_type_names():
    """The registered type names, sorted."""
    return tuple(sorted(_TYPES))


def get_task_type(name):
    """The `TaskType` subclass registered as `name`; ValueError naming the known ones."""
    if name not in _TYPES:
        raise ValueError(f"unknown task type {name!r}; expected one of {', '.join(task_type_names())}")
    return _TYPES[name]


def for_task(task, classes=()):
    """The task type object of one task (anything with `.name` and `.type`, e.g. a TaskConfig)."""
    return get_task_type(task.type)(task.name, classes)


def __getattr__(name):
    if name == "TASK_TYPES":  # always the registry's current names
        return task_type_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _import_types():
    # Every module of this package is imported, and its types register
    # themselves: a new type is one new module.

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_types()

__all__ = [
    "TASK_TYPES",
    "LabelError",
    "TaskType",
    "for_task",
    "get_task_type",
    "register_task_type",
    "task_type_names",
]
