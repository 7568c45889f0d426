"""Machine limit: float32 matmul GFLOP/s in the Keras backend under test, and in numpy.

    python bench/machine.py [--tiny] [--no-bf16]

Square float32 matmuls (1024, 2048) through `keras.ops.matmul` on the active
backend (KERAS_BACKEND, default tensorflow) and `numpy.matmul`; each size is
timed as a loop of matmuls, best of several repeats; a matmul of n x n by
n x n is 2 n^3 FLOPs. The best rate is the denominator of the MFU figure of
train_efficiency.py (which measures it again in its own run).

The same matmuls in bfloat16 through `keras.ops.matmul` are reported for
information (a GPU's tensor cores, or a CPU's AMX/AVX512-BF16 units through
oneDNN, run them at a multiple of the float32 rate); they are not an MFU
denominator, since keras-mtl trains in float32 unless `train.precision` says
otherwise.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "machine"


def _sync(x):
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    return x


def matmul_gflops(impl="keras", sizes=(1024, 2048), repeats=5, min_seconds=0.3, dtype="float32"):
    """{size: best GFLOP/s} for `impl` in ("keras", "numpy"); `dtype` for keras only."""
    import numpy as np

    out = {}
    rng = np.random.default_rng(0)
    for n in sizes:
        a_np = rng.standard_normal((n, n), dtype=np.float32)
        b_np = rng.standard_normal((n, n), dtype=np.float32)
        if impl == "numpy":
            a, b = a_np, b_np

            def mm():
                return np.matmul(a, b)

        else:
            import keras

            a = keras.ops.convert_to_tensor(a_np, dtype=dtype)
            b = keras.ops.convert_to_tensor(b_np, dtype=dtype)
            if keras.backend.backend() == "jax":
                import jax

                f = jax.jit(lambda x, y: x @ y)

                def mm():
                    return f(a, b)

            else:

                def mm():
                    return keras.ops.matmul(a, b)

        _sync(mm())  # warm-up (and compile)
        inner = max(1, int(min_seconds / max(1e-4, _time_one(mm))))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                r = mm()
            _sync(r)
            if hasattr(r, "numpy") and not hasattr(r, "block_until_ready"):
                pass
            best = min(best, (time.perf_counter() - start) / inner)
        out[n] = 2.0 * n**3 / best / 1e9
    return out


def _time_one(mm):
    start = time.perf_counter()
    _sync(mm())
    return time.perf_counter() - start


BF16_SUFFIX = " bfloat16 (info)"


def measure(tiny=False, bf16=False):
    import keras

    sizes = (256, 512) if tiny else (1024, 2048)
    repeats = 2 if tiny else 5
    backend = keras.backend.backend()
    rates = {"keras/" + backend: matmul_gflops("keras", sizes, repeats), "numpy": matmul_gflops("numpy", sizes, repeats)}
    if bf16:
        rates["keras/" + backend + BF16_SUFFIX] = matmul_gflops("keras", sizes, repeats, dtype="bfloat16")
    best = {k: max(v.values()) for k, v in rates.items()}
    return {"backend": backend, "sizes": list(sizes), "gflops": rates, "best_gflops": best}


def markdown(result):
    rows = []
    for impl, by_size in result["gflops"].items():
        rows.append([impl] + [f"{v:.1f}" for v in by_size.values()] + [f"{result['best_gflops'][impl]:.1f}"])
    sizes = [f"{n}x{n}" for n in result["sizes"]]
    return common.md_table(["matmul GFLOP/s (float32 unless named)", *sizes, "best"], rows)


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 (info) row")
    args = p.parse_args(argv)
    run = common.Run(NAME, args)
    run.say(f"== {NAME}: {common.cpu_model()}, {run.result['machine']['cores']} cores, load {os.getloadavg()[0]:.2f}")
    res = measure(args.tiny, bf16=not args.no_bf16)
    run.result.update(res)
    for impl, by_size in res["gflops"].items():
        run.say("  " + impl + ": " + ", ".join(f"{n}: {g:.1f} GFLOP/s" for n, g in by_size.items()))
    run.say("TARGET none: this is the reference rate (denominator of MFU in train_efficiency)")
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
