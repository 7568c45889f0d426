"""keras-mtl: multi-task learning with Transformers on Keras 3.

    import keras_mtl
    loaded = keras_mtl.load_config("configs/demo.yaml")
    report = keras_mtl.train(loaded, workdir="runs/demo")
    version_dir = keras_mtl.export("runs/demo", "saved_models/demo")
    keras_mtl.predict(version_dir, ["the brilliant chef cooked quickly near the old kitchen ."])
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_config": ("keras_mtl.config", "load_config"),
    "train": ("keras_mtl.training", "train"),
    "evaluate": ("keras_mtl.evaluation", "evaluate_run"),
    "export": ("keras_mtl.serving.export", "export"),
    "predict": ("keras_mtl.serving.predict", "predict"),
    "data_summary": ("keras_mtl.prepare", "data_summary"),
}


def __getattr__(name):
    # Lazy: `import keras_mtl` stays cheap (no TensorFlow import) until used.
    if name in _LAZY:

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'keras_mtl' has no attribute {name!r}")


__all__ = list(_LAZY)
