"""Training efficiency: model FLOPs utilisation (MFU) of `fit` on a MiniLM-size encoder.

    python bench/train_efficiency.py [--tiny] [--steps 6]

Model: keras_mtl.model.build_model, 6 layers, hidden 384, 12 heads,
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

Target: MFU >= 50% on CPU. With `--profile` (default on the TensorFlow
backend) one encoder layer's pieces are timed in isolation, forward +
backward under the same jit setting (matmuls, softmax, layer norms, GELU,
dropout, the AdamW update), to show where the step time goes.
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


def measure_fit(encoder, seq, batch, steps, warmup=2, conditioning="none", tasks=("sentiment",), jit="auto"):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    loaded = common.bench_config(encoder, seq, batch, tasks=tasks, conditioning=conditioning, jit=jit)
    model = common.build_compiled(loaded)
    n_emb = sum(int(np.prod(w.shape)) for w in model.get_layer("embedding").weights)
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
    return {
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


def profile_layer(encoder, seq, batch, jit=True, repeats=5):
    """Seconds per training step spent in each piece of ONE encoder layer (TF, fwd + bwd), timed alone."""
    import keras
    import numpy as np
    import tensorflow as tf

    d, h, ff = encoder["hidden_dim"], encoder["num_heads"], encoder["intermediate_dim"]
    dh = d // h
    tokens = batch * seq
    rng = np.random.default_rng(0)

    def var(*shape):
        return tf.Variable(rng.standard_normal(shape).astype(np.float32) * 0.02)

    x = tf.constant(rng.standard_normal((batch, seq, d)).astype(np.float32))
    w = {k: var(d, d) for k in ("q", "k", "v", "o")}
    w1, w2 = var(d, ff), var(ff, d)

    def timed(fn, *args):
        f = tf.function(fn, jit_compile=jit)
        f(*args)  # compile
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = f(*args)
            _ = [o.numpy() for o in tf.nest.flatten(out)][:1]
            best = min(best, time.perf_counter() - start)
        return best

    def matmuls(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            q = tf.reshape(x @ w["q"], [batch, seq, h, dh])
            k = tf.reshape(x @ w["k"], [batch, seq, h, dh])
            v = tf.reshape(x @ w["v"], [batch, seq, h, dh])
            s = tf.einsum("bqhd,bkhd->bhqk", q, k)
            c = tf.reshape(tf.einsum("bhqk,bkhd->bqhd", s, v), [batch, seq, d])
            o = c @ w["o"]
            f = (o @ w1) @ w2
            loss = tf.reduce_sum(f)
        return tape.gradient(loss, [x, *w.values(), w1, w2])

    scores = tf.constant(rng.standard_normal((batch, h, seq, seq)).astype(np.float32))
    r_scores = tf.constant(rng.standard_normal((batch, h, seq, seq)).astype(np.float32))

    def softmax(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = tf.reduce_sum(tf.nn.softmax(s, axis=-1) * r_scores)
        return tape.gradient(loss, s)

    ln = keras.layers.LayerNormalization(epsilon=1e-5)
    ln.build((batch, seq, d))
    r_x = tf.constant(rng.standard_normal((batch, seq, d)).astype(np.float32))

    def layernorm(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(ln(x) * r_x)
        return tape.gradient(loss, [x, *ln.trainable_variables])

    hid = tf.constant(rng.standard_normal((batch, seq, ff)).astype(np.float32))
    r_hid = tf.constant(rng.standard_normal((batch, seq, ff)).astype(np.float32))

    def gelu(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(keras.activations.gelu(a) * r_hid)
        return tape.gradient(loss, a)

    drop = keras.layers.Dropout(encoder.get("dropout", 0.1), seed=1)

    def dropout(s, x):
        with tf.GradientTape() as tape:
            tape.watch([s, x])
            loss = tf.reduce_sum(drop(s, training=True) * r_scores)
            loss += 2.0 * tf.reduce_sum(drop(x, training=True) * r_x)  # two residual dropouts
        return tape.gradient(loss, [s, x])

    t_mm = timed(matmuls, x)
    t_softmax = timed(softmax, scores)
    t_ln = 2 * timed(layernorm, x)  # two layer norms per layer
    t_gelu = timed(gelu, hid)
    t_drop = timed(dropout, scores, x)
    mm_flops = 3 * (2 * tokens * (4 * d * d + 2 * d * ff) + 2 * 2 * batch * seq * seq * d)
    return {
        "matmuls": t_mm,
        "softmax": t_softmax,
        "layernorm_x2": t_ln,
        "gelu": t_gelu,
        "dropout_x3": t_drop,
        "matmul_flops": mm_flops,
        "matmul_gflops": mm_flops / t_mm / 1e9,
    }


def profile_optimizer(model, jit=True, repeats=3):
    """Seconds of one AdamW update of all the model's trainable variables (TF)."""
    import keras
    import tensorflow as tf

    opt = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01, clipnorm=1.0)
    variables = [tf.Variable(tf.zeros(v.shape, v.dtype)) for v in model.trainable_variables]
    grads = [tf.ones(v.shape, v.dtype) * 1e-3 for v in variables]
    opt.build(variables)

    @tf.function(jit_compile=jit)
    def step():
        opt.apply(grads, variables)
        return variables[0][0]

    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step().numpy()
        best = min(best, time.perf_counter() - start)
    return best


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
    text = common.md_table(["figure", "value"], rows)
    p = result.get("profile")
    if p:
        prow = [[k, f"{v * 1000:.1f}", f"{100 * v / f['step_s']:.1f}%"] for k, v in p["per_step_s"].items()]
        text += (
            "\n\nWhere a step goes (each piece timed alone, forward + backward, x layers; "
            f"the matmuls alone run at {p['layer']['matmul_gflops']:.1f} GFLOP/s = "
            f"{100 * p['layer']['matmul_gflops'] / result['matmul_gflops']:.0f}% of the square-matmul rate):\n\n"
        )
        text += common.md_table(["piece", "ms per step", "share of the measured step"], prow)
    return text


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="measured steps (after compile + 2 warm-up steps)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-xla", action="store_true", help="skip the informational jit_compile=True (XLA) run on TensorFlow")
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
    fit = measure_fit(encoder, seq, batch, steps)
    mm_after = machine.measure(args.tiny)
    model = fit.pop("model")
    key = "keras/" + backend
    matmul = max(mm_before["best_gflops"][key], mm_after["best_gflops"][key])
    numpy_rate = max(mm_before["best_gflops"]["numpy"], mm_after["best_gflops"]["numpy"])
    fpt = flops_per_token(fit["params_non_embedding"], encoder["num_layers"], encoder["hidden_dim"], seq)
    achieved = fpt * fit["tokens_per_s"] / 1e9
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
    if backend == "tensorflow" and not args.no_profile:
        layer = profile_layer(encoder, seq, batch, jit=fit["jit_compile"])
        opt_s = profile_optimizer(model, jit=fit["jit_compile"])
        L = encoder["num_layers"]
        per_step = {k: L * layer[k] for k in ("matmuls", "softmax", "layernorm_x2", "gelu", "dropout_x3")}
        per_step["adamw_update"] = opt_s
        per_step["rest (embeddings, heads, loss, fusion gaps, framework)"] = fit["step_s"] - sum(per_step.values())
        run.result["profile"] = {"layer": layer, "per_step_s": per_step}
        for k, v in per_step.items():
            run.say(f"  profile {k}: {1000 * v:.1f} ms ({100 * v / fit['step_s']:.1f}% of the step)")
        run.say(f"  profile: the layer's matmuls alone run at {layer['matmul_gflops']:.1f} GFLOP/s")
    if backend == "tensorflow" and not (args.no_xla or args.tiny or fit["jit_compile"]):
        xla = measure_fit(encoder, seq, batch, steps, jit=True)
        xla.pop("model")
        xla["mfu_pct"] = 100 * fpt * xla["tokens_per_s"] / 1e9 / matmul
        run.result["fit_xla"] = xla
        run.say(f"  (info) jit_compile=True (XLA): step {xla['step_s']:.3f} s, first step {xla['first_step_s']:.1f} s, "
                f"{xla['tokens_per_s']:.0f} tokens/s, MFU {xla['mfu_pct']:.1f}%")
    detail = ""
    if mfu < TARGET_MFU:
        detail = f"short by {TARGET_MFU - mfu:.1f} points"
    run.target("MFU (fit, MiniLM-size)" if not args.tiny else "MFU (tiny)", mfu, TARGET_MFU, True, "%", detail)
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
