"""Loss-weighting strategies for multi-task training.

The multi-task objective is a weighted sum of per-task losses

    L = sum_t lambda_t * L_t

and the strategies here choose (or learn) the `lambda_t`, or combine the
per-task gradients directly (PCGrad). Every piece is a plain, separately
testable function or layer written with `keras.ops`, so it runs eagerly and
inside a TensorFlow or JAX train step:

- `UncertaintyWeighting`: learned homoscedastic-uncertainty weights
  (Kendall et al., 2018).
- `dwa_weights`: Dynamic Weight Average from the loss history (Liu et al.,
  2019). Plain NumPy, computed once per epoch.
- `random_loss_weights`: Random Loss Weighting (Lin et al., 2021).
- `pcgrad`: projecting conflicting gradients (Yu et al., 2020).
- `gradnorm_loss`, `gradnorm_targets`, `gradnorm_weight_update`,
  `gradnorm_renormalize`: GradNorm (Chen et al., 2018).
"""

import keras
import numpy as np
from keras import ops

__all__ = [
    "UncertaintyWeighting",
    "dwa_weights",
    "random_loss_weights",
    "pcgrad",
    "gradnorm_targets",
    "gradnorm_loss",
    "gradnorm_renormalize",
    "gradnorm_weight_update",
]


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )
    if value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )


def _float_dtype(x, default="float32"):
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return default
    dtype = keras.backend.standardize_dtype(dtype)
    return dtype if keras.backend.is_float_dtype(dtype) else default


def _as_vector(values, dtype):
    """A `[T]` tensor from a tensor or a list of scalar tensors/floats."""
    if isinstance(values, (list, tuple)):
        values = ops.stack(
            [ops.reshape(ops.cast(v, dtype), ()) for v in values]
        )
    return ops.cast(values, dtype)


@keras.saving.register_keras_serializable(package="keras_mtl")
class UncertaintyWeighting(keras.layers.Layer):
    """Learned task weights from homoscedastic uncertainty.

    Holds one trainable log-variance `s_t = log(sigma_t^2)` per task
    (initialised to 0, i.e. weight 1) and combines the per-task losses as

    ```
    total = sum_t exp(-s_t) * L_t + s_t
    ```

    The `+ s_t` term keeps the weights `exp(-s_t)` from collapsing to zero.
    This is the widely used simplified form of Kendall et al.'s objective
    (their `1 / (2 sigma^2)` factor for regression and `log sigma` term,
    rescaled by 2, which does not change the minimiser). Train the layer's
    variable together with the model.

    Under mixed precision give this layer `dtype="float32"` so the losses are
    combined in full precision.

    Args:
        num_tasks: int. The number of tasks.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable` and `dtype`.

    Call arguments:
        task_losses: tensor of shape `[num_tasks]`, or a list of `num_tasks`
            scalar losses.

    Returns:
        The scalar total loss.

    Example:

    ```python
    import numpy as np
    from keras_mtl.weighting import UncertaintyWeighting

    weighting = UncertaintyWeighting(num_tasks=2)
    total = weighting(np.array([0.7, 2.3], dtype="float32"))  # 3.0 at init
    weighting.task_weights  # exp(-s) = [1.0, 1.0] at init
    ```

    References:
        - [Kendall et al., 2018](https://arxiv.org/abs/1705.07115)
          (Multi-Task Learning Using Uncertainty to Weigh Losses).
    """

    def __init__(self, num_tasks, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_tasks", num_tasks)
        self.num_tasks = int(num_tasks)
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(self.num_tasks,),
            initializer="zeros",
            trainable=True,
        )
        self.built = True

    @property
    def task_weights(self):
        """The current task weights `exp(-s_t)`, shape `[num_tasks]`."""
        return ops.exp(-ops.convert_to_tensor(self.log_variances))

    def call(self, task_losses):
        dtype = self.compute_dtype
        losses = _as_vector(task_losses, dtype)
        log_variances = ops.cast(self.log_variances, dtype)
        return ops.sum(ops.exp(-log_variances) * losses + log_variances)

    def compute_output_shape(self, task_losses_shape=None):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks})
        return config


def dwa_weights(loss_history, temperature=2.0, num_tasks=None):
    """Dynamic Weight Average task weights for the next epoch.

    With `L_t(e)` the (average) loss of task `t` in epoch `e`, the weights
    for epoch `e` are

    ```
    r_t(e - 1) = L_t(e - 1) / L_t(e - 2)
    w_t(e) = T * exp(r_t(e - 1) / temp) / sum_k exp(r_k(e - 1) / temp)
    ```

    so the weights sum to the number of tasks `T`, and a task whose loss
    falls more slowly gets more weight. For the first two epochs (fewer
    than two epochs of history) all weights are 1.

    Args:
        loss_history: list of per-epoch lists of floats,
            `loss_history[e][t]` = loss of task `t` in epoch `e`, oldest
            first. Only the last two epochs are used.
        temperature: float. Softmax temperature; larger values give more
            uniform weights. Defaults to `2.0`.
        num_tasks: int. The number of tasks; only needed when
            `loss_history` is empty. Defaults to `None`.

    Returns:
        `np.ndarray` of shape `[T]` (float64).

    References:
        - [Liu et al., 2019](https://arxiv.org/abs/1803.10704)
          (End-to-End Multi-Task Learning with Attention, Sec. 3.3).
    """
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be positive. Received: temperature={temperature}"
        )
    history = [np.asarray(epoch, dtype="float64").reshape(-1) for epoch in loss_history]
    lengths = {len(epoch) for epoch in history}
    if len(lengths) > 1:
        raise ValueError(
            "Every epoch of `loss_history` must have one loss per task. "
            f"Received: loss_history={loss_history}"
        )
    if history:
        count = lengths.pop()
        if num_tasks is not None and num_tasks != count:
            raise ValueError(
                f"`loss_history` has {count} tasks per epoch but "
                f"num_tasks={num_tasks}"
            )
        num_tasks = count
    elif num_tasks is None:
        raise ValueError(
            "`num_tasks` is required when `loss_history` is empty. "
            f"Received: loss_history={loss_history}, num_tasks={num_tasks}"
        )
    _check_positive_int("num_tasks", num_tasks)
    if len(history) < 2:
        return np.ones((num_tasks,), dtype="float64")
    previous, before = history[-1], history[-2]
    if np.any(before <= 0) or not np.all(np.isfinite(history[-1])):
        raise ValueError(
            "DWA needs positive, finite losses. "
            f"Received the last two epochs: {before.tolist()}, "
            f"{previous.tolist()}"
        )
    logits = (previous / before) / temperature
    logits = logits - np.max(logits)
    exp = np.exp(logits)
    return num_tasks * exp / np.sum(exp)


def random_loss_weights(num_tasks, seed=None, dtype="float32"):
    """Random Loss Weighting (RLW): fresh random task weights per step.

    ```
    lambda = softmax(z),   z ~ Normal(0, I_T)
    ```

    The weights are positive and sum to 1; sample new ones every training
    step.

    Args:
        num_tasks: int. The number of tasks `T`.
        seed: `None`, int or `keras.random.SeedGenerator`. The randomness
            source, as in `keras.random.normal`. Inside a jitted train step
            pass a `SeedGenerator` tracked by the model (an int seed gives the
            same sample on every call). Defaults to `None`.
        dtype: string. The dtype of the weights. Defaults to `"float32"`.

    Returns:
        Tensor of shape `[num_tasks]`.

    References:
        - [Lin et al., 2021](https://arxiv.org/abs/2111.10603)
          (Reasonable Effectiveness of Random Weighting: A Litmus Test for
          Multi-Task Learning).
    """
    _check_positive_int("num_tasks", num_tasks)
    samples = keras.random.normal((int(num_tasks),), dtype=dtype, seed=seed)
    return ops.softmax(samples, axis=-1)


def pcgrad(task_grads, seed=None, reduction="sum"):
    """PCGrad: project away conflicting components of task gradients.

    Each task's gradient (all variables flattened into one vector `g_i`) is
    projected onto the normal plane of every other task's gradient `g_j`
    that it conflicts with, visiting the other tasks in turn:

    ```
    g_i' <- g_i
    for j != i:
        if g_i' . g_j < 0:
            g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j
    g = sum_i g_i'
    ```

    Non-conflicting gradients pass unchanged. The combined vector is split
    back into the variables' shapes. Computation is in float32 with
    branch-free `keras.ops`, so it runs inside a TensorFlow or JAX train
    step; each output is cast back to the dtype of the input gradients.

    Args:
        task_grads: list over tasks of lists of gradient tensors,
            `task_grads[t][v]` = gradient of task `t`'s loss w.r.t. variable
            `v`. Every task must list the same variables in the same order.
            `None` entries (a task that does not touch a variable) are
            treated as zeros.
        seed: `None` or int. `None` visits the other tasks in ascending order
            (deterministic). An int shuffles the visiting order per task with
            a NumPy RNG seeded by it (as in the paper); the order is fixed
            when the function is traced, not re-drawn inside a compiled step.
            Defaults to `None`.
        reduction: `"sum"` (as in the paper) or `"mean"` over tasks.
            Defaults to `"sum"`.

    Returns:
        List of combined gradients, one per variable. A variable whose
        gradient is `None` for every task gets `None`.

    References:
        - [Yu et al., 2020](https://arxiv.org/abs/2001.06782)
          (Gradient Surgery for Multi-Task Learning).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(
            f'`reduction` must be "sum" or "mean". Received: reduction={reduction}'
        )
    task_grads = [list(grads) for grads in task_grads]
    num_tasks = len(task_grads)
    if num_tasks == 0:
        raise ValueError(f"`task_grads` is empty. Received: task_grads={task_grads}")
    num_vars = len(task_grads[0])
    if any(len(grads) != num_vars for grads in task_grads):
        raise ValueError(
            "Every task must give one gradient (or None) per variable. "
            f"Received lengths: {[len(grads) for grads in task_grads]}"
        )

    # Convert (e.g. tf.IndexedSlices -> dense) and find each variable's
    # reference shape/dtype from the first task that has a gradient.
    task_grads = [
        [None if g is None else ops.convert_to_tensor(g) for g in grads]
        for grads in task_grads
    ]
    references = []
    for v in range(num_vars):
        present = [grads[v] for grads in task_grads if grads[v] is not None]
        references.append(present[0] if present else None)
    used = [v for v in range(num_vars) if references[v] is not None]
    if not used:
        return [None] * num_vars
    shapes = [tuple(references[v].shape) for v in used]
    sizes = [int(np.prod(shape)) for shape in shapes]

    def flatten(grads):
        parts = []
        for v in used:
            g = grads[v]
            if g is None:
                g = ops.zeros_like(references[v])
            parts.append(ops.reshape(ops.cast(g, "float32"), (-1,)))
        return ops.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    flat = [flatten(grads) for grads in task_grads]
    rng = np.random.default_rng(seed) if seed is not None else None
    combined = None
    for i in range(num_tasks):
        projected = flat[i]
        order = [j for j in range(num_tasks) if j != i]
        if rng is not None:
            order = [order[k] for k in rng.permutation(len(order))]
        for j in order:
            other = flat[j]
            dot = ops.sum(projected * other)
            norm_sq = ops.sum(other * other)
            safe_norm_sq = ops.where(norm_sq > 0, norm_sq, ops.ones_like(norm_sq))
            coef = ops.where(dot < 0, dot / safe_norm_sq, ops.zeros_like(dot))
            projected = projected - coef * other
        combined = projected if combined is None else combined + projected
    if reduction == "mean":
        combined = combined / num_tasks

    outputs = [None] * num_vars
    offset = 0
    for v, shape, size in zip(used, shapes, sizes):
        piece = ops.reshape(combined[offset : offset + size], shape)
        outputs[v] = ops.cast(piece, references[v].dtype)
        offset += size
    return outputs


def gradnorm_targets(weights, task_grad_norms, task_loss_ratios, alpha=1.5):
    """GradNorm target gradient norms (treated as constants).

    ```
    G_t = w_t * ||grad_W L_t||        (norm of the weighted task gradient)
    r_t = (L_t(step) / L_t(0)) / mean_k (L_k(step) / L_k(0))
    target_t = mean_k(G_k) * r_t ** alpha
    ```

    Args:
        weights: tensor `[T]`. The current task weights `w_t`.
        task_grad_norms: tensor `[T]`. `||grad_W L_t||`, the norms of the
            gradients of the *unweighted* task losses w.r.t. the shared last
            layer's weights `W`.
        task_loss_ratios: tensor `[T]`. `L_t(step) / L_t(0)`, the loss
            ratios (normalised by their mean here).
        alpha: float. The restoring-force strength. Defaults to `1.5`.

    Returns:
        Tensor `[T]` of target norms, wrapped in `stop_gradient`.

    References:
        - [Chen et al., 2018](https://arxiv.org/abs/1711.02257)
          (GradNorm: Gradient Normalization for Adaptive Loss Balancing).
    """
    dtype = _float_dtype(weights)
    weights = ops.cast(weights, dtype)
    norms = ops.stop_gradient(ops.cast(task_grad_norms, dtype))
    ratios = ops.stop_gradient(ops.cast(task_loss_ratios, dtype))
    weighted_norms = weights * norms
    relative = ratios / ops.mean(ratios)
    return ops.stop_gradient(ops.mean(weighted_norms) * relative**alpha)


def gradnorm_loss(weights, task_grad_norms, task_loss_ratios, alpha=1.5):
    """The GradNorm objective, to be differentiated w.r.t. the weights.

    ```
    L_grad = sum_t | w_t * ||grad_W L_t|| - target_t |
    ```

    with `target_t` from `gradnorm_targets` held constant. Its gradient
    w.r.t. `w_t` is `sign(w_t n_t - target_t) * n_t` with
    `n_t = ||grad_W L_t||`. After each step on the weights, renormalise them
    with `gradnorm_renormalize` so they sum to `T`.

    Args:
        weights: tensor or variable `[T]`. The task weights `w_t`.
        task_grad_norms: tensor `[T]`. Norms of the gradients of the
            *unweighted* task losses w.r.t. the shared last layer.
        task_loss_ratios: tensor `[T]`. `L_t(step) / L_t(0)`.
        alpha: float. Defaults to `1.5`.

    Returns:
        Scalar tensor.

    References:
        - [Chen et al., 2018](https://arxiv.org/abs/1711.02257)
          (GradNorm: Gradient Normalization for Adaptive Loss Balancing).
    """
    dtype = _float_dtype(weights)
    targets = gradnorm_targets(weights, task_grad_norms, task_loss_ratios, alpha)
    norms = ops.stop_gradient(ops.cast(task_grad_norms, dtype))
    weighted_norms = ops.cast(weights, dtype) * norms
    return ops.sum(ops.abs(weighted_norms - targets))


def gradnorm_renormalize(weights):
    """Rescale the task weights so they sum to the number of tasks.

    ```
    w_t <- T * w_t / sum_k w_k
    ```
    """
    weights = ops.convert_to_tensor(weights)
    num_tasks = ops.cast(ops.shape(weights)[0], weights.dtype)
    return weights * num_tasks / ops.sum(weights)


def gradnorm_weight_update(
    weights,
    task_grad_norms,
    task_loss_ratios,
    alpha=1.5,
    learning_rate=0.025,
    min_weight=1e-3,
):
    """One plain gradient-descent step of GradNorm on the task weights.

    Uses the closed-form gradient of `gradnorm_loss` (targets constant):

    ```
    w_t <- w_t - lr * sign(w_t n_t - target_t) * n_t
    w_t <- max(w_t, min_weight)
    w_t <- T * w_t / sum_k w_k
    ```

    Use this when the weights are not trained by a Keras optimizer; to use
    an optimizer instead, differentiate `gradnorm_loss` and call
    `gradnorm_renormalize` after the step.

    Args:
        weights: tensor `[T]`. The current task weights.
        task_grad_norms: tensor `[T]`. Norms of the gradients of the
            *unweighted* task losses w.r.t. the shared last layer.
        task_loss_ratios: tensor `[T]`. `L_t(step) / L_t(0)`.
        alpha: float. Defaults to `1.5`.
        learning_rate: float. Step size on the weights. Defaults to `0.025`
            (the paper's value).
        min_weight: float. Floor applied before renormalising, so weights
            stay positive. Defaults to `1e-3`.

    Returns:
        Tuple `(new_weights, loss)`: the renormalised weights `[T]` and the
        GradNorm loss at the old weights.

    References:
        - [Chen et al., 2018](https://arxiv.org/abs/1711.02257)
          (GradNorm: Gradient Normalization for Adaptive Loss Balancing).
    """
    dtype = _float_dtype(weights)
    weights = ops.cast(weights, dtype)
    norms = ops.cast(task_grad_norms, dtype)
    targets = gradnorm_targets(weights, norms, task_loss_ratios, alpha)
    differences = weights * norms - targets
    loss = ops.sum(ops.abs(differences))
    updated = weights - learning_rate * ops.sign(differences) * norms
    updated = ops.maximum(updated, ops.cast(min_weight, dtype))
    return gradnorm_renormalize(updated), loss
