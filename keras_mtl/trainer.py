"""The multi-task trainer: per-task losses, loss weighting, per-task metrics.

`MultiTaskTrainer` wraps the functional multi-output network and trains it
with one of the loss-weighting strategies of `train.loss_weighting`:

    trainer = MultiTaskTrainer(network, tasks, losses, loss_weights, weighting="dwa")
    trainer.compile(optimizer=..., jit_compile=...)        # no loss=: the trainer computes it
    trainer.fit(dataset, callbacks=[LossWeightLogger(trainer), ...])
    trainer.network.save("model.keras")                    # the plain functional network

Every strategy except PCGrad and GradNorm is a function of the per-task
losses and goes through `compute_loss`, so Keras's own `train_step` runs it
on every backend. PCGrad and GradNorm need per-task gradients: they override
`train_step` for TensorFlow (`tf.GradientTape`) and JAX (stateless, `jax.vjp`)
and are refused on PyTorch (`check_weighting_supported`).

The math lives in `keras_mtl.weighting`; this module applies it.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mtl import weighting as W
from keras_mtl.config import LOSS_WEIGHTING
from keras_mtl.errors import ConfigError

__all__ = [
    "MultiTaskTrainer",
    "LossWeightLogger",
    "check_weighting_supported",
    "PER_TASK_GRADIENT_WEIGHTINGS",
    "PER_TASK_GRADIENT_BACKENDS",
]

# Strategies that combine per-task gradients, and the backends that have
# the custom train step they need.
PER_TASK_GRADIENT_WEIGHTINGS = ("pcgrad", "gradnorm")
PER_TASK_GRADIENT_BACKENDS = ("tensorflow", "jax")
_DYNAMIC = ("uncertainty", "dwa", "rlw", "gradnorm")


def check_weighting_supported(weighting, backend=None):
    """Raise `ConfigError` unless `weighting` can run on `backend`.

    Args:
        weighting: str. A `train.loss_weighting` value.
        backend: str. A Keras backend name; defaults to the active one.
    """
    backend = backend or keras.backend.backend()
    if weighting not in LOSS_WEIGHTING:
        raise ConfigError(
            f"unknown loss weighting {weighting!r}; expected one of {', '.join(LOSS_WEIGHTING)}"
        )
    if weighting in PER_TASK_GRADIENT_WEIGHTINGS and backend not in PER_TASK_GRADIENT_BACKENDS:
        raise ConfigError(
            f"loss_weighting {weighting!r} needs per-task gradients, implemented for the "
            f"{' and '.join(PER_TASK_GRADIENT_BACKENDS)} backends; this is {backend}. "
            f"Use KERAS_BACKEND={PER_TASK_GRADIENT_BACKENDS[0]} or another loss weighting "
            f"({', '.join(w for w in LOSS_WEIGHTING if w not in PER_TASK_GRADIENT_WEIGHTINGS)})."
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
    there. The total depends on `weighting`:

    - `"static"`: `sum_t lambda_t L_t` with the configured `loss_weights`.
    - `"uncertainty"` (Kendall et al., 2018): `sum_t exp(-s_t) L_t + s_t` with
      one trainable log-variance `s_t` per task (an `UncertaintyWeighting`
      layer), learned by the same optimizer (and excluded from its weight
      decay). With `loss_normalizer="batch"` a task's term is left out on
      steps without its labels, so the `+ s_t` term does not push its weight
      up while it is absent; with `"expected"` every step holds the task in
      expectation, so the term is always in.
    - `"dwa"` (Liu et al., 2019): `sum_t w_t L_t`; `w` comes from
      `weighting.dwa_weights` over the per-epoch mean task losses, updated by
      `end_epoch` (called by `LossWeightLogger`); all ones for the first two
      epochs. The weights sum to the number of tasks.
    - `"rlw"` (Lin et al., 2021): `sum_t w_t L_t` with `w = softmax(z)`,
      `z ~ N(0, I)` drawn afresh every training step (a tracked
      `keras.random.SeedGenerator`, so it works inside a jitted step). The
      weights sum to 1. Evaluation uses their expectation, `1 / T`.
    - `"gradnorm"` (Chen et al., 2018): `sum_t w_t L_t`; after every step the
      weights take one plain gradient step on the GradNorm objective
      (`weighting.gradnorm_weight_update`: rate `gradnorm_learning_rate`,
      restoring force `gradnorm_alpha`, floor 1e-3) and are renormalised to
      sum to the number of tasks. The gradient norms are taken w.r.t. the
      trainable weights of the *last shared layer*: the last layer (in graph
      order) with trainable weights that every task's output depends on
      (e.g. the last `TransformerEncoder` block, or the mixture of experts);
      `gradnorm_layer` names another one. If the network is not functional
      or no layer is shared by all tasks, all its trainable weights are used.
      `L_t(0)` is each task's loss on the first step that has its labels.
      Tasks absent from a batch keep their weight in that step's update; a
      step whose norms or losses are not finite (float16 loss-scale overflow)
      leaves the weights unchanged.
    - `"pcgrad"` (Yu et al., 2020): the gradients of the `lambda_t L_t` are
      combined with `weighting.pcgrad` (conflicting components projected
      away, then summed); the logged total is `sum_t lambda_t L_t`.

    Static lambdas: `"static"` and `"pcgrad"` use them as the task loss
    scales. The dynamic strategies (`"uncertainty"`, `"dwa"`, `"rlw"`,
    `"gradnorm"`) replace them, except that a lambda of exactly 0 removes the
    task from the objective (its weight is 0 and the others are computed
    over the remaining tasks; its `<t>_loss` is still logged). With
    `"pcgrad"` a lambda of 0 is refused (PCGrad's point is to keep every
    task's gradient; drop the task instead).

    Regularisation losses of the network (`self.losses`) are added to the
    total unweighted (with PCGrad their gradient is added after the
    projection).

    With TensorFlow `tf.distribute`, PCGrad projects each replica's
    gradients before they are summed across replicas; GradNorm averages the
    replicas' weight updates.

    Args:
        network: the functional multi-output `keras.Model` whose outputs are a
            dict keyed by task name.
        tasks: list of task names.
        losses: dict task -> `keras.losses.Loss` (`model.loss_for(task,
            loss_normalizer)`).
        loss_weights: dict task -> float, the static lambdas (missing tasks:
            1.0).
        weighting: one of `keras_mtl.config.LOSS_WEIGHTING`.
        dwa_temperature: float > 0. DWA softmax temperature.
        gradnorm_alpha: float > 0. GradNorm restoring-force strength.
        seed: int. Seed of the RLW weight sampler.
        gradnorm_learning_rate: float > 0. Step size of the GradNorm weights.
        gradnorm_layer: optional name of the network layer whose weights
            GradNorm takes gradient norms against.
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
        dwa_temperature=2.0,
        gradnorm_alpha=1.5,
        seed=0,
        gradnorm_learning_rate=0.025,
        gradnorm_layer=None,
        loss_normalizer="batch",
        **kwargs,
    ):
        check_weighting_supported(weighting, keras.backend.backend())
        tasks = tuple(tasks)
        lambdas = _static_lambdas(tasks, losses, loss_weights, weighting)
        if not dwa_temperature > 0:
            raise ConfigError(f"DWA temperature must be > 0. Received: {dwa_temperature}")
        if not gradnorm_alpha > 0:
            raise ConfigError(f"GradNorm alpha must be > 0. Received: gradnorm_alpha={gradnorm_alpha}")
        if not gradnorm_learning_rate > 0:
            raise ConfigError(
                f"GradNorm learning rate must be > 0. Received: {gradnorm_learning_rate}"
            )
        if loss_normalizer not in ("batch", "expected"):
            raise ConfigError(
                f"loss_normalizer must be 'batch' or 'expected'. Received: loss_normalizer={loss_normalizer!r}"
            )
        kwargs.setdefault("name", "multitask_trainer")
        super().__init__(**kwargs)
        self.network = network
        self.tasks = tasks
        self.weighting = weighting
        self.dwa_temperature = float(dwa_temperature)
        self.gradnorm_alpha = float(gradnorm_alpha)
        self.gradnorm_learning_rate = float(gradnorm_learning_rate)
        self.gradnorm_layer = gradnorm_layer
        self.loss_normalizer = loss_normalizer
        self.static_lambdas = dict(zip(tasks, lambdas))
        self.loss_history = []  # per epoch: [mean loss of each task], see end_epoch
        self._loss_fns = tuple(losses[t] for t in tasks)
        self._lambdas = np.asarray(lambdas, "float32")
        # Tasks in the objective of the dynamic strategies (lambda != 0).
        self._active = np.asarray([lam != 0 for lam in lambdas], "float32")
        self._num_active = int(self._active.sum())
        self._task_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in tasks]
        num_tasks = len(tasks)
        self.uncertainty = None
        if weighting == "uncertainty":
            self.uncertainty = W.UncertaintyWeighting(num_tasks, dtype="float32", name="uncertainty_weighting")
        elif weighting == "dwa":
            self._dwa_weights = self.add_weight(
                name="dwa_weights", shape=(num_tasks,), trainable=False, initializer=keras.initializers.Constant(self._active)
            )
        elif weighting == "rlw":
            self._rlw_seed = keras.random.SeedGenerator(seed, name="rlw_seed")
            self._rlw_weights = self.add_weight(
                name="rlw_weights",
                shape=(num_tasks,),
                trainable=False,
                aggregation="mean",
                initializer=keras.initializers.Constant(self._active / self._num_active),
            )
        elif weighting == "gradnorm":
            self._gradnorm_weights = self.add_weight(
                name="gradnorm_weights",
                shape=(num_tasks,),
                trainable=False,
                aggregation="mean",
                initializer=keras.initializers.Constant(self._active),
            )
            self._gradnorm_initial_losses = self.add_weight(
                name="gradnorm_initial_losses", shape=(num_tasks,), trainable=False, aggregation="mean", initializer="zeros"
            )
        self.built = True

    # === Keras API ===

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compile(self, *args, **kwargs):
        if kwargs.get("loss") is not None or len(args) > 1:
            raise ValueError(
                "MultiTaskTrainer computes the loss itself from `losses`; call compile() "
                "without `loss=` (and pass the optimizer by keyword)."
            )
        super().compile(*args, **kwargs)
        if self.uncertainty is not None and self.optimizer is not None:
            # The log-variances are not weights of the network: no weight decay.
            optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
            if not optimizer.built:
                optimizer.exclude_from_weight_decay(var_list=[self.uncertainty.log_variances])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task_losses, present = self._task_losses(y, y_pred, sample_weight)
        self._update_task_metrics(task_losses, present)
        total = self._weighted_total(task_losses, present, training)
        for loss in self.losses:
            total = total + ops.cast(self._aggregate_additional_loss(loss), total.dtype)
        return total

    def train_step(self, *args):
        if self.weighting in PER_TASK_GRADIENT_WEIGHTINGS:
            backend = keras.backend.backend()
            if backend == "tensorflow":
                return self._tf_train_step(*args)
            if backend == "jax":
                return self._jax_train_step(*args)
        return super().train_step(*args)

    # === Weights ===

    def current_weights(self):
        """The task weights (lambdas) in force now, as {task: float}.

        static/pcgrad: the static lambdas; uncertainty: `exp(-s_t)`; dwa: the
        DWA weights of the current epoch; rlw: the last sampled weights (1/T
        before the first step); gradnorm: the GradNorm weights. Removed tasks
        (static lambda 0) have weight 0.
        """
        if keras.backend.backend() == "jax" and hasattr(self, "jax_state_sync"):
            self.jax_state_sync()  # JAX keeps the variables outside the model mid-epoch.
        if self.weighting in ("static", "pcgrad"):
            return dict(self.static_lambdas)
        if self.weighting == "uncertainty":
            values = np.exp(-ops.convert_to_numpy(self.uncertainty.log_variances)) * self._active
        elif self.weighting == "dwa":
            values = ops.convert_to_numpy(self._dwa_weights)
        elif self.weighting == "rlw":
            values = ops.convert_to_numpy(self._rlw_weights)
        else:
            values = ops.convert_to_numpy(self._gradnorm_weights)
        return {t: float(v) for t, v in zip(self.tasks, np.asarray(values).reshape(-1))}

    def end_epoch(self, epoch_task_losses):
        """Record an epoch's mean task losses; with DWA, set the next epoch's weights.

        Args:
            epoch_task_losses: dict task -> the epoch's mean training loss.
                Removed tasks may be left out. If a task's value is missing,
                non-positive or not finite (no labels that epoch, NaN), the DWA
                weights stay as they are until two clean epochs follow.
        """
        active = [t for t, a in zip(self.tasks, self._active) if a]
        row = [_as_float(epoch_task_losses.get(t)) for t in active]
        self.loss_history.append(row)
        if self.weighting != "dwa":
            return
        last = self.loss_history[-2:]
        if len(last) == 2 and not all(math.isfinite(v) and v > 0 for epoch in last for v in epoch):
            return
        values = W.dwa_weights(self.loss_history, self.dwa_temperature, num_tasks=len(active))
        full = np.zeros([len(self.tasks)], "float32")
        full[self._active > 0] = values
        if keras.backend.backend() == "jax" and hasattr(self, "jax_state_sync"):
            self.jax_state_sync()
        self._dwa_weights.assign(full)

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

    def _update_task_metrics(self, task_losses, present):
        unscaled = task_losses * ops.cast(_replicas(), "float32")
        for t, tracker in enumerate(self._task_trackers):
            if self.loss_normalizer == "expected":  # 0 without labels is part of the estimate
                tracker.update_state(unscaled[t])
                continue
            value = ops.where(present[t] > 0, unscaled[t], ops.zeros_like(unscaled[t]))
            tracker.update_state(value, sample_weight=present[t])

    def _weighted_total(self, task_losses, present, training):
        """The weighted sum of the task losses for the configured strategy."""
        if self.weighting in ("static", "pcgrad"):
            return ops.sum(ops.convert_to_tensor(self._lambdas) * task_losses)
        active = ops.convert_to_tensor(self._active)
        if self.weighting == "uncertainty":
            s = ops.cast(self.uncertainty.log_variances, "float32")
            # The `+ s_t` regulariser is a loss term too: scale it like the
            # losses under tf.distribute (its gradient is summed over replicas).
            terms = ops.exp(-s) * task_losses + s / ops.cast(_replicas(), "float32")
            keep = active if self.loss_normalizer == "expected" else active * present
            return ops.sum(ops.where(keep > 0, terms, ops.zeros_like(terms)))
        if self.weighting == "dwa":
            weights = ops.convert_to_tensor(self._dwa_weights)
        elif self.weighting == "gradnorm":
            weights = ops.convert_to_tensor(self._gradnorm_weights)
        elif training:
            weights = self._sample_rlw_weights()
            self._rlw_weights.assign(weights)
        else:
            weights = active / self._num_active
        return ops.sum(ops.stop_gradient(ops.cast(weights, "float32")) * task_losses)

    def _sample_rlw_weights(self):
        if self._num_active == 1:
            return ops.convert_to_tensor(self._active)
        sampled = W.random_loss_weights(self._num_active, seed=self._rlw_seed)
        if self._num_active == len(self.tasks):
            return sampled
        parts, k = [], 0
        for a in self._active:
            if a:
                parts.append(sampled[k])
                k += 1
            else:
                parts.append(ops.zeros((), sampled.dtype))
        return ops.stack(parts)

    def _total_for_logs(self, task_losses, reg):
        if self.weighting == "gradnorm":
            weights = ops.convert_to_tensor(self._gradnorm_weights)
        else:
            weights = ops.convert_to_tensor(self._lambdas)
        return ops.sum(ops.cast(weights, "float32") * task_losses) + reg

    # === GradNorm ===

    def _gradnorm_variable_indices(self):
        """Indices into `self.trainable_variables` of the GradNorm shared weights."""
        cached = getattr(self, "_gradnorm_indices", None)
        if cached is not None:
            return cached
        layer = _last_shared_layer(self.network, [t for t, a in zip(self.tasks, self._active) if a], self.gradnorm_layer)
        shared = layer.trainable_variables if layer is not None else self.network.trainable_variables
        ids = {id(v) for v in shared}
        indices = [i for i, v in enumerate(self.trainable_variables) if id(v) in ids]
        if not indices:
            raise ConfigError("GradNorm found no trainable shared weights in the network")
        self._gradnorm_shared_layer = None if layer is None else layer.name
        self._gradnorm_indices = indices
        return indices

    def _gradnorm_update(self, task_losses, present, norms):
        """One GradNorm step on the weights (masked to the tasks in the batch)."""
        active = ops.convert_to_tensor(self._active)
        mask = active * present
        weights = ops.cast(ops.convert_to_tensor(self._gradnorm_weights), "float32")
        initial = ops.cast(ops.convert_to_tensor(self._gradnorm_initial_losses), "float32")
        losses = ops.stop_gradient(task_losses)
        norms = ops.stop_gradient(norms) * mask
        initial = ops.where(initial > 0, initial, ops.where(mask > 0, losses, ops.zeros_like(losses)))
        ok = ops.logical_and(mask > 0, initial > 0)
        ratios = ops.where(ok, losses / ops.where(initial > 0, initial, ops.ones_like(initial)), ops.ones_like(losses))
        count = ops.maximum(ops.sum(mask), 1.0)
        mean_norm = ops.sum(weights * norms) / count
        mean_ratio = ops.sum(ratios * mask) / count
        relative = ratios / ops.where(mean_ratio > 0, mean_ratio, ops.ones_like(mean_ratio))
        targets = mean_norm * relative**self.gradnorm_alpha
        # Same step as weighting.gradnorm_weight_update, restricted to the
        # tasks present: d/dw_t sum |w_t n_t - target_t| = sign(.) n_t.
        updated = weights - self.gradnorm_learning_rate * ops.sign(weights * norms - targets) * norms
        updated = ops.maximum(updated, 1e-3) * active
        updated = W.gradnorm_renormalize(updated) * (self._num_active / len(self.tasks))
        # Skip the step when a norm or loss is inf/NaN (e.g. a float16
        # loss-scale overflow, where the optimizer skips its step too).
        finite = ops.logical_and(ops.all(ops.isfinite(norms)), ops.all(ops.isfinite(losses)))
        old_initial = ops.convert_to_tensor(self._gradnorm_initial_losses)
        self._gradnorm_weights.assign(ops.where(finite, updated, weights))
        self._gradnorm_initial_losses.assign(ops.where(finite, initial, ops.cast(old_initial, "float32")))

    # === Per-task gradient train steps ===

    def _tf_train_step(self, data):
        import tensorflow as tf
        from keras.src.trainers.data_adapters import data_adapter_utils

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            task_losses, present = self._task_losses(y, y_pred, sample_weight)
            reg = ops.zeros((), "float32")
            for loss in self.losses:
                reg = reg + ops.cast(self._aggregate_additional_loss(loss), "float32")
            total = self._total_for_logs(task_losses, reg)
            # Differentiated targets must be computed under the tape.
            scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")
            per_task = [task_losses[t] * scale for t in range(len(self.tasks))]
            scaled_total = total * scale
            scaled_reg = reg * scale
        self._update_task_metrics(task_losses, present)
        self._loss_tracker.update_state(
            total * ops.cast(_replicas(), "float32"),
            sample_weight=tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0],
        )
        if self.weighting == "pcgrad":
            # d(lambda_t L_t) = lambda_t dL_t: scale outside the tape.
            task_grads = []
            for t in range(len(per_task)):
                grads = tape.gradient(per_task[t], variables)
                lam = float(self._lambdas[t])
                task_grads.append([_dense_grad(g, v, lam) for g, v in zip(grads, variables)])
            grads = W.pcgrad(task_grads)
            if self.losses:
                reg_grads = tape.gradient(scaled_reg, variables)
                grads = _add_grads(grads, [_dense_grad(g, v) for g, v in zip(reg_grads, variables)])
        else:
            grads = tape.gradient(scaled_total, variables)
            shared = [variables[i] for i in self._gradnorm_variable_indices()]
            norms = []
            for t in range(len(per_task)):
                g = [ops.convert_to_tensor(v) for v in tape.gradient(per_task[t], shared) if v is not None]
                norms.append(_global_norm(g) / scale if g else ops.zeros((), "float32"))
            self._gradnorm_update(task_losses, present, ops.stack(norms) * ops.cast(_replicas(), "float32"))
        del tape
        self.optimizer.apply(grads, variables)
        return self.get_metrics_result()

    def _jax_train_step(self, state, data):
        import jax
        from keras.src.trainers.data_adapters import data_adapter_utils

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        num_tasks = len(self.tasks)
        has_reg = []

        def forward(trainable_values):
            y_pred, new_non_trainable, fwd_losses = self.stateless_call(
                trainable_values, non_trainable, x, return_losses=True, training=True
            )
            task_losses, present = self._task_losses(y, y_pred, sample_weight)
            reg = ops.zeros((), "float32")
            for loss in fwd_losses:
                reg = reg + ops.cast(self._aggregate_additional_loss(loss), "float32")
            has_reg.append(bool(fwd_losses))
            return ops.concatenate([task_losses, reg[None]]), (present, new_non_trainable)

        values, vjp_fn, (present, non_trainable) = jax.vjp(forward, trainable, has_aux=True)
        task_losses, reg = values[:num_tasks], values[num_tasks]
        with keras.StatelessScope(state_mapping=list(zip(self.optimizer.variables, optimizer_variables))):
            scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")

        def grad_of(cotangent):
            return vjp_fn(ops.cast(cotangent, values.dtype) * scale)[0]

        eye = np.eye(num_tasks + 1, dtype="float32")
        mapping = list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            total = self._total_for_logs(task_losses, reg)  # with this step's weights
            if self.weighting == "pcgrad":
                task_grads = [grad_of(eye[t] * self._lambdas[t]) for t in range(num_tasks)]
                grads = W.pcgrad(task_grads)
                if has_reg[0]:
                    grads = _add_grads(grads, grad_of(eye[num_tasks]))
            else:
                weights = ops.cast(ops.convert_to_tensor(self._gradnorm_weights), "float32")
                grads = grad_of(ops.concatenate([weights, ops.ones((1,), "float32")]))
                indices = self._gradnorm_variable_indices()
                norms = []
                for t in range(num_tasks):
                    g = grad_of(eye[t])
                    norms.append(_global_norm([g[i] for i in indices]) / scale)
                self._gradnorm_update(task_losses, present, ops.stack(norms))
        non_trainable = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else value
            for v, value in zip(self.non_trainable_variables, non_trainable)
        ]
        grads = [ops.zeros_like(v) if g is None else g for g, v in zip(grads, trainable)]
        trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, grads, trainable)

        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metrics_variables))) as scope:
            self._update_task_metrics(task_losses, present)
            self._loss_tracker.update_state(
                total, sample_weight=next(i for i in keras.tree.flatten(x) if i is not None).shape[0]
            )
            logs = self.get_metrics_result()
        metrics_variables = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else value
            for v, value in zip(self.metrics_variables, metrics_variables)
        ]
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


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


def _static_lambdas(tasks, losses, loss_weights, weighting):
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
    zero = [t for t, lam in zip(tasks, lambdas) if lam == 0]
    if weighting == "pcgrad" and zero:
        raise ConfigError(
            f"loss_weighting 'pcgrad' with loss_weight 0 for task(s) {', '.join(zero)} is contradictory: "
            "PCGrad combines every task's gradient. Remove the task, or give it a positive loss_weight."
        )
    if len(zero) == len(tasks):
        raise ConfigError("every task has loss_weight 0: nothing to train")
    return lambdas


def _last_shared_layer(network, tasks, name=None):
    """The last layer with trainable weights that every task output depends on."""
    if name is not None:
        try:
            return network.get_layer(name)
        except ValueError as e:
            raise ConfigError(f"gradnorm layer {name!r} is not a layer of the network") from e
    outputs = getattr(network, "output", None) if hasattr(network, "operations") else None
    if not isinstance(outputs, dict) or any(t not in outputs for t in tasks):
        return None
    ancestors = {}
    for task in tasks:
        seen, stack = set(), [outputs[task]]
        while stack:
            tensor = stack.pop()
            history = getattr(tensor, "_keras_history", None)
            if history is None or history.operation is None:
                continue
            op = history.operation
            node = op._inbound_nodes[history.node_index]
            key = (id(op), history.node_index)
            if key in seen:
                continue
            seen.add(key)
            stack.extend(node.input_tensors)
        ancestors[task] = {k[0] for k in seen}
    shared = [
        op for op in network.operations
        if all(id(op) in ancestors[t] for t in tasks) and getattr(op, "trainable_variables", None)
    ]
    return shared[-1] if shared else None


def _replicas():
    """Number of replicas in sync (TensorFlow tf.distribute), else 1."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1


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


def _add_grads(grads, extra):
    out = []
    for g, e in zip(grads, extra):
        if e is None:
            out.append(g)
        elif g is None:
            out.append(ops.convert_to_tensor(e))
        else:
            out.append(g + ops.cast(ops.convert_to_tensor(e), g.dtype))
    return out


def _as_float(value):
    if value is None:
        return float("nan")
    try:
        return float(ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return float("nan")
