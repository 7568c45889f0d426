"""`uncertainty`: learned homoscedastic-uncertainty weights (Kendall et al., 2018)."""

import numpy as np
from keras import ops

from keras_mtl import distribute
from keras_mtl.weighting._base import LossWeighting, register


@register("uncertainty")
class Uncertainty(LossWeighting):
    """One trainable log-variance `s_t` per task (0 at the start, weight 1):

        total = sum_t exp(-s_t) L_t + s_t

    The `+ s_t` term keeps the weights `exp(-s_t)` from collapsing to zero.
    This is the widely used simplified form of Kendall et al.'s objective
    (their `1 / (2 sigma^2)` factor and `log sigma` term, rescaled by 2,
    which does not change the minimiser). The trainer's optimizer learns
    `s` with the network (without weight decay).

    With `loss_normalizer="batch"` a task's term is left out on steps
    without its labels, so the `+ s_t` term does not push its weight up
    while it is absent; with `"expected"` every step holds the task in
    expectation, so the term is always in. Removed tasks (lambda 0) have no
    term. Reference: https://arxiv.org/abs/1705.07115
    """

    def __init__(self, tasks, lambdas, **common):
        super().__init__(tasks, lambdas, **common)
        self.log_variances = self.add_weight(
            name="log_variances", shape=(self.num_tasks,), initializer="zeros", trainable=True
        )

    def task_weights(self, training=True):
        return ops.exp(-ops.convert_to_tensor(self.log_variances)) * ops.convert_to_tensor(self.active)

    def total(self, task_losses, present, training=True):
        s = ops.cast(self.log_variances, "float32")
        # The `+ s_t` regulariser is a loss term too: scale it like the
        # losses under tf.distribute (its gradient is summed over replicas).
        terms = ops.exp(-s) * task_losses + s / ops.cast(distribute.replicas_in_sync(), "float32")
        active = ops.convert_to_tensor(self.active)
        keep = active if self.loss_normalizer == "expected" else active * present
        return ops.sum(ops.where(keep > 0, terms, ops.zeros_like(terms)))

    def current_weights(self):
        values = np.exp(-ops.convert_to_numpy(self.log_variances)) * self.active
        return [float(v) for v in values]
