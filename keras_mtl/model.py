"""Config -> functional multi-output keras.Model (keras + keras.ops only).

    token_ids, padding_mask, [task_ids]
      -> keras-hub TokenAndPositionEmbedding (+ task embedding / task token)
      -> N x keras-hub TransformerEncoder (+ per-task adapters)
      -> [MMoE experts] -> per task: pooled (sentence) or token states (tagging)
      -> [task relation across sentence tasks] -> [task gate] -> head
    outputs: {task name: probabilities (or value)}, heads in float32.
"""

import keras
from keras import ops

from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.layers.task_embedding import TaskEmbedding


def needs_task_ids(model_cfg):
    """Whether the model takes a `task_ids` input (conditioning or adapters)."""
    return model_cfg.task_conditioning != "none" or model_cfg.adapter_dim > 0


def encodes_per_task(model_cfg):
    """Whether an example is encoded once per task (the encoder sees the task)."""
    return needs_task_ids(model_cfg)


def build_model(config, classes, vocabulary_size, backbone=None):
    """Build the multi-task model.

    Args:
        config: ExperimentConfig.
        classes: dict task -> list of class names.
        vocabulary_size: int. Size of the WordPiece vocabulary.
        backbone: optional keras-hub Backbone used as the shared encoder
            (a pretrained preset); its outputs replace the embedding and
            encoder stack built here.
    """
    import keras_hub

    m, tasks = config.model, config.tasks
    num_tasks = len(tasks)

    # === Inputs ===
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    task_ids = None
    if needs_task_ids(m):
        task_ids = keras.Input(shape=(), dtype="int32", name="task_ids")
        inputs["task_ids"] = task_ids

    # === Shared encoder ===
    mask = padding_mask
    prepend = m.task_conditioning == "token"
    if backbone is not None:
        x = _backbone_sequence(backbone, token_ids, padding_mask)
        hidden = x.shape[-1]
        if m.task_conditioning == "embedding":
            x = TaskEmbedding(num_tasks, hidden, name="task_embedding")(x, task_ids)
        elif prepend:
            x = TaskEmbedding(num_tasks, hidden, mode="prepend", name="task_token")(x, task_ids)
            mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
    else:
        hidden = m.hidden_dim
        x = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=m.max_sequence_length + 1,
            embedding_dim=hidden,
            name="embedding",
        )(token_ids)
        if m.task_conditioning == "embedding":
            x = TaskEmbedding(num_tasks, hidden, name="task_embedding")(x, task_ids)
        elif prepend:
            x = TaskEmbedding(num_tasks, hidden, mode="prepend", name="task_token")(x, task_ids)
            mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)
        x = keras.layers.Dropout(m.dropout, name="embedding_dropout")(x)
    for i in range(m.num_layers if backbone is None else 0):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=m.intermediate_dim,
            num_heads=m.num_heads,
            dropout=m.dropout,
            activation="gelu",
            name=f"encoder_{i}",
        )(x, padding_mask=mask)
        if m.adapter_dim:
            from keras_mtl.layers.task_adapter import TaskAdapter

            x = TaskAdapter(num_tasks, m.adapter_dim, name=f"adapter_{i}")(x, task_ids)

    # === Per-task representations ===
    if m.num_experts:
        from keras_mtl.layers.mixture_of_experts import MixtureOfExperts

        per_task_states = MixtureOfExperts(
            num_experts=m.num_experts, num_tasks=num_tasks, expert_dim=m.intermediate_dim, name="experts"
        )(x)
    else:
        per_task_states = [x] * num_tasks

    reps = {}
    for t, task in enumerate(tasks):
        states = per_task_states[t]
        if task.type == "tagging":
            reps[task.name] = states[:, 1:, :] if prepend else states
        elif m.pooling == "attention":
            from keras_mtl.layers.task_attention import TaskAttentionPooling

            reps[task.name] = TaskAttentionPooling(
                num_heads=max(1, m.num_heads), name=f"{task.name}_attention_pool"
            )(states, padding_mask=mask)
        else:
            reps[task.name] = SequencePooling(m.pooling, index=0, name=f"{task.name}_pool")(
                states, padding_mask=mask
            )

    sentence_tasks = [t.name for t in tasks if t.type != "tagging"]
    if m.task_relation and len(sentence_tasks) > 1:
        from keras_mtl.layers.task_relation import TaskRelation

        stacked = ops.stack([reps[n] for n in sentence_tasks], axis=1)
        related = TaskRelation(num_heads=max(1, m.num_heads), name="task_relation")(stacked)
        for j, n in enumerate(sentence_tasks):
            reps[n] = related[:, j, :]

    # === Heads ===
    outputs = {}
    for task in tasks:
        h = reps[task.name]
        if m.task_gates:
            from keras_mtl.layers.task_gate import TaskGate

            h = TaskGate(name=f"{task.name}_gate")(h)
        h = keras.layers.Dropout(m.dropout, name=f"{task.name}_dropout")(h)
        outputs[task.name] = _head(task, len(classes[task.name]), h)
    return keras.Model(inputs=inputs, outputs=outputs, name="multitask_transformer")


def _head(task, num_classes, h):
    # Heads compute in float32 even under mixed precision: stable softmax,
    # and TF Serving's REST API cannot encode bfloat16.
    if task.type in ("classification", "tagging"):
        return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=task.name)(h)
    if task.type == "multilabel":
        return keras.layers.Dense(num_classes, activation="sigmoid", dtype="float32", name=task.name)(h)
    value = keras.layers.Dense(1, dtype="float32", name=f"{task.name}_value")(h)
    return keras.layers.Reshape((), name=task.name)(value)


def _backbone_sequence(backbone, token_ids, padding_mask):
    """Token states of a keras-hub backbone (BERT-like: needs segment ids)."""
    feed = {"token_ids": token_ids, "padding_mask": padding_mask}
    names = [i.name for i in backbone.inputs] if isinstance(backbone.inputs, list) else list(backbone.input)
    if any("segment_ids" in str(n) for n in names):
        feed["segment_ids"] = ops.zeros_like(token_ids)
    out = backbone(feed)
    if isinstance(out, dict):
        return out.get("sequence_output", next(iter(out.values())))
    return out


def loss_for(task, normalizer="batch"):
    """Per-task loss over the examples (tokens) that have the label.

    `normalizer="batch"`: the weighted mean over the batch's labelled units
    (`mean_with_sample_weight`). `"expected"`: the weighted sum, for sample
    weights that the input pipeline already divided by the expected label
    weight per batch (`train.loss_normalizer: expected`).
    """
    if normalizer not in ("batch", "expected"):
        raise ValueError(f"normalizer must be 'batch' or 'expected'. Received: normalizer={normalizer!r}")
    reduction = "sum" if normalizer == "expected" else "mean_with_sample_weight"
    if task.type in ("classification", "tagging"):
        return keras.losses.SparseCategoricalCrossentropy(reduction=reduction, name=f"{task.name}_loss")
    if task.type == "multilabel":
        return keras.losses.BinaryCrossentropy(reduction=reduction, name=f"{task.name}_loss")
    return keras.losses.MeanSquaredError(reduction=reduction, name=f"{task.name}_loss")
