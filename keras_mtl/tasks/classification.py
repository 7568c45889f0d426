"""`classification`: one class per text (softmax head, sparse cross-entropy).

Label: a class name. Model output `<task>`: probabilities [B, C]. Serving:
`<task>_label` [B], `<task>_probabilities` [B, C], `<task>_classes` [B, C].
JSON: {"label": ..., "probabilities": {class: p}}.
"""

import numpy as np

from keras_mtl.errors import ServingError
from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.base import TaskType
from keras_mtl.tasks.values import as_float, as_list, as_str, scalar


def dense_head(task, units, activation, h):
    """A float32 Dense head named `task` (float32 even under mixed precision:
    a stable softmax, and TF Serving's REST API cannot encode bfloat16)."""
    import keras

    return keras.layers.Dense(units, activation=activation, dtype="float32", name=task)(h)


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
    """A type whose head is one Dense layer with a score per class (`dense_head`,
    activation `head_activation`) and whose loss is `keras.losses.<loss_name>`."""

    head_activation = "softmax"
    loss_name = "SparseCategoricalCrossentropy"

    def build_heads(self, h):
        return {self.task: dense_head(self.task, len(self.classes), self.head_activation, h)}

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
