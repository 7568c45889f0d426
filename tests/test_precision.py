"""`train.precision`, and what `auto` picks (keras_mtl/precision.py)."""

import json

import pytest

from keras_mtl.precision import BF16, FP32, cpu_bf16_flags, resolve_precision

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"  # arm64: no x86 bf16 flags


def test_cpu_bf16_flags_from_cpuinfo():
    assert cpu_bf16_flags(SAPPHIRE_RAPIDS) == {"amx_bf16", "avx512_bf16"}
    assert cpu_bf16_flags(ZEN4) == {"avx512_bf16"}
    assert cpu_bf16_flags(SKYLAKE) == set()
    assert cpu_bf16_flags(GRAVITON3) == set()
    assert cpu_bf16_flags("") == set()
    assert cpu_bf16_flags() <= {"amx_bf16", "avx512_bf16"}  # this machine's, read from /proc/cpuinfo


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_used_as_given(name):
    assert resolve_precision(name, backend="jax", device=("gpu", (7, 0)), cpuinfo=SKYLAKE) == (name, "train.precision")


@pytest.mark.parametrize(
    "backend, device, cpuinfo, want, why",
    [
        ("tensorflow", (None, None), SAPPHIRE_RAPIDS, BF16, "amx_bf16, avx512_bf16"),
        ("tensorflow", (None, None), ZEN4, BF16, "AVX-512 BF16 bfloat16 matmuls"),  # 1.34-1.41x: BENCHMARKS 9
        ("jax", (None, None), ZEN4, FP32, "faster there on TensorFlow only"),  # 0.85-0.93x there
        ("tensorflow", (None, None), SKYLAKE, FP32, "without amx_bf16 or avx512_bf16"),
        ("jax", (None, None), SAPPHIRE_RAPIDS, FP32, "faster there on TensorFlow only"),
        ("torch", (None, None), SAPPHIRE_RAPIDS, FP32, "faster there on TensorFlow only"),
        ("jax", ("gpu", (9, 0)), SKYLAKE, BF16, "compute capability 9.0"),
        ("torch", ("gpu", (8, 0)), SKYLAKE, BF16, "compute capability 8.0"),
        ("tensorflow", ("gpu", (7, 5)), SAPPHIRE_RAPIDS, FP32, "7.5, below 8.0"),  # T4: the GPU decides, not the CPU
        ("tensorflow", ("gpu", None), SKYLAKE, FP32, "unknown"),
        ("jax", ("tpu", None), SKYLAKE, BF16, "TPU"),
    ],
)
def test_auto_picks_bfloat16_where_the_device_has_native_bfloat16_matmuls(backend, device, cpuinfo, want, why):
    policy, reason = resolve_precision("auto", backend=backend, device=device, cpuinfo=cpuinfo)
    assert policy == want
    assert reason.startswith("auto: ") and why in reason


def test_auto_is_the_default_and_other_values_are_refused(tiny_config):
    from keras_mtl.config import config_from_dict
    from keras_mtl.errors import ConfigError

    raw = tiny_config("embedding")
    raw.get("train", {}).pop("precision", None)
    assert config_from_dict(raw).config.train.precision == "auto"  # the default (BENCHMARKS.md 9b)
    assert config_from_dict(raw, overrides=["train.precision=auto"]).config.train.precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict(raw, overrides=["train.precision=bfloat16"])


def test_a_run_records_the_policy_it_trained_under(tmp_path, tiny_config, interrupt_after):
    """`auto` is resolved on this machine; run.json names the policy, and the
    model's heads stay float32 under bfloat16. The caller's global policy is
    the same after `train` as before it, whatever the run trained under."""
    import keras

    from keras_mtl.training import train
    from keras_mtl.run import load_run

    want, _ = resolve_precision("auto")
    try:
        for caller in ("float32", "mixed_float16"):
            keras.mixed_precision.set_global_policy(caller)
            train(tiny_config("embedding", name="precision-auto", precision="auto"), workdir=tmp_path / caller,
                  max_steps=2, verbose=0)
            assert keras.mixed_precision.global_policy().name == caller
            run = json.loads((tmp_path / caller / "run.json").read_text())
            assert run["precision"] == want  # not the caller's policy
        keras.mixed_precision.set_global_policy("float32")
        interrupt_after(1)
        with pytest.raises(interrupt_after.error):  # a run stopped in its first epoch restores it as well
            train(tiny_config("embedding", name="precision-bf16", precision="mixed_bfloat16"),
                  workdir=tmp_path / "killed", max_steps=2, verbose=0)
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = json.loads((tmp_path / "float32" / "run.json").read_text())
    assert run["precision"] == want
    model = load_run(tmp_path / "float32").load_model()
    assert all(str(o.dtype).endswith("float32") for o in model.outputs)
