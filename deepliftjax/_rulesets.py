"""Other rule sets over the same interpreter: RevealCancel, guided backpropagation, ε-LRP.

Each rule set is a ``dispatch(primitive) -> rule`` registered in
:data:`deepliftjax._interpreter.METHODS`; primitives it does not mention fall back to the
default table (or, for the gradient-based sets, to the ordinary derivative).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax import _precision, _rules_control, _rules_linear, _rules_reduce  # noqa: F401
from deepliftjax._compat import primitive
from deepliftjax._interpreter import CALLS, METHODS, RULES
from deepliftjax._pair import MOVES_ALL, MOVES_FIRST, Pair, bind_both, rs
from deepliftjax._registry import RESCALE_PRIMS, UNIT_LINEAR
from deepliftjax._rulekit import bind_varying, custom_multiplier, float_pair_positions, secant

# ---- RevealCancel (Shrikumar, Greenside & Kundaje 2017, §3.5.3) -------------------------


class SPair(Pair):
    """A pair whose difference is split into a positive part ``dp`` and a negative ``dn``."""

    __slots__ = ("dp", "dn")

    def __init__(self, r: Any, dp: Any, dn: Any, s: Pair | None = None):
        super().__init__(r + dp + dn, r, s)
        self.dp = dp
        self.dn = dn


def _split(v: Any) -> Any:
    """Split a float pair's difference by sign (a fresh ±-decomposition)."""
    if isinstance(v, SPair) or not isinstance(v, Pair) or not v.is_float:
        return v
    d = v.x - v.r
    return SPair(v.r, jnp.maximum(d, 0), jnp.minimum(d, 0), v.s)


def _parts(v: Any) -> tuple[Any, Any]:
    """(Δ⁺, Δ⁻) of an operand; a float constant has none (zeros), other constants stay."""
    if isinstance(v, Pair):
        v = _split(v)
        return (v.dp, v.dn) if isinstance(v, SPair) else (v.x, v.x)
    if jnp.issubdtype(jnp.result_type(v), jnp.inexact):
        z = jnp.zeros_like(v)
        return z, z
    return v, v


def _generic(rule: Callable) -> Callable:
    """The default rule on totals; each float output gets a fresh sign split."""

    def wrapped(ctx, *vals, **params):
        out = rule(ctx, *vals, **params)
        return [_split(o) for o in out] if isinstance(out, list | tuple) else _split(out)

    return wrapped


def _rc_structural(prim: Any) -> Callable:
    """Linear maps with coefficients +1 (reshape, slicing, add, sums): Δ⁺ and Δ⁻ map apart."""

    def rule(ctx, *vals, **params):
        if any(isinstance(v, Pair) and not v.is_float for v in vals):
            return _generic(RULES[prim])(ctx, *vals, **params)
        parts = [_parts(v) for v in vals]
        r = prim.bind(*rs(vals), **params)
        dp = prim.bind(*[p for p, _ in parts], **params)
        dn = prim.bind(*[n for _, n in parts], **params)
        if prim.multiple_results:
            return [SPair(*t) for t in zip(r, dp, dn, strict=True)]
        return SPair(r, dp, dn)

    return rule


def _rc_neg(ctx, a, **params):
    a = _split(a)
    return SPair(-a.r, -a.dn, -a.dp)


def _rc_sub(ctx, a, b, **params):
    (pa, na), (pb, nb) = _parts(a), _parts(b)
    return SPair(rs([a])[0] - rs([b])[0], pa - nb, na - pb)


def _rc_scale(prim: Any) -> Callable:
    """``a * c`` or ``a / c`` with a constant c: each part goes where the sign of c sends it."""

    def rule(ctx, a, b, **params):
        varying = [isinstance(v, Pair) and v.is_float for v in (a, b)]
        if all(varying) or (prim is div_p and varying[1]):
            return _generic(RULES[prim])(ctx, a, b, **params)
        v, c = (a, b) if varying[0] else (b, a)
        coef = c if prim is mul_p else 1 / c
        cp, cn = jnp.maximum(coef, 0), jnp.minimum(coef, 0)
        p, n = _parts(v)
        r = prim.bind(*rs([a, b]), **params)
        return SPair(r, cp * p + cn * n, cp * n + cn * p)

    return rule


def _rc_bilinear(prim: Any) -> Callable:
    """A dense or conv layer with constant weights: terms w·Δx split by their sign."""

    def rule(ctx, a, b, **params):
        varying = [isinstance(v, Pair) and v.is_float for v in (a, b)]
        if all(varying):
            return _generic(RULES[prim])(ctx, a, b, **params)

        def L(u, w):
            return prim.bind(u, w, **params) if varying[0] else prim.bind(w, u, **params)

        v, w = (a, b) if varying[0] else (b, a)
        d = v.x - v.r
        if isinstance(v, SPair):
            # a unit with Δ = 0 whose parts cancel (Δ⁺ = −Δ⁻) leaves rounding noise in
            # r + Δ⁺ + Δ⁻ − r; its sign must not route the multiplier: value 0, and
            # ½(m⁺ + m⁻) from the tie of maximum/minimum at 0 (as the authors' code does)
            eps = jnp.finfo(d.dtype).eps
            noise = jnp.abs(d) <= 8 * eps * (jnp.abs(v.dp) + jnp.abs(v.dn) + jnp.abs(v.r))
            d = jnp.where(noise, d - jax.lax.stop_gradient(d), d)
        pos, neg = jnp.maximum(d, 0), jnp.minimum(d, 0)
        wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
        r = prim.bind(*rs([a, b]), **params)
        return SPair(r, L(pos, wp) + L(neg, wn), L(neg, wp) + L(pos, wn))

    return rule


def _rc_unary(prim: Any, smooth: bool) -> Callable:
    """RevealCancel at a nonlinearity: Δy⁺ and Δy⁻ as two-player Shapley values of Δx⁺, Δx⁻."""

    def rule(ctx, *vals, **params):
        pos = float_pair_positions(vals)
        if len(pos) != 1:
            return _generic(RULES[prim])(ctx, *vals, **params)
        (i,) = pos
        v = _split(vals[i])
        h = bind_varying(prim, [u.x if isinstance(u, Pair) else u for u in vals], i, params)

        yr = h(v.r)
        dp_out, dn_out = _reveal_cancel(h, smooth)(v.dp, v.dn, v.r)
        return SPair(yr, dp_out, dn_out)

    return rule


def _reveal_cancel(h: Callable, smooth: bool) -> Callable:
    def multipliers(dp, dn, r):
        x = r + dp + dn
        hr, hp, hn, hx = h(r), h(r + dp), h(r + dn), h(x)
        mp = 0.5 * (secant(h, r + dp, r, hp, hr, smooth) + secant(h, x, r + dn, hx, hn, smooth))
        mn = 0.5 * (secant(h, r + dn, r, hn, hr, smooth) + secant(h, x, r + dp, hx, hp, smooth))
        # r + dp and r + dn are off the path from r to x and may leave h's domain (rsqrt of
        # a variance whose negative part is large): there, Rescale on the total (still exact)
        ok = jnp.isfinite(mp) & jnp.isfinite(mn)
        m = secant(h, x, r, hx, hr, smooth)
        return jnp.where(ok, mp, m), jnp.where(ok, mn, m)

    @jax.custom_vjp
    def fun(dp, dn, r):
        mp, mn = multipliers(dp, dn, r)
        return mp * dp, mn * dn

    def fwd(dp, dn, r):
        mp, mn = multipliers(dp, dn, r)
        return (mp * dp, mn * dn), (mp, mn)

    def bwd(res, g):
        mp, mn = res
        return g[0] * mp, g[1] * mn, None

    fun.defvjp(fwd, bwd)
    return fun


mul_p = primitive("mul_p")
div_p = primitive("div_p")
REVEAL_CANCEL: dict[Any, Callable] = {}
for _p in MOVES_FIRST | MOVES_ALL | UNIT_LINEAR:
    REVEAL_CANCEL[_p] = _rc_structural(_p)
REVEAL_CANCEL[primitive("neg_p")] = _rc_neg
REVEAL_CANCEL[primitive("sub_p")] = _rc_sub
REVEAL_CANCEL[mul_p] = _rc_scale(mul_p)
REVEAL_CANCEL[div_p] = _rc_scale(div_p)
REVEAL_CANCEL[primitive("dot_general_p")] = _rc_bilinear(primitive("dot_general_p"))
REVEAL_CANCEL[primitive("conv_general_dilated_p")] = _rc_bilinear(
    primitive("conv_general_dilated_p")
)
for _twin in _precision.SPLIT_PRIMS.values():  # precision="split_*": the same products
    REVEAL_CANCEL[_twin] = _rc_bilinear(_twin)
for _p, _smooth in RESCALE_PRIMS.items():
    REVEAL_CANCEL[_p] = _rc_unary(_p, _smooth)
max_p, min_p, add_p = primitive("max_p"), primitive("min_p"), primitive("add_p")


def _rc_maxmin(prim: Any) -> Callable:
    """relu is max(x, 0): RevealCancel when one operand varies. With both varying,
    ``max(a, b) = b + relu(a - b)`` and ``min(a, b) = a - relu(a - b)`` (Shrikumar et al.
    2017's own example: min(x1, x2) at (3, 1) against (0, 0) gets (0.5, 0.5))."""
    unary = _rc_unary(prim, False)

    def rule(ctx, a, b, **params):
        if not all(isinstance(v, Pair) and v.is_float for v in (a, b)):
            return unary(ctx, a, b, **params)
        d = _rc_sub(ctx, a, b)
        z = jnp.zeros((), d.dtype)
        relu = _rc_unary(max_p, False)(ctx, d, z)
        if prim is max_p:
            return _rc_structural(add_p)(ctx, b, relu)
        return _rc_sub(ctx, a, relu)

    return rule


REVEAL_CANCEL[max_p] = _rc_maxmin(max_p)
REVEAL_CANCEL[min_p] = _rc_maxmin(min_p)


def _dispatch_reveal_cancel(prim: Any) -> Callable | None:
    rule = REVEAL_CANCEL.get(prim)
    if rule is not None:
        return rule
    if prim in CALLS:  # calls and control flow interpret their inner jaxprs under this set
        return RULES.get(prim)
    if prim in RESCALE_PRIMS:  # registered after import (a user's defrescale)
        return _rc_unary(prim, RESCALE_PRIMS[prim])
    if prim in MOVES_FIRST or prim in MOVES_ALL or prim in UNIT_LINEAR:  # likewise
        return _rc_structural(prim)
    base = RULES.get(prim)
    return None if base is None else _generic(base)


METHODS["reveal_cancel"] = _dispatch_reveal_cancel


# ---- guided backpropagation and ε-LRP: modified gradients ------------------------------


def _plain_rule(prim: Any, ctx: Any, *vals: Any, **params: Any) -> Any:
    """The ordinary derivative: bind on both sides."""
    return bind_both(prim, vals, params)


def _plain(prim: Any) -> Callable:
    return partial(_plain_rule, prim)


def _one_varying(vals: Sequence[Any]) -> int | None:
    pos = float_pair_positions(vals)
    return pos[0] if len(pos) == 1 else None


def _modified(prim: Any, backward: Callable[[Any, Any, Any], Any]) -> Callable:
    """A rule whose VJP on the varying operand is ``backward(x, y, g)``."""

    def rule(ctx, *vals, **params):
        i = _one_varying(vals)
        if i is None:
            return bind_both(prim, vals, params)
        h = bind_varying(prim, [v.x if isinstance(v, Pair) else v for v in vals], i, params)

        @jax.custom_vjp
        def f(u):
            return h(u)

        def fwd(u):
            y = h(u)
            return y, (u, y)

        def bwd(res, g):
            u, y = res
            return (backward(u, y, g, ctx),)

        f.defvjp(fwd, bwd)
        return Pair(f(vals[i].x), h(vals[i].r))

    return rule


def _guided_relu(u, y, g, ctx):
    return jnp.where((u > 0) & (g > 0), g, 0).astype(g.dtype)


def _lrp_ratio(u, y, g, ctx):
    eps = ctx.options.epsilon
    den = u + eps * jnp.where(u >= 0, 1.0, -1.0).astype(u.dtype)
    return g * y / jnp.where(den == 0, jnp.ones_like(den), den)


def _is_relu(prim: Any) -> bool:
    return prim in (primitive("max_p"), primitive("min_p"))


def _dispatch_gradient_like(special: Callable[[Any], Callable | None]) -> Callable:
    def dispatch(prim):
        rule = special(prim)
        if rule is not None:
            return rule
        # every call-like primitive (jit, custom_jvp/vjp, remat, cond, scan, while and the
        # users' rules.defcall ones) runs its inner jaxpr under this rule set: its own
        # derivative would be the plain gradient of everything inside
        if prim in CALLS and prim in RULES:
            return RULES[prim]
        return _plain(prim)

    return dispatch


def _guided_select(ctx, pred, *cases, **params):
    """A gate whose predicate depends on the input (``jnp.where(x > 0, x, 0)``, a ReLU
    written with ``where``): the case taken gets the gradient where it is positive."""
    if not isinstance(pred, Pair):
        return bind_both(select_n_p, (pred, *cases), params)
    n = len(cases)

    def primal(p, *cs):
        return select_n_p.bind(p, *cs, **params)

    def backward(args, y, g):
        p, *cs = args
        k = jnp.broadcast_to(p.astype(jnp.int32), jnp.shape(y))
        pos = g > 0
        return (None, *[jnp.where((k == i) & pos, g, 0).astype(g.dtype) for i in range(n)])

    shape = jnp.broadcast_shapes(*(jnp.shape(c.x if isinstance(c, Pair) else c) for c in cases))
    cx = [jnp.broadcast_to(c.x if isinstance(c, Pair) else c, shape) for c in cases]
    cr = [jnp.broadcast_to(c.r if isinstance(c, Pair) else c, shape) for c in cases]
    ya = custom_multiplier(primal, backward)(pred.x, *cx)
    return Pair(ya, select_n_p.bind(pred.r, *cr, **params))


select_n_p = primitive("select_n_p")
_GUIDED = {
    primitive("max_p"): _modified(primitive("max_p"), _guided_relu),
    select_n_p: _guided_select,
}


def _lrp_rule(prim: Any) -> Callable | None:
    """ε-LRP's ratio rule at every nonlinearity, a user's ``defrescale`` ones included."""
    if prim is add_p:
        return _lrp_add
    if prim in RESCALE_PRIMS or prim is primitive("max_p"):
        return _modified(prim, _lrp_ratio)
    return None


def _lrp_add(ctx, a, b, **params):
    """With ``bias=False`` the relevance of ``u + b`` passes wholly to u (b absorbs none)."""
    i = _one_varying((a, b))
    if ctx.options.bias or i is None:
        return bind_both(add_p, (a, b), params)
    return _modified(add_p, _lrp_ratio)(ctx, a, b, **params)


METHODS["guided_backprop"] = _dispatch_gradient_like(_GUIDED.get)
METHODS["lrp"] = _dispatch_gradient_like(_lrp_rule)
