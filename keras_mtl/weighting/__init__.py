"""Loss weighting: how the per-task losses become one training objective.

Each strategy (`train.loss_weighting`) is one module of this package, named
like the strategy, defining one `LossWeighting` subclass registered under
that name (`@register("dwa")`):

    static       sum_t lambda_t L_t with the configured loss_weights
    uncertainty  learned log-variances (Kendall et al., 2018)
    dwa          Dynamic Weight Average (Liu et al., 2019)
    rlw          Random Loss Weighting (Lin et al., 2021)
    gradnorm     GradNorm (Chen et al., 2018); per-task gradients
    pcgrad       PCGrad (Yu et al., 2020); per-task gradients

`names()` lists them without importing Keras (the config validates
`train.loss_weighting` against it); `get_loss_weighting(name, tasks,
lambdas, ...)` builds one. The interface, and how to add a strategy:
docs/loss_weighting.md.
"""

import importlib
import inspect
import pkgutil

from keras_mtl.errors import ConfigError

__all__ = ["DEFAULT", "names", "get_class", "get_loss_weighting"]

DEFAULT = "static"


def names():
    """The strategy names: the default first, then alphabetical.

    A strategy is a module of this package whose name does not start with
    `_`; the list is read from the package directory, not imported.
    """
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return tuple([DEFAULT] + [name for name in found if name != DEFAULT])


def get_class(name):
    """The `LossWeighting` subclass registered as `name` (imports its module).

    Raises:
        ConfigError: no strategy has that name.
    """
    known = names()
    if name not in known:
        raise ConfigError(f"unknown loss weighting {name!r}; expected one of {', '.join(known)}")
    from keras_mtl.weighting._base import REGISTRY

    importlib.import_module(f"{__name__}.{name}")
    if name not in REGISTRY:
        raise ConfigError(f"keras_mtl.weighting.{name} registers no loss weighting named {name!r}")
    return REGISTRY[name]


def get_loss_weighting(name, tasks, lambdas, options=None, **common):
    """Build the strategy `name` for `tasks` with static `lambdas`.

    Args:
        name: a strategy name (`names()`).
        tasks: the task names.
        lambdas: the static lambdas (`loss_weight`), one float >= 0 per task.
        options: dict of the strategy's own options (e.g. `{"temperature":
            2.0}` for `dwa`); an option the strategy does not take is a
            `ConfigError`.
        **common: `seed`, `loss_normalizer`, `network`: passed to every
            strategy (see `LossWeighting`).

    Returns:
        A `LossWeighting` (a Keras layer).
    """
    from keras_mtl.weighting._base import LossWeighting

    cls = get_class(name)
    options = dict(options or {})
    base = set(inspect.signature(LossWeighting.__init__).parameters)
    own = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in base and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(options) - set(own))
    if unknown:
        raise ConfigError(
            f"loss weighting {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(own) or 'none'}"
        )
    return cls(tasks, lambdas, **options, **common)
