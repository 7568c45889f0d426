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
    def loss(self, reduction):
        """The `keras.losses.Loss` on output `self.task`, named `<task>_loss`."""

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
