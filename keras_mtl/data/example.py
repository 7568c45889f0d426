"""The record every reader produces and every pipeline consumes."""

import dataclasses
from typing import Union

# A label is one of:
#   classification: str                      (the class name)
#   multilabel:     tuple[str, ...]          (the set of class names)
#   regression:     float
#   tagging:        tuple[str, ...]          (one tag per whitespace word of `text`)
Label = Union[str, float, tuple]


@dataclasses.dataclass
class Example:
    """One text and its labels, keyed by task name.

    `text` is the raw text the model sees. For tagging tasks it is the words
    joined by single spaces, and `labels[task]` has exactly one tag per
    `text.split()` word. `origin` is "path:line" for error messages.
    """

    text: str
    labels: dict = dataclasses.field(default_factory=dict)
    origin: str = ""

    @property
    def words(self):
        return self.text.split()
