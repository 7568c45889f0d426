"""The interface of a task type: what a task's YAML `type:` means.

The full contract, with an example, is docs/task_types.md. A type is a
`TaskType` subclass: class attributes describe the type, an instance is one
task of that type (`TaskType(task_name, classes)`) and does the work. Only
numpy is imported here: Keras and TensorFlow are imported inside the methods
that need them, so config validation and the serving clients stay light.
"""

import abc

import numpy as np


class TaskType(abc.ABC):
    """One task of one type; subclasses are registered with `register_task_type`."""

    # --- what the type is (class attributes) ---
    name = ""  # the YAML `type:` and the registry key
    token_level = False  # a label per word (heads read token states) or per text (pooled)
    has_classes = True  # labels name classes of a vocabulary (False: numeric labels)
    single_class = False  # exactly one class per example (`class_weights`, `adapt`)
    min_classes = 0  # classes the training data must show
    metrics = ()  # the `keras_mtl.metrics` names that apply, in report order
    default_metric = ""  # the metric used when the config names none
    primary_output = ""  # the serving output suffix that identifies the type ("_label")
    cardinality = None  # (unit, hint) of the too-many-labels warning; None: not checked

    def __init__(self, task, classes=()):
        self.task = task  # the task's name: it names outputs, layers and losses
        self.classes = list(classes or ())  # the label vocabulary, in class-id order

    # --- labels (numpy) ---

    @classmethod
    def label_values(cls, label):
        """The class names inside one `Example` label ([] for numeric labels)."""
        return []

    @abc.abstractmethod
    def encode_labels(self, examples, token_ids, word_starts):
        """(labels, weights [N] float32) of a split; weight 0 where an example has no label."""

    def dataset_columns(self, labels, idx, weights):
        """(y, w) of the examples `idx` for tf.data; token-level types give one array per example."""
        return labels[idx], weights

    def label_units(self, labels, idx, weights):
        """The label weight each example `idx` carries (examples; labelled tokens if token-level)."""
        return weights

    def batch_labels(self, labels, rows, weights, length):
        """(y, sample_weight) numpy arrays of `rows`, padded to `length` if token-level."""
        rows = np.asarray(rows)
        return np.asarray(labels)[rows], weights[rows].astype(np.float32)

    # --- model (keras) ---

    @property
    def output_names(self):
        """The model outputs of this task; the first is the one the loss is applied to."""
        return (self.task,)

    @abc.abstractmethod
    def build_heads(self, h):
        """{output name: float32 tensor} of the head(s) on the representation `h`."""

    @abc.abstractmethod
    def loss(self, reduction, soft=False):
        """The `keras.losses.Loss` on output `self.task`, named `<task>_loss`; with
        `soft`, on the distillation targets (`distillation_columns` mixed: class
        distributions instead of class ids)."""

    # --- distillation from a teacher (keras_mtl.distill) ---

    def teacher_target(self, outputs, row, word_starts=None):
        """A teacher model's target for example `row` from its numpy outputs (its class order)."""
        return np.asarray(outputs[self.task][row], np.float32)

    def teacher_target_from_json(self, prediction, classes):
        """A teacher export's target from its JSON prediction (`prediction()`), in `classes` order."""
        probabilities = prediction["probabilities"]
        return np.asarray([float(probabilities.get(c, 0.0)) for c in classes], np.float32)

    def teacher_blank(self, length):
        """The teacher target of an example without the task's label (weight 0: never trained on)."""
        return np.zeros([len(self.classes)], np.float32)

    def teacher_on_pieces(self, target, word_starts, length):
        """The target placed on the student's encoding of the example (per text: as it is)."""
        return np.asarray(target, np.float32)

    def distillation_columns(self, y, teacher):
        """`[gold | teacher]` on the last axis, from `dataset_columns`' y and the examples' teacher targets."""
        teacher = np.stack(teacher).astype(np.float32)  # [n, C]
        gold = np.eye(teacher.shape[-1], dtype=np.float32)[np.asarray(y)]
        return np.concatenate([gold, teacher], axis=-1)

    # --- predictions ---

    @abc.abstractmethod
    def decode(self, outputs, row, word_starts=None):
        """One example's label (the `Example.labels` format) from the model's numpy outputs."""

    @abc.abstractmethod
    def serving_outputs(self, heads, batch, word_starts, length):
        """TF ops: {signature output name: tensor [batch, ...]} from the float32 `heads`."""

    @abc.abstractmethod
    def prediction(self, outputs, i, need, num_words=None):
        """The JSON dict of text `i` from signature outputs; `need(key)` fetches one or fails."""

    # --- shared helpers ---

    def class_names(self):
        """The classes as a TF string constant ([""] when there are none)."""
        import tensorflow as tf

        return tf.constant(self.classes or [""], tf.string)
