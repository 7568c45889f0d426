"""prepare(config): a run's inputs, computed once.

data -> vocabulary -> encoder -> encoded splits, and for training the plan:
class weights, epochs x steps, the sampling schedule and the bucket lengths.
`train`, `meta_train` and the benchmarks start from it.

    prepared = prepare(load_config("configs/demo.yaml"))
    dataset = prepared.train_dataset()
"""

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from keras_mtl.config import LoadedConfig, load_config
from keras_mtl.data.load import TaskData, load_task_data

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TrainPlan:
    """What the training stream draws (computed once; run.json records it)."""

    epochs: int
    steps_per_epoch: int
    sizes: list  # training examples per task, in config order
    present: list  # names of the tasks with training examples (the schedule's columns)
    schedule: np.ndarray  # float32 [epochs, len(present)]: sampling probabilities per epoch
    bucket_lengths: list  # the padded lengths of the training batches
    class_weights: dict  # task -> per-class factors (`class_weights: balanced`), applied to encoded["train"]


@dataclass(frozen=True)
class PreparedRun:
    """The loaded config, its data, vocabulary, encoder and encoded splits."""

    loaded: LoadedConfig
    data: TaskData
    vocabulary: list
    encoder: object  # data.tokenize.make_encoder's encoder
    encoded: dict  # split -> data.pipeline.EncodedSplit
    sees_task: bool  # model.sees_task(config.model): one pass per task
    plan: Optional[TrainPlan] = None  # None unless prepare(plan=True)

    @property
    def config(self):
        return self.loaded.config

    @property
    def classes(self):
        return self.data.classes

    @property
    def pad_id(self):
        return self.encoder.pad_id

    def train_dataset(self):
        """The infinite training dataset of the plan (`data.pipeline.train_dataset`)."""
        from keras_mtl.data.pipeline import train_dataset

        config, plan = self.config, self.plan
        dataset, _, _ = train_dataset(
            self.encoded["train"],
            config.tasks,
            config.train.model_copy(update={"epochs": plan.epochs}),
            config.model.max_sequence_length,
            self.sees_task,
            pad_id=self.pad_id,
            seed=config.seed,
            steps_per_epoch=plan.steps_per_epoch,
            schedule=plan.schedule,
            bucket_lengths=plan.bucket_lengths,
        )
        return dataset


def check_max_steps(max_steps):
    """`max_steps` is None (the configured schedule) or an integer >= 1."""
    from keras_mtl.errors import ConfigError

    if max_steps is None:
        return
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ConfigError(f"max_steps (--max-steps) must be an integer >= 1. Received: max_steps={max_steps!r}")


def plan_steps(train_cfg, num_train, max_steps=None):
    """(epochs, steps_per_epoch): one epoch = one pass over the unique training examples."""
    steps = train_cfg.steps_per_epoch or max(1, math.ceil(num_train / train_cfg.batch_size))
    epochs = train_cfg.epochs
    if max_steps is not None:
        steps = min(steps, max_steps)
        epochs = max(1, min(epochs, max_steps // steps))
    return epochs, steps


def vocabulary_for(config, data):
    """The preset's vocabulary, or one computed from the training texts (both texts of a pair)."""
    if config.model.preset:
        from keras_mtl.pretrained import preset_vocabulary

        return preset_vocabulary(config.model)
    from keras_mtl.data.tokenize import compute_vocabulary

    texts = sorted({text for ex in data.splits["train"] for text in (ex.text, ex.text_pair) if text is not None})
    return compute_vocabulary(texts, config.model.vocabulary_size, config.model.lowercase, config.task_names)


def prepare(config, overrides=(), *, plan=True, max_steps=None, data=None, vocabulary=None, cache_dir=None):
    """Load, tokenize and encode the data of `config`; with `plan`, the training plan.

    Args:
        config: a path, a `LoadedConfig` or a dict (`load_config`).
        overrides: `KEY=VALUE` strings applied to the config.
        plan: also apply the class weights to the training split and compute
            epochs x steps, the sampling schedule and the bucket lengths.
        max_steps: optional cap on the total training steps (`plan_steps`).
        data: the config's `TaskData` when already loaded.
        vocabulary: a WordPiece vocabulary to encode with (default: learned
            from the training texts, or the preset's).
        cache_dir: where the teachers' predictions of distilled tasks
            (`tasks[i].teacher`, keras_mtl.distill) are cached; with `plan`
            they are put on the training split.

    Returns:
        PreparedRun.
    """
    from keras_mtl.data import sampling
    from keras_mtl.data.buckets import training_bucket_lengths
    from keras_mtl.data.pipeline import apply_class_weights, encode_split
    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl.model import sees_task

    loaded = load_config(config, overrides)
    config = loaded.config
    if data is None:
        data = load_task_data(loaded)  # a LoadedConfig: errors name the config line
    if vocabulary is None:
        vocabulary = vocabulary_for(config, data)
    encoder = make_encoder(vocabulary, config.model)
    encoded = {s: encode_split(data.splits[s], encoder, config.tasks, data.classes) for s in SPLITS}
    train_plan = None
    if plan:
        train = encoded["train"]
        class_weights = apply_class_weights(train, config.tasks, data.classes)
        if any(t.teacher for t in config.tasks):
            from keras_mtl.distill import attach_teachers

            attach_teachers(train, config, data.classes, cache_dir)
        epochs, steps = plan_steps(config.train, len(train), max_steps)
        planned = config.train.model_copy(update={"epochs": epochs})
        schedule = sampling.training_schedule(train, config.tasks, planned)
        sizes = [len(train.indices(t.name)) for t in config.tasks]
        train_plan = TrainPlan(
            epochs=epochs,
            steps_per_epoch=steps,
            sizes=sizes,
            present=[t.name for t, n in zip(config.tasks, sizes) if n > 0],
            schedule=schedule,
            bucket_lengths=training_bucket_lengths(
                train, config.tasks, planned, config.model.max_sequence_length, schedule
            ),
            class_weights=class_weights,
        )
    return PreparedRun(
        loaded=loaded,
        data=data,
        vocabulary=vocabulary,
        encoder=encoder,
        encoded=encoded,
        sees_task=sees_task(config.model),
        plan=train_plan,
    )
