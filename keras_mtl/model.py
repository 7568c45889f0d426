"""Config -> the functional multi-task keras.Model (`build_network`).

The network is composed of serializable keras-mtl layers (keras_mtl.layers),
which a Keras user can also assemble by hand (docs/layers.md):

    token_ids, padding_mask, [task_ids]
      -> SharedEncoder "shared_encoder": token states and their padding mask
         (from scratch, or around the preset's keras-hub backbone, loaded here;
         the task enters as a task embedding / task token and per-task adapters)
      -> [MixtureOfExperts "experts": one mixture of the states per task]
      -> per task: pooled sentence states (SequencePooling "<task>_pool" or
         TaskAttentionPooling "<task>_attention_pool"), or the token states
         (tagging; without a task token)
      -> [TaskRelation "task_relation" across the sentence tasks]
      -> per task: the TaskHead its type builds, named after the task
    outputs: {task name: the head's output}, in float32 (probabilities or a
    value for the built-in types).

The input names and the output keys are those of the export's signatures.
"""

import re

import keras
from keras import ops

from keras_mtl.errors import ConfigError
from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.layers.shared_encoder import SharedEncoder
from keras_mtl.tasks import for_task


def sees_task(model_cfg):
    """`model_cfg.sees_task` (config.ModelConfig): the model takes a `task_ids` input."""
    return model_cfg.sees_task


def build_network(config, classes, vocabulary):
    """Build the multi-task network of `config`.

    With `config.model.preset`, the preset's backbone is loaded here
    (`keras_mtl.pretrained.load_backbone`) and becomes the shared encoder's.

    Args:
        config: ExperimentConfig.
        classes: dict task name -> list of class names.
        vocabulary: the run's vocabulary (list of pieces: the learned
            WordPiece vocabulary, or the preset's). Its size sizes the token
            embedding from scratch; its `[SEP]` id marks the second text of a
            sentence pair, when a task reads pairs (`config.pair_task_names`).

    Returns:
        A functional `keras.Model` named "multitask_transformer" with inputs
        `token_ids`, `padding_mask` (and `task_ids` when the encoder sees the
        task) and a dict of outputs, one per task.

    Raises:
        ConfigError: a task name clashes with a layer of the network; tasks
            read sentence pairs but the vocabulary has no `[SEP]`; the task
            cannot enter the preset's backbone (`pretrained.check_rebuildable`).
    """
    from keras_mtl.data.tokenize import separator_id

    m, tasks = config.model, config.tasks
    num_tasks = len(tasks)
    backbone = None
    if m.preset:
        from keras_mtl import pretrained

        backbone = pretrained.load_backbone(m)
        pretrained.check_rebuildable(backbone, m)
    separator = None
    if config.pair_task_names:
        separator = separator_id(vocabulary)
        if separator is None:
            raise ConfigError(
                f"tasks {', '.join(config.pair_task_names)} read sentence pairs, but the vocabulary has no [SEP] piece "
                "to separate the two texts"
            )

    # === Inputs ===
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    task_ids = None
    if sees_task(m):
        task_ids = keras.Input(shape=(), dtype="int32", name="task_ids")
        inputs["task_ids"] = task_ids

    # === Shared encoder ===
    if backbone is None:
        sizes = dict(
            vocabulary_size=len(vocabulary),
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            hidden_dim=m.hidden_dim,
            intermediate_dim=m.intermediate_dim,
            max_sequence_length=m.max_sequence_length + 1,  # room for a task token
            dropout=m.dropout,
        )
    else:
        sizes = dict(backbone=backbone)
    encoder = SharedEncoder(
        **sizes,
        num_tasks=num_tasks if sees_task(m) else None,
        task_conditioning=m.task_conditioning,
        adapter_dim=m.adapter_dim,
        separator_id=separator,
        name="shared_encoder",
    )
    x, mask = encoder(token_ids, padding_mask, task_ids=task_ids)

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
            reps[task.name] = states[:, 1:, :] if m.task_conditioning == "token" else states
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
    # Each task's type builds its head, a layer named after the task ([gate] ->
    # dropout -> float32 output): the model's output of the task is the head's.
    outputs = {}
    for task in tasks:
        outputs[task.name] = heads[task.name].build_head(m.task_gates, m.dropout)(reps[task.name])
    try:
        return keras.Model(inputs=inputs, outputs=outputs, name="multitask_transformer")
    except ValueError as e:
        # Config validation rejects the names in config.MODEL_LAYERS; this is
        # the last guard (a layer name the table does not know yet).
        clash = re.search(r'The name "([^"]+)" is used \d+ times', str(e))
        if clash is None:
            raise
        raise ConfigError(
            f"tasks: task name {clash.group(1)!r} clashes with a layer of the model"
            f"{f' (preset {m.preset!r})' if m.preset else ''}; rename the task"
        ) from None


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
