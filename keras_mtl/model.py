"""Config -> functional multi-output keras.Model (keras + keras.ops only).

    token_ids, padding_mask, [task_ids]
      -> keras-hub TokenAndPositionEmbedding (+ task embedding / task token)
      -> N x keras-hub TransformerEncoder (+ per-task adapters)
         (or a pretrained backbone's own embeddings and transformer layers,
         with the task inserted at the same two places)
      -> [MMoE experts] -> per task: pooled (sentence) or token states (tagging)
      -> [task relation across sentence tasks] -> [task gate] -> head(s)
    outputs: the heads of each task's type (keras_mtl.tasks), in float32;
    {task name: probabilities (or value)} for the built-in types.
"""

import re

import keras
from keras import ops

from keras_mtl.errors import ConfigError
from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.layers.task_embedding import TaskEmbedding
from keras_mtl.tasks import for_task


def sees_task(model_cfg):
    """Whether the encoder sees the task (`task_conditioning` or adapters):
    the model then takes a `task_ids` input and encodes an example once per task."""
    return model_cfg.task_conditioning != "none" or model_cfg.adapter_dim > 0


def build_model(config, classes, vocabulary_size, backbone=None, separator_id=None):
    """Build the multi-task model.

    Args:
        config: ExperimentConfig.
        classes: dict task -> list of class names.
        vocabulary_size: int. Size of the WordPiece vocabulary.
        backbone: optional keras-hub Backbone used as the shared encoder
            (a pretrained preset) in place of the embedding and encoder stack
            built here. With task conditioning or adapters its forward pass is
            rebuilt from its own sublayers so the task enters before its
            transformer layers (`pretrained.backbone_encoder`); otherwise it is
            called as a whole.
        separator_id: the id of the `[SEP]` piece; needed when a task reads
            sentence pairs (`config.pair_task_names`). The segments (0 up to
            the first `[SEP]`, 1 after) are derived from the token ids
            (`SegmentIds`) and go to the preset's segment embedding, or to a
            learned one (`segment_embedding`) from scratch. A config without
            pair tasks builds the model it always did.
    """
    import keras_hub

    m, tasks = config.model, config.tasks
    num_tasks = len(tasks)

    # === Inputs ===
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    task_ids = None
    if sees_task(m):
        task_ids = keras.Input(shape=(), dtype="int32", name="task_ids")
        inputs["task_ids"] = task_ids

    segment_ids = None
    if config.pair_task_names:
        if separator_id is None:
            raise ValueError("build_model: tasks read sentence pairs, so separator_id (the [SEP] id) is required")
        from keras_mtl.layers.segment_ids import SegmentIds

        segment_ids = SegmentIds(separator_id, name="segment_ids")(token_ids)

    # === Shared encoder ===
    # The task enters before the transformer layers, with or without a preset:
    # on the summed embeddings (before their layer norm), and as an adapter
    # after each transformer layer.
    prepend = m.task_conditioning == "token"

    def condition(x, mask):
        return _condition(m.task_conditioning, num_tasks, x, mask, task_ids)

    def after_layer(i, x):
        return _adapter(m.adapter_dim, num_tasks, i, x, task_ids)

    if backbone is not None:
        from keras_mtl.pretrained import backbone_encoder, check_rebuildable

        if sees_task(m):
            check_rebuildable(backbone, m)
            x, mask = backbone_encoder(
                backbone, token_ids, padding_mask, segment_ids=segment_ids, condition=condition, after_layer=after_layer
            )
        else:  # the backbone as a whole, as it was saved (runs from before the rebuild load the same)
            x, mask = _backbone_sequence(backbone, token_ids, padding_mask, segment_ids), padding_mask
    else:
        x = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=m.max_sequence_length + 1,
            embedding_dim=m.hidden_dim,
            name="embedding",
        )(token_ids)
        if segment_ids is not None:
            x = x + keras.layers.Embedding(2, m.hidden_dim, name="segment_embedding")(segment_ids)
        x, mask = condition(x, padding_mask)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")(x)
        x = keras.layers.Dropout(m.dropout, name="embedding_dropout")(x)
        for i in range(m.num_layers):
            x = keras_hub.layers.TransformerEncoder(
                intermediate_dim=m.intermediate_dim,
                num_heads=m.num_heads,
                dropout=m.dropout,
                activation="gelu",
                name=f"encoder_{i}",
            )(x, padding_mask=mask)
            x = after_layer(i, x)

    # === Per-task representations ===
    if m.num_experts:
        from keras_mtl.layers.mixture_of_experts import MixtureOfExperts

        per_task_states = MixtureOfExperts(
            num_experts=m.num_experts, num_tasks=num_tasks, expert_dim=m.intermediate_dim, name="experts"
        )(x)
    else:
        per_task_states = [x] * num_tasks

    heads = {task.name: for_task(task, classes[task.name]) for task in tasks}
    reps = {}
    for t, task in enumerate(tasks):
        states = per_task_states[t]
        if heads[task.name].token_level:  # the token states (without the task token)
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

    sentence_tasks = [t.name for t in tasks if not heads[t.name].token_level]
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
        outputs.update(heads[task.name].build_heads(h))
    try:
        return keras.Model(inputs=inputs, outputs=outputs, name="multitask_transformer")
    except ValueError as e:
        # A preset's own layer names (`transformer_layer_0`, ...) are only known
        # here; config validation rejects the names of the layers built above.
        clash = re.search(r'The name "([^"]+)" is used \d+ times', str(e))
        if clash is None:
            raise
        raise ConfigError(
            f"tasks: task name {clash.group(1)!r} clashes with a layer of the model"
            f"{f' (preset {m.preset!r})' if m.preset else ''}; rename the task"
        ) from None


def _condition(conditioning, num_tasks, x, mask, task_ids):
    """The task signal on the summed embeddings: a task vector added, or a task token prepended."""
    if conditioning == "embedding":
        x = TaskEmbedding(num_tasks, x.shape[-1], name="task_embedding")(x, task_ids)
    elif conditioning == "token":
        x = TaskEmbedding(num_tasks, x.shape[-1], mode="prepend", name="task_token")(x, task_ids)
        mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
    return x, mask


def _adapter(adapter_dim, num_tasks, i, x, task_ids):
    """A per-task adapter after transformer layer `i` (`model.adapter_dim > 0`)."""
    if not adapter_dim:
        return x
    from keras_mtl.layers.task_adapter import TaskAdapter

    return TaskAdapter(num_tasks, adapter_dim, name=f"adapter_{i}")(x, task_ids)


def _backbone_sequence(backbone, token_ids, padding_mask, segment_ids=None):
    """Token states of a keras-hub backbone called as a whole (segment ids: zeros unless given)."""
    feed = {"token_ids": token_ids, "padding_mask": padding_mask}
    names = [i.name for i in backbone.inputs] if isinstance(backbone.inputs, list) else list(backbone.input)
    if any("segment_ids" in str(n) for n in names):
        feed["segment_ids"] = ops.zeros_like(token_ids) if segment_ids is None else segment_ids
    out = backbone(feed)
    if isinstance(out, dict):
        return out.get("sequence_output", next(iter(out.values())))
    return out


def loss_for(task, normalizer="batch"):
    """The task type's loss over the examples (tokens) that have the label.

    `normalizer="batch"`: the weighted mean over the batch's labelled units
    (`mean_with_sample_weight`). `"expected"`: the weighted sum, for sample
    weights that the input pipeline already divided by the expected label
    weight per batch (`train.loss_normalizer: expected`).
    """
    if normalizer not in ("batch", "expected"):
        raise ValueError(f"normalizer must be 'batch' or 'expected'. Received: normalizer={normalizer!r}")
    reduction = "sum" if normalizer == "expected" else "mean_with_sample_weight"
    # A task with a teacher learns from annealed soft targets (keras_mtl.distill).
    return for_task(task).loss(reduction, soft=bool(getattr(task, "teacher", None)))
