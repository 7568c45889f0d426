"""Padding waste of the training batches: bucketing vs padding to the max length, and packing.

    python bench/padding.py [--config configs/glue_conll.yaml] [--batches 400] [--vocab runs/glue_conll/vocab.txt]

The config's training data is read (keras_mtl.data.load) and encoded with its
vocabulary (computed from the training texts as `keras-mtl train` does, or
read from --vocab); then the REAL training pipeline (keras_mtl.data.pipeline.
train_dataset: the config's batch size, sampling schedule and seed) is drawn
for --batches batches, and for every batch

    waste = padded tokens / processed tokens,  processed = batch x padded length

is counted from its padding mask, with:

* buckets:        the configured `train.bucket_lengths` (what training does);
* finer buckets:  every 8 (and every 4) tokens up to max_sequence_length (more shapes:
                  XLA/JAX compile once per shape);
* pad to max:     one bucket, every batch padded to max_sequence_length;
* pad to batch max: the same stream of examples in sampling order, each batch
                  padded to its longest example (no bucketing; not a fixed
                  shape, so XLA/JAX would recompile per length);
* packing:        the same stream, packed first-fit-decreasing (windows of 8
                  batches) into rows of max_sequence_length, several examples
                  per row with a block-diagonal attention mask (analysis only:
                  the model does not implement packing).

Attention waste (computed score pairs that are padding or cross-example,
sum_rows L^2 vs sum_examples len^2) is reported beside it: packing removes
padded tokens but, without a variable-length attention kernel, computes the
full L x L scores of each packed row.

Target: <= 10% padded tokens with bucketing. Skipped with a message when the
config's data files are absent.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "padding"
TARGET_PCT = 10.0
DEFAULT_CONFIG = common.ROOT / "configs" / "glue_conll.yaml"


def draw_lengths(encoded, config, pad_id, bucket_lengths, batches):
    """[(padded length, [example lengths])] for `batches` batches of the real pipeline."""
    import numpy as np

    from keras_mtl.data.pipeline import train_dataset

    t = config.train.model_copy(update={"bucket_lengths": list(bucket_lengths)})
    steps = t.steps_per_epoch or max(1, -(-len(encoded) // t.batch_size))
    ds, sizes, schedule = train_dataset(
        encoded, config.tasks, t, config.model.max_sequence_length, config.model.sees_task,
        pad_id=pad_id, seed=config.seed, steps_per_epoch=steps,
    )
    out = []
    for x, _, _ in ds.take(batches):
        mask = x["padding_mask"].numpy()
        out.append((int(mask.shape[1]), mask.sum(axis=1).astype(np.int64).tolist()))
    return out, sizes, np.asarray(schedule).tolist()


def _configured(train_cfg):
    if train_cfg.bucket_lengths == "auto":
        return f"auto`, `num_buckets: {train_cfg.num_buckets}"
    return str(train_cfg.bucket_lengths)


def waste(batches):
    real = sum(sum(lens) for _, lens in batches)
    processed = sum(L * len(lens) for L, lens in batches)
    pairs_real = sum(sum(n * n for n in lens) for _, lens in batches)
    pairs = sum(L * L * len(lens) for L, lens in batches)
    return {
        "padded_pct": 100.0 * (processed - real) / processed,
        "real_tokens": real,
        "processed_tokens": processed,
        "attention_waste_pct": 100.0 * (pairs - pairs_real) / pairs,
        "score_pairs": pairs,
        "mean_padded_length": processed / sum(len(lens) for _, lens in batches),
    }


def pad_to_batch_max(batches):
    return [(max(lens), lens) for _, lens in batches]


def pack(lengths, capacity, window):
    """First-fit-decreasing packing of `lengths` (in windows) into rows of `capacity`: [(capacity, [row lengths])]."""
    rows_out = []
    for start in range(0, len(lengths), window):
        rows = []  # [free, [lengths]]
        for n in sorted(lengths[start : start + window], reverse=True):
            for row in rows:
                if row[0] >= n:
                    row[0] -= n
                    row[1].append(n)
                    break
            else:
                rows.append([capacity - n, [n]])
        rows_out += [lens for _, lens in rows]
    return rows_out


def packing_stats(lengths, capacity, batch, window):
    rows = pack(lengths, capacity, window)
    real = sum(lengths)
    processed = len(rows) * capacity
    pairs_real = sum(n * n for n in lengths)
    pairs = len(rows) * capacity * capacity
    return {
        "padded_pct": 100.0 * (processed - real) / processed,
        "real_tokens": real,
        "processed_tokens": processed,
        "attention_waste_pct": 100.0 * (pairs - pairs_real) / pairs,
        "score_pairs": pairs,
        "examples_per_row": len(lengths) / len(rows),
        "steps_per_example_batch": len(rows) / batch / (len(lengths) / batch),
        "rows": len(rows),
    }


def markdown(result):
    if result.get("skipped"):
        return f"Skipped: {result['skipped']}"
    rows = []
    for name, w in result["variants"].items():
        extra = f"{w['examples_per_row']:.2f} examples/row" if "examples_per_row" in w else f"mean L {w['mean_padded_length']:.1f}"
        rows.append([name, f"{w['padded_pct']:.1f}%", f"{w['attention_waste_pct']:.1f}%", f"{w['processed_tokens']:,}", extra])
    head = (
        f"`{result['config']}`: {result['batches']} batches of {result['batch_size']} "
        f"({result['examples']:,} examples, sampling {result['sampling']}, buckets {result['bucket_lengths']}, "
        f"max length {result['max_sequence_length']}).\n\n"
    )
    return head + common.md_table(["batching", "padded tokens", "attention waste", "processed tokens", "note"], rows)


def main(argv=None):
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="default configs/glue_conll.yaml (--tiny: configs/demo.yaml)")
    p.add_argument("--batches", type=int, default=400)
    p.add_argument("--vocab", help="a vocab.txt (e.g. runs/glue_conll/vocab.txt) instead of computing one")
    p.add_argument("--window", type=int, default=8, help="packing window, in batches")
    args = p.parse_args(argv)
    from keras_mtl.config import load_config

    run = common.Run(NAME, args)
    config_path = Path(args.config or (common.ROOT / "configs" / "demo.yaml" if args.tiny else DEFAULT_CONFIG))
    batches_n = min(args.batches, 20) if args.tiny else args.batches
    loaded = load_config(config_path)
    cfg = loaded.config
    run.result["config"] = common._rel(str(config_path))
    if run.skipped_for_missing_data(cfg):
        return 0
    from keras_mtl.data.buckets import bucket_lengths, training_bucket_lengths
    from keras_mtl.data.tokenize import load_vocabulary
    from keras_mtl.prepare import Tokenization, prepare

    run.say(f"== {NAME}: {config_path}, {batches_n} batches of {cfg.train.batch_size}")
    given = Tokenization.of_vocabulary(load_vocabulary(args.vocab), cfg.model) if args.vocab else None
    prepared = prepare(loaded, plan=False, tokenization=given)
    encoder, encoded = prepared.encoder, prepared.encoded["train"]
    max_len = cfg.model.max_sequence_length
    buckets = training_bucket_lengths(encoded, cfg.tasks, cfg.train, max_len)
    bucketed, sizes, schedule = draw_lengths(encoded, cfg, encoder.pad_id, buckets, batches_n)
    to_max, _, _ = draw_lengths(encoded, cfg, encoder.pad_id, [max_len], batches_n)
    stream = [n for _, lens in to_max for n in lens]
    variants = {f"buckets {buckets} (training: `bucket_lengths: {_configured(cfg.train)}`)": waste(bucketed)}
    auto = lambda k: training_bucket_lengths(  # noqa: E731
        encoded, cfg.tasks, cfg.train.model_copy(update={"bucket_lengths": "auto", "num_buckets": k}), max_len
    )
    grids = [(f"auto, {k} buckets {auto(k)}", auto(k)) for k in (4, 8, 12, 16) if k != len(buckets)]
    grids += [
        ("every 16 tokens", list(range(16, max_len, 16))),
        ("every 8 tokens", list(range(8, max_len, 8))),
        ("every 4 tokens", list(range(4, max_len, 4))),
    ]
    for label, lengths in grids:
        drawn, _, _ = draw_lengths(encoded, cfg, encoder.pad_id, lengths, batches_n)
        variants[f"{label} ({len(bucket_lengths(lengths, max_len))} shapes)"] = waste(drawn)
    variants.update({
        f"pad to max ({max_len})": waste(to_max),
        "pad to batch max": waste(pad_to_batch_max(to_max)),
        f"packing into rows of {max_len}": packing_stats(stream, max_len, cfg.train.batch_size, args.window * cfg.train.batch_size),
    })
    run.result.update({
        "batches": batches_n,
        "batch_size": cfg.train.batch_size,
        "examples": len(stream),
        "sampling": cfg.train.sampling,
        "sampling_schedule": schedule,
        "train_sizes": dict(zip(cfg.task_names, sizes)),
        "bucket_lengths": buckets,
        "max_sequence_length": max_len,
        "mean_example_length": sum(stream) / len(stream),
        "variants": variants,
    })
    for name, w in variants.items():
        run.say(f"  {name}: {w['padded_pct']:.1f}% padded tokens, {w['attention_waste_pct']:.1f}% attention waste")
    training = next(iter(variants))
    bucket_pct = variants[training]["padded_pct"]
    packed = variants[f"packing into rows of {max_len}"]
    bucketed_w = variants[training]
    fewer_tokens = 100.0 * (1 - packed["processed_tokens"] / bucketed_w["processed_tokens"])
    more_pairs = packed["score_pairs"] / bucketed_w["score_pairs"]
    run.result["packing_vs_buckets"] = {"fewer_processed_tokens_pct": fewer_tokens, "attention_pairs_ratio": more_pairs}
    run.result["recommendation"] = (
        f"keep buckets: packing would process {fewer_tokens:.1f}% fewer tokens (the dense layers' FLOPs) "
        f"but compute {more_pairs:.1f}x the attention score pairs (full {max_len}x{max_len} per packed row, "
        "no variable-length attention kernel here), and needs a block-diagonal mask, per-segment positions, "
        "pooling and labels"
        if fewer_tokens < 10.0
        else f"packing would process {fewer_tokens:.1f}% fewer tokens than the buckets ({more_pairs:.1f}x the "
        "attention score pairs): worth implementing (block-diagonal mask, per-segment positions, pooling, labels)"
    )
    run.say(f"  recommendation: {run.result['recommendation']}")
    run.target("padded tokens with bucketing", bucket_pct, TARGET_PCT, False, "%",
               "" if bucket_pct <= TARGET_PCT else f"over by {bucket_pct - TARGET_PCT:.1f} points")
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
