"""Copying a trained network's weights into a new one, matched by role.

A new network for other tasks (`adapt`: a new task from K examples) or for
one of the trained network's tasks (`finetune`: MT-DNN's second stage)
starts from the trained shared encoder (the `SharedEncoder` layer, whatever
Keras named it and the keras-hub backbone inside), the layers shared across
tasks (mixture of experts, task relation) and, for a task of both networks,
that task's own layers (pooling, head) and rows of the per-task tables.
"""

import keras
import keras_hub
import numpy as np

from keras_mtl.layers import SharedEncoder, TaskHead


def is_task_layer(name, task_names):
    """Whether a layer belongs to one task (its head, pooling, gate, dropout)."""
    return any(name == t or name.startswith(f"{t}_") for t in task_names)


def _of_class(model, cls):
    """The top-level layers of `model` that are a `cls`."""
    return [layer for layer in model.layers if isinstance(layer, cls)]


def transfer_weights(source, target, source_tasks, target_tasks):
    """Copy the shared layers of `source` into `target`, matched by role
    (and the layers of the tasks they share: fine-tuning a multi-task network
    on one of its tasks).

    The shared encoder is one role: the `SharedEncoder` layer of `target`
    takes the weights of the `SharedEncoder` of `source`, whatever their
    names (and whatever Keras named the keras-hub backbone inside).
    Every other layer (the mixture of experts, the task relation layer) is
    matched by name and class.

    A network saved before the encoder was one layer has the encoder's
    layers at its top level (`embedding`, `encoder_0`, `adapter_0`, a preset's
    `transformer_layer_0`, ..., or a keras-hub Backbone called as a whole):
    those are copied into the layers of the target's encoder of the same
    name and class (a Backbone into its Backbone).

    A weight of the same shape is copied. A per-task table (first axis =
    number of source tasks in `source`, = number of target tasks in `target`)
    takes the rows of the target tasks where every target task is a source
    task (fine-tuning), and otherwise starts from the mean over the source
    tasks (a new task). Task-specific layers (named after a task: its head,
    `<task>_pool`, ...) are copied by name for a task of both networks and
    left as initialized for the others.

    Returns:
        (names of the copied layers, as in `source`; names of the layers of
        `target` left as initialized).
    """
    n_src, n_tgt = len(source_tasks), len(target_tasks)
    # per-task tables: the target tasks' own rows when the source has them all, else the mean
    rows = [list(source_tasks).index(t) for t in target_tasks] if set(target_tasks) <= set(source_tasks) else None
    both = [t for t in target_tasks if t in source_tasks]  # tasks whose own layers are copied
    names = {layer.name: layer for layer in source.layers}
    src_encoders, tgt_encoders = _of_class(source, SharedEncoder), _of_class(target, SharedEncoder)
    src_backbones = _of_class(source, keras_hub.models.Backbone)
    tasks = list(source_tasks) + list(target_tasks)

    def counterpart(layer):
        """The layer of `source` whose weights `layer` of `target` takes, or None."""
        if isinstance(layer, keras_hub.models.Backbone):  # a Backbone by role (Keras numbers their names)
            return src_backbones[0] if len(src_backbones) == 1 else None
        src = names.get(layer.name)
        return src if src is not None and type(src).__name__ == type(layer).__name__ else None

    pairs = []  # (layer of target, its counterpart in source or None)
    heads = []  # (TaskHead of target, [(its part, the part's counterpart in an older source)])
    for layer in target.layers:
        if not layer.weights:
            continue
        # The encoder first: `shared_encoder` looks like a layer of a task named `shared`.
        if isinstance(layer, SharedEncoder) and len(tgt_encoders) == 1:
            if len(src_encoders) == 1:  # the shared encoder, by role
                pairs.append((layer, src_encoders[0]))
            elif not src_encoders:  # a network saved before the encoder was one layer: by part
                parts = [(part, counterpart(part)) for part in layer.layers_in_order() if part.weights]
                pairs += parts if any(src is not None for _, src in parts) else [(layer, None)]
            else:
                pairs.append((layer, None))
        elif is_task_layer(layer.name, both):  # a task of both networks: its own layers
            src = counterpart(layer)
            parts = _old_head_parts(layer, names) if src is None and isinstance(layer, TaskHead) else None
            if parts:  # a network saved before heads were TaskHead layers: the head by part
                heads.append((layer, parts))
            else:
                pairs.append((layer, src))
        elif is_task_layer(layer.name, tasks):
            pairs.append((layer, None))
        else:
            pairs.append((layer, counterpart(layer)))

    copied, fresh = [], []
    for layer, src in pairs:
        if src is not None and _copy_weights(src, layer, n_src, n_tgt, rows):
            copied.append(src.name)
        else:
            fresh.append(layer.name)
    for head, parts in heads:
        done = [_copy_weights(src, part, n_src, n_tgt, rows) for part, src in parts]
        (copied if all(done) else fresh).append(head.name)
    return copied, fresh


def _old_head_parts(head, names):
    """The parts of `head` (a TaskHead) and their counterparts in a network saved before
    heads were TaskHead layers, where a task's head was top-level layers: `<task>_gate`,
    `<task>_dropout` and a Dense `<task>` (regression: a Dense `<task>_value`, reshaped).
    None when the source has no such Dense (or no gate where the head has one)."""
    output = names.get(head.name)
    if not isinstance(output, keras.layers.Dense):
        output = names.get(f"{head.name}_value")
    if not isinstance(output, keras.layers.Dense):
        return None
    parts = [(head.output_dense, output)]
    if getattr(head, "task_gate", None) is not None:
        gate = names.get(f"{head.name}_gate")
        if gate is None:
            return None
        parts.append((head.task_gate, gate))
    return parts


def _copy_weights(src, layer, n_src, n_tgt, rows=None):
    """Set the weights of `layer` from those of `src` (per-task tables: the `rows`
    of the source tasks, or their mean); False (nothing set) when they do not match."""
    old, new = src.get_weights(), layer.get_weights()
    if len(old) != len(new):
        return False
    values = []
    for o, n in zip(old, new):
        if o.shape == n.shape:
            values.append(o)
        elif o.ndim == n.ndim and o.shape[0] == n_src and n.shape[0] == n_tgt and o.shape[1:] == n.shape[1:]:
            if rows is not None:
                values.append(o[rows])
            else:
                values.append(np.repeat(o.mean(axis=0, keepdims=True), n_tgt, axis=0).astype(o.dtype))
        else:
            return False
    layer.set_weights(values)
    return True
