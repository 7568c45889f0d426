import random

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl.layers.shared_encoder import REBUILDABLE_BACKBONES, SharedEncoder, rebuildable_kind
from keras_mtl.testing import run_layer_test

IDS = np.array([[2, 11, 12, 3, 14, 15, 3, 0], [2, 21, 22, 23, 0, 0, 0, 0]], "int32")
SEP = 3
SCRATCH = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=9)


def _np(x):
    return ops.convert_to_numpy(x)


def _feed(ids=IDS, task=None):
    feed = {"token_ids": ids, "padding_mask": ids != 0}
    if task is not None:
        feed["task_ids"] = np.full((len(ids),), task, "int32")
    return feed


def _tiny_bert(**kwargs):
    import keras_hub

    keras.utils.set_random_seed(0)
    args = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    backbone = keras_hub.models.BertBackbone(**{**args, **kwargs})
    backbone.get_layer("pooled_dense").trainable = False  # as `pretrained.load_backbone` does: never called
    return backbone


def _backbone_states(backbone, ids, segments=None):
    feed = {"token_ids": ids, "padding_mask": ids != 0}
    if "segment_ids" in backbone.input:
        feed["segment_ids"] = np.zeros_like(ids) if segments is None else segments
    out = backbone(feed)
    return _np(out["sequence_output"] if isinstance(out, dict) else out)


# --- The standard battery -----------------------------------------------------


def test_layer_basics_from_scratch_with_a_task_embedding_adapters_and_pairs():
    run_layer_test(
        SharedEncoder,
        init_kwargs={**SCRATCH, "num_tasks": 3, "task_conditioning": "embedding", "adapter_dim": 4, "separator_id": SEP},
        input_data=_feed(task=1),
        expected_output_shape=[(2, 8, 16), (2, 8)],
        # token + position + segment tables, task table, norm (2), 2 x (transformer (16) + adapter (4))
        expected_num_trainable_weights=3 + 1 + 2 + 2 * (16 + 4),
    )


def test_layer_basics_from_scratch_with_a_task_token():
    run_layer_test(
        SharedEncoder,
        init_kwargs={**SCRATCH, "num_layers": 1, "num_tasks": 2, "task_conditioning": "token"},
        input_data=_feed(task=0),
        expected_output_shape=[(2, 9, 16), (2, 9)],  # the task token is a new first position
    )


def test_layer_basics_around_a_rebuilt_backbone():
    run_layer_test(
        SharedEncoder,
        init_kwargs={"backbone": _tiny_bert(), "num_tasks": 2, "task_conditioning": "embedding", "adapter_dim": 4,
                     "separator_id": SEP},
        input_data=_feed(task=1),
        expected_output_shape=[(2, 8, 16), (2, 8)],
        run_precision_checks=False,  # the backbone keeps the dtype policy it was built with
    )


def test_layer_basics_around_a_backbone_called_as_a_whole():
    run_layer_test(
        SharedEncoder,
        init_kwargs={"backbone": _tiny_bert()},
        input_data=_feed(),
        expected_output_shape=[(2, 8, 16), (2, 8)],
        run_precision_checks=False,
    )


# --- What it computes -----------------------------------------------------------


def test_init_creates_nothing_build_creates_in_call_order():
    # Seeds of unseeded initializers and dropouts are drawn from Python's
    # `random` when created: `__init__` must draw none.
    state = random.getstate()
    encoder = SharedEncoder(**SCRATCH, num_tasks=2, task_conditioning="embedding", adapter_dim=4, separator_id=SEP)
    assert random.getstate() == state
    encoder(**_feed(task=0))
    assert [layer.name for layer in encoder.layers_in_order()] == [
        "segment_ids", "embedding", "segment_embedding", "task_embedding", "embedding_norm", "embedding_dropout",
        "encoder_0", "adapter_0", "encoder_1", "adapter_1",
    ]
    assert encoder.transformer_layers == encoder.encoder_layers


def test_a_seeded_encoder_is_reproducible():
    def states():
        keras.utils.set_random_seed(1)
        encoder = SharedEncoder(**SCRATCH, num_tasks=2, task_conditioning="token")
        return _np(encoder(**_feed(task=1))[0])

    np.testing.assert_array_equal(states(), states())


def test_the_task_changes_the_states_through_the_transformer_layers():
    encoder = SharedEncoder(**SCRATCH, num_tasks=2, task_conditioning="embedding")
    a0, a1 = (_np(encoder(**_feed(IDS[:1], t))[0]) for t in (0, 1))
    b0, b1 = (_np(encoder(**_feed(IDS[1:], t))[0]) for t in (0, 1))
    assert not np.allclose(a0, a1, atol=1e-4)
    assert not np.allclose(a0[:, :4] - a1[:, :4], b0[:, :4] - b1[:, :4], atol=1e-4)  # not a constant offset


def test_the_task_token_is_position_zero_and_unmasked():
    encoder = SharedEncoder(**SCRATCH, num_tasks=2, task_conditioning="token")
    states, mask = encoder(**_feed(task=1))
    np.testing.assert_array_equal(_np(mask), np.concatenate([np.ones((2, 1), bool), IDS != 0], axis=1))
    assert tuple(states.shape) == (2, 9, 16)


def test_pairs_read_the_segments_off_the_separator():
    encoder = SharedEncoder(**SCRATCH, separator_id=SEP)
    encoder(**_feed())
    np.testing.assert_array_equal(_np(encoder.segment_ids(IDS)), [[0, 0, 0, 0, 1, 1, 1, 1], [0] * 8])
    table = _np(encoder.segment_embedding.embeddings)
    before = _np(encoder(**_feed())[0])
    encoder.segment_embedding.embeddings.assign(np.stack([table[0], table[0]]))  # the second segment like the first
    after = _np(encoder(**_feed())[0])
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)  # a single text is all segment 0
    assert not np.allclose(after[0], before[0], atol=1e-4)


def test_the_task_ids_are_required_when_the_encoder_sees_the_task():
    encoder = SharedEncoder(**SCRATCH, num_tasks=2, adapter_dim=4)
    with pytest.raises(ValueError, match="pass `task_ids`"):
        encoder(**_feed())


# --- Around a pretrained backbone -------------------------------------------------


def _backbone(name):
    import keras_hub

    keras.utils.set_random_seed(0)
    args = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    if name == "ElectraBackbone":
        args["vocab_size"] = args.pop("vocabulary_size")
        args["embedding_dim"] = 8  # exercises embeddings_projection
    return getattr(keras_hub.models, name)(**args)


@pytest.mark.parametrize("name", sorted(REBUILDABLE_BACKBONES))
def test_the_rebuilt_forward_pass_is_the_backbones_when_the_task_adds_nothing(name):
    backbone = _backbone(name)
    assert rebuildable_kind(backbone) is not None
    encoder = SharedEncoder(backbone=backbone, num_tasks=2, task_conditioning="embedding", adapter_dim=4)
    encoder(**_feed(task=0))
    assert encoder.rebuilds_backbone and encoder.transformer_layers == list(backbone.transformer_layers)
    encoder.task_embedding.embeddings.assign(np.zeros(encoder.task_embedding.embeddings.shape, "float32"))
    states, mask = encoder(**_feed(task=1))  # adapters start as the identity
    np.testing.assert_allclose(_np(states), _backbone_states(backbone, IDS), atol=1e-5)
    np.testing.assert_array_equal(_np(mask), IDS != 0)


def test_a_backbone_called_as_a_whole_gives_its_sequence_output():
    backbone = _tiny_bert()
    encoder = SharedEncoder(backbone=backbone)
    states, _ = encoder(**_feed())
    np.testing.assert_allclose(_np(states), _backbone_states(backbone, IDS), atol=1e-6)
    assert encoder.layers_in_order() == [backbone] and encoder.transformer_layers == []
    assert encoder.trainable_weights and len(encoder.weights) == len(backbone.weights)  # shared, not copied


@pytest.mark.parametrize("conditioning", ["none", "embedding"])
def test_a_backbone_gets_the_segment_ids_of_a_pair(conditioning):
    backbone = _tiny_bert()
    sees = conditioning != "none"
    encoder = SharedEncoder(backbone=backbone, num_tasks=2 if sees else None, task_conditioning=conditioning,
                            separator_id=SEP)
    encoder(**_feed(task=0 if sees else None))
    if sees:
        encoder.task_embedding.embeddings.assign(np.zeros(encoder.task_embedding.embeddings.shape, "float32"))
    states = _np(encoder(**_feed(task=0 if sees else None))[0])
    segments = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [0] * 8], "int32")
    np.testing.assert_allclose(states, _backbone_states(backbone, IDS, segments), atol=1e-5)
    assert not np.allclose(states[0], _backbone_states(backbone, IDS)[0], atol=1e-4)


def test_adapters_follow_each_backbone_layer():
    backbone = _tiny_bert()
    encoder = SharedEncoder(backbone=backbone, num_tasks=2, adapter_dim=4)
    encoder(**_feed(task=0))
    names = [layer.name for layer in encoder.layers_in_order()]
    assert names[-4:] == ["transformer_layer_0", "adapter_0", "transformer_layer_1", "adapter_1"]
    assert "pooled_dense" not in names
    before = {t: _np(encoder(**_feed(task=t))[0]) for t in (0, 1)}
    up = _np(encoder.adapters[0].up_kernel).copy()
    up[1] = np.random.default_rng(0).normal(size=up[1].shape)  # only task 1's adapter
    encoder.adapters[0].up_kernel.assign(up)
    np.testing.assert_allclose(_np(encoder(**_feed(task=0))[0]), before[0], atol=1e-6)
    assert not np.allclose(_np(encoder(**_feed(task=1))[0]), before[1], atol=1e-4)


def test_a_saved_encoder_around_a_backbone_reproduces_its_outputs(tmp_path):
    encoder = SharedEncoder(backbone=_tiny_bert(), num_tasks=2, task_conditioning="token", adapter_dim=4,
                            separator_id=SEP, name="shared_encoder")
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    task_ids = keras.Input((), dtype="int32", name="task_ids")
    states, mask = encoder(token_ids, padding_mask, task_ids=task_ids)
    model = keras.Model([token_ids, padding_mask, task_ids], states)
    for adapter in encoder.adapters:  # make the adapters count in the round trip
        adapter.up_kernel.assign(np.random.default_rng(1).normal(size=adapter.up_kernel.shape) * 0.1)
    feed = [IDS, IDS != 0, np.array([0, 1], "int32")]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(_np(loaded(feed)), _np(model(feed)), atol=1e-6)
    config = loaded.get_layer("shared_encoder").get_config()
    assert config["backbone"]["class_name"] == "BertBackbone" and config["separator_id"] == SEP


# --- Arguments ------------------------------------------------------------------------


def test_the_config_holds_every_argument():
    args = {**SCRATCH, "dropout": 0.2, "num_tasks": 3, "task_conditioning": "token", "adapter_dim": 8,
            "separator_id": 102, "backbone": None}
    config = SharedEncoder(**args).get_config()
    assert {k: config[k] for k in args} == args


@pytest.mark.parametrize("kwargs, message", [
    ({"num_layers": 2}, "needs `vocabulary_size`"),
    ({**SCRATCH, "num_layers": -1}, "num_layers"),
    ({**SCRATCH, "hidden_dim": 0}, "hidden_dim"),
    ({**SCRATCH, "dropout": 1.0}, "dropout"),
    ({**SCRATCH, "task_conditioning": "prefix"}, "task_conditioning"),
    ({**SCRATCH, "task_conditioning": "embedding"}, "num_tasks"),
    ({**SCRATCH, "adapter_dim": -1}, "adapter_dim"),
])
def test_bad_arguments_echo_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SharedEncoder(**kwargs)


def test_a_backbone_takes_no_sizes_and_an_unknown_one_no_task():
    import keras_hub

    with pytest.raises(ValueError, match="leave `hidden_dim` unset"):
        SharedEncoder(backbone=_tiny_bert(), hidden_dim=16)
    keras.utils.set_random_seed(0)
    gpt2 = keras_hub.models.GPT2Backbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    assert rebuildable_kind(gpt2) is None
    with pytest.raises(ValueError, match="cannot put the task inside a GPT2Backbone"):
        SharedEncoder(backbone=gpt2, num_tasks=2, adapter_dim=4)
    states, _ = SharedEncoder(backbone=gpt2)(**_feed())  # called as a whole: fine
    assert tuple(states.shape) == (2, 8, 8)
