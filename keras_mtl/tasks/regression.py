"""`regression`: one number per text (linear head, mean squared error).

Label: a float. Model output `<task>`: the value [B] (the head `<task>`, a
`TaskHead` with one squeezed unit). Serving: `<task>_value` [B].
JSON: {"value": v}.
"""

import math

import numpy as np

from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.base import TaskType, task_head
from keras_mtl.tasks.labels import LabelError, json_type_name
from keras_mtl.tasks.values import as_float


@register_task_type
class Regression(TaskType):
    name = "regression"
    has_classes = False
    metrics = ("pearson", "spearman", "mse")
    default_metric = "pearson"
    primary_output = "_value"

    @classmethod
    def label_from_text(cls, text, column, separator=",", allowed=None):
        text = text.strip()
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise LabelError(f"{cls.name} label {text!r} in {column} is not a finite number")
        return value

    @classmethod
    def label_from_json(cls, value, field, allowed=None):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LabelError(
                f"field {field!r} must be a number for a {cls.name} task, found {json_type_name(value)}: {value!r:.80}"
            )
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise LabelError(f"field {field!r} is not a finite number")
        return number

    @classmethod
    def label_from_tfds(cls, value, names, split):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise LabelError(f"the label {value!r:.80} is not a number ({cls.name})") from None

    @classmethod
    def unlabelled_split(cls, labels):
        """TFDS stores -1 for the labels of a split without public labels."""
        return all(label == -1.0 for label in labels)

    def encode_labels(self, examples, token_ids, word_starts):
        labels = np.zeros([len(examples)], np.float32)
        weights = np.zeros([len(examples)], np.float32)
        for i, ex in enumerate(examples):
            if self.task in ex.labels:
                labels[i], weights[i] = float(ex.labels[self.task]), 1.0
        return labels, weights

    def build_head(self, gate=False, dropout=0.0):
        return task_head(self.task, 1, squeeze=True, gate=gate, dropout=dropout)

    def loss(self, reduction, soft=False):
        import keras

        return keras.losses.MeanSquaredError(reduction=reduction, name=f"{self.task}_loss")  # a mixed value when soft

    def teacher_blank(self, length):
        return np.zeros([], np.float32)

    def teacher_target_from_json(self, prediction, classes):
        return np.asarray(float(prediction["value"]), np.float32)

    def distillation_columns(self, y, teacher):
        return np.stack([np.asarray(y, np.float32), np.asarray(teacher, np.float32).reshape(-1)], axis=-1)

    def decode(self, outputs, row, word_starts=None):
        return float(outputs[self.task][row])

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        return {f"{self.task}_value": tf.reshape(heads[self.task], [batch])}

    def prediction(self, outputs, i, need, num_words=None):
        return {"value": as_float(need(f"{self.task}_value")[i])}
