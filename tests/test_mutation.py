"""The default suite catches a wrong rule that still sums to delta.

Summation to delta alone cannot tell a right split from a wrong one: any split of Δy among
the operands sums to Δy. Here the product rule is replaced by one that gives every varying
operand of ``a * b`` the same multiplier ``Δy / (Δa + Δb)`` (contributions proportional to
each operand's own change). Its scores still sum to delta, and the per-element oracle of
``test_oracles`` (exact two-player Shapley values of the product) rejects them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_oracles

import deepliftjax as dl
from deepliftjax import rules

MUL_P = next(p for p in rules.RULES if p.name == "mul")


def _proportional_split(original):
    def rule(ctx, a, b, **params):
        if not (isinstance(a, rules.Pair) and isinstance(b, rules.Pair)):
            return original(ctx, a, b, **params)  # one constant operand: linear, unchanged

        def backward(args, y, g):
            ax, bx, ar, br, yr = args
            d = (ax - ar) + (bx - br)
            m = jnp.where(d == 0, 0.0, (y - yr) / jnp.where(d == 0, 1.0, d))
            return g * m, g * m, None, None, None

        yr = a.r * b.r
        ya = rules.custom_multiplier(lambda ax, bx, ar, br, yr: ax * bx, backward)(
            a.x, b.x, a.r, b.r, yr
        )
        return rules.Pair(ya, yr)

    return rule


def test_a_sum_preserving_wrong_product_split_fails_the_oracle_table(monkeypatch):
    case = next(c for c in test_oracles.CASES if c.name == "mul")
    test_oracles.test_rule_matches_oracle(case, "plain")  # the real rule passes

    monkeypatch.setitem(rules.RULES, MUL_P, _proportional_split(rules.RULES[MUL_P]))
    # the mutant still sums to delta, so summation tests alone would pass it
    with jax.enable_x64(True):
        x, r = (jnp.asarray(v[0], jnp.float64) for v in test_oracles._draws(case, 1))
        w = jnp.asarray(test_oracles._weights(case), jnp.float64)
        f = lambda v: jnp.sum(w * case.fn(v))
        c = dl.deeplift(f, r, **dict(case.opts))(x)
        np.testing.assert_allclose(float(c.sum()), float(f(x) - f(r)), rtol=1e-9)
    with pytest.raises(pytest.fail.Exception, match="mul contributions"):
        test_oracles.test_rule_matches_oracle(case, "plain")
