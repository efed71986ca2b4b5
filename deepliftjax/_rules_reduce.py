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

Infinite values (``-inf`` masks, ``log`` at 0): an element at the same infinity at both ends
does not move and gets multiplier 0, so a masked element contributes nothing whatever moves
upstream of it (``x + mask``), and a fully masked window credits nothing. An element with
one infinite end that takes a finite credit (the input's argmax arriving from ``-inf``)
passes it through the value it was computed from elementwise (``_discrete``'s provenance);
without one the credit is left out and the summation guard reports the example. Where the
window's maximum itself changes by an infinite amount no finite exact credit exists: 0.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._discrete import ensure_score, with_provenance
from deepliftjax._interpreter import Context, register_rule
from deepliftjax._pair import Pair
from deepliftjax._rulekit import custom_multiplier, safe_div, times


def max_reduction_rule(prim: Any, comb: Any, ctx: Context, operand: Pair, **params: Any) -> Pair:
    """The max-type reduction rules; infinite values as limits (see the module notes)."""
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
    score = _jump_score(ctx, operand)
    extra = () if score is None else (score.x, score.r)

    def backward(args, y, g):
        x, r, yr_, *s = args
        route_x = jax.vjp(P, x)[1]
        if rule == "paper":
            (credit,) = route_x(times(g, _change(yr_, y)))
        else:
            top = comb(y, yr_)
            (cx,) = route_x(times(g, _change(yr_, top)))
            (cr,) = jax.vjp(P, r)[1](times(g, _change(top, y)))
            credit = cx + cr
        still = x == r  # also an element at the same infinity at both ends (a mask)
        dx = x - r
        jump = ~still & ~jnp.isfinite(dx)
        (grad,) = route_x(g)
        zero = jnp.zeros((), grad.dtype)
        moving = credit / jnp.where(still | jump, jnp.ones_like(dx), dx)
        m = jnp.where(still, jnp.where(jnp.isfinite(x), grad, zero), jnp.where(jump, zero, moving))
        if score is None:
            return m, None, None
        j = jnp.where(jump & jnp.isfinite(credit), credit, zero)
        return m, None, None, safe_div(j, (s[0] - s[1]).astype(j.dtype)), None

    ya = custom_multiplier(lambda x, r, yr_, *s: V(x), backward)(operand.x, operand.r, yr, *extra)
    return Pair(ya, yr)


def _change(start: jax.Array, end: jax.Array) -> jax.Array:
    """``end - start``, 0 where they are equal (the same infinity: no change, not NaN)."""
    return jnp.where(start == end, jnp.zeros((), jnp.result_type(end)), end - start)


def _jump_score(ctx: Context, v: Pair) -> Pair | None:
    """The score through which an element whose change is infinite (``log`` of a reference
    at 0) gets its finite credit: the value it was computed from elementwise (its
    provenance), else the input distance. None where ``v`` has no provenance (as for
    ``maximum``: the summation guard reports what is then not credited)."""
    dist = ctx.options.distance
    if dist is None or v.s is None:
        return None
    shape = jnp.shape(v.x)
    moved = jax.lax.stop_gradient(~jnp.isfinite(v.x - v.r) & (v.x != v.r))
    out = Pair(jnp.zeros(shape, bool), jnp.zeros(shape, bool))
    return ensure_score(ctx, out, with_provenance(ctx, v), moved).s


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
