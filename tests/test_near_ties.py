"""Near ties: jumps credited exactly, with bounded scores, against exact Shapley values.

A switch score's difference must be what its multipliers account for, or a jump divided by
it is off by their ratio:

- (c) predicates on the raw inputs at a tie against a near tie. ``Δx0`` and ``Δx1`` are
  rounded separately, so ``(x0 - x1) - (r0 - r1)`` is not ``Δx0 - Δx1``; a margin that moved
  1e-7 while its operands moved 1e4 would credit ±1e8 that sum to 0 where Δf = 1. Scores
  are built from the rounded ``Δx`` the contributions use, and a margin whose operands moved
  more than ``SPREAD`` times as much as it did splits its jump as the predicate's
  two-player Shapley value (bounded by |J| per operand).
- (h) a near tie behind upstream cancellation: ``-1 + 1e-6 + 1`` rounds to 1.0013e-6 in
  float32 while its multipliers account for 1e-6 (1.3% off). The interpreter carries
  each pair's accounted difference Σ m·Δx forward wherever a jump could amplify it.

Each case runs plain, under ``jit`` and under ``vmap`` (jit and vmap in one compiled
program; the vmap batch holds the case and a row equal to the reference, which scores
exactly 0). Every case is checked per element: against the exact Shapley values
(tests/_shapley.py: all 2^n coalitions in float64) where DeepLIFT's value is defined to
equal them (one varying operand per predicate, or a near tie split by the predicate's
Shapley value), else against a closed form; and every case for summation to Δf in float64
(1e-5 relative) and for bounded scores (max|C| ≤ 10 max|φ|). The default suite runs one
case per predicate and family, the slow suite all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalition_values, shapley_from_values

import deepliftjax as dl
from deepliftjax import _discrete

SHAPLEY = "shapley"  # expected per element: the exact Shapley values


def _relu(v):
    return jnp.where(v > 0, v, 0.0)


# name: (f, x, ref, expected per element: SHAPLEY or a closed form)
CASES = {
    # ---- (c) raw inputs: a tie on one side, a near tie on the other --------------------
    "gt_tie_at_input": (
        lambda x: jnp.where(x[0] > x[1], 1.0, 0.0) + x[2],
        [1.0, 1.0, 2.0], [1e-7, 0.0, 1.0], SHAPLEY,
    ),
    "gt_magnitudes_1e4_1e-4": (
        lambda x: jnp.where(x[0] > x[1], 1.0, 0.0),
        [1e4, 1e4], [1e-4 + 1e-11, 1e-4], SHAPLEY,
    ),
    "gt_tie_at_reference": (
        lambda x: jnp.where(x[0] > x[1], 3.0, 0.0) - x[2],
        [2.0, 2.0 - 2**-22, 0.5], [0.25, 0.25, 1.0], SHAPLEY,
    ),
    "ge_near_tie": (
        lambda x: jnp.where(x[0] >= x[1], 1.0, 0.0),
        [3.0, 3.0 + 2**-22], [1e-3, 1e-3], SHAPLEY,
    ),
    "lt_one_ulp_of_1e4": (
        lambda x: jnp.where(x[0] < x[1], 2.0, -1.0),
        [1e4, 1e4 + 2**-9], [1e-4, 1e-4], SHAPLEY,
    ),
    "eq_tie_at_input": (
        lambda x: jnp.where(x[0] == x[1], 1.0, 0.0),
        [1e4, 1e4], [1.1e-4, 1e-4], SHAPLEY,
    ),
    "ne_tie_at_reference": (
        lambda x: jnp.where(x[0] != x[1], 1.0, 0.0) + x[2] ** 2,
        [5.0, 5.0 + 2**-21, 1.0], [-7.0, -7.0, 2.0], SHAPLEY,
    ),
    "argmax_near_tie": (
        lambda x: jnp.where(jnp.argmax(x[:2]) == 0, 1.0, 0.0),
        [1e4, 1e4], [1.1e-4, 1.2e-4], SHAPLEY,
    ),
    "argmin_near_tie": (
        lambda x: jnp.where(jnp.argmin(x[:2]) == 1, x[2], 0.0),
        [3.0, 3.0 - 2**-22, 1.0], [-1.0, -1.0 + 1e-7, 1.0], SHAPLEY,
    ),
    "and_of_a_near_tie": (
        lambda x: jnp.where((x[0] > x[1]) & (x[2] > 0), 1.0, 0.0),
        [1.0, 1.0, 1.0], [1e-7, 0.0, 1.0], SHAPLEY,
    ),
    "vector_of_near_ties": (
        lambda x: jnp.sum(jnp.where(x[:3] > x[3:], 1.0, 0.0)),
        [1e4, 1.0, 7.0, 1e4, 1.0, 8.0], [2e-4, 1e-7, 7.0, 1e-4, 0.0, 7.0], SHAPLEY,
    ),
    # the linear split below SPREAD (κ = 7): J Δa/Δs = [4, -3]; above it (κ = 19): Shapley
    "well_conditioned_margin": (
        lambda x: jnp.where(x[0] > x[1], 1.0, 0.0),
        [1.0, 0.75], [0.0, 0.0], [4.0, -3.0],
    ),
    "ill_conditioned_margin": (
        lambda x: jnp.where(x[0] > x[1], 1.0, 0.0),
        [1.0, 0.9], [0.0, 0.0], SHAPLEY,
    ),
    # ---- (h) upstream cancellation: (-1 + 1e-6) + 1 rounds to 1.0013e-6 in float32 ------
    "cancel_gt": (
        lambda x: jnp.where((x[0] + x[1]) + x[2] > 0, 1.0, 0.0),
        [-1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0], SHAPLEY,
    ),
    "cancel_eq": (
        lambda x: jnp.where((x[0] + x[1]) + x[2] == 0, 0.0, 4.0) + x[3],
        [-1.0, 1e-6, 1.0, 2.0], [-1.0, 0.0, 1.0, 1.0], SHAPLEY,
    ),
    "cancel_dot": (
        lambda x: jnp.where(jnp.dot(jnp.array([1.0, 1.0, 1.0]), x) > 5e-7, 1.0, 0.0),
        [-1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0], SHAPLEY,
    ),
    "cancel_tanh": (
        lambda x: jnp.where(jnp.tanh(4 * ((x[0] + x[1]) + x[2])) > 0, 1.0, 0.0),
        [-1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0], SHAPLEY,
    ),
    "cancel_argmax": (
        lambda x: jnp.where(jnp.argmax(jnp.stack([(x[0] + x[1]) + x[2], x[3]])) == 0, 2.0, 0.0),
        [-1.0, 2e-6, 1.0, 1e-6], [-1.0, 0.0, 1.0, 1e-6], SHAPLEY,
    ),
    "cancel_int_cast": (
        lambda x: jnp.floor(1e6 * ((x[0] + x[1]) + x[2]) + 0.5).astype(jnp.int32) * 1.0,
        [-1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0], SHAPLEY,
    ),
    # a where-ReLU (a jump that cannot amplify) between the cancellation and the step
    "cancel_through_where_relu": (
        lambda x: jnp.where(_relu((x[0] + x[1]) + x[2]) > 5e-7, 1.0, 0.0),
        [-1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0], SHAPLEY,
    ),
    # both operands cancel: a linear margin (κ = 2): [1.5, -0.5] at x1 and x3
    "cancel_both_operands": (
        lambda x: jnp.where((x[0] + x[1]) + x[2] > (x[3] + x[4]) - x[4], 1.0, 0.0),
        [-1.0, 3e-6, 1.0, 1e-6, 1.0], [-1.0, 0.0, 1.0, 0.0, 1.0], [0, 1.5, 0, -0.5, 0],
    ),
}  # fmt: skip


def _scores(f, x, ref):
    """{mode: scores} (plain op by op; jit and vmap compiled as one program). vmap's batch
    is [x, ref]: the reference row must score exactly 0."""
    t = dl.deeplift(f, ref)

    def compiled(v):
        return t(v), jax.vmap(t)(jnp.stack([v, ref]))

    jitted, batch = jax.jit(compiled)(x)
    np.testing.assert_array_equal(batch[1], 0.0)
    return {"plain": t(x), "jit": jitted, "vmap": batch[0]}


SLOW = {
    "gt_tie_at_reference", "lt_one_ulp_of_1e4", "ne_tie_at_reference", "argmin_near_tie",
    "and_of_a_near_tie", "cancel_eq", "cancel_tanh", "cancel_int_cast", "cancel_both_operands",
}  # fmt: skip
"""Cases run only in the slow suite; the default suite keeps one per predicate and family."""


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in CASES]
)
def test_near_tie_is_exact_and_bounded(name):
    f, x, ref, expected = CASES[name]
    x, ref = jnp.asarray(x, jnp.float32), jnp.asarray(ref, jnp.float32)
    values = coalition_values(f, x, ref)  # all 2^n hybrids in float64, one compiled call
    phi, delta = shapley_from_values(values, x.size), values[-1] - values[0]
    want = phi if isinstance(expected, str) else np.asarray(expected, np.float64)
    for mode, c in _scores(f, x, ref).items():
        c = np.asarray(c, np.float64)
        assert np.all(np.isfinite(c)), (mode, c)
        assert abs(c.sum() - delta) <= 1e-5 * abs(delta), (mode, c, delta)
        assert np.abs(c).max() <= 10 * np.abs(phi).max(), (mode, c, phi)
        np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-6 * abs(delta), err_msg=mode)


def test_upstream_cancellation_needs_the_accounted_difference(monkeypatch):
    """Without the accounted differences (the interpreter carrying none), the float change
    of ``(x0 + x1) + x2`` (1.0013e-6 for 1e-6) credits 0.987 of a jump of 1: the case above
    reproduces the near tie, and the accounted difference is what makes it exact."""
    f, x, ref, _ = CASES["cancel_gt"]
    x, ref = jnp.asarray(x, jnp.float32), jnp.asarray(ref, jnp.float32)
    exact = np.asarray(jax.jit(dl.deeplift(f, ref))(x))
    np.testing.assert_allclose(exact, [0, 1, 0], atol=1e-6)
    monkeypatch.setattr(_discrete, "accounted_equations", lambda jaxpr: frozenset())
    off = np.asarray(jax.jit(dl.deeplift(f, ref, check=None))(x))
    assert abs(off.sum() - 1) > 1e-3, off


W = jnp.array([[1.0, -2.0, 0.5], [0.25, 1.0, -1.0], [2.0, 0.5, 1.0]])


@pytest.mark.parametrize(
    "name, g, amplifies",
    [
        ("where_relu", lambda h: jnp.where(h > 0, h, 0.0) @ W, False),
        ("leaky_relu", lambda h: jax.nn.leaky_relu(h, 0.1), False),
        ("elu", jax.nn.elu, False),
        ("clip_by_where", lambda h: jnp.where(h < 1.0, h, 1.0), False),
        ("max_by_where", lambda h: jnp.where(h[:2] > h[1:], h[:2], h[1:]), False),
        ("relu_and_max", lambda h: jax.nn.relu(h) + jnp.max(h), False),
        ("step", lambda h: jnp.where(h > 0, 1.0, 0.0), True),
        ("where_relu_then_argmax", lambda h: jnp.argmax(jnp.where(h > 0, h, 0.0)) * 1.0, True),
        ("relu_by_where_negated", lambda h: jnp.where(~(h > 0), 0.0, h), True),
        ("predicate_in_a_cond", lambda h: jax.lax.cond(h[0] > 0, jnp.sin, jnp.cos, h), True),
        ("int_cast", lambda h: h.astype(jnp.int32) * 1.0, True),
    ],
)
def test_which_models_carry_accounted_differences(name, g, amplifies):
    """Only switch points whose jump can be large against their margin's change make the
    interpreter carry accounted differences (here of ``h = x @ W``); selects whose two
    cases agree where the margin is 0 (ReLU, leaky ReLU, ELU, clipping, max written with
    ``where``) do not, so such models pay nothing for it."""
    jaxpr = jax.make_jaxpr(lambda x: g(x @ W))(jnp.ones(3)).jaxpr
    assert bool(_discrete.accounted_equations(jaxpr)) == amplifies
