"""Alternative rules for products of two varying operands (``product_rule=``).

The paper's rule (§2.3.5), ``"midpoint"``, lives with the other elementwise rules. The
rules here are selected with ``deeplift(..., product_rule=...)``; ``"guarded"`` is the
default.

For a bilinear ``y = B(a, b)`` (``mul``, ``dot_general``, ``conv``) every *ordering* of
the two operands is exact:

* "a first": ``C_a = B(Δa, b⁰)``, ``C_b = B(a, Δb)``
* "b first": ``C_a = B(Δa, b)``,  ``C_b = B(a⁰, Δb)``

and so is any convex mixture of the two, chosen separately for each output element; the
midpoint rule is the mixture with weight ½ (it is also the two-player Shapley value).
Writing ``u = B(Δa, b)``, ``v = B(a⁰, Δb)``, ``P = B(Δa, Δb)`` and ``t = w·P`` for the
weight ``w ∈ [0, 1]`` of "a first", each output element gets

    c_a = u − t,   c_b = v + t,   c_a + c_b = Δy   (whatever t).

The cost ``K(t) = |c_a| + |c_b|`` is at least ``|Δy|``, with equality for ``t`` between
``−v`` and ``u``; outside that interval it grows with slope 2. The midpoint ``t = P/2``
can be far outside: at a LayerNorm whose reference has zero variance,
``a = x − μ`` is 0 at the reference and ``b = rsqrt(var + ε)`` is ``1/√ε`` there, so the
midpoint credits each feature ``~Δa/(2√ε)`` through ``a`` and minus that through ``b``,
hundreds of times ``Δy``; float32 then loses the sum.

Two rules choose ``t`` per output element:

* ``"balanced"``: the ``t`` in ``[0, P]`` with the least ``|c_a| + |c_b|``, nearest the
  midpoint among those (the midpoint itself wherever it has no cancellation).
* ``"guarded"``: the midpoint wherever its ``|c_a| + |c_b|`` is at most ``10|Δy|``;
  beyond, the nearest ``t`` to the midpoint whose ``|c_a| + |c_b|`` is at most an
  allowance that falls from ``10|Δy|`` to the least possible as the midpoint's ratio
  ``R = (|c_a| + |c_b|)/|Δy|`` goes from 10 to 100; so
  ``"balanced"`` for ``R >= 100`` (:data:`GUARD_BAND`); the allowance is ``100|Δy|/R``
  in between. At the degenerate LayerNorm,
  ``R = b⁰/b = σ/√ε`` (316 at ε = 1e-5 and σ = 1), and the two rules agree.

Every weight is exact; both rules are continuous in the operands and symmetric in
``a ↔ b`` and in input ↔ reference. The multipliers are convex combinations,
``m_a = w̄·b + w·b⁰`` and ``m_b = w̄·a⁰ + w·a`` with ``w̄ = 1 − w`` computed on its own
(:func:`ordering_weights`), so they carry no cancellation of their own: at a reference
10⁶ away from the input (a LayerNorm or RMSNorm then sees ``b⁰/b ~ 10⁶``) the float32 sum
stays within ~1e-6 of Δf (``tests/test_products.py``), where the midpoint's is off
by 1e-2 or more.

Cost: for ``mul``, a few elementwise operations more than the midpoint; for
``dot_general``/``conv``, two more products in the backward pass (``B(Δa, b)`` and
``B(Δa, b⁰)``, which set the weights) and four transposed products instead of two
(``benchmarks/RESULTS_products.md``). Where the cotangent is 0 an elementwise product's
multiplier is 0 even if a reference operand is infinite; a contraction has no such guard.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._pair import Pair
from deepliftjax._rulekit import custom_multiplier, times

PRODUCT_RULES = ("midpoint", "guarded", "balanced")

GUARD_BAND = (10.0, 100.0)
"""``"guarded"``: the midpoint is kept where its ``|c_a| + |c_b|`` is at most
``GUARD_BAND[0]·|Δy|``; beyond, the allowance is ``GUARD_BAND[1]·|Δy| / R``, down to
``|Δy|`` (``"balanced"``) from ``R = GUARD_BAND[1]``."""


def _project(half, lo, hi, p):
    """``half`` projected onto ``[lo, hi]``, then onto the segment between 0 and ``p``."""
    return jnp.clip(jnp.clip(half, lo, hi), jnp.minimum(p, 0), jnp.maximum(p, 0))


def guard_allowance(ca2, cb2, ca1, cb1, band=GUARD_BAND):
    """Where ``"guarded"`` keeps the midpoint, and the ``|c_a| + |c_b|`` it allows
    elsewhere.

    With ``R = (|c_a| + |c_b|) / |Δy|`` at the midpoint: the midpoint stays up to
    ``R = band[0]``; beyond, the allowance is ``band[1]·|Δy| / R``, clipped to
    ``[|Δy|, band[0]·|Δy|]``: continuous at ``R = band[0]`` when ``band[1] = band[0]²``,
    and the least possible (``"balanced"``) from ``R = band[1]`` (``R = inf`` where
    Δy = 0). Returns ``(keep, allowance)``, the allowance finite everywhere (the scores
    can be differentiated again).
    """
    lo, hi = band
    k_mid = (jnp.abs(ca2 + ca1) + jnp.abs(cb2 + cb1)) / 2
    ady = jnp.abs(ca2 + cb2)
    keep = k_mid <= lo * ady  # not where Δy = 0 but the midpoint credits something
    allowed = hi * ady * (ady / jnp.where(keep, 1, k_mid))
    return keep, jnp.clip(allowed, ady, lo * ady)


def ordering_weights(ca2, cb2, ca1, cb1, p, rule: str):
    """Per output element, the weights ``(w̄, w)`` of the orderings "b first" and
    "a first"; ``w̄ + w = 1`` up to rounding.

    Inputs are the two orderings' contributions at that element, "a first"
    ``(ca1, cb1) = (B(Δa, b⁰), B(a, Δb))`` and "b first" ``(ca2, cb2) = (B(Δa, b),
    B(a⁰, Δb))``, and ``p = ca2 − ca1 = B(Δa, Δb)``. With ``t = w·p``,
    ``|c_a| + |c_b| = |Δy| + 2·dist(t, [min(ca2, −cb2), max(ca2, −cb2)])``: the allowed
    ``t`` form that interval widened by ``(allowance − |Δy|)/2``, and ``t`` is ``p/2``
    projected onto it and then onto ``[0, p]`` (continuous in all arguments; where no
    point of ``[0, p]`` is allowed, the cheapest one). ``s = p − t`` is computed the same
    way from the mirrored bounds (``p − ca2 = −ca1``, ``p + cb2 = cb1``) rather than as
    ``p − t``, so that a weight near 1 leaves its complement accurate: at a reference
    10⁶ away, ``1 − w ≈ 10⁻⁶`` must not be the rounding of ``1 − 0.999999``.
    """
    half = p / 2
    if rule == "midpoint":
        w = jnp.full(jnp.shape(p), 0.5, jnp.result_type(p))
        return w, w
    ady = jnp.abs(ca2 + cb2)
    if rule == "balanced":
        slack = jnp.zeros_like(ady)
    else:  # guarded
        keep, allowance = guard_allowance(ca2, cb2, ca1, cb1)
        slack = (allowance - ady) / 2
    t = _project(half, jnp.minimum(ca2, -cb2) - slack, jnp.maximum(ca2, -cb2) + slack, p)
    s = _project(half, jnp.minimum(-ca1, cb1) - slack, jnp.maximum(-ca1, cb1) + slack, p)
    if rule == "guarded":
        t, s = jnp.where(keep, half, t), jnp.where(keep, half, s)
    nonzero = p != 0
    safe_p = jnp.where(nonzero, p, jnp.ones_like(p))
    w = jnp.clip(jnp.where(nonzero, t / safe_p, 0.5), 0, 1)
    w_bar = jnp.clip(jnp.where(nonzero, s / safe_p, 0.5), 0, 1)
    return w_bar, w


def mixture_weight(u: jax.Array, v: jax.Array, p: jax.Array, rule: str) -> jax.Array:
    """The weight ``w`` of "a first" from ``u = B(Δa, b)``, ``v = B(a⁰, Δb)``,
    ``p = B(Δa, Δb)`` alone (for inspection; the rule uses :func:`ordering_weights`)."""
    return ordering_weights(u, v, u - p, v + p, p, rule)[1]


def least_weights(u0: jax.Array, u1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w̄, w)``, ``w̄ + w = 1`` in ``[0, 1]``, with the least ``|w̄ u0 + w u1|``: 0 where the
    signs differ, else the smaller end."""
    cross = u0 * u1 < 0
    den = jnp.where(cross, u0 - u1, jnp.ones_like(u0))
    first = jnp.abs(u0) <= jnp.abs(u1)
    one, zero = jnp.ones_like(u0), jnp.zeros_like(u0)
    w_bar = jnp.where(cross, -u1 / den, jnp.where(first, one, zero))
    w = jnp.where(cross, u0 / den, jnp.where(first, zero, one))
    return w_bar, w


def still_weights(da, db, ma_ends, mb_ends, w_bar, w):
    """The ordering weights where one operand does not move.

    There its own multiplier multiplies no change: its only effect is upstream, where the
    contributions through it cancel exactly (they sum to its Δ = 0). Any weight is exact, so
    the one with the least ``|m|`` is taken: with a LayerNorm's centred input 0 at both
    sides and the scale ``1/√ε`` at the reference, the midpoint's ``m_a ≈ 1/(2√ε)`` would
    credit each feature hundreds of times Δf and take it back through the mean.
    ``ma_ends``/``mb_ends`` are the multipliers at ``w = 0`` and ``w = 1``.
    """
    a_still, b_still = (da == 0) & (db != 0), (db == 0) & (da != 0)
    wa_bar, wa = least_weights(*ma_ends)
    wb_bar, wb = least_weights(*mb_ends)
    w_bar = jnp.where(a_still, wa_bar, jnp.where(b_still, wb_bar, w_bar))
    w = jnp.where(a_still, wa, jnp.where(b_still, wb, w))
    return w_bar, w


def still_difference(x: jax.Array, r: jax.Array) -> jax.Array:
    """``x - r``, and 0 where ``x == r`` (±inf on both sides: a mask, not inf − inf)."""
    return jnp.where(x == r, jnp.zeros((), jnp.result_type(x, r)), x - r)


def product_rule(prim: Any, ctx: Any, a: Any, b: Any, **params: Any) -> Any:
    """``prim`` bilinear (mul, dot_general, conv), both operands varying Pairs.

    The multipliers are ``m_a = w̄·b + w·b⁰`` and ``m_b = w̄·a⁰ + w·a`` (elementwise), or
    for a contraction the VJPs of ``B(·, b)``, ``B(·, b⁰)``, ``B(a⁰, ·)`` and ``B(a, ·)``
    with the cotangent weighted by ``w̄`` or ``w`` per output element.
    """
    rule = ctx.options.product_rule

    def B(u, v):
        return prim.bind(u, v, **params)

    yr = B(a.r, b.r)

    if prim.name == "mul":

        def backward(args, y, g):
            ax, bx, ar, br, yr_ = args
            ax, bx, ar, br = jnp.broadcast_arrays(ax, bx, ar, br)
            da, db = still_difference(ax, ar), still_difference(bx, br)
            w_bar, w = ordering_weights(da * bx, ar * db, da * br, ax * db, da * db, rule)
            if rule != "midpoint":
                w_bar, w = still_weights(da, db, (bx, br), (ar, ax), w_bar, w)
            # no cotangent, no contribution (0 * inf where a reference operand is infinite)
            return times(g, w_bar * bx + w * br), times(g, w_bar * ar + w * ax), None, None, None

    else:

        def backward(args, y, g):
            ax, bx, ar, br, yr_ = args
            da = ax - ar
            ca2, ca1 = B(da, bx), B(da, br)
            dy = y - yr_
            # cb2 = B(a⁰, Δb), cb1 = B(a, Δb) by summation (they only set the weights)
            w_bar, w = ordering_weights(ca2, dy - ca2, ca1, dy - ca1, ca2 - ca1, rule)
            g2, g1 = g * w_bar, g * w
            (ga2,) = jax.vjp(lambda s: B(s, bx), ax)[1](g2)
            (ga1,) = jax.vjp(lambda s: B(s, br), ax)[1](g1)
            (gb2,) = jax.vjp(lambda s: B(ar, s), bx)[1](g2)
            (gb1,) = jax.vjp(lambda s: B(ax, s), bx)[1](g1)
            return ga2 + ga1, gb2 + gb1, None, None, None

    def primal(ax, bx, ar, br, yr_):
        return B(ax, bx)

    ya = custom_multiplier(primal, backward)(a.x, b.x, a.r, b.r, yr)
    return Pair(ya, yr)


def quotient_rule(prim: Any, ctx: Any, a: Any, b: Any, **params: Any) -> Any:
    """``a / b`` with both operands varying Pairs: the product rule on ``a · c``, ``c = 1/b``.

    Every quotient is a product with a reciprocal, so its orderings are those of
    :func:`product_rule`: "a first" ``C_a = Δa/b⁰``, ``C_b = a Δc``; "b first"
    ``C_a = Δa/b``, ``C_b = a⁰ Δc``, mixed per element with the weights of
    ``product_rule=`` (``"midpoint"``: weight ½, which is the two-player Shapley value of
    ``a/b``). ``c``'s difference is ``Δc = -Δb/(b b⁰)``, never ``1/b - 1/b⁰``, so
    ``m_b = m_c · (-1/(b b⁰))`` carries no cancellation. At a norm's degenerate reference
    (``x / sqrt(Σx² + ε)`` at x⁰ = 0: ``a⁰ = 0``, ``b⁰ = √ε``) the Shapley value credits each
    feature ``~Δa/(2√ε)`` through ``a`` and takes it back through ``b``, thousands of times
    Δy; "guarded" moves to "b first" there, ``C_a = Δa/b`` and ``C_b = a⁰ Δc = 0``.

    Elements where an operand does not move (both sides ±inf included) form no inf − inf.
    Where ``b⁰ = 0`` the reference's value ``a⁰/0`` is not finite and no finite scores sum
    to Δy.
    """
    rule = ctx.options.product_rule

    def backward(args, y, g):
        ax, bx, ar, br = jnp.broadcast_arrays(*args)
        da, db = still_difference(ax, ar), still_difference(bx, br)
        cx, cr = 1 / bx, 1 / br
        k = -(cx * cr)  # Δc/Δb, and c's derivative -1/b² where b does not move
        dc = k * db
        w_bar, w = ordering_weights(da * cx, ar * dc, da * cr, ax * dc, da * dc, rule)
        if rule != "midpoint":
            w_bar, w = still_weights(da, db, (cx, cr), (ar, ax), w_bar, w)
        # no cotangent, no contribution (an element whose value is ±inf on both sides)
        return times(g, w_bar * cx + w * cr), times(g, (w_bar * ar + w * ax) * k), None, None

    def primal(ax, bx, ar, br):
        return prim.bind(ax, bx, **params)

    ya = custom_multiplier(primal, backward)(a.x, b.x, a.r, b.r)
    return Pair(ya, prim.bind(a.r, b.r, **params))
