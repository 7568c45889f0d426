"""Reptile meta-training of a shared encoder over the tasks of a config.

    keras-mtl meta-train configs/meta_polarity.yaml --workdir runs/meta

`meta_train` runs first-order Reptile (Nichol, Achiam & Schulman 2018) over
the tasks of a config and leaves an ordinary work dir (`keras_mtl.meta.adapt`
fine-tunes it on a new task). The algorithm and which weights count as
shared: docs/meta_learning.md.
"""

import collections
import csv
import math
import time
from pathlib import Path

import numpy as np

from keras_mtl import precision
from keras_mtl.config import load_config
from keras_mtl.errors import ConfigError, DataError, ModelError
from keras_mtl.meta.batches import Cycle, make_batch, padded_lengths

INNER_OPTIMIZERS = ("adam", "sgd")


def reptile_update(theta, adapted, epsilon):
    """theta + epsilon * mean_k(adapted_k - theta), per weight array (numpy).

    Args:
        theta: list of arrays, the weights before the inner loops.
        adapted: list (one per sampled task) of lists of arrays, the weights
            after each task's inner loop.
        epsilon: the outer step size.
    """
    if not adapted:
        return [np.array(t, copy=True) for t in theta]
    out = []
    for j, t in enumerate(theta):
        delta = sum(np.asarray(a[j], np.float64) - t for a in adapted) / len(adapted)
        out.append((t + epsilon * delta).astype(np.asarray(t).dtype))
    return out


def _epsilon(meta_lr, step, meta_steps, anneal):
    """Outer step size at 0-based meta `step`: linear decay to 0 when annealed."""
    return meta_lr * (1.0 - step / meta_steps) if anneal else meta_lr


def _inner_optimizer(name, lr):
    import keras

    if name == "adam":
        # beta_1 = 0 as in the Reptile paper: momentum would carry one task's
        # gradients into the next task's inner loop.
        return keras.optimizers.Adam(learning_rate=lr, beta_1=0.0, clipnorm=1.0)
    return keras.optimizers.SGD(learning_rate=lr, clipnorm=1.0)


class Reptile:
    """First-order Reptile over the task heads of one multi-task model.

    Args:
        model: the multi-task keras.Model of `build_network`.
        config: its ExperimentConfig.
        inner_lr, inner_optimizer: the inner-loop optimizer (one per task,
            its state kept across meta steps).

    Attributes:
        networks: task name -> keras.Model from the shared inputs to that
            task's head (sharing the layers of `model`), compiled with the
            task's loss.
        shared: the trainable variables used by more than one task's network
            (all of them when there is one task): the meta-learned weights.
        specific: task name -> its own trainable variables (kept as adapted).
    """

    def __init__(self, model, config, inner_lr=1e-3, inner_optimizer="adam"):
        import keras

        from keras_mtl.model import loss_for

        self.model, self.config = model, config
        self.networks = {}
        for task in config.tasks:
            net = keras.Model(model.input, model.get_layer(task.name).output, name=f"{task.name}_network")
            net.compile(
                optimizer=_inner_optimizer(inner_optimizer, inner_lr),
                loss=loss_for(task),
                jit_compile=config.train.jit_compile,
            )
            self.networks[task.name] = net
        uses = collections.Counter(id(v) for net in self.networks.values() for v in net.trainable_variables)
        single = len(self.networks) == 1
        self.shared = [v for v in model.trainable_variables if single or uses[id(v)] > 1]
        shared_ids = {id(v) for v in self.shared}
        self.specific = {
            name: [v for v in net.trainable_variables if id(v) not in shared_ids]
            for name, net in self.networks.items()
        }

    def shared_values(self):
        from keras import ops

        return [np.array(ops.convert_to_numpy(v)) for v in self.shared]

    def set_shared(self, values):
        for v, value in zip(self.shared, values):
            v.assign(value)

    def meta_step(self, task_batches, epsilon):
        """One outer step.

        Args:
            task_batches: list of (task name, list of inner (x, y, sw) batches).
            epsilon: the outer step size.

        Returns:
            dict task -> mean inner loss.
        """
        theta = self.shared_values()
        adapted, losses = [], {}
        for k, (name, batches) in enumerate(task_batches):
            if k:
                self.set_shared(theta)
            net, values = self.networks[name], []
            for x, y, sw in batches:
                loss = net.train_on_batch(x, y, sample_weight=sw)
                values.append(float(np.asarray(loss[0] if isinstance(loss, (list, tuple)) else loss)))
            losses.setdefault(name, []).extend(values)
            adapted.append(self.shared_values())
        self.set_shared(reptile_update(theta, adapted, epsilon))
        return {name: float(np.mean(v)) for name, v in losses.items()}


# --------------------------------------------------------------------------
# meta-train
# --------------------------------------------------------------------------


def meta_train(
    config,
    workdir=None,
    inner_steps=5,
    meta_steps=200,
    inner_lr=1e-3,
    meta_lr=1.0,
    *,
    overrides=(),
    meta_batch_size=1,
    inner_batch_size=None,
    inner_optimizer="adam",
    task_sampling="uniform",
    anneal=True,
    eval_every=None,
    verbose=1,
):
    """Meta-train the shared encoder of `config` with Reptile into `workdir`.

    Args:
        config: a path, a `LoadedConfig` or a dict (as for `train`).
        workdir: output dir (default `runs/<name>-meta`).
        inner_steps: optimizer steps on one task per inner loop (k).
        meta_steps: outer (Reptile) steps.
        inner_lr: learning rate of the inner optimizer.
        meta_lr: outer step size epsilon (1.0 = take the adapted weights).
        overrides: `KEY=VALUE` config overrides.
        meta_batch_size: tasks sampled per outer step (their updates are averaged).
        inner_batch_size: examples per inner batch (default `train.batch_size`).
        inner_optimizer: "adam" (beta_1 = 0) or "sgd".
        task_sampling: how tasks are drawn: "uniform" (Reptile) or any
            `train.sampling` strategy ("proportional", "temperature", ...).
        anneal: decay epsilon linearly to 0 over the meta steps.
        eval_every: score the dev split every N meta steps (always at the end).
        verbose: 0 silent, 1 a line per evaluation.

    Returns:
        Path of the work dir.
    """
    _check_meta_args(inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size, inner_batch_size, inner_optimizer, task_sampling, eval_every)
    from keras_mtl.runner import staged_run
    from keras_mtl.workdir import RunFiles

    loaded = load_config(config, overrides)
    config = loaded.config
    work = RunFiles(Path(workdir) if workdir else Path("runs") / f"{config.name}-meta")
    if work.backup.exists() and not work.complete_marker.exists():
        raise ModelError(
            f"{work.backup}: the work dir holds an unfinished `keras-mtl train`; resume it "
            f"(the same train command) or delete {work.backup}, or meta-train into another --workdir"
        )
    with staged_run(work) as stage:
        # auto: resolved here, recorded in run.json; the caller's global policy is back afterwards
        with precision.policy_scope(loaded.config.train.precision):
            _meta_train_staged(
                loaded, stage, inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size,
                inner_batch_size, inner_optimizer, task_sampling, anneal, eval_every, verbose,
            )
    return work.root


def _meta_train_staged(
    loaded, files, inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size,
    inner_batch_size, inner_optimizer, task_sampling, anneal, eval_every, verbose,
):
    """`meta_train` into `files` (the work dir's `backup/`, moved in place when complete)."""
    import keras

    from keras_mtl.data import sampling
    from keras_mtl.evaluation import evaluate_split
    from keras_mtl.model import build_network
    from keras_mtl.prepare import cache_of, prepare
    from keras_mtl.record import RunRecord
    from keras_mtl.runner import save_inputs, save_results

    config = loaded.config
    keras.utils.set_random_seed(config.seed)
    started = time.time()

    # === Data ===
    # No class weights, epochs or buckets: Reptile draws its own batches, from the training rows of the
    # prepared cache (written by the first run of this data) held for random access.
    prepared = prepare(loaded, plan=False, cache=cache_of(loaded), train_rows=True)
    data, vocabulary, encoder, encoded = prepared.data, prepared.vocabulary, prepared.encoder, prepared.encoded
    inputs = save_inputs(files, loaded, vocabulary, prepared.tokenizer_record)
    train = encoded["train"]
    sizes = {t.name: len(train.indices(t.name)) for t in config.tasks}
    present = [i for i, t in enumerate(config.tasks) if sizes[t.name] > 0]
    if not present:
        raise DataError("meta-train: no task has training examples")
    if task_sampling == "uniform":
        probs = np.full([len(present)], 1.0 / len(present))
    else:
        probs = sampling.task_probabilities(
            [sizes[config.tasks[i].name] for i in present], task_sampling, config.train.temperature, 1, 1
        )
    rng = np.random.default_rng(config.seed)
    batch_size = inner_batch_size or config.train.batch_size
    cycles = {i: Cycle(train.indices(config.tasks[i].name), batch_size, rng) for i in present}
    lengths = padded_lengths(config)

    # === Model ===
    model = build_network(config, data.classes, vocabulary)
    reptile = Reptile(model, config, inner_lr=inner_lr, inner_optimizer=inner_optimizer)

    # === Meta-train ===
    history, pending = [], collections.defaultdict(list)
    evaluate_at = set(range(eval_every, meta_steps + 1, eval_every)) if eval_every else set()
    evaluate_at.add(meta_steps)
    fit_started = last = time.time()
    for step in range(meta_steps):
        picks = rng.choice(len(present), size=meta_batch_size, replace=True, p=probs)
        task_batches = []
        for p in picks:
            ti = present[int(p)]
            task = config.tasks[ti]
            batches = [
                make_batch(train, cycles[ti].next(), task, ti, lengths, encoder.pad_id, prepared.sees_task)
                for _ in range(inner_steps)
            ]
            task_batches.append((task.name, batches))
        losses = reptile.meta_step(task_batches, _epsilon(meta_lr, step, meta_steps, anneal))
        for name, value in losses.items():
            if not math.isfinite(value):
                from keras_mtl.training import TrainingFailed

                raise TrainingFailed(
                    f"the inner loss of task {name!r} became NaN/inf at meta step {step + 1}; "
                    "lower --inner-lr or --meta-lr"
                )
            pending[name].append(value)
        if step + 1 in evaluate_at:
            row = {"meta_step": step + 1, "seconds": round(time.time() - last, 2)}
            last = time.time()
            for name, values in pending.items():
                row[f"train_{name}_loss"] = float(np.mean(values))
            pending.clear()
            if len(encoded["dev"]):
                scores = evaluate_split(model, encoded["dev"], config, data.classes, encoder.pad_id)
                for task, values in scores.items():
                    for metric, value in values.items():
                        if value is not None:
                            row[f"dev_{task}_{metric}"] = value
            history.append(row)
            if verbose:
                shown = "  ".join(f"{k[4:]}={100 * v:.2f}" for k, v in row.items() if k.startswith("dev_"))
                losses_shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("train_"))
                print(f"meta step {step + 1}/{meta_steps}: {losses_shown}  {shown}", flush=True)
    fit_seconds = time.time() - fit_started
    _write_csv(files.metrics_csv, history)

    # === Save and report ===
    meta = {
        "algorithm": "reptile",
        "inner_steps": inner_steps,
        "meta_steps": meta_steps,
        "inner_lr": inner_lr,
        "meta_lr": meta_lr,
        "anneal": anneal,
        "meta_batch_size": meta_batch_size,
        "inner_batch_size": batch_size,
        "inner_optimizer": inner_optimizer,
        "task_sampling": task_sampling,
        "task_probabilities": {config.tasks[i].name: float(p) for i, p in zip(present, probs)},
        "shared_weights": [v.path for v in reptile.shared],
    }
    record = RunRecord.for_config(
        config,
        data.classes,
        pad_id=encoder.pad_id,
        train_sizes=sizes,
        epochs=1,
        steps_per_epoch=meta_steps * inner_steps * meta_batch_size,
        replicas=1,
        meta=meta,
        history=history,
        **inputs,
    )
    save_results(
        files,
        model,
        record,
        encoded["test"],
        config,
        data.classes,
        encoder.pad_id,
        f"{config.name}: test metrics after Reptile meta-training",
        f"{meta_steps} meta steps x {inner_steps} inner steps on {keras.backend.backend()} in {fit_seconds:.0f} s.",
        seconds={"fit": round(fit_seconds, 1), "total": round(time.time() - started, 1)},
        meta={k: meta[k] for k in ("inner_steps", "meta_steps", "inner_lr", "meta_lr")},
    )


def _check_meta_args(inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size, inner_batch_size, inner_optimizer, task_sampling, eval_every):
    from keras_mtl.data.sampling import STRATEGIES

    problems = []
    for name, value in (("inner_steps", inner_steps), ("meta_steps", meta_steps), ("meta_batch_size", meta_batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            problems.append(f"{name} must be an integer >= 1. Received: {name}={value!r}")
    if inner_batch_size is not None and (not isinstance(inner_batch_size, (int, np.integer)) or inner_batch_size < 1):
        problems.append(f"inner_batch_size must be an integer >= 1. Received: inner_batch_size={inner_batch_size!r}")
    if eval_every is not None and (not isinstance(eval_every, (int, np.integer)) or eval_every < 1):
        problems.append(f"eval_every must be an integer >= 1. Received: eval_every={eval_every!r}")
    if not isinstance(inner_lr, (int, float)) or not inner_lr > 0:
        problems.append(f"inner_lr must be > 0. Received: inner_lr={inner_lr!r}")
    if not isinstance(meta_lr, (int, float)) or not 0 < meta_lr <= 1:
        problems.append(f"meta_lr must be in (0, 1]. Received: meta_lr={meta_lr!r}")
    if inner_optimizer not in INNER_OPTIMIZERS:
        problems.append(f"unknown inner optimizer {inner_optimizer!r}; expected one of {', '.join(INNER_OPTIMIZERS)}")
    if task_sampling not in STRATEGIES:
        problems.append(f"unknown task sampling {task_sampling!r}; expected one of {', '.join(STRATEGIES)}")
    if problems:
        raise ConfigError("meta-train: " + "; ".join(problems))


def _write_csv(path, rows):

    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
