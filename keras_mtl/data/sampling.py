"""Task sampling: how often each task's data is drawn when tasks are mixed.

With n_t training examples for task t, the probability of drawing task t is

* proportional: p_t = n_t / sum_s n_s (the default; one pass over the data)
* uniform:      p_t = 1 / T
* temperature:  p_t ∝ n_t^(1/tau) (T5, mT5: tau=1 is proportional, large tau
  tends to uniform), `train.temperature` = tau
* annealed:     p_t ∝ n_t^alpha, alpha = 1 - 0.8 (e - 1) / (E - 1) at epoch e
  of E (Stickland & Murray 2019): proportional first, flatter later.
"""

import numpy as np

STRATEGIES = ("proportional", "uniform", "temperature", "annealed")


def task_probabilities(sizes, strategy="proportional", temperature=2.0, epoch=1, epochs=1):
    """Sampling probabilities of the tasks for one epoch (1-based).

    Args:
        sizes: sequence of int. Training examples per task, in task order.
        strategy: str. One of `STRATEGIES`.
        temperature: float. tau of the temperature strategy, > 0.
        epoch, epochs: int. Current (1-based) and total epochs (annealed).

    Returns:
        float64 array of the probabilities, summing to 1.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 1 or len(sizes) == 0 or np.any(sizes <= 0):
        raise ValueError(f"sizes must be positive counts, one per task. Received: sizes={sizes.tolist()}")
    if strategy == "proportional":
        weights = sizes
    elif strategy == "uniform":
        weights = np.ones_like(sizes)
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
        weights = sizes ** (1.0 / temperature)
    elif strategy == "annealed":
        alpha = 1.0 - 0.8 * (epoch - 1) / (epochs - 1) if epochs > 1 else 1.0
        weights = sizes**alpha
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return weights / weights.sum()


def probability_schedule(sizes, strategy, temperature, epochs):
    """[epochs, tasks] float32 table of the per-epoch probabilities."""
    return np.stack(
        [task_probabilities(sizes, strategy, temperature, e, epochs) for e in range(1, epochs + 1)]
    ).astype(np.float32)


def training_schedule(split, tasks, train_cfg):
    """The training stream's [epochs, tasks with examples] sampling
    probabilities for an encoded training split (`train_cfg.epochs` epochs)."""
    sizes = [len(split.indices(t.name)) for t in tasks]
    return probability_schedule([s for s in sizes if s > 0], train_cfg.sampling, train_cfg.temperature, train_cfg.epochs)
