"""Training across devices: `train.distribution`.

* `none`: one device.
* `mirrored` (TensorFlow backend): `tf.distribute.MirroredStrategy` over all
  visible GPUs (or the logical CPU devices a test creates).
* `data_parallel` (JAX backend): `keras.distribution.DataParallel` over all
  devices; for several hosts call `keras.distribution.initialize()` first
  (coordinator address, process count and id from flags or the
  `KERAS_DISTRIBUTION_*` environment), see the README.
* `auto`: mirrored on TensorFlow with more than one GPU, data_parallel on JAX
  with more than one device, else none.

`train.batch_size` is the GLOBAL batch, split evenly across replicas; the
learning rate is not rescaled (keep it when you add devices at the same
global batch; scale it linearly if you scale the global batch).
"""

import contextlib

import keras

from keras_mtl.errors import ConfigError


def _backend():
    return keras.backend.backend()


def resolve(train_cfg):
    """The distribution actually used: none | mirrored | data_parallel."""
    wanted = train_cfg.distribution
    backend = _backend()
    if wanted == "auto":
        if backend == "tensorflow":
            import tensorflow as tf

            return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
        if backend == "jax":
            import jax

            return "data_parallel" if jax.device_count() > 1 else "none"
        return "none"
    if wanted == "mirrored" and backend != "tensorflow":
        raise ConfigError(
            f"train.distribution: 'mirrored' needs the TensorFlow backend (this is {backend}); "
            "use 'data_parallel' on JAX"
        )
    if wanted == "data_parallel" and backend != "jax":
        raise ConfigError(
            f"train.distribution: 'data_parallel' needs the JAX backend (this is {backend}); "
            "use 'mirrored' on TensorFlow"
        )
    return wanted


def scope(train_cfg):
    """A context manager to build and compile the model in. Returns (ctx, replicas)."""
    kind = resolve(train_cfg)
    if kind == "mirrored":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        _check_batch(train_cfg, strategy.num_replicas_in_sync)
        return strategy.scope(), strategy.num_replicas_in_sync
    if kind == "data_parallel":
        devices = keras.distribution.list_devices()
        _check_batch(train_cfg, len(devices))
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    return contextlib.nullcontext(), 1


def _check_batch(train_cfg, replicas):
    if train_cfg.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) must be divisible by the number of "
            f"replicas ({replicas}): it is the global batch, split evenly"
        )
