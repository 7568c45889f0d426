"""`regression`: one number per text (linear head, mean squared error).

Label: a float. Model output `<task>`: the value [B] (a Dense layer
`<task>_value` reshaped by the layer `<task>`). Serving: `<task>_value` [B].
JSON: {"value": v}.
"""

import numpy as np

from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.base import TaskType
from keras_mtl.tasks.values import as_float


@register_task_type
class Regression(TaskType):
    name = "regression"
    has_classes = False
    metrics = ("pearson", "spearman", "mse")
    default_metric = "pearson"
    primary_output = "_value"

    def encode_labels(self, examples, token_ids, word_starts):
        labels = np.zeros([len(examples)], np.float32)
        weights = np.zeros([len(examples)], np.float32)
        for i, ex in enumerate(examples):
            if self.task in ex.labels:
                labels[i], weights[i] = float(ex.labels[self.task]), 1.0
        return labels, weights

    def build_heads(self, h):
        import keras

        value = keras.layers.Dense(1, dtype="float32", name=f"{self.task}_value")(h)
        return {self.task: keras.layers.Reshape((), name=self.task)(value)}

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
