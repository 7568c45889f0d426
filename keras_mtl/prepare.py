"""prepare(config): a run's inputs, computed once.

data -> tokenization (a preset's tokenizer, or a vocabulary learned from the
training texts: the choice is made here, once, and the work dir records it)
-> encoded splits, and for training the plan: class weights, distillation
targets, epochs x steps, the sampling schedule and the bucket lengths.
`train`, `meta_train` and the benchmarks start from it.

    prepared = prepare(load_config("configs/demo.yaml"))
    dataset = prepared.train_dataset()
"""

import collections.abc
import contextlib
import math
import shutil
from dataclasses import dataclass
from typing import Optional

import numpy as np

from keras_mtl.config import LoadedConfig, load_config
from keras_mtl.data.load import TaskData, load_task_data

SPLITS = ("train", "dev", "test")
# Seeds of process i > 0's training stream (multi-host, `batch_mode: mixed`): seed + i x this
# (above any task count: the streams' seeds are seed + task index).
PROCESS_SEED_STRIDE = 1_000_003


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
class Tokenization:
    """How a run turns text into word pieces, decided once (`tokenization_for`)."""

    vocabulary: list  # the word pieces (vocab.txt)
    encoder: object  # data.tokenize.TextEncoder
    tokenizer_record: Optional[dict] = None  # a preset's tokenizer, kept whole (tokenizer.json); None: vocab.txt says all

    @classmethod
    def of_vocabulary(cls, vocabulary, model_cfg):
        """A learned WordPiece vocabulary's (`model.lowercase`, `model.max_sequence_length`)."""
        from keras_mtl.data.tokenize import encoder_of  # lazy: TensorFlow

        return cls(list(vocabulary), encoder_of(vocabulary, None, model_cfg))


class _TrainTexts:
    """The texts of training examples (both texts of a pair), a new pass each time it is iterated."""

    def __init__(self, examples):
        self.examples = examples

    def __iter__(self):
        return self.of(self.examples)

    @staticmethod
    def of(examples):
        return (text for ex in examples for text in (ex.text, ex.text_pair) if text is not None)


def tokenization_for(config, data):
    """The preset's own tokenizer (`model.preset`), or a WordPiece vocabulary
    learned from the training texts (both texts of a pair): from at most
    `cache.vocabulary_sample` distinct texts (`wordpiece.bounded_sample`,
    a deterministic sample; all of them when there are fewer)."""
    from keras_mtl.data.tokenize import compute_vocabulary, encoder_from_tokenizer, tokenizer_record  # lazy: TF

    if config.model.preset:
        from keras_mtl.pretrained import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        encoder = encoder_from_tokenizer(
            tokenizer, config.model.max_sequence_length,
            what=f"model.preset: the tokenizer of {config.model.preset!r}", model_cfg=config.model,
        )
        return Tokenization(list(tokenizer.get_vocabulary()), encoder, tokenizer_record(tokenizer))
    from keras_mtl.data.wordpiece import bounded_sample

    # At most `cache.vocabulary_sample` distinct texts (all of them, sorted, below it: every shipped config;
    # over it, their ranks, the texts read again to count their words).
    train = data.splits["train"]
    texts = bounded_sample(
        _TrainTexts(train) if not isinstance(train, collections.abc.Iterator) else _TrainTexts.of(train),
        config.cache.vocabulary_sample,
    )
    vocabulary = compute_vocabulary(texts, config.model.vocabulary_size, config.model.lowercase, config.task_names)
    return Tokenization.of_vocabulary(vocabulary, config.model)


@dataclass(frozen=True)
class PreparedRun:
    """The loaded config, its data, vocabulary, encoder and encoded splits."""

    loaded: LoadedConfig
    data: TaskData
    vocabulary: list
    encoder: object  # data.tokenize.TextEncoder
    encoded: dict  # split -> data.pipeline.EncodedSplit
    sees_task: bool  # config.model.sees_task: one pass per task
    plan: Optional[TrainPlan] = None  # None unless prepare(plan=True)
    tokenizer_record: Optional[dict] = None  # a preset's tokenizer (Tokenization), for the work dir
    entry: Optional[object] = None  # the cache entry read (data.cache.CacheEntry); None: read in memory

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
        train_cfg, seed = config.train.model_copy(update={"epochs": plan.epochs}), config.seed
        split = self.encoded["train"]
        processes, index = getattr(split, "num_processes", 1), getattr(split, "process_id", 0)
        if processes > 1:  # this process's part of every global batch, from its share of the rows
            train_cfg = train_cfg.model_copy(update={"batch_size": train_cfg.batch_size // processes})
            if train_cfg.batch_mode != "per_task":  # per_task: every process draws the same task a step
                seed += index * PROCESS_SEED_STRIDE  # independent draws: the global mix is B draws, not B/P
        dataset, _, _ = train_dataset(
            split,
            config.tasks,
            train_cfg,
            config.model.max_sequence_length,
            self.sees_task,
            pad_id=self.pad_id,
            seed=seed,
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


def data_summary(config, overrides=(), tokenize=True):
    """`keras-mtl data CONFIG`: per task and split, counts, labels, lengths,
    truncation, texts shared between tasks and leaks (`data.summary`).

    Args:
        config: a path, a `LoadedConfig` or a dict (`load_config`).
        overrides: `KEY=VALUE` strings applied to the config.
        tokenize: also measure word pieces (learns the vocabulary, or loads
            the preset's tokenizer).
    """
    from keras_mtl.data.summary import summarize_data  # lazy: TensorFlow

    loaded = load_config(config, overrides)
    data = load_task_data(loaded)  # a LoadedConfig: errors name the config line
    encoder = tokenization_for(loaded.config, data).encoder if tokenize else None
    return summarize_data(loaded.config, data, encoder)


def cache_of(loaded, directory=None):
    """The prepared-data cache of a loaded config (`cache.dir`; `directory` beats it)."""
    from keras_mtl.data import cache as cache_lib

    if directory is not None:
        return cache_lib.Cache(cache_lib.cache_dir(directory))
    base = loaded.path.parent if getattr(loaded, "path", None) else None
    return cache_lib.Cache(cache_lib.cache_dir(loaded.config.cache.dir, base=base))


def cache_key(config, tokenization=None):
    """The cache key of a config's prepared data (`cache.data_key`); a given
    tokenization (a run to fine-tune from) is keyed by its vocabulary."""
    from keras_mtl.data import cache as cache_lib

    if tokenization is None:
        return cache_lib.data_key(config)
    return cache_lib.data_key(config, vocabulary=tokenization.vocabulary)


def encode_all(config, data, encoder):
    """split -> `EncodedSplit`: training texts cut at `model.max_windows` windows; dev and test read whole."""
    from keras_mtl.data.pipeline import encode_split  # lazy: TensorFlow

    return {
        s: encode_split(data.splits[s], encoder, config.tasks, data.classes,
                        max_windows=config.model.max_windows if s == "train" else None)
        for s in SPLITS
    }


def entry_data_for(loaded, tokenization=None, streamed=True, scratch=None, stack=None):
    """The `EntryData` of a config's cache entry: its data read, carved, merged, tokenized and encoded.

    `streamed` (the default): every split a block at a time, written as it is encoded, holding hashes (not
    examples) of the texts (`data.streamed`; dev's and test's examples go through files in `scratch`, see
    `StreamedData`); the rows are those of the in-memory path (`streamed=False`: `load_task_data`, every
    split encoded whole), in the same order. The blocks are encoded by a worker thread or, for a large
    training split (`cache.encode_processes`), by worker processes started right after the first pass
    (`data.encode_process`), closed when the last block is encoded, or by `stack` (a
    `contextlib.ExitStack` the caller closes once the entry is written or failed).
    """
    from keras_mtl.data.cached import entry_data  # lazy: TensorFlow

    config = loaded.config
    if not streamed:
        data = load_task_data(loaded)  # a LoadedConfig: errors name the config line
        if tokenization is None:
            tokenization = tokenization_for(config, data)
        encoded = encode_all(config, data, tokenization.encoder)
        return entry_data(config, data, tokenization.vocabulary, tokenization.tokenizer_record, encoded)
    from keras_mtl.data.encode_process import EncodeProcesses
    from keras_mtl.data.streamed import HELD, StreamedData, encoded_held, encoded_train

    scanned = StreamedData(loaded, scratch)  # pass 1: errors name the config line, or the file and line
    data = scanned.task_data()
    # Opt-in (default 0, the thread): a process measured slower on 2 cores (docs/data_at_scale.md).
    count = config.cache.encode_processes
    processes = EncodeProcesses(count) if count else None  # their imports overlap learning the vocabulary
    if processes is not None and stack is not None:
        stack.callback(processes.close)
    try:
        if tokenization is None:
            tokenization = tokenization_for(config, data)  # a pass over the training texts (a learned vocabulary)
        encoder = tokenization.encoder
        if processes is not None:
            processes.setup(tokenization.vocabulary, tokenization.tokenizer_record, config.model, config.tasks,
                            scanned.classes)
        columns, train = encoded_train(scanned, encoder, config.tasks, config.model.max_windows,
                                       processes=processes)
    except BaseException:
        if processes is not None:
            processes.close()
        raise
    blocks = {"train": train, **{s: encoded_held(scanned, s, encoder, config.tasks, processes=processes)
                                 for s in HELD}}
    if processes is not None:
        blocks[HELD[-1]] = _closing(blocks[HELD[-1]], processes.close)
    return entry_data(config, data, tokenization.vocabulary, tokenization.tokenizer_record, None, blocks,
                      scanned.example_files, columns=columns)


def _closing(items, close):
    """`items`, then `close()` (after the last one, or when the consumer stops or fails)."""
    try:
        yield from items
    finally:
        close()


def write_entry(loaded, cache, tokenization=None):
    """(entry, built): the cache entry of a config, written first unless there (`keras-mtl prepare`, the
    first run of a config). dev's and test's examples pass through a temporary of the key
    (`Cache.temporary`), removed once the entry is written (or the writing failed); encoding processes
    are closed then too."""
    config = loaded.config
    key = cache_key(config, tokenization)
    scratch = []

    with contextlib.ExitStack() as stack:
        def build():
            scratch.append(cache.temporary(key))
            return entry_data_for(loaded, tokenization, scratch=scratch[-1], stack=stack)

        try:
            return cache.get_or_write(key, build, name=config.name)
        finally:
            for path in scratch:
                shutil.rmtree(path, ignore_errors=True)


def tokenization_of_entry(entry, model_cfg):
    """How the entry's rows were tokenized (its `vocab.txt`, or a preset's `tokenizer.json`)."""
    from keras_mtl.data.cached import tokenizer_record_of, vocabulary_of
    from keras_mtl.data.tokenize import encoder_of  # lazy: TensorFlow

    record = tokenizer_record_of(entry)
    vocabulary = vocabulary_of(entry)
    if record is None:
        return Tokenization.of_vocabulary(vocabulary, model_cfg)
    encoder = encoder_of(vocabulary, record, model_cfg, what=str(entry.file("tokenizer.json")),
                         name=f"the tokenizer of cache entry {entry.key}")
    return Tokenization(vocabulary, encoder, record)


def prepare(config, overrides=(), *, plan=True, max_steps=None, data=None, tokenization=None, teachers=None,
            cache=None, num_processes=1, process_id=0, train_rows=False):
    """Load, tokenize and encode the data of `config`; with `plan`, the training plan.

    Args:
        config: a path, a `LoadedConfig` or a dict (`load_config`).
        overrides: `KEY=VALUE` strings applied to the config.
        plan: also apply the class weights to the training split and compute
            epochs x steps, the sampling schedule and the bucket lengths.
        max_steps: optional cap on the total training steps (`plan_steps`).
        data: the config's `TaskData` when already loaded.
        tokenization: how to read text (`Tokenization`; default
            `tokenization_for`: the preset's tokenizer, or a vocabulary
            learned from the training texts). A fine-tuned run reads text
            as the run it starts from did.
        teachers: the distilled tasks' teacher targets, computed by the
            caller (`keras_mtl.distill.teacher_targets`): with `plan`, they
            are put on the training split (`data.teachers`).
        cache: a `data.cache.Cache` (`cache_of(loaded)`): open the config's
            entry, writing it first if it is missing (`write_entry`), and
            read from it: the training split is streamed from its shards
            (`data.cached.CachedTrainSplit`), dev and test are read back,
            the label maps and reports come from its meta, and the data
            files are not read at all when the entry was there. None: read
            and encode in memory (with `data` or `teachers`, which need the
            examples).
        num_processes, process_id: with `cache`, the share of the training
            rows this process streams (multi-host).
        train_rows: with `cache`, read the training rows into memory (an
            `EncodedSplit` without examples) for random access (meta-train's
            batches) instead of streaming them.

    Returns:
        PreparedRun.
    """
    loaded = load_config(config, overrides)
    if cache is not None:
        if data is not None or teachers:
            raise ValueError("prepare: `cache` reads the entry's rows; `data` and `teachers` need the in-memory path")
        return _prepare_cached(loaded, cache, plan, max_steps, tokenization, num_processes, process_id, train_rows)
    config = loaded.config
    if data is None:
        data = load_task_data(loaded)  # a LoadedConfig: errors name the config line
    if tokenization is None:
        tokenization = tokenization_for(config, data)
    encoded = encode_all(config, data, tokenization.encoder)
    train_plan = None
    if plan:
        if teachers:
            from keras_mtl.data.teachers import attach_teacher_targets  # lazy: TensorFlow

            attach_teacher_targets(encoded["train"], config, data.classes, teachers)
        train_plan = _plan(config, encoded["train"], data.classes, max_steps)
    return _prepared(loaded, data, tokenization, encoded, train_plan)


def _prepare_cached(loaded, cache, plan, max_steps, tokenization, num_processes, process_id, train_rows):
    """`prepare` from the config's cache entry (written first when missing)."""
    from keras_mtl.data import cached

    config = loaded.config
    entry, built = write_entry(loaded, cache, tokenization)
    data = cached.task_data(entry)
    if not built:  # reading the data checked this
        check_held_out_labels(config, data)
    if tokenization is None:
        tokenization = tokenization_of_entry(entry, config.model)
    if train_rows:
        train = cached.encoded_split(entry, "train", None)
    else:
        train = cached.CachedTrainSplit(entry, config.tasks, num_processes, process_id)
    encoded = {"train": train, **{s: cached.encoded_split(entry, s, data.splits[s], compact=True)
                                  for s in cached.HELD_SPLITS}}
    train_plan = None
    if plan:
        train_plan = _plan(config, train, data.classes, max_steps)
        if not train_rows:  # applied to the rows as they are streamed
            train.class_factors = {k: np.asarray(v, np.float32) for k, v in train_plan.class_weights.items()}
    return _prepared(loaded, data, tokenization, encoded, train_plan, entry)


def _prepared(loaded, data, tokenization, encoded, train_plan, entry=None):
    return PreparedRun(loaded=loaded, data=data, vocabulary=tokenization.vocabulary, encoder=tokenization.encoder,
                       encoded=encoded, sees_task=loaded.config.model.sees_task, plan=train_plan,
                       tokenizer_record=tokenization.tokenizer_record, entry=entry)


def check_held_out_labels(config, data):
    """What reading the data says of dev/test labels never seen in train (`tasks[i].unseen_labels`:
    a warning, or a `DataError` naming the first one's file and line), for data read from the cache.

    The entry's meta records what the data's reading found (`data.unseen`: task -> split -> {label:
    count}, against the same label maps); a task recorded with none has none, so dev and test are read
    only when some task has unseen labels (or no record): then one pass over dev's and test's examples
    each (an `ExampleFile`: none held), and `load.unseen_labels` is given, per task, the examples with an
    unseen label only (all it counts), so that its warning or error names the first one's file and line."""
    from keras_mtl.data.example import Example
    from keras_mtl.data.load import unseen_labels
    from keras_mtl.tasks import get_task_type

    known = {t.name: set(data.classes[t.name]) for t in config.tasks}
    values = {t.name: get_task_type(t.type).label_values for t in config.tasks}
    found = {t.name: {"dev": [], "test": []} for t in config.tasks}
    recorded = data.unseen or {}
    to_read = () if all(recorded.get(t.name) == {} for t in config.tasks) else ("dev", "test")
    for split in to_read:
        for ex in data.splits[split]:
            for name, label in ex.labels.items():
                if name in known and any(v not in known[name] for v in values[name](label)):
                    found[name][split].append(Example("", {name: label}, ex.origin))
    for task in config.tasks:
        unseen_labels(task, found[task.name], data.classes[task.name])


def _plan(config, train, classes, max_steps):
    """The `TrainPlan` of an encoded (or cached) training split; applies its class weights."""
    from keras_mtl.data import sampling
    from keras_mtl.data.buckets import training_bucket_lengths
    from keras_mtl.data.pipeline import apply_class_weights  # lazy: TensorFlow

    class_weights = apply_class_weights(train, config.tasks, classes)
    epochs, steps = plan_steps(config.train, len(train), max_steps)
    planned = config.train.model_copy(update={"epochs": epochs})
    schedule = sampling.training_schedule(train, config.tasks, planned)
    sizes = [len(train.indices(t.name)) for t in config.tasks]
    return TrainPlan(
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
