"""Rules for max-type reductions: ``reduce_max``/``reduce_min`` and max pooling.

The default, ``max_rule="cross"``, is exact: with o = max(x) and o⁰ = max(x⁰), it credits
``max(o, o⁰) − o⁰`` to the input's argmax and ``o − max(o, o⁰)`` to the reference's
argmax, window by window (overlapping windows accumulate). The credit routed to an
element whose Δx is zero is provably zero, so dividing by Δx is safe. ``"paper"`` is
eq. 11 of the paper (the whole Δo to the input's argmax: exact unless that element did not
move) and ``"gradient"`` the ordinary derivative (not exact).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._interpreter import Context, Pair, bind_both, register_rule
from deepliftjax._rules_elementwise import custom_multiplier


def max_reduction_rule(prim: Any, comb: Any, ctx: Context, operand: Pair, **params: Any) -> Pair:
    rule = ctx.options.max_rule
    if rule == "gradient":
        return bind_both(prim, [operand], params)

    def P(v):
        return prim.bind(v, **params)

    yr = P(operand.r)

    def backward(args, y, g):
        x, r, yr_ = args
        route_x = jax.vjp(P, x)[1]
        if rule == "paper":
            (credit,) = route_x(g * (y - yr_))
        else:
            top = comb(y, yr_)
            (cx,) = route_x(g * (top - yr_))
            (cr,) = jax.vjp(P, r)[1](g * (y - top))
            credit = cx + cr
        dx = x - r
        still = dx == 0
        (grad,) = route_x(g)
        return jnp.where(still, grad, credit / jnp.where(still, jnp.ones_like(dx), dx)), None, None

    return Pair(custom_multiplier(lambda x, r, yr_: P(x), backward)(operand.x, operand.r, yr), yr)


def defmaxreduction(prim: Any, comb: Any) -> None:
    register_rule(
        prim, lambda ctx, operand, **params: max_reduction_rule(prim, comb, ctx, operand, **params)
    )


# ---- reductions -------------------------------------------------------------------------
defmaxreduction(primitive("reduce_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_min_p"), jnp.minimum)

# ---- pooling windows --------------------------------------------------------------------
defmaxreduction(primitive("reduce_window_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_window_min_p"), jnp.minimum)
