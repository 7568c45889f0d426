"""Learned task embedding: condition a shared encoder on the task."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskEmbedding(keras.layers.Layer):
    """Adds a learned task vector to every position, or prepends it as a token.

    `mode="add"`: `x + E[task_id]` at every position; `mode="prepend"`: the
    task vector becomes a new first position (extend the padding mask to
    match). Details and an example: docs/layers.md#taskembedding.

    Args:
        num_tasks: int. Number of tasks.
        hidden_dim: int. Size of each task vector (the model width).
        mode: str. `"add"` or `"prepend"`. Defaults to `"add"`.
        embeddings_initializer: initializer of the task vectors. Defaults to
            `TruncatedNormal(stddev=0.02)` (small next to the token
            embeddings, as BERT's segment and position tables).
    """

    def __init__(self, num_tasks, hidden_dim, mode="add", embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1. Received: num_tasks={num_tasks}")
        if mode not in ("add", "prepend"):
            raise ValueError(f'mode must be "add" or "prepend". Received: mode={mode}')
        self.num_tasks = num_tasks
        self.hidden_dim = hidden_dim
        self.mode = mode
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, inputs_shape, task_ids_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_tasks, self.hidden_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, task_ids):
        vectors = ops.take(self.embeddings, ops.cast(task_ids, "int32"), axis=0)
        vectors = ops.cast(vectors, inputs.dtype)[:, None, :]
        if self.mode == "add":
            return inputs + vectors
        return ops.concatenate([vectors, inputs], axis=1)

    def compute_output_shape(self, inputs_shape, task_ids_shape=None):
        if self.mode == "add":
            return inputs_shape
        length = None if inputs_shape[1] is None else inputs_shape[1] + 1
        return (inputs_shape[0], length, inputs_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "hidden_dim": self.hidden_dim,
                "mode": self.mode,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config
