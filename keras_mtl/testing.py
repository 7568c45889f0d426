"""Test helpers for keras-mtl layers (modelled on keras-hub's `TestCase`).

`run_layer_test` is a plain function (usable from pytest tests) that runs the
standard battery of checks every keras-mtl layer must pass on every backend:

1. `get_config()` / `from_config()` round trip, and
   `keras.saving.serialize_keras_object` / `deserialize_keras_object` round
   trip, give identical configs.
2. A symbolic call (on `keras.KerasTensor`s with the full input shape) gives
   the expected output shape and the layer's compute dtype.
3. An eager call gives the expected output shape (and optionally values).
4. The layer called on `keras.Input`s (`None` batch dimension) gives the
   expected symbolic output shapes, and the tiny functional model built that
   way survives a `.keras` save/load round trip: the reloaded model gives
   the same outputs.
5. One `model.fit` step on random targets runs (compiled with the backend's
   default jit setting).
6. Under the `mixed_bfloat16` policy, float outputs have the compute dtype
   (bfloat16), float variables the variable dtype (float32), and every
   sublayer carries the layer's dtype policy. The layer is executed on
   TensorFlow (and PyTorch); on JAX its call is traced only (see
   `run_precision_test`).

How `input_data` is passed to the layer:

- a single tensor: `layer(x)`;
- a dict: `layer(**input_data)` (keyword arguments, keras-hub convention);
- a list or tuple: `layer(*input_data)` (positional arguments).
"""

import json
import os
import tempfile

import keras
import numpy as np
from keras import ops
from keras import tree


def _to_numpy(x):
    return ops.convert_to_numpy(x)


def _call(layer, data, **kwargs):
    if isinstance(data, dict):
        return layer(**data, **kwargs)
    if isinstance(data, (list, tuple)):
        return layer(*data, **kwargs)
    return layer(data, **kwargs)


def _shape_structure(outputs):
    return tree.map_structure(
        lambda x: None if x is None else tuple(x.shape), outputs
    )


def _normalize_expected_shape(shape):
    """Tuples of ints, or a list/dict of them (keras.tree would flatten)."""
    if isinstance(shape, dict):
        return {k: _normalize_expected_shape(v) for k, v in shape.items()}
    if isinstance(shape, list) or (
        isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)
    ):
        return [_normalize_expected_shape(s) for s in shape]
    return tuple(shape)


def _normalize_actual_shape(shapes):
    if isinstance(shapes, dict):
        return {k: _normalize_actual_shape(v) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and (
        shapes and isinstance(shapes[0], (tuple, list))
    ):
        return [_normalize_actual_shape(s) for s in shapes]
    return tuple(shapes)


def _is_float(dtype):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))


def _std(dtype):
    return keras.backend.standardize_dtype(dtype)


def _assert_output_dtypes(layer, outputs, where):
    for out in tree.flatten(outputs):
        if out is None or not _is_float(out.dtype):
            continue
        assert _std(out.dtype) == _std(layer.compute_dtype), (
            f"{where}: output dtype {_std(out.dtype)} != layer compute dtype "
            f"{_std(layer.compute_dtype)}"
        )


def run_serialization_test(layer):
    """Check that config and serialization round trips are idempotent."""
    cls = layer.__class__
    cfg = layer.get_config()
    cfg_json = json.dumps(cfg, sort_keys=True, indent=2)
    revived = cls.from_config(cfg)
    revived_json = json.dumps(revived.get_config(), sort_keys=True, indent=2)
    assert cfg_json == revived_json, "get_config/from_config round trip"

    serialized = keras.saving.serialize_keras_object(layer)
    serialized_json = json.dumps(serialized, sort_keys=True, indent=2)
    revived = keras.saving.deserialize_keras_object(json.loads(serialized_json))
    assert isinstance(revived, cls), type(revived)
    revived_json = json.dumps(revived.get_config(), sort_keys=True, indent=2)
    assert cfg_json == revived_json, "serialize/deserialize round trip"


def _build_functional_model(layer, input_data):
    """Wrap `layer` in a functional model with `None` batch dimension."""

    def make_input(x, name):
        x = np.asarray(_to_numpy(x))
        return keras.Input(
            shape=x.shape[1:], dtype=_std(x.dtype), name=name
        )

    if isinstance(input_data, dict):
        inputs = {k: make_input(v, k) for k, v in input_data.items()}
    elif isinstance(input_data, (list, tuple)):
        inputs = [
            make_input(v, f"input_{i}") for i, v in enumerate(input_data)
        ]
    else:
        inputs = make_input(input_data, "input_0")
    outputs = _call(layer, inputs)
    return keras.Model(inputs, outputs)


def _model_inputs(input_data):
    data = tree.map_structure(_to_numpy, input_data)
    if isinstance(data, tuple):
        data = list(data)
    return data


def _symbolic(input_data):
    return tree.map_structure(
        lambda x: keras.KerasTensor(
            tuple(x.shape), dtype=_std(_to_numpy(x).dtype)
        ),
        input_data,
    )


def _traced_outputs(layer, symbolic_inputs):
    """Output specs from tracing `layer.__call__` (dtype promotion included).

    Unlike `layer.compute_output_spec`, this does not shortcut through
    `compute_output_shape`, so the dtypes are those the backend really
    produces, but nothing is compiled or executed.
    """
    # `keras.Operation.compute_output_spec` traces `call` with the backend's
    # `compute_output_spec` (public API for the private function it wraps).
    return _Traced(lambda data: _call(layer, data)).compute_output_spec(symbolic_inputs)


class _Traced(keras.Operation):
    """An operation whose `call` is `fn`: traced, never executed."""

    def __init__(self, fn):
        super().__init__(name="traced")
        self.fn = fn

    def call(self, data):
        return self.fn(data)


def run_precision_test(
    layer_cls,
    init_kwargs,
    input_data,
    policies=("mixed_bfloat16",),
    execute=None,
):
    """Check output, weight and sublayer dtypes under reduced precision.

    Args:
        layer_cls: class. The layer class under test.
        init_kwargs: dict. Keyword arguments for `layer_cls(...)`.
        input_data: as for `run_layer_test`.
        policies: sequence of dtype policy names. Defaults to
            `("mixed_bfloat16",)`.
        execute: bool. Run the layer eagerly (`True`) or only trace its call
            (`False`; same dtype promotion rules, nothing compiled). Defaults
            to `None`: execute except on JAX, where every op would be
            compiled again in bfloat16 (slow on CPU) and XLA supports
            bfloat16 for every op anyway.
    """
    if execute is None:
        execute = keras.backend.backend() != "jax"
    for policy_name in policies:
        policy = keras.DTypePolicy(policy_name)
        layer = layer_cls(**{**init_kwargs, "dtype": policy})
        symbolic_inputs = _symbolic(input_data)
        _call(layer, symbolic_inputs)  # builds the layer
        if execute:
            outputs = _call(layer, input_data)
        else:
            outputs = _traced_outputs(layer, symbolic_inputs)
        for out in tree.flatten(outputs):
            if out is not None and _is_float(out.dtype):
                assert _std(out.dtype) == policy.compute_dtype, (
                    f"{policy_name}: output dtype {_std(out.dtype)}"
                )
        for weight in layer.weights:
            if _is_float(weight.dtype):
                assert _std(weight.dtype) == policy.variable_dtype, (
                    f"{policy_name}: weight {weight.path} has dtype "
                    f"{_std(weight.dtype)}"
                )
        for sublayer in layer._flatten_layers(include_self=False):
            if isinstance(
                sublayer, (keras.layers.Softmax, keras.layers.InputLayer)
            ):
                continue
            assert sublayer.compute_dtype == policy.compute_dtype, (
                f"{policy_name}: sublayer {sublayer.name} computes in "
                f"{sublayer.compute_dtype}"
            )
            assert sublayer.variable_dtype == policy.variable_dtype, (
                f"{policy_name}: sublayer {sublayer.name} stores "
                f"{sublayer.variable_dtype}"
            )


def run_layer_test(
    layer_cls, init_kwargs, input_data, expected_output_shape=None, expected_output_data=None,
    expected_num_trainable_weights=None, expected_num_non_trainable_weights=None, run_saving_check=True,
    run_training_check=True, run_precision_checks=True, atol=1e-5, rtol=1e-5,
):
    """Run the standard checks for a keras-mtl layer (see module docstring).

    Args:
        layer_cls: class. The layer class under test.
        init_kwargs: dict. Keyword arguments for `layer_cls(...)`.
        input_data: tensor, dict or list of tensors (with a leading batch
            axis). A dict is passed as keyword arguments, a list/tuple as
            positional arguments.
        expected_output_shape: tuple, or a list/dict of tuples for layers
            with several outputs. Full shapes including the batch axis.
            Defaults to `None` (shape not checked beyond consistency between
            symbolic and eager calls).
        expected_output_data: optional structure of arrays the eager call
            must match (within `atol`/`rtol`). Defaults to `None`.
        expected_num_trainable_weights: int. Checked when not `None`.
        expected_num_non_trainable_weights: int. Checked when not `None`.
        run_saving_check: bool. Run the `.keras` save/load round trip.
            Defaults to `True`.
        run_training_check: bool. Run one `model.fit` step. Defaults to
            `True`.
        run_precision_checks: bool. Run the `mixed_bfloat16` policy checks.
            Defaults to `True`.
        atol: float. Absolute tolerance of value comparisons.
        rtol: float. Relative tolerance of value comparisons.
    """
    # 1. Serialization.
    run_serialization_test(layer_cls(**init_kwargs))

    if expected_output_shape is not None:
        expected_output_shape = _normalize_expected_shape(
            expected_output_shape
        )

    def check_weights(layer):
        assert layer.built, "layer is not built after being called"
        if expected_num_trainable_weights is not None:
            assert (
                len(layer.trainable_weights) == expected_num_trainable_weights
            ), (
                f"expected {expected_num_trainable_weights} trainable "
                f"weights, got {len(layer.trainable_weights)}: "
                f"{[w.path for w in layer.trainable_weights]}"
            )
        if expected_num_non_trainable_weights is not None:
            assert (
                len(layer.non_trainable_weights)
                == expected_num_non_trainable_weights
            ), (
                f"expected {expected_num_non_trainable_weights} "
                f"non-trainable weights, got "
                f"{len(layer.non_trainable_weights)}"
            )

    def check_shape(outputs, where):
        if expected_output_shape is None:
            return
        actual = _normalize_actual_shape(_shape_structure(outputs))
        assert actual == expected_output_shape, (
            f"{where}: expected output shape {expected_output_shape}, "
            f"got {actual}"
        )

    # 2. Symbolic call on KerasTensors with full shapes.
    symbolic_inputs = _symbolic(input_data)
    layer = layer_cls(**init_kwargs)
    symbolic_outputs = _call(layer, symbolic_inputs)
    check_weights(layer)
    check_shape(symbolic_outputs, "symbolic call")
    _assert_output_dtypes(layer, symbolic_outputs, "symbolic call")

    # 3. Eager call.
    layer = layer_cls(**init_kwargs)
    eager_outputs = _call(layer, input_data)
    check_weights(layer)
    check_shape(eager_outputs, "eager call")
    _assert_output_dtypes(layer, eager_outputs, "eager call")
    if expected_output_shape is None:
        assert _normalize_actual_shape(
            _shape_structure(symbolic_outputs)
        ) == _normalize_actual_shape(_shape_structure(eager_outputs)), (
            "symbolic and eager output shapes differ"
        )
    if expected_output_data is not None:
        tree.map_structure(
            lambda e, a: np.testing.assert_allclose(
                _to_numpy(a), _to_numpy(e), atol=atol, rtol=rtol
            ),
            expected_output_data,
            eager_outputs,
        )

    # 4. Functional model with `None` batch axis, `.keras` round trip.
    layer = layer_cls(**init_kwargs)
    model = _build_functional_model(layer, input_data)
    if expected_output_shape is not None and not isinstance(
        expected_output_shape, dict
    ):
        expected_list = (
            expected_output_shape
            if isinstance(expected_output_shape, list)
            else [expected_output_shape]
        )
        symbolic_shapes = [tuple(out.shape) for out in model.outputs]
        assert symbolic_shapes == [(None,) + s[1:] for s in expected_list], (
            f"keras.Input call: expected output shapes "
            f"{[(None,) + s[1:] for s in expected_list]}, "
            f"got {symbolic_shapes}"
        )
    model_inputs = _model_inputs(input_data)
    outputs = tree.map_structure(_to_numpy, model(model_inputs))
    check_shape(outputs, "functional model")
    if run_saving_check:
        with tempfile.TemporaryDirectory() as tmp_dir:
            path = os.path.join(tmp_dir, "model.keras")
            model.save(path)
            restored = keras.saving.load_model(path)
        restored_layers = [
            sub for sub in restored.layers if isinstance(sub, layer_cls)
        ]
        assert len(restored_layers) == 1, (
            f"reloaded model has no {layer_cls.__name__} layer"
        )
        assert restored_layers[0].get_config() == layer.get_config(), (
            "config changed through .keras save/load"
        )
        restored_outputs = tree.map_structure(
            _to_numpy, restored(model_inputs)
        )
        tree.map_structure(
            lambda a, b: np.testing.assert_allclose(
                _to_numpy(b), _to_numpy(a), atol=atol, rtol=rtol
            ),
            outputs,
            restored_outputs,
        )

    # 5. One training step on random targets.
    if run_training_check:
        rng = np.random.default_rng(0)
        targets = tree.map_structure(
            lambda y: rng.standard_normal(np.shape(y)).astype("float32"),
            outputs,
        )
        if isinstance(targets, tuple):
            targets = list(targets)
        model.compile(optimizer="sgd", loss="mse")
        batch_size = int(np.shape(tree.flatten(model_inputs)[0])[0])
        history = model.fit(
            model_inputs, targets, batch_size=batch_size, epochs=1, verbose=0
        )
        loss = history.history["loss"][-1]
        assert np.isfinite(loss), f"training loss is not finite: {loss}"

    # 6. Reduced precision.
    if run_precision_checks:
        run_precision_test(layer_cls, init_kwargs, input_data)
