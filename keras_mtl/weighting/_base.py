"""`LossWeighting`, the base class of the strategies, and their registry."""

import keras
import numpy as np
from keras import ops

from keras_mtl.errors import ConfigError

# name -> LossWeighting subclass, filled by `@register` when a strategy's
# module is imported (`keras_mtl.weighting.get_class` imports it by name).
REGISTRY = {}


def register(name):
    """Class decorator: registers a `LossWeighting` subclass as `name`.

    `name` must be the name of the module that defines the class (the
    registry finds a strategy's module by its name without importing it).
    """

    def wrap(cls):
        module = cls.__module__.rsplit(".", 1)[-1]
        if module != name:
            raise ValueError(f"loss weighting {name!r} must live in module keras_mtl.weighting.{name}, not {module}")
        cls.key = name
        REGISTRY[name] = cls
        return cls

    return wrap


class LossWeighting(keras.layers.Layer):
    """A loss-weighting strategy: turns the per-task losses into the objective.

    The trainer (`keras_mtl.multitask_trainer.MultiTaskTrainer`) owns one strategy, a
    Keras layer, so its variables (learned log-variances, the current task
    weights, seed states) are variables of the trainer: trained by its
    optimizer if trainable, kept in its state on JAX, saved with its
    checkpoints. The trainer never asks which strategy it holds; it calls:

    - `total(task_losses, present, training)` in every step: the objective
      from the `[T]` task losses (`sum_t w_t L_t` by default, with `w` from
      `task_weights`);
    - `current_weights()`: the lambdas in force, for logs and `run.json`;
    - `end_epoch(loss_history)` at every epoch end;
    - if `needs_task_gradients`: `combine_gradients(gradients, task_losses,
      present)` instead of differentiating `total` (see docs/loss_weighting.md).

    Every strategy gets the tasks and their static lambdas (the configured
    `loss_weight`s). A lambda of 0 removes the task: `active` is 0 for it.

    Args:
        tasks: the task names, in the trainer's order.
        lambdas: the static lambdas, one float >= 0 per task.
        seed: int. Seed for strategies that draw random numbers.
        loss_normalizer: `"batch"` or `"expected"`: how the task losses
            were normalized (`MultiTaskTrainer`).
        network: the functional network being trained (read, not kept).
    """

    key = None  # the registered name, set by `@register`
    needs_task_gradients = False

    def __init__(self, tasks, lambdas, *, seed=0, loss_normalizer="batch", network=None, **kwargs):
        del network  # only strategies that inspect the network use it
        kwargs.setdefault("name", f"{self.key}_weighting")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        self.static_lambdas = tuple(float(lam) for lam in lambdas)
        self.lambdas = np.asarray(self.static_lambdas, "float32")
        self.active = np.asarray([lam != 0 for lam in self.static_lambdas], "float32")
        self.num_active = int(self.active.sum())
        self.seed = seed
        self.loss_normalizer = loss_normalizer
        self.built = True

    @property
    def num_tasks(self):
        return len(self.tasks)

    def task_weights(self, training=True):
        """The `[T]` task weights of this step (a tensor)."""
        raise NotImplementedError

    def total(self, task_losses, present, training=True):
        """The objective from the `[T]` float32 task losses.

        `present[t]` is 1.0 where task `t` has a label in the batch. The
        default is `sum_t w_t L_t` with `w = task_weights(training)`, the
        weights held constant (no gradient flows into them).
        """
        weights = ops.cast(self.task_weights(training), "float32")
        return ops.sum(ops.stop_gradient(weights) * task_losses)

    def current_weights(self):
        """The task weights in force now: a list of floats, one per task."""
        return [float(v) for v in np.asarray(ops.convert_to_numpy(self.task_weights(training=False))).reshape(-1)]

    def end_epoch(self, loss_history):
        """Called at every epoch end.

        Args:
            loss_history: list over the epochs so far of the mean training
                loss of each task (NaN where unknown), oldest first.
        """

    def combine_gradients(self, gradients, task_losses, present):
        """The gradient to apply, from per-task gradients (`needs_task_gradients`).

        Args:
            gradients: a `keras_mtl.multitask_trainer.TaskGradients`.
            task_losses: the `[T]` task losses of the step.
            present: `[T]`, 1.0 where the task has a label in the batch.

        Returns:
            One gradient per variable of `gradients.variables`, in the units
            of `gradients` (the loss-scaled ones `optimizer.apply` takes).
        """
        raise NotImplementedError(f"{type(self).__name__} does not combine per-task gradients")


def check_positive(name, value):
    """Raise `ConfigError` unless `value` is a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ConfigError(f"{name} must be > 0. Received: {value}")
    return float(value)
