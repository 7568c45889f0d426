"""Training across devices: `train.distribution`, and multi-host setup.

* `none`: one device.
* `mirrored` (TensorFlow backend): `tf.distribute.MirroredStrategy` over all
  visible GPUs (or, without GPUs, the logical CPU devices a test creates).
* `data_parallel` (JAX backend): `keras.distribution.DataParallel` over all
  devices, of every process after `initialize_multihost()`.
* `auto`: mirrored on TensorFlow with more than one GPU, data_parallel on JAX
  with more than one device (global, all processes), else none.

`train.batch_size` is the GLOBAL batch, split evenly across replicas (it
must be divisible by their number); the learning rate is not rescaled (keep
it when you add devices at the same global batch; scale it yourself if you
scale the global batch). See docs/distributed.md.

Multi-host (JAX only): every process calls `initialize_multihost()` before
any JAX computation, with the coordinator address, the number of processes
and its own id, as arguments or from the environment:

    KERAS_MTL_COORDINATOR=10.0.0.1:1234 KERAS_MTL_NUM_PROCESSES=2 KERAS_MTL_PROCESS_ID=0 keras-mtl train ...

(`KERAS_DISTRIBUTION_JOB_ADDRESSES/_NUM_PROCESSES/_PROCESS_ID`, Keras' own
names, and `JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID` are read
too, in that order of preference).
"""

import contextlib
import os

import keras

from keras_mtl.errors import ConfigError

KINDS = ("none", "mirrored", "data_parallel")

_ENV = {
    "coordinator": ("KERAS_MTL_COORDINATOR", "KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("KERAS_MTL_NUM_PROCESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("KERAS_MTL_PROCESS_ID", "KERAS_DISTRIBUTION_PROCESS_ID", "JAX_PROCESS_ID"),
}

# The (coordinator, num_processes, process_id) this process joined, if any.
_multihost = None
# MirroredStrategy per tuple of device names (see `scope`).
_mirrored = {}
# The keras.distribution this module installed (so that a later `none` run in
# the same process removes it, but a user's own distribution is left alone).
_installed_distribution = None


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
        hint = "use 'data_parallel' on JAX" if backend == "jax" else "use 'none' (or the TensorFlow backend)"
        raise ConfigError(
            f"train.distribution: 'mirrored' needs the TensorFlow backend (this is {backend}); {hint}"
        )
    if wanted == "data_parallel" and backend != "jax":
        hint = "use 'mirrored' on TensorFlow" if backend == "tensorflow" else "use 'none' (or the JAX backend)"
        raise ConfigError(
            f"train.distribution: 'data_parallel' needs the JAX backend (this is {backend}); {hint}"
        )
    if wanted not in KINDS:
        raise ConfigError(f"train.distribution: unknown value {wanted!r}; expected auto, {', '.join(KINDS)}")
    return wanted


def scope(train_cfg):
    """A context manager to build and compile the model in. Returns (ctx, replicas).

    For `data_parallel` the Keras distribution is set globally (JAX's
    `fit` reads it to shard each batch), so build, compile and fit all see
    it; a later `none` run in the same process removes it again.
    """
    global _installed_distribution
    kind = resolve(train_cfg)
    if kind == "mirrored":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        _check_batch(train_cfg, len(devices), "devices")
        names = tuple(d.name for d in devices)
        # One strategy per device set for the whole process: a second
        # MirroredStrategy restarts the collective instance keys, and its
        # all-reduces then collide with the first one's ("Shape mismatch in
        # the collective instance 100") when train() runs twice in a process.
        strategy = _mirrored.get(names)
        if strategy is None:
            strategy = _mirrored[names] = tf.distribute.MirroredStrategy(list(names))
        return strategy.scope(), strategy.num_replicas_in_sync
    if kind == "data_parallel":
        devices = keras.distribution.list_devices()
        _check_batch(train_cfg, len(devices), "devices")
        if _is_multiprocess():
            import jax

            _check_batch(train_cfg, jax.process_count(), "processes")
        # Several processes: each feeds its own slice of the global batch
        # (`prepare_dataset`); Keras' auto-sharding needs a dataset whose
        # batch size it can read, which the bucketed pipeline's is not.
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not _is_multiprocess())
        keras.distribution.set_distribution(distribution)
        _installed_distribution = distribution
        return contextlib.nullcontext(), len(devices)
    _remove_installed_distribution()
    return contextlib.nullcontext(), 1


def _remove_installed_distribution():
    global _installed_distribution
    if _installed_distribution is not None and _backend() == "jax":
        if keras.distribution.distribution() is _installed_distribution:
            keras.distribution.set_distribution(None)
    _installed_distribution = None


def _check_batch(train_cfg, replicas, what="replicas"):
    if replicas > 1 and train_cfg.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) must be divisible by the number of "
            f"replicas ({replicas} {what}): it is the global batch, split evenly. "
            f"Use a multiple of {replicas}, e.g. train.batch_size={replicas * max(1, train_cfg.batch_size // replicas)}"
        )


# --------------------------------------------------------------------------
# Multi-host (JAX)
# --------------------------------------------------------------------------


def _from_env(key):
    for name in _ENV[key]:
        value = os.environ.get(name)
        if value not in (None, ""):
            return value, name
    return None, None


def _as_int(value, name, minimum):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {number}")
    return number


def multihost_settings(coordinator=None, num_processes=None, process_id=None):
    """(coordinator, num_processes, process_id) from the arguments or the
    environment; None when multi-host is not requested (no coordinator and
    at most one process)."""
    sources = {}
    if coordinator is None:
        coordinator, sources["coordinator"] = _from_env("coordinator")
    if num_processes is None:
        num_processes, sources["num_processes"] = _from_env("num_processes")
    if process_id is None:
        process_id, sources["process_id"] = _from_env("process_id")
    n_name = sources.get("num_processes") or "num_processes"
    p_name = sources.get("process_id") or "process_id"
    if num_processes is not None:
        num_processes = _as_int(num_processes, n_name, 1)
    if process_id is not None:
        process_id = _as_int(process_id, p_name, 0)
    if not coordinator and (num_processes or 1) <= 1:
        return None
    if not coordinator:
        raise ConfigError(
            f"multi-host training: {num_processes} processes but no coordinator address; "
            "set KERAS_MTL_COORDINATOR=host:port (the address of process 0)"
        )
    # Keras' KERAS_DISTRIBUTION_JOB_ADDRESSES may list every job: the first is the coordinator.
    coordinator = str(coordinator).split(",")[0].strip()
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"multi-host training: coordinator {coordinator!r} must be host:port (e.g. 10.0.0.1:1234)"
        )
    if (num_processes is None) != (process_id is None):
        raise ConfigError(
            "multi-host training: set both the number of processes and this process's id "
            "(KERAS_MTL_NUM_PROCESSES and KERAS_MTL_PROCESS_ID), or neither (cluster auto-detection)"
        )
    if num_processes is not None and process_id >= num_processes:
        raise ConfigError(
            f"multi-host training: process id {process_id} out of range for {num_processes} processes "
            f"(ids are 0..{num_processes - 1})"
        )
    return coordinator, num_processes, process_id


def initialize_multihost(coordinator=None, num_processes=None, process_id=None):
    """Join a multi-process JAX job if one is configured; a no-op otherwise.

    Must run before any JAX computation (before the model is built). Reads
    the arguments, else `KERAS_MTL_COORDINATOR`, `KERAS_MTL_NUM_PROCESSES`,
    `KERAS_MTL_PROCESS_ID` (or Keras' `KERAS_DISTRIBUTION_*`, or
    `JAX_COORDINATOR_ADDRESS`/`JAX_NUM_PROCESSES`/`JAX_PROCESS_ID`).
    Calls `keras.distribution.initialize` (which also agrees on one random
    seed across processes). Calling it again with the same settings is a
    no-op.

    Returns:
        (coordinator, num_processes, process_id), or None when no
        multi-host job is configured.

    Raises:
        ConfigError: on TensorFlow/PyTorch, on bad settings, or when the
            processes cannot connect.
    """
    global _multihost
    settings = multihost_settings(coordinator, num_processes, process_id)
    if settings is None:
        return None
    if _multihost is not None:
        if settings != _multihost:
            raise ConfigError(
                f"multi-host training: this process already joined {_multihost}; cannot join {settings}"
            )
        return _multihost
    backend = _backend()
    if backend != "jax":
        raise ConfigError(
            f"multi-host training (coordinator {settings[0]}) needs the JAX backend (this is {backend}); "
            "set KERAS_BACKEND=jax, or unset KERAS_MTL_COORDINATOR / KERAS_MTL_NUM_PROCESSES"
        )
    try:
        keras.distribution.initialize(settings[0], settings[1], settings[2])
    except Exception as e:  # jax raises RuntimeError/XlaRuntimeError with the reason
        raise ConfigError(
            f"multi-host training: cannot join the job at {settings[0]} as process "
            f"{settings[2]} of {settings[1]}: {type(e).__name__}: {str(e)[:500]}"
        ) from None
    _multihost = settings
    return settings


def process_info():
    """(process_id, num_processes) of this process (0, 1 without multi-host)."""
    if _multihost is not None and _backend() == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def is_chief():
    """Whether this process writes the run's files (process 0)."""
    return process_info()[0] == 0


def _is_multiprocess():
    if _multihost is None or _backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def input_share(train_cfg):
    """(num_processes, process_id) of the training input: how many processes each
    feed a part of every global batch, and which this one is. (1, 0) unless
    `data_parallel` runs over several JAX processes."""
    if resolve(train_cfg) == "data_parallel" and _is_multiprocess():
        import jax

        _check_batch(train_cfg, jax.process_count(), "processes")
        return jax.process_count(), jax.process_index()
    return 1, 0


def local_batches(dataset, num_processes, *, pad_id, length, loss_normalizer):
    """A process's own training batches, made ready to be one part of the global batch.

    Every process's batches must have the same shape (JAX assembles the
    global batch from them), but each process buckets its own rows: every
    tensor with a length dimension (token ids, padding mask, a tagging
    task's labels and weights) is padded to `length` (the longest bucket
    length), with `pad_id` for the token ids and 0 (False) elsewhere, which
    the model masks. With `loss_normalizer: expected` the weights were
    divided by the expected label weight of a batch of this process's
    `batch_size / num_processes` rows; they are divided by `num_processes`
    too, so that the loss of the global batch is normalized by the global
    batch (`data.pipeline.train_dataset`).
    """
    import tensorflow as tf

    scale = 1.0 / num_processes if loss_normalizer == "expected" else None

    def pad(t, value):
        if t.shape.rank is None or t.shape.rank < 2 or t.shape[1] is not None:
            return t
        padded = tf.pad(t, [[0, 0], [0, length - tf.shape(t)[1]]] + [[0, 0]] * (t.shape.rank - 2),
                        constant_values=tf.cast(value, t.dtype))
        return tf.ensure_shape(padded, [t.shape[0], length, *t.shape[2:]])

    def ready(x, y, sw):
        x = {k: pad(v, pad_id if k == "token_ids" else 0) for k, v in x.items()}
        y = {k: pad(v, 0) for k, v in y.items()}
        sw = {k: pad(v, 0) for k, v in sw.items()}
        if scale is not None:
            sw = {k: v * tf.cast(scale, v.dtype) for k, v in sw.items()}
        return x, y, sw

    return dataset.map(ready, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def prepare_dataset(dataset, train_cfg, *, local=False, pad_id=0, length=None):
    """Adapt the training `tf.data.Dataset` to the distribution in use.

    `mirrored`: Keras (3.x) reduces the first distributed batch with
    `strategy.reduce("MEAN", ...)` to build the model symbolically, which
    fails on bool tensors (`AddN` has no bool kernel): the bool
    `padding_mask` is sent as int32 (0/1) instead; the model's bool
    `padding_mask` input casts it back.

    `data_parallel` over several processes: with `local`, the dataset is
    already this process's part of every global batch (its own rows, a
    batch of `batch_size / processes`: `input_share`), padded here to
    `length` (`local_batches`). Otherwise every process built the same
    global batches (same seed) and keeps its own contiguous slice of
    `batch_size / processes` rows (process 0 the first). JAX assembles the
    global batch from the processes' parts. (Keras' own auto-sharding
    cannot read the batch size of a bucketed dataset: "The batch size of
    the input dataset is unknown".)

    Other distributions: unchanged.
    """
    kind = resolve(train_cfg)
    if kind == "data_parallel" and _is_multiprocess():
        import jax
        import tensorflow as tf

        processes, index = jax.process_count(), jax.process_index()
        _check_batch(train_cfg, processes, "processes")
        if local:
            return local_batches(dataset, processes, pad_id=pad_id, length=length,
                                 loss_normalizer=getattr(train_cfg, "loss_normalizer", "batch"))
        per = train_cfg.batch_size // processes

        def local_slice(*batch):
            return tf.nest.map_structure(lambda t: t[index * per : (index + 1) * per], batch)

        return dataset.map(local_slice, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if kind != "mirrored":
        return dataset
    import tensorflow as tf

    def as_int(x, *rest):
        x = {k: tf.cast(v, tf.int32) if v.dtype == tf.bool else v for k, v in x.items()} if isinstance(x, dict) else x
        return (x, *rest)

    return dataset.map(as_int, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def replicas_in_sync():
    """The number of replicas a train step's batch is split over: the
    `tf.distribute` strategy's on TensorFlow, else 1 (JAX shards one global
    batch)."""
    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1


def global_gradient_clipping(optimizer):
    """Take the gradient clipping out of `optimizer` under a multi-replica `tf.distribute` strategy.

    Keras (3.x) on TensorFlow clips each replica's partial gradient
    (`clipnorm`/`global_clipnorm`/`clipvalue`) BEFORE summing them across
    replicas (`optimizer.apply` clips, then all-reduces), so with 2 replicas
    `clipnorm=1.0` lets a gradient of norm up to 2 through and training
    differs from one device at the same global batch. Call this once the
    optimizer is compiled, in the strategy's scope: with more than one
    replica it sets the optimizer's clipping attributes to None and returns
    `clip(grads)`, which a train step applies to its replica's gradients
    before `optimizer.apply`; otherwise (one replica, other backends: JAX
    `data_parallel` already clips the global gradient; no clipping) it
    returns None and leaves the optimizer alone. `clip.optimizer` is the
    optimizer whose clipping it took (the inner one of a loss-scale optimizer).

    `clip` computes the norms of the global gradient exactly as one device
    would: a dense gradient's norm is the norm of the replicas' sum; an
    `IndexedSlices` gradient (embeddings), whose norm on one device is that
    of all its slices, gets the square root of the all-reduced sum of the
    replicas' squared slice norms. Each replica's gradient is then scaled by
    the global factor, and the optimizer's own all-reduce sums them.
    `clipvalue` clips the summed gradient and hands each replica 1/N of it.
    Norms and values are those of the unscaled gradient (`scale_loss`) under
    a loss-scale optimizer.
    """
    if _backend() != "tensorflow" or replicas_in_sync() <= 1:
        return None
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    clipnorm, global_clipnorm, clipvalue = inner.clipnorm, inner.global_clipnorm, inner.clipvalue
    if not (clipnorm or global_clipnorm or clipvalue):
        return None
    inner.clipnorm = inner.global_clipnorm = inner.clipvalue = None
    import tensorflow as tf

    SUM = tf.distribute.ReduceOp.SUM

    def clip(grads):
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        scale = tf.cast(optimizer.scale_loss(tf.ones((), tf.float32)), tf.float32)
        present = [i for i, g in enumerate(grads) if g is not None]
        out = list(grads)
        if clipvalue:
            # Dense first: an all-reduce of IndexedSlices all-gathers slices
            # whose sizes differ per replica, which the collective refuses.
            summed = ctx.all_reduce(SUM, [tf.convert_to_tensor(grads[i]) for i in present])
            for i, g in zip(present, summed):
                clipped = tf.clip_by_value(g / tf.cast(scale, g.dtype), -clipvalue, clipvalue) * tf.cast(scale, g.dtype)
                out[i] = _scale(clipped, 1.0 / replicas)
            return out
        dense = [i for i in present if not isinstance(grads[i], tf.IndexedSlices)]
        sliced = [i for i in present if isinstance(grads[i], tf.IndexedSlices)]
        squares = {}
        if dense:
            summed = ctx.all_reduce(SUM, [grads[i] for i in dense])
            for i, g in zip(dense, summed):
                squares[i] = tf.reduce_sum(tf.square(tf.cast(g, tf.float32)))
        if sliced:
            partial = [tf.reduce_sum(tf.square(tf.cast(grads[i].values, tf.float32))) for i in sliced]
            for i, sq in zip(sliced, ctx.all_reduce(SUM, partial)):
                squares[i] = sq
        if clipnorm:
            limit = tf.constant(clipnorm, tf.float32)
            for i in present:
                out[i] = _scale(grads[i], limit / tf.maximum(_safe_sqrt(squares[i]) / scale, limit))
        else:
            limit = tf.constant(global_clipnorm, tf.float32)
            total = _safe_sqrt(tf.add_n([squares[i] for i in present])) / scale
            factor = limit / tf.maximum(total, limit)
            for i in present:
                out[i] = _scale(grads[i], factor)
        return out

    clip.optimizer = inner  # the optimizer whose clipping it took
    return clip


def _safe_sqrt(square):
    import tensorflow as tf

    return tf.where(square > 0, tf.sqrt(tf.where(square > 0, square, tf.ones_like(square))), square)


def _scale(grad, factor):
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * tf.cast(factor, grad.values.dtype), grad.indices, grad.dense_shape)
    return grad * tf.cast(factor, grad.dtype)
