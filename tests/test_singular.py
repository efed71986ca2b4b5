"""Rescale near singular points and in saturation: each element's multiplier against float64.

The Rescale multiplier must satisfy eq. 1 per element: ``m Δx = h(x) − h(r)`` in float64,
up to the float rounding of ``h`` itself. Float32 can compute it two ways, and neither
everywhere: the secant ``(y − yr)/Δx`` is off by the rounding of ``y`` and ``yr`` (all of
it where ``Δh`` is small against ``h``: intervals of a few ulps, a saturated tanh), and the
mean derivative over ``[r, x]`` is off wherever ``h'`` varies fast on the interval (next to
arccos's 1, tan's π/2, a pole of digamma). ``secant`` takes the better by error bounds.

``FAMILIES``: functions next to a singular point ``s`` (values on one side of it), at
distances from 2 ulps to 10% of ``s`` and intervals from 1 ulp to the distance itself, both
toward ``s`` and away. Each element must be within 2e-6 of the float64 difference, or within
twice the float error of ``h`` (``ULPS[name]`` ulps of ``max(|h(x)|, |h(r)|) + floor``): next
to the singular point float32 cannot do better. ``SATURATED``: smooth intervals where ``Δh``
is far below ``h``'s rounding; the mean derivative must reach 2e-6 there, with no allowance.

Each table runs plain, under ``jit`` and under ``vmap`` (a batch holding the input and the
reference: the reference's row scores exactly 0). The float64 differences use identities
where ``h(x) − h(r)`` would cancel in float64 too (a saturated tanh).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import special

import deepliftjax as dl

F32 = np.float32
EPS = float(np.finfo(F32).eps)


def _step(v: np.ndarray, k: int) -> np.ndarray:
    """v moved by k float32 ulps (toward +inf for k > 0)."""
    v = np.asarray(v, F32)
    for _ in range(abs(k)):
        v = np.nextafter(v, F32(np.inf) if k > 0 else F32(-np.inf)).astype(F32)
    return v


def _near(s: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, r) pairs on one side of ``s``: x at 2 ulps (1e-6 from 0) to 10% of max(|s|, 1)
    from it, r from 1 ulp to the distance itself away from x, both toward ``s`` (not past
    half the distance) and away."""
    scale = max(abs(s), 1.0)
    xs, rs = [], []
    # 2 ulps from a singular point at 0 would be subnormal, and the multiplier of x**-3
    # there (3e180) is no float32: from 0 the nearest distance is 1e-6
    edge = [None] if s != 0 else []
    for d in edge + [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]:
        x = _step(F32(s), 2 * side) if d is None else F32(s + side * d * scale)
        dist = abs(float(x) - s)
        for k in (1, 2, 3, 17):
            for away in (1, -1):
                r = _step(x, side * away * k)
                if side * (float(r) - s) > 0:
                    xs.append(x), rs.append(r)
        for frac in (1e-4, 1e-2, 0.3, 1.0):
            for away in (1, -0.5):
                r = F32(float(x) + side * away * frac * dist)
                if side * (float(r) - s) > 0 and r != x:
                    xs.append(x), rs.append(r)
    return np.array(xs, F32), np.array(rs, F32)


# (name, float32 h, float64 h, singular point, side, (ulps, floor) of h's float32 error)
FAMILIES = [
    ("arccos_below_1", jnp.arccos, np.arccos, 1.0, -1, (8, 0)),
    ("arccos_above_minus_1", jnp.arccos, np.arccos, -1.0, 1, (8, 0)),
    ("arcsin_below_1", jnp.arcsin, np.arcsin, 1.0, -1, (8, 0)),
    ("arctanh_below_1", jnp.arctanh, np.arctanh, 1.0, -1, (8, 0)),
    ("tan_below_half_pi", jnp.tan, np.tan, np.pi / 2, -1, (8, 0)),
    ("log_above_0", jnp.log, np.log, 0.0, 1, (8, 0)),
    ("log1p_above_minus_1", jnp.log1p, np.log1p, -1.0, 1, (8, 0)),
    ("sqrt_above_0", jnp.sqrt, np.sqrt, 0.0, 1, (8, 0)),
    ("rsqrt_above_0", lax.rsqrt, lambda v: 1 / np.sqrt(v), 0.0, 1, (8, 0)),
    ("cbrt_above_0", jnp.cbrt, np.cbrt, 0.0, 1, (8, 0)),
    ("erf_inv_below_1", lax.erf_inv, special.erfinv, 1.0, -1, (64, 0)),
    ("acosh_above_1", jnp.arccosh, np.arccosh, 1.0, 1, (8, 0)),
    ("lgamma_above_minus_2", lax.lgamma, special.gammaln, -2.0, 1, (32, 1)),
    ("lgamma_above_0", lax.lgamma, special.gammaln, 0.0, 1, (32, 1)),
    ("digamma_below_minus_1", lax.digamma, special.digamma, -1.0, -1, (16, 1)),
    ("digamma_above_0", lax.digamma, special.digamma, 0.0, 1, (16, 1)),
    ("reciprocal_above_1", lambda v: 1 / (v - 1), lambda v: 1 / (v - 1), 1.0, 1, (8, 0)),
    ("inverse_cube_above_0", lambda v: v**-3, lambda v: v**-3.0, 0.0, 1, (8, 0)),
]


def _sech_diff(x, r):
    return np.sinh(x - r) / (np.cosh(x) * np.cosh(r))


# (name, float32 h, float64 h(x) − h(r) without cancellation, centres)
SATURATED = [
    ("tanh", jnp.tanh, _sech_diff, [3.0, 5.0, 7.0, 9.0, -6.0]),
    ("logistic", jax.nn.sigmoid, lambda x, r: special.expit(-r) - special.expit(-x), [8, 12, 16]),
    ("erf", lax.erf, lambda x, r: special.erfc(r) - special.erfc(x), [2.5, 3.5]),
    ("expm1", jnp.expm1, lambda x, r: np.exp(r) * np.expm1(x - r), [-8.0, -12.0]),
    ("exp", jnp.exp, lambda x, r: np.exp(r) * np.expm1(x - r), [-3.0, 3.0, 20.0]),
    (
        "cos_near_0",
        jnp.cos,
        lambda x, r: -2 * np.sin((x + r) / 2) * np.sin((x - r) / 2),
        [1e-3, 1e-2, 0.1],
    ),
]


def _saturated_points(centres) -> tuple[np.ndarray, np.ndarray]:
    xs, rs = [], []
    for c in centres:
        x = F32(c)
        for k in (1, 2, 3, 10, 1000):
            xs.append(x), rs.append(_step(x, k))
        for rel in (1e-4, 1e-3, 1e-2):
            xs.append(x), rs.append(F32(c * (1 + rel)))
    return np.array(xs, F32), np.array(rs, F32)


def _scores(h, x, r) -> dict[str, np.ndarray]:
    """{'plain', 'jit', 'vmap'} -> per-element scores of Σ h(v); jit and vmap in one
    compiled program, the batch [x, r] (the reference's row must be exactly 0)."""
    f = lambda v: jnp.sum(h(v))
    # per element against float64 here; the guard compares Σ with float32's own Δf
    t = dl.deeplift(f, jnp.asarray(r), check=None)
    both = jax.jit(lambda v: (t(v), jax.vmap(t)(jnp.stack([v, jnp.asarray(r)]))))
    c_jit, c_batch = both(jnp.asarray(x))
    assert np.all(np.asarray(c_batch[1]) == 0), c_batch[1]
    out = {"plain": t(jnp.asarray(x)), "jit": c_jit, "vmap": c_batch[0]}
    return {m: np.asarray(c, np.float64) for m, c in out.items()}


@pytest.mark.parametrize("case", FAMILIES, ids=[c[0] for c in FAMILIES])
def test_next_to_a_singular_point(case):
    name, h, h64, s, side, (ulps, floor) = case
    x, r = _near(s, side)
    with np.errstate(all="ignore"):
        want = h64(x.astype(np.float64)) - h64(r.astype(np.float64))
    y32 = np.abs(np.asarray(jax.jit(h)(jnp.asarray(np.stack([x, r]))), np.float64))
    allowed = 2e-6 * np.abs(want) + 2 * ulps * EPS * (np.maximum(y32[0], y32[1]) + floor)
    for mode, c in _scores(h, x, r).items():
        err = np.abs(c - want)
        bad = ~(err <= allowed)
        assert not bad.any(), (
            f"{name} ({mode}): {bad.sum()} of {x.size}; worst x={x[bad][0]!r} r={r[bad][0]!r}"
            f" score {c[bad][0]:.9g} want {want[bad][0]:.9g}"
        )


@pytest.mark.parametrize("case", SATURATED, ids=[c[0] for c in SATURATED])
def test_saturated_intervals_reach_2e_6(case):
    """Where float32's ``y − yr`` is mostly rounding (tanh(9) moves by 1e-14 per ulp of x),
    the mean derivative gives the exact difference; JAX's own derivative rules would not
    (``1 − tanh²`` and ``s (1 − s)`` lose every digit there)."""
    name, h, delta64, centres = case
    x, r = _saturated_points(centres)
    want = delta64(x.astype(np.float64), r.astype(np.float64))
    for mode, c in _scores(h, x, r).items():
        rel = np.abs(c - want) / np.abs(want)
        assert rel.max() <= 2e-6, (name, mode, x[rel.argmax()], r[rel.argmax()], rel.max())


def test_a_composite_that_amplifies_rounding_follows_the_exact_difference():
    """log1p(-sigmoid(z)) at large z: float32 rounds sigmoid to 6e-8 and log1p multiplies
    that by 1/(1 - σ), so f(x) - f(ref) in float32 is off by up to 1e-2 of itself. Each
    step's multiplier is exact, so the scores are off only by what the rounded σ changes in
    log1p's slope (ulp/(1 − σ) relative): 2e-5 at z = 6, 1e-2 at z = 12 (the mean derivative
    over [ref, x] across a rounded σ would be off by 100% there)."""
    f = lambda v: jnp.sum(jnp.log1p(-jax.nn.sigmoid(v)))
    z = np.array([6.0, 6.0, 9.0, 9.0, 12.0, 12.0], F32)
    zr = z + np.array([1e-3, 0.1, 1e-3, 0.1, 3e-3, 0.1], F32)
    want = -(np.logaddexp(0, z.astype(np.float64)) - np.logaddexp(0, zr.astype(np.float64)))
    tol = 1e-5 + 2 * EPS / special.expit(-z.astype(np.float64))
    t = dl.deeplift(f, jnp.asarray(zr), check=None)  # float32's Δf is off: see above
    both = jax.jit(lambda v: (t(v), jax.vmap(t)(jnp.stack([v, jnp.asarray(zr)]))))
    c_jit, c_batch = both(jnp.asarray(z))
    assert np.all(np.asarray(c_batch[1]) == 0)
    for mode, c in {"plain": t(jnp.asarray(z)), "jit": c_jit, "vmap": c_batch[0]}.items():
        rel = np.abs(np.asarray(c, np.float64) - want) / np.abs(want)
        assert np.all(rel <= tol), (mode, rel, tol)
