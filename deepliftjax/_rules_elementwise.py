"""Rules for elementwise primitives: Rescale, products, max/min, two-input Shapley, select.

Every rule here is exact: the multipliers times the differences from reference sum
to the difference of the output (eq. 1), up to floating point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._custom import custom_multiplier, sum_to_shape, times  # noqa: F401
from deepliftjax._discrete import discrete_output_rule
from deepliftjax._interpreter import Context, Pair, register_rule
from deepliftjax._rules_linear import linear_rule

# ---- helpers ----------------------------------------------------------------------------


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
    return jnp.where(tiny, slope, sec)


def _float_pair_positions(vals: Sequence[Any]) -> list[int]:
    return [i for i, v in enumerate(vals) if isinstance(v, Pair) and v.is_float]


def _with(vals: Sequence[Any], i: int, v: Any) -> list[Any]:
    out = list(vals)
    out[i] = v
    return out


# ---- Rescale: one varying operand -------------------------------------------------------


def rescale_rule(prim: Any, smooth: bool, ctx: Context, *vals: Any, **params: Any) -> Pair:
    """Rescale (§2.3.4) in the single varying operand; other operands are constants."""
    (i,) = _float_pair_positions(vals)
    consts = [v.x if isinstance(v, Pair) else v for v in vals]  # integer pairs: equal sides
    n = len(vals)

    def h_with(v, *cs):
        return prim.bind(*_with(cs, i, v), **params)

    yr = prim.bind(
        *_with([v.r if isinstance(v, Pair) else v for v in vals], i, vals[i].r), **params
    )

    def primal(x, r, yr, *cs):
        return h_with(x, *cs)

    def backward(args, y, g):
        x, r, yr_, *cs = args
        m = secant(lambda v: h_with(v, *cs), x, r, y, yr_, smooth)
        return (times(g, m), None, None, *([None] * n))

    ya = custom_multiplier(primal, backward)(vals[i].x, vals[i].r, yr, *consts)
    return Pair(ya, yr)


RESCALE_PRIMS: dict[Any, bool] = {}
"""Primitives registered with :func:`defrescale`, mapped to whether they are smooth."""


def defrescale(prim: Any, *, smooth: bool = True) -> None:
    """Register Rescale for a unary elementwise ``prim`` (or one with constant extras)."""
    if prim is not None:
        RESCALE_PRIMS[prim] = smooth

    def rule(ctx, *vals, **params):
        if len(_float_pair_positions(vals)) > 1:
            if len(vals) == 2:
                return shapley_rule(prim, smooth, ctx, *vals, **params)
            raise ctx.error(
                f"'{prim.name}' has several operands that depend on the attributed input:",
                "only one of its operands may vary; register a rule for it.",
            )
        return rescale_rule(prim, smooth, ctx, *vals, **params)

    register_rule(prim, rule)


# ---- two varying operands: Shapley value of the two players ----------------------------


def shapley_rule(prim: Any, smooth: bool, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """Exact two-input rule: each operand gets its Shapley value over {a, b}.

    ``C_a = ½[(f(a, b⁰) − f(a⁰, b⁰)) + (f(a, b) − f(a⁰, b))]`` and symmetrically for b;
    multipliers are those divided by Δa (Δb), computed as robust secants.
    """
    if not (isinstance(a, Pair) and isinstance(b, Pair)):
        return rescale_rule(prim, smooth, ctx, a, b, **params)

    def f(u, v):
        return prim.bind(u, v, **params)

    yr = f(a.r, b.r)

    def backward(args, y, g):
        ax, bx, ar, br = args
        f_a_br, f_ar_bx = f(ax, br), f(ar, bx)
        ma = 0.5 * (
            secant(lambda u: f(u, br), ax, ar, f_a_br, yr, smooth)
            + secant(lambda u: f(u, bx), ax, ar, y, f_ar_bx, smooth)
        )
        mb = 0.5 * (
            secant(lambda v: f(ar, v), bx, br, f_ar_bx, yr, smooth)
            + secant(lambda v: f(ax, v), bx, br, y, f_a_br, smooth)
        )
        return times(g, ma), times(g, mb), None, None

    ya = custom_multiplier(lambda ax, bx, ar, br: f(ax, bx), backward)(a.x, b.x, a.r, b.r)
    return Pair(ya, yr)


def defshapley(prim: Any, *, smooth: bool = True) -> None:
    """Register the two-player Shapley rule (Rescale when only one operand varies)."""
    register_rule(prim, lambda ctx, a, b, **params: shapley_rule(prim, smooth, ctx, a, b, **params))


# ---- products: the midpoint rule (§2.3.5) -----------------------------------------------


def bilinear_rule(prim: Any, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """For a bilinear B with both operands varying, m_a = VJP of B(·, b̄) and m_b of B(ā, ·).

    ā, b̄ are the midpoints of input and reference; ΔB = B(Δa, b̄) + B(ā, Δb) exactly.
    With one constant operand B is linear and the ordinary VJP is the multiplier.
    """
    if not (isinstance(a, Pair) and isinstance(b, Pair)):
        return linear_rule(prim, ctx, a, b, **params)
    if ctx.options.product_rule != "midpoint":
        from deepliftjax._rules_products import product_rule

        return product_rule(prim, ctx, a, b, **params)

    def B(u, v):
        return prim.bind(u, v, **params)

    def backward(args, y, g):
        ax, bx, ar, br = args
        am, bm = (ax + ar) / 2, (bx + br) / 2
        if prim is mul_p:  # elementwise: no cotangent, no contribution (0 * inf)
            return times(g, bm), times(g, am), None, None
        (ga,) = jax.vjp(lambda u: B(u, bm), am)[1](g)
        (gb,) = jax.vjp(lambda v: B(am, v), bm)[1](g)
        return ga, gb, None, None

    ya = custom_multiplier(lambda ax, bx, ar, br: B(ax, bx), backward)(a.x, b.x, a.r, b.r)
    return Pair(ya, B(a.r, b.r))


def defbilinear(prim: Any) -> None:
    """Register the midpoint rule for a bilinear primitive."""
    register_rule(prim, lambda ctx, a, b, **params: bilinear_rule(prim, ctx, a, b, **params))


# ---- max and min of two varying operands: split the straight path (§2.3.3) ------------


def path_fraction(d0: jax.Array, d1: jax.Array) -> jax.Array:
    """Fraction of t ∈ [0, 1] on which ``d0 + t (d1 − d0) >= 0``.

    Ties go to the first operand (1 where ``d`` is 0 throughout), as in every max path.
    """
    same = d0 == d1
    t = d0 / jnp.where(same, jnp.ones_like(d0), d0 - d1)
    t = jnp.clip(t, 0, 1)
    moving = jnp.where(d1 > d0, 1 - t, t)
    constant = jnp.where(d0 >= 0, 1.0, 0.0).astype(d0.dtype)
    return jnp.where(same, constant, moving)


def maxmin_rule(prim: Any, sign: float, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """max(a, b) / min(a, b): each operand's multiplier is the fraction of the straight
    path from reference to input on which it wins; exact (the path integral of the
    gradient of a piecewise-linear function). Ties go to ``a``, the first operand."""
    a = a if isinstance(a, Pair) else Pair(a, a)
    b = b if isinstance(b, Pair) else Pair(b, b)

    def backward(args, y, g):
        ax, bx, ar, br = args
        ax, bx, ar, br = jnp.broadcast_arrays(ax, bx, ar, br)
        fa = path_fraction(sign * (ar - br), sign * (ax - bx))
        return times(g, fa), times(g, 1 - fa), None, None

    def primal(ax, bx, ar, br):
        return prim.bind(ax, bx, **params)

    ya = custom_multiplier(primal, backward)(a.x, b.x, a.r, b.r)
    return Pair(ya, prim.bind(a.r, b.r, **params))


def defmaxmin(prim: Any, sign: float) -> None:
    register_rule(prim, lambda ctx, a, b, **params: maxmin_rule(prim, sign, ctx, a, b, **params))


def _clamp_rule(ctx: Context, lo: Any, x: Any, hi: Any, **params: Any) -> Any:
    # clamp(lo, x, hi) = min(max(x, lo), hi), each step exact.
    shape = ctx.eqn.outvars[0].aval.shape
    lo, x, hi = (_broadcast_to(v, shape) for v in (lo, x, hi))
    return _max_or_min(min_p, -1.0, ctx, _max_or_min(max_p, 1.0, ctx, x, lo), hi)


def _max_or_min(prim: Any, sign: float, ctx: Context, a: Any, b: Any) -> Any:
    if isinstance(a, Pair) or isinstance(b, Pair):
        return maxmin_rule(prim, sign, ctx, a, b)
    return prim.bind(a, b)


def _broadcast_to(v: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(v, Pair):
        return Pair(jnp.broadcast_to(v.x, shape), jnp.broadcast_to(v.r, shape))
    return jnp.broadcast_to(v, shape)


def _div_rule(ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    if not isinstance(b, Pair):  # a / c is linear in a
        return linear_rule(div_p, ctx, a, b, **params)
    return shapley_rule(div_p, True, ctx, a, b, **params)


# ---- booleans and integers: no contribution of their own, a switch score ----------------


def definert(prim: Any) -> None:
    """Boolean or integer results (comparisons, indices): both sides, with a switch score.

    Where input and reference give different values, the consumers' jumps are credited
    through the score (see :mod:`deepliftjax._discrete`).
    """
    register_rule(prim, partial(_discrete_rule, prim))


def _discrete_rule(prim: Any, ctx: Context, *vals: Any, **params: Any) -> Any:
    return discrete_output_rule(ctx, prim, vals, params)


max_p = primitive("max_p")
min_p = primitive("min_p")
mul_p = primitive("mul_p")
select_n_p = primitive("select_n_p")
div_p = primitive("div_p")

# ---- smooth unary: Rescale --------------------------------------------------------------
defrescale(primitive("exp_p"))
defrescale(primitive("exp2_p"))
defrescale(primitive("expm1_p"))
defrescale(primitive("log_p"))
defrescale(primitive("log1p_p"))
defrescale(primitive("logistic_p"))
defrescale(primitive("tanh_p"))
defrescale(primitive("sin_p"))
defrescale(primitive("cos_p"))
defrescale(primitive("tan_p"))
defrescale(primitive("asin_p"))
defrescale(primitive("acos_p"))
defrescale(primitive("atan_p"))
defrescale(primitive("sinh_p"))
defrescale(primitive("cosh_p"))
defrescale(primitive("asinh_p"))
defrescale(primitive("acosh_p"))
defrescale(primitive("atanh_p"))
defrescale(primitive("erf_p"))
defrescale(primitive("erfc_p"))
defrescale(primitive("erf_inv_p"))
defrescale(primitive("lgamma_p"))
defrescale(primitive("digamma_p"))
defrescale(primitive("bessel_i0e_p"))
defrescale(primitive("bessel_i1e_p"))
defrescale(primitive("sqrt_p"))
defrescale(primitive("rsqrt_p"))
defrescale(primitive("cbrt_p"))
defrescale(primitive("square_p"))
defrescale(primitive("integer_pow_p"))

# ---- piecewise unary: Rescale with exact secants ---------------------------------------
defrescale(primitive("abs_p"), smooth=False)
defrescale(primitive("sign_p"), smooth=False)
defrescale(primitive("floor_p"), smooth=False)
defrescale(primitive("ceil_p"), smooth=False)
defrescale(primitive("round_p"), smooth=False)
defrescale(primitive("reduce_precision_p"), smooth=False)

# ---- two inputs -------------------------------------------------------------------------
defbilinear(mul_p)
defbilinear(primitive("dot_general_p"))
defbilinear(primitive("conv_general_dilated_p"))
defmaxmin(max_p, 1.0)
defmaxmin(min_p, -1.0)
register_rule(primitive("clamp_p"), _clamp_rule)
register_rule(select_n_p, partial(linear_rule, select_n_p))  # a moving predicate: _discrete
register_rule(div_p, _div_rule)
defshapley(primitive("pow_p"))
defshapley(primitive("atan2_p"))
defshapley(primitive("rem_p"), smooth=False)

# ---- no contribution of their own: switch scores ---------------------------------------
for _name in ("eq_p", "ne_p", "gt_p", "ge_p", "lt_p", "le_p", "not_p", "and_p", "or_p", "xor_p",
              "is_finite_p", "argmax_p", "argmin_p"):  # fmt: skip
    definert(primitive(_name))
