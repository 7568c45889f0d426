"""`run.json`: what a trained run was built with (`RunRecord`)."""

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Optional

from keras_mtl.disk import write_json
from keras_mtl.errors import ModelError


@dataclasses.dataclass
class RunRecord:
    """`run.json`: what a trained run was built with. Every writer (train,
    meta-train, adapt, the benchmarks) fills this one record; `load_run`
    checks a work dir's file against it."""

    classes: dict  # task -> its class names (tags for tagging), in head order
    task_types: dict  # task -> classification | multilabel | regression | tagging
    max_sequence_length: Optional[int] = None  # tokens per text, [CLS] included
    pad_id: Optional[int] = None  # the padding token id of the vocabulary
    train_sizes: Optional[dict] = None  # task -> labelled training examples
    epochs: Optional[int] = None  # epochs trained (1 for meta-training)
    steps_per_epoch: Optional[int] = None  # optimizer steps per epoch
    replicas: Optional[int] = None  # data-parallel replicas the run trained on
    history: list = dataclasses.field(default_factory=list)  # per epoch: losses and dev metrics
    keep: Optional[str] = None  # train.keep: last | best
    kept_epoch: Optional[int] = None  # the epoch whose weights model.keras holds (1-based)
    kept_dev_score: Optional[float] = None  # its mean primary dev metric (negated where lower is better)
    class_weights: Optional[dict] = None  # task -> per-class loss weights (class_weights: balanced)
    sampling_schedule: Optional[dict] = None  # {"tasks", "probabilities": per epoch}
    bucket_lengths: Optional[list] = None  # padded lengths of the training batches
    loss_weighting: Optional[str] = None  # train.loss_weighting
    final_loss_weights: Optional[dict] = None  # task -> lambda at the end of training
    meta: Optional[dict] = None  # Reptile's settings (meta-train)
    adapted_from: Optional[str] = None  # the work dir a few-shot run started from (adapt)
    adapt: Optional[dict] = None  # the few-shot run's settings and result (adapt)
    keras_mtl_version: Optional[str] = None  # filled in by `write`
    backend: Optional[str] = None  # filled in by `write`
    keras_version: Optional[str] = None  # filled in by `write`
    precision: Optional[str] = None  # the dtype policy it trained under (train.precision, auto resolved); by `write`
    tokenizer: Optional[str] = None  # the file holding a preset's tokenizer (tokenizer.json); None: vocab.txt
    finetuned_from: Optional[dict] = None  # the multi-task run a fine-tuned run started from (finetune)
    extra: dict = dataclasses.field(default_factory=dict)  # keys of a newer run.json this reader does not know

    @classmethod
    def for_config(cls, config, classes, **fields):
        """A record of `config`'s tasks (types, sequence length) with `fields`."""
        return cls(
            classes=classes,
            task_types={t.name: t.type for t in config.tasks},
            max_sequence_length=config.model.max_sequence_length,
            **fields,
        )

    def write(self, path):
        import keras

        from keras_mtl import __version__

        self.keras_mtl_version = self.keras_mtl_version or __version__
        self.backend = self.backend or keras.backend.backend()
        self.keras_version = self.keras_version or keras.__version__
        self.precision = self.precision or keras.mixed_precision.global_policy().name
        first = ("keras_mtl_version", "backend", "keras_version")
        record = dataclasses.asdict(self)
        extra = record.pop("extra")
        ordered = {k: record[k] for k in first} | {k: v for k, v in record.items() if k not in first}
        write_json(path, {k: v for k, v in ordered.items() if v is not None} | extra)

    @classmethod
    def read(cls, path):
        """The record in `path`; a ModelError names the file when it is not one.

        Keys this version does not know (a run.json written by a newer
        keras-mtl) are kept in `extra`, written back as they were, and named
        in one warning per set of keys.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            extra = {k: data.pop(k) for k in list(data) if k not in known}
            record = cls(**data, extra=extra)
        except (OSError, ValueError, TypeError) as e:
            raise ModelError(f"{path}: not a keras-mtl run record ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        if extra and tuple(sorted(extra)) not in _WARNED:
            _WARNED.add(tuple(sorted(extra)))
            warnings.warn(
                f"{path}: fields this keras-mtl does not know ({', '.join(sorted(extra))}), from a newer version: "
                "kept as they are",
                stacklevel=2,
            )
        return record


_WARNED = set()  # the sets of unknown run.json keys already warned about
