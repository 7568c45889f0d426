"""`gradnorm`: GradNorm (Chen et al., 2018)."""

import keras
import numpy as np
from keras import ops

from keras_mtl.errors import ConfigError
from keras_mtl.weighting._base import LossWeighting, check_positive, register


@register("gradnorm")
class GradNorm(LossWeighting):
    """`sum_t w_t L_t`; after every step the weights take one step of
    `gradnorm_step` (plain gradient descent on the GradNorm objective, rate
    `learning_rate`, restoring force `alpha`, floor 1e-3) and are
    renormalised to sum to the number of active tasks.

    The gradient norms are taken w.r.t. the trainable weights of the *last
    shared layer*: the last layer (in graph order) with trainable weights
    that every active task's output depends on (e.g. the last
    `TransformerEncoder` block of the shared encoder, or the mixture of
    experts); `layer` names another one. If the network is not functional or no layer is shared by
    all tasks, all its trainable weights are used. `L_t(0)` is each task's
    loss on the first step that has its labels. Tasks absent from a batch
    keep their weight in that step's update; a step whose norms or losses
    are not finite (float16 loss-scale overflow) leaves the weights
    unchanged. Under `tf.distribute` the replicas' updates are averaged.

    Args:
        alpha: float > 0. The restoring-force strength.
        learning_rate: float > 0. The step size on the weights.
        layer: optional name of the network layer whose weights the
            gradient norms are taken against.
    """

    needs_task_gradients = True

    def __init__(self, tasks, lambdas, *, alpha=1.5, learning_rate=0.025, layer=None, network=None, **common):
        alpha = check_positive("GradNorm alpha", alpha)
        learning_rate = check_positive("GradNorm learning rate", learning_rate)
        super().__init__(tasks, lambdas, **common)
        self.alpha = alpha
        self.learning_rate = learning_rate
        active_tasks = [t for t, a in zip(self.tasks, self.active) if a]
        shared = last_shared_layer(network, active_tasks, layer) if network is not None else None
        self.shared_layer = None if shared is None else shared.name
        # ids, not the variables: a list of variables would make them this layer's own
        if shared is not None:
            self._shared_ids = frozenset(id(v) for v in shared.trainable_variables)
        elif network is not None:
            self._shared_ids = frozenset(id(v) for v in network.trainable_variables)
        else:
            self._shared_ids = None  # every variable
        self._indices = None
        self.weights_var = self.add_weight(
            name="gradnorm_weights",
            shape=(self.num_tasks,),
            trainable=False,
            aggregation="mean",
            initializer=keras.initializers.Constant(self.active),
        )
        self.initial_losses = self.add_weight(
            name="gradnorm_initial_losses",
            shape=(self.num_tasks,),
            trainable=False,
            aggregation="mean",
            initializer="zeros",
        )

    def task_weights(self, training=True):
        return ops.convert_to_tensor(self.weights_var)

    def shared_indices(self, variables):
        """Indices into `variables` of the shared weights the norms are taken on."""
        if self._indices is None:
            ids = self._shared_ids
            indices = [i for i, v in enumerate(variables) if ids is None or id(v) in ids]
            if not indices:
                raise ConfigError("GradNorm found no trainable shared weights in the network")
            self._indices = indices
        return self._indices

    def combine_gradients(self, gradients, task_losses, present):
        grads = gradients.objective()  # with this step's weights, before the update
        indices = self.shared_indices(gradients.variables)
        norms = ops.stack([gradients.task_norm(t, indices) for t in range(self.num_tasks)])
        self.update(task_losses, present, norms)
        return grads

    def update(self, task_losses, present, norms):
        """One GradNorm step on the weights, from the step's `[T]` task losses,
        presence mask and gradient norms `||grad_W L_t||`."""
        weights = ops.cast(ops.convert_to_tensor(self.weights_var), "float32")
        old_initial = ops.convert_to_tensor(self.initial_losses)
        new_weights, initial = gradnorm_step(
            weights,
            ops.cast(old_initial, "float32"),
            task_losses,
            norms,
            ops.convert_to_tensor(self.active) * present,
            self.active,
            alpha=self.alpha,
            learning_rate=self.learning_rate,
        )
        self.weights_var.assign(new_weights)
        self.initial_losses.assign(initial)


def gradnorm_step(
    weights, initial_losses, losses, norms, mask, active=None, alpha=1.5, learning_rate=0.025, min_weight=1e-3
):
    """One plain gradient-descent step of GradNorm on the task weights.

    With `n_t = ||grad_W L_t||` the norm of the gradient of the *unweighted*
    task loss w.r.t. the shared layer's weights `W`, over the tasks `t` in
    `mask`:

    ```
    r_t = L_t / L_t(0)                        (loss ratio; 1 until L_t(0) is known)
    target_t = mean_k(w_k n_k) * (r_t / mean_k r_k) ** alpha      (held constant)
    L_grad = sum_t | w_t n_t - target_t |
    w_t <- w_t - lr * sign(w_t n_t - target_t) * n_t             (= w_t - lr dL_grad/dw_t)
    w_t <- max(w_t, min_weight) * active_t
    w_t <- A * w_t / sum_k w_k                (A = number of active tasks)
    ```

    Tasks outside `mask` (absent from the batch) count as `n_t = 0` and keep
    their weight except for the renormalisation. `L_t(0)` is set to `L_t`
    on the first step a task is in `mask`. If a norm or loss is not finite,
    nothing changes.

    Args:
        weights: `[T]` float32, the current task weights.
        initial_losses: `[T]` float32, `L_t(0)`, 0 where not yet known.
        losses: `[T]` float32, the task losses of the step.
        norms: `[T]` float32, the gradient norms `n_t`.
        mask: `[T]`, 1.0 for the tasks that take part in this step.
        active: `[T]` NumPy array, 0.0 for removed tasks (lambda 0);
            defaults to ones.
        alpha: float. The restoring-force strength. Defaults to `1.5`.
        learning_rate: float. Step size on the weights. Defaults to `0.025`
            (the paper's value).
        min_weight: float. Floor applied before renormalising, so weights
            stay positive. Defaults to `1e-3`.

    Returns:
        `(new_weights, new_initial_losses)`, both `[T]`.

    References:
        - [Chen et al., 2018](https://arxiv.org/abs/1711.02257)
          (GradNorm: Gradient Normalization for Adaptive Loss Balancing).
    """
    num_tasks = int(ops.shape(weights)[0])
    active = np.ones([num_tasks], "float32") if active is None else np.asarray(active, "float32")
    num_active = float(active.sum())
    active = ops.convert_to_tensor(active)
    losses = ops.stop_gradient(losses)
    norms = ops.stop_gradient(norms) * mask
    initial = ops.where(
        initial_losses > 0, initial_losses, ops.where(mask > 0, losses, ops.zeros_like(losses))
    )
    ok = ops.logical_and(mask > 0, initial > 0)
    ratios = ops.where(ok, losses / ops.where(initial > 0, initial, ops.ones_like(initial)), ops.ones_like(losses))
    count = ops.maximum(ops.sum(mask), 1.0)
    mean_norm = ops.sum(weights * norms) / count
    mean_ratio = ops.sum(ratios * mask) / count
    relative = ratios / ops.where(mean_ratio > 0, mean_ratio, ops.ones_like(mean_ratio))
    targets = mean_norm * relative**alpha
    updated = weights - learning_rate * ops.sign(weights * norms - targets) * norms
    updated = ops.maximum(updated, min_weight) * active
    updated = updated * ops.cast(ops.shape(updated)[0], updated.dtype) / ops.sum(updated)
    updated = updated * (num_active / num_tasks)
    finite = ops.logical_and(ops.all(ops.isfinite(norms)), ops.all(ops.isfinite(losses)))
    return ops.where(finite, updated, weights), ops.where(finite, initial, initial_losses)


def last_shared_layer(network, tasks, name=None):
    """The last layer with trainable weights that every task output depends on.

    A layer that runs layers of its own in order (`layers_in_order()`, as
    keras_mtl's `SharedEncoder`: the embeddings, each transformer layer and
    adapter, or a backbone called as a whole) is looked into: the last of
    those with trainable weights is taken (the last transformer layer, or its
    adapter). `name` picks a layer instead, of the network or inside such a
    layer. None if the network is not functional (no dict of outputs) or no
    layer is shared by all tasks.
    """
    if name is not None:
        try:
            return network.get_layer(name)
        except ValueError as e:
            for layer in network.layers:
                for inner in _layers_in_order(layer):
                    if inner.name == name:
                        return inner
            raise ConfigError(f"gradnorm layer {name!r} is not a layer of the network") from e
    try:
        outputs = network.output
    except (AttributeError, ValueError):  # a subclassed model has no symbolic output
        return None
    if not isinstance(outputs, dict) or any(t not in outputs for t in tasks):
        return None
    # A functional model from the network's inputs to one output holds the
    # layers that output depends on.
    ancestors = [
        {id(layer) for layer in keras.Model(network.input, outputs[t], name=f"gradnorm_probe_{t}").layers}
        for t in tasks
    ]
    shared = [
        layer for layer in network.layers if all(id(layer) in a for a in ancestors) and layer.trainable_variables
    ]
    if not shared:
        return None
    inner = [layer for layer in _layers_in_order(shared[-1]) if layer.trainable_variables]
    return inner[-1] if inner else shared[-1]


def _layers_in_order(layer):
    """The layers `layer` runs in order (its `layers_in_order()`), else none."""
    in_order = getattr(layer, "layers_in_order", None)
    return list(in_order()) if callable(in_order) else []
