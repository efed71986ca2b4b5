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
    P = _tiled_window(comb, operand, params) or (lambda v: prim.bind(v, **params))
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


def _tiled_window(comb: Any, operand: Pair, params: dict[str, Any]) -> Any:
    """Windows that tile the input (stride = window, no padding or dilation) as reshape + max.

    Its VJP is a mask instead of ``select_and_scatter_add``, several times faster on CPU;
    the values, and so the rule, are the same.
    """
    dims = params.get("window_dimensions")
    if dims is None:
        return None
    ones = (1,) * len(dims)
    if (
        tuple(params.get("window_strides", ())) != tuple(dims)
        or any(lo or hi for lo, hi in params.get("padding", ()))
        or tuple(params.get("base_dilation", ones)) != ones
        or tuple(params.get("window_dilation", ones)) != ones
    ):
        return None
    shape = jnp.shape(operand.x)
    counts = [s // w for s, w in zip(shape, dims, strict=True)]
    split = [d for n, w in zip(counts, dims, strict=True) for d in (n, w)]
    axes = tuple(range(1, 2 * len(dims), 2))
    reduce = jnp.max if comb is jnp.maximum else jnp.min

    def tiled(v):
        v = v[tuple(slice(0, n * w) for n, w in zip(counts, dims, strict=True))]
        return reduce(v.reshape(split), axis=axes)

    return tiled


def defmaxreduction(prim: Any, comb: Any) -> None:
    """Register the max-type reduction rule (``comb`` is ``jnp.maximum`` or ``jnp.minimum``)."""
    register_rule(
        prim, lambda ctx, operand, **params: max_reduction_rule(prim, comb, ctx, operand, **params)
    )


# ---- reductions -------------------------------------------------------------------------
defmaxreduction(primitive("reduce_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_min_p"), jnp.minimum)

# ---- pooling windows --------------------------------------------------------------------
defmaxreduction(primitive("reduce_window_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_window_min_p"), jnp.minimum)
