"""`rlw`: Random Loss Weighting (Lin et al., 2021)."""

import keras
import numpy as np
from keras import ops

from keras_mtl.weighting._base import LossWeighting, register


@register("rlw")
class RLW(LossWeighting):
    """`sum_t w_t L_t` with `w = softmax(z)`, `z ~ N(0, I)` drawn afresh every
    training step (`random_loss_weights` with a tracked
    `keras.random.SeedGenerator`, so it works inside a jitted step). The
    weights sum to 1. Evaluation uses their expectation, `1 / T`; removed
    tasks (lambda 0) get 0 and the others are drawn over the remaining ones.
    `current_weights` are the last drawn ones (1/T before the first step).
    """

    def __init__(self, tasks, lambdas, **common):
        super().__init__(tasks, lambdas, **common)
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="rlw_seed")
        self.last_weights = self.add_weight(
            name="rlw_weights",
            shape=(self.num_tasks,),
            trainable=False,
            aggregation="mean",
            initializer=keras.initializers.Constant(self.active / self.num_active),
        )

    def task_weights(self, training=True):
        if not training:
            return self.active / self.num_active
        weights = self._sample()
        self.last_weights.assign(weights)
        return weights

    def current_weights(self):
        return [float(v) for v in ops.convert_to_numpy(self.last_weights)]

    def _sample(self):
        if self.num_active == 1:
            return ops.convert_to_tensor(self.active)
        sampled = random_loss_weights(self.num_active, seed=self.seed_generator)
        if self.num_active == self.num_tasks:
            return sampled
        parts, k = [], 0
        for a in self.active:
            if a:
                parts.append(sampled[k])
                k += 1
            else:
                parts.append(ops.zeros((), sampled.dtype))
        return ops.stack(parts)


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
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive integer. Received: num_tasks={num_tasks}")
    samples = keras.random.normal((int(num_tasks),), dtype=dtype, seed=seed)
    return ops.softmax(samples, axis=-1)
