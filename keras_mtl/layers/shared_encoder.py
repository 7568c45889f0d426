"""The shared encoder of a multi-task model: token ids -> token states, the task inside."""

import keras
from keras import ops

from keras_mtl.layers._common import check_dropout, check_positive_ints
from keras_mtl.layers.segment_ids import SegmentIds
from keras_mtl.layers.task_adapter import TaskAdapter
from keras_mtl.layers.task_embedding import TaskEmbedding

TASK_CONDITIONING = ("none", "embedding", "token")

# Backbones whose forward pass `SharedEncoder` rebuilds from their own
# sublayers to put the task inside (keras-hub class name -> how the
# embeddings are formed). Their `embeddings_layer_norm`, `embeddings_dropout`,
# optional `embeddings_projection` and `transformer_layers` (TransformerEncoder,
# called with `padding_mask`) are common to all of them.
REBUILDABLE_BACKBONES = {
    "BertBackbone": "token_position_segment",
    "ElectraBackbone": "token_position_segment",
    "RobertaBackbone": "token_and_position",  # also XLMRobertaBackbone (a subclass)
    "DistilBertBackbone": "token_and_position",
}


def rebuildable_kind(backbone):
    """How `SharedEncoder` forms the embeddings of `backbone` when it rebuilds its
    forward pass (a value of `REBUILDABLE_BACKBONES`), or None: a backbone of
    another class can only be called as a whole (the task cannot enter it)."""
    for cls in type(backbone).__mro__:
        if cls.__name__ in REBUILDABLE_BACKBONES and cls.__module__.startswith("keras_hub."):
            return REBUILDABLE_BACKBONES[cls.__name__]
    return None


@keras.saving.register_keras_serializable(package="keras_mtl")
class SharedEncoder(keras.layers.Layer):
    """The encoder all tasks share: token ids -> token states and their padding mask.

    From scratch (no `backbone`):

        token ids -> keras-hub TokenAndPositionEmbedding [+ segment embedding]
          [-> task conditioning] -> LayerNormalization -> Dropout
          -> num_layers x (keras-hub TransformerEncoder [-> TaskAdapter])

    Around a pretrained keras-hub `backbone`: when the task does not enter the
    encoder (`task_conditioning="none"`, no adapters) the backbone is called as
    a whole (its `sequence_output`). Otherwise its forward pass is rebuilt from
    its own sublayers (pretrained weights shared, nothing copied; its pooler is
    not called), with the task at the same two places as from scratch:

        embeddings (token + position [+ segment]) [-> task conditioning]
          -> its layer norm -> its dropout [-> its projection]
          -> each of its transformer layers [-> TaskAdapter]

    The task signal goes on the summed embeddings *before* their layer norm,
    like a further segment embedding: the norm brings every position (a
    prepended task token too) back to the scale the transformer layers work
    on, and a task vector of `TaskEmbedding`'s initial scale (stddev 0.02,
    BERT's segment-table scale) moves the normalized states about as much as
    a segment embedding does. Rebuildable backbones: the classes of
    `REBUILDABLE_BACKBONES` (and their subclasses, e.g. XLM-RoBERTa).

    Sentence pairs: with `separator_id`, the segment of every position is read
    off the token ids (`SegmentIds`: 0 up to the first separator, 1 after) and
    goes to a learned 2-row segment embedding from scratch, or to the
    backbone's segment embedding (backbones without one ignore it).

    The sublayers are created in `build`, each built before the next is
    created, in the order they are called; `__init__` creates none (seeded
    runs draw the same initial weights as the layer-by-layer functional
    model this layer replaces).

    Args:
        vocabulary_size: int. Token embedding rows (from scratch).
        num_layers: int. Transformer layers, >= 0 (from scratch).
        num_heads: int. Attention heads per layer (from scratch).
        hidden_dim: int. Width of the embeddings and states (from scratch).
        intermediate_dim: int. Feed-forward size of each layer (from scratch).
        max_sequence_length: int. Rows of the position embedding: the
            longest sequence the encoder reads, a prepended task token
            included (from scratch).
        dropout: float. Dropout of the embeddings and of the transformer
            layers, in [0, 1) (from scratch; a backbone has its own).
            Defaults to `0.1`.
        backbone: optional keras-hub `Backbone` used in place of the layers
            built from scratch (then leave the from-scratch arguments
            `None`). Defaults to `None`.
        num_tasks: int. The number of tasks: rows of the task embedding and
            adapter tables. Required with task conditioning or adapters.
        task_conditioning: str. How the encoder sees the task: `"none"`,
            `"embedding"` (a learned task vector added at every position) or
            `"token"` (a learned task vector prepended as a first position;
            the returned padding mask covers it). Defaults to `"none"`.
        adapter_dim: int. Bottleneck size of a per-task `TaskAdapter` after
            each transformer layer; `0`: none. Defaults to `0`.
        separator_id: optional int, the id of the `[SEP]` piece of packed
            sentence pairs (see above). Defaults to `None` (single texts).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name` and `dtype`.

    Call arguments:
        token_ids: int tensor `[batch, length]`.
        padding_mask: bool tensor `[batch, length]`, true on real tokens.
        task_ids: int tensor `[batch]`, each example's task index; required
            when the encoder sees the task (`sees_task`).

    Returns:
        `[states, mask]`: the token states `[batch, length', hidden]` and
        their padding mask `[batch, length']` (`length' = length + 1` with a
        task token, which is position 0).

    Example:
    ```python
    encoder = SharedEncoder(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16,
        num_tasks=3, task_conditioning="embedding",
    )
    ids = np.array([[2, 7, 8, 0]])
    states, mask = encoder(ids, ids != 0, task_ids=np.array([1]))  # [1, 4, 16], [1, 4]

    # Around a pretrained backbone, with a per-task adapter after each layer:
    backbone = keras_hub.models.BertBackbone.from_preset("bert_tiny_en_uncased")
    encoder = SharedEncoder(backbone=backbone, num_tasks=3, adapter_dim=16)
    ```
    """

    def __init__(
        self, vocabulary_size=None, num_layers=None, num_heads=None, hidden_dim=None, intermediate_dim=None,
        max_sequence_length=None, dropout=0.1, backbone=None, num_tasks=None, task_conditioning="none",
        adapter_dim=0, separator_id=None, **kwargs,
    ):
        super().__init__(**kwargs)
        scratch = dict(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                       hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
                       max_sequence_length=max_sequence_length)
        if backbone is None:
            missing = [k for k, v in scratch.items() if v is None]
            if missing:
                raise ValueError(
                    f"`SharedEncoder` without a `backbone` needs {', '.join(f'`{k}`' for k in missing)}. "
                    f"Received: {', '.join(f'{k}={v}' for k, v in scratch.items())}"
                )
            check_positive_ints(**{k: v for k, v in scratch.items() if k != "num_layers"})
            if not isinstance(num_layers, int) or num_layers < 0:
                raise ValueError(f"`num_layers` must be a non-negative integer. Received: num_layers={num_layers}")
        else:
            given = [k for k, v in scratch.items() if v is not None]
            if given:
                raise ValueError(
                    "`SharedEncoder` with a `backbone` takes its sizes from the backbone; leave "
                    f"{', '.join(f'`{k}`' for k in given)} unset. Received: "
                    f"{', '.join(f'{k}={scratch[k]}' for k in given)}"
                )
        check_dropout(dropout)
        if task_conditioning not in TASK_CONDITIONING:
            raise ValueError(
                f'`task_conditioning` must be "none", "embedding" or "token". '
                f"Received: task_conditioning={task_conditioning!r}"
            )
        if not isinstance(adapter_dim, int) or adapter_dim < 0:
            raise ValueError(f"`adapter_dim` must be a non-negative integer. Received: adapter_dim={adapter_dim}")
        sees_task = task_conditioning != "none" or adapter_dim > 0
        if sees_task:
            check_positive_ints(num_tasks=num_tasks)
        if backbone is not None and sees_task and rebuildable_kind(backbone) is None:
            raise ValueError(
                f"`SharedEncoder` cannot put the task inside a {type(backbone).__name__} (task_conditioning="
                f"{task_conditioning!r}, adapter_dim={adapter_dim}): its forward pass can be rebuilt for "
                f"{', '.join(sorted(REBUILDABLE_BACKBONES))} (and subclasses) only"
            )
        for name, value in scratch.items():
            setattr(self, name, value)
        self.dropout = dropout
        self.backbone = backbone
        self.num_tasks = num_tasks
        self.task_conditioning = task_conditioning
        self.adapter_dim = adapter_dim
        self.separator_id = None if separator_id is None else int(separator_id)

    @property
    def sees_task(self):
        """Whether the encoder takes `task_ids` (task conditioning or adapters)."""
        return self.task_conditioning != "none" or self.adapter_dim > 0

    @property
    def rebuilds_backbone(self):
        """Whether the backbone's forward pass is rebuilt (the task enters it)."""
        return self.backbone is not None and self.sees_task

    def build(self, token_ids_shape, padding_mask_shape=None, task_ids_shape=None):
        # Each sublayer is created and built before the next one is created:
        # the seeds of unseeded initializers and dropouts are drawn when they
        # are created, in this order (see the class docstring).
        import keras_hub

        dtype = self.dtype_policy
        token_ids_shape = tuple(token_ids_shape)
        self.segment_ids = None
        if self.separator_id is not None:
            self.segment_ids = SegmentIds(self.separator_id, dtype=dtype, name="segment_ids")
            self.segment_ids.build(token_ids_shape)
        self.embedding = self.segment_embedding = None
        self.embedding_norm = self.embedding_dropout = None
        self.encoder_layers = []
        if self.backbone is None:
            self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
                vocabulary_size=self.vocabulary_size,
                sequence_length=self.max_sequence_length,
                embedding_dim=self.hidden_dim,
                dtype=dtype,
                name="embedding",
            )
            self.embedding.build(token_ids_shape)
            if self.separator_id is not None:
                self.segment_embedding = keras.layers.Embedding(2, self.hidden_dim, dtype=dtype, name="segment_embedding")
                self.segment_embedding.build(token_ids_shape)
            embedding_dim = self.hidden_dim
        elif self.rebuilds_backbone:
            embedding_dim = self.backbone.embeddings_layer_norm.gamma.shape[-1]  # before any projection
        else:  # a backbone called as a whole: no layers of its own
            embedding_dim = None
        batch, length = token_ids_shape[0], (token_ids_shape[1] if len(token_ids_shape) > 1 else None)
        embeddings_shape = (batch, length, embedding_dim)
        if length is not None and self.task_conditioning == "token":
            length += 1  # the task token
        states_shape = (batch, length, embedding_dim)

        self.task_embedding = None
        if self.task_conditioning != "none":
            self.task_embedding = TaskEmbedding(
                self.num_tasks,
                embedding_dim,
                mode="add" if self.task_conditioning == "embedding" else "prepend",
                dtype=dtype,
                name="task_embedding" if self.task_conditioning == "embedding" else "task_token",
            )
            self.task_embedding.build(embeddings_shape, task_ids_shape)

        adapters = []

        def adapter(i, shape):  # after transformer layer i
            if self.adapter_dim:
                layer = TaskAdapter(self.num_tasks, self.adapter_dim, dtype=dtype, name=f"adapter_{i}")
                layer.build(shape, task_ids_shape)
                adapters.append(layer)

        if self.backbone is None:
            self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="embedding_norm")
            self.embedding_norm.build(states_shape)
            self.embedding_dropout = keras.layers.Dropout(self.dropout, dtype=dtype, name="embedding_dropout")
            self.embedding_dropout.build(states_shape)
            encoder_layers = []
            for i in range(self.num_layers):
                layer = keras_hub.layers.TransformerEncoder(
                    intermediate_dim=self.intermediate_dim,
                    num_heads=self.num_heads,
                    dropout=self.dropout,
                    activation="gelu",
                    dtype=dtype,
                    name=f"encoder_{i}",
                )
                layer.build(states_shape)
                encoder_layers.append(layer)
                adapter(i, states_shape)
            self.encoder_layers = encoder_layers
        elif self.rebuilds_backbone:
            states_shape = (batch, length, self.backbone.hidden_dim)
            for i in range(len(self.backbone.transformer_layers)):
                adapter(i, states_shape)
        self.adapters = adapters
        self.built = True

    @property
    def transformer_layers(self):
        """The transformer layers the encoder runs, in order (the backbone's own
        with a backbone); empty for a backbone called as a whole."""
        if self.backbone is None:
            return list(self.encoder_layers)
        return list(self.backbone.transformer_layers) if self.rebuilds_backbone else []

    def layers_in_order(self):
        """The layers the encoder calls, in the order it calls them.

        From scratch: its own sublayers; a backbone called as a whole: the
        backbone; a rebuilt backbone: the backbone's sublayers it calls and
        the task's layers between them. `keras_mtl.weighting.gradnorm` takes
        the last one with trainable weights as the last shared layer of a
        model, and `keras_mtl.meta.adapt` matches the layers of networks saved
        before the encoder was one layer against these by name.
        """
        if not self.built:
            return []
        b = self.backbone
        if b is not None and not self.rebuilds_backbone:
            return [b]
        task = [self.task_embedding] if self.task_embedding is not None else []
        if b is None:
            head = [self.segment_ids, self.embedding, self.segment_embedding]
            head += task + [self.embedding_norm, self.embedding_dropout]
            layers = self.encoder_layers
        else:
            if rebuildable_kind(b) == "token_position_segment":
                head = [self.segment_ids, b.token_embedding, b.position_embedding, b.segment_embedding]
                head.append(b.embeddings_add)
            else:
                head = [b.embeddings]
            head += task + [b.embeddings_layer_norm, b.embeddings_dropout, getattr(b, "embeddings_projection", None)]
            layers = b.transformer_layers
        ordered = [layer for layer in head if layer is not None]
        for i, layer in enumerate(layers):
            ordered.append(layer)
            if self.adapters:
                ordered.append(self.adapters[i])
        return ordered

    def call(self, token_ids, padding_mask, task_ids=None, training=None):
        if self.sees_task and task_ids is None:
            raise ValueError(
                "`SharedEncoder` sees the task (task_conditioning="
                f"{self.task_conditioning!r}, adapter_dim={self.adapter_dim}): pass `task_ids`"
            )
        segment_ids = self.segment_ids(token_ids) if self.segment_ids is not None else None
        if self.backbone is not None and not self.rebuilds_backbone:
            return [self._whole_backbone(token_ids, padding_mask, segment_ids, training), padding_mask]

        if self.backbone is None:
            x = self.embedding(token_ids)
            if self.segment_embedding is not None:
                x = x + self.segment_embedding(segment_ids)
        else:
            x = self._backbone_embeddings(token_ids, segment_ids)
        mask = padding_mask
        if self.task_embedding is not None:
            x = self.task_embedding(x, task_ids)
            if self.task_conditioning == "token":
                mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
        if self.backbone is None:
            x = self.embedding_norm(x)
            x = self.embedding_dropout(x, training=training)
        else:
            x = self.backbone.embeddings_layer_norm(x)
            x = self.backbone.embeddings_dropout(x, training=training)
            projection = getattr(self.backbone, "embeddings_projection", None)
            if projection is not None:
                x = projection(x)
        for i, layer in enumerate(self.transformer_layers):
            x = layer(x, padding_mask=mask, training=training)
            if self.adapters:
                x = self.adapters[i](x, task_ids)
        return [x, mask]

    def _backbone_embeddings(self, token_ids, segment_ids):
        """The backbone's summed embeddings (before its layer norm)."""
        b = self.backbone
        if rebuildable_kind(b) == "token_position_segment":
            tokens = b.token_embedding(token_ids)
            positions = b.position_embedding(tokens)
            if segment_ids is None:
                segment_ids = ops.zeros_like(token_ids)
            segments = b.segment_embedding(segment_ids)
            return b.embeddings_add((tokens, positions, segments))
        return b.embeddings(token_ids)

    def _whole_backbone(self, token_ids, padding_mask, segment_ids, training):
        """The token states of the backbone called as a whole (segment ids: zeros unless given)."""
        b = self.backbone
        feed = {"token_ids": token_ids, "padding_mask": padding_mask}
        names = [i.name for i in b.inputs] if isinstance(b.inputs, list) else list(b.input)
        if any("segment_ids" in str(n) for n in names):
            feed["segment_ids"] = ops.zeros_like(token_ids) if segment_ids is None else segment_ids
        out = b(feed, training=training)
        if isinstance(out, dict):
            return out.get("sequence_output", next(iter(out.values())))
        return out

    def compute_output_spec(self, token_ids, padding_mask, task_ids=None, training=None):
        # Not traced: keras-hub's position embedding cannot be traced with a
        # symbolic sequence length on JAX (its length check is inconclusive).
        batch, length = token_ids.shape[0], token_ids.shape[1]
        if length is not None and self.task_conditioning == "token":
            length += 1
        if self.backbone is None:
            hidden, dtype = self.hidden_dim, self.compute_dtype
        else:  # the backbone's transformer layers (or, last, an adapter) give the states
            hidden = self.backbone.hidden_dim
            dtype = self.compute_dtype if self.adapter_dim else self.backbone.compute_dtype
        return [
            keras.KerasTensor((batch, length, hidden), dtype=dtype),
            keras.KerasTensor((batch, length), dtype=padding_mask.dtype),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "dropout": self.dropout,
                "backbone": None if self.backbone is None else keras.saving.serialize_keras_object(self.backbone),
                "num_tasks": self.num_tasks,
                "task_conditioning": self.task_conditioning,
                "adapter_dim": self.adapter_dim,
                "separator_id": self.separator_id,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            import keras_hub  # noqa: F401  (registers the keras-hub backbones)

            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return super().from_config(config)
