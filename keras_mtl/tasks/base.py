"""The interface of a task type: what a task's YAML `type:` means.

The full contract, with an example, is docs/task_types.md. A type is a
`TaskType` subclass: class attributes describe the type, an instance is one
task of that type (`TaskType(task_name, classes)`) and does the work. Only
numpy is imported here: Keras and TensorFlow are imported inside the methods
that need them, so config validation and the serving clients stay light.
"""

import abc

import numpy as np

from keras_mtl.tasks.labels import LabelError

_TINY = 1e-30  # probabilities below it count as it when averaged as logits
_EPSILON = 1e-7  # sigmoid probabilities are kept below 1 - it


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
    options = ()  # the task settings (TaskConfig fields) only this type takes, e.g. ("positive_class",)
    layer_suffixes = {}  # {suffix: what}: model layers `<task>_<suffix>` the head adds beside `<task>`

    def __init__(self, task, classes=()):
        self.task = task  # the task's name: it names outputs, layers and losses
        self.classes = list(classes or ())  # the label vocabulary, in class-id order

    # --- labels from data files (readers) ---
    # Each raises `LabelError` (keras_mtl.tasks.labels) with a one-line message
    # that the reader prefixes with where the label is (`path:line: `). A type
    # that no reader reads that way keeps the default: a LabelError saying so.

    @classmethod
    def label_from_text(cls, text, column, separator=",", allowed=None):
        """The `Example` label of a TSV/CSV label field.

        Args:
            text: str. The field as read (not yet stripped).
            column: str. The field in words, for messages ("column 'label'").
            separator: str. Separates several labels in one field (multilabel).
            allowed: list of str, or None. The labels allowed (the reader
                option `labels`); None: any.
        """
        raise LabelError(f"a {cls.name} label cannot be read from a text field ({column})")

    @classmethod
    def label_from_json(cls, value, field, allowed=None):
        """The `Example` label of a decoded JSON value (`jsonl`).

        Args:
            value: the decoded value (str, int, float, bool, list, dict or None).
            field: str. The key it was read from, for messages.
            allowed: list of str, or None. As for `label_from_text`.
        """
        raise LabelError(f"a {cls.name} label cannot be read from a JSON field ({field!r})")

    @classmethod
    def label_from_tfds(cls, value, names, split):
        """The `Example` label of a TFDS label feature's decoded (numpy) value.

        Args:
            value: a numpy scalar or array (bytes for strings).
            names: list of str, or None. The `ClassLabel` names of the
                feature (None: not a `ClassLabel`).
            split: str. The TFDS split read, for messages.
        """
        raise LabelError(f"a {cls.name} label cannot be read from a TFDS feature")

    @classmethod
    def unlabelled_split(cls, labels):
        """Whether a whole split's labels are TFDS's placeholder for "no label"
        (a type whose placeholder is a valid label, such as -1.0, checks it here)."""
        return False

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
        """The model outputs of this task: its head's, named after the task (export reads them)."""
        return (self.task,)

    @abc.abstractmethod
    def build_head(self, gate=False, dropout=0.0):
        """The task's head: a serializable Keras layer named `self.task` that maps
        the task's representation (pooled [B, H], or token states [B, L, H]) to
        its float32 output (`layers.TaskHead` for the built-in types).

        Args:
            gate: bool. A task gate before the dropout (`model.task_gates`).
            dropout: float. The dropout rate on the representation.
        """

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

    # --- long texts read in windows (keras_mtl.data.windows) ---

    averaged_as = None  # how outputs of several windows average: "softmax" / "sigmoid" (as logits) or None (values)

    def merge_windows(self, outputs):
        """One output from a text's (or, tagging, a word's) outputs in several windows.

        numpy [K, ...] -> [...]: one window's output as it is; else the mean
        of the logits (`averaged_as`: log-probabilities for a softmax, whose
        normalizer is one constant per window; log-odds for a sigmoid) put
        through the activation again, or the mean value.
        """
        outputs = np.asarray(outputs, np.float32)
        if len(outputs) == 1:
            return outputs[0]
        if self.averaged_as == "softmax":
            z = np.log(np.maximum(outputs, _TINY)).mean(axis=0)
            e = np.exp(z - z.max(axis=-1, keepdims=True))
            return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        if self.averaged_as == "sigmoid":
            p = np.clip(outputs, _TINY, 1.0 - _EPSILON)
            z = (np.log(p) - np.log1p(-p)).mean(axis=0)
            return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return outputs.mean(axis=0).astype(np.float32)

    def merge_windows_tf(self, values, segments, count):
        """TF ops: `merge_windows` of groups of rows. values [M, ...] float32, segments [M]
        int32 (< count) -> [count, ...]; a group of one row gives that row exactly."""
        import tensorflow as tf

        n = tf.math.unsorted_segment_sum(tf.ones_like(segments, tf.float32), segments, count)
        n = tf.reshape(n, tf.concat([[count], tf.ones([tf.rank(values) - 1], tf.int32)], axis=0))
        total = tf.math.unsorted_segment_sum(values, segments, count)
        if self.averaged_as == "softmax":
            z = tf.math.unsorted_segment_sum(tf.math.log(tf.maximum(values, _TINY)), segments, count)
            merged = tf.nn.softmax(z / tf.maximum(n, 1.0), axis=-1)
        elif self.averaged_as == "sigmoid":
            p = tf.clip_by_value(values, _TINY, 1.0 - _EPSILON)
            z = tf.math.unsorted_segment_sum(tf.math.log(p) - tf.math.log1p(-p), segments, count)
            merged = tf.sigmoid(z / tf.maximum(n, 1.0))
        else:
            merged = total / tf.maximum(n, 1.0)
        return tf.where(tf.equal(n, 1.0), total, merged)

    # --- predictions ---

    @abc.abstractmethod
    def decode(self, outputs, row, word_starts=None):
        """One example's label (the `Example.labels` format) from the model's numpy outputs."""

    @abc.abstractmethod
    def serving_outputs(self, heads, batch, word_starts, length):
        """TF ops: {signature output name: tensor [batch, ...]} from the float32 `heads`.

        A token-level type gets `heads` per word ([batch, W, ...]: each word's
        first piece, read in its window), `word_starts` [batch, W] (`w`, or -1
        past a text's words) and `length` W; a sentence-level type gets one
        row per text and None for both.
        """

    @abc.abstractmethod
    def prediction(self, outputs, i, need, num_words=None):
        """The JSON dict of text `i` from signature outputs; `need(key)` fetches one or fails."""

    # --- shared helpers ---

    def class_names(self):
        """The classes as a TF string constant ([""] when there are none)."""
        import tensorflow as tf

        return tf.constant(self.classes or [""], tf.string)


def task_head(task, units, activation=None, squeeze=False, gate=False, dropout=0.0):
    """A `layers.TaskHead` named `task`: [gate] -> dropout -> a float32 Dense output
    (float32 even under mixed precision: a stable softmax, and TF Serving's REST
    API cannot encode bfloat16)."""
    # Imported here, not at the top: keras_mtl.tasks is imported by config
    # validation and the serving clients, which must not load Keras.
    from keras_mtl.layers.task_head import TaskHead

    return TaskHead(units, activation=activation, squeeze=squeeze, gate=gate, dropout=dropout, name=task)
