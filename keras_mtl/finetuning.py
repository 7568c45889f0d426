"""MT-DNN's second stage: fine-tune a trained multi-task run on one of its tasks.

    keras-mtl finetune runs/glue_pairs_nli_minilm --task rte [--workdir DIR] [--set train.epochs=3]

    from keras_mtl.finetuning import finetune
    report = finetune("runs/glue_pairs_nli_minilm", "rte")

The fine-tuned run is a `train` run of one task (Liu et al. 2019, MT-DNN:
multi-task training, then per-task fine-tuning). Its config is the
multi-task run's, reduced to that task: the same data and splits, the same
model settings and train settings (its own budget: one pass over the task's
data per epoch, `train.epochs` epochs, or whatever `--set` says). It reads
text as the multi-task run did (its vocabulary, or its preset's tokenizer)
and starts from its weights: the shared encoder, the task's own rows of
any per-task table (task embedding, adapters, experts' gates), the task's
pooling and head (keras_mtl.transfer). `keep: best`, resume (the same
command) and export work as for any run, and its run.json names the run it
started from (`finetuned_from`).

Only one way in: `finetune` (the CLI command or this function); a config
cannot name a run to start from.
"""

import dataclasses
import hashlib
import json

from keras_mtl.config import config_from_dict
from keras_mtl.errors import ConfigError
from keras_mtl.run import Run, load_run


@dataclasses.dataclass(frozen=True)
class StartFrom:
    """A trained run to start a one-task run from (`train(init_from=...)`)."""

    run: Run  # the multi-task run
    task: str  # the task fine-tuned

    def check(self, config, data):
        """ConfigError unless the new run's task reads labels the run was trained on."""
        name = self.task
        if config.task_names != [name]:
            raise ConfigError(f"finetune: a fine-tuned run has one task, {name!r}; the config has {config.task_names}")
        trained, found = list(self.run.classes.get(name) or []), list(data.classes.get(name) or [])
        if trained != found:
            raise ConfigError(
                f"finetune: task {name!r} of {self.run.files.root} was trained on the labels "
                f"{', '.join(map(repr, trained)) or '(none: values)'}, but its data now has "
                f"{', '.join(map(repr, found)) or '(none: values)'}; its head cannot start from the run's"
            )

    def tokenization(self):
        """The run's tokenization: the fine-tuned run reads text as it did."""
        return self.run.tokenization()

    def initialize(self, network):
        """Copy the run's shared encoder and the task's own layers and table rows into `network`."""
        from keras_mtl.transfer import transfer_weights  # lazy: keras-hub and TensorFlow

        copied, fresh = transfer_weights(self.run.load_model(), network, self.run.task_names, [self.task])
        if self.task in fresh or not any(name != self.task for name in copied):
            raise ConfigError(
                f"finetune: could not start task {self.task!r} from {self.run.files.root} (copied: "
                f"{', '.join(copied) or 'nothing'}; left as initialized: {', '.join(fresh) or 'nothing'})"
            )
        return copied, fresh

    def identity(self):
        """What the run started from, for run.json and a resume check: the work dir,
        the task and a digest of the model file (a retrained run is another start)."""
        model = self.run.files.model
        digest = hashlib.sha256()
        with open(model, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {"workdir": str(self.run.files.root), "task": self.task, "model_sha256": digest.hexdigest()}

    def describe(self):
        return f"the multi-task run {self.run.files.root} (task {self.task!r})"


def finetune_raw(raw, task):
    """The config dict of a run (`LoadedConfig.raw`) reduced to `task`: the
    fine-tuned run's config, before overrides. Its name is
    `<name>-<task>-finetuned`; the task becomes a target trained on its gold
    labels (MT-DNN's second stage: no teacher)."""
    raw = json.loads(json.dumps(raw))
    raw["tasks"] = [dict(t, role="target", teacher=None) for t in raw["tasks"] if t["name"] == task]
    raw["name"] = f"{raw['name']}-{task}-finetuned"[:64]
    return raw


def finetune_config(run, task, overrides=()):
    """The run's config reduced to `task` (`finetune_raw`), with `overrides`: a `LoadedConfig`."""
    if not run.has_task(task):
        raise ConfigError(
            f"finetune: {run.files.root} has no task {task!r} (its tasks: {', '.join(run.task_names)})"
        )
    raw = finetune_raw(run.config.model_dump(mode="json"), task)
    return config_from_dict(raw, source=str(run.files.config), overrides=overrides)


def finetune(workdir, task, out=None, overrides=(), max_steps=None, verbose=1, fresh=False):
    """Fine-tune the multi-task run in `workdir` on `task` into `out`.

    Args:
        workdir: a trained multi-task run (`keras-mtl train`).
        task: the task to fine-tune (one of the run's).
        out: the fine-tuned run's work dir. Defaults to
            `runs/<run name>-<task>-finetuned`.
        overrides: `KEY=VALUE` overrides of the derived config (its budget:
            `train.epochs`, `train.steps_per_epoch`, `train.learning_rate`, ...).
        max_steps, verbose, fresh: as for `train`.

    Returns:
        dict: the fine-tuned run's test report.

    Raises:
        ModelError: `workdir` holds no trained run.
        ConfigError: the run has no task `task`; the task's labels changed
            since the run was trained; nothing could be copied.
    """
    from keras_mtl.training import train  # lazy: TensorFlow (compare imports this module for `finetune_raw`)

    run = load_run(workdir)
    loaded = finetune_config(run, task, overrides)
    return train(loaded, workdir=out, max_steps=max_steps, verbose=verbose, fresh=fresh,
                 init_from=StartFrom(run, task))
