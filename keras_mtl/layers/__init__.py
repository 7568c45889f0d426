"""Keras layers of keras-mtl (keras, keras.ops and keras-hub layers; all serializable).

Importing this package registers every layer with Keras serialization (so a
saved `model.keras` loads).
"""

from keras_mtl.layers.mixture_of_experts import MixtureOfExperts
from keras_mtl.layers.pooling import SequencePooling
from keras_mtl.layers.segment_ids import SegmentIds
from keras_mtl.layers.shared_encoder import SharedEncoder
from keras_mtl.layers.task_adapter import TaskAdapter
from keras_mtl.layers.task_attention import TaskAttentionPooling
from keras_mtl.layers.task_embedding import TaskEmbedding
from keras_mtl.layers.task_gate import TaskGate
from keras_mtl.layers.task_head import TaskHead
from keras_mtl.layers.task_relation import TaskRelation

__all__ = [
    "MixtureOfExperts",
    "SegmentIds",
    "SequencePooling",
    "SharedEncoder",
    "TaskAdapter",
    "TaskAttentionPooling",
    "TaskEmbedding",
    "TaskGate",
    "TaskHead",
    "TaskRelation",
]
