"""The multi-task trainer: per-task losses, a loss-weighting strategy, per-task metrics.

`MultiTaskTrainer` wraps the functional multi-output network and trains it
on the objective that its loss-weighting strategy (`keras_mtl.weighting`,
`train.loss_weighting`) makes of the task losses:

    trainer = MultiTaskTrainer(network, tasks, losses, loss_weights, weighting="dwa")
    trainer.compile(optimizer=..., jit_compile=...)        # no loss=: the trainer computes it
    trainer.fit(dataset, callbacks=[LossWeightLogger(trainer), ...])
    trainer.network.save("model.keras")                    # the plain functional network

Two train steps, chosen by what the strategy needs:

- the joint-loss step differentiates `compute_loss` (the strategy's
  `total` plus the regularization losses): Keras's own `train_step` on JAX
  and PyTorch, the trainer's on TensorFlow (so that under `tf.distribute`
  it can clip the global gradient, `distribute.global_gradient_clipping`);
- the per-task-gradient step (strategies with `needs_task_gradients`,
  e.g. PCGrad, GradNorm) hands the strategy a `TaskGradients` and applies
  what it returns: TensorFlow (`tf.GradientTape`) and JAX (stateless,
  `jax.vjp`); refused on PyTorch (`check_weighting_supported`).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mtl import distribute
from keras_mtl import weighting as weighting_lib
from keras_mtl.errors import ConfigError

__all__ = [
    "MultiTaskTrainer",
    "LossWeightLogger",
    "TaskGradients",
    "check_weighting_supported",
    "PER_TASK_GRADIENT_BACKENDS",
]

# Backends that have the per-task-gradient train step.
PER_TASK_GRADIENT_BACKENDS = ("tensorflow", "jax")


def check_weighting_supported(weighting, backend=None):
    """Raise `ConfigError` unless `weighting` can run on `backend`.

    Args:
        weighting: str. A `train.loss_weighting` value.
        backend: str. A Keras backend name; defaults to the active one.
    """
    backend = backend or keras.backend.backend()
    if weighting_lib.get_class(weighting).needs_task_gradients and backend not in PER_TASK_GRADIENT_BACKENDS:
        others = [n for n in weighting_lib.names() if not weighting_lib.get_class(n).needs_task_gradients]
        raise ConfigError(
            f"loss_weighting {weighting!r} needs per-task gradients, implemented for the "
            f"{' and '.join(PER_TASK_GRADIENT_BACKENDS)} backends; this is {backend}. "
            f"Use KERAS_BACKEND={PER_TASK_GRADIENT_BACKENDS[0]} or another loss weighting "
            f"({', '.join(others)})."
        )


class MultiTaskTrainer(keras.Model):
    """Trains a multi-output network on the weighted sum of its task losses.

    Each step computes, for every task `t`, the loss over the examples (or
    tokens) that carry `t`'s label,

        L_t = losses[t](y[t], y_pred[t], sample_weight[t])      (0 if none in the batch)

    and logs it as the metric `<t>_loss`, next to the total `loss`. With
    `loss_normalizer="batch"` the losses are means over each batch's
    labelled units and `<t>_loss` averages only the steps where the task had
    a label; with `"expected"` (sample weights pre-divided by the expected
    label weight per batch, `data.pipeline.train_dataset`) a loss is an
    unbiased per-step estimate of the task's mean loss, 0 on steps without
    its labels, and `<t>_loss` averages every step. A NaN loss shows up
    there.

    The total is the strategy's objective (`weighting`, one of
    `keras_mtl.weighting.names()`; see docs/loss_weighting.md) plus the
    network's regularization losses (`self.losses`), unweighted. The static
    lambdas (`loss_weights`) are the task loss scales of `static` and
    `pcgrad`; the dynamic strategies replace them, except that a lambda of
    exactly 0 removes the task from the objective (its `<t>_loss` is still
    logged). The strategy's trainable variables are trained by the same
    optimizer, without weight decay.

    Args:
        network: the functional multi-output `keras.Model` whose outputs are a
            dict keyed by task name.
        tasks: list of task names.
        losses: dict task -> `keras.losses.Loss` (`model.loss_for(task,
            loss_normalizer)`).
        loss_weights: dict task -> float, the static lambdas (missing tasks:
            1.0).
        weighting: a loss-weighting name (`keras_mtl.weighting.names()`).
        weighting_options: dict of the strategy's own options, e.g.
            `{"temperature": 2.0}` for `dwa`, `{"alpha": 1.5}` for
            `gradnorm`.
        seed: int. Seed of the strategies that draw random numbers (RLW).
        loss_normalizer: `"batch"` or `"expected"`: how the task losses were
            normalized (see above).
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        network,
        tasks,
        losses,
        loss_weights=None,
        weighting="static",
        weighting_options=None,
        seed=0,
        loss_normalizer="batch",
        **kwargs,
    ):
        check_weighting_supported(weighting, keras.backend.backend())
        tasks = tuple(tasks)
        lambdas = _static_lambdas(tasks, losses, loss_weights)
        if loss_normalizer not in ("batch", "expected"):
            raise ConfigError(
                f"loss_normalizer must be 'batch' or 'expected'. Received: loss_normalizer={loss_normalizer!r}"
            )
        kwargs.setdefault("name", "multitask_trainer")
        super().__init__(**kwargs)
        self.network = network
        self.tasks = tasks
        self.loss_normalizer = loss_normalizer
        self.loss_history = []  # per epoch: [mean loss of each task], see end_epoch
        self._loss_fns = tuple(losses[t] for t in tasks)
        # Our own trackers (listed by `metrics`), not Keras's compiled loss tracker.
        self._total_tracker = keras.metrics.Mean(name="loss")
        self._task_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in tasks]
        self.loss_weighting = weighting_lib.get_loss_weighting(
            weighting,
            tasks,
            lambdas,
            options=weighting_options,
            seed=seed,
            loss_normalizer=loss_normalizer,
            network=network,
        )
        self._clip_global = None  # see compile
        self.built = True

    # === Keras API ===

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [self._total_tracker, *self._task_trackers]

    def compile(self, *args, **kwargs):
        if kwargs.get("loss") is not None or len(args) > 1:
            raise ValueError(
                "MultiTaskTrainer computes the loss itself from `losses`; call compile() "
                "without `loss=` (and pass the optimizer by keyword)."
            )
        if kwargs.get("metrics") or kwargs.get("weighted_metrics"):
            raise ValueError(
                "MultiTaskTrainer logs the task losses only; evaluate task metrics with a callback "
                "(keras_mtl.callbacks.PerTaskEvaluation), not compile(metrics=...)."
            )
        super().compile(*args, **kwargs)
        if self.optimizer is None:
            return
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        # Under tf.distribute with several replicas the train steps clip the
        # global gradient themselves (Keras would clip each replica's part);
        # a second compile with the same optimizer keeps that clipping.
        if getattr(self._clip_global, "optimizer", None) is not optimizer:
            self._clip_global = distribute.global_gradient_clipping(self.optimizer)
        extra = self.loss_weighting.trainable_variables
        if extra and not optimizer.built:
            # The strategy's variables are not weights of the network: no weight decay.
            optimizer.exclude_from_weight_decay(var_list=extra)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task_losses, present = self._task_losses(y, y_pred, sample_weight)
        total = _add_regularization(self.loss_weighting.total(task_losses, present, training), self.losses)
        self._update_loss_metrics(x, total, task_losses, present)
        return total

    def train_step(self, *args):
        backend = keras.backend.backend()
        if self.loss_weighting.needs_task_gradients:
            if backend == "tensorflow":
                return self._tf_task_gradient_step(*args)
            return self._jax_task_gradient_step(*args)
        if backend == "tensorflow":
            return self._tf_joint_step(*args)
        return super().train_step(*args)

    # === Weights ===

    def current_weights(self):
        """The task weights (lambdas) in force now, as {task: float}.

        static/pcgrad: the static lambdas; uncertainty: `exp(-s_t)`; dwa: the
        DWA weights of the current epoch; rlw: the last sampled weights (1/T
        before the first step); gradnorm: the GradNorm weights. Removed tasks
        (static lambda 0) have weight 0.
        """
        self._sync_jax_state()
        return dict(zip(self.tasks, self.loss_weighting.current_weights()))

    def end_epoch(self, epoch_task_losses):
        """Record an epoch's mean task losses and pass the history to the strategy.

        Args:
            epoch_task_losses: dict task -> the epoch's mean training loss.
                Removed tasks may be left out; a missing value is NaN.
        """
        self.loss_history.append([_as_float(epoch_task_losses.get(t)) for t in self.tasks])
        self._sync_jax_state()  # the strategy may assign its variables
        self.loss_weighting.end_epoch(self.loss_history)

    def _sync_jax_state(self):
        if keras.backend.backend() == "jax" and hasattr(self, "jax_state_sync"):
            self.jax_state_sync()  # JAX keeps the variables outside the model mid-epoch.

    # === Losses and metrics ===

    def _task_losses(self, y, y_pred, sample_weight):
        """([T] task losses, [T] 1.0 where the task has a label in the batch)."""
        losses, present = [], []
        for task, fn in zip(self.tasks, self._loss_fns):
            weights = None if sample_weight is None else sample_weight.get(task)
            target, pred = y[task], y_pred[task]
            if len(pred.shape) == 1:
                # Keras losses average over the last axis: a [B] regression
                # output would be averaged over the batch, ignoring the
                # sample weights. Make it [B, 1] so the loss is per example.
                target, pred = ops.expand_dims(target, -1), ops.expand_dims(pred, -1)
            if weights is None:
                loss = fn(target, pred)
                has = ops.ones((), "float32")
            else:
                loss = fn(target, pred, sample_weight=weights)
                has = ops.cast(ops.sum(ops.cast(weights, "float32")) > 0, "float32")
            losses.append(ops.reshape(ops.cast(loss, "float32"), ()))
            present.append(has)
        return ops.stack(losses), ops.stack(present)

    def _update_loss_metrics(self, x, total, task_losses, present):
        """`loss` (weighted by the batch size, as Keras does) and the `<t>_loss`.

        Under tf.distribute each replica's losses are its share of the global
        one: times the number of replicas, the metric averages global values.
        """
        replicas = ops.cast(distribute.replicas_in_sync(), "float32")
        batch = ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        self._total_tracker.update_state(total * replicas, sample_weight=batch)
        unscaled = task_losses * replicas
        for t, tracker in enumerate(self._task_trackers):
            if self.loss_normalizer == "expected":  # 0 without labels is part of the estimate
                tracker.update_state(unscaled[t])
                continue
            value = ops.where(present[t] > 0, unscaled[t], ops.zeros_like(unscaled[t]))
            tracker.update_state(value, sample_weight=present[t])

    # === Train steps ===

    def _tf_joint_step(self, data):
        """Keras's TensorFlow train step, with the global-gradient clipping."""
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.optimizer.scale_loss(self.compute_loss(x, y, y_pred, sample_weight, training=True))
        variables = self.trainable_variables
        self._apply_gradients(tape.gradient(loss, variables), variables)
        return self.get_metrics_result()

    def _tf_task_gradient_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            task_losses, present = self._task_losses(y, y_pred, sample_weight)
            reg = _add_regularization(ops.zeros((), "float32"), self.losses)
            total = self.loss_weighting.total(task_losses, present, training=True) + reg
            # Differentiated targets must be computed under the tape.
            scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")
            gradients = _TFTaskGradients(
                tape,
                variables,
                scale,
                tasks=[task_losses[t] * scale for t in range(len(self.tasks))],
                total=total * scale,
                reg=reg * scale if self.losses else None,
            )
        # (Before the gradients: this order keeps TensorFlow's results bitwise
        # those of the trainer before the strategies moved out of it.)
        self._update_loss_metrics(x, total, task_losses, present)
        grads = self.loss_weighting.combine_gradients(gradients, task_losses, present)
        del tape
        self._apply_gradients(grads, variables)
        return self.get_metrics_result()

    def _apply_gradients(self, grads, variables):
        if self._clip_global is not None:
            grads = self._clip_global(grads)
        self.optimizer.apply(grads, variables)

    def _jax_task_gradient_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        num_tasks = len(self.tasks)
        has_reg = []

        def forward(trainable_values):
            y_pred, new_non_trainable, fwd_losses = self.stateless_call(
                trainable_values, non_trainable, x, return_losses=True, training=True
            )
            task_losses, present = self._task_losses(y, y_pred, sample_weight)
            reg = _add_regularization(ops.zeros((), "float32"), fwd_losses)
            has_reg.append(bool(fwd_losses))
            return ops.concatenate([task_losses, reg[None]]), (present, new_non_trainable)

        values, vjp_fn, (present, non_trainable) = jax.vjp(forward, trainable, has_aux=True)
        task_losses = values[:num_tasks]
        with keras.StatelessScope(state_mapping=list(zip(self.optimizer.variables, optimizer_variables))):
            scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")

        def objective(losses_and_reg):
            weighted = self.loss_weighting.total(losses_and_reg[:num_tasks], present, training=True)
            return weighted + losses_and_reg[num_tasks]

        mapping = list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            # The step's objective and its gradient w.r.t. [task losses, reg]:
            # the cotangent that gives its gradient w.r.t. the weights.
            total, total_cotangent = jax.value_and_grad(objective)(values)
            gradients = _JAXTaskGradients(
                vjp_fn, values.dtype, self.trainable_variables, scale, num_tasks, has_reg[0], total_cotangent
            )
            grads = self.loss_weighting.combine_gradients(gradients, task_losses, present)
        non_trainable = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else value
            for v, value in zip(self.non_trainable_variables, non_trainable)
        ]
        grads = [ops.zeros_like(v) if g is None else g for g, v in zip(grads, trainable)]
        trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, grads, trainable)

        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metrics_variables))) as scope:
            self._update_loss_metrics(x, total, task_losses, present)
            logs = self.get_metrics_result()
        metrics_variables = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else value
            for v, value in zip(self.metrics_variables, metrics_variables)
        ]
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


class TaskGradients:
    """What a per-task-gradient strategy gets from the train step.

    Gradients are lists with one entry per variable of `variables` (None
    where a loss does not reach the variable), dense, in the units that
    `optimizer.apply` takes (scaled by the loss scale under mixed_float16)
    and, under tf.distribute, of this replica's share of the batch.

    Attributes:
        variables: the trainable variables, in gradient order.
    """

    variables = ()

    def task(self, t, factor=1.0):
        """The gradient of `factor * L_t`."""
        raise NotImplementedError

    def objective(self):
        """The gradient of the step's objective: the strategy's `total` plus
        the regularization losses."""
        raise NotImplementedError

    def regularization(self):
        """The gradient of the regularization losses, or None without any."""
        raise NotImplementedError

    def task_norm(self, t, indices):
        """`||grad L_t||` over the variables at `indices`: a float32 scalar
        in loss units (not loss-scaled), for the global batch."""
        raise NotImplementedError


class _TFTaskGradients(TaskGradients):
    """`TaskGradients` from a persistent `tf.GradientTape`."""

    def __init__(self, tape, variables, scale, tasks, total, reg):
        """`tasks`, `total`, `reg`: the loss-scaled targets, computed under `tape`."""
        self.variables = variables
        self._tape, self._scale = tape, scale
        self._tasks, self._total, self._reg = tasks, total, reg

    def _dense(self, target, factor=1.0):
        return [_dense_grad(g, v, factor) for g, v in zip(self._tape.gradient(target, self.variables), self.variables)]

    def task(self, t, factor=1.0):
        return self._dense(self._tasks[t], factor)

    def objective(self):
        return self._tape.gradient(self._total, self.variables)

    def regularization(self):
        return None if self._reg is None else self._dense(self._reg)

    def task_norm(self, t, indices):
        shared = [self.variables[i] for i in indices]
        grads = [ops.convert_to_tensor(g) for g in self._tape.gradient(self._tasks[t], shared) if g is not None]
        norm = _global_norm(grads) / self._scale if grads else ops.zeros((), "float32")
        return norm * ops.cast(distribute.replicas_in_sync(), "float32")


class _JAXTaskGradients(TaskGradients):
    """`TaskGradients` from the `jax.vjp` of [task losses, regularization]."""

    def __init__(self, vjp_fn, dtype, variables, scale, num_tasks, has_reg, total_cotangent):
        self.variables = variables
        self._vjp_fn, self._dtype, self._scale = vjp_fn, dtype, scale
        self._num_tasks, self._has_reg, self._total_cotangent = num_tasks, has_reg, total_cotangent
        self._eye = np.eye(num_tasks + 1, dtype="float32")

    def _grad(self, cotangent):
        return self._vjp_fn(ops.cast(cotangent, self._dtype) * self._scale)[0]

    def task(self, t, factor=1.0):
        return self._grad(self._eye[t] * factor)

    def objective(self):
        return self._grad(self._total_cotangent)

    def regularization(self):
        return self._grad(self._eye[self._num_tasks]) if self._has_reg else None

    def task_norm(self, t, indices):
        g = self._grad(self._eye[t])
        return _global_norm([g[i] for i in indices]) / self._scale


class LossWeightLogger(keras.callbacks.Callback):
    """At each epoch end: logs `lambda_<task>` and calls `trainer.end_epoch`.

    The logged lambdas are the weights in force at the end of the epoch
    (for DWA: the ones used during it); `end_epoch` then receives the
    epoch's mean per-task training losses (`<task>_loss` from the logs) and,
    with DWA, sets the next epoch's weights. Put it before callbacks that
    read `lambda_<task>` from the epoch logs (CSV writers, TensorBoard).

    Args:
        trainer: the `MultiTaskTrainer`; defaults to the model being fit.
    """

    def __init__(self, trainer=None):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        trainer = self.trainer if self.trainer is not None else self.model
        logs = logs if logs is not None else {}
        weights = trainer.current_weights()
        losses = {}
        for task, tracker in zip(trainer.tasks, trainer._task_trackers):
            value = logs.get(f"{task}_loss")
            losses[task] = _as_float(value if value is not None else tracker.result())
        trainer.end_epoch(losses)
        for task, value in weights.items():
            logs[f"lambda_{task}"] = value


# === Helpers ===


def _static_lambdas(tasks, losses, loss_weights):
    if not tasks:
        raise ConfigError("MultiTaskTrainer needs at least one task")
    missing = [t for t in tasks if t not in losses]
    if missing:
        raise ConfigError(f"no loss given for task(s) {', '.join(missing)}")
    loss_weights = dict(loss_weights or {})
    unknown = [t for t in loss_weights if t not in tasks]
    if unknown:
        raise ConfigError(f"loss_weights names unknown task(s) {', '.join(unknown)}; tasks are {', '.join(tasks)}")
    lambdas = []
    for t in tasks:
        lam = loss_weights.get(t, 1.0)
        lam = float(1.0 if lam is None else lam)
        if not math.isfinite(lam) or lam < 0:
            raise ConfigError(f"tasks[{t}].loss_weight must be a finite number >= 0. Received: {lam}")
        lambdas.append(lam)
    if all(lam == 0 for lam in lambdas):
        raise ConfigError("every task has loss_weight 0: nothing to train")
    return lambdas


def _add_regularization(total, losses):
    """`total` plus the sum of each regularization loss (from `add_loss`,
    regularizers, sublayers), as float32."""
    for loss in losses:
        total = total + ops.cast(ops.sum(loss), total.dtype)
    return total


def _global_norm(tensors):
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(ops.convert_to_tensor(g), "float32"))) for g in tensors))


def _dense_grad(grad, variable, factor=1.0):
    """A TF gradient as a dense tensor of the variable's static shape, times `factor`.

    Inside a `tf.function` some gradients lose their static shape (embedding
    `tf.IndexedSlices`, kernels of Dense layers on 3-D inputs: `(None, d)`);
    PCGrad needs it to flatten and split the gradients.
    """
    import tensorflow as tf

    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices) or not grad.shape.is_fully_defined():
        grad = tf.reshape(tf.convert_to_tensor(grad), tuple(variable.shape))
    return grad if factor == 1.0 else grad * factor


def _as_float(value):
    if value is None:
        return float("nan")
    try:
        return float(ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return float("nan")
