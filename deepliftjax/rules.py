"""Extending deepliftjax: rules for primitives it does not know, and the pieces to build them.

The table :data:`RULES` maps each JAX ``Primitive`` to its DeepLIFT rule. A rule receives
the interpreter's :class:`Context` and the primitive's operands, where every operand that
depends on the attributed input is a :class:`Pair` (``x`` at the input, ``r`` at the
reference), and returns the result as a Pair whose ``x`` side carries the multipliers in its
VJP. Most primitives need only one of the category helpers:

>>> import jax, jax.numpy as jnp, deepliftjax as dl
>>> from deepliftjax import rules
>>> softsign_p = jax.extend.core.Primitive("softsign_demo")
>>> softsign_p.def_impl(lambda x: x / (1 + jnp.abs(x)))
<function <lambda> at ...>
>>> softsign_p.def_abstract_eval(lambda x: x)
<function <lambda> at ...>
>>> jax.interpreters.ad.defjvp(softsign_p, lambda g, x: g / (1 + jnp.abs(x)) ** 2)
>>> rules.defrescale(softsign_p)      # Rescale (eq. 15): exact for any unary function
>>> c = dl.deeplift(lambda x: softsign_p.bind(x).sum(), 0.0)(jnp.array([1.0, -3.0]))
>>> [round(float(v), 4) for v in c]
[0.5, -0.75]

What the interpreter needs to know about a primitive besides its rule (elementwise, can it
leave the finite numbers, does it only move values, does it interpret a jaxpr, how are its
integer results scored) is declared in the same call, as keywords of :func:`register_rule`
that the helpers pass on; :func:`traits` shows what is recorded:

>>> rules.traits(softsign_p)["elementwise"], rules.traits(softsign_p)["rescale"]
(True, True)
"""

from deepliftjax._interpreter import Context, Options
from deepliftjax._pair import Pair, bind_both
from deepliftjax._registry import RULES, register_rule, traits
from deepliftjax._rulekit import (
    bind_varying,
    custom_multiplier,
    linear_rule,
    rescale_rule,
    secant,
    times,
)
from deepliftjax._rules_control import defcall
from deepliftjax._rules_elementwise import (
    defbilinear,
    definert,
    defmaxmin,
    defrescale,
    defshapley,
)
from deepliftjax._rules_linear import deflinear
from deepliftjax._rules_reduce import defmaxreduction

__all__ = [
    "RULES",
    "Context",
    "Options",
    "Pair",
    "bind_both",
    "bind_varying",
    "custom_multiplier",
    "defbilinear",
    "defcall",
    "definert",
    "deflinear",
    "defmaxmin",
    "defmaxreduction",
    "defrescale",
    "defshapley",
    "linear_rule",
    "register_rule",
    "rescale_rule",
    "secant",
    "times",
    "traits",
]
