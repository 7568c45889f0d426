"""keras_mtl.model.build_network: the network of a config, composed of keras-mtl layers."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mtl.config import config_from_dict
from keras_mtl.errors import ConfigError
from keras_mtl.layers import SequencePooling, SharedEncoder, TaskAttentionPooling, TaskHead
from keras_mtl.model import build_network

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"piece{i}" for i in range(36)]
CLASSES = {"topic": ["a", "b", "c"], "pos": ["D", "N"], "nli": ["yes", "no"]}
IDS = np.array([[2, 11, 12, 3, 14, 15, 3, 0], [2, 21, 22, 0, 0, 0, 0, 0]], "int32")


def _config(pairs=False, **model):
    base = Path(tempfile.mkdtemp())
    (base / "pairs.jsonl").write_text("")
    tasks = [
        {"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 4}},
        {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 4}},
    ]
    if pairs:
        tasks.append({"name": "nli", "type": "classification",
                      "data": {"format": "jsonl", "train": "pairs.jsonl", "text_pair_field": "b"}})
    sizes = {"max_sequence_length": 16, "hidden_dim": 8, "num_layers": 1, "num_heads": 2, "intermediate_dim": 16}
    return config_from_dict({"name": "net", "tasks": tasks, "model": {**sizes, **model}}, base_dir=base).config


def _feed(model):
    feed = {"token_ids": IDS, "padding_mask": IDS != 0}
    if "task_ids" in [i.name for i in model.inputs]:
        feed["task_ids"] = np.array([0, 1], "int32")
    return feed


def test_the_network_is_the_shared_encoder_poolings_and_heads():
    config = _config(task_conditioning="token", pooling="attention")
    model = build_network(config, CLASSES, VOCABULARY)
    assert sorted(i.name for i in model.inputs) == ["padding_mask", "task_ids", "token_ids"]
    assert sorted(model.output) == ["pos", "topic"]
    layers = {layer.name: type(layer) for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}
    assert layers == {"shared_encoder": SharedEncoder, "topic_attention_pool": TaskAttentionPooling,
                      "topic": TaskHead, "pos": TaskHead}
    encoder = model.get_layer("shared_encoder")
    assert encoder.vocabulary_size == len(VOCABULARY) and encoder.max_sequence_length == 17  # room for the task token
    out = model(_feed(model))
    assert tuple(out["topic"].shape) == (2, 3) and tuple(out["pos"].shape) == (2, 8, 2)  # no state of the task token


def test_without_task_conditioning_the_network_takes_no_task_ids():
    model = build_network(_config(task_conditioning="none"), CLASSES, VOCABULARY)
    assert sorted(i.name for i in model.inputs) == ["padding_mask", "token_ids"]
    assert isinstance(model.get_layer("topic_pool"), SequencePooling)


def test_pairs_take_the_separator_of_the_vocabulary():
    model = build_network(_config(pairs=True), CLASSES, VOCABULARY)
    assert model.get_layer("shared_encoder").separator_id == 3
    with pytest.raises(ConfigError, match=r"tasks nli read sentence pairs, but the vocabulary has no \[SEP\]"):
        build_network(_config(pairs=True), CLASSES, [p for p in VOCABULARY if p != "[SEP]"])


def test_a_saved_network_reloads_and_computes_the_same(tmp_path):
    model = build_network(_config(pairs=True, adapter_dim=4, num_experts=2, task_relation=True), CLASSES, VOCABULARY)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    want, got = model(_feed(model)), loaded(_feed(loaded))
    for name in CLASSES:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[name]), keras.ops.convert_to_numpy(want[name]),
                                   atol=1e-6)
