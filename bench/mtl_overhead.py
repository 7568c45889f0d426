"""Multi-task overhead: a keras-mtl training step vs the same encoder trained single-task with plain keras-hub.

    python bench/mtl_overhead.py [--tiny] [--rounds 4] [--steps 8]

keras-mtl model: keras_mtl.model.build_network with the demo-like heads
(topic: 4-way classification, sentiment: 2-way, pos: 12-tag tagging, every
batch carries all three tasks' labels and per-task sample weights), compiled
as keras_mtl.train compiles it; measured with `task_conditioning: none`
(one encoder pass serves every head) and `embedding` (the demo's setting).

Plain model: the same encoder written directly with keras-hub
(TokenAndPositionEmbedding -> LayerNorm -> Dropout -> N x TransformerEncoder),
[CLS] -> Dropout -> Dense softmax, one SparseCategoricalCrossentropy loss,
the same optimizer, jit setting ("auto": graph mode without XLA for
TensorFlow on a CPU) and input batches.

Encoder: the glue_conll config's (hidden 128, 2 layers, 4 heads, ff 256),
sequence 64, batch 32, random lengths (padding mask as in real batches).
The models alternate in rounds (A B A B ...) so load changes on a shared
machine hit both alike; each round's median step time is taken after the
first call's compile; the overhead is the median over rounds of
(keras-mtl step / plain step in the same round) - 1.
Target: <= 5% slower.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "mtl_overhead"
TARGET_PCT = 5.0


def plain_model(encoder, seq, dropout, total_steps, jit):
    """The same encoder, single-task, with plain keras-hub layers and a plain compile."""
    import keras
    import keras_hub

    from keras_mtl.config import TrainConfig
    from keras_mtl.training import make_optimizer

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=encoder["vocabulary_size"], sequence_length=seq + 1, embedding_dim=encoder["hidden_dim"]
    )(token_ids)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    x = keras.layers.Dropout(dropout)(x)
    for _ in range(encoder["num_layers"]):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=encoder["intermediate_dim"], num_heads=encoder["num_heads"], dropout=dropout, activation="gelu"
        )(x, padding_mask=padding_mask)
    h = keras.layers.Dropout(dropout)(x[:, 0, :])
    out = keras.layers.Dense(len(common.DEMO_CLASSES["topic"]), activation="softmax", name="topic")(h)
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, out)
    model.compile(
        optimizer=make_optimizer(TrainConfig(), total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit,
    )
    return model


def _fit_steps(model, x, y, sw, batch):
    timer = common.StepTimer()
    model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return timer.times


def measure(encoder, seq, batch, rounds, steps, jit="auto"):
    import keras

    dropout = 0.1
    n = batch * steps
    x, y, sw = common.random_batches(n, seq, encoder["vocabulary_size"], full=False, seed=1)
    x_cond, _, _ = common.random_batches(n, seq, encoder["vocabulary_size"], full=False, seed=1, task_ids=True)
    keras.utils.set_random_seed(0)
    models = {
        "plain keras-hub (1 task)": (plain_model(encoder, seq, dropout, 1000, jit), x, y["topic"], None),
        "keras-mtl, 3 tasks, conditioning none": (
            common.build_compiled(common.bench_config(encoder, seq, batch, conditioning="none", jit=jit)), x, y, sw),
        "keras-mtl, 3 tasks, conditioning embedding": (
            common.build_compiled(common.bench_config(encoder, seq, batch, conditioning="embedding", jit=jit)), x_cond, y, sw),
    }
    compile_s = {}
    for name, (model, xx, yy, ww) in models.items():  # compile + warm up
        times = _fit_steps(model, xx, yy, ww, batch)
        compile_s[name] = times[0]
    per_round = {name: [] for name in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            model, xx, yy, ww = models[name]
            per_round[name].append(common.median(_fit_steps(model, xx, yy, ww, batch)))
    step = {name: common.median(v) for name, v in per_round.items()}
    base = list(models)[0]
    # Paired: each round's ratio to the plain model's time in the same round, then the median.
    ratio = {name: common.median([a / b for a, b in zip(per_round[name], per_round[base])]) for name in models}
    return {
        "paired_ratio": ratio,
        "params": {name: int(m[0].count_params()) for name, m in models.items()},
        "first_step_s": compile_s,
        "round_median_step_s": per_round,
        "step_s": step,
        "jit_compile": {name: bool(getattr(m[0], "jit_compile", False)) for name, m in models.items()},
    }


def markdown(result):
    rows = []
    for name, s in result["step_s"].items():
        rows.append([name, f"{result['params'][name]:,}", f"{1000 * s:.1f}", f"{100 * (result['paired_ratio'][name] - 1):+.1f}%"])
    return (
        f"Encoder hidden {result['encoder']['hidden_dim']}, {result['encoder']['num_layers']} layers, seq {result['seq']}, "
        f"batch {result['batch']}; {result['rounds']} alternating rounds x {result['steps']} steps; step ms = median "
        "over rounds; vs plain = median over rounds of the ratio to the plain model in the same round.\n\n"
        + common.md_table(["model", "parameters", "step ms", "vs plain (paired)"], rows)
    )


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="steps per round and model")
    args = p.parse_args(argv)
    import keras

    run = common.Run(NAME, args)
    encoder = dict(common.TINY if args.tiny else common.GLUE_CONLL)
    seq, batch = (16, 8) if args.tiny else (64, 32)
    rounds, steps = (2, 3) if args.tiny else (args.rounds, args.steps)
    jit = False if args.tiny else "auto"
    run.say(f"== {NAME}: backend {keras.backend.backend()}, encoder {encoder}, seq {seq}, batch {batch}")
    res = measure(encoder, seq, batch, rounds, steps, jit=jit)
    run.result.update({"backend": keras.backend.backend(), "encoder": encoder, "seq": seq, "batch": batch,
                       "rounds": rounds, "steps": steps, **res})
    for name, s in res["step_s"].items():
        run.say(f"  {name}: {1000 * s:.1f} ms/step ({100 * (res['paired_ratio'][name] - 1):+.1f}% vs plain, paired), rounds "
                + ", ".join(f"{1000 * v:.1f}" for v in res["round_median_step_s"][name]))
    for name in list(res["step_s"])[1:]:
        over = 100 * (res["paired_ratio"][name] - 1)
        run.target(f"overhead of {name}", over, TARGET_PCT, False, "%",
                   "" if over <= TARGET_PCT else f"over by {over - TARGET_PCT:.1f} points")
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
