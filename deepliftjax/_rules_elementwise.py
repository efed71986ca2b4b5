"""Rules for elementwise primitives: Rescale, products, max/min, two-input Shapley, select.

Every rule here is exact: the multipliers times the differences from reference sum
to the difference of the output (eq. 1), up to floating point.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax import _precision
from deepliftjax._compat import primitive
from deepliftjax._discrete import discrete_output_rule, jump_score
from deepliftjax._interpreter import RULE_KINDS, Context, register_rule
from deepliftjax._pair import Pair
from deepliftjax._registry import RESCALE_PRIMS  # noqa: F401  (read by _rulesets and tests)
from deepliftjax._rulekit import (
    custom_multiplier,
    float_pair_positions,
    linear_rule,
    rescale_rule,
    safe_div,
    secant,
    times,
)
from deepliftjax._rules_products import product_rule, quotient_rule

# ---- Rescale: one varying operand (the rule itself is in _rulekit) ----------------------


def defrescale(prim: Any, *, smooth: bool = True, domain_edge: bool = False) -> None:
    """Register Rescale for a unary elementwise ``prim`` (or one with constant extras).

    ``domain_edge``: ``prim`` can be infinite or NaN at a finite operand (``log`` at 0).
    """
    register_rule(
        prim,
        partial(rescale_or_shapley_rule, prim, smooth),
        elementwise=True,
        domain_edge=domain_edge,
        rescale=smooth,
    )


def rescale_or_shapley_rule(prim: Any, smooth: bool, ctx: Context, *vals: Any, **params: Any):
    """Rescale with one varying operand; the Shapley rule with two."""
    if len(float_pair_positions(vals)) > 1:
        if len(vals) == 2:
            return shapley_rule(prim, smooth, ctx, *vals, **params)
        raise ctx.error(
            f"'{prim.name}' has several operands that depend on the attributed input:",
            "only one of its operands may vary; register a rule for it.",
        )
    return rescale_rule(prim, smooth, ctx, *vals, **params)


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


def defshapley(prim: Any, *, smooth: bool = True, domain_edge: bool = False) -> None:
    """Register the two-player Shapley rule (Rescale when only one operand varies)."""
    register_rule(
        prim, partial(shapley_rule, prim, smooth), elementwise=True, domain_edge=domain_edge
    )


# ---- products: the midpoint rule (§2.3.5) -----------------------------------------------


def bilinear_rule(prim: Any, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """For a bilinear B with both operands varying, m_a = VJP of B(·, b̄) and m_b of B(ā, ·).

    ā, b̄ are the midpoints of input and reference; ΔB = B(Δa, b̄) + B(ā, Δb) exactly.
    With one constant operand B is linear and the ordinary VJP is the multiplier.
    """
    if not (isinstance(a, Pair) and isinstance(b, Pair)):
        return linear_rule(prim, ctx, a, b, **params)
    if ctx.options.product_rule != "midpoint":
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


def defbilinear(prim: Any, *, elementwise: bool = False) -> None:
    """Register the midpoint rule for a bilinear primitive (``elementwise``: ``mul``)."""
    register_rule(prim, partial(bilinear_rule, prim), elementwise=elementwise)


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


def max_split(ux: Any, vx: Any, ur: Any, vr: Any) -> tuple[jax.Array, ...]:
    """``(m_u, m_v, J_u, J_v)`` for ``max(u, v)`` on the straight path from ``(ur, vr)`` to
    ``(ux, vx)``: multipliers, and the finite contributions ``J`` of operands whose change
    is infinite (their multiplier is 0; the caller credits ``J`` through a score).

    Finite ends: the fraction of the path on which each operand wins (ties to u). An
    operand at the same infinity at both ends does not move and gets 0 (a ``-inf`` mask
    leaves the other operand the whole change). An operand with one end at ``-inf`` is the
    limit of an end at ``-M``, M → ∞: the crossing tends to that end, so it gets what it
    wins there (arriving: ``max(u − v, 0)`` at the input; leaving: ``−max(u − v, 0)`` at
    the reference), and a finite other operand its whole change. Both at ``-inf`` at
    opposite ends: the only finite split, u arriving while v is at its reference value,
    then v leaving. Beside a fixed ``-inf`` the output is the other operand throughout: its
    multiplier is 1, whatever its change. Elsewhere, where the output's change is itself
    infinite, no finite exact split exists: 0 (the summation guard reports the example).
    """
    zero = jnp.zeros((), jnp.result_type(ux))
    fin_u, fin_v = jnp.isfinite(ux) & jnp.isfinite(ur), jnp.isfinite(vx) & jnp.isfinite(vr)
    both = fin_u & fin_v
    fa = path_fraction(jnp.where(both, ur - vr, zero), jnp.where(both, ux - vx, zero))
    y_fixed = ~jnp.isfinite(jnp.maximum(ux, vx)) & (jnp.maximum(ux, vx) == jnp.maximum(ur, vr))
    fix_u, fix_v = (ux == ur) & ~fin_u, (vx == vr) & ~fin_v  # at -inf (+inf fixes y)
    arrive_u, arrive_v = (ur == -jnp.inf) & jnp.isfinite(ux), (vr == -jnp.inf) & jnp.isfinite(vx)
    leave_u, leave_v = jnp.isfinite(ur) & (ux == -jnp.inf), jnp.isfinite(vr) & (vx == -jnp.inf)
    # the other operand takes the whole change: beside a fixed -inf, or finite beside one
    # arriving or leaving
    whole_u = (fix_v & ~y_fixed) | (fin_u & (arrive_v | leave_v))
    whole_v = (fix_u & ~y_fixed) | (fin_v & (arrive_u | leave_u))
    mu = jnp.where(both, fa, jnp.where(whole_u, 1, zero))
    mv = jnp.where(both, 1 - fa, jnp.where(whole_v, 1, zero))

    def jump(ax, ar, fin_a, arrive_a, leave_a, bx, br, fin_b, arrive_b, leave_b):
        # what a wins where it is finite, against b there (b's reference value if b leaves,
        # its input value if b arrives)
        b_at_x = jnp.where(fin_b, bx, br)
        b_at_r = jnp.where(fin_b, br, bx)
        ax, ar, b_at_x, b_at_r = (
            jnp.where(jnp.isfinite(t), t, zero) for t in (ax, ar, b_at_x, b_at_r)
        )
        gain = jnp.maximum(ax - b_at_x, zero)
        loss = -jnp.maximum(ar - b_at_r, zero)
        j = jnp.where(arrive_a & (fin_b | leave_b), gain, zero)
        return jnp.where(leave_a & (fin_b | arrive_b), loss, j)

    u = (ux, ur, fin_u, arrive_u, leave_u)
    v = (vx, vr, fin_v, arrive_v, leave_v)
    # ties go to u: v's gain against u must be strict, which max(v - u, 0) = 0 gives
    return mu, mv, jump(*u, *v), jump(*v, *u)


def maxmin_rule(prim: Any, sign: float, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """max(a, b) / min(a, b): each operand's multiplier is the fraction of the straight
    path from reference to input on which it wins; exact (the path integral of the
    gradient of a piecewise-linear function). Ties go to ``a``, the first operand.
    Infinite values are limits (:func:`max_split`); the finite contribution of an operand
    whose change is infinite is credited through its :func:`jump_score`."""
    shape = jnp.broadcast_shapes(jnp.shape(_side(a, "x")), jnp.shape(_side(b, "x")))
    scores = [jump_score(ctx, v, shape) for v in (a, b)]
    a = a if isinstance(a, Pair) else Pair(a, a)
    b = b if isinstance(b, Pair) else Pair(b, b)
    extra = [u for s in scores if s is not None for u in (s.x, s.r)]

    def backward(args, y, g):
        ax, bx, ar, br, *ss = args
        ax, bx, ar, br = jnp.broadcast_arrays(ax, bx, ar, br)
        mu, mv, ju, jv = max_split(sign * ax, sign * bx, sign * ar, sign * br)
        cts = []
        for j, score in zip((ju, jv), scores, strict=True):
            if score is not None:
                sx, sr, *ss = ss
                cts += [safe_div(times(g, sign * j), (sx - sr).astype(g.dtype)), None]
        return (times(g, mu), times(g, mv), None, None, *cts)

    def primal(ax, bx, ar, br, *ss):
        return prim.bind(ax, bx, **params)

    ya = custom_multiplier(primal, backward)(a.x, b.x, a.r, b.r, *extra)
    return Pair(ya, prim.bind(a.r, b.r, **params))


def _side(v: Any, side: str) -> Any:
    return getattr(v, side) if isinstance(v, Pair) else v


def defmaxmin(prim: Any, sign: float) -> None:
    """Register the path-fraction rule for ``max`` (sign 1) or ``min`` (sign -1)."""
    register_rule(prim, partial(maxmin_rule, prim, sign), elementwise=True)


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
    """``v`` broadcast to ``shape``; a pair keeps its provenance (broadcast alike)."""
    if not isinstance(v, Pair):
        return jnp.broadcast_to(v, shape)
    s = v.s
    if isinstance(s, Pair) and s.is_float and jnp.shape(s.x) == jnp.shape(v.x):
        s = Pair(jnp.broadcast_to(s.x, shape), jnp.broadcast_to(s.r, shape))
    else:
        s = None
    return Pair(jnp.broadcast_to(v.x, shape), jnp.broadcast_to(v.r, shape), s, v.exact)


def _div_rule(ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    if not isinstance(b, Pair):  # a / c is linear in a
        return linear_rule(div_p, ctx, a, b, **params)
    if not isinstance(a, Pair):  # c / b: Rescale in b
        return rescale_rule(div_p, True, ctx, a, b, **params)
    # a product with b's reciprocal: the orderings of product_rule (midpoint: Shapley)
    return quotient_rule(div_p, ctx, a, b, **params)


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
defrescale(primitive("exp_p"), domain_edge=True)
defrescale(primitive("exp2_p"), domain_edge=True)
defrescale(primitive("expm1_p"), domain_edge=True)
defrescale(primitive("log_p"), domain_edge=True)
defrescale(primitive("log1p_p"), domain_edge=True)
defrescale(primitive("logistic_p"))
defrescale(primitive("tanh_p"))
defrescale(primitive("sin_p"))
defrescale(primitive("cos_p"))
defrescale(primitive("tan_p"), domain_edge=True)
defrescale(primitive("asin_p"), domain_edge=True)
defrescale(primitive("acos_p"), domain_edge=True)
defrescale(primitive("atan_p"))
defrescale(primitive("sinh_p"), domain_edge=True)
defrescale(primitive("cosh_p"), domain_edge=True)
defrescale(primitive("asinh_p"))
defrescale(primitive("acosh_p"), domain_edge=True)
defrescale(primitive("atanh_p"), domain_edge=True)
defrescale(primitive("erf_p"))
defrescale(primitive("erfc_p"))
defrescale(primitive("erf_inv_p"), domain_edge=True)
defrescale(primitive("lgamma_p"), domain_edge=True)
defrescale(primitive("digamma_p"), domain_edge=True)
defrescale(primitive("bessel_i0e_p"))
defrescale(primitive("bessel_i1e_p"))
defrescale(primitive("sqrt_p"), domain_edge=True)
defrescale(primitive("rsqrt_p"), domain_edge=True)
defrescale(primitive("cbrt_p"))
defrescale(primitive("square_p"))
defrescale(primitive("integer_pow_p"), domain_edge=True)

# ---- piecewise unary: Rescale with exact secants ---------------------------------------
defrescale(primitive("abs_p"), smooth=False)
defrescale(primitive("sign_p"), smooth=False)
defrescale(primitive("floor_p"), smooth=False)
defrescale(primitive("ceil_p"), smooth=False)
defrescale(primitive("round_p"), smooth=False)
defrescale(primitive("reduce_precision_p"), smooth=False)

# ---- two inputs -------------------------------------------------------------------------
defbilinear(mul_p, elementwise=True)
defbilinear(primitive("dot_general_p"))
defbilinear(primitive("conv_general_dilated_p"))
for _split in _precision.SPLIT_PRIMS.values():  # precision="split_*": the same products
    defbilinear(_split)
defmaxmin(max_p, 1.0)
defmaxmin(min_p, -1.0)
register_rule(primitive("clamp_p"), _clamp_rule, elementwise=True)
# a moving predicate goes to _discrete; with a constant one, select_n is elementwise
register_rule(select_n_p, partial(linear_rule, select_n_p), elementwise=True)
register_rule(div_p, _div_rule, elementwise=True, domain_edge=True)
defshapley(primitive("pow_p"), domain_edge=True)
defshapley(primitive("atan2_p"))
defshapley(primitive("rem_p"), smooth=False)

# ---- no contribution of their own: switch scores ---------------------------------------
for _name in ("eq_p", "ne_p", "gt_p", "ge_p", "lt_p", "le_p", "not_p", "and_p", "or_p", "xor_p",
              "is_finite_p", "argmax_p", "argmin_p"):  # fmt: skip
    definert(primitive(_name))

# ---- kinds the interpreter's accounted differences read (_interpreter.RULE_KINDS) -------
RULE_KINDS.update(
    {bilinear_rule: "bilinear", _div_rule: "quotient", rescale_or_shapley_rule: "rescale"}
)
