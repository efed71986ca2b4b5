"""Values that are ±inf at both the input and the reference (``-inf`` masks) in Rescale and
in products and quotients of two varying operands.

An element that does not move contributes nothing, whatever its value: at ``-inf`` on both
sides a change upstream moves nothing (``-inf + 1 = -inf``), so its multiplier is exactly 0,
and no ``inf - inf`` may reach a secant, a product's orderings or a quotient's. Each case
runs plain, under ``jit`` and under ``vmap`` (a batch holding the input and the reference:
the reference's row scores exactly 0), against float64: per element where the function is
a sum of one-input terms (closed form), otherwise summation to Δf and the exact Shapley
values (masked inputs are dummies: φ = 0, and their scores must be exactly 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalition_values, shapley_from_values
from jax import lax

import deepliftjax as dl

MASK = np.array([0.0, -np.inf, 0.0, -np.inf, 0.0], np.float32)
MASKED = ~np.isfinite(MASK)
W = np.array([0.3, -1.2, 0.7, 2.0, -0.4], np.float32)
X = np.array([0.5, -1.0, 2.0, 0.3, -0.7], np.float32)
R = np.array([0.1, 0.4, -0.5, 0.3, 0.2], np.float32)


def _masked(z):
    return z + jnp.asarray(MASK, z.dtype)


def _w(z):
    return jnp.asarray(W, z.dtype)


# (name, f, per-element term h(z_i) or None): f = Σ W_i h(z_i + mask_i) where h is given
SEPARABLE = [
    ("exp", jnp.exp),
    ("tanh", jnp.tanh),
    ("logistic", jax.nn.sigmoid),
    ("erf", lax.erf),
    ("exp_of_square", lambda v: jnp.exp(-(v**2))),
    ("log1p_exp", lambda v: jnp.log1p(jnp.exp(v))),
    ("tanh_plus_inf", lambda v: jnp.tanh(-v)),  # -(-inf): +inf on both sides
    ("atan", jnp.arctan),
    ("exp_of_log_at_zero", lambda v: jnp.exp(jnp.log(jnp.exp(v)))),  # log(0) = -inf
]

COMPOSED = [
    # softmax and logsumexp written without the max shift (the max side has its own tests)
    ("softmax_exp_over_sum", lambda z: _w(z) @ jnp.exp(_masked(z)) / jnp.sum(jnp.exp(_masked(z)))),
    (
        "softmax_elementwise_quotient",
        lambda z: _w(z) @ (jnp.exp(_masked(z)) / jnp.sum(jnp.exp(_masked(z)))),
    ),
    ("logsumexp", lambda z: jnp.log(jnp.sum(jnp.exp(_masked(z))))),
    # a numerator at -inf on both sides over a moving denominator: -inf / b
    ("quotient_inf_numerator", lambda z: _w(z) @ jnp.exp(_masked(z) / (1 + z[0] ** 2))),
    # a product of a -inf operand and a moving one (temperature)
    ("product_inf_operand", lambda z: _w(z) @ jnp.exp(_masked(z) * (1 + z[0] ** 2))),
    ("product_then_sigmoid", lambda z: _w(z) @ jax.nn.sigmoid(_masked(z) * jnp.exp(z[2]))),
]


def _modes(f, x, r, **kw):
    """{'plain', 'jit', 'vmap'} -> scores; under vmap the batch is [x, r] and the reference's
    row must score exactly 0. jit and vmap are one compiled program."""
    t = dl.deeplift(f, jnp.asarray(r), **kw)
    x32 = jnp.asarray(x)
    both = jax.jit(lambda v: (t(v), jax.vmap(t)(jnp.stack([v, jnp.asarray(r)]))))
    c_jit, c_batch = both(x32)
    if kw.get("multiply_by_inputs", True):
        assert np.all(np.asarray(c_batch[1]) == 0), ("reference row", c_batch[1])
    out = {"plain": t(x32), "jit": c_jit, "vmap": c_batch[0]}
    return {m: np.asarray(c, np.float64) for m, c in out.items()}


@pytest.mark.parametrize("case", SEPARABLE, ids=[c[0] for c in SEPARABLE])
def test_separable_terms_per_element(case):
    """Σ W_i h(z_i + mask_i): element i scores W_i (h(x_i + m_i) − h(r_i + m_i)) in float64,
    0 where masked (h at -inf on both sides)."""
    name, h = case
    f = lambda z: _w(z) @ h(_masked(z))
    with jax.enable_x64(True):
        hx, hr = (np.asarray(jax.jit(h)(jnp.asarray(v, jnp.float64) + MASK)) for v in (X, R))
    want = np.where(MASKED, 0.0, W * (hx - hr))
    for mode, c in _modes(f, X, R).items():
        assert np.all(np.isfinite(c)), (name, mode, c)
        assert np.all(c[MASKED] == 0), (name, mode, c)
        np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} ({mode})")


@pytest.mark.parametrize("case", COMPOSED, ids=[c[0] for c in COMPOSED])
def test_composed_sum_dummies_and_spread(case):
    """Summation to Δf (float64, 1e-5), masked inputs exactly 0 (dummy players: φ = 0),
    Σ|C| ≤ 2 Σ|φ| against the exact Shapley values."""
    name, f = case
    v = coalition_values(f, X, R)
    phi, d = shapley_from_values(v, X.size), v[-1] - v[0]
    assert np.all(phi[MASKED] == 0)
    for mode, c in _modes(f, X, R).items():
        assert np.all(np.isfinite(c)), (name, mode, c)
        assert np.all(c[MASKED] == 0), (name, mode, c)
        assert abs(c.sum() - d) <= 1e-5 * abs(d), (name, mode, c.sum(), d)
        assert np.abs(c).sum() <= 2 * np.abs(phi).sum(), (name, mode, c, phi)


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
def test_multiplier_of_a_masked_element_is_zero(mode):
    """Multipliers (multiply_by_inputs=False): 0 at the masked inputs (a change there moves
    nothing), the closed-form secant elsewhere; with x == r at a finite element, the
    derivative there."""
    x = X.copy()
    x[2] = R[2]  # finite and still: exp's derivative
    f = lambda z: jnp.sum(jnp.exp(_masked(z)))
    dx = np.where(MASKED | (x == R), 1.0, x - R)
    want = np.where(MASKED, 0.0, (np.exp(x + MASK) - np.exp(R + MASK)) / dx)
    want[2] = np.exp(R[2])
    m = _modes(f, x, R, multiply_by_inputs=False)[mode]
    assert np.all(m[MASKED] == 0), m
    np.testing.assert_allclose(m, want, rtol=1e-5)


def test_secant_at_infinite_still_elements_directly():
    """The rule kit's secant: 0 at ±inf on both sides, finite and exact elsewhere, and its
    derivative (the scores differentiated again) finite."""
    from deepliftjax._rulekit import secant

    x = jnp.array([-jnp.inf, jnp.inf, 1.0, 2.0], jnp.float32)
    r = jnp.array([-jnp.inf, jnp.inf, 1.0, 1.5], jnp.float32)
    for h in (jnp.exp, jnp.tanh, jax.nn.sigmoid, jnp.arctan):
        m = secant(h, x, r, h(x), h(r), True)
        assert np.all(np.asarray(m[:2]) == 0), (h, m)
        np.testing.assert_allclose(m[2], jax.grad(h)(1.0), rtol=1e-6)
        np.testing.assert_allclose(m[3], (h(2.0) - h(1.5)) / 0.5, rtol=1e-5)
        if h is not jnp.exp:  # exp(+inf) = inf: f itself is not finite there
            g = jax.grad(lambda v, h=h: jnp.sum(secant(h, v, r, h(v), h(r), True)))(x)
            assert np.all(np.isfinite(np.asarray(g))), (h, g)
