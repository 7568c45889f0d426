"""Meta-learning a shared encoder (Reptile) and few-shot adaptation to a new task.

    keras-mtl meta-train configs/meta_polarity.yaml --workdir runs/meta
    keras-mtl adapt runs/meta configs/adapt_subjectivity.yaml --shots 16 --seed 0

`meta_train` runs first-order Reptile (Nichol, Achiam & Schulman 2018) over
the tasks of a config and leaves an ordinary work dir; `adapt` fine-tunes
that network on K labelled examples per class of a new classification task
(`init="scratch"`: the same network with random weights, the baseline). The
algorithm, which weights count as shared, and the adaptation steps:
docs/meta_learning.md.
"""

import collections
import json
import shutil
import math
import time
import warnings
from pathlib import Path

import numpy as np

from keras_mtl.config import load_config
from keras_mtl.errors import ConfigError, DataError, KerasMTLError, ModelError
from keras_mtl.tasks import for_task, get_task_type

INNER_OPTIMIZERS = ("adam", "sgd")
INITS = ("pretrained", "scratch")


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------



def _vocabulary(config, data):
    from keras_mtl.data.tokenize import compute_vocabulary

    if config.model.preset:
        from keras_mtl.pretrained import preset_vocabulary

        return preset_vocabulary(config.model)
    texts = sorted({ex.text for ex in data.splits["train"]})
    return compute_vocabulary(texts, config.model.vocabulary_size, config.model.lowercase, config.task_names)


def _lengths(config):
    from keras_mtl.data.buckets import bucket_lengths

    return bucket_lengths(config.train.bucket_lengths, config.model.max_sequence_length)


def make_batch(split, rows, task, task_index, lengths, pad_id=0, with_task_ids=False):
    """(x, y, sample_weight) numpy arrays of `rows` of an EncodedSplit, for one task's head.

    Token ids are padded to the smallest of `lengths` that fits the longest row;
    labels and weights are the task type's `batch_labels` (token-level: [B, L],
    weight 1 on labelled word starts).
    """
    from keras_mtl.data.pipeline import padded_inputs

    x = padded_inputs(split, rows, lengths, pad_id, task_index if with_task_ids else None)
    length = x["token_ids"].shape[1]
    y, sw = for_task(task).batch_labels(split.labels[task.name], rows, split.weights[task.name], length)
    return x, y, sw


class _Cycle:
    """Endless seeded batches of indices: reshuffled passes over `indices`."""

    def __init__(self, indices, batch_size, rng):
        self.indices = np.asarray(indices)
        self.batch_size = int(batch_size)
        self.rng = rng
        self.order, self.pos = self.rng.permutation(self.indices), 0

    def next(self):
        out = []
        while len(out) < self.batch_size:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.indices), 0
            take = self.order[self.pos : self.pos + self.batch_size - len(out)]
            out += take.tolist()
            self.pos += len(take)
        return out


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
        model: the multi-task keras.Model of `build_model`.
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
    from keras_mtl.workdir import RunFiles, promote_staged, workdir_lock

    loaded = load_config(config, overrides)
    config = loaded.config
    work = RunFiles(Path(workdir) if workdir else Path("runs") / f"{config.name}-meta")
    with workdir_lock(work.root):
        promote_staged(work)  # a complete run killed while moving its files in place: finish that first
        if work.backup.exists():
            raise ModelError(
                f"{work.backup}: the work dir holds an unfinished `keras-mtl train`; resume it "
                f"(the same train command) or delete {work.backup}, or meta-train into another --workdir"
            )
        try:
            _meta_train_staged(
                loaded, work.staged(), inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size,
                inner_batch_size, inner_optimizer, task_sampling, anneal, eval_every, verbose,
            )
        except BaseException:
            shutil.rmtree(work.backup, ignore_errors=True)  # the previous run's files were not touched
            raise
        work.complete_marker.write_text("", encoding="utf-8")
        promote_staged(work)
    return work.root


def _meta_train_staged(
    loaded, files, inner_steps, meta_steps, inner_lr, meta_lr, meta_batch_size,
    inner_batch_size, inner_optimizer, task_sampling, anneal, eval_every, verbose,
):
    """`meta_train` into `files` (the work dir's `backup/`, moved in place when complete)."""
    import keras

    from keras_mtl.data import sampling
    from keras_mtl.data.load import load_task_data
    from keras_mtl.data.pipeline import encode_split
    from keras_mtl.data.tokenize import make_encoder, save_vocabulary
    from keras_mtl.evaluate import evaluate_split, write_test_report
    from keras_mtl.model import build_model, needs_task_ids
    from keras_mtl.workdir import RunRecord, save_config

    config = loaded.config
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.train.precision)
    started = time.time()

    # === Data ===
    data = load_task_data(loaded)
    vocabulary = _vocabulary(config, data)
    files.root.mkdir(parents=True, exist_ok=True)
    save_config(files, loaded)
    save_vocabulary(vocabulary, files.vocab)
    encoder = make_encoder(vocabulary, config.model)
    encoded = {s: encode_split(data.splits[s], encoder, config.tasks, data.classes) for s in ("train", "dev", "test")}
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
    cycles = {i: _Cycle(train.indices(config.tasks[i].name), batch_size, rng) for i in present}
    lengths = _lengths(config)
    with_ids = needs_task_ids(config.model)

    # === Model ===
    backbone = None
    if config.model.preset:
        from keras_mtl.pretrained import load_backbone

        backbone = load_backbone(config.model)
    model = build_model(config, data.classes, len(vocabulary), backbone=backbone)
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
                make_batch(train, cycles[ti].next(), task, ti, lengths, encoder.pad_id, with_ids)
                for _ in range(inner_steps)
            ]
            task_batches.append((task.name, batches))
        losses = reptile.meta_step(task_batches, _epsilon(meta_lr, step, meta_steps, anneal))
        for name, value in losses.items():
            if not math.isfinite(value):
                from keras_mtl.train import TrainingFailed

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
    model.save(files.model)
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
    RunRecord.for_config(
        config,
        data.classes,
        pad_id=encoder.pad_id,
        train_sizes=sizes,
        epochs=1,
        steps_per_epoch=meta_steps * inner_steps * meta_batch_size,
        replicas=1,
        meta=meta,
        history=history,
    ).write(files.run)
    write_test_report(
        files,
        model,
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
    import csv

    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------
# adapt
# --------------------------------------------------------------------------


def sample_shots(examples, task_name, classes, shots, seed):
    """K examples of every class, drawn without replacement with a seeded RNG.

    Returns the sample in class order (then in draw order).

    Raises:
        ConfigError: shots < 1.
        DataError: some class has fewer than `shots` examples (names the
            classes short of examples and every class's count).
    """
    _check_shots(shots)
    by_class = collections.defaultdict(list)
    for ex in examples:
        by_class[ex.labels[task_name]].append(ex)
    counts = {c: len(by_class.get(c, [])) for c in classes}
    short = [c for c in classes if counts[c] < shots]
    if short:
        listing = ", ".join(f"{c!r}: {counts[c]}" for c in classes)
        which = ", ".join(f"class {c!r} has only {counts[c]}" for c in short)
        raise DataError(
            f"task {task_name!r}: --shots {shots} needs {shots} training examples of every class, "
            f"but {which} (training examples per class: {listing})"
        )
    rng = np.random.default_rng(seed)
    sample = []
    for c in classes:
        picks = rng.choice(len(by_class[c]), size=shots, replace=False)
        sample += [by_class[c][int(i)] for i in picks]
    return sample


def _check_shots(shots):
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ConfigError(f"adapt: --shots must be an integer >= 1 (examples per class). Received: shots={shots!r}")


def _head_layer(name, task_names):
    """Whether a layer belongs to one task (its head, pooling, gate, dropout)."""
    return any(name == t or name.startswith(f"{t}_") for t in task_names)


def transfer_weights(source, target, source_tasks, target_tasks):
    """Copy the shared layers of `source` into `target`, by layer name.

    A weight of the same shape is copied; a per-task table (first axis =
    number of source tasks in `source`, = number of target tasks in `target`)
    starts from the mean over the source tasks. Task-specific layers (named
    after a task) are left as initialized.

    Returns:
        (copied layer names, layers left as initialized).
    """
    copied, fresh = [], []
    n_src, n_tgt = len(source_tasks), len(target_tasks)
    names = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        src = names.get(layer.name)
        if src is None or _head_layer(layer.name, list(source_tasks) + list(target_tasks)):
            fresh.append(layer.name)
            continue
        old, new = src.get_weights(), layer.get_weights()
        if len(old) != len(new):
            fresh.append(layer.name)
            continue
        values, ok = [], True
        for o, n in zip(old, new):
            if o.shape == n.shape:
                values.append(o)
            elif o.ndim == n.ndim and o.shape[0] == n_src and n.shape[0] == n_tgt and o.shape[1:] == n.shape[1:]:
                values.append(np.repeat(o.mean(axis=0, keepdims=True), n_tgt, axis=0).astype(o.dtype))
            else:
                ok = False
                break
        if ok:
            layer.set_weights(values)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    return copied, fresh


def adapt(
    workdir,
    new_task_config,
    shots,
    seed=0,
    steps=100,
    *,
    overrides=(),
    task=None,
    init="pretrained",
    learning_rate=None,
    batch_size=None,
    out=None,
    check_overlap=True,
    verbose=0,
):
    """Fit a new classification task from `shots` examples per class.

    Args:
        workdir: a work dir of `meta_train` or `train` (its architecture,
            vocabulary and shared weights are used).
        new_task_config: a config (path, LoadedConfig or dict) holding the
            new task. Its `tasks` (one task, or pick one with `task`),
            `splits`, `train.learning_rate`, `train.batch_size` and
            `train.weight_decay` are used; its `model` section is not (the
            network is the work dir's).
        shots: K, training examples per class (>= 1), drawn from the new
            task's train split with `seed`.
        seed: seeds the K-shot sample, the head's initialization and dropout.
        steps: fine-tuning steps (0: score the initial network).
        overrides: `KEY=VALUE` overrides of the new task's config.
        task: the task to adapt to, when the config has several.
        init: "pretrained" (shared weights from the work dir) or "scratch"
            (same network and vocabulary, random weights).
        learning_rate, batch_size: override the config's values.
        out: optional dir to save the adapted network as a work dir
            (evaluate/export/predict read it).
        check_overlap: count the new task's test sentences that occur in
            the work dir's training data (a leak check).

    Returns:
        dict with "task", "shots", "seed", "init", "steps", "train_examples",
        "class_counts", "test" ({metric: value} on the test split),
        "test_examples", "test_overlap_with_workdir_train" (or None),
        "copied_layers", "fresh_layers", "sample" (origins), "seconds".

    Raises:
        ConfigError: shots < 1, steps < 0, unknown init, a task that is not
            a classification task, or an ambiguous/unknown `task`.
        DataError: some class has fewer than `shots` training examples; no
            test examples.
        ModelError: `workdir` holds no trained model.
    """
    _check_shots(shots)
    _check_steps(steps)
    _check_learning_rate(learning_rate)
    adapter = Adapter(
        workdir,
        new_task_config,
        overrides=overrides,
        task=task,
        init=init,
        learning_rate=learning_rate,
        batch_size=batch_size,
        check_overlap=check_overlap,
    )
    result = adapter.run(shots, seed=seed, steps=steps, out=out)
    if verbose:
        print(format_adapt_result(result), flush=True)
    return result


def _check_learning_rate(learning_rate):
    if learning_rate is None:
        return
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number)) or not (
        math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ConfigError(f"adapt: --lr must be a finite number > 0. Received: learning_rate={learning_rate!r}")


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(f"adapt: --steps must be an integer >= 0. Received: steps={steps!r}")


class Adapter:
    """The new task's data and network, built and compiled once; `run` many times.

    Each `run(shots, seed, steps)` resets the network (a freshly initialized
    network for `seed`, with the work dir's shared weights copied in for
    `init="pretrained"`) and the optimizer state, draws the K-shot sample,
    fine-tunes and scores the test split, so repeated runs (several K and
    seeds) reuse the compiled train and predict functions. Arguments as for
    `adapt`.
    """

    def __init__(
        self,
        workdir,
        new_task_config,
        *,
        overrides=(),
        task=None,
        init="pretrained",
        learning_rate=None,
        batch_size=None,
        check_overlap=True,
    ):
        import keras

        from keras_mtl.data.load import load_task_data
        from keras_mtl.data.pipeline import encode_split
        from keras_mtl.data.splits import normalize_text
        from keras_mtl.data.tokenize import make_encoder
        from keras_mtl.model import loss_for
        from keras_mtl.workdir import load_run

        if init not in INITS:
            raise ConfigError(f"adapt: unknown init {init!r}; expected one of {', '.join(INITS)}")
        self.workdir, self.init = workdir, init
        try:
            self.run_files = run = load_run(workdir)
        except ModelError as e:
            raise ModelError(
                f"{e} (or `keras-mtl meta-train CONFIG --workdir {workdir}`); adapt starts from its model.keras"
            ) from None
        new = load_config(new_task_config, overrides).config
        if task is None:
            if len(new.tasks) != 1:
                raise ConfigError(
                    f"adapt: the new-task config has {len(new.tasks)} tasks ({', '.join(new.task_names)}); "
                    "pick one with --task"
                )
            target = new.tasks[0]
        else:
            if task not in new.task_names:
                raise ConfigError(
                    f"adapt: no task named {task!r} in the new-task config (tasks: {', '.join(new.task_names)})"
                )
            target = new.task(task)
        if not get_task_type(target.type).single_class:  # K examples per class
            raise ConfigError(
                f"adapt: task {target.name!r} is a {target.type} task; adapt fits classification tasks "
                "(K examples per class)"
            )
        self.target = target
        data = load_task_data(new.model_copy(update={"tasks": [target]}))
        self.classes = {target.name: data.classes[target.name]}
        self.train_examples = data.per_task[target.name]["train"]
        self.counts = collections.Counter(ex.labels[target.name] for ex in self.train_examples)
        test_examples = data.per_task[target.name]["test"]
        if not test_examples:
            raise DataError(
                f"task {target.name!r}: the test split is empty (give `test:` in its data section "
                "or a splits.test_fraction > 0)"
            )
        self.overlap = None
        if check_overlap:
            self.overlap = _overlap_with_run(run, test_examples, normalize_text)
            if self.overlap:
                warnings.warn(
                    f"adapt: {self.overlap} of the {len(test_examples)} test sentences of task {target.name!r} "
                    f"occur in the training data of {workdir}; the scores are optimistic",
                    stacklevel=3,
                )

        # === The work dir's architecture and vocabulary, the new task's head ===
        self.cfg = run.config.model_copy(update={"tasks": [target], "name": new.name})
        self.encoder = make_encoder(run.vocabulary, self.cfg.model)
        self.test = encode_split(test_examples, self.encoder, [target], self.classes)
        self.source = run.load_model() if init == "pretrained" else None
        self.model, self.copied, self.fresh = self._fresh_network(seed=0)
        self.lr = float(learning_rate or new.train.learning_rate)
        self.batch_size = batch_size or new.train.batch_size
        self.model.compile(
            optimizer=keras.optimizers.AdamW(
                learning_rate=self.lr, weight_decay=new.train.weight_decay, clipnorm=1.0
            ),
            loss={target.name: loss_for(target)},
            jit_compile=run.config.train.jit_compile,
        )
        self.model.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [np.array(keras.ops.convert_to_numpy(v)) for v in self.model.optimizer.variables]

    def _fresh_network(self, seed):
        """A network initialized for `seed`, with the shared weights copied in (pretrained)."""
        import keras

        from keras_mtl.model import build_model

        keras.utils.set_random_seed(seed)
        backbone = None
        if self.cfg.model.preset:
            from keras_mtl.pretrained import load_backbone

            backbone = load_backbone(self.cfg.model)
        model = build_model(self.cfg, self.classes, len(self.run_files.vocabulary), backbone=backbone)
        copied, fresh = [], [layer.name for layer in model.layers if layer.weights]
        if self.source is not None:
            copied, fresh = transfer_weights(self.source, model, self.run_files.config.task_names, [self.target.name])
        return model, copied, fresh

    def _reset(self, seed):
        """Network weights (and dropout seed states) for `seed`; optimizer state as new."""
        fresh, self.copied, self.fresh = self._fresh_network(seed)
        assert len(fresh.variables) == len(self.model.variables)
        for dst, src in zip(self.model.variables, fresh.variables):
            dst.assign(src)
        del fresh
        for v, value in zip(self.model.optimizer.variables, self._optimizer_start):
            v.assign(value)

    def run(self, shots, seed=0, steps=100, out=None):
        """Fine-tune on a K-shot sample drawn with `seed`; score the test split (see `adapt`)."""
        from keras_mtl.data.pipeline import encode_split
        from keras_mtl.evaluate import evaluate_split
        from keras_mtl.model import needs_task_ids

        _check_shots(shots)
        _check_steps(steps)
        started = time.time()
        target = self.target
        sample = sample_shots(self.train_examples, target.name, self.classes[target.name], shots, seed)
        few = encode_split(sample, self.encoder, [target], self.classes)
        self._reset(seed)
        rng = np.random.default_rng(seed)
        bs = min(self.batch_size, len(few))
        cycle = _Cycle(np.arange(len(few)), bs, rng)
        # Every batch padded to the longest bucket: one compiled train step for all runs.
        length = [_lengths(self.cfg)[-1]]
        with_ids = needs_task_ids(self.cfg.model)
        losses = []
        for _ in range(steps):
            x, y, sw = make_batch(few, cycle.next(), target, 0, length, self.encoder.pad_id, with_ids)
            loss = self.model.train_on_batch(x, {target.name: y}, sample_weight={target.name: sw})
            losses.append(float(np.asarray(loss[0] if isinstance(loss, (list, tuple)) else loss)))
            if not math.isfinite(losses[-1]):
                from keras_mtl.train import TrainingFailed

                raise TrainingFailed(f"adapt: the loss became NaN/inf at step {len(losses)}; lower --lr")
        scores = evaluate_split(self.model, self.test, self.cfg, self.classes, self.encoder.pad_id)[target.name]
        result = {
            "task": target.name,
            "workdir": str(self.workdir),
            "init": self.init,
            "shots": int(shots),
            "seed": int(seed),
            "steps": int(steps),
            "learning_rate": self.lr,
            "batch_size": int(bs),
            "train_examples": len(sample),
            "class_counts": {c: int(self.counts[c]) for c in self.classes[target.name]},
            "final_train_loss": losses[-1] if losses else None,
            "test": scores,
            "test_examples": len(self.test),
            "primary_metric": target.primary_metric,
            "test_overlap_with_workdir_train": self.overlap,
            "copied_layers": list(self.copied),
            "fresh_layers": list(self.fresh),
            "sample": [ex.origin for ex in sample],
            "seconds": round(time.time() - started, 1),
        }
        if out is not None:
            _save_adapted(out, self.run_files, self.cfg, self.model, self.classes, self.encoder.pad_id, result)
        return result


def _overlap_with_run(run, test_examples, normalize):
    """How many test sentences occur in the run's training split (None if unreadable)."""
    from keras_mtl.data.load import load_task_data

    try:
        data = load_task_data(run.config)
    except (KerasMTLError, OSError):
        return None
    seen = {normalize(ex.text) for ex in data.splits["train"]}
    return sum(normalize(ex.text) in seen for ex in test_examples)


def _save_adapted(out, run, cfg, model, classes, pad_id, result):
    from keras_mtl.config import LoadedConfig
    from keras_mtl.data.tokenize import save_vocabulary
    from keras_mtl.workdir import RunFiles, RunRecord, save_config, write_json

    files = RunFiles(Path(out))
    files.root.mkdir(parents=True, exist_ok=True)
    save_config(files, LoadedConfig(cfg, None, cfg.model_dump(mode="json")))
    save_vocabulary(run.vocabulary, files.vocab)
    model.save(files.model)
    RunRecord.for_config(
        cfg,
        classes,
        pad_id=pad_id,
        adapted_from=str(run.files.root),
        adapt={k: v for k, v in result.items() if k not in ("copied_layers", "fresh_layers")},
    ).write(files.run)
    write_json(files.root / "adapt.json", result)


def format_adapt_result(result):
    metrics = "  ".join(f"{m}={100 * v:.2f}" for m, v in result["test"].items() if v is not None)
    overlap = result["test_overlap_with_workdir_train"]
    return (
        f"{result['task']}: {result['shots']}-shot ({result['train_examples']} examples), "
        f"init={result['init']}, seed={result['seed']}, {result['steps']} steps -> test {metrics} "
        f"on {result['test_examples']} examples"
        + (f" (test sentences seen in the work dir's training data: {overlap})" if overlap is not None else "")
    )


# --------------------------------------------------------------------------
# CLI (wired by keras_mtl.cli)
# --------------------------------------------------------------------------


def add_meta_train_arguments(p):
    """Arguments of `keras-mtl meta-train CONFIG`."""
    p.add_argument("config", help="experiment config whose tasks are meta-trained on")
    p.add_argument("--workdir", help="output dir (default runs/<name>-meta)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--inner-steps", type=int, default=5, help="optimizer steps per task per meta step (k, default 5)")
    p.add_argument("--meta-steps", type=int, default=200, help="outer Reptile steps (default 200)")
    p.add_argument("--inner-lr", type=float, default=1e-3, help="inner optimizer learning rate (default 1e-3)")
    p.add_argument("--meta-lr", type=float, default=1.0, help="outer step size epsilon in (0, 1] (default 1.0)")
    p.add_argument("--meta-batch-size", type=int, default=1, help="tasks per meta step (default 1)")
    p.add_argument("--inner-batch-size", type=int, help="examples per inner batch (default train.batch_size)")
    p.add_argument("--inner-optimizer", choices=INNER_OPTIMIZERS, default="adam")
    p.add_argument("--task-sampling", default="uniform", help="uniform (default) or a train.sampling strategy")
    p.add_argument("--no-anneal", action="store_true", help="keep meta-lr constant (default: linear decay to 0)")
    p.add_argument("--eval-every", type=int, help="score the dev split every N meta steps (always at the end)")
    p.add_argument("--quiet", action="store_true")


def run_meta_train_cli(args):
    root = meta_train(
        args.config,
        workdir=args.workdir,
        inner_steps=args.inner_steps,
        meta_steps=args.meta_steps,
        inner_lr=args.inner_lr,
        meta_lr=args.meta_lr,
        overrides=args.set,
        meta_batch_size=args.meta_batch_size,
        inner_batch_size=args.inner_batch_size,
        inner_optimizer=args.inner_optimizer,
        task_sampling=args.task_sampling,
        anneal=not args.no_anneal,
        eval_every=args.eval_every,
        verbose=0 if args.quiet else 1,
    )
    print((Path(root) / "report.md").read_text(encoding="utf-8"))
    print(f"work dir: {root}")
    return 0


def add_adapt_arguments(p):
    """Arguments of `keras-mtl adapt WORKDIR NEW_TASK_CONFIG --shots K`."""
    p.add_argument("workdir", help="work dir of meta-train (or train) to start from")
    p.add_argument("new_task_config", help="config holding the new classification task")
    p.add_argument("--shots", type=int, required=True, help="training examples per class (K)")
    p.add_argument("--seed", type=int, default=0, help="seeds the K-shot sample and the head (default 0)")
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps (default 100)")
    p.add_argument("--init", choices=INITS, default="pretrained", help="pretrained (default) or scratch (baseline)")
    p.add_argument("--task", help="the task to adapt to when the config has several")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the config's train.learning_rate)")
    p.add_argument("--batch-size", type=int, help="fine-tuning batch size (default: train.batch_size, capped at the sample size)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of the new-task config")
    p.add_argument("--out", help="save the adapted network as a work dir here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_adapt_cli(args):
    result = adapt(
        args.workdir,
        args.new_task_config,
        args.shots,
        seed=args.seed,
        steps=args.steps,
        overrides=args.set,
        task=args.task,
        init=args.init,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        out=args.out,
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "sample"}, indent=2))
    else:
        print(format_adapt_result(result))
    return 0
