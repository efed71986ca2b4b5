"""The rule table and every per-primitive trait, filled by one call: :func:`register_rule`.

The interpreter asks a primitive more than "what is your rule": whether it is elementwise
(switch scores fall back along elementwise chains), whether its value can leave the finite
numbers at a finite operand, whether it only moves values around (exact pairs stay exact,
switch scores move with the values), whether it interprets a jaxpr of its own, and how its
boolean or integer result is scored. Each answer is a table here, and each table is written
only by :func:`register_rule`, so a primitive's traits are declared in the one line that
registers its rule (the category helpers, ``deflinear``, ``defrescale``, ... pass them on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepliftjax._errors import error

Rule = Callable[..., Any]

RULES: dict[Any, Rule] = {}
"""DeepLIFT's rule for each primitive (the Rescale rule set; the other rule sets of
``_rulesets`` fall back to it)."""

CALLS: set[Any] = set()
"""Primitives whose rule interprets an inner jaxpr (they take discrete pairs as they are)."""

ELEMENTWISE: set[Any] = set()
"""Elementwise primitives. When one of them has a single float pair operand of the output's
shape, and is in :data:`DOMAIN_EDGE` or its operand already has a provenance, the
interpreter records that operand as the output's provenance (``out.s``): where the output's
difference is not finite, a switch score falls back to the operand's
(``_discrete.with_provenance``)."""

DOMAIN_EDGE: set[Any] = set()
"""Elementwise primitives whose value can be infinite or NaN at a finite operand (the edge of
their domain, a pole, overflow): where provenance starts. Chains without them carry none,
so models without such values pay nothing for it."""

MOVES_FIRST: set[Any] = set()
"""Maps that move the values of their first operand without rounding them (the other
operands, if any, are indices)."""

MOVES_ALL: set[Any] = set()
"""Maps that move the values of every operand without rounding them."""

EXACT: set[Any] = set()
"""Primitives whose outputs are exact when their pair operands are (:attr:`Pair.exact`):
the maps of :data:`MOVES_FIRST` and :data:`MOVES_ALL`, and ``neg``."""

UNIT_LINEAR: set[Any] = set()
"""Linear maps whose coefficients are all +1 (sums, scatters of sums): RevealCancel maps
the positive and negative parts of a split difference through them, as through the maps
that move values."""

SCORES: dict[Any, Callable[..., Any]] = {}
"""How a primitive with boolean or integer results scores them (``_discrete``): a builder
``(ctx, prim, invals, params, outs) -> candidate scores``. Primitives without an entry get
the generic one (moved with the values, summed by reductions, averaged elementwise)."""

RESCALE_PRIMS: dict[Any, bool] = {}
"""Unary primitives under Rescale, mapped to whether they are smooth (RevealCancel and the
gradient-based rule sets treat them alike)."""

MOVES = ("first", "all")


def register_rule(
    prim: Any,
    rule: Rule | None,
    *,
    elementwise: bool = False,
    domain_edge: bool = False,
    moves: str | None = None,
    exact: bool = False,
    unit_linear: bool = False,
    call: bool = False,
    score: Callable[..., Any] | None = None,
    rescale: bool | None = None,
) -> None:
    """Register ``rule`` for ``prim`` together with the primitive's traits.

    Args:
      prim: a ``jax.extend.core.Primitive``; ``None`` (a primitive this JAX version does not
        have) is ignored.
      rule: the DeepLIFT rule ``rule(ctx, *operands, **params)``, or ``None`` to declare
        traits only (a comparison has no float result to give a rule, only a ``score``).
      elementwise: the primitive maps elements to elements (provenance follows it).
      domain_edge: its value can be infinite or NaN at a finite operand (``log``, ``div``).
      moves: ``"first"`` or ``"all"``: it moves the values of its first (every) operand
        without rounding them; implies ``exact``.
      exact: its outputs are exact where its pair operands are (``neg``).
      unit_linear: it is linear with all coefficients +1 (``add``, ``reduce_sum``).
      call: its rule interprets a jaxpr held in its parameters.
      score: the switch-score builder for its boolean or integer results.
      rescale: it is a unary nonlinearity under Rescale; True if smooth, False if not.

    Raises:
      DeepLiftError: ``moves`` is not one of ``"first"``, ``"all"`` or None, or ``rule``
        or ``score`` is not callable.
    """
    if moves is not None and moves not in MOVES:
        raise error(
            f"register_rule: moves={moves!r} is not one of {MOVES} or None.",
            "'first' for a map that moves its first operand's values (reshape, gather), "
            "'all' for one that moves every operand's (concatenate, pad).",
        )
    for name, fn in (("rule", rule), ("score", score)):
        if fn is not None and not callable(fn):
            raise error(
                f"register_rule: {name}={fn!r} is not callable.",
                f"pass a function {name}(ctx, ...) or None.",
            )
    if prim is None:
        return
    if rule is not None:
        RULES[prim] = rule
    if elementwise:
        ELEMENTWISE.add(prim)
    if domain_edge:
        DOMAIN_EDGE.add(prim)
    if moves is not None:
        (MOVES_FIRST if moves == "first" else MOVES_ALL).add(prim)
    if exact or moves is not None:
        EXACT.add(prim)
    if unit_linear:
        UNIT_LINEAR.add(prim)
    if call:
        CALLS.add(prim)
    if score is not None:
        SCORES[prim] = score
    if rescale is not None:
        RESCALE_PRIMS[prim] = bool(rescale)


def traits(prim: Any) -> dict[str, Any]:
    """What the tables say about ``prim`` (for inspection and tests)."""
    moves = "first" if prim in MOVES_FIRST else "all" if prim in MOVES_ALL else None
    return {
        "rule": RULES.get(prim),
        "elementwise": prim in ELEMENTWISE,
        "domain_edge": prim in DOMAIN_EDGE,
        "moves": moves,
        "exact": prim in EXACT,
        "unit_linear": prim in UNIT_LINEAR,
        "call": prim in CALLS,
        "score": SCORES.get(prim),
        "rescale": RESCALE_PRIMS.get(prim),
    }
