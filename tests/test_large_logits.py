"""Softmax and log-softmax of very large logits (x1e3 to x1e5).

At logits of size 1e3..1e5, float32 rounds each logit ``b = s * z`` to ``ulp(b)``
(6e-5 at 1e3, 1e-3 at 1e4): ``f`` itself, evaluated in float32, is only known to
``Σ_j |∂f/∂b_j| · ulp(b_j)`` at the input plus the same at the reference (the condition of
``f`` in its logits). DeepLIFT's scores must meet float64 Δf to 1e-5 relative plus that
floor, per example, and be no wider than twice the exact Shapley values (all 2^8
coalitions in float64; the spread bound of ``tests/test_shapley_oracle.py``: scores that
sum by crediting ±large amounts fail it), or than the same rules evaluated in float64
where those are wider: one row of the 48 (a reference whose two largest logits trade
places with the input's) splits Δf = -1 into +3.06 and -4.06, 4.06 times Shapley's width,
at every scale from x100 to x1e5 and in float64 alike. That is DeepLIFT's path through the
max shift of a near-hard argmax, not rounding; large logits add no width of their own.
Each case runs plain (a few rows: op by op is slow), vmapped and ``jit(vmap)``.

Per element, float32 and float64 may split a change differently where float32 rounds the
softmax denominator to exactly the same value at input and reference (a "still" operand of
the quotient, ``deepliftjax._rules_products.still_weights``) while float64 sees it move by
1e-300: both splits are exact and within the bound; which one is taken follows the
rounding.

Measured here (2026-12-07, jax 0.10.2, CPU, 64 rows per scale, two reference scales):
the largest sum error is 0.26 of the bound (plain and vmap, 1e3) and 0.024 (``jit(vmap)``);
relative to |Δf| alone, ``jit(vmap)`` stays below 4.2e-6 at every scale, and plain/vmap
reach 1.7e-4 only where the floor allows it (Δf = 1.3e-12 against f of the same size).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalitions, shapley_from_values

import deepliftjax as dl

SCALES = (1e3, 1e4, 1e5)
ROWS = 24


def _softmax64(b):
    b = b - b.max()
    e = np.exp(b)
    return e / e.sum()


def _f(kind, s, k):
    if kind == "softmax":
        return lambda z: jax.nn.softmax(s * z)[k]
    return lambda z: jax.nn.log_softmax(s * z)[k]


def _f64(kind, s, k, z):
    b = s * np.asarray(z, np.float64)
    if kind == "softmax":
        return _softmax64(b)[k]
    b = b - b.max()
    return b[k] - np.log(np.sum(np.exp(b)))


def _rounding_floor(kind, s, k, z) -> float:
    """Σ_j |∂f/∂b_j| · ulp32(b_j): what float32's rounding of the logits does to f."""
    b = s * np.asarray(z, np.float64)
    p = _softmax64(b)
    grad = -p[k] * p  # ∂p_k/∂b_j = p_k (δ_kj - p_j)
    grad[k] += p[k]
    if kind == "log_softmax":
        grad = grad / p[k] if p[k] > 0 else np.abs(p) + 1.0  # ∂ log p_k / ∂b_j = δ_kj - p_j
    ulp = np.spacing(np.abs(b).astype(np.float32)).astype(np.float64)
    return float(np.sum(np.abs(grad) * ulp))


def _data(scale_ref):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(ROWS, 8)).astype(np.float32)
    rs = (scale_ref * rng.normal(size=(ROWS, 8))).astype(np.float32)
    return xs, rs


@functools.cache
def _oracles(scale_ref, kind, s):
    """Per row: float64 Δf, float32's rounding floor, exact Shapley values and the float64
    DeepLIFT scores (shared by the modes)."""
    k = 0 if kind == "softmax" else 1
    f = _f(kind, s, k)
    xs, rs = _data(scale_ref)
    with np.errstate(invalid="ignore"):  # log_softmax: -inf - -inf where both underflow
        d = np.array(
            [_f64(kind, s, k, x) - _f64(kind, s, k, r) for x, r in zip(xs, rs, strict=True)]
        )
    floor = np.array(
        [
            _rounding_floor(kind, s, k, x) + _rounding_floor(kind, s, k, r)
            for x, r in zip(xs, rs, strict=True)
        ]
    )
    members = coalitions(xs.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.stack(
            [
                shapley_from_values(
                    np.array([_f64(kind, s, k, np.where(m, x, r)) for m in members]), x.size
                )
                for x, r in zip(xs, rs, strict=True)
            ]
        )
    with jax.enable_x64(True):
        g = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r, check=None)(x)))
        c64 = np.asarray(g(jnp.asarray(xs, jnp.float64), jnp.asarray(rs, jnp.float64)))
    return d, floor, phi, c64


def _scores(f, mode, xs, rs):
    g = lambda x, r: dl.deeplift(f, r, check=None)(x)
    if mode == "plain":
        return np.stack([np.asarray(g(x, r)) for x, r in zip(xs, rs, strict=True)])
    if mode == "vmap":
        return np.asarray(jax.vmap(g)(xs, rs))
    return np.asarray(jax.jit(jax.vmap(g))(xs, rs))


@pytest.mark.parametrize("mode", ["plain", "vmap", "jit_vmap"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("scale_ref", [0.5, 1.0])
def test_large_logits_exact_to_float32_rounding_of_the_logits(scale_ref, kind, mode):
    xs, rs = _data(scale_ref)
    if mode == "plain":
        xs, rs = xs[:4], rs[:4]
    worst, wide = 0.0, 0
    for s in SCALES:
        k = 0 if kind == "softmax" else 1
        f = _f(kind, s, k)
        c = _scores(f, mode, xs, rs)
        ds, floors, phis, c64 = _oracles(scale_ref, kind, s)
        assert np.all(np.isfinite(c)), (s, c)
        for i in range(len(xs)):
            d, phi = ds[i], phis[i]
            if not np.isfinite(d):  # log_softmax of an entry that underflows at both
                continue
            bound = 1e-5 * abs(d) + floors[i] + 1e-30
            err = abs(float(np.sum(c[i], dtype=np.float64)) - d)
            assert err <= bound, (s, i, err, d, floors[i])
            spread = np.abs(np.asarray(c[i], np.float64)).sum()
            limit = max(2 * np.abs(phi).sum(), np.abs(c64[i]).sum())
            assert spread <= limit * (1 + 1e-5) + bound, (s, i, c[i], c64[i], phi)
            wide += bool(np.abs(c64[i]).sum() > 2 * np.abs(phi).sum() * (1 + 1e-6))
            worst = max(worst, err / bound)
    assert worst <= 1.0
    assert wide <= 3  # measured: the one row above, at each scale
