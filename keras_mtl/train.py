"""train(config, workdir): data -> vocabulary -> model -> fit -> report.

    from keras_mtl import load_config, train
    result = train(load_config("configs/demo.yaml"), workdir="runs/demo")
"""

import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_mtl import __version__
from keras_mtl.callbacks import PerTaskEvaluation, TaskNaNGuard
from keras_mtl.config import LoadedConfig, load_config
from keras_mtl.data.load import load_task_data
from keras_mtl.data.buckets import training_bucket_lengths
from keras_mtl.data.pipeline import apply_class_weights, encode_split, train_dataset
from keras_mtl.data.tokenize import compute_vocabulary, make_encoder, save_vocabulary
from keras_mtl.errors import KerasMTLError
from keras_mtl.evaluate import evaluate_split, report_markdown
from keras_mtl.model import build_model, encodes_per_task, loss_for
from keras_mtl.workdir import RunFiles, default_workdir, save_config, write_json


class TrainingFailed(KerasMTLError):
    """Training stopped early (NaN loss)."""


def plan_steps(train_cfg, num_train, max_steps=None):
    """(epochs, steps_per_epoch): one epoch = one pass over the unique training examples."""
    steps = train_cfg.steps_per_epoch or max(1, math.ceil(num_train / train_cfg.batch_size))
    epochs = train_cfg.epochs
    if max_steps:
        steps = min(steps, max_steps)
        epochs = max(1, min(epochs, max_steps // steps))
    return epochs, steps


def make_optimizer(train_cfg, total_steps):
    warmup = int(train_cfg.warmup_fraction * total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else train_cfg.learning_rate,
        decay_steps=max(1, total_steps - warmup),
        alpha=0.1,
        warmup_target=train_cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_cfg.weight_decay, clipnorm=1.0)


def compiled_trainer(network, config, total_steps):
    """`network` inside a `MultiTaskTrainer`, compiled as `train` compiles it.

    The trainer computes sum_t lambda_t L_t with the configured loss
    weighting and normalizer and logs the per-task losses; AdamW with warmup,
    cosine decay and clipping (of the global gradient under `mirrored`).
    Call it inside the distribution's scope.
    """
    from keras_mtl import distribute
    from keras_mtl.trainer import MultiTaskTrainer

    model = MultiTaskTrainer(
        network,
        config.task_names,
        {t.name: loss_for(t, config.train.loss_normalizer) for t in config.tasks},
        {t.name: t.loss_weight for t in config.tasks},
        weighting=config.train.loss_weighting,
        seed=config.seed,
        loss_normalizer=config.train.loss_normalizer,
    )
    optimizer = distribute.adapt_optimizer(make_optimizer(config.train, total_steps), config.train)
    model.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
    return model


def train(config, workdir=None, overrides=(), max_steps=None, verbose=1):
    """Train the multi-task model of `config` into `workdir`.

    Args:
        config: a path, a `LoadedConfig` (from `load_config`) or a dict.
        workdir: output directory. Defaults to `runs/<name>`.
        overrides: `KEY=VALUE` strings applied to the config.
        max_steps: optional cap on the total number of training steps.
        verbose: 0 silent, 1 progress bar and one line per epoch.

    Returns:
        dict: the test report (`report.json`): per-task metrics and timings.
    """
    from keras_mtl import distribute

    from keras_mtl.trainer import LossWeightLogger, check_weighting_supported

    loaded = _as_loaded(config, overrides)
    config = loaded.config
    check_weighting_supported(config.train.loss_weighting)  # before any data work
    distribute.initialize_multihost()  # no-op unless KERAS_MTL_COORDINATOR/...; before any JAX work
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.train.precision)
    files = RunFiles(Path(workdir) if workdir else default_workdir(config))
    files.root.mkdir(parents=True, exist_ok=True)
    if not files.backup.exists():  # a fresh run (not a resume after a kill)
        for stale in (files.metrics_csv, files.model, files.report_json, files.report_md):
            stale.unlink(missing_ok=True)
    save_config(files, loaded)
    started = time.time()

    # === Data ===
    data = load_task_data(config)
    vocabulary = _vocabulary(config, data, files)
    encoder = make_encoder(vocabulary, config.model)
    encoded = {
        split: encode_split(data.splits[split], encoder, config.tasks, data.classes)
        for split in ("train", "dev", "test")
    }
    class_weights = apply_class_weights(encoded["train"], config.tasks, data.classes)
    epochs, steps = plan_steps(config.train, len(encoded["train"]), max_steps)
    conditioning = "per_task" if encodes_per_task(config.model) else "none"
    buckets = training_bucket_lengths(encoded["train"], config.tasks, config.train, config.model.max_sequence_length)
    dataset, sizes, schedule = train_dataset(
        encoded["train"],
        config.tasks,
        config.train.model_copy(update={"epochs": epochs, "bucket_lengths": buckets}),
        config.model.max_sequence_length,
        conditioning,
        pad_id=encoder.pad_id,
        seed=config.seed,
        steps_per_epoch=steps,
    )
    resumed_epoch = _resumed_epoch(files)
    if resumed_epoch:
        # Continue the data stream (and the sampling schedule) where the
        # killed run stopped: the stream is iterator-independent, so the
        # resumed run sees the batches an uninterrupted one would.
        dataset = dataset.skip(resumed_epoch * steps)
    data_seconds = time.time() - started

    # === Model ===
    ctx, replicas = distribute.scope(config.train)
    dataset = distribute.prepare_dataset(dataset, config.train)
    with ctx:
        backbone = None
        if config.model.preset:
            from keras_mtl.pretrained import load_backbone

            backbone = load_backbone(config.model)
        network = build_model(config, data.classes, len(vocabulary), backbone=backbone)
        model = compiled_trainer(network, config, epochs * steps)
        if resumed_epoch:
            model.loss_history = _loss_history(files.metrics_csv, config.task_names, resumed_epoch)

    # === Fit ===
    present = [t.name for t, s in zip(config.tasks, sizes) if s > 0]
    monitor = PerTaskEvaluation(
        config,
        encoded["dev"],
        data.classes,
        files.metrics_csv,
        pad_id=encoder.pad_id,
        extra_logs=lambda e: {
            f"sampling_p_{name}": float(schedule[min(e, len(schedule) - 1)][j]) for j, name in enumerate(present)
        },
        verbose=verbose,
    )
    nan_guard = TaskNaNGuard(config.task_names)
    callbacks = [
        nan_guard,
        keras.callbacks.BackupAndRestore(str(files.backup), delete_checkpoint=True, double_checkpoint=True),
        LossWeightLogger(model),  # adds lambda_<task> to the epoch logs (before the CSV row)
        monitor,
        keras.callbacks.TensorBoard(str(files.logs), write_graph=False),
    ]
    fit_started = time.time()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    fit_seconds = time.time() - fit_started
    if nan_guard.failure:
        shutil.rmtree(files.backup, ignore_errors=True)
        raise TrainingFailed(nan_guard.failure)

    # === Save and report ===
    network.save(files.model)  # the plain functional network, no trainer class inside
    info = {
        "keras_mtl_version": __version__,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "classes": data.classes,
        "task_types": {t.name: t.type for t in config.tasks},
        "max_sequence_length": config.model.max_sequence_length,
        "pad_id": encoder.pad_id,
        "train_sizes": dict(zip(config.task_names, sizes)),
        "class_weights": class_weights,
        "sampling_schedule": {"tasks": present, "probabilities": np.asarray(schedule).tolist()},
        "epochs": epochs,
        "steps_per_epoch": steps,
        "bucket_lengths": buckets,
        "replicas": replicas,
        "loss_weighting": config.train.loss_weighting,
        "final_loss_weights": {k: float(v) for k, v in model.current_weights().items()},
        "history": monitor.history,
    }
    write_json(files.run, info)
    test = encoded["test"]
    scores = evaluate_split(network, test, config, data.classes, encoder.pad_id) if len(test) else {}
    counts = {t.name: int(len(test.indices(t.name))) for t in config.tasks}
    report = {
        "name": config.name,
        "split": "test",
        "tasks": scores,
        "examples": counts,
        "primary_metrics": {t.name: t.primary_metric for t in config.tasks},
        "seconds": {"data": round(data_seconds, 1), "fit": round(fit_seconds, 1), "total": round(time.time() - started, 1)},
        "epochs": epochs,
        "steps_per_epoch": steps,
        "backend": keras.backend.backend(),
    }
    write_json(files.report_json, report)
    files.report_md.write_text(
        report_markdown(
            f"{config.name}: test metrics",
            scores,
            counts,
            [f"", f"Trained {epochs} epochs x {steps} steps on {keras.backend.backend()} in {fit_seconds:.0f} s."],
        ),
        encoding="utf-8",
    )
    return report


def _resumed_epoch(files):
    """The number of finished epochs a BackupAndRestore backup holds (0 if none)."""
    metadata = files.backup / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _loss_history(csv_path, task_names, epochs):
    """Per finished epoch, the mean training loss of each task (metrics.csv):
    the Python-side history that DWA's weights are computed from."""
    import csv

    if not csv_path.exists():
        return []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch") and int(r["epoch"]) <= epochs]
    return [[float(r.get(f"train_{t}_loss") or "nan") for t in task_names] for r in rows]


def _as_loaded(config, overrides):
    from keras_mtl.config import config_from_dict

    if isinstance(config, LoadedConfig):
        if overrides:
            return config_from_dict(config.raw, overrides=overrides)
        return config
    if isinstance(config, dict):
        return config_from_dict(config, overrides=overrides)
    return load_config(config, overrides)


def _vocabulary(config, data, files):
    if config.model.preset:
        from keras_mtl.pretrained import preset_vocabulary

        vocabulary = preset_vocabulary(config.model)
    else:
        texts = sorted({ex.text for ex in data.splits["train"]})
        vocabulary = compute_vocabulary(
            texts, config.model.vocabulary_size, config.model.lowercase, config.task_names
        )
    save_vocabulary(vocabulary, files.vocab)
    return vocabulary
