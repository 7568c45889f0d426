"""Training efficiency: model FLOPs utilisation (MFU) of `fit` on a MiniLM-size encoder.

    python bench/train_efficiency.py [--tiny] [--steps 6] [--no-xla] [--no-bf16]

Model: keras_mtl.model.build_network, 6 layers, hidden 384, 12 heads,
intermediate 1536 (all-MiniLM-L6-v2's shape), one classification head,
sequence 128, batch 32, every position a real token; compiled exactly as
keras_mtl.train compiles (AdamW + cosine schedule, clipnorm, jit "auto":
graph mode without XLA for TensorFlow on a CPU-only machine).

    FLOPs per token = 6 * N + 12 * L * d * S
      N: non-embedding parameters (everything but the token/position embedding
         table), 6 = 2 (multiply-add) x 3 (forward + two backward matmuls);
      12 * L * d * S: the attention score and context matmuls (2 matmuls of
         2*S*d FLOPs per token and layer, x3 for forward + backward)
         -- the PaLM appendix-B formula.
    MFU = FLOPs per token x tokens/s in fit / float32 matmul FLOP/s measured in
          the same run, same backend (best of 1024 and 2048 square matmuls).

Target: MFU >= 50% on CPU. On TensorFlow (unless --no-profile) two more
real `fit` steps run under the TensorFlow profiler, and the op time is
split by model piece (matmuls, transposes, softmax, layer norms, GELU,
dropout, optimizer, ...) from the trace; one layer's matmuls are also timed
alone, to tell a slow matmul from time spent outside matmuls.

For information (unless --no-bf16), the same fit with `train.precision:
mixed_bfloat16`: its tokens/s relative to float32, its model FLOP/s as a
share of the bfloat16 matmul rate (a different denominator, so not the MFU
of the target) and, on TensorFlow unless --no-profile, its own profile
beside the float32 one (where the bfloat16 step goes: the casts of float32
variables and activations that the mixed policy adds show as their own
piece).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "train_efficiency"
TARGET_MFU = 50.0


def flops_per_token(non_embedding_params, layers, hidden, seq):
    return 6 * non_embedding_params + 12 * layers * hidden * seq


def model_gflops(flops_per_tok, tokens_per_s):
    """The model FLOP rate a fit achieves, GFLOP/s (MFU = 100 * this / the matmul rate)."""
    return flops_per_tok * tokens_per_s / 1e9


def measure_fit(encoder, seq, batch, steps, warmup=2, conditioning="none", tasks=("sentiment",), jit="auto", trace=False,
                precision="float32"):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    loaded = common.bench_config(encoder, seq, batch, tasks=tasks, conditioning=conditioning, jit=jit, precision=precision)
    try:
        model = common.build_compiled(loaded)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    n_emb = sum(int(np.prod(w.shape)) for w in model.network.get_layer("shared_encoder").embedding.weights)
    n_total = int(model.count_params())
    total_steps = 1 + warmup + steps
    x, y, sw = common.random_batches(batch * total_steps, seq, encoder["vocabulary_size"], tasks=tasks, full=True)
    timer = common.StepTimer()
    started = time.perf_counter()
    model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - started
    times = timer.times
    measured = times[1 + warmup :]
    step = common.median(measured)
    traced = None
    if trace:
        n = batch * min(2, total_steps)
        cut = lambda d: {k: v[:n] for k, v in d.items()}  # noqa: E731
        traced = trace_fit(model, cut(x), cut(y), cut(sw), batch)
    return {
        "trace": traced,
        "params_total": n_total,
        "params_embedding": n_emb,
        "params_non_embedding": n_total - n_emb,
        "first_step_s": times[0],
        "step_times_s": measured,
        "step_s": step,
        "tokens_per_s": batch * seq / step,
        "fit_wall_s": wall,
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "model": model,
    }


MATMUL_TYPES = ("MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")
VARIABLE_TYPES = ("ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "VarHandleOp")


def base_op_type(op_type):
    """The op type without oneDNN's rewrite prefix (`_MklBatchMatMulV2` ->
    `BatchMatMulV2`, `_MklFusedMatMul` -> `_FusedMatMul`): on CPUs with
    AVX-512 TensorFlow runs most ops as their `_Mkl` / `_MklNative` forms."""
    for prefix in ("_MklNative", "_Mkl"):
        if op_type.startswith(prefix):
            op_type = op_type[len(prefix):]
            return "_" + op_type if op_type.startswith("Fused") else op_type
    return op_type


def op_category(op_name, op_type):
    """The piece of the model a TensorFlow op belongs to, from its type and name scope."""
    op_type = base_op_type(op_type)
    low = op_name.lower()
    if op_type in MATMUL_TYPES:
        return "matmuls (dense + attention)"
    if op_type == "Cast":
        return "casts (dtype conversions)"
    if "adam_w" in low or "optimizer" in low or "clip_by_norm" in low:
        return "optimizer (AdamW, clipnorm)"
    if op_type == "Transpose":
        return "transposes (einsum/tensordot layouts)"
    for key, cat in (("softmax", "softmax"), ("_norm", "layer norms"), ("dropout", "dropout"),
                     ("gelu", "gelu"), ("embedding", "embeddings"), ("loss", "loss")):
        if key in low:
            return cat
    if op_type in VARIABLE_TYPES:
        return "variable reads/writes"
    return "other (masks, reshapes, residual adds, biases)"


def trace_fit(model, x, y, sw, batch):
    """Share of op time per model piece in real `fit` steps (TensorFlow profiler trace), or None."""
    import collections
    import glob
    import shutil
    import tempfile

    import tensorflow as tf

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return None
    logdir = tempfile.mkdtemp(prefix="bench-trace-")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        finally:
            tf.profiler.experimental.stop()
        files = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        if not files:
            return None
        space = xplane_pb2.XSpace()
        with open(files[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    by_cat, by_type = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # the executor threads that run the step's ops
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if ":" not in name or name.startswith(("Threadpool", "Executor")):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                by_cat[op_category(op_name, op_type)] += ev.duration_ps
                by_type[op_type] += ev.duration_ps
    total = sum(by_cat.values())
    if not total:
        return None
    return {
        "categories_pct": {k: 100.0 * v / total for k, v in by_cat.most_common()},
        "top_op_types_pct": {k: 100.0 * v / total for k, v in by_type.most_common(8)},
        "op_seconds": total / 1e12,
    }


def layer_matmul_gflops(encoder, seq, batch, jit=False, repeats=5):
    """GFLOP/s of ONE encoder layer's matmuls alone (projections, FFN, attention; forward + backward), TF."""
    import numpy as np
    import tensorflow as tf

    d, h, ff = encoder["hidden_dim"], encoder["num_heads"], encoder["intermediate_dim"]
    dh = d // h
    rng = np.random.default_rng(0)

    def var(*shape):
        return tf.Variable(rng.standard_normal(shape).astype(np.float32) * 0.02)

    x = tf.constant(rng.standard_normal((batch, seq, d)).astype(np.float32))
    w = [var(d, d) for _ in range(4)] + [var(d, ff), var(ff, d)]

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            q, k, v = (tf.reshape(x @ wi, [batch, seq, h, dh]) for wi in w[:3])
            s = tf.einsum("bqhd,bkhd->bhqk", q, k)
            c = tf.reshape(tf.einsum("bhqk,bkhd->bqhd", s, v), [batch, seq, d])
            loss = tf.reduce_sum(((c @ w[3]) @ w[4]) @ w[5])
        return tape.gradient(loss, [x, *w])

    step(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step(x)[0].numpy()
        best = min(best, time.perf_counter() - start)
    flops = 3 * (2 * batch * seq * (4 * d * d + 2 * d * ff) + 2 * 2 * batch * seq * seq * d)
    return flops / best / 1e9


def profile_table(trace, trace_bf16=None):
    """Markdown: share of op time by model piece, float32 and (when traced) mixed_bfloat16 side by side,
    with the op seconds of the traced steps (a bfloat16 piece that got slower shows there)."""
    pieces = list(trace["categories_pct"])
    if trace_bf16:
        pieces += [k for k in trace_bf16["categories_pct"] if k not in pieces]
    header = ["piece", "share of op time (float32)"]
    if trace_bf16:
        header += ["share (mixed_bfloat16)", "op seconds float32 -> bfloat16"]
    rows = []
    for k in pieces:
        f32 = trace["categories_pct"].get(k, 0.0)
        row = [k, f"{f32:.1f}%"]
        if trace_bf16:
            b = trace_bf16["categories_pct"].get(k, 0.0)
            row += [f"{b:.1f}%", f"{f32 * trace['op_seconds'] / 100:.2f} -> {b * trace_bf16['op_seconds'] / 100:.2f}"]
        rows.append(row)
    if trace_bf16:
        rows.append(["total", "100%", "100%", f"{trace['op_seconds']:.2f} -> {trace_bf16['op_seconds']:.2f}"])
    return common.md_table(header, rows)


def markdown(result):
    f = result["fit"]
    rows = [
        ["model", f"{result['encoder']['num_layers']} layers, hidden {result['encoder']['hidden_dim']}, "
         f"{result['encoder']['num_heads']} heads, ff {result['encoder']['intermediate_dim']}, seq {result['seq']}, batch {result['batch']}"],
        ["parameters (non-embedding)", f"{f['params_total']:,} ({f['params_non_embedding']:,})"],
        ["FLOPs per token (6N + 12 L d S)", f"{result['flops_per_token'] / 1e6:.1f} M"],
        ["step time (median) / first step (compile)", f"{f['step_s']:.3f} s / {f['first_step_s']:.1f} s"
         + (" (graph mode, no XLA: jit_compile auto on CPU)" if not f["jit_compile"] else " (XLA)")],
        ["tokens/s in fit", f"{f['tokens_per_s']:.0f}"],
        ["achieved model GFLOP/s", f"{result['achieved_gflops']:.1f}"],
        [f"matmul GFLOP/s (keras/{result['backend']}, same run)", f"{result['matmul_gflops']:.1f}"],
        ["matmul GFLOP/s (numpy, same run)", f"{result['numpy_gflops']:.1f}"],
        ["**MFU**", f"**{result['mfu_pct']:.1f}%** (vs numpy rate: {result['mfu_vs_numpy_pct']:.1f}%)"],
    ]
    x = result.get("fit_xla")
    if x:
        rows.append(["(info) same with jit_compile=True (XLA)",
                     f"step {x['step_s']:.3f} s, {x['tokens_per_s']:.0f} tokens/s, MFU {x['mfu_pct']:.1f}% "
                     f"(first step {x['first_step_s']:.0f} s)"])
    b = result.get("fit_bf16")
    if b:
        rows.append(["(info) same with `train.precision: mixed_bfloat16`",
                     f"step {b['step_s']:.3f} s, {b['tokens_per_s']:.0f} tokens/s "
                     f"({b['tokens_per_s'] / f['tokens_per_s']:.2f}x float32), {b['achieved_gflops']:.1f} model GFLOP/s = "
                     f"{b['mfu_bf16_pct']:.1f}% of the bfloat16 matmul rate ({b['matmul_bf16_gflops']:.0f} GFLOP/s)"])
    x16 = result.get("fit_xla_bf16")
    if x16 and b:
        rows.append(["(info) `mixed_bfloat16` with jit_compile=True (XLA)",
                     f"step {x16['step_s']:.3f} s, {x16['tokens_per_s']:.0f} tokens/s "
                     f"({x16['tokens_per_s'] / b['tokens_per_s']:.2f}x without XLA), "
                     f"{x16['mfu_bf16_pct']:.1f}% of the bfloat16 matmul rate (first step {x16['first_step_s']:.0f} s)"])
    text = common.md_table(["figure", "value"], rows)
    p = result.get("profile")
    if p and p.get("trace"):
        text += (
            "\n\nWhere a `fit` step goes (TensorFlow profiler trace of 2 real steps: share of op time by model piece; "
            f"one layer's matmuls alone run at {p['layer_matmul_gflops']:.1f} GFLOP/s = "
            f"{100 * p['layer_matmul_gflops'] / result['matmul_gflops']:.0f}% of the square-matmul rate):\n\n"
        )
        text += profile_table(p["trace"], p.get("trace_bf16"))
        text += "\n\nTop op types: " + ", ".join(f"{k} {v:.1f}%" for k, v in p["trace"]["top_op_types_pct"].items()) + "."
        if p.get("trace_bf16"):
            text += (" With `mixed_bfloat16`: "
                     + ", ".join(f"{k} {v:.1f}%" for k, v in p["trace_bf16"]["top_op_types_pct"].items()) + ".")
    return text


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="measured steps (after compile + 2 warm-up steps)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-xla", action="store_true", help="skip the informational jit_compile=True (XLA) runs on TensorFlow (float32, and mixed_bfloat16 unless --no-bf16)")
    p.add_argument("--no-bf16", action="store_true", help="skip the informational mixed_bfloat16 run")
    args = p.parse_args(argv)
    import keras

    from bench import machine

    run = common.Run(NAME, args)
    encoder = dict(common.TINY if args.tiny else common.MINILM)
    seq, batch = (16, 4) if args.tiny else (128, 32)
    steps = 2 if args.tiny else args.steps
    backend = keras.backend.backend()
    run.say(f"== {NAME}: backend {backend}, encoder {encoder}, seq {seq}, batch {batch}")
    mm_before = machine.measure(args.tiny)
    fit = measure_fit(encoder, seq, batch, steps, trace=backend == "tensorflow" and not args.no_profile)
    mm_after = machine.measure(args.tiny)
    fit.pop("model")  # the model object is not part of the figures
    key = "keras/" + backend
    matmul = max(mm_before["best_gflops"][key], mm_after["best_gflops"][key])
    numpy_rate = max(mm_before["best_gflops"]["numpy"], mm_after["best_gflops"]["numpy"])
    fpt = flops_per_token(fit["params_non_embedding"], encoder["num_layers"], encoder["hidden_dim"], seq)
    achieved = model_gflops(fpt, fit["tokens_per_s"])
    mfu = 100 * achieved / matmul
    run.result.update({
        "backend": backend,
        "encoder": encoder,
        "seq": seq,
        "batch": batch,
        "fit": fit,
        "flops_per_token": fpt,
        "flops_formula": "6 * non_embedding_params + 12 * layers * hidden * seq",
        "achieved_gflops": achieved,
        "matmul_gflops": matmul,
        "matmul_runs": [mm_before, mm_after],
        "numpy_gflops": numpy_rate,
        "mfu_pct": mfu,
        "mfu_vs_numpy_pct": 100 * achieved / numpy_rate,
    })
    run.say(f"  params {fit['params_total']:,} (non-embedding {fit['params_non_embedding']:,}); "
            f"FLOPs/token {fpt / 1e6:.2f} M = 6N + 12 L d S")
    run.say(f"  step {fit['step_s']:.3f} s (median of {len(fit['step_times_s'])}; first step {fit['first_step_s']:.1f} s), "
            f"{fit['tokens_per_s']:.0f} tokens/s -> {achieved:.1f} GFLOP/s")
    run.say(f"  matmul {matmul:.1f} GFLOP/s ({key}), numpy {numpy_rate:.1f} GFLOP/s")
    if fit.get("trace"):
        trace = fit.pop("trace")
        layer_rate = layer_matmul_gflops(encoder, seq, batch, jit=fit["jit_compile"])
        run.result["profile"] = {"trace": trace, "layer_matmul_gflops": layer_rate}
        for k, v in trace["categories_pct"].items():
            run.say(f"  profile {k}: {v:.1f}% of op time")
        run.say(f"  profile: one layer's matmuls alone run at {layer_rate:.1f} GFLOP/s "
                f"({100 * layer_rate / matmul:.0f}% of the square-matmul rate)")
    else:
        fit.pop("trace", None)
    if backend == "tensorflow" and not (args.no_xla or args.tiny or fit["jit_compile"]):
        xla = measure_fit(encoder, seq, batch, steps, jit=True)
        xla.pop("model")
        xla["mfu_pct"] = 100 * model_gflops(fpt, xla["tokens_per_s"]) / matmul
        run.result["fit_xla"] = xla
        run.say(f"  (info) jit_compile=True (XLA): step {xla['step_s']:.3f} s, first step {xla['first_step_s']:.1f} s, "
                f"{xla['tokens_per_s']:.0f} tokens/s, MFU {xla['mfu_pct']:.1f}%")
    if not (args.no_bf16 or args.tiny):
        bf16 = measure_fit(encoder, seq, batch, steps, jit=fit["jit_compile"], precision="mixed_bfloat16",
                           trace="profile" in run.result)
        bf16.pop("model")
        bf16_trace = bf16.pop("trace", None)
        if bf16_trace:
            run.result["profile"]["trace_bf16"] = bf16_trace
            for k, v in bf16_trace["categories_pct"].items():
                run.say(f"  profile (mixed_bfloat16) {k}: {v:.1f}% of op time")
        bf16_rate = max(machine.matmul_gflops("keras", repeats=3, dtype="bfloat16").values())
        bf16["achieved_gflops"] = model_gflops(fpt, bf16["tokens_per_s"])
        bf16["matmul_bf16_gflops"] = bf16_rate
        bf16["mfu_bf16_pct"] = 100 * bf16["achieved_gflops"] / bf16_rate
        run.result["fit_bf16"] = bf16
        run.say(f"  (info) mixed_bfloat16: step {bf16['step_s']:.3f} s, {bf16['tokens_per_s']:.0f} tokens/s "
                f"({bf16['tokens_per_s'] / fit['tokens_per_s']:.2f}x float32), "
                f"{bf16['mfu_bf16_pct']:.1f}% of the bfloat16 matmul rate {bf16_rate:.0f} GFLOP/s")
        if backend == "tensorflow" and not (args.no_xla or bf16["jit_compile"]):
            xla16 = measure_fit(encoder, seq, batch, steps, jit=True, precision="mixed_bfloat16")
            xla16.pop("model")
            xla16.pop("trace", None)
            xla16["mfu_bf16_pct"] = 100 * model_gflops(fpt, xla16["tokens_per_s"]) / bf16_rate
            run.result["fit_xla_bf16"] = xla16
            run.say(f"  (info) mixed_bfloat16 with jit_compile=True (XLA): step {xla16['step_s']:.3f} s, "
                    f"first step {xla16['first_step_s']:.1f} s, {xla16['tokens_per_s']:.0f} tokens/s "
                    f"({xla16['tokens_per_s'] / bf16['tokens_per_s']:.2f}x mixed_bfloat16 without XLA), "
                    f"{xla16['mfu_bf16_pct']:.1f}% of the bfloat16 matmul rate")
    detail = ""
    if mfu < TARGET_MFU:
        detail = f"short by {TARGET_MFU - mfu:.1f} points"
    run.target("MFU (fit, MiniLM-size)" if not args.tiny else "MFU (tiny)", mfu, TARGET_MFU, True, "%", detail)
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
