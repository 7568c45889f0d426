"""train(config, workdir): data -> tokenization -> network -> fit -> report.

    from keras_mtl import load_config, train
    result = train(load_config("configs/demo.yaml"), workdir="runs/demo")

The run is written through the run skeleton (keras_mtl.runner): staged in
`WORKDIR/backup/`, resumable from its per-epoch backup, promoted when
complete. `init_from` starts it from a trained run's weights (finetune).
"""

import csv
import gc
import hashlib
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_mtl import precision
from keras_mtl.callbacks import KeepBest, PerTaskEvaluation, RunBackup, TaskNaNGuard, dev_score, read_backup_state
from keras_mtl.config import check_keep_best_has_dev, load_config
from keras_mtl.data.load import load_task_data
from keras_mtl.disk import NoSpace, is_disk_full, unraisable_disk_errors_hidden, write_json
from keras_mtl.distill import teacher_targets
from keras_mtl.errors import ConfigError, KerasMTLError
from keras_mtl.model import build_network, loss_for
from keras_mtl.prepare import cache_of, check_max_steps, prepare
from keras_mtl.record import RunRecord
from keras_mtl.runner import save_inputs, save_results, staged_run
from keras_mtl.workdir import RunFiles, check_workdir, config_changes, default_workdir

# Config fields a resumed run may change: they do not touch the training
# (evaluation batch size; warn vs error for dev/test labels unseen in train).
RESUME_IGNORES = ("train.eval_batch_size", "tasks.*.unseen_labels")


class TrainingFailed(KerasMTLError):
    """Training stopped early (NaN loss)."""


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
    cosine decay and clipping (of the global gradient under `mirrored`:
    the trainer's train step clips it). Call it inside the distribution's
    scope.
    """
    from keras_mtl.multitask_trainer import MultiTaskTrainer

    model = MultiTaskTrainer(
        network,
        config.task_names,
        {t.name: loss_for(t, config.train.loss_normalizer) for t in config.tasks},
        {t.name: t.loss_weight for t in config.tasks},
        weighting=config.train.loss_weighting,
        seed=config.seed,
        loss_normalizer=config.train.loss_normalizer,
    )
    model.compile(optimizer=make_optimizer(config.train, total_steps), jit_compile=config.train.jit_compile)
    return model


def train(config, workdir=None, overrides=(), max_steps=None, verbose=1, fresh=False, *, init_from=None):
    """Train the multi-task model of `config` into `workdir`.

    The run writes into `WORKDIR/backup/` and moves its model, metrics and
    report over the work dir's only once they are complete: a run that fails
    leaves the previous run's files as they were. A run killed midway resumes
    from `WORKDIR/backup/` at its last finished epoch when started again with
    the same config (and stops with a `ConfigError` naming the fields that
    differ otherwise). One `train` at a time per work dir (`WORKDIR/.lock`).

    A work dir holding files named like a run's that are not a keras-mtl
    run's, or a config that is the work dir's own config.yaml, is refused
    before anything is written (`workdir.check_workdir`). A full disk stops
    the run with one `NoSpace` error: what it half-wrote is removed, the
    previous run's files stay, and the epochs it finished stay in `backup/`
    to resume from once there is space.

    Args:
        config: a path, a `LoadedConfig` (from `load_config`) or a dict.
        workdir: output directory. Defaults to `runs/<name>`.
        overrides: `KEY=VALUE` strings applied to the config.
        max_steps: optional cap on the total number of training steps.
        verbose: 0 silent, 1 progress bar and one line per epoch.
        fresh: discard the backup of a killed run and train from scratch.
        init_from: start from a trained run's weights and tokenization
            (`finetuning.StartFrom`: MT-DNN's second stage); a resumed
            run continues from its own backup instead.

    Returns:
        dict: the test report (`report.json`): per-task metrics and timings.

    Raises:
        ConfigError: a killed run's backup was started with another config;
            `train.keep: best` where no task can have dev examples.
        WorkdirBusy: another `train` is writing into `workdir`.
        NotARunWorkdir: `workdir` holds files the run would overwrite.
        NoSpace: the disk filled up.
    """
    from keras_mtl import distribute
    from keras_mtl.multitask_trainer import check_weighting_supported

    check_max_steps(max_steps)
    loaded = load_config(config, overrides)
    config = loaded.config
    check_weighting_supported(config.train.loss_weighting)  # before any data work
    check_keep_best_has_dev(loaded)  # where the config alone tells; the data may tell later
    files = RunFiles(Path(workdir) if workdir else default_workdir(config))
    check_workdir(files.root, loaded.path)  # before anything is written into it
    distribute.initialize_multihost()  # no-op unless KERAS_MTL_COORDINATOR/...; before any JAX work
    try:
        # auto: resolved here, recorded in run.json; the caller's global policy is back afterwards
        with precision.policy_scope(config.train.precision):
            try:
                with staged_run(files, keep_on_failure=True) as stage:  # a failed run resumes from backup/
                    report = _train(loaded, files, stage, max_steps, verbose, fresh, init_from)
                return report
            except Exception as err:
                if not is_disk_full(err):
                    raise
                failed = _failed_write(files, err)
            # outside the handler: the error, and with it the failed writers' objects, is released
            raise _after_disk_full(files, *failed) from None
    except OSError as err:  # the work dir or its lock could not be written
        if not is_disk_full(err):
            raise
        raise NoSpace(err.filename or files.root, "the work dir", "free some space and rerun") from None


def _train(loaded, files, stage, max_steps, verbose, fresh, init_from):
    from keras_mtl import distribute
    from keras_mtl.multitask_trainer import LossWeightLogger

    config = loaded.config
    keras.utils.set_random_seed(config.seed)
    killed = None if fresh else _killed_run(files)
    if killed is not None:  # fail fast, before the data work; the plan and data are checked below
        _check_resume(files, killed, {"config": loaded.raw, "backend": keras.backend.backend()})
    started = time.time()

    # === Data === (nothing in the work dir is touched until this succeeded)
    processes, process_id = distribute.input_share(config.train)
    tokenization = init_from.tokenization() if init_from is not None else None
    if any(getattr(task, "teacher", None) for task in config.tasks):
        # Distillation: the teachers read the training examples (their predictions are cached by
        # content in WORKDIR/teachers/), so the data is read and encoded in memory.
        data = load_task_data(loaded)  # a LoadedConfig: errors name the config line
        if init_from is not None:
            init_from.check(config, data)  # the run it starts from knows these tasks and classes
        teachers = teacher_targets(config, data.splits["train"], data.classes, files.root / "teachers")
        prepared = prepare(loaded, max_steps=max_steps, data=data, teachers=teachers, tokenization=tokenization)
        train_data = _fingerprint(data.splits["train"], prepared.vocabulary)
    else:
        # The prepared cache: written by the first run of this data, opened by the next ones; the
        # training input streams from its shards.
        # Under multi-host data_parallel each process streams its own share of the rows (`input_share`).
        prepared = prepare(loaded, max_steps=max_steps, tokenization=tokenization, cache=cache_of(loaded),
                           num_processes=processes, process_id=process_id)
        if init_from is not None:
            init_from.check(config, prepared.data)  # the run it starts from knows these tasks and classes
        train_data = _entry_fingerprint(prepared.entry, prepared.vocabulary)
    data, vocabulary, encoder, encoded, plan = (
        prepared.data, prepared.vocabulary, prepared.encoder, prepared.encoded, prepared.plan
    )
    epochs, steps, schedule = plan.epochs, plan.steps_per_epoch, plan.schedule
    # The early check (check_keep_best_has_dev) saw the config; only the data tells that a dev source is empty.
    scored = config.target_task_names  # keep: best scores the target tasks (dev_score)
    if config.train.keep == "best" and not any(len(encoded["dev"].indices(t)) for t in scored):
        which = "task" if len(scored) == len(config.tasks) else "target task (role: target)"
        raise ConfigError(
            f"train.keep: best keeps the epoch with the best dev score, but no {which} has dev examples: "
            f"give a {which} dev data (data.dev, or splits.dev_fraction > 0) or use train.keep: last"
        )
    dataset = prepared.train_dataset()
    run_state = {
        "config": loaded.raw,
        "backend": keras.backend.backend(),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "train_data": train_data,
        **({"init_from": init_from.identity()} if init_from is not None else {}),
        **({"input_processes": processes} if prepared.entry is not None and processes > 1 else {}),
    }
    if killed is not None:
        _check_resume(files, killed, run_state)
        resumed_epoch = killed["epoch"]
        # Continue the data stream (and the sampling schedule) where the
        # killed run stopped: the stream is iterator-independent, so the
        # resumed run sees the batches an uninterrupted one would.
        dataset = dataset.skip(resumed_epoch * steps)
    else:
        resumed_epoch = 0
        shutil.rmtree(files.backup, ignore_errors=True)  # --fresh, or a run killed before its first epoch ended
        stage.root.mkdir(parents=True)
        write_json(files.run_state, run_state)
    inputs = save_inputs(stage, loaded, vocabulary, prepared.tokenizer_record)
    data_seconds = time.time() - started

    # === Model ===
    ctx, replicas = distribute.scope(config.train)
    dataset = distribute.prepare_dataset(dataset, config.train, local=prepared.entry is not None,
                                         pad_id=encoder.pad_id, length=max(plan.bucket_lengths))
    with ctx:
        network = build_network(config, data.classes, vocabulary)
        if init_from is not None:  # the run's shared encoder and the task's own layers and rows (a resume restores its own)
            copied, fresh = init_from.initialize(network)
            if verbose:
                print(f"started from {init_from.describe()}: copied {', '.join(copied)}"
                      + (f"; left as initialized: {', '.join(fresh)}" if fresh else ""))
        model = compiled_trainer(network, config, epochs * steps)
        if resumed_epoch:
            model.loss_history = _loss_history(stage.metrics_csv, config.task_names, resumed_epoch)

    # === Fit ===
    present = plan.present
    monitor = PerTaskEvaluation(
        config,
        encoded["dev"],
        data.classes,
        stage.metrics_csv,
        pad_id=encoder.pad_id,
        extra_logs=lambda e: {
            f"sampling_p_{name}": float(schedule[min(e, len(schedule) - 1)][j]) for j, name in enumerate(present)
        },
        verbose=verbose,
    )
    nan_guard = TaskNaNGuard(config.task_names)
    keep_best = KeepBest(config, network, files.checkpoint) if config.train.keep == "best" else None
    callbacks = [
        nan_guard,
        LossWeightLogger(model),  # adds lambda_<task> to the epoch logs (before the CSV row); DWA's next weights
        monitor,  # the CSV row of the epoch, before the backup commits it
        *([keep_best] if keep_best else []),  # the best epoch's weights (from the dev metrics in the logs)
        # weights, optimizer, seed states (and the best epoch's weights): after everything that changes them
        RunBackup(files.checkpoint, keep_best=keep_best),
        keras.callbacks.TensorBoard(str(files.logs), write_graph=False),
    ]
    fit_started = time.time()
    # shuffle=False: the tf.data stream is already shuffled (and Keras warns otherwise).
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
    fit_seconds = time.time() - fit_started
    if nan_guard.failure:
        shutil.rmtree(files.backup, ignore_errors=True)  # the previous run's files stay as they were
        raise TrainingFailed(nan_guard.failure)

    # === Save and report === (into backup/, then over the work dir's files)
    kept_epoch = keep_best.restore() if keep_best else None  # train.keep: best -> the best epoch's weights
    if kept_epoch is None:  # train.keep: last (or no epoch had a finite dev score)
        kept_epoch = epochs
    kept_row = next((r for r in monitor.history if r.get("epoch") == kept_epoch), {})
    kept_score = dev_score(config, kept_row)
    kept_score = kept_score if kept_score is not None and np.isfinite(kept_score) else None
    kept = f"Kept the weights of epoch {kept_epoch} ({config.train.keep}" + (
        f", mean dev score {kept_score:.4f})." if kept_score is not None else ")."
    )
    record = RunRecord.for_config(
        config,
        data.classes,
        pad_id=encoder.pad_id,
        train_sizes=dict(zip(config.task_names, plan.sizes)),
        class_weights=plan.class_weights,
        sampling_schedule={"tasks": present, "probabilities": np.asarray(schedule).tolist()},
        epochs=epochs,
        steps_per_epoch=steps,
        bucket_lengths=plan.bucket_lengths,
        replicas=replicas,
        loss_weighting=config.train.loss_weighting,
        final_loss_weights={k: float(v) for k, v in model.current_weights().items()},
        history=monitor.history,
        keep=config.train.keep,
        kept_epoch=kept_epoch,
        kept_dev_score=kept_score,
        finetuned_from=init_from.identity() if init_from is not None else None,
        **inputs,
    )
    started_from = f" Started from {init_from.describe()}." if init_from is not None else ""
    report = save_results(
        stage,
        network,
        record,
        encoded["test"],
        config,
        data.classes,
        encoder.pad_id,
        f"{config.name}: test metrics",
        f"Trained {epochs} epochs x {steps} steps on {keras.backend.backend()} in {fit_seconds:.0f} s. "
        f"{kept}{started_from}",
        seconds={"data": round(data_seconds, 1), "fit": round(fit_seconds, 1), "total": round(time.time() - started, 1)},
        epochs=epochs,
        steps_per_epoch=steps,
        kept_epoch=kept_epoch,
        kept_dev_score=kept_score,
    )
    return report


def _failed_write(files, error):
    """(path, what) of the write a disk-full `error` stopped."""
    if isinstance(error, NoSpace):
        return error.path, error.what
    return getattr(error, "filename", None) or files.root, ""


def _after_disk_full(files, path, what):
    """The `NoSpace` error of a run the full disk stopped, once what it
    half-wrote is removed.

    The previous run's files were never touched (the run writes into
    `backup/`). In `backup/` the last committed epoch (its checkpoint, the
    run's config, vocabulary, metrics.csv) stays, so that the same command
    resumes there once there is space; the files of the epoch that failed,
    `.tmp` files and the staged model and report go. A run with no finished
    epoch leaves no `backup/`.
    """

    with unraisable_disk_errors_hidden():
        gc.collect()  # a failed writer's open files close now
        state = read_backup_state(files.checkpoint)
        if state is None:
            shutil.rmtree(files.backup, ignore_errors=True)
        else:
            committed = {RunBackup.METADATA, state["weights"], (state.get("best") or {}).get("weights")}
            for entry in files.checkpoint.iterdir():
                if entry.name in committed:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            for tmp in files.backup.rglob("*.tmp"):
                tmp.unlink(missing_ok=True)
            stage = files.staged()
            for written_after_fit in (stage.model, stage.run, stage.report_json, stage.report_md):
                written_after_fit.unlink(missing_ok=True)
    if state is None:
        then = "nothing of this run was kept; free some space and rerun"
    else:
        then = (
            f"its epochs up to {state['epoch']} are kept in {files.backup}: free some space and rerun the same "
            f"command to resume there (or delete {files.backup})"
        )
    previous = "the previous run's files are unchanged; " if files.run.exists() else ""
    return NoSpace(path, what, previous + then)


def _killed_run(files):
    """What the killed run in `files.backup` was started with, plus `epoch`
    (the epochs it finished); None when there is nothing to resume."""
    state = read_backup_state(files.checkpoint)
    if state is None:
        return None
    try:
        started = json.loads(files.run_state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(started, dict):
        return None
    return {**started, "epoch": int(state["epoch"])}


def _check_resume(files, killed, current):
    """Raise a one-line `ConfigError` when `current` (config, backend, plan,
    training data) differs from what the killed run was started with."""
    changes = []
    if "config" in current:
        changes += [
            f"{field}: {_shown(old)} -> {_shown(new)}"
            for field, old, new in config_changes(_with_defaults(killed.get("config")), current["config"],
                                                  RESUME_IGNORES)
        ]
    labels = {
        "backend": "Keras backend",
        "epochs": "epochs (train.epochs, --max-steps)",
        "steps_per_epoch": "steps per epoch (train.steps_per_epoch, --max-steps)",
    }
    for key, label in labels.items():
        if key in current and killed.get(key) != current[key]:
            changes.append(f"{label}: {_shown(killed.get(key))} -> {_shown(current[key])}")
    if "train_data" in current and killed.get("input_processes", 1) != current.get("input_processes", 1):
        # each process streams its own share of the rows: another count is another stream
        changes.append(f"processes feeding the input: {killed.get('input_processes', 1)} -> "
                       f"{current.get('input_processes', 1)}")
    if "train_data" in current and killed.get("train_data") != current["train_data"]:
        changes.append("the training examples (or the vocabulary) changed")
    if not changes:
        return
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    total = killed.get("epochs")
    raise ConfigError(
        f"{files.root}: cannot resume the killed run in {files.backup} (epoch {killed['epoch']}"
        f"{f' of {total}' if total else ''} done): it was started with another setup: {shown}. "
        f"Rerun it as started to resume, or pass --fresh (or delete {files.backup}) to train from scratch"
    )


def _with_defaults(raw):
    """A saved config with the fields a newer keras-mtl added filled in with their
    defaults (a backup from before them resumes unless a new field was set)."""
    from keras_mtl.config import config_from_dict

    try:
        return config_from_dict(raw).raw
    except Exception:  # noqa: BLE001 - compare it as it was saved
        return raw


def _shown(value, limit=60):
    text = value if isinstance(value, str) else json.dumps(value) if _jsonable(value) else repr(value)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _fingerprint(train_examples, vocabulary):
    """A hash of the training examples and the vocabulary: a resume needs the same."""
    digest = hashlib.sha256()
    for ex in train_examples:
        fields = [ex.text, ex.labels] if ex.text_pair is None else [ex.text, ex.labels, ex.text_pair]
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\n")
    digest.update("\n".join(vocabulary).encode("utf-8"))
    return digest.hexdigest()


def _entry_fingerprint(entry, vocabulary):
    """A hash of the training rows of a cache entry (their files' SHA-256) and the vocabulary:
    a resume needs the same. The same data gives the same rows whatever the entry's key."""
    digest = hashlib.sha256(b"cached training rows\n")
    for shard in entry.manifest["splits"]["train"]["shards"]:
        for name, info in sorted(shard["files"].items()):
            digest.update(f"{name} {info['sha256']}\n".encode("utf-8"))
    digest.update("\n".join(vocabulary).encode("utf-8"))
    return digest.hexdigest()


def _loss_history(csv_path, task_names, epochs):
    """Per finished epoch, the mean training loss of each task (metrics.csv):
    the Python-side history that DWA's weights are computed from."""

    if not csv_path.exists():
        return []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch") and int(r["epoch"]) <= epochs]
    return [[float(r.get(f"train_{t}_loss") or "nan") for t in task_names] for r in rows]
