"""Rules for elementwise primitives: Rescale, products, max/min, two-input Shapley, select.

Every rule here is exact: the multipliers times the differences from reference sum
to the difference of the output (eq. 1), up to floating point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._interpreter import SCORE_RULES, Context, Pair, bind_both, register_rule
from deepliftjax._rules_linear import linear_rule

# ---- helpers ----------------------------------------------------------------------------


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
        return (g * m, None, None, *([None] * n))

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
        return g * ma, g * mb, None, None

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
    """Fraction of t ∈ [0, 1] on which ``d0 + t (d1 − d0) > 0`` (½ where it is 0 throughout)."""
    same = d0 == d1
    t = d0 / jnp.where(same, jnp.ones_like(d0), d0 - d1)
    t = jnp.clip(t, 0, 1)
    moving = jnp.where(d1 > d0, 1 - t, t)
    constant = jnp.where(d0 > 0, 1.0, jnp.where(d0 < 0, 0.0, 0.5)).astype(d0.dtype)
    return jnp.where(same, constant, moving)


def maxmin_rule(prim: Any, sign: float, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    """max(a, b) / min(a, b): each operand's multiplier is the fraction of the straight
    path from reference to input on which it wins; exact (the path integral of the
    gradient of a piecewise-linear function)."""
    if not (isinstance(a, Pair) and isinstance(b, Pair)):
        return rescale_rule(prim, False, ctx, a, b, **params)

    def backward(args, y, g):
        ax, bx, ar, br = args
        ax, bx, ar, br = jnp.broadcast_arrays(ax, bx, ar, br)
        fa = path_fraction(sign * (ar - br), sign * (ax - bx))
        return g * fa, g * (1 - fa), None, None

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


# ---- select with a predicate that differs between input and reference ------------------


def _select_n_rule(ctx: Context, pred: Any, *cases: Any, **params: Any) -> Any:
    """``select_n(pred, *cases)``.

    With the same predicate on both sides this is linear in the cases. Where input and
    reference pick different cases p and q, ``Δy = c_p(x) − c_q(r)`` splits exactly into
    ``½(Δc_p + Δc_q)`` through the two cases and the jump
    ``J = ½[(c_p(r) − c_q(r)) + (c_p(x) − c_q(x))]``, credited through the predicate's switch
    score s (``a − b`` for ``a > b``) with multiplier ``J / Δs``; Δs ≠ 0 wherever the sides
    differ. A predicate without a score (from ``==``, ``argmax``) shares Δy between the two
    cases by |Δc|, exact when the predicate is a function of those cases' inputs alone.
    """
    if not isinstance(pred, Pair):
        return linear_rule(select_n_p, ctx, pred, *cases, **params)
    n = len(cases)
    if not any(isinstance(c, Pair) and c.is_float for c in cases):
        dtypes = [jnp.result_type(c.x if isinstance(c, Pair) else c) for c in cases]
        if not any(jnp.issubdtype(d, jnp.inexact) for d in dtypes):
            return bind_both(select_n_p, [pred, *cases], params)
        if pred.s is None:
            raise ctx.error(
                "jnp.where/select picks between constants with a condition that depends on "
                "the attributed input through ==, argmax or similar, which has no switch "
                "score; this step function has no exact DeepLIFT multiplier:",
                "compare with <, <=, >, >= (they carry a switch score), or make a branch "
                "depend on the input.",
            )
    shape = jnp.broadcast_shapes(*(jnp.shape(c.x if isinstance(c, Pair) else c) for c in cases))
    cx = [jnp.broadcast_to(c.x if isinstance(c, Pair) else c, shape) for c in cases]
    cr = [jnp.broadcast_to(c.r if isinstance(c, Pair) else c, shape) for c in cases]
    yr = select_n_p.bind(pred.r, *cr, **params)
    if pred.s is not None:
        return _select_with_score(pred, cx, cr, yr, params)

    def primal(px, pr, *cs):
        return select_n_p.bind(px, *cs[:n], **params)

    def backward(args, y, g):
        px, pr, *cs = args
        xs_, rs_ = cs[:n], cs[n:]
        px_i = jnp.broadcast_to(px.astype(jnp.int32), y.shape)
        pr_i = jnp.broadcast_to(pr.astype(jnp.int32), y.shape)
        deltas = [xv - rv for xv, rv in zip(xs_, rs_, strict=True)]
        dp = select_n_p.bind(px, *deltas, **params)
        dq = select_n_p.bind(pr, *deltas, **params)
        den = jnp.abs(dp) + jnp.abs(dq)
        share = (y - yr) / jnp.where(den == 0, jnp.ones_like(den), den)
        same = px_i == pr_i
        cts = []
        for i, d in enumerate(deltas):
            involved = (px_i == i).astype(d.dtype) + (pr_i == i).astype(d.dtype)
            m_switch = share * jnp.sign(d) * involved
            m = jnp.where(same, (px_i == i).astype(d.dtype), m_switch)
            cts.append(g * m)
        return (None, None, *cts, *([None] * n))

    ya = custom_multiplier(primal, backward)(pred.x, pred.r, *cx, *cr)
    return Pair(ya, yr)


def _select_with_score(pred: Pair, cx: list, cr: list, yr: Any, params: dict) -> Pair:
    s, n = pred.s, len(cx)

    def primal(px, pr, sx, sr, *cs):
        return select_n_p.bind(px, *cs[:n], **params)

    def backward(args, y, g):
        px, pr, sx, sr, *cs = args
        xs_, rs_ = cs[:n], cs[n:]
        px_i = jnp.broadcast_to(px.astype(jnp.int32), y.shape)
        pr_i = jnp.broadcast_to(pr.astype(jnp.int32), y.shape)
        same = px_i == pr_i
        half = jnp.asarray(0.5, y.dtype)
        # the jump: the input's case minus the reference's case, at both ends, averaged
        jump = half * (
            (select_n_p.bind(px, *rs_, **params) - select_n_p.bind(pr, *rs_, **params))
            + (y - select_n_p.bind(pr, *xs_, **params))
        )
        ds = jnp.broadcast_to(sx - sr, y.shape)
        ms = jnp.where(same, 0, jump / jnp.where(same, jnp.ones_like(ds), ds))
        cts = []
        for i in range(n):
            p_i, q_i = (px_i == i).astype(y.dtype), (pr_i == i).astype(y.dtype)
            cts.append(g * jnp.where(same, p_i, half * (p_i + q_i)))
        return (None, None, g * ms, None, *cts, *([None] * n))

    ya = custom_multiplier(primal, backward)(pred.x, pred.r, s.x, s.r, *cx, *cr)
    return Pair(ya, yr)


# ---- comparisons carry a switch score; logic combines scores ----------------------------


def _compare_rule(prim: Any, sign: float, ctx: Context, a: Any, b: Any, **params: Any) -> Pair:
    out = bind_both(prim, [a, b], params)
    fa, fb = (isinstance(v, Pair) and v.is_float for v in (a, b))
    if not (fa or fb):
        return out
    ax, ar = (a.x, a.r) if isinstance(a, Pair) else (a, a)
    bx, br = (b.x, b.r) if isinstance(b, Pair) else (b, b)
    out.s = Pair(sign * (ax - bx), sign * (ar - br))
    return out


def defcompare(prim: Any, sign: float) -> None:
    """A comparison whose truth is ``sign * (a - b) > 0`` (or ``>= 0``)."""
    register_rule(prim, lambda ctx, a, b, **params: _compare_rule(prim, sign, ctx, a, b, **params))


def _not_rule(ctx: Context, a: Pair, **params: Any) -> Pair:
    out = bind_both(not_p, [a], params)
    if a.s is not None:
        out.s = Pair(-a.s.x, -a.s.r)
    return out


def _logic_rule(prim: Any, comb: Any, sign: float, ctx: Context, a: Any, b: Any, **params):
    """``and`` is true where min(s_a, s_b) > 0, ``or`` where max(s_a, s_b) > 0."""
    out = bind_both(prim, [a, b], params)
    if not jnp.issubdtype(jnp.result_type(out.x), jnp.bool_):
        return out
    shape = jnp.shape(out.x)

    def score(v):
        if isinstance(v, Pair):
            if v.s is None:
                return None
            return _broadcast_to(v.s, shape)
        return jnp.broadcast_to(jnp.where(v, 1.0, -1.0), shape)  # constant: never switches

    sa, sb = score(a), score(b)
    if sa is None or sb is None:
        return out
    if not isinstance(sa, Pair):
        sa = jnp.asarray(sa, sb.dtype)
    if not isinstance(sb, Pair):
        sb = jnp.asarray(sb, sa.dtype)
    out.s = maxmin_rule(comb, sign, ctx, sa, sb)
    return out


def _convert_score_rule(ctx: Context, operand: Pair, *, new_dtype: Any, **params: Any) -> Pair:
    """A boolean with a switch score cast to a number: a step, credited through the score."""
    params = dict(params, new_dtype=new_dtype)
    out = bind_both(convert_element_type_p, [operand], params)
    if operand.s is None:
        return out
    if not jnp.issubdtype(jnp.dtype(new_dtype), jnp.inexact):
        out.s = operand.s  # bool -> int keeps the score (cond's index)
        return out
    s = operand.s

    def backward(args, y, g):
        sx, sr, yx, yr = args
        ds = sx - sr
        still = ds == 0
        return g * (yx - yr) / jnp.where(still, jnp.ones_like(ds), ds), None, None, None

    ya = custom_multiplier(lambda sx, sr, yx, yr: yx, backward)(s.x, s.r, out.x, out.r)
    return Pair(ya, out.r)


# ---- comparisons and other outputs without contribution --------------------------------


def definert(prim: Any) -> None:
    """Outputs that carry no contribution (booleans, indices): evaluate both sides."""
    register_rule(prim, lambda ctx, *vals, **params: bind_both(prim, vals, params))


max_p = primitive("max_p")
and_p = primitive("and_p")
or_p = primitive("or_p")
min_p = primitive("min_p")
select_n_p = primitive("select_n_p")
not_p = primitive("not_p")
convert_element_type_p = primitive("convert_element_type_p")
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
defbilinear(primitive("mul_p"))
defbilinear(primitive("dot_general_p"))
defbilinear(primitive("conv_general_dilated_p"))
defmaxmin(max_p, 1.0)
defmaxmin(min_p, -1.0)
register_rule(primitive("clamp_p"), _clamp_rule)
register_rule(select_n_p, _select_n_rule)
register_rule(div_p, _div_rule)
defshapley(primitive("pow_p"))
defshapley(primitive("atan2_p"))
defshapley(primitive("rem_p"), smooth=False)

# ---- no contribution of their own -------------------------------------------------------
definert(primitive("eq_p"))
definert(primitive("ne_p"))
defcompare(primitive("gt_p"), 1.0)
defcompare(primitive("ge_p"), 1.0)
defcompare(primitive("lt_p"), -1.0)
defcompare(primitive("le_p"), -1.0)
register_rule(not_p, _not_rule)
register_rule(
    primitive("and_p"),
    lambda ctx, a, b, **params: _logic_rule(and_p, min_p, -1.0, ctx, a, b, **params),
)
register_rule(
    primitive("or_p"),
    lambda ctx, a, b, **params: _logic_rule(or_p, max_p, 1.0, ctx, a, b, **params),
)
SCORE_RULES.update({not_p, and_p, or_p, convert_element_type_p})
definert(primitive("is_finite_p"))
definert(primitive("argmax_p"))
definert(primitive("argmin_p"))
