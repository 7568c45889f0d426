"""`train.precision`: the Keras dtype policy a run trains under, and what `auto` picks.

    from keras_mtl.precision import resolve_precision
    policy, why = resolve_precision("auto")   # e.g. ("mixed_bfloat16", "CPU with amx_bf16 ...")

`auto` picks `mixed_bfloat16` (bfloat16 compute, float32 variables; the
heads stay float32) where the matmuls have native bfloat16 units and the
backend uses them, else `float32`:

- a GPU of compute capability 8.0 or newer (A100, L4, H100, H200, ...) or a
  TPU, on any backend;
- a CPU with AMX (`amx_bf16`: Intel Sapphire Rapids and newer) or with
  `avx512_bf16` (Cooper Lake, AMD Zen 4), on TensorFlow only: oneDNN runs
  the bfloat16 matmuls on those units. Measured: 1.28x the float32
  training step on an AMX CPU (BENCHMARKS.md section 3); 1.41x and 1.34x
  the float32 tokens/s at sequence 64 and 128 on an AMD EPYC with
  `avx512_bf16` and no AMX (section 9). JAX's CPU backend was measured
  slower in bfloat16 there (0.93x and 0.85x: section 9) and PyTorch's was
  not measured, so both stay at float32 on a CPU.

`auto` never picks `mixed_float16`: it needs loss scaling and overflows where
bfloat16 does not. An explicit value is used as given.
"""

import contextlib

BF16 = "mixed_bfloat16"
FP32 = "float32"
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matmul units.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_GPU_CAPABILITY = (8, 0)


def cpu_bf16_flags(cpuinfo=None):
    """The bfloat16 matmul flags of this CPU (a subset of `CPU_BF16_FLAGS`),
    from `cpuinfo` (the text of /proc/cpuinfo; read here when None). Empty
    where the file does not exist (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return {f for f in CPU_BF16_FLAGS if f in flags}


def _capability(text):
    """(major, minor) from "8.0" or (8, 0); None when it cannot be read."""
    try:
        if isinstance(text, str):
            major, minor = text.split(".")[:2]
            return int(major), int(minor)
        return int(text[0]), int(text[1])
    except (TypeError, ValueError, IndexError):
        return None


def accelerator(backend):
    """("gpu", (major, minor) or None) | ("tpu", None) | (None, None): the first
    accelerator the backend sees."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return "gpu", _capability(details.get("compute_capability"))
        if tf.config.list_logical_devices("TPU"):
            return "tpu", None
        return None, None
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return "gpu", _capability(getattr(device, "compute_capability", None))
        if device.platform == "tpu":
            return "tpu", None
        return None, None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", tuple(torch.cuda.get_device_capability(0))
        return None, None
    return None, None


def resolve_precision(name, backend=None, device=None, cpuinfo=None):
    """(policy, why): the Keras dtype policy for `train.precision: name`.

    Args:
        name: float32 | mixed_bfloat16 | mixed_float16 | auto.
        backend: the Keras backend (default: the current one).
        device: (kind, capability) as `accelerator` returns it (default:
            asked from the backend).
        cpuinfo: the text of /proc/cpuinfo (default: read).
    """
    if name != "auto":
        return name, "train.precision"
    if backend is None:
        import keras

        backend = keras.backend.backend()
    kind, capability = accelerator(backend) if device is None else device
    if kind == "tpu":
        return BF16, "auto: a TPU"
    if kind == "gpu":
        if capability is not None and tuple(capability) >= MIN_GPU_CAPABILITY:
            return BF16, f"auto: a GPU of compute capability {capability[0]}.{capability[1]} (bfloat16 tensor cores)"
        shown = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
        return FP32, f"auto: a GPU of compute capability {shown}, below 8.0 (no bfloat16 tensor cores)"
    flags = cpu_bf16_flags(cpuinfo)
    if not flags:
        return FP32, "auto: a CPU without amx_bf16 or avx512_bf16"
    if backend != "tensorflow":
        return FP32, f"auto: a CPU with {', '.join(sorted(flags))}, but bfloat16 is measured faster there on TensorFlow only"
    units = "AMX" if "amx_bf16" in flags else "AVX-512 BF16"
    return BF16, f"auto: a CPU with {', '.join(sorted(flags))} ({units} bfloat16 matmuls)"


def set_policy(name):
    """Set Keras' global dtype policy for `train.precision: name`; returns (policy, why).
    The policy is written to the run's run.json (`RunRecord.precision`)."""
    import keras

    policy, why = resolve_precision(name)
    keras.mixed_precision.set_global_policy(policy)
    return policy, why


@contextlib.contextmanager
def policy_scope(name):
    """`set_policy(name)` for the block, and Keras' global dtype policy as it
    was after it: a `train` call leaves the caller's later models (a notebook,
    the next test) in the policy they had. Yields (policy, why)."""
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        yield set_policy(name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
