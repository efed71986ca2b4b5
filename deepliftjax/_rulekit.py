"""The pieces every rule is built from; rule families import them, never each other.

* :func:`custom_multiplier`: a function whose VJP is a DeepLIFT multiplier;
* :func:`times`, :func:`safe_div`, :func:`sum_to_shape`: arithmetic for backward passes;
* :func:`secant`: the Rescale multiplier (eq. 15), robust where x ≈ r;
* :func:`bind_varying`: a primitive as a function of one operand, the others held;
* :func:`linear_rule` and :func:`rescale_rule`: the two rules most primitives get.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._pair import Pair, bind_both


# ---- functions whose VJP is a multiplier ------------------------------------------------
def custom_multiplier(
    primal: Callable[..., Any], backward: Callable[[tuple, Any, Any], Sequence[Any]]
) -> Callable[..., Any]:
    """A function equal to ``primal`` whose VJP is ``backward(args, out, cotangent)``.

    ``backward`` returns one cotangent (or ``None`` for zero) per argument. The
    backward pass is ordinary JAX code, so the scores can be differentiated again.
    """

    @jax.custom_vjp
    def fun(*args):
        return primal(*args)

    def fwd(*args):
        out = primal(*args)
        return out, (args, out)

    def bwd(res, g):
        args, out = res
        cts = backward(args, out, g)
        return tuple(
            None if ct is None else sum_to_shape(ct, jnp.shape(a)).astype(jnp.result_type(a))
            for ct, a in zip(cts, args, strict=True)
        )

    fun.defvjp(fwd, bwd)
    return fun


def times(g: jax.Array, m: jax.Array) -> jax.Array:
    """``g * m``, and exactly 0 where ``g`` is 0.

    A position that receives no cotangent contributes nothing, even where its multiplier
    is infinite (a branch not taken that is undefined at the reference: ``log`` at 0).
    """
    return jnp.where(g == 0, jnp.zeros((), jnp.result_type(g, m)), g * m)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros((), jnp.result_type(num, den)), num / jnp.where(zero, 1, den))


def sum_to_shape(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum a cotangent over the axes it was broadcast along (rank-0 literal operands)."""
    if v.shape == tuple(shape):
        return v
    if len(shape) == 0:
        return jnp.sum(v)
    lead = v.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and v.shape[lead + i] != 1
    )
    return jnp.sum(v, axis=axes).reshape(shape)


# ---- Rescale ---------------------------------------------------------------------------


def derivative(h: Callable[[jax.Array], jax.Array], v: jax.Array) -> jax.Array:
    """Elementwise derivative of an elementwise function."""
    return jax.jvp(h, (v,), (jnp.ones_like(v),))[1]


def secant(
    h: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    r: jax.Array,
    y: jax.Array,
    yr: jax.Array,
    smooth: bool,
) -> jax.Array:
    """The Rescale multiplier ``(h(x) - h(r)) / (x - r)`` (eq. 15), robust where x ≈ r.

    For a smooth ``h`` the secant is replaced where ``|x - r| <= sqrt(eps) max(|x|, |r|)``
    by the mean of ``h'`` over ``[r, x]`` by Simpson's rule (the limit of the
    secant, eq. 16; error O(Δx⁴)). For a piecewise ``h`` (kinks, steps) the secant is
    exact for any non-zero Δx, and the derivative at the point is used only where x == r.
    """
    x, r = jnp.broadcast_arrays(x, r)
    wide = jnp.promote_types(x.dtype, jnp.result_type(y))
    x, r, y, yr = (jnp.asarray(v, wide) for v in (x, r, y, yr))  # differences in the wider type
    dx = x - r
    if smooth:
        tol = jnp.sqrt(jnp.finfo(dx.dtype).eps).astype(dx.dtype)
        # relative to the values: below 1, sqrt/log/rsqrt change by orders of magnitude
        # within any fixed width (a floor at 1 broke sqrt from 0 and RMSNorm at 0)
        tiny = jnp.abs(dx) <= tol * jnp.maximum(jnp.abs(x), jnp.abs(r))
    else:
        tiny = dx == 0
    sec = (y - yr) / jnp.where(tiny, jnp.ones_like(dx), dx)
    mid = r + dx / 2
    if smooth:
        xs, rs = jnp.where(tiny, x, mid), jnp.where(tiny, r, mid)
        slope = (derivative(h, xs) + 4 * derivative(h, mid) + derivative(h, rs)) / 6
    else:
        slope = derivative(h, mid)
    # where x == r any finite multiplier is exact (it multiplies Δx = 0); an infinite
    # derivative there (sqrt at 0) would turn the zero differences upstream into NaN
    still = dx == 0
    slope = jnp.where(still & ~jnp.isfinite(slope), jnp.zeros((), slope.dtype), slope)
    # Simpson's rule needs h' at the ends, infinite at a boundary of h's domain (arccosh
    # at 1): there the secant, exact for any non-zero Δx, is used as it is
    exact = (y - yr) / jnp.where(still, jnp.ones_like(dx), dx)
    slope = jnp.where(~still & ~jnp.isfinite(slope) & jnp.isfinite(exact), exact, slope)
    return jnp.where(tiny, slope, sec)


def float_pair_positions(vals: Sequence[Any]) -> list[int]:
    """Positions of the operands that are float pairs (vary with the input)."""
    return [i for i, v in enumerate(vals) if isinstance(v, Pair) and v.is_float]


def bind_varying(prim: Any, consts: Sequence[Any], i: int, params: dict) -> Callable:
    """``u -> prim(consts with u at position i)``: ``prim`` in its operand ``i`` alone."""

    def h(u: Any) -> Any:
        args = list(consts)
        args[i] = u
        return prim.bind(*args, **params)

    return h


def rescale_rule(prim: Any, smooth: bool, ctx: Any, *vals: Any, **params: Any) -> Pair:
    """Rescale (§2.3.4) in the single varying operand; other operands are constants."""
    (i,) = float_pair_positions(vals)
    consts = [v.x if isinstance(v, Pair) else v for v in vals]  # integer pairs: equal sides
    n = len(vals)

    def h_with(v, *cs):
        return bind_varying(prim, cs, i, params)(v)

    yr = bind_varying(prim, [v.r if isinstance(v, Pair) else v for v in vals], i, params)(vals[i].r)

    def primal(x, r, yr, *cs):
        return h_with(x, *cs)

    def backward(args, y, g):
        x, r, yr_, *cs = args
        m = secant(lambda v: h_with(v, *cs), x, r, y, yr_, smooth)
        return (times(g, m), None, None, *([None] * n))

    ya = custom_multiplier(primal, backward)(vals[i].x, vals[i].r, yr, *consts)
    return Pair(ya, yr)


# ---- linear ----------------------------------------------------------------------------


def check_not_integer_pairs(ctx: Any, vals: Sequence[Any], which: str) -> None:
    """Raise when a non-float operand that varies with the input feeds a float result."""
    for v in vals:
        if isinstance(v, Pair) and not v.is_float:
            raise ctx.error(
                f"'{ctx.eqn.primitive.name}' takes {which} that depends on the attributed "
                "input and is integer or boolean, so its effect has no multiplier:",
                "integer and boolean values (indices, masks, comparisons) may depend on the "
                "input only through jnp.where/select; compute indices from constants, or "
                "write a mask m * x as jnp.where(cond, x, 0).",
            )


def linear_rule(prim: Any, ctx: Any, *vals: Any, **params: Any) -> Any:
    """Bind on both sides; autodiff of the actual side is the DeepLIFT multiplier."""
    check_not_integer_pairs(ctx, vals, "an operand (an index, mask or count)")
    return bind_both(prim, vals, params)
