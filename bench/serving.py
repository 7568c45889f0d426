"""Serving: one exported multi-task SavedModel answering all T tasks vs T single-task SavedModels.

    python bench/serving.py [--tiny] [--texts 256] [--repeats 5]

Models: the demo tasks (topic, sentiment: classification; pos: tagging;
T = 3) on the glue_conll encoder (hidden 128, 2 layers, 4 heads, ff 256,
max length 96), vocabulary computed from the demo training texts. Each is
written as a work dir (untrained weights: throughput does not depend on
them) and exported with keras_mtl.export, then called exactly as TF Serving
calls it: `serving_default` on a batch of raw strings (tokenization
included), through keras_mtl.serving.predict.load_signature.

    speedup S = (time of the T single-task models answering their task for
                 the texts, one after another)
              / (time of the one multi-task model answering all T tasks
                 for the same texts)

S = T means the extra heads are free; S = 1 means no gain over separate
models. Target: S >= 0.9 T, i.e. the multi-task model answers all T tasks at
>= 90% of the throughput of a single-task model answering one (when the T
single models are equally fast). Measured at batch 1 (--texts/4 texts, one
call each) and batch 32 (--texts texts), interleaved rounds, best round.

The target applies to `task_conditioning: none` (one encoder pass for all
heads: glue_conll's setting). With task conditioning (`embedding`, the demo's
setting) the encoder runs once per task by design, so S ~ 1 is expected; it
is measured for information.

Long texts (issue 28, docs/long_inputs.md): the multi-task model answers a
text that fits one window and texts the graph splits into 10 windows (one
whose sentence tasks read a cut row of its own, one whose first window is
that row), at batch 1 and batch 32, in interleaved rounds of the same run
(best round); target: a 10-window text costs at most 12x the 1-window one.
`--before DIR` (the `models/` of an earlier `--keep` run, e.g. exported by the
code before windows) also times those exports against today's on the same
texts in the same rounds: a text that fits one window should cost what it
did (ratio ~1 within noise).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "serving"
TARGET_FRACTION = 0.9


def make_workdir(path, loaded, classes, vocabulary):
    """A work dir that keras_mtl.export accepts, holding an untrained model."""
    import keras

    from keras_mtl.data.tokenize import save_vocabulary
    from keras_mtl.model import build_network
    from keras_mtl.record import RunRecord
    from keras_mtl.workdir import RunFiles, save_config

    files = RunFiles(Path(path))
    files.root.mkdir(parents=True, exist_ok=True)
    cfg = loaded.config
    keras.utils.set_random_seed(0)
    classes = {t: classes[t] for t in cfg.task_names}
    model = build_network(cfg, classes, vocabulary)
    save_config(files, loaded)
    save_vocabulary(vocabulary, files.vocab)
    model.save(files.model)
    RunRecord.for_config(cfg, classes).write(files.run)
    return files.root, int(model.count_params())


def build_models(tmp, encoder, max_len, tasks=None, embedding=True):
    """{key: (version dir, params, tasks answered)} + test texts + task names."""
    from keras_mtl.compare import subset_raw
    from keras_mtl.config import config_from_dict, load_config
    from keras_mtl.serving.export import export
    from keras_mtl.prepare import prepare

    model = {k: v for k, v in encoder.items() if k != "vocabulary_size"}
    demo = load_config(common.ROOT / "configs" / "demo.yaml", [f"model.max_sequence_length={max_len}"] +
                       [f"model.{k}={v}" for k, v in model.items()])
    prepared = prepare(demo, plan=False)
    data, vocabulary = prepared.data, prepared.vocabulary
    texts = sorted({ex.text for ex in data.splits["test"]})
    names = list(tasks or demo.config.task_names)
    raw = subset_raw(demo.raw, names)
    variants = {"mtl": config_from_dict(raw, overrides=["model.task_conditioning=none"])}
    if embedding:
        variants["mtl_embedding"] = config_from_dict(raw, overrides=["model.task_conditioning=embedding"])
    for t in names:
        variants[t] = config_from_dict(subset_raw(raw, [t]), overrides=["model.task_conditioning=none"])
    out = {}
    for key, loaded in variants.items():
        wd, params = make_workdir(Path(tmp) / "work" / key, loaded, data.classes, vocabulary)
        version = export(wd, out=Path(tmp) / "models" / key, warmup=False)
        out[key] = {"dir": version, "workdir": wd, "params": params, "tasks": loaded.config.task_names}
    return out, texts, names


def measure(models, texts, names, batch, n_texts, repeats):
    from keras_mtl.compare import serving_throughput

    use = (texts * (1 + n_texts // max(1, len(texts))))[:n_texts]
    timed = serving_throughput({k: v["dir"] for k, v in models.items()}, use, batch, repeats)
    singles = sum(timed[t][1] for t in names)
    res = {"batch": batch, "texts": len(use), "texts_per_s": {k: v[0] for k, v in timed.items()},
           "seconds": {k: v[1] for k, v in timed.items()}}
    res["singles_all_tasks_texts_per_s"] = len(use) / singles
    res["speedup"] = {k: singles / timed[k][1] for k in ("mtl", "mtl_embedding") if k in timed}
    return res


WINDOW_TARGET = 12.0  # a 10-window text costs at most this many times a 1-window text


def window_cost(version_dir, workdir, texts, repeats, calls=20):
    """Seconds per call on a text that fills one window and on texts of 10 windows, at batch 1 and 32.

    The texts are runs of the test texts' words, joined: the longest prefix
    that the export reads in 1 window, and the shortest runs it reads in 10
    (its `windows` output). Timed through `serving_default` (every task: the
    sentence tasks, under `long_inputs: truncate`, read a long text's cut
    row, which is a row of its own unless the first window holds the same
    pieces: `ten` is such a text, 11 rows, and `ten_shared`, where a word
    ends at the cut, 10 rows) and through each tagging task's own signature
    (the windows alone). Where no word of the texts spans several pieces (no
    text of the first kind), every 7th word is replaced by one that does (a
    word doubled: `every_7th_word`). Rounds interleave the texts; best round.
    """
    import time

    import tensorflow as tf

    from keras_mtl.run import load_run
    from keras_mtl.serving.layout import read_metadata
    from keras_mtl.serving.predict import load_signature

    _, fn, _ = load_signature(version_dir)
    encoder = load_run(workdir).encoder()
    rows_of = tf.function(lambda t: encoder.serving_rows(encoder.tokenize(t), cut="truncate")["token_ids"].nrows())
    words = " ".join(texts).split()
    counts = {}

    def windows_of(start, n):
        if (start, n) not in counts:
            text = " ".join(words[start : start + n])
            counts[start, n] = int(fn(text=tf.constant([text]))["windows"][0])
        return counts[start, n]

    def first(predicate):  # the smallest length for which predicate holds (windows grow with it)
        lo, hi = 1, len(words) // 2
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if predicate(mid) else (mid + 1, hi)
        return lo

    one_n = first(lambda n: windows_of(0, n) > 1) - 1
    if one_n < 1 or windows_of(0, one_n) != 1:
        raise RuntimeError("could not build a 1-window text from the test texts")
    one = " ".join(words[:one_n])

    def ten_window_texts():  # rows read (10 or 11) -> a 10-window text of runs of `words`
        ten = {}
        for start in range(min(200, len(words) // 2)):
            n = first(lambda n: windows_of(start, n) >= 10)
            text = " ".join(words[start : start + n])
            if windows_of(start, n) == 10:
                ten.setdefault(int(rows_of(tf.constant([text]))), text)
            if len(ten) == 2:
                break
        return ten

    ten, long_word = ten_window_texts(), None
    if 11 not in ten:  # no word of the texts spans several pieces: every 7th word becomes one that does
        lengths = tf.function(lambda t: encoder.tokenize(t)["lengths"].flat_values)
        long_word = next((w + w for w in sorted(set(words), key=len, reverse=True)
                          if 2 <= int(lengths(tf.constant([w + w]))[0]) <= 4), None)
        if long_word is not None:
            words = [long_word if i % 7 == 6 else w for i, w in enumerate(words)]
            counts.clear()
            ten = ten_window_texts()
    if sorted(ten) != [10, 11]:
        raise RuntimeError(f"could not build both kinds of 10-window text from the test texts (rows: {sorted(ten)})")
    tagging = [t for t, spec in (read_metadata(version_dir) or {}).get("tasks", {}).items() if spec["type"] == "tagging"]
    out = {"one_window_words": one_n, "ten_window_words": len(ten[11].split()),
           "ten_shared_words": len(ten[10].split()), "every_7th_word": long_word, "by_batch": []}
    for signature in ["serving_default"] + tagging:
        call = load_signature(version_dir, None if signature == "serving_default" else signature)[1]
        for batch in (1, 32):
            texts_of = {"one": one, "ten": ten[11], "ten_shared": ten[10]}
            feeds = {k: tf.constant([t] * batch) for k, t in texts_of.items()}
            best = {k: float("inf") for k in feeds}
            for feed in feeds.values():
                call(text=feed)  # warm-up
            for _ in range(repeats):
                for key, feed in feeds.items():
                    start = time.perf_counter()
                    for _ in range(calls):
                        call(text=feed)
                    best[key] = min(best[key], (time.perf_counter() - start) / calls)
            out["by_batch"].append({"signature": signature, "batch": batch, "seconds_per_call": best,
                                    "ratio": best["ten"] / best["one"], "ratio_shared": best["ten_shared"] / best["one"]})
    # The model alone on 10x the rows (serve_tokens, full-length rows): what the windows cannot beat.
    loaded = tf.saved_model.load(str(version_dir))
    tokens = loaded.signatures["serve_tokens"]
    length = int((read_metadata(version_dir) or {}).get("max_sequence_length", 96))
    out["model_alone"] = []
    for batch in (1, 32):
        feeds = {k: tf.fill([n, length], 5) for k, n in (("one", batch), ("ten", 10 * batch))}
        best = {k: float("inf") for k in feeds}
        for _ in range(repeats):
            for key, ids in feeds.items():
                tokens(token_ids=ids, padding_mask=tf.ones_like(ids, tf.bool))
                start = time.perf_counter()
                for _ in range(calls):
                    tokens(token_ids=ids, padding_mask=tf.ones_like(ids, tf.bool))
                best[key] = min(best[key], (time.perf_counter() - start) / calls)
        out["model_alone"].append({"batch": batch, "rows": [batch, 10 * batch], "ratio": best["ten"] / best["one"]})
    return out


def before_and_now(models, before_dir, texts, n_texts, repeats):
    """Today's exports against earlier ones (`--before`) on the same texts, in the same rounds."""
    from keras_mtl.compare import serving_throughput
    from keras_mtl.serving.layout import resolve_version_dir

    out = []
    for key in ("mtl", "mtl_embedding"):
        earlier = Path(before_dir) / key
        if key not in models or not earlier.is_dir():
            continue
        for batch, n in ((1, max(4, n_texts // 4)), (32, n_texts)):
            use = (texts * (1 + n // max(1, len(texts))))[:n]
            dirs = {"now": models[key]["dir"], "before": resolve_version_dir(earlier)}
            timed = serving_throughput(dirs, use, batch, repeats)
            out.append({"model": key, "batch": batch, "texts_per_s": {k: v[0] for k, v in timed.items()},
                        "ratio_now_to_before": timed["now"][0] / timed["before"][0]})
    return out


def markdown(result):
    T = len(result["tasks"])
    rows = []
    for b in result["by_batch"]:
        tps = b["texts_per_s"]
        rows.append([
            b["batch"], f"{tps['mtl']:.0f}", " / ".join(f"{tps[t]:.0f}" for t in result["tasks"]),
            f"{b['singles_all_tasks_texts_per_s']:.0f}", f"**{b['speedup']['mtl']:.2f}x**",
            f"{b['speedup']['mtl_embedding']:.2f}x" if "mtl_embedding" in b["speedup"] else "-",
        ])
    return (
        f"T = {T} tasks ({', '.join(result['tasks'])}); texts/s through `serving_default` (raw strings in, tokenization included). "
        f"Target S >= {TARGET_FRACTION} T = {TARGET_FRACTION * T:.1f}x.\n\n"
        + common.md_table(
            ["batch", "MTL texts/s (all T tasks)", f"single-task texts/s ({' / '.join(result['tasks'])})",
             f"{T} singles in turn, texts/s", "speedup S (MTL, conditioning none)", "S with conditioning embedding"],
            rows,
        )
    )


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=256, help="texts timed at batch 32 (a quarter of them at batch 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", help="keep the exported models in this directory")
    p.add_argument("--before", help="the models/ dir of an earlier --keep run: time its exports against today's")
    args = p.parse_args(argv)
    run = common.Run(NAME, args)
    encoder = dict(common.TINY if args.tiny else common.GLUE_CONLL)
    max_len = 32 if args.tiny else 96
    n_texts, repeats = (32, 2) if args.tiny else (args.texts, args.repeats)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        tasks = ("topic", "pos") if args.tiny else None  # tiny: T = 2 (tagging: long texts in windows), no conditioning variant
        run.say(f"== {NAME}: encoder {encoder}, max length {max_len}; exporting the multi-task and single-task models")
        models, texts, names = build_models(tmp, encoder, max_len, tasks, embedding=not args.tiny)
        T = len(names)
        by_batch = [measure(models, texts, names, 1, max(4, n_texts // 4), repeats),
                    measure(models, texts, names, 32, n_texts, repeats)]
        windows = window_cost(models["mtl"]["dir"], models["mtl"]["workdir"], texts, repeats)
        before = before_and_now(models, args.before, texts, n_texts, repeats) if args.before else []
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    run.result.update({
        "tasks": names, "encoder": encoder, "max_sequence_length": max_len,
        "params": {k: v["params"] for k, v in models.items()}, "by_batch": by_batch,
        "definition": "S = sum_t time(single-task model t, texts) / time(multi-task model, texts); target S >= 0.9 T",
        "long_texts": windows, "before_and_now": before,
    })
    for b in by_batch:
        tps = b["texts_per_s"]
        run.say(f"  batch {b['batch']}: MTL {tps['mtl']:.0f} texts/s (all {T} tasks); singles "
                + ", ".join(f"{t} {tps[t]:.0f}" for t in names)
                + f"; singles in turn {b['singles_all_tasks_texts_per_s']:.0f}"
                + (f"; MTL(embedding) {tps['mtl_embedding']:.0f}" if "mtl_embedding" in tps else ""))
    for b in by_batch:
        s = b["speedup"]["mtl"]
        goal = TARGET_FRACTION * T
        run.target(f"serving speedup S at batch {b['batch']} (T={T})", s, goal, True, "x",
                   "" if s >= goal else f"short by {goal - s:.2f}x ({100 * s / T:.0f}% of T)")
        if "mtl_embedding" in b["speedup"]:
            run.say(f"  (info) S with task conditioning 'embedding' at batch {b['batch']}: {b['speedup']['mtl_embedding']:.2f}x")
    run.say(f"  long texts: a {windows['one_window_words']}-word text (1 full window) and 10-window texts of "
            f"{windows['ten_window_words']} words (a word straddles the first window's end: 10 windows + a cut row) "
            f"and {windows['ten_shared_words']} words (the first window is the cut row) through the multi-task model")
    for b in windows["by_batch"]:
        secs = b["seconds_per_call"]
        run.say(f"  {b['signature']}, batch {b['batch']}: 1 window {1000 * secs['one']:.2f} ms; 10 windows "
                f"{1000 * secs['ten']:.2f} ms ({b['ratio']:.2f}x), {1000 * secs['ten_shared']:.2f} ms when the cut "
                f"row is the first window ({b['ratio_shared']:.2f}x)")
        # The target, for the worse of the two 10-window texts, at batch 1 and 32.
        run.target(f"cost of a 10-window text vs a 1-window one, {b['signature']}, batch {b['batch']}",
                   max(b["ratio"], b["ratio_shared"]), WINDOW_TARGET, False, "x")
    for m in windows["model_alone"]:
        run.say(f"  (info) the model alone on {m['rows'][1]} full rows vs {m['rows'][0]}: {m['ratio']:.2f}x")
    for b in before:
        tps = b["texts_per_s"]
        run.say(f"  {b['model']} batch {b['batch']}: today {tps['now']:.0f} texts/s, before {tps['before']:.0f} "
                f"texts/s: {b['ratio_now_to_before']:.3f}x")
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
