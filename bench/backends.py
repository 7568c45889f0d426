"""Backends: the training step time of the same keras-mtl model and batches on TensorFlow, JAX and PyTorch.

    python bench/backends.py [--tiny] [--steps 10] [--backends tensorflow,jax,torch]

Each backend runs in its own subprocess with KERAS_BACKEND set (Keras picks
its backend at import). The model is keras_mtl.model.build_network with the
demo-like heads (topic, sentiment, pos; `task_conditioning: none`) on the
glue_conll encoder (hidden 128, 2 layers, 4 heads, ff 256), sequence 64,
batch 32, the same numpy batches (seeded), compiled as keras_mtl.train
compiles it with `jit_compile="auto"`, which Keras resolves to: TensorFlow
graph mode WITHOUT XLA on a CPU-only machine, XLA on JAX, eager on PyTorch.
`tensorflow+xla` (jit_compile=True) and `torch` with OMP_NUM_THREADS=1 are
measured too, for information (not in the target: neither is what
`keras-mtl train` runs by default). `fit` runs 1 + 2 warm-up + --steps steps;
the first step (tracing + compilation) is reported separately, the step
time is the median of the measured steps.

Target: every backend within 1.25x of the fastest. A backend that is not
installed is skipped with a message ("torch not installed").
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "backends"
TARGET_RATIO = 1.25
BACKENDS = ("tensorflow", "jax", "torch")


def worker(out_path, tiny, steps, jit="auto"):
    """Runs inside the subprocess: KERAS_BACKEND is already set."""
    import keras

    encoder = dict(common.TINY if tiny else common.GLUE_CONLL)
    seq, batch = (16, 8) if tiny else (64, 32)
    warmup = 1 if tiny else 2
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model = common.build_compiled(common.bench_config(encoder, seq, batch, conditioning="none", jit=jit))
    build_s = time.perf_counter() - start
    n = batch * (1 + warmup + steps)
    x, y, sw = common.random_batches(n, seq, encoder["vocabulary_size"], full=False, seed=2)
    timer = common.StepTimer()
    model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    measured = timer.times[1 + warmup :]
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "build_s": build_s,
        "first_step_s": timer.times[0],
        "warmup_s": timer.times[1 : 1 + warmup],
        "step_times_s": measured,
        "step_s": common.median(measured),
        "encoder": encoder,
        "seq": seq,
        "batch": batch,
        "params": int(model.count_params()),
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def run_backend(backend, tiny, steps, timeout=900, jit="auto", env_extra=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", out, "--steps", str(steps), "--jit", str(jit)]
        cmd += ["--tiny"] if tiny else []
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"backend": backend, "error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall}
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
        result["wall_s"] = wall
        return result


def markdown(result):
    rows = []
    for b, r in result["backends"].items():
        if "skipped" in r:
            rows.append([b, "-", "-", "-", r["skipped"]])
        elif "error" in r:
            rows.append([b, "-", "-", "-", "error: " + r["error"][:80]])
        else:
            mode = "XLA" if r["jit_compile"] else ("graph, no XLA" if b.startswith("tensorflow") else "eager")
            rows.append([b + (" (info)" if r.get("informational") else ""), f"{1000 * r['step_s']:.1f}",
                         f"{r['step_s'] / result['fastest_step_s']:.2f}x", f"{r['first_step_s']:.1f}", mode])
    first = next((r for r in result["backends"].values() if "step_s" in r), None)
    head = ""
    if first:
        e = first["encoder"]
        head = (f"keras-mtl model, 3 tasks, hidden {e['hidden_dim']}, {e['num_layers']} layers, seq {first['seq']}, "
                f"batch {first['batch']}; median of {len(first['step_times_s'])} steps after warm-up.\n\n")
    return head + common.md_table(["backend", "step ms", "vs fastest", "first step s (compile)", "mode"], rows)


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        common.quiet_tf()
        jit = argv[argv.index("--jit") + 1] if "--jit" in argv else "auto"
        worker(argv[1], "--tiny" in argv, int(argv[argv.index("--steps") + 1]), {"True": True, "False": False}.get(jit, jit))
        return 0
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--no-xla", action="store_true", help="skip the informational tensorflow+xla run")
    args = p.parse_args(argv)
    run = common.Run(NAME, args)
    steps = 2 if args.tiny else args.steps
    results = {}
    run.say(f"== {NAME}: one subprocess per backend")
    for b in [x.strip() for x in args.backends.split(",") if x.strip()]:
        if importlib.util.find_spec(b) is None:
            msg = f"{b} not installed"
            run.say(f"  {msg}: skipped")
            results[b] = {"backend": b, "skipped": msg}
            continue
        r = run_backend(b, args.tiny, steps)
        results[b] = r
        if "error" in r:
            run.say(f"  {b}: ERROR {r['error']}")
        else:
            mode = "XLA" if r["jit_compile"] else ("graph, no XLA" if b == "tensorflow" else "eager")
            run.say(f"  {b}: step {1000 * r['step_s']:.1f} ms (median of {len(r['step_times_s'])}), first step "
                    f"{r['first_step_s']:.1f} s ({mode}), process {r['wall_s']:.0f} s")
    if "tensorflow" in results and "step_s" in results["tensorflow"] and not (args.no_xla or args.tiny):
        r = run_backend("tensorflow", args.tiny, steps, jit=True)
        r["informational"] = True
        results["tensorflow+xla"] = r
        if "step_s" in r:
            run.say(f"  tensorflow+xla (info): step {1000 * r['step_s']:.1f} ms, first step {r['first_step_s']:.1f} s")
        else:
            run.say(f"  tensorflow+xla (info): ERROR {r.get('error')}")
    if "torch" in results and "step_s" in results["torch"] and not args.tiny and not os.environ.get("OMP_NUM_THREADS"):
        # PyTorch's OpenMP threads spin-wait; on a CPU shared with other processes that can cost
        # far more than the compute. One thread shows what the backend does without that.
        r = run_backend("torch", args.tiny, steps, env_extra={"OMP_NUM_THREADS": "1"})
        r["informational"] = True
        results["torch, OMP_NUM_THREADS=1"] = r
        if "step_s" in r:
            run.say(f"  torch, OMP_NUM_THREADS=1 (info): step {1000 * r['step_s']:.1f} ms")
    ok = {b: r for b, r in results.items() if "step_s" in r and not r.get("informational")}
    fastest = min((r["step_s"] for r in ok.values()), default=None)
    run.result.update({"backends": results, "fastest_step_s": fastest})
    for b, r in ok.items():
        ratio = r["step_s"] / fastest
        run.target(f"{b} step time vs fastest", ratio, TARGET_RATIO, False, "x",
                   "" if ratio <= TARGET_RATIO else f"over by {ratio - TARGET_RATIO:.2f}x")
    run.write()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
