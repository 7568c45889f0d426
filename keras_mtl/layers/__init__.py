"""Keras layers of keras-mtl (keras + keras.ops only; all serializable)."""

from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.layers.segment_ids import SegmentIds
from keras_mtl.layers.task_embedding import TaskEmbedding

try:  # the multi-task method layers (issue 4); imported to register them
    from keras_mtl.layers.mixture_of_experts import MixtureOfExperts
    from keras_mtl.layers.task_adapter import TaskAdapter
    from keras_mtl.layers.task_attention import TaskAttentionPooling
    from keras_mtl.layers.task_gate import TaskGate
    from keras_mtl.layers.task_relation import TaskRelation
except ImportError:  # pragma: no cover
    pass
