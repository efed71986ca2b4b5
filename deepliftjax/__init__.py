"""deepliftjax: DeepLIFT as a JAX function transform.

>>> import jax, jax.numpy as jnp, deepliftjax
>>> f = lambda x: jnp.tanh(x).sum()
>>> c = deepliftjax.deeplift(f, 0.0)(jnp.array([1.0, -2.0]))
>>> bool(jnp.isclose(c.sum(), f(jnp.array([1.0, -2.0])) - f(jnp.zeros(2))))
True
"""

from deepliftjax import genomics, plot
from deepliftjax._api import deeplift, deeplift_vjp
from deepliftjax._checks import (
    ConditioningWarning,
    SummationCheck,
    check_finite,
    summation_check,
    summation_residual,
)
from deepliftjax._errors import DeepLiftError
from deepliftjax._hypothetical import (
    export_modisco,
    hypothetical_from_multipliers,
    project_hypothetical,
)
from deepliftjax._interpreter import RULES, Context, Options, Pair, register_rule
from deepliftjax._methods import (
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    lrp_epsilon,
)
from deepliftjax._references import ShapScores, check_residuals, deeplift_shap
from deepliftjax._rules_control import defcall
from deepliftjax._rules_elementwise import (
    custom_multiplier,
    defbilinear,
    definert,
    defmaxmin,
    defrescale,
    defshapley,
    secant,
)
from deepliftjax._rules_linear import deflinear
from deepliftjax._rules_reduce import defmaxreduction
from deepliftjax._runner import Attribution, attribute
from deepliftjax._shuffle import dinuc_shuffle, dinucleotide_counts, shuffle

__version__ = "0.1.0"

__all__ = [
    "check_finite",
    "summation_check",
    "summation_residual",
    "SummationCheck",
    "ConditioningWarning",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "lrp_epsilon",
    "Attribution",
    "ShapScores",
    "attribute",
    "check_residuals",
    "deeplift_shap",
    "dinuc_shuffle",
    "dinucleotide_counts",
    "export_modisco",
    "genomics",
    "plot",
    "hypothetical_from_multipliers",
    "project_hypothetical",
    "shuffle",
    "RULES",
    "Context",
    "DeepLiftError",
    "Options",
    "Pair",
    "custom_multiplier",
    "defbilinear",
    "defcall",
    "definert",
    "deflinear",
    "defmaxmin",
    "defmaxreduction",
    "defrescale",
    "defshapley",
    "deeplift",
    "deeplift_vjp",
    "register_rule",
    "secant",
]
