"""`dwa`: Dynamic Weight Average (Liu et al., 2019)."""

import math

import keras
import numpy as np
from keras import ops

from keras_mtl.weighting._base import LossWeighting, check_positive, register


@register("dwa")
class DWA(LossWeighting):
    """`sum_t w_t L_t`, `w` set at every epoch end by `dwa_weights` from the
    per-epoch mean task losses: all ones for the first two epochs, then
    weights that sum to the number of (active) tasks.

    If a loss of the last two epochs is missing, non-positive or not finite
    (no labels that epoch, NaN), the weights stay as they are until two
    clean epochs follow.

    Args:
        temperature: float > 0. The softmax temperature.
    """

    def __init__(self, tasks, lambdas, *, temperature=2.0, **common):
        temperature = check_positive("DWA temperature", temperature)
        super().__init__(tasks, lambdas, **common)
        self.temperature = temperature
        self.weights_var = self.add_weight(
            name="dwa_weights",
            shape=(self.num_tasks,),
            trainable=False,
            initializer=keras.initializers.Constant(self.active),
        )

    def task_weights(self, training=True):
        return ops.convert_to_tensor(self.weights_var)

    def end_epoch(self, loss_history):
        active = [i for i, a in enumerate(self.active) if a]
        loss_history = [[epoch[i] for i in active] for epoch in loss_history]
        last = loss_history[-2:]
        if len(last) == 2 and not all(math.isfinite(v) and v > 0 for epoch in last for v in epoch):
            return
        values = dwa_weights(loss_history, self.temperature, num_tasks=self.num_active)
        full = np.zeros([self.num_tasks], "float32")
        full[self.active > 0] = values
        self.weights_var.assign(full)


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
        raise ValueError(f"`temperature` must be positive. Received: temperature={temperature}")
    history = [np.asarray(epoch, dtype="float64").reshape(-1) for epoch in loss_history]
    lengths = {len(epoch) for epoch in history}
    if len(lengths) > 1:
        raise ValueError(
            f"Every epoch of `loss_history` must have one loss per task. Received: loss_history={loss_history}"
        )
    if history:
        count = lengths.pop()
        if num_tasks is not None and num_tasks != count:
            raise ValueError(f"`loss_history` has {count} tasks per epoch but num_tasks={num_tasks}")
        num_tasks = count
    elif num_tasks is None:
        raise ValueError(
            "`num_tasks` is required when `loss_history` is empty. "
            f"Received: loss_history={loss_history}, num_tasks={num_tasks}"
        )
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive integer. Received: num_tasks={num_tasks}")
    if len(history) < 2:
        return np.ones((num_tasks,), dtype="float64")
    previous, before = history[-1], history[-2]
    if np.any(before <= 0) or not np.all(np.isfinite(history[-1])):
        raise ValueError(
            "DWA needs positive, finite losses. "
            f"Received the last two epochs: {before.tolist()}, {previous.tolist()}"
        )
    logits = (previous / before) / temperature
    logits = logits - np.max(logits)
    exp = np.exp(logits)
    return num_tasks * exp / np.sum(exp)
