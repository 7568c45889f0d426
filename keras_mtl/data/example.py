"""The record every reader produces and every pipeline consumes."""

import dataclasses
from typing import Optional, Union

# A label is one of:
#   classification: str                      (the class name)
#   multilabel:     tuple[str, ...]          (the set of class names)
#   regression:     float
#   tagging:        tuple[str, ...]          (one tag per whitespace word of `text`)
Label = Union[str, float, tuple]


@dataclasses.dataclass
class Example:
    """One text (or a pair of texts) and its labels, keyed by task name.

    `text` is the raw text the model sees. For tagging tasks it is the words
    joined by single spaces, and `labels[task]` has exactly one tag per
    `text.split()` word. `origin` is "path:line" for error messages.
    `text_pair` is the second text of a sentence-pair task (entailment,
    paraphrase, similarity), None for a single-text example; an example of a
    pair task always has one.
    """

    text: str
    labels: dict = dataclasses.field(default_factory=dict)
    origin: str = ""
    text_pair: Optional[str] = None

    @property
    def texts(self):
        """(text, text_pair): the key of identical examples (see `load.merge_by_text`)."""
        return (self.text, self.text_pair)

    @property
    def words(self):
        return self.text.split()
