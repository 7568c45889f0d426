"""`tagging`: one tag per word (softmax over each token state).

Label: a tuple of tags, one per whitespace word. Encoded as one int32 array
per encoded row over its word pieces: the tag id on the first piece of each
word the row reads (a long text's window: the words keras_mtl.data.windows
gives it), -1 elsewhere (and for unseen tags). Model output `<task>`:
probabilities [B, L, C]. Serving: `<task>_tags` [B, W] ("" past each row's
words). JSON: {"tags": [...]}, cut to the text's word count.
"""

import numpy as np

from keras_mtl.tasks import register_task_type
from keras_mtl.tasks.classification import ClassScores
from keras_mtl.tasks.values import as_list, as_str


@register_task_type
class Tagging(ClassScores):
    name = "tagging"
    token_level = True
    min_classes = 1
    metrics = ("token_accuracy", "span_f1", "span_precision", "span_recall", "span_f1_iobes")
    default_metric = "token_accuracy"
    primary_output = "_tags"
    cardinality = ("tokens", "Is `label_column` pointing at the words?")

    @classmethod
    def label_values(cls, label):
        return list(label)

    def encode_labels(self, examples, token_ids, word_starts):
        index = {c: i for i, c in enumerate(self.classes)}
        labels, weights = [], np.zeros([len(examples)], np.float32)
        for i, ex in enumerate(examples):
            tags = np.full([len(token_ids[i])], -1, np.int32)
            if self.task in ex.labels:
                weights[i] = 1.0
                for pos, tag in zip(word_starts[i], ex.labels[self.task]):
                    if pos < len(tags) and tag in index:
                        tags[pos] = index[tag]
            labels.append(tags)
        return labels, weights

    def dataset_columns(self, labels, idx, weights):
        rows = [labels[i] for i in idx]
        y = [np.maximum(a, 0) for a in rows]
        w = [((a >= 0) * wi).astype(np.float32) for a, wi in zip(rows, weights)]
        return y, w

    def teacher_target(self, outputs, row, word_starts=None):
        """Per word (on its first piece; words cut off by truncation are left out): [W, C]."""
        probabilities = np.asarray(outputs[self.task][row], np.float32)
        starts = np.asarray(word_starts, np.int64)
        return probabilities[starts[starts < len(probabilities)]]

    def teacher_target_from_json(self, prediction, classes):
        index = {c: i for i, c in enumerate(classes)}
        target = np.zeros([len(prediction["tags"]), len(classes)], np.float32)
        for w, tag in enumerate(prediction["tags"]):
            if tag in index:  # an export answers tags, not probabilities: one-hot
                target[w, index[tag]] = 1.0
        return target

    def teacher_blank(self, length):
        return np.zeros([length, len(self.classes)], np.float32)

    def teacher_on_pieces(self, target, word_starts, length):
        pieces = np.zeros([length, len(self.classes)], np.float32)
        for w, pos in enumerate(np.asarray(word_starts)[: len(target)]):
            if pos < length:
                pieces[pos] = target[w]
        return pieces

    def distillation_columns(self, y, teacher):
        return [np.concatenate([np.eye(t.shape[-1], dtype=np.float32)[np.asarray(a)], t], axis=-1)
                for a, t in zip(y, teacher)]

    def label_units(self, labels, idx, weights):
        return np.asarray([float((labels[i] >= 0).sum()) for i in idx], np.float64) * weights

    def batch_labels(self, labels, rows, weights, length):
        y = np.zeros([len(rows), length], np.int32)
        sw = np.zeros([len(rows), length], np.float32)
        for r, i in enumerate(rows):
            a = np.asarray(labels[i])[:length]
            y[r, : len(a)] = np.maximum(a, 0)
            sw[r, : len(a)] = (a >= 0).astype(np.float32) * weights[i]
        return y, sw

    def decode(self, outputs, row, word_starts=None):
        output = outputs[self.task][row]
        length = output.shape[0]
        return tuple(self.classes[int(np.argmax(output[p]))] if p < length else "" for p in word_starts)

    def serving_outputs(self, heads, batch, word_starts, length):
        import tensorflow as tf

        predicted = tf.argmax(heads[self.task], axis=-1, output_type=tf.int32)  # [B, L]
        valid = tf.logical_and(word_starts >= 0, word_starts < length)
        picked = tf.gather(predicted, tf.clip_by_value(word_starts, 0, length - 1), batch_dims=1)
        tags = tf.gather(self.class_names(), picked)
        return {f"{self.task}_tags": tf.where(valid, tags, tf.fill(tf.shape(tags), ""))}

    def prediction(self, outputs, i, need, num_words=None):
        tags = [as_str(t) for t in as_list(need(f"{self.task}_tags")[i])]
        if num_words is not None:
            tags = tags[: max(num_words, 0)]
        else:
            while tags and tags[-1] == "":
                tags.pop()
        return {"tags": tags}
