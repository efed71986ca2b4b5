"""DeepLIFT against exact Shapley values (tests/_shapley.py: all 2^n coalitions, float64).

Three tables:

- ``ORACLE``: the oracle itself (efficiency, symmetry, dummy, closed forms).
- ``TWO_PLAYER``: functions where DeepLIFT's per-element value is *defined* to be the Shapley
  value: the two-player rules (div, pow, atan2, rem, a select whose predicate and float
  operand each depend on one input, mul under the midpoint rule), with each player a chain
  of one-input functions of one input (Rescale passes a chain's contribution through whole,
  so the Shapley value of the two operands is that of the two inputs), and sums of such
  games with weights or a broadcast operand (Shapley values are additive). ``max``/``min``
  of two use the path rule of DESIGN.md §3, which is the Shapley value only where the same
  operand wins at all four corners; those cases are here, the others are checked per
  element against the path integral computed by quadrature (``test_max_of_two_path_rule``).
- ``COMPOSITIONS``: models of at most 12 inputs (MLPs, softmax, normalisations written with
  ``/`` and ``sqrt``, cosine similarity, attention on 3 tokens of dimension 2, ``-inf``
  masks, where-branches, max pooling, singular functions near their poles), where DeepLIFT
  and Shapley differ by design: their scores must sum to Δf in float64 (1e-5 relative) and
  be no wider than twice the Shapley values: ``Σ|C| ≤ 2 Σ|φ|`` (a rule that cancels, crediting
  ±big amounts that sum to a small Δf, fails this even when it sums).

Every DeepLIFT case runs plain, under ``jit`` and under ``vmap`` (jit and vmap in one
compiled program); float32 throughout, the oracle in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalition_values, delta_f64, exact_shapley, shapley_from_values
from jax import lax

import deepliftjax as dl

MODES = ("plain", "jit", "vmap")
SUM_TOL = 1e-5
SPREAD = 2.0


def _f32(a) -> np.ndarray:
    """float32-representable values stored as float64: the same function in both dtypes."""
    return np.asarray(np.asarray(a, np.float32), np.float64)


def _weights(seed, *shape, scale=1.0):
    return _f32(np.random.default_rng(seed).normal(size=shape) * scale)


# ==== the oracle itself ====================================================================


def test_oracle_efficiency_on_random_functions():
    """Σφ = f(x) − f(ref) (efficiency), for n from 1 to 12."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8, 12):
        w = rng.normal(size=(n, n))
        f = lambda z, w=w: jnp.sum(jnp.tanh(z @ w) ** 2) + jnp.prod(jnp.cos(z))
        x, r = rng.normal(size=n), rng.normal(size=n)
        phi = exact_shapley(f, x, r)
        assert phi.shape == (n,)
        np.testing.assert_allclose(phi.sum(), delta_f64(f, x, r), rtol=1e-12, atol=1e-12)


def test_oracle_symmetry_and_dummy():
    """Interchangeable players get equal values; a player f ignores gets exactly 0."""
    f = lambda z: jnp.tanh(z[0] * z[1] + z[0] + z[1]) + z[3] ** 3  # z[2] unused
    x, r = np.array([0.7, 0.7, 5.0, -1.2]), np.array([0.1, 0.1, -3.0, 0.4])
    phi = exact_shapley(f, x, r)
    assert phi[0] == pytest.approx(phi[1], abs=1e-15)
    assert phi[2] == 0.0
    assert phi[3] == pytest.approx(x[3] ** 3 - r[3] ** 3, abs=1e-14)  # additive: its own term


def test_oracle_closed_forms():
    # product of two: φ_0 = Δx0 (x1 + r1) / 2 (the midpoint rule)
    x, r = np.array([2.0, -3.0]), np.array([0.5, 1.0])
    phi = exact_shapley(lambda z: z[0] * z[1], x, r)
    np.testing.assert_allclose(phi, [1.5 * (-2.0) / 2, -4.0 * 2.5 / 2], rtol=1e-15)
    # max of two, reference (0, 0), input (2, 1): (1.5, 0.5)
    phi = exact_shapley(lambda z: jnp.maximum(z[0], z[1]), [2.0, 1.0], [0.0, 0.0])
    np.testing.assert_allclose(phi, [1.5, 0.5], rtol=1e-15)
    # product of three at a zero reference: a third each
    phi = exact_shapley(lambda z: z[0] * z[1] * z[2], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(phi, [2.0, 2.0, 2.0], rtol=1e-15)
    # linear: w_i Δx_i
    w = np.arange(1.0, 8.0)
    x, r = np.linspace(-1, 1, 7), np.linspace(2, 0, 7)
    phi = exact_shapley(lambda z: z @ w, x, r)
    np.testing.assert_allclose(phi, w * (x - r), rtol=1e-14, atol=1e-14)
    # min(x0, x1 + x2) at (1, .5, .5) against 0: coalition values 0 except {0,1}, {0,2}: .5
    # and all: 1; φ0 = (.5 + .5)/6 + 1/3, φ1 = φ2 = .5/6 + .5/3
    phi = exact_shapley(lambda z: jnp.minimum(z[0], z[1] + z[2]), [1.0, 0.5, 0.5], [0.0] * 3)
    np.testing.assert_allclose(phi, [0.5, 0.25, 0.25], rtol=1e-15)
    np.testing.assert_allclose(phi.sum(), 1.0)


def test_oracle_coalition_order_and_limit():
    """Coalition s holds the players of s's set bits; more than 12 players is refused."""
    v = coalition_values(lambda z: z @ np.array([1.0, 10.0, 100.0]), [1.0, 1.0, 1.0], [0.0] * 3)
    np.testing.assert_array_equal(v, [0, 1, 10, 11, 100, 101, 110, 111])
    with pytest.raises(ValueError, match="n = 13"):
        exact_shapley(jnp.sum, np.ones(13), np.zeros(13))


# ==== per element: the two-player rules ====================================================


def _run_modes(f, x, r, modes=MODES, **kw):
    """{mode: scores}; jit and vmap are compiled in one program, plain runs op by op."""
    t = dl.deeplift(f, jnp.asarray(r, jnp.float32), **kw)
    x32 = jnp.asarray(x, jnp.float32)
    out = {}
    if "jit" in modes or "vmap" in modes:
        both = jax.jit(lambda v: (t(v), jax.vmap(t)(jnp.stack([v, v]))[1]))
        out["jit"], out["vmap"] = both(x32)
    if "plain" in modes:
        out["plain"] = t(x32)
    return {m: np.asarray(out[m], np.float64) for m in modes}


def _oracle(f, x, r):
    """(φ, Δf, max |f| over the corners), all from one float64 evaluation of the 2^n."""
    v = coalition_values(f, x, r)
    return shapley_from_values(v, np.size(x)).reshape(np.shape(x)), v[-1] - v[0], np.abs(v).max()


# Cases known to fail, each labelled with its family; strict, so a fix shows as XPASS and
# the entry must go.
XFAIL = {
    # the scores are right (1.9e-6 of Δf in float64), but float32 f cannot resolve Δf
    # (sigmoid(12) rounds to 1 - 6e-6 within 1.6%), and the guard, comparing with the float32
    # Δf, reports them
    "log1p_minus_sigmoid_large": "summation guard: false alarm where float32 f is off",
}


# Compositions that repeat a structure of the default set at another point (the default
# suite keeps one of each; ``-m slow`` runs them all)
SLOW = {
    "mlp_relu_zero_ref",
    "mlp_gelu_silu",
    "softmax_large_logits",
    "softmax_logits_x1e3",
    "softmax_logits_x1e4_one_output",
    "log_softmax_logits_x1e3",
    "log_softmax",
    "attention_3x2_zero_ref",
    "layernorm_div_sqrt",
    "cosine_similarity",
    "gate",
    "product_of_three",
    "reduce_max_ties",
    "arcsin_near_minus_one",
    "tan_near_half_pi",
    "log_near_zero",
    "l2_normalise_eps",
}


def _params(cases):
    """pytest params named by case: strict xfail for the entries of XFAIL, slow for SLOW."""

    def marks(name):
        out = [pytest.mark.slow] if name in SLOW else []
        if name in XFAIL:
            out.append(pytest.mark.xfail(strict=True, reason=f"{XFAIL[name]} - known failure"))
        return out

    return [pytest.param(c, id=c[0], marks=marks(c[0])) for c in cases]


W3 = _f32([0.5, -1.25, 2.0])
MID = {"product_rule": "midpoint"}

# (name, f, x, ref, deeplift keywords)
TWO_PLAYER = [
    # a / b is a * (1/b) under product_rule: Shapley under "midpoint"; "guarded" (default)
    # keeps it where it does not cancel (|C_a| + |C_b| <= 10 |Δy|, "div_guarded_benign")
    ("div", lambda z: z[0] / z[1], [1.5, 2.0], [0.3, 0.7], MID),
    ("div_guarded_benign", lambda z: z[0] / z[1], [1.5, 2.0], [0.3, 0.7], {}),
    ("div_denominator_changes_sign", lambda z: z[0] / z[1], [1.0, 2.0], [0.5, -1.0], MID),
    ("div_zero_numerator_reference", lambda z: z[0] / z[1], [2.0, 3.0], [0.0, 1.0], MID),
    ("div_tiny_denominator_step", lambda z: z[0] / z[1], [1.0, 2.0], [0.5, 2.0000024], MID),
    ("div_of_chains", lambda z: jnp.tanh(z[0]) / jnp.sqrt(z[1]), [0.8, 4.0], [-0.3, 0.25], MID),
    ("div_by_exp", lambda z: z[0] / jnp.exp(z[1]), [1.0, -2.0], [3.0, 1.0], MID),
    ("pow", lambda z: z[0] ** z[1], [2.0, 3.0], [0.5, 1.0], {}),
    ("pow_negative_exponent", lambda z: z[0] ** z[1], [1.5, -0.5], [3.0, 2.0], {}),
    ("atan2", lambda z: jnp.arctan2(z[0], z[1]), [1.0, 0.5], [-0.5, 0.3], {}),
    ("atan2_across_the_cut", lambda z: jnp.arctan2(z[0], z[1]), [1.0, -1.0], [-0.5, -0.3], {}),
    ("rem", lambda z: lax.rem(z[0], z[1]), [5.5, 2.0], [1.0, 3.0], {}),
    (
        "select_predicate_and_operand",
        lambda z: jnp.where(z[0] > 0.5, jnp.exp(z[1]), -z[1]),
        [1.0, 0.3],
        [0.0, -1.0],
        {},
    ),
    (
        "select_predicate_of_a_chain",
        lambda z: jnp.where(jnp.tanh(z[0]) > 0, z[1] ** 2, 3 * z[1]),
        [0.4, 1.5],
        [-0.2, -0.5],
        {},
    ),
    (
        "select_cond",
        lambda z: lax.cond(z[0] < 1.0, lambda v: jnp.sin(v), lambda v: v * v, z[1]),
        [2.0, 0.7],
        [0.0, -1.2],
        {},
    ),
    ("mul_midpoint", lambda z: z[0] * z[1], [2.0, -3.0], [0.5, 1.0], MID),
    (
        "mul_midpoint_of_chains",
        lambda z: jnp.exp(z[0]) * jnp.sin(z[1]),
        [0.5, 2.0],
        [-1.0, 0.1],
        MID,
    ),
    # "guarded" keeps the midpoint where it does not cancel (|c_a| + |c_b| <= 10 |Δy|)
    ("mul_guarded_benign", lambda z: z[0] * z[1], [2.0, 3.0], [1.0, 1.0], {}),
    # max/min of two where one operand wins at all four corners: path rule == Shapley
    ("max_same_winner", lambda z: jnp.maximum(z[0], z[1]), [3.0, 1.0], [2.0, 0.5], {}),
    ("min_same_winner", lambda z: jnp.minimum(z[0], z[1]), [-3.0, 1.0], [-2.0, 0.5], {}),
    # sums of two-player games: Shapley values add up, DeepLIFT's linear maps too
    (
        "div_separable_weighted",
        lambda z: (z[:3] / z[3:]) @ W3,
        [1.0, -2.0, 0.5, 2.0, 0.5, -1.5],
        [0.2, 1.0, 0.0, 1.0, 1.5, -0.5],
        MID,
    ),
    (
        "pow_separable",
        lambda z: jnp.sum(z[:3] ** z[3:]),
        [1.5, 0.5, 2.0, 2.0, -1.0, 0.5],
        [0.5, 2.0, 1.0, 1.0, 1.0, 3.0],
        {},
    ),
    (
        "div_broadcast_denominator",
        lambda z: jnp.sum(z[:3] / z[3]),
        [1.0, -2.0, 0.5, 2.0],
        [0.2, 1.0, 0.0, 0.5],
        MID,
    ),
    (
        "mul_midpoint_broadcast",
        lambda z: jnp.sum(z[:4] * z[4]),
        [1.0, -2.0, 0.5, 3.0, 2.0],
        [0.2, 1.0, 0.0, 1.0, -0.5],
        MID,
    ),
    (
        "atan2_separable",
        lambda z: jnp.sum(jnp.arctan2(z[:2], z[2:]) * W3[:2]),
        [1.0, -0.5, 0.5, -2.0],
        [-1.0, 0.5, 1.0, 1.0],
        {},
    ),
]


@pytest.mark.parametrize("case", _params(TWO_PLAYER))
def test_two_player_rules_equal_shapley_per_element(case):
    name, f, x, r, kw = case
    x, r = _f32(x), _f32(r)
    phi, _, corner = _oracle(f, x, r)
    # 1e-5 of the scale float32 computes at: the largest |f| on a corner, or Σ|φ|
    tol = 1e-5 * max(corner, np.abs(phi).sum(), 1e-30)
    for mode, c in _run_modes(f, x, r, **kw).items():
        assert np.all(np.isfinite(c)), (name, mode, c)
        np.testing.assert_allclose(c, phi, rtol=0, atol=tol, err_msg=f"{name} ({mode})")


def _path_fraction_quadrature(d0: float, d1: float, n: int = 200_000) -> float:
    """Fraction of t in [0, 1] where d0 + t (d1 - d0) >= 0, by the midpoint rule."""
    t = (np.arange(n) + 0.5) / n
    return float(np.mean(d0 + t * (d1 - d0) >= 0))


MAX_CROSSING = [  # (x, ref): the winner changes along the path or between corners
    ([2.0, 1.0], [0.0, 0.0]),
    ([1.0, 3.0], [2.0, -1.0]),
    ([-1.0, 0.5], [1.0, 0.25]),
    ([0.3, -0.7], [-2.0, 4.0]),
]


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["max", "min"])
@pytest.mark.parametrize("xr", MAX_CROSSING, ids=str)
def test_max_of_two_path_rule(xr, sign):
    """max/min of two inputs: the path rule of DESIGN.md §3 per element (not Shapley: at
    reference (0, 0) and input (2, 1) the path gives (2, 0), Shapley (1.5, 0.5)), and no
    wider than twice the Shapley values."""
    x, r = (_f32(v) for v in xr)
    f = (lambda z: jnp.maximum(z[0], z[1])) if sign > 0 else (lambda z: jnp.minimum(z[0], z[1]))
    frac = _path_fraction_quadrature(sign * (r[0] - r[1]), sign * (x[0] - x[1]))
    want = np.array([frac * (x[0] - r[0]), (1 - frac) * (x[1] - r[1])])
    phi = exact_shapley(f, x, r)
    for mode, c in _run_modes(f, x, r).items():
        np.testing.assert_allclose(c, want, rtol=0, atol=2e-5 * np.abs(x - r).max(), err_msg=mode)
        assert np.abs(c).sum() <= SPREAD * np.abs(phi).sum() + 1e-6, (mode, c, phi)


# ==== compositions: summation to Δf and the spread bound ===================================

W46, W63, W31 = _weights(1, 4, 6), _weights(2, 6, 3), _weights(3, 3)
W66, W6 = _weights(4, 6, 6, scale=0.5), _weights(5, 6)
WQ, WK, WV = _weights(6, 2, 2), _weights(7, 2, 2), _weights(8, 2, 2)
W5 = _weights(9, 5)
MASK5 = np.array([False, True, False, False, True])
CAUSAL3 = np.tril(np.ones((3, 3), bool))


def _attention(z, causal=False):
    t = z.reshape(3, 2)
    q, k, v = t @ WQ, t @ WK, t @ WV
    s = q @ k.T / math.sqrt(2.0)
    if causal:
        s = jnp.where(CAUSAL3, s, -jnp.inf)
    return jnp.sum((jax.nn.softmax(s, axis=-1) @ v) * W6.reshape(3, 2))


def _layernorm_div(z):
    mu = jnp.mean(z)
    return ((z - mu) / jnp.sqrt(jnp.mean((z - mu) ** 2) + 1e-5)) @ W5


def _rmsnorm_div(z):
    return (z / jnp.sqrt(jnp.mean(z * z) + 1e-6)) @ W5


def _cosine(z):
    a, b = z[:3], z[3:]
    return (a @ b) / (jnp.sqrt(a @ a) * jnp.sqrt(b @ b) + 1e-6)


def _safe_norm(v, min_norm=1e-6):
    # optax.safe_norm: the norm, floored at min_norm, with a finite gradient at 0
    sq = jnp.sum(v * v)
    return jnp.where(sq > min_norm**2, jnp.sqrt(jnp.where(sq > min_norm**2, sq, 1.0)), min_norm)


RNG = np.random.default_rng(2024)
X6, R6 = _f32(RNG.normal(size=6)), _f32(RNG.normal(size=6) * 0.5)
X5 = _f32([0.3, -1.2, 0.8, 2.0, -0.4])


def _log_mask(v):
    """log(relu(v)), entry 0 never masked (written with a scatter)."""
    return jnp.log(jax.nn.relu(v)).at[0].set(0.0)


def _masked_key_attention(h):
    n = h.shape[0]
    s = (h * W5[:n])[:, None] * h[None, :] + _log_mask(h)[None, :]
    s = jnp.where(np.tril(np.ones((n, n), bool)), s, -jnp.inf)
    return (jax.nn.softmax(s, axis=-1) @ h) @ W5[::-1][:n]


def _masked_log_max(v):
    return jnp.max(
        v + jnp.where(jnp.array([True, False, False, False]), jnp.log(jax.nn.relu(v)), 0)
    )


# (name, f, x, ref, deeplift keywords)
COMPOSITIONS = [
    ("mlp_relu_tanh", lambda z: jnp.tanh(jax.nn.relu(z @ W46) @ W63) @ W31, X6[:4], R6[:4], {}),
    (
        "mlp_relu_zero_ref",
        lambda z: jnp.tanh(jax.nn.relu(z @ W46) @ W63) @ W31,
        X6[:4],
        0 * R6[:4],
        {},
    ),
    ("mlp_gelu_silu", lambda z: jax.nn.silu(jax.nn.gelu(z @ W66) @ W66) @ W6, X6, R6, {}),
    ("softmax", lambda z: jax.nn.softmax(z) @ W6, X6, R6, {}),
    ("softmax_large_logits", lambda z: jax.nn.softmax(30.0 * z) @ W6, X6, R6, {}),
    # (g) logits x1e3 and x1e4: the max shift moves by thousands between input and reference
    ("softmax_logits_x1e3", lambda z: jax.nn.softmax(1e3 * z) @ W6, X6, R6, {}),
    ("softmax_logits_x1e4_one_output", lambda z: jax.nn.softmax(1e4 * z)[2], X6, R6, {}),
    ("log_softmax_logits_x1e3", lambda z: jax.nn.log_softmax(1e3 * z)[1], X6, R6, {}),
    ("log_softmax", lambda z: jax.nn.log_softmax(z)[2], X6, R6, {}),
    (
        "softmax_inf_mask_both_sides",
        lambda z: jax.nn.softmax(jnp.where(MASK5, -jnp.inf, z)) @ W5,
        X5,
        _f32([0.0, 0.0, 1.0, -1.0, 0.5]),
        {},
    ),
    (
        "logsumexp_inf_mask",
        lambda z: jax.nn.logsumexp(jnp.where(MASK5, -jnp.inf, z)),
        X5,
        _f32([1.0, 2.0, 0.0, 0.0, 0.0]),
        {},
    ),
    (
        "reduce_max_inf_mask",
        lambda z: jnp.max(jnp.where(MASK5, -jnp.inf, z)) + 0.5 * z[0],
        X5,
        _f32([1.0, 2.0, 0.0, 3.0, 0.0]),
        {},
    ),
    (
        "maximum_inf_mask",
        lambda z: jnp.sum(jnp.maximum(jnp.where(MASK5, -jnp.inf, z), z[::-1] - 1.0)),
        X5,
        _f32([1.0, 2.0, 0.0, 3.0, 0.0]),
        {},
    ),
    (
        "max_with_log_at_zero_reference",  # log(relu(z0)) is -inf at the reference only
        lambda z: jnp.maximum(jnp.log(jax.nn.relu(z[0])), z[1]) + jnp.max(z[2:]),
        _f32([2.0, 0.5, 0.1, -1.0]),
        _f32([0.0, -1.0, 0.3, 0.2]),
        {},
    ),
    (
        "reduce_max_log_at_zero_reference",
        lambda z: jnp.max(jnp.concatenate([jnp.log(jax.nn.relu(z[:2])), z[2:]])),
        _f32([3.0, 0.5, 0.1, -1.0]),
        _f32([0.0, 0.0, 0.3, 0.2]),
        {},
    ),
    (  # x + log(x) under a mask: -inf on one side only, through add, where and a max twice
        "max_of_x_plus_masked_log_twice",
        lambda z: _masked_log_max(z + _masked_log_max(z)),
        _f32([-1.0, 1.0, 1.0, 1.0]),
        _f32([1.0, -1.0, -1.0, -1.0]),
        {},
    ),
    (  # a log mask that reaches -inf on one side only, under jax.nn.softmax's max shift
        "softmax_of_one_sided_log_mask",
        lambda z: jax.nn.softmax(z + _log_mask(z)) @ W5[:4],
        _f32([0.0, 0.0, 1.0, 0.5]),
        _f32([0.5, -2.0, 0.5, 0.5]),
        {},
    ),
    (  # exp of it, shifted by an element of the input (a scalar operand broadcast)
        "exp_of_one_sided_log_minus_x0",
        lambda z: jnp.exp(jnp.log(jax.nn.relu(z)) - z[0]) @ W5[:4],
        _f32([0.0, 1.0, 0.0, 0.5]),
        _f32([0.5, 0.5, 0.7, -1.0]),
        {},
    ),
    (  # causal attention whose keys carry the mask: the fuzz program that found the family
        "causal_attention_one_sided_log_mask",
        _masked_key_attention,
        _f32([0.0, 0.0, 0.0, 1.0, 0.0]),
        _f32([0.5, 0.5, -2.0, 0.5, -0.5]),
        {},
    ),
    ("attention_3x2", _attention, X6, R6, {}),
    ("attention_3x2_zero_ref", _attention, X6, 0 * R6, {}),
    ("causal_attention_3x2", lambda z: _attention(z, causal=True), X6, R6, {}),
    ("layernorm_div_sqrt", _layernorm_div, X5, _f32(RNG.normal(size=5)), {}),
    ("layernorm_div_sqrt_constant_ref", _layernorm_div, X5, _f32(np.full(5, 0.7)), {}),
    ("rmsnorm_div_sqrt_zero_ref", _rmsnorm_div, X5, 0 * X5, {}),
    ("l2_normalise_eps", lambda z: (z / (jnp.sqrt(z @ z) + 1e-6)) @ W5, X5, 0 * X5, {}),
    ("l2_normalise_safe_norm", lambda z: (z / _safe_norm(z)) @ W5, X5, 0 * X5, {}),
    ("l1_normalise", lambda z: (z / (jnp.sum(jnp.abs(z)) + 1e-6)) @ W5, X5, 0 * X5, {}),
    ("cosine_similarity", _cosine, X6, R6, {}),
    (  # the midpoint cancels here (|C_a| + |C_b| = 19 |Δy| on the first quotient)
        "div_broadcast_guarded",
        lambda z: jnp.sum(z[:3] / z[3]),
        [1.0, -2.0, 0.5, 2.0],
        [0.2, 1.0, 0.0, 0.5],
        {},
    ),
    ("cosine_similarity_zero_ref", _cosine, X6, 0 * R6, {}),
    (
        "where_branches",
        lambda z: (
            jnp.where(z[0] > z[1], z[2] * z[3], z[2] + z[3]) + jnp.where(z[4] > 0, z[5], -z[5])
        ),
        X6,
        R6,
        {},
    ),
    (
        "where_raw_input_near_tie",
        lambda z: jnp.where(z[0] > z[1], 2.0 * z[2], z[2] - 1.0),
        _f32([1.0, 1.0, 0.5]),
        _f32([1.0, np.nextafter(np.float32(1.0), np.float32(2.0)), -0.5]),
        {},
    ),
    ("maxpool", lambda z: jnp.max(z.reshape(3, 2), axis=1) @ W3, X6, R6, {}),
    (
        "reduce_max_ties",
        lambda z: jnp.max(z) * 2.0,
        _f32([1.0, 2.0, 2.0, 0.0]),
        _f32([1.5, 1.0, 0.0, 1.5]),
        {},
    ),
    ("gate", lambda z: jnp.sum(jax.nn.sigmoid(z[:3]) * jnp.tanh(z[3:])), X6, R6, {}),
    ("product_of_three", lambda z: z[0] * z[1] * z[2], _f32([1.0, 2.0, 3.0]), _f32([0.0] * 3), {}),
    # singular functions near their poles, with a Δx small enough (< 3.5e-4 relative) for
    # Rescale's mean-derivative fallback; the extra player keeps the game two-sided
    ("arccos_near_one", lambda z: jnp.arccos(z[0]) + 0.1 * z[1], [0.99999, 1.0], [0.9997, 0.0], {}),
    (
        "arcsin_near_minus_one",
        lambda z: jnp.arcsin(z[0]) * z[1],
        [-0.99999, 1.0],
        [-0.9997, 2.0],
        {},
    ),
    (
        "arctanh_near_one",
        lambda z: jnp.arctanh(z[0]) + z[1] * z[2],
        [0.99999, 1.0, 2.0],
        [0.9997, 0.5, 0.5],
        {},
    ),
    ("tan_near_half_pi", lambda z: jnp.tan(z[0]) * 1e-3 + z[1], [1.5707, 1.0], [1.5702, 0.0], {}),
    ("tan_across_half_pi", lambda z: jnp.tan(z[0]) * 1e-3 + z[1], [1.5709, 1.0], [1.5706, 0.0], {}),
    ("log_near_zero", lambda z: jnp.log(z[0]) + z[1], [1e-6, 1.0], [1.0003e-6, 0.0], {}),
    ("log1p_near_minus_one", lambda z: jnp.log1p(z[0]) * z[1], [-0.99999, 1.0], [-0.9997, 0.5], {}),
    (
        "log1p_minus_sigmoid_large",
        lambda z: jnp.log1p(-jax.nn.sigmoid(z[0])) + z[1],
        [12.0, 1.0],
        [12.003, 0.0],
        {},
    ),
    ("rsqrt_near_zero", lambda z: lax.rsqrt(z[0]) * 1e-3 + z[1], [1e-6, 1.0], [1.0003e-6, 0.0], {}),
]


def _float32_noise(f, x, r, d64) -> float:
    """What float32 cannot avoid in Σ C: f's own rounding (4 |Δf32 − Δf64| + 2 ulp of f),
    as in tests/_helpers.sum_error_vs_float_noise. Only the cases where float32 f cannot
    resolve Δf (log1p(-sigmoid(z)) at large z) need more than 1e-5 |Δf|."""
    g = jax.jit(jax.vmap(f))
    fx, fr = (float(v) for v in g(jnp.asarray(np.stack([x, r]), jnp.float32)))
    return 4 * abs((fx - fr) - d64) + 2 * float(np.finfo(np.float32).eps) * max(abs(fx), abs(fr))


def _check_sum_and_spread(name, c, phi, d, noise):
    assert np.all(np.isfinite(c)), (name, c)
    err = abs(c.sum() - d)
    assert err <= max(SUM_TOL * abs(d), noise), f"{name}: Σ C = {c.sum():.9g}, Δf = {d:.9g}"
    assert np.abs(c).sum() <= SPREAD * np.abs(phi).sum() * (1 + 1e-6), (
        f"{name}: Σ|C| = {np.abs(c).sum():.6g} > {SPREAD} Σ|φ| = {SPREAD * np.abs(phi).sum():.6g};"
        f" C = {c}, φ = {phi}"
    )


@pytest.mark.parametrize(
    "modes", [("jit", "vmap"), pytest.param(("plain",), marks=pytest.mark.slow)], ids="-".join
)
@pytest.mark.parametrize("case", _params(COMPOSITIONS))
def test_compositions_sum_and_stay_within_twice_shapley(case, modes):
    """Op-by-op (plain) runs are slow here (the interpreter dispatches each primitive):
    the default suite runs the compiled modes, ``-m slow`` the plain one too."""
    name, f, x, r, kw = case
    x, r = _f32(x), _f32(r)
    phi, d, _ = _oracle(f, x, r)
    noise = _float32_noise(f, x, r, d)
    for mode, c in _run_modes(f, x, r, modes, **kw).items():
        _check_sum_and_spread(f"{name} ({mode})", c, phi, d, noise)
