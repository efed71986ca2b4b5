"""A jump whose local switch score is not finite is credited to the inputs its predicate
reads, through the value the non-finite one was computed from elementwise (its
provenance), not to every input by the input distance.

Each case: f, input, reference, and the exact per-element scores; run plain, jitted and
vmapped (the batch holds the case twice and a row equal to the reference, which scores 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepliftjax as dl


class Case(NamedTuple):
    f: object
    x: list
    ref: list
    scores: list


CASES = {
    # isfinite(log x0) flips as x0 leaves 0; x1 is read only by 0 * x1
    "isfinite_log": Case(
        lambda x: jnp.where(jnp.isfinite(jnp.log(x[0])), 1.0, 0.0) + 0 * x[1],
        [1.0, 2.0], [0.0, 1.0], [1.0, 0.0],
    ),
    # a margin with an infinite side: log(0) > -1 at the reference
    "log_margin": Case(
        lambda x: jnp.where(jnp.log(x[0]) > -1.0, 3.0, 0.0) + 0 * x[1],
        [1.0, 2.0], [0.0, 1.0], [3.0, 0.0],
    ),
    # 1 / 0 is inf at the reference: the provenance goes through div by the input
    "isinf_reciprocal": Case(
        lambda x: jnp.where(jnp.isinf(1.0 / x[0]), 5.0, 0.0) + x[1],
        [1.0, 2.0], [0.0, 1.0], [-5.0, 1.0],
    ),
    # NaN == NaN is false: sqrt of a negative at the reference, via x0 - 1.5
    "nan_equality": Case(
        lambda x: jnp.where(jnp.sqrt(x[0] - 1.5) == jnp.sqrt(x[0] - 1.5), 1.0, 0.0) + 0 * x[1],
        [2.0, 2.0], [1.0, 1.0], [1.0, 0.0],
    ),
    # per element: each mask element is credited to its own input
    "vector_mask": Case(
        lambda x: jnp.sum(jnp.where(jnp.isfinite(jnp.log(x)), x, 0.0)),
        [1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [1.0, 2.0, 2.0],
    ),
    # a chain of elementwise steps, each infinite at the reference: exp(-log(x0))
    "chain": Case(
        lambda x: jnp.where(jnp.isfinite(jnp.exp(-jnp.log(x[0]))), 4.0, 1.0) + 0 * x[1],
        [1.0, 2.0], [0.0, 3.0], [3.0, 0.0],
    ),
}  # fmt: skip
MODES = ("plain", "jit", "vmap")


def _scores(case: Case, mode: str) -> np.ndarray:
    x, ref = jnp.asarray(case.x), jnp.asarray(case.ref)
    g = dl.deeplift(case.f, ref)
    if mode == "jit":
        return np.asarray(jax.jit(g)(x))
    if mode == "vmap":
        out = np.asarray(jax.jit(jax.vmap(g))(jnp.stack([x, ref, x])))
        np.testing.assert_array_equal(out[1], 0.0)  # the reference itself scores 0
        np.testing.assert_array_equal(out[0], out[2])
        return out[0]
    return np.asarray(g(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_jump_goes_to_the_inputs_the_predicate_reads(name, mode):
    case = CASES[name]
    c = _scores(case, mode)
    delta = float(case.f(jnp.asarray(case.x)) - case.f(jnp.asarray(case.ref)))
    assert np.all(np.isfinite(c)), c
    assert abs(c.sum() - delta) <= 1e-5 * max(1.0, abs(delta))
    np.testing.assert_allclose(c, case.scores, rtol=1e-6, atol=1e-6)


def test_provenance_through_a_product_splits_as_the_product_rule():
    """``log(x0 * x1)``: the product is the provenance, and its own multipliers (the
    midpoint product rule) split the jump: Δ(x0 x1) = 2 = 1.5 (x0) + 0.5 (x1)."""

    def f(x):
        return jnp.where(jnp.isfinite(jnp.log(x[0] * x[1])), 1.0, 0.0)

    x, ref = jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0])
    for c in (dl.deeplift(f, ref)(x), jax.jit(dl.deeplift(f, ref))(x)):
        np.testing.assert_allclose(c, [0.75, 0.25], rtol=1e-6)


def test_a_sum_of_two_varying_values_falls_back_to_the_input_distance():
    """``log x0 + log x1``: two varying operands, no single provenance; the input distance
    scores the jump (credit in proportion to Δx²) and the sum is exact."""

    def f(x):
        return jnp.where(jnp.isfinite(jnp.log(x[0]) + jnp.log(x[1])), 1.0, 0.0)

    x, ref = jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0])
    for c in (dl.deeplift(f, ref)(x), jax.jit(dl.deeplift(f, ref))(x)):
        np.testing.assert_allclose(c, [0.5, 0.5], rtol=1e-6)
