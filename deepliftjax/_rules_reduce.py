"""Rules for max-type reductions: ``reduce_max``/``reduce_min`` and max pooling.

The default, ``max_rule="cross"``, is exact: with o = max(x) and o⁰ = max(x⁰), it credits
``max(o, o⁰) − o⁰`` to the input's argmax and ``o − max(o, o⁰)`` to the reference's
argmax, window by window (overlapping windows accumulate). The credit routed to an
element whose Δx is zero is provably zero, so dividing by Δx is safe. ``"paper"`` is
eq. 11 of the paper (the whole Δo to the input's argmax: exact unless that element did not
move) and ``"gradient"`` the ordinary derivative (not exact).

Ties: every max path routes to the *first* maximal element (lowest index in row-major order
within the reduction or window), as torch, Captum, shap and tangermeme do and as JAX's own
``reduce_window`` derivative does; ``jnp.max``'s derivative (which splits ties equally) is
not used. So ``reduce_max``, max pooling of any stride and padding, and the tiled lowering
give the same scores on tied inputs, and match the field's tools on one-hot DNA.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._interpreter import Context, register_rule
from deepliftjax._pair import Pair
from deepliftjax._rulekit import custom_multiplier


def max_reduction_rule(prim: Any, comb: Any, ctx: Context, operand: Pair, **params: Any) -> Pair:
    rule = ctx.options.max_rule
    tiled = TILE and _tiled_window(comb, operand, params)
    if tiled:
        V, P = tiled  # the value by reshape + max, the routing by first maximum
    else:
        V = lambda v: prim.bind(v, **params)  # noqa: E731
        P = _first_of_axes(comb, params) or V
    yr = V(operand.r)
    if rule == "gradient":
        return Pair(P(operand.x), yr)

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
        m = jnp.where(still, grad, credit / jnp.where(still, jnp.ones_like(dx), dx))
        return m, None, None

    return Pair(custom_multiplier(lambda x, r, yr_: V(x), backward)(operand.x, operand.r, yr), yr)


TILE = True
"""Lower max pooling whose windows tile the input to reshape + first-argmax (tests turn it
off to compare with the general lowering)."""


def _first(comb: Any, v: jax.Array) -> jax.Array:
    """max (min) over the last axis, whose derivative goes to the first maximal element."""
    arg = jnp.argmax if comb is jnp.maximum else jnp.argmin
    k = arg(v, axis=-1)
    mask = jax.lax.broadcasted_iota(jnp.int32, v.shape, v.ndim - 1) == k[..., None]
    return jnp.sum(jnp.where(mask, v, jnp.zeros((), v.dtype)), axis=-1)


def _first_of_axes(comb: Any, params: dict[str, Any]) -> Any:
    """``reduce_max`` over ``axes`` with ties routed to the first element."""
    axes = params.get("axes")
    if axes is None:
        return None

    def reduce(v):
        axes_ = sorted(a % v.ndim for a in axes)
        keep = [a for a in range(v.ndim) if a not in axes_]
        vt = jnp.transpose(v, keep + axes_).reshape([v.shape[a] for a in keep] + [-1])
        return _first(comb, vt)

    return reduce


def _tiled_window(comb: Any, operand: Pair, params: dict[str, Any]) -> Any:
    """Windows that tile the input (stride = window, no padding or dilation) as reshape + max.

    Its VJP is a mask instead of ``select_and_scatter_add``, several times faster on CPU;
    the values, and the first-maximum tie convention, are the same.
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
    n_dims = len(dims)
    outer = list(range(0, 2 * n_dims, 2))
    inner = list(range(1, 2 * n_dims, 2))
    reduce = jnp.max if comb is jnp.maximum else jnp.min

    def windows(v):
        v = v[tuple(slice(0, n * w) for n, w in zip(counts, dims, strict=True))]
        return jnp.transpose(v.reshape(split), outer + inner).reshape(counts + [-1])

    return (lambda v: reduce(windows(v), axis=-1)), (lambda v: _first(comb, windows(v)))


def defmaxreduction(prim: Any, comb: Any) -> None:
    """Register the max-type reduction rule (``comb`` is ``jnp.maximum`` or ``jnp.minimum``)."""
    register_rule(prim, partial(max_reduction_rule, prim, comb))


# ---- reductions -------------------------------------------------------------------------
defmaxreduction(primitive("reduce_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_min_p"), jnp.minimum)

# ---- pooling windows --------------------------------------------------------------------
defmaxreduction(primitive("reduce_window_max_p"), jnp.maximum)
defmaxreduction(primitive("reduce_window_min_p"), jnp.minimum)
