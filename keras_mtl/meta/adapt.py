"""Few-shot adaptation of a trained (or meta-trained) network to a new task.

    keras-mtl adapt runs/meta configs/adapt_subjectivity.yaml --shots 16 --seed 0

`adapt` fine-tunes a work dir's network on K labelled examples per class of
a new classification task (`init="scratch"`: the same network with random
weights, the baseline). The adaptation steps: docs/meta_learning.md.
"""

import collections
import math
import time
import warnings
from pathlib import Path

import numpy as np

from keras_mtl.config import load_config
from keras_mtl.errors import ConfigError, DataError, KerasMTLError, ModelError
from keras_mtl.meta.batches import Cycle, make_batch, padded_lengths
from keras_mtl.tasks import get_task_type

INITS = ("pretrained", "scratch")


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



def adapt(
    workdir, new_task_config, shots, seed=0, steps=100, *, overrides=(), task=None, init="pretrained",
    learning_rate=None, batch_size=None, out=None, check_overlap=True, verbose=0,
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
        ModelError: `workdir` holds no trained model; init="pretrained"
            and no shared layer of its network could be copied (the result
            would not start from the work dir).
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
        self, workdir, new_task_config, *, overrides=(), task=None, init="pretrained", learning_rate=None,
        batch_size=None, check_overlap=True,
    ):
        import keras

        from keras_mtl.data.load import load_task_data
        from keras_mtl.data.pipeline import encode_split
        from keras_mtl.data.splits import normalize_text
        from keras_mtl.model import loss_for
        from keras_mtl.run import load_run

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
        self.encoder = run.encoder()
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

        from keras_mtl.model import build_network

        keras.utils.set_random_seed(seed)
        model = build_network(self.cfg, self.classes, self.run_files.vocabulary)
        copied, fresh = [], [layer.name for layer in model.layers if layer.weights]
        if self.source is not None:
            from keras_mtl.transfer import transfer_weights  # lazy: keras-hub and TensorFlow (start-up of `adapt --help`)

            copied, fresh = transfer_weights(self.source, model, self.run_files.config.task_names, [self.target.name])
            if not copied:  # the run's encoder silently dropped: the result would not be an adaptation of it
                raise ModelError(
                    f"adapt: no shared layer of the network in {self.workdir} could be copied into the new "
                    f"network (left as initialized: {', '.join(fresh) or 'none'}); refusing to report an "
                    "adaptation that does not start from the run (use --init scratch for a random start)"
                )
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
        from keras_mtl.evaluation import evaluate_split

        _check_shots(shots)
        _check_steps(steps)
        started = time.time()
        target = self.target
        sample = sample_shots(self.train_examples, target.name, self.classes[target.name], shots, seed)
        few = encode_split(sample, self.encoder, [target], self.classes)
        self._reset(seed)
        rng = np.random.default_rng(seed)
        bs = min(self.batch_size, len(few))
        cycle = Cycle(np.arange(len(few)), bs, rng)
        # Every batch padded to the longest bucket: one compiled train step for all runs.
        length = [padded_lengths(self.cfg)[-1]]
        losses = []
        for _ in range(steps):
            x, y, sw = make_batch(few, cycle.next(), target, 0, length, self.encoder.pad_id, self.cfg.model.sees_task)
            loss = self.model.train_on_batch(x, {target.name: y}, sample_weight={target.name: sw})
            losses.append(float(np.asarray(loss[0] if isinstance(loss, (list, tuple)) else loss)))
            if not math.isfinite(losses[-1]):
                from keras_mtl.training import TrainingFailed

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
    """The adapted network as a work dir (`--out`), written through the run skeleton;
    it reads text as the run it started from (its vocabulary, its preset's tokenizer)."""
    from keras_mtl.config import LoadedConfig
    from keras_mtl.disk import write_json, write_or_no_space
    from keras_mtl.record import RunRecord
    from keras_mtl.runner import save_inputs, staged_run
    from keras_mtl.workdir import RunFiles

    with staged_run(RunFiles(Path(out))) as stage:
        loaded = LoadedConfig(cfg, None, cfg.model_dump(mode="json"))
        inputs = save_inputs(stage, loaded, run.vocabulary, run.tokenizer_record())
        write_or_no_space(stage.model, lambda: model.save(stage.model), "the adapted model")
        RunRecord.for_config(
            cfg,
            classes,
            pad_id=pad_id,
            adapted_from=str(run.files.root),
            adapt={k: v for k, v in result.items() if k not in ("copied_layers", "fresh_layers")},
            **inputs,
        ).write(stage.run)
        write_json(stage.root / "adapt.json", result)


def format_adapt_result(result):
    metrics = "  ".join(f"{m}={100 * v:.2f}" for m, v in result["test"].items() if v is not None)
    overlap = result["test_overlap_with_workdir_train"]
    return (
        f"{result['task']}: {result['shots']}-shot ({result['train_examples']} examples), "
        f"init={result['init']}, seed={result['seed']}, {result['steps']} steps -> test {metrics} "
        f"on {result['test_examples']} examples"
        + (f" (test sentences seen in the work dir's training data: {overlap})" if overlap is not None else "")
    )
