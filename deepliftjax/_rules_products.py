"""Alternative rules for products of two varying operands (``product_rule=``).

The default, ``"midpoint"``, is the paper's rule (§2.3.5) and lives with the other
elementwise rules. The rules here are selected with ``deeplift(..., product_rule=...)``.

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
hundreds of times ``Δy``; float32 then loses the sum (issue 15, class 8).

Two rules choose ``t`` per output element:

* ``"balanced"``: the ``t`` in ``[0, P]`` with the least ``|c_a| + |c_b|``, nearest the
  midpoint among those (the midpoint itself wherever it has no cancellation).
* ``"guarded"``: the midpoint wherever its ``|c_a| + |c_b|`` is at most ``10|Δy|``;
  beyond, the nearest ``t`` to the midpoint whose ``|c_a| + |c_b|`` is at most an
  allowance that falls from ``10|Δy|`` to the least possible as the midpoint's ratio
  ``R = (|c_a| + |c_b|)/|Δy|`` goes from 10 to 100 (geometrically in R); so
  ``"balanced"`` for ``R >= 100`` (:data:`GUARD_BAND`). At the degenerate LayerNorm,
  ``R = b⁰/b = σ/√ε`` (316 at ε = 1e-5 and σ = 1), and the two rules agree.

Both are exact for any weights, continuous in the operands, and symmetric in ``a ↔ b``
and in input ↔ reference. Cost: for ``mul`` a few elementwise operations more than the
midpoint; for ``dot_general``/``conv`` two more products in the backward pass's forward
(``u``, ``P``) and four transposed products instead of two.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

PRODUCT_RULES = ("midpoint", "guarded", "balanced")

GUARD_BAND = (10.0, 100.0)
"""``"guarded"``: the midpoint is kept where its ``|c_a| + |c_b|`` is at most
``GUARD_BAND[0]·|Δy|``; beyond, the allowance shrinks to ``|Δy|`` (``"balanced"``) by
``GUARD_BAND[1]·|Δy|``."""


def _clip_cost(u, v, p, allowance):
    """The ``t`` in ``[0, p]`` nearest ``p/2`` with ``|u − t| + |v + t| <= allowance``, or,
    where there is none, the one with the least ``|u − t| + |v + t|``.

    ``|u − t| + |v + t| = |u + v| + 2·dist(t, [min(u, −v), max(u, −v)])``, so the allowed
    ``t`` form that interval widened by ``(allowance − |u + v|)/2``; projecting ``p/2`` onto
    it and then onto ``[0, p]`` gives the answer. Continuous in all arguments.
    """
    slack = jnp.maximum(allowance - jnp.abs(u + v), 0) / 2
    t = jnp.clip(p / 2, jnp.minimum(u, -v) - slack, jnp.maximum(u, -v) + slack)
    return jnp.clip(t, jnp.minimum(p, 0), jnp.maximum(p, 0))


def guard_allowance(u: jax.Array, v: jax.Array, p: jax.Array, band=GUARD_BAND):
    """Where ``"guarded"`` keeps the midpoint, and the ``|c_a| + |c_b|`` it allows
    elsewhere, in units of ``|Δy|``.

    With ``R = (|c_a| + |c_b|) / |Δy|`` at the midpoint: the midpoint stays up to
    ``R = band[0]``; beyond, the allowance falls from ``band[0]`` to 1 geometrically as
    ``log R`` goes from ``log band[0]`` to ``log band[1]``; 1 beyond (``R = inf`` where
    Δy = 0). Returns ``(keep, allowance)``; the allowance is finite everywhere (the
    scores can be differentiated again).
    """
    lo, hi = band
    k_mid = jnp.abs(u - p / 2) + jnp.abs(v + p / 2)
    ady = jnp.abs(u + v)
    big = k_mid > lo * ady  # also where Δy = 0 but the midpoint credits something
    moved = ady > 0
    ratio = jnp.where(big, k_mid, 1) / jnp.where(big & moved, lo * ady, 1)
    frac = jnp.clip(jnp.log(ratio) / math.log(hi / lo), 0, 1)
    frac = jnp.where(big & moved, frac, 1)
    return ~big, (lo ** (1 - frac)).astype(jnp.result_type(p))


def mixture_weight(u: jax.Array, v: jax.Array, p: jax.Array, rule: str) -> jax.Array:
    """Per output element, the weight ``w ∈ [0, 1]`` of the ordering "a first" (t = w·p).

    ``u = B(Δa, b)``, ``v = B(a⁰, Δb)``, ``p = B(Δa, Δb)`` at that element.
    """
    if rule == "midpoint":
        return jnp.full(jnp.shape(p), 0.5, jnp.result_type(p))
    ady = jnp.abs(u + v)
    if rule == "balanced":
        t = _clip_cost(u, v, p, ady)
    else:  # guarded
        keep, allowance = guard_allowance(u, v, p)
        t = jnp.where(keep, p / 2, _clip_cost(u, v, p, allowance * ady))
    nonzero = p != 0
    w = jnp.where(nonzero, t / jnp.where(nonzero, p, jnp.ones_like(p)), 0.5)
    return jnp.clip(w, 0, 1)


def product_rule(prim: Any, ctx: Any, a: Any, b: Any, **params: Any) -> Any:
    """``prim`` bilinear (mul, dot_general, conv), both operands varying Pairs."""
    from deepliftjax._rules_elementwise import custom_multiplier

    rule = ctx.options.product_rule

    def B(u, v):
        return prim.bind(u, v, **params)

    yr = B(a.r, b.r)

    if prim.name == "mul":

        def backward(args, y, g):
            ax, bx, ar, br, yr_ = args
            ax, bx, ar, br = jnp.broadcast_arrays(ax, bx, ar, br)
            da, db = ax - ar, bx - br
            w = mixture_weight(da * bx, ar * db, da * db, rule)
            ma = bx - w * db  # (1 - w) b + w b⁰
            mb = ar + w * da  # (1 - w) a⁰ + w a
            zero = g == 0  # no 0 * inf where the output does not matter
            return (
                jnp.where(zero, 0, g * ma),
                jnp.where(zero, 0, g * mb),
                None,
                None,
                None,
            )

    else:

        def backward(args, y, g):
            ax, bx, ar, br, yr_ = args
            da, db = ax - ar, bx - br
            u = B(da, bx)
            p = B(da, db)
            v = (y - yr_) - u  # = B(a⁰, Δb); only sets the weights, not the sum
            gw = g * mixture_weight(u, v, p, rule)
            # C_a = B(Δa, b) − w B(Δa, Δb),  C_b = B(a⁰, Δb) + w B(Δa, Δb)
            (ga1,) = jax.vjp(lambda s: B(s, bx), ax)[1](g)
            (ga2,) = jax.vjp(lambda s: B(s, db), ax)[1](gw)
            (gb1,) = jax.vjp(lambda s: B(ar, s), bx)[1](g)
            (gb2,) = jax.vjp(lambda s: B(da, s), bx)[1](gw)
            return ga1 - ga2, gb1 + gb2, None, None, None

    def primal(ax, bx, ar, br, yr_):
        return B(ax, bx)

    ya = custom_multiplier(primal, backward)(a.x, b.x, a.r, b.r, yr)
    return type(a)(ya, yr)  # a Pair, like the operands
