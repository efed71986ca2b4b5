"""Quotients of two varying operands (``div``), above all at degenerate references.

``a / b`` is the product ``a · (1/b)``, so it gets the orderings of ``product_rule=``: the
two-player Shapley value where that does not cancel (``"guarded"``'s midpoint, and always
under ``"midpoint"``), the ordering with the least ``|C_a| + |C_b|`` where it does. At a
norm's degenerate reference (``x / sqrt(Σx² + ε)`` at x⁰ = 0: ``a⁰ = 0``, ``b⁰ = √ε``) the
Shapley value of the quotient credits each feature ``~Δa/(2√ε)`` through ``a`` and takes it
back through ``b``; summed in float32 that missed Δf by 1e-4 to 100× and spread Σ|C| up to
10⁸ times the exact Shapley values of the whole function.

Oracles (float64): the exact Shapley values of all 2ⁿ coalitions (``tests/_shapley.py``),
per element for ``a/b`` itself where DeepLIFT's value is the Shapley value, and as the spread
bound ``Σ|C| ≤ 2 Σ|φ|`` for compositions; closed forms per element where the rule leaves
the Shapley value. Every case runs plain, under ``jit`` and under ``vmap`` (a batch holding
the input and the reference: the reference's row scores exactly 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalition_values, shapley_from_values

import deepliftjax as dl


def _f32(a) -> np.ndarray:
    """float32-representable values, as float64 (the same function in both dtypes)."""
    return np.asarray(np.asarray(a, np.float32), np.float64)


def _scores(f, x, r, **kw) -> dict[str, np.ndarray]:
    """{'plain', 'jit', 'vmap'} -> scores; jit and vmap in one compiled program."""
    t = dl.deeplift(f, jnp.asarray(r, jnp.float32), **kw)
    x32, r32 = jnp.asarray(x, jnp.float32), jnp.asarray(r, jnp.float32)
    both = jax.jit(lambda v: (t(v), jax.vmap(t)(jnp.stack([v, r32]))))
    c_jit, c_batch = both(x32)
    if kw.get("multiply_by_inputs", True):
        assert np.all(np.asarray(c_batch[1]) == 0), ("reference row", c_batch[1])
    out = {"plain": t(x32), "jit": c_jit, "vmap": c_batch[0]}
    return {m: np.asarray(c, np.float64) for m, c in out.items()}


def _oracle(f, x, r):
    """(φ, Δf, largest |f| over the coalitions), from one float64 evaluation of all 2ⁿ."""
    v = coalition_values(f, x, r)
    return shapley_from_values(v, np.size(x)), v[-1] - v[0], np.abs(v).max()


# ---- a / b with a and b the inputs -------------------------------------------------------

# (name, x, ref, product_rule): the rule keeps the Shapley value of a/b
SHAPLEY_DIV = [
    ("benign", [1.5, 2.0], [0.3, 0.7], "guarded"),
    ("denominator_changes_sign", [1.0, 2.0], [0.5, -1.0], "guarded"),
    ("numerator_reference_0", [2.0, 3.0], [0.0, 1.0], "guarded"),
    ("degenerate_under_midpoint", [1.0, 1.0], [0.0, 1e-2], "midpoint"),
    ("both_negative", [-1.0, -0.5], [-2.0, -3.0], "guarded"),
]


@pytest.mark.parametrize("case", SHAPLEY_DIV, ids=[c[0] for c in SHAPLEY_DIV])
def test_div_is_the_two_player_shapley_value(case):
    name, x, r, rule = case
    x, r = _f32(x), _f32(r)
    f = lambda z: z[0] / z[1]
    phi, _, corner = _oracle(f, x, r)
    for mode, c in _scores(f, x, r, product_rule=rule).items():
        np.testing.assert_allclose(c, phi, rtol=0, atol=1e-6 * corner, err_msg=f"{name} {mode}")


# (name, x, ref, expected scores): where the Shapley value of a/b cancels, the ordering
# "b first" (C_a = Δa/b, C_b = a⁰ Δ(1/b)) or "a first" (C_a = Δa/b⁰, C_b = a Δ(1/b))
DEGENERATE_DIV = [
    # a⁰ = 0, b⁰ = ε: Shapley gives (Δa (1/b + 1/ε)/2, Δa (1/b − 1/ε)/2) = (±500, ∓500)
    ("zero_over_eps", [1.0, 1.0], [0.0, 1e-3], [1.0, 0.0]),
    ("zero_over_minus_eps", [-2.0, -4.0], [0.0, -1e-4], [0.5, 0.0]),
    # the input at the degenerate point instead: "a first", C_a = Δa/b⁰ with a = 0
    ("to_zero_over_eps", [0.0, 1e-3], [1.0, 1.0], [-1.0, 0.0]),
    # a still (a = a⁰): all to b, C_b = a Δ(1/b), whatever the rule
    ("numerator_still", [3.0, 2.0], [3.0, 1e-3], [0.0, 1.5 - 3000.0]),
    # b still: all to a, C_a = Δa / b
    ("denominator_still", [3.0, 1e-3], [1.0, 1e-3], [2000.0, 0.0]),
]


@pytest.mark.parametrize("case", DEGENERATE_DIV, ids=[c[0] for c in DEGENERATE_DIV])
def test_div_at_a_degenerate_reference_per_element(case):
    name, x, r, want = case
    x, r, want = _f32(x), _f32(r), np.asarray(want)
    f = lambda z: z[0] / z[1]
    phi, d, _ = _oracle(f, x, r)
    for mode, c in _scores(f, x, r).items():
        np.testing.assert_allclose(c, want, rtol=1e-6, atol=1e-6 * abs(d), err_msg=f"{name} {mode}")
        assert np.abs(c).sum() <= 2 * np.abs(phi).sum()


def test_a_still_operand_gets_the_least_multiplier():
    """Where one operand does not move, its multiplier multiplies no change; its only
    effect is upstream, where the contributions through it cancel. The least of the two
    orderings' multipliers is taken: 1/b rather than the midpoint's (1/b + 1/b⁰)/2."""
    x, r = _f32([0.0, 2.0]), _f32([0.0, 1e-3])
    f = lambda z: z[0] / z[1]
    for mode, m in _scores(f, x, r, multiply_by_inputs=False).items():
        np.testing.assert_allclose(m[0], 0.5, rtol=1e-6, err_msg=mode)


# ---- compositions: norms, normalisation and cosine similarity ----------------------------

W6 = _f32(np.random.default_rng(5).normal(size=6))
V6 = _f32(np.random.default_rng(6).normal(size=6))
X6 = _f32(np.random.default_rng(7).normal(size=6))
ZERO6 = np.zeros(6)


def _norm(z):
    return jnp.sqrt(jnp.sum(z * z))


def _safe_norm(z, min_norm=1e-6):
    """optax.safe_norm: the norm, floored at min_norm, with a finite gradient at 0."""
    sq = jnp.sum(z * z)
    return jnp.where(sq > min_norm**2, jnp.sqrt(jnp.where(sq > min_norm**2, sq, 1.0)), min_norm)


def _w(z):
    return jnp.asarray(W6, z.dtype)


def _v(z):
    return jnp.asarray(V6, z.dtype)


# (name, f, x, ref)
COMPOSITIONS = [
    ("l2_eps", lambda z: _w(z) @ (z / jnp.sqrt(jnp.sum(z * z) + 1e-6)), X6, ZERO6),
    ("l2_floored_norm", lambda z: _w(z) @ (z / jnp.maximum(_norm(z), 1e-12)), X6, ZERO6),
    ("l2_safe_norm", lambda z: _w(z) @ (z / _safe_norm(z)), X6, ZERO6),
    ("l1_eps", lambda z: _w(z) @ (z / (jnp.sum(jnp.abs(z)) + 1e-6)), X6, ZERO6),
    # no ε: at the zero reference 0/0, so a reference a little off it
    ("l1_no_eps", lambda z: _w(z) @ (z / jnp.sum(jnp.abs(z))), X6, np.full(6, 1e-3)),
    ("rms_div_sqrt", lambda z: _w(z) @ (z / jnp.sqrt(jnp.mean(z * z) + 1e-6)), X6, ZERO6),
    (
        "layernorm_div_sqrt_constant_ref",
        lambda z: _w(z) @ ((z - z.mean()) / jnp.sqrt(jnp.var(z) + 1e-5)),
        X6,
        np.full(6, 0.7),
    ),
    ("cosine_constant_second", lambda z: z @ _v(z) / (_norm(z) * _norm(_v(z)) + 1e-8), X6, ZERO6),
    (
        "cosine_varying_second",
        lambda z: z[:3] @ z[3:] / (_norm(z[:3]) * _norm(z[3:]) + 1e-8),
        X6,
        ZERO6,
    ),
    (
        "cosine_varying_second_floored",
        lambda z: z[:3] @ z[3:] / jnp.maximum(_norm(z[:3]) * _norm(z[3:]), 1e-8),
        X6,
        ZERO6,
    ),
    ("tanh_of_normalised", lambda z: _w(z) @ jnp.tanh(z / jnp.sqrt(z @ z + 1e-6)), X6, ZERO6),
    (
        "temperature_softmax",  # logits over a varying temperature
        lambda z: _w(z)[:5] @ jax.nn.softmax(z[:5] / (0.1 + z[5] ** 2)),
        X6,
        ZERO6,
    ),
]


@pytest.mark.parametrize("case", COMPOSITIONS, ids=[c[0] for c in COMPOSITIONS])
def test_compositions_sum_exactly_and_stay_within_twice_shapley(case):
    name, f, x, r = case
    x, r = _f32(x), _f32(r)
    phi, d, _ = _oracle(f, x, r)
    for mode, c in _scores(f, x, r).items():
        assert np.all(np.isfinite(c)), (name, mode, c)
        assert abs(c.sum() - d) <= 1e-5 * abs(d), (name, mode, c.sum(), d)
        assert np.abs(c).sum() <= 2 * np.abs(phi).sum(), (name, mode, c, phi)


def test_a_quotient_written_with_div_scores_as_with_rsqrt():
    """x / sqrt(v) and x * rsqrt(v) are the same product, so the same scores."""
    div = lambda z: _w(z) @ (z / jnp.sqrt(jnp.mean(z * z) + 1e-6))
    mul = lambda z: _w(z) @ (z * jax.lax.rsqrt(jnp.mean(z * z) + 1e-6))
    x, r = _f32(X6), _f32(ZERO6)
    for rule in ("guarded", "midpoint", "balanced"):
        a = _scores(div, x, r, product_rule=rule)["jit"]
        b = _scores(mul, x, r, product_rule=rule)["jit"]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=rule)
