"""`multilabel`: any set of classes per text (sigmoid head, binary cross-entropy).

Label: a tuple of class names. Model output `<task>`: probabilities [B, C];
a class is predicted when its probability is above `THRESHOLD`. Serving:
`<task>_labels` [B, C] ("" where not predicted), `<task>_probabilities`,
`<task>_classes`. JSON: {"labels": [...], "probabilities": {class: p}}.
"""

import numpy as np

from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.classification import ClassScores, probability_map, tiled_classes
from keras_mtl.tasks.labels import LabelError, check_allowed, class_name, json_type_name, tfds_class_name, unique
from keras_mtl.tasks.values import as_list, as_str

THRESHOLD = 0.5


@register_task_type
class Multilabel(ClassScores):
    name = "multilabel"
    min_classes = 2
    metrics = ("accuracy", "macro_f1", "micro_f1")
    default_metric = "micro_f1"
    primary_output = "_labels"
    head_activation = "sigmoid"
    loss_name = "BinaryCrossentropy"
    soft_loss_name = "BinaryCrossentropy"  # soft targets: the same loss

    def distillation_columns(self, y, teacher):
        return np.concatenate([np.asarray(y, np.float32), np.stack(teacher).astype(np.float32)], axis=-1)

    @classmethod
    def label_from_text(cls, text, column, separator=",", allowed=None):
        """The labels between `separator`s, blank ones dropped: an empty field has none."""
        labels = unique(part.strip() for part in text.strip().split(separator) if part.strip())
        check_allowed(labels, allowed)
        return labels

    @classmethod
    def label_from_json(cls, value, field, allowed=None):
        if not isinstance(value, list):
            raise LabelError(
                f"field {field!r} must be a list of labels for a {cls.name} task, "
                f"found {json_type_name(value)}: {value!r:.80}"
            )
        names = []
        for item in value:
            name = class_name(item)
            if name is None:
                raise LabelError(
                    f"field {field!r} must hold non-empty strings or integers, "
                    f"found {json_type_name(item)}: {item!r:.80}"
                )
            names.append(name)
        labels = unique(names)
        check_allowed(labels, allowed)
        return labels

    @classmethod
    def label_from_tfds(cls, value, names, split):
        if getattr(value, "ndim", 0) != 1:
            raise LabelError(f"a {cls.name} task needs a sequence label feature, found {value!r:.80}")
        return unique(tfds_class_name(item, names, split) for item in value)

    @classmethod
    def label_values(cls, label):
        return list(label)

    def encode_labels(self, examples, token_ids, word_starts):
        index = {c: i for i, c in enumerate(self.classes)}
        labels = np.zeros([len(examples), len(self.classes)], np.float32)
        weights = np.zeros([len(examples)], np.float32)
        for i, ex in enumerate(examples):
            if self.task in ex.labels:
                weights[i] = 1.0
                for c in ex.labels[self.task]:
                    if c in index:
                        labels[i, index[c]] = 1.0
        return labels, weights

    def decode(self, outputs, row, word_starts=None):
        return tuple(c for c, p in zip(self.classes, outputs[self.task][row]) if p > THRESHOLD)

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        y = heads[self.task]
        tiled = tiled_classes(self, batch)
        return {
            f"{self.task}_labels": tf.where(y > THRESHOLD, tiled, tf.fill(tf.shape(tiled), "")),
            f"{self.task}_probabilities": y,
            f"{self.task}_classes": tiled,
        }

    def prediction(self, outputs, i, need, num_words=None):
        probabilities = probability_map(self, outputs, i, need)
        labels = [as_str(x) for x in as_list(need(f"{self.task}_labels")[i])]
        return {"labels": [x for x in labels if x != ""], "probabilities": probabilities}
