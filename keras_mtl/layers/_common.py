"""What several keras-mtl layers share: argument checks, stacked per-slice
weights and `get_config` entries."""

import keras
from keras import ops


def check_positive_ints(optional=False, **values):
    """Raise `ValueError` unless each of `values` is a positive int (or `None` when `optional`)."""
    for name, value in values.items():
        if optional and value is None:
            continue
        if not isinstance(value, int) or value < 1:
            allowed = "a positive integer or `None`" if optional else "a positive integer"
            raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value}")


def check_dropout(dropout):
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")


def last_axis(shape, what="the input", arg="inputs_shape"):
    """`shape[-1]`; `ValueError` when it is not defined."""
    if shape[-1] is None:
        raise ValueError(f"The last axis of {what} must be defined. Received: {arg}={shape}")
    return shape[-1]


def multi_head_attention(layer, key_dim, name):
    """A `MultiHeadAttention` sublayer with `layer`'s heads, dropout, kernel initializer and dtype policy."""
    return keras.layers.MultiHeadAttention(
        num_heads=layer.num_heads,
        key_dim=key_dim,
        dropout=layer.dropout,
        kernel_initializer=layer.kernel_initializer,
        dtype=layer.dtype_policy,
        name=name,
    )


def _slice_initializer(initializer, index):
    """A copy of `initializer` that draws different values for slice `index`.

    Keras initializers seeded with an int (or unseeded, which means a fixed
    default int seed) return the same values on every call, which would make
    all experts (or all tasks' adapters) identical. Offsetting the seed by the
    slice index keeps the initialization reproducible yet different per
    slice.
    """
    seed = getattr(initializer, "seed", None)
    if isinstance(seed, int) and not isinstance(seed, bool):
        config = initializer.get_config()
        config["seed"] = seed + index
        return initializer.__class__.from_config(config)
    return initializer


def stacked_initializer(initializer, num_slices):
    """Initializer for a `[num_slices, *shape]` weight, one slice at a time.

    Each slice is initialized as if it were its own `shape` weight, so fan-in
    based initializers (`"glorot_uniform"`, `"he_normal"`, ...) get the fans
    of one expert / one task instead of fans inflated by `num_slices`.
    """
    initializer = keras.initializers.get(initializer)

    def initialize(shape, dtype=None):
        slices = [
            _slice_initializer(initializer, i)(tuple(shape[1:]), dtype=dtype)
            for i in range(num_slices)
        ]
        return ops.stack(slices, axis=0)

    return initialize


def add_weights(layer, weights):
    """`layer.add_weight` for each `(name, shape, initializer)`, in order, set as `layer.<name>`."""
    for name, shape, initializer in weights:
        setattr(layer, name, layer.add_weight(name=name, shape=shape, initializer=initializer))


def config_entries(layer, *names):
    """The `get_config` entries of `layer`'s attributes `names`, in order:
    initializers and activations serialized, other values as they are."""
    config = {}
    for name in names:
        value = getattr(layer, name)
        if isinstance(value, keras.initializers.Initializer):
            value = keras.initializers.serialize(value)
        elif callable(value):
            value = keras.activations.serialize(value)
        config[name] = value
    return config
