"""deepliftjax: DeepLIFT as a JAX function transform.

>>> import jax, jax.numpy as jnp, deepliftjax
>>> f = lambda x: jnp.tanh(x).sum()
>>> c = deepliftjax.deeplift(f, 0.0)(jnp.array([1.0, -2.0]))
>>> bool(jnp.isclose(c.sum(), f(jnp.array([1.0, -2.0])) - f(jnp.zeros(2))))
True

The user API is this namespace. Rule authoring (the rule table, :class:`~rules.Pair`,
``defrescale`` and the other category helpers) is :mod:`deepliftjax.rules`; the genomics
experiment and models are :mod:`deepliftjax.genomics`, plots :mod:`deepliftjax.plot`
(both loaded on first use).
"""

import importlib as _importlib

from deepliftjax._api import deeplift, deeplift_vjp
from deepliftjax._checks import (
    ConditioningWarning,
    SummationCheck,
    check_finite,
    summation_check,
    summation_residual,
)
from deepliftjax._errors import DeepLiftError
from deepliftjax._guard import SummationWarning
from deepliftjax._hypothetical import (
    check_onehot,
    export_modisco,
    hypothetical_from_multipliers,
    project_hypothetical,
)
from deepliftjax._methods import (
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    lrp_epsilon,
)
from deepliftjax._rulemap import RuleSite
from deepliftjax._runner import Attribution, attribute
from deepliftjax._shap import ShapScores, check_residuals, deeplift_shap
from deepliftjax._shuffle import dinuc_shuffle, dinucleotide_counts, shuffle
from deepliftjax._version import __version__

_SUBMODULES = ("genomics", "plot", "rules")

__all__ = [
    "deeplift",
    "deeplift_vjp",
    "deeplift_shap",
    "ShapScores",
    "RuleSite",
    "attribute",
    "Attribution",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "lrp_epsilon",
    "summation_check",
    "summation_residual",
    "SummationCheck",
    "ConditioningWarning",
    "SummationWarning",
    "check_finite",
    "check_onehot",
    "check_residuals",
    "dinuc_shuffle",
    "dinucleotide_counts",
    "shuffle",
    "hypothetical_from_multipliers",
    "project_hypothetical",
    "export_modisco",
    "DeepLiftError",
    "__version__",
]


def __getattr__(name: str):
    # genomics (optax, the experiment) and plot (matplotlib) load on first use only
    if name in _SUBMODULES:
        return _importlib.import_module(f"deepliftjax.{name}")
    raise AttributeError(f"module 'deepliftjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])
