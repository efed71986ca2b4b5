"""What ``jax.lax.stop_gradient`` means to DeepLIFT: the ``stop_gradient=`` option.

A ``stop_gradient`` equation in a jaxpr (``b = stop_gradient a``) is the identity on values
with a zero derivative. DeepLIFT has two readings of it:

``"pass"`` (default)
    The stopped value is an ordinary value of the function: its change between input and
    reference is attributed like any other, so multipliers pass through it. Scores sum to
    ``f(x) - f(ref)`` for every ``f``.

``"constant"``
    The stopped value is a constant of each example: it is evaluated at the *input* and
    that value is used on the reference side too, and no multiplier flows into it. Scores
    then sum to ``f(x) - f~(ref)``, where ``f~`` is ``f`` with every stopped value frozen
    at its value at ``x``. For a target ``sum(stop_gradient(w(z)) * z)`` (the profile
    target of chrombpnet and bpnet-lite, ``w`` the softmax of the mean-normalised logits
    ``z``) that is ``sum(w(z(x)) * (z(x) - z(ref)))``: the weights held fixed per example,
    the reading under which the gradient of that target is taken. Where ``f`` does not
    depend on the stopped value's level (the max shift inside ``jax.nn.softmax`` and
    ``logsumexp``) ``f~ = f`` and the scores still sum to ``f(x) - f(ref)``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from deepliftjax import deeplift
  >>> f = lambda x: jnp.sum(jax.lax.stop_gradient(jnp.tanh(x)) * x)
  >>> x, r = jnp.array([1.0, -2.0]), jnp.zeros(2)
  >>> c = deeplift(f, r, stop_gradient="constant")(x)
  >>> bool(jnp.allclose(c, jnp.tanh(x) * (x - r)))
  True
"""

from __future__ import annotations

from typing import Any

import jax

from deepliftjax._compat import primitive
from deepliftjax._pair import Pair
from deepliftjax._registry import register_rule

STOP_GRADIENT_MODES = ("pass", "constant")


def stop_gradient_rule(ctx: Any, operand: Any, **params: Any) -> Any:
    """The rule for ``stop_gradient_p`` under ``ctx.options.stop_gradient``."""
    mode = getattr(ctx.options, "stop_gradient", "pass")
    if mode == "constant" and operand.is_float:
        # a plain value: computed once from the input, the same on both sides
        return jax.lax.stop_gradient(operand.x)
    # "pass": every difference must be attributed, or the sum breaks.
    return Pair(operand.x, operand.r)


# elementwise: a float pair's provenance and accounted difference pass through it unchanged
register_rule(primitive("stop_gradient_p"), stop_gradient_rule, elementwise=True)
