"""`classification`: one class per text (softmax head, sparse cross-entropy).

Label: a class name. Model output `<task>`: probabilities [B, C]. Serving:
`<task>_label` [B], `<task>_probabilities` [B, C], `<task>_classes` [B, C].
JSON: {"label": ..., "probabilities": {class: p}}.
"""

import numpy as np

from keras_mtl.errors import ServingError
from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.base import TaskType, task_head
from keras_mtl.tasks.labels import LabelError, check_allowed, class_name, json_type_name, tfds_class_name
from keras_mtl.tasks.values import as_float, as_list, as_str, scalar


def tiled_classes(head, batch):
    """The class names as a [batch, C] string tensor (every output is batch-major)."""
    import tensorflow as tf

    return tf.tile(head.class_names()[None, :], [batch, 1])


def probability_map(head, outputs, i, need):
    """{class: probability} of text `i`, classes from `<task>_classes` or else the metadata."""
    task = head.task
    probs = [as_float(p) for p in as_list(need(f"{task}_probabilities")[i])]
    if f"{task}_classes" in outputs or not head.classes:
        classes = [as_str(c) for c in as_list(need(f"{task}_classes")[i])]
    else:
        classes = head.classes
    if len(classes) != len(probs):
        raise ServingError(f"task {task!r}: {len(classes)} classes but {len(probs)} probabilities")
    return dict(zip(classes, probs))


class ClassScores(TaskType):
    """A type whose head outputs a score per class (`task_head`, activation
    `head_activation`) and whose loss is `keras.losses.<loss_name>`."""

    head_activation = "softmax"
    loss_name = "SparseCategoricalCrossentropy"

    @property
    def averaged_as(self):  # windows average their logits (keras_mtl.data.windows)
        return self.head_activation if self.head_activation in ("softmax", "sigmoid") else None

    def build_head(self, gate=False, dropout=0.0):
        return task_head(self.task, len(self.classes), self.head_activation, gate=gate, dropout=dropout)

    soft_loss_name = "CategoricalCrossentropy"  # on class distributions (distillation)

    def loss(self, reduction, soft=False):
        import keras

        name = self.soft_loss_name if soft else self.loss_name
        return getattr(keras.losses, name)(reduction=reduction, name=f"{self.task}_loss")


@register_task_type
class Classification(ClassScores):
    name = "classification"
    single_class = True
    min_classes = 2
    metrics = ("accuracy", "f1", "macro_f1", "mcc")
    default_metric = "accuracy"
    primary_output = "_label"
    cardinality = ("rows", "Is `label_column` pointing at the text?")
    options = ("positive_class",)  # the class the `f1` metric scores

    @classmethod
    def label_from_text(cls, text, column, separator=",", allowed=None):
        name = text.strip()
        if not name:
            raise LabelError(f"empty label in {column}")
        check_allowed([name], allowed)
        return name

    @classmethod
    def label_from_json(cls, value, field, allowed=None):
        name = class_name(value)
        if name is None:
            raise LabelError(
                f"field {field!r} must be a non-empty string or an integer for a {cls.name} task, "
                f"found {json_type_name(value)}: {value!r:.80}"
            )
        check_allowed([name], allowed)
        return name

    @classmethod
    def label_from_tfds(cls, value, names, split):
        if getattr(value, "ndim", 0) != 0:
            raise LabelError(f"a {cls.name} task needs a scalar label, found {value!r:.80}")
        return tfds_class_name(value, names, split)

    @classmethod
    def label_values(cls, label):
        return [label]

    def encode_labels(self, examples, token_ids, word_starts):
        index = {c: i for i, c in enumerate(self.classes)}
        labels = np.zeros([len(examples)], np.int32)
        weights = np.zeros([len(examples)], np.float32)
        for i, ex in enumerate(examples):
            if self.task in ex.labels and ex.labels[self.task] in index:
                labels[i], weights[i] = index[ex.labels[self.task]], 1.0
        return labels, weights

    def decode(self, outputs, row, word_starts=None):
        return self.classes[int(np.argmax(outputs[self.task][row]))]

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        y = heads[self.task]
        return {
            f"{self.task}_label": tf.gather(self.class_names(), tf.argmax(y, axis=-1)),
            f"{self.task}_probabilities": y,
            f"{self.task}_classes": tiled_classes(self, batch),
        }

    def prediction(self, outputs, i, need, num_words=None):
        probabilities = probability_map(self, outputs, i, need)
        label = as_str(scalar(need(f"{self.task}_label")[i]))
        return {"label": label, "probabilities": probabilities}
