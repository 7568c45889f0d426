"""YAML -> typed, validated experiment config.

One root `ExperimentConfig` (pydantic models, `extra="forbid"`) holds the
tasks, the model and the training settings. `load_config(path, overrides)`
reads the YAML safely (no Python object tags; a key repeated in a mapping is
an error), applies `--set KEY=VALUE` overrides, validates everything,
including each task's reader options, and raises one `ConfigError` that lists
every problem, one line each, as

    configs/demo.yaml:12: tasks[1].type: unknown task type 'clasification'; expected one of ...
    --set train.epochs=0: train.epochs: Input should be greater than or equal to 1

(a problem in a value that a `--set` wrote is blamed on that `--set`). Types
are strict in every section (`epochs: true` and `batch_size: "32"` are errors;
an integer is a valid float), floats must be finite, and a task may not take
a name the model gives one of its inputs or layers (`MODEL_INPUTS`, ...).

Relative data paths are resolved against the config file's directory.
"""

import copy
import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Literal, Optional, Union

import pydantic
import yaml

from keras_mtl.errors import ConfigError
from keras_mtl.tasks import get_task_type, task_type_names
from keras_mtl.weighting import names as loss_weighting_names

SAMPLING = ("proportional", "uniform", "temperature", "annealed")
CONDITIONING = ("none", "embedding", "token")
POOLING = ("cls", "mean", "attention")
LOSS_WEIGHTING = loss_weighting_names()  # one module each in keras_mtl/weighting/
DISTRIBUTION = ("auto", "none", "mirrored", "data_parallel")
PRECISION = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# The names `keras_mtl.model.build_network` gives the network's inputs and
# layers, in one place. A task's name names its head layer (and the serving
# output key), so it must be none of them; tests/test_config.py checks this
# table against the layers of built networks. (The layers inside the shared
# encoder, `embedding` ... `encoder_<i>`, were top-level layers before it was
# one layer: they stay reserved, so a config valid before stays valid and one
# refused before stays refused.)
MODEL_INPUTS = ("token_ids", "padding_mask", "task_ids")
MODEL_LAYERS = {
    "shared_encoder": "the shared encoder",
    "embedding": "the token and position embedding",
    "embedding_norm": "the embedding layer norm",
    "segment_ids": "the segment ids of sentence pairs",
    "segment_embedding": "the segment embedding",
    "embedding_dropout": "the embedding dropout",
    "task_embedding": "the task embedding",
    "task_token": "the task token",
    "experts": "the mixture of experts",
    "task_relation": "the task relation layer",
}
SIGNATURES = ("serving_default", "serve_tokens")  # the export's fixed signatures; each task gets its own
NUMBERED_LAYERS = {"encoder": "transformer layer", "adapter": "task adapter"}  # encoder_0, encoder_1, ...
TASK_LAYERS = {  # per task `t`, the model's: t_pool, t_attention_pool (the head `t` is its type's)
    "pool": "pooling",
    "attention_pool": "attention pooling",
}


def task_layers():
    """{suffix: what} of every per-task layer `<task>_<suffix>` a model may have:
    the model's (`TASK_LAYERS`) and those the heads of the registered task types
    add beside their layer `<task>` (`TaskType.layer_suffixes`)."""
    layers = dict(TASK_LAYERS)
    for type_name in task_type_names():
        layers.update(get_task_type(type_name).layer_suffixes)
    return layers


def model_name_clash(name, task_names=()):
    """Why `name` cannot name a task: the model input or layer it would clash with, else None.

    Args:
        name: a task name.
        task_names: the names of all tasks of the config (per-task layers
            such as `<task>_pool` are derived from them).
    """
    if name in MODEL_INPUTS:
        return "it is the name of a model input"
    if name in SIGNATURES:
        return "it is the name of a serving signature"
    if name in MODEL_LAYERS:
        return f"it is the name of a model layer ({MODEL_LAYERS[name]})"
    for prefix, what in NUMBERED_LAYERS.items():
        number = name[len(prefix) + 1 :] if name.startswith(prefix + "_") else ""
        if number.isdigit() and str(int(number)) == number:
            return f"it is the name of a model layer ({what} {number})"
    suffixes = task_layers()
    for other in task_names:
        for suffix, what in suffixes.items():
            if other != name and name == f"{other}_{suffix}":
                return f"it is the name of a layer of task {other!r} (its {what})"
    return None


# Every config section: unknown keys are errors, types are strict (`epochs:
# true` and `batch_size: "32"` are errors, not 1 and 32; an int is still a
# valid float) and floats must be finite (`.inf` and `.nan` are errors).
_SECTION = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=False)


class _Strict(pydantic.BaseModel):
    model_config = _SECTION


def _one_of(kind, value, allowed):
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _types_where(test):
    """The registered task types (names, joined with ", ") whose class passes `test`."""
    return ", ".join(n for n in task_type_names() if test(get_task_type(n)))


def _choice(field, kind, allowed):
    """A field validator: `field` must be one of `allowed` (the error names it a `kind`)."""

    def check(cls, v):
        return _one_of(kind, v, allowed)

    return pydantic.field_validator(field)(classmethod(check))


class DataConfig(pydantic.BaseModel):
    """A task's data: a reader `format`, its sources and reader options.

    Any key besides the ones below is a reader option, validated against the
    reader's own options model when the config is loaded.
    """

    model_config = pydantic.ConfigDict(**{**_SECTION, "extra": "allow"})

    format: str = pydantic.Field(
        description="the reader (conll, conllu, delimited, jsonl, per_label, tfds, demo); other keys are its options"
    )
    train: object = pydantic.Field(
        description="the train source: a path relative to the config file, or what the reader takes"
    )
    dev: Optional[object] = pydantic.Field(
        None, description="the dev source; absent: carved from train (splits.dev_fraction)"
    )
    test: Optional[object] = pydantic.Field(
        None, description="the test source; absent: carved from train (splits.test_fraction)"
    )

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


class TaskConfig(_Strict):
    name: str = pydantic.Field(
        description="the task's key in outputs, losses, metrics and serving (lowercase letters, digits, _)"
    )
    type: str = pydantic.Field(description="the task type (one of TASK_TYPES): its head, loss, metrics and outputs")
    data: DataConfig = pydantic.Field(description="where the task's examples come from: a reader and its options")
    metrics: list[str] = pydantic.Field(
        [], description="metrics scored on dev/test; the first is the primary one (none: the type's default)"
    )
    loss_weight: float = pydantic.Field(
        1.0, ge=0.0, description="lambda_t in the total loss sum_t lambda_t L_t (static weighting; 0 drops the task)"
    )
    unseen_labels: Literal["warn", "error"] = pydantic.Field(
        "warn", description="a dev/test label never seen in train: warn (scored as an error) or error"
    )
    class_weights: Literal["none", "balanced"] = pydantic.Field(
        "none", description="balanced: an example's loss times n / (C n_c) for its class c (classification)"
    )
    positive_class: Optional[str] = pydantic.Field(
        None, description="the class the `f1` metric scores (a binary classification task's positive class; '1')"
    )
    teacher: Optional[str] = pydantic.Field(
        None, description="a trained run (work dir) or export of this task to distill from, annealed to gold (BAM!)"
    )
    role: Literal["target", "auxiliary"] = pydantic.Field(
        "target",
        description="target: a task you want (compared, in delta-m, keep: best); auxiliary: only helps the targets",
    )

    @pydantic.model_validator(mode="after")
    def _class_weights(self):
        if self.class_weights != "none" and not get_task_type(self.type).single_class:
            raise ValueError(
                f"class_weights: {self.class_weights!r} applies to {_types_where(lambda t: t.single_class)} tasks, "
                f"not to a {self.type} task"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _type_options(self):
        # The settings only some types take (`TaskType.options`, e.g. positive_class):
        # set on a task of another type (to other than the default), they are errors.
        kind = get_task_type(self.type)
        fields = type(self).model_fields
        for option in sorted({o for n in task_type_names() for o in get_task_type(n).options} & set(fields)):
            if option not in kind.options and getattr(self, option) != fields[option].default:
                takers = _types_where(lambda t: option in t.options)
                raise ValueError(f"{option} applies to {takers} tasks, not to a {self.type} task")
        return self

    @pydantic.field_validator("name")
    @classmethod
    def _name(cls, v):
        if not _NAME.match(v):
            raise ValueError(
                f"task name {v!r} must be lowercase letters, digits and '_', starting "
                "with a letter (it names outputs, metrics and serving keys)"
            )
        return v

    @pydantic.field_validator("type")
    @classmethod
    def _type(cls, v):
        return _one_of("task type", v, task_type_names())

    @pydantic.field_validator("metrics")
    @classmethod
    def _metrics(cls, v, info):
        task_type = info.data.get("type")
        if task_type is None:  # the type itself was invalid: reported there
            return v
        allowed = get_task_type(task_type).metrics
        for m in v:
            if m not in allowed:
                raise ValueError(
                    f"unknown metric {m!r} for a {task_type} task; expected one of {', '.join(allowed)}"
                )
        return v

    @pydantic.model_validator(mode="after")
    def _default_metric(self):
        if not self.metrics:
            self.metrics = [get_task_type(self.type).default_metric]
        return self

    @property
    def primary_metric(self):
        return self.metrics[0]


class ModelConfig(_Strict):
    preset: Optional[str] = pydantic.Field(
        None, description="a keras-hub backbone (preset name, directory or package:<pkg>/<dir>) as the encoder"
    )
    vocabulary_size: int = pydantic.Field(
        4000, ge=16, description="size of the WordPiece vocabulary learned from the train text (not with a preset)"
    )
    max_sequence_length: int = pydantic.Field(
        128, ge=4, le=4096, description="the most word pieces the model reads at once; longer texts: windows or long_inputs"
    )
    hidden_dim: int = pydantic.Field(
        128, ge=4, description="the model width: embeddings and encoder states (from scratch)"
    )
    num_layers: int = pydantic.Field(2, ge=0, description="transformer encoder layers (from scratch)")
    num_heads: int = pydantic.Field(
        4, ge=1, description="attention heads per encoder layer; must divide hidden_dim (from scratch)"
    )
    intermediate_dim: int = pydantic.Field(
        256, ge=4, description="hidden size of each encoder layer's feed-forward block (from scratch)"
    )
    dropout: float = pydantic.Field(
        0.1, ge=0.0, lt=1.0, description="dropout rate of the embeddings, encoder layers and heads"
    )
    lowercase: bool = pydantic.Field(
        True, description="lowercase the text before WordPiece (learning the vocabulary and encoding)"
    )
    task_conditioning: str = pydantic.Field(
        "embedding",
        description="how the encoder sees the task: none, embedding (add a task vector), token (prepend one)",
    )
    pooling: str = pydantic.Field(
        "cls", description="how sentence heads read the token states: cls, mean or attention (a query per task)"
    )
    task_gates: bool = pydantic.Field(False, description="a per-task sigmoid feature gate before each head (TaskGate)")
    task_relation: bool = pydantic.Field(
        False, description="self-attention across the sentence tasks' representations (TaskRelation)"
    )
    num_experts: int = pydantic.Field(
        0, ge=0, description="shared expert networks with a softmax gate per task (MixtureOfExperts); 0: off"
    )
    adapter_dim: int = pydantic.Field(
        0, ge=0, description="bottleneck size of per-task adapters after each encoder layer (TaskAdapter); 0: off"
    )
    # Texts longer than max_sequence_length (keras_mtl/data/windows.py, docs/long_inputs.md).
    window_stride: Optional[int] = pydantic.Field(
        None, ge=1, description="pieces between the starts of a long text's windows (snapped to words); empty: half a window"
    )
    window_merge: Literal["central", "mean"] = pydantic.Field(
        "mean", description="a word in several windows: tagged by its mean logits (mean) or where it is most central"
    )
    max_windows: int = pydantic.Field(
        16, ge=1, description="the most windows of one training text (its later words are not trained); no bound when predicting"
    )
    long_inputs: Literal["truncate", "head_tail", "windows"] = pydantic.Field(
        "truncate", description="sentence-level tasks on a long text: truncate, head_tail (first and last pieces) or windows"
    )

    _cond = _choice("task_conditioning", "task conditioning", CONDITIONING)
    _pool = _choice("pooling", "pooling", POOLING)

    @pydantic.model_validator(mode="after")
    def _heads(self):
        if self.preset is None and self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _stride(self):
        if self.window_stride is not None and self.window_stride > self.max_sequence_length - 1:
            raise ValueError(
                f"window_stride ({self.window_stride}) must be at most max_sequence_length - 1 "
                f"({self.max_sequence_length - 1}), the pieces a window holds after [CLS]"
            )
        return self

    @property
    def sees_task(self):
        """Whether the encoder sees the task (`task_conditioning` or adapters): the
        model then takes a `task_ids` input and encodes an example once per task."""
        return self.task_conditioning != "none" or self.adapter_dim > 0


class TrainConfig(_Strict):
    batch_size: int = pydantic.Field(
        32, ge=1, description="examples per training step (the global batch, split across replicas)"
    )
    epochs: int = pydantic.Field(3, ge=1, description="training epochs")
    steps_per_epoch: Optional[int] = pydantic.Field(
        None, ge=1, description="steps per epoch; empty: one pass over the unique training examples"
    )
    keep: Literal["last", "best"] = pydantic.Field(
        "last", description="the weights kept: last (the last epoch's) or best (the epoch with the best mean dev score)"
    )
    learning_rate: float = pydantic.Field(
        1e-3, gt=0.0, description="peak AdamW learning rate: linear warmup to it, then cosine decay to a tenth"
    )
    weight_decay: float = pydantic.Field(0.01, ge=0.0, description="AdamW weight decay")
    warmup_fraction: float = pydantic.Field(
        0.1, ge=0.0, lt=1.0, description="fraction of all training steps spent warming the learning rate up from 0"
    )
    sampling: str = pydantic.Field(
        "proportional", description="how tasks are drawn: proportional, uniform, temperature or annealed"
    )
    temperature: float = pydantic.Field(
        2.0, description="tau of temperature sampling, p_t proportional to n_t^(1/tau); > 0"
    )
    batch_mode: Literal["mixed", "per_task"] = pydantic.Field(
        "mixed", description="mixed: tasks share a batch; per_task: every batch holds one task"
    )
    bucket_lengths: Union[Literal["auto"], list[int]] = pydantic.Field(
        "auto", description="padded lengths of training batches, or auto (least expected padding)"
    )
    num_buckets: int = pydantic.Field(
        8, ge=1, le=64, description="how many bucket lengths `bucket_lengths: auto` picks"
    )
    loss_weighting: str = pydantic.Field(
        "static",
        description="how task losses are weighted: static (loss_weight), uncertainty, dwa, rlw, gradnorm, pcgrad",
    )
    loss_normalizer: Literal["expected", "batch"] = pydantic.Field(
        "expected", description="a task loss's divisor: its expected label weight (expected) or this batch's (batch)"
    )
    distribution: str = pydantic.Field(
        "auto", description="devices: auto, none, mirrored (TensorFlow) or data_parallel (JAX)"
    )
    precision: str = pydantic.Field(
        "auto",
        description="auto (bfloat16 where measured faster: keras_mtl/precision.py), float32, mixed_bfloat16, mixed_float16",
    )
    jit_compile: Union[bool, Literal["auto"]] = pydantic.Field(
        "auto", description="XLA for the train step: true, false or auto (per backend and device)"
    )
    eval_batch_size: int = pydantic.Field(64, ge=1, description="batch size of dev and test evaluation")
    shuffle_buffer: int = pydantic.Field(
        10000, ge=1, description="shuffle buffer of each task's training stream (at most its size)"
    )

    _sampling = _choice("sampling", "sampling strategy", SAMPLING)

    @pydantic.field_validator("temperature")
    @classmethod
    def _temperature(cls, v):
        if v <= 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={v}")
        return v

    _weighting = _choice("loss_weighting", "loss weighting", LOSS_WEIGHTING)

    _distribution = _choice("distribution", "distribution", DISTRIBUTION)

    _precision = _choice("precision", "precision", PRECISION)

    @pydantic.field_validator("bucket_lengths")
    @classmethod
    def _buckets(cls, v):
        if v == "auto":
            return v
        if not v or any(b < 2 for b in v) or sorted(set(v)) != v:
            raise ValueError(f"bucket_lengths must be increasing integers >= 2. Received: {v}")
        return v


class SplitConfig(_Strict):
    seed: int = pydantic.Field(0, description="seed of the text hash that carves missing dev/test splits from train")
    dev_fraction: float = pydantic.Field(
        0.1, ge=0.0, lt=1.0, description="share of train carved off as dev for a task without a dev source"
    )
    test_fraction: float = pydantic.Field(
        0.1, ge=0.0, lt=1.0, description="share of train carved off as test for a task without a test source"
    )
    leaks: Literal["keep", "drop"] = pydantic.Field(
        "keep", description="drop: remove from every task's train the texts (pairs) any task has in dev or test"
    )


class CacheConfig(_Strict):
    """The prepared cache of tokenized, label-encoded splits (keras_mtl.data.cache, docs/data_at_scale.md)."""

    dir: Optional[str] = pydantic.Field(
        None,
        description="where prepared data is cached; null: $KERAS_MTL_CACHE, else ~/.cache/keras-mtl (or $XDG_CACHE_HOME)",
    )
    full_hash: bool = pydantic.Field(
        False, description="identify data files by a hash of all their bytes (false: size, mtime, head and tail)"
    )
    vocabulary_sample: int = pydantic.Field(
        1_000_000, ge=1, description="the most distinct training texts a WordPiece vocabulary is learned from"
    )
    encode_processes: pydantic.NonNegativeInt = pydantic.Field(
        0,
        description="processes that encode a cold run's blocks (0: a thread, measured fastest on 2 cores)",
    )


class ExperimentConfig(_Strict):
    name: str = pydantic.Field(
        description="the experiment's name: the default work dir and model names (letters, digits, _ - .)"
    )
    seed: int = pydantic.Field(0, description="seed of the weights, task sampling, shuffling and dropout")
    tasks: list[TaskConfig] = pydantic.Field(description="the tasks trained together (at least one; unique names)")
    model: ModelConfig = pydantic.Field(
        default_factory=ModelConfig, description="the network: encoder, task conditioning, heads"
    )
    train: TrainConfig = pydantic.Field(
        default_factory=TrainConfig, description="optimizer, task sampling, batching, loss weighting, devices"
    )
    splits: SplitConfig = pydantic.Field(
        default_factory=SplitConfig, description="how missing dev/test splits are carved from train"
    )
    cache: CacheConfig = pydantic.Field(
        default_factory=CacheConfig, description="where and how prepared data is cached, the vocabulary's sample"
    )

    @pydantic.field_validator("name")
    @classmethod
    def _name(cls, v):
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", v):
            raise ValueError(f"name {v!r} must be letters, digits, '_', '-', '.' (it names directories)")
        return v

    @pydantic.field_validator("tasks")
    @classmethod
    def _tasks(cls, v):
        if not v:
            raise ValueError("at least one task is required")
        seen = {}
        for i, t in enumerate(v):
            if t.name in seen:
                raise ValueError(
                    f"tasks[{i}].name: duplicate task name {t.name!r} (also tasks[{seen[t.name]}])"
                )
            seen[t.name] = i
        names = list(seen)
        for i, t in enumerate(v):
            clash = model_name_clash(t.name, names)
            if clash:
                raise ValueError(f"tasks[{i}].name: task name {t.name!r} is reserved: {clash}; rename the task")
        if all(t.role == "auxiliary" for t in v):
            raise ValueError(
                "every task has role: auxiliary; at least one task must be a target (role: target, the default): "
                "auxiliary tasks are trained only to help the targets"
            )
        return v

    @pydantic.model_validator(mode="after")
    def _buckets_fit(self):
        buckets = self.train.bucket_lengths
        if buckets != "auto" and buckets[-1] > self.model.max_sequence_length:
            raise ValueError(
                f"train.bucket_lengths: {buckets[-1]} is longer than model.max_sequence_length "
                f"({self.model.max_sequence_length}); bucket lengths must be <= it. Received: {buckets}"
            )
        return self

    def task(self, name) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def task_names(self):
        return [t.name for t in self.tasks]

    @property
    def target_task_names(self):
        """The tasks with `role: target` (the default): the ones compared, scored in delta-m and kept by."""
        return [t.name for t in self.tasks if t.role == "target"]

    @property
    def auxiliary_task_names(self):
        """The tasks with `role: auxiliary`: trained only to help the targets."""
        return [t.name for t in self.tasks if t.role == "auxiliary"]

    @property
    def pair_task_names(self):
        """The tasks that read sentence pairs (`is_pair_task`)."""
        return [t.name for t in self.tasks if is_pair_task(t)]


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


@dataclasses.dataclass
class LoadedConfig:
    """A validated config plus where it came from."""

    config: ExperimentConfig
    path: Optional[Path]
    raw: dict  # the YAML after overrides, with data paths resolved
    lines: dict = dataclasses.field(default_factory=dict)  # key path (tuple) -> its line in `path`
    overridden: frozenset = frozenset()  # key paths (tuples) set by --set: no file line for them


def load_config(config, overrides=()) -> LoadedConfig:
    """Load, override and validate an experiment config.

    Args:
        config: path of the YAML file, a dict (the Python API), or a
            `LoadedConfig` (returned as is without overrides).
        overrides: `KEY=VALUE` strings (`train.batch_size=16`,
            `tasks.topic.loss_weight=2`, `tasks[0].metrics=[accuracy]`);
            VALUE is parsed as YAML.

    Raises:
        ConfigError: naming the file, line and field path of every problem.
    """
    if isinstance(config, LoadedConfig):
        return config_from_dict(config.raw, overrides=overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, overrides=overrides)
    path = Path(config)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: byte offset {e.start}: not valid UTF-8") from None
    raw, lines = _parse_yaml(text, str(path))
    return config_from_dict(raw, source=str(path), lines=lines, base_dir=path.parent, overrides=overrides)


def config_from_dict(raw, source="<dict>", lines=None, base_dir=".", overrides=()) -> LoadedConfig:
    """Validate a config given as a dict (the Python-API twin of `load_config`)."""

    raw = copy.deepcopy(raw)
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (name:, tasks:, ...), got {type(raw).__name__}")
    applied = {}  # resolved key path -> the --set text, to blame errors on it
    for item in overrides:
        applied[tuple(_apply_override(raw, item))] = item
    try:
        config = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError(_format_errors(e.errors(), source, lines, applied)) from None
    problems = []
    for i, task in enumerate(config.tasks):
        problems += _check_data(task, i, Path(base_dir), source, lines, applied)
        if task.teacher is not None:  # relative to the config file, like data paths
            task.teacher = _resolve(task.teacher, Path(base_dir))
    if problems:
        raise ConfigError("\n".join(problems))
    raw_resolved = config.model_dump(mode="json")
    return LoadedConfig(
        config=config,
        path=Path(source) if source != "<dict>" else None,
        raw=raw_resolved,
        lines=dict(lines),
        overridden=frozenset(applied),
    )


def check_keep_best_has_dev(loaded):
    """Refuse `train.keep: best` where the config alone shows that no task it
    scores (the targets: `role: target`) can have dev examples: none has a
    `data.dev` source and `splits.dev_fraction` is 0. Called by `train` before
    any data is read; the error names the config line of `train.keep` (or the
    `--set` that gave it). A dev source that turns out empty is only known
    from the data (`train` checks that after reading it).

    Raises:
        ConfigError: one line.
    """
    config = loaded.config
    if config.train.keep != "best" or config.splits.dev_fraction > 0:
        return
    targets = [task for task in config.tasks if task.role == "target"]
    if any(task.data.dev is not None for task in targets):
        return
    which = "task" if len(targets) == len(config.tasks) else "target task (role: target)"
    loc = ("train", "keep")
    by_set = [tuple(p) for p in loaded.overridden if tuple(p) == loc[: len(p)]]
    if by_set:
        where = f"--set {_loc_str(by_set[0])}" + ("=best: " if by_set[0] == loc else ": ")
    elif loaded.path is not None:
        line = _line_of(loaded.lines, loc)
        where = f"{loaded.path}:{line}: " if line else f"{loaded.path}: "
    else:
        where = ""
    raise ConfigError(
        f"{where}train.keep: best keeps the epoch with the best dev score, but no {which} has dev data "
        f"(no {which} has data.dev, and splits.dev_fraction is 0): give a {which} dev data (data.dev, or "
        "splits.dev_fraction > 0) or use train.keep: last"
    )


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line, first_line):
        super().__init__(f"duplicate key {key!r} (also at line {first_line}; a key may appear once in a mapping)")
        self.line = line
        self.first_line = first_line


class _LineLoader(yaml.SafeLoader):
    """SafeLoader: never constructs Python objects; a key repeated in a mapping is an error.

    Numbers such as `1e-3` load as floats (YAML 1.2), not as the string "1e-3"
    that YAML 1.1 makes of them.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (yaml.YAMLError, TypeError):
                    continue  # reported by the base constructor
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _DuplicateKey(key, line, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)


_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(e):
    """One line for a PyYAML error: its problem (and context), without the source dump."""
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    text = "; ".join(p for p in parts if p) or str(e).splitlines()[0]
    return " ".join(text.split())


UNSAFE_TAGS = "loaded with yaml.safe_load: tags that construct Python objects are not allowed"


def _yaml_failure(e):
    """(mark, unsafe) of a PyYAML error: where it is (or None), and whether it is a
    tag constructing a Python object (refused: `UNSAFE_TAGS`) rather than a syntax error."""
    if isinstance(e, yaml.constructor.ConstructorError):
        return e.problem_mark or e.context_mark, True
    return getattr(e, "problem_mark", None), False


def _parse_yaml(text, source):
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{source}:{e.line}: {e}") from None
    except yaml.YAMLError as e:
        mark, unsafe = _yaml_failure(e)
        if unsafe:
            where = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}{where}: {e.problem} (configs are {UNSAFE_TAGS})") from None
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: YAML syntax error: {_yaml_problem(e)}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    lines = {}
    _walk_lines(node, (), lines)
    return data, lines


def _walk_lines(node, path, out):
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _walk_lines(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk_lines(v, path + (i,), out)


def _loc_str(loc):
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s += ("." if s else "") + str(part)
    return s


def _line_of(lines, loc):
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


_TYPE_NAMES = {
    bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping",
    type(None): "empty",
}


def _describe(value):
    """`'32' (a string)`: a value with its YAML type, for type errors."""
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({kind})"


def _message(err):
    """The one-line message of a pydantic error."""
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "expected a mapping (key: value entries)"
    if kind in ("int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type", "model_type",
                "literal_error", "int_from_float", "finite_number") and "input" in err:
        msg += f"; got {_describe(err['input'])}"
        if kind in ("int_type", "float_type") and isinstance(err["input"], str):
            msg += ": write the number without quotes"
    return " ".join(msg.split())


def _where(loc, source, lines, applied):
    """Who to blame for a problem at `loc`: the `--set` that wrote it, else the YAML line."""
    applied = applied or {}
    for path, item in applied.items():
        if tuple(loc[: len(path)]) == tuple(path):  # the problem lies inside an override
            return f"--set {item}"
    inside = [item for path, item in applied.items() if tuple(path[: len(loc)]) == tuple(loc)]
    line = lines.get(tuple(loc)) if lines else None
    if line is None and inside:  # the key exists only through an override
        return f"--set {inside[-1]}"
    line = line or _line_of(lines or {}, loc)
    where = f"{source}:{line}" if line else source
    if inside:
        where += f" (with --set {inside[-1]})"
    return where


def _format_errors(errors, source, lines, applied=None):
    out = []
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            known = _fields_at(ExperimentConfig, loc[:-1])
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = f"unknown key {loc[-1]!r}" + (f"; did you mean {guess[0]!r}?" if guess else "")
            msg += f" (known keys: {', '.join(known)})"
        elif err["type"] == "missing":
            msg = "required field is missing"
        # A validator message may name a field inside its own location
        # ("tasks[1].name: ..." from the tasks list, "train.bucket_lengths:
        # ..." from the whole config).
        named = re.match(r"^([a-z_]+(\[\d+\])?(\.[a-z_]+)*): ", msg)
        if named and named.group(1).startswith(_loc_str(loc)) and named.group(1) != _loc_str(loc):
            field = ""
            loc = tuple(_split_key(named.group(1)))
        else:
            field = _loc_str(loc) + ": " if loc else ""
        out.append(f"{_where(loc, source, lines, applied)}: {field}{msg}")
    return "\n".join(out)


def _unwrap(annotation):
    """The pydantic model class inside list[...]/Optional[...], if any."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, Union):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def _model_at(model, loc):
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model


def _fields_at(model, loc):
    found = _model_at(model, loc)
    return sorted(found.model_fields) if found is not None else []


def _check_data(task, index, base_dir, source, lines, applied=None):
    """Validate a task's reader format and options; resolve relative paths."""
    from keras_mtl.data import readers

    loc = ("tasks", index, "data")
    where = _where(loc + ("format",), source, lines, applied)
    try:
        reader = readers.get_reader(task.data.format)
    except KeyError:
        names = readers.reader_names()
        guess = difflib.get_close_matches(task.data.format, names, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return [
            f"{where}: tasks[{index}].data.format: unknown data format {task.data.format!r}{hint} "
            f"(expected one of {', '.join(names)})"
        ]
    if task.type not in reader.task_types:
        return [
            f"{where}: tasks[{index}].data.format: the {reader.name!r} reader cannot serve a "
            f"{task.type} task (it serves: {', '.join(reader.task_types)})"
        ]
    try:
        # Strict like the config sections: `header: "yes"` is an error, not True.
        options = reader.options.model_validate(task.data.options, strict=True)
    except pydantic.ValidationError as e:
        errors = []
        for err in e.errors():
            sub = loc + tuple(err["loc"])
            msg = _message(err)
            if err["type"] == "extra_forbidden":
                known = sorted(set(reader.options.model_fields) | {"format", "train", "dev", "test"})
                guess = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
                msg = f"unknown option {err['loc'][-1]!r} for format {reader.name!r}" + (
                    f"; did you mean {guess[0]!r}?" if guess else ""
                ) + f" (known: {', '.join(known)})"
            errors.append(f"{_where(sub, source, lines, applied)}: {_loc_str(sub)}: {msg}")
        return errors
    if getattr(options, "data_dir", None):
        resolved = _resolve(options.data_dir, base_dir)
        options = options.model_copy(update={"data_dir": resolved})
        setattr(task.data, "data_dir", resolved)  # so the saved config is location-free
    object.__setattr__(task.data, "_options", options)
    if reader.source_is_path:
        for split in ("train", "dev", "test"):
            value = getattr(task.data, split)
            if value is not None:
                setattr(task.data, split, _resolve(value, base_dir))
    return []


def _resolve(value, base_dir):
    if isinstance(value, dict):
        return {k: _resolve(v, base_dir) for k, v in value.items()}
    if isinstance(value, str):
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base_dir / p).resolve())
    return value


def reader_options(task: TaskConfig):
    """The validated reader options of a task (set by `load_config`)."""
    from keras_mtl.data import readers

    opts = getattr(task.data, "_options", None)
    if opts is None:  # a config built without `load_config`/`config_from_dict`
        try:
            reader = readers.get_reader(task.data.format)
        except KeyError:
            raise ConfigError(f"task {task.name!r}: unknown data format {task.data.format!r}") from None
        try:
            opts = reader.options.model_validate(task.data.options, strict=True)
        except pydantic.ValidationError as e:
            problems = [f"task {task.name!r}: data.{_loc_str(err['loc'])}: {_message(err)}" for err in e.errors()]
            raise ConfigError("\n".join(problems)) from None
    return opts


def is_pair_task(task: TaskConfig):
    """Whether a task reads sentence pairs: its reader options name a second text."""
    from keras_mtl.data.readers import pair_option

    return pair_option(reader_options(task)) is not None


# --------------------------------------------------------------------------
# --set KEY=VALUE
# --------------------------------------------------------------------------


def _split_key(key):
    parts = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


def _apply_override(raw, item):
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE (e.g. train.batch_size=16)")
    key, value_text = item.split("=", 1)
    try:
        value = yaml.load(value_text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark, unsafe = _yaml_failure(e)
        if unsafe:
            raise ConfigError(f"--set {item}: invalid YAML value: {_yaml_problem(e)} (values are {UNSAFE_TAGS})") from None
        at = f" at column {mark.column + 1} of the value" if mark else ""
        raise ConfigError(f"--set {item}: invalid YAML value{at}: {_yaml_problem(e)}") from None
    parts = _split_key(key.strip())
    if not parts:
        raise ConfigError(f"--set {item}: empty key")
    node, model, done = raw, ExperimentConfig, []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not isinstance(node, (dict, list)):
            raise ConfigError(
                f"--set {item}: cannot set {_loc_str(done + [part])}: {_loc_str(done)} is "
                f"{_describe(node)}, not a mapping"
            )
        if isinstance(node, list):
            if isinstance(part, str) and part.isdigit():
                part = int(part)
            if isinstance(part, str):  # a task by name
                names = [t.get("name") for t in node if isinstance(t, dict)]
                if part not in names:
                    raise ConfigError(
                        f"--set {item}: no task named {part!r} (tasks: {', '.join(map(str, names))})"
                    )
                part = names.index(part)
            if not 0 <= part < len(node):
                raise ConfigError(f"--set {item}: index {part} out of range for {_loc_str(done) or 'list'}")
        else:
            if model is not None and model is not DataConfig and part not in model.model_fields:
                known = sorted(model.model_fields)
                guess = difflib.get_close_matches(str(part), known, n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                raise ConfigError(
                    f"--set {item}: {_loc_str(done + [part])}: no such field{hint} (known: {', '.join(known)})"
                )
            if model is not None and model is not DataConfig:
                model = _unwrap(model.model_fields[part].annotation)
            else:
                model = None
        done.append(part)
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:  # absent, or an empty `model:`
                node[part] = {}
            node = node[part]
    return done
