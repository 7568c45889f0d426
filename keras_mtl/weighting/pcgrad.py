"""`pcgrad`: projecting conflicting gradients (Yu et al., 2020)."""

import numpy as np
from keras import ops

from keras_mtl.errors import ConfigError
from keras_mtl.weighting._base import register
from keras_mtl.weighting.static import Static


@register("pcgrad")
class PCGrad(Static):
    """The gradients of the `lambda_t L_t` are combined with `pcgrad`
    (conflicting components projected away, then summed); the gradient of
    the regularization losses is added after the projection. The logged
    total is `sum_t lambda_t L_t`, as with `static`.

    A lambda of 0 is refused: PCGrad's point is to keep every task's
    gradient (drop the task instead). Under `tf.distribute` each replica's
    gradients are projected before they are summed across replicas.
    """

    needs_task_gradients = True

    def __init__(self, tasks, lambdas, **common):
        zero = [t for t, lam in zip(tasks, lambdas) if lam == 0]
        if zero:
            raise ConfigError(
                f"loss_weighting 'pcgrad' with loss_weight 0 for task(s) {', '.join(zero)} is contradictory: "
                "PCGrad combines every task's gradient. Remove the task, or give it a positive loss_weight."
            )
        super().__init__(tasks, lambdas, **common)

    def combine_gradients(self, gradients, task_losses, present):
        # d(lambda_t L_t) = lambda_t dL_t
        grads = pcgrad([gradients.task(t, float(self.lambdas[t])) for t in range(self.num_tasks)])
        regularization = gradients.regularization()
        if regularization is None:
            return grads
        return [_add(g, r) for g, r in zip(grads, regularization)]


def _add(grad, extra):
    if extra is None:
        return grad
    if grad is None:
        return ops.convert_to_tensor(extra)
    return grad + ops.cast(ops.convert_to_tensor(extra), grad.dtype)


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
        raise ValueError(f'`reduction` must be "sum" or "mean". Received: reduction={reduction}')
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
    task_grads = [[None if g is None else ops.convert_to_tensor(g) for g in grads] for grads in task_grads]
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
