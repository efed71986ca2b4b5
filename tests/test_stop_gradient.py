"""What ``stop_gradient`` means to DeepLIFT: one test per mode of what the scores sum to.

* ``"pass"`` (default): ``sum(C) == f(x) - f(ref)``.
* ``"constant"``: ``sum(C) == f(x) - f~(ref)``, ``f~`` = ``f`` with the stopped values
  frozen at their value at ``x``; ``f~ = f`` where only a shift is stopped (softmax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax import DeepLiftError, deeplift, deeplift_shap, deeplift_vjp

X = jnp.array([1.0, -2.0, 0.5, 3.0])
R = jnp.array([0.2, 0.4, -1.0, 0.0])


def f(x):
    return jnp.sum(jax.lax.stop_gradient(jnp.tanh(x)) * x**2)


def f_frozen(x, at):
    return jnp.sum(jnp.tanh(at) * x**2)


def test_pass_mode_sums_to_delta():
    for mode in ({}, {"stop_gradient": "pass"}):
        c = deeplift(f, R, **mode)(X)
        np.testing.assert_allclose(c.sum(), f(X) - f(R), rtol=1e-5)


def test_constant_mode_sums_to_frozen_delta():
    c = deeplift(f, R, stop_gradient="constant")(X)
    np.testing.assert_allclose(c.sum(), f(X) - f_frozen(R, X), rtol=1e-5)
    # the weights held fixed: each input gets tanh(x) times its own change of x**2
    np.testing.assert_allclose(c, jnp.tanh(X) * (X**2 - R**2), rtol=1e-5)
    assert abs(float(c.sum() - (f(X) - f(R)))) > 0.1  # not f(x) - f(ref) here


def test_constant_mode_softmax_shift_is_exact():
    """jax.nn.softmax stops the gradient of its max shift; frozen, the function is the same."""
    g = lambda z: jnp.sum(jax.nn.softmax(z) * jnp.tanh(z))  # noqa: E731
    c = deeplift(g, R, stop_gradient="constant")(X)
    np.testing.assert_allclose(c.sum(), g(X) - g(R), rtol=1e-5)


def test_profile_target_constant_mode_is_weights_held_fixed():
    """chrombpnet's profile target; "constant" gives sum(softmax(z(x)) * (z(x) - z(r)))."""

    def t(z):
        zn = z - z.mean()
        return jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(zn)) * zn)

    zx, zr = X - X.mean(), R - R.mean()
    c = deeplift(t, R, stop_gradient="constant")(X)
    w = jax.nn.softmax(zx)
    np.testing.assert_allclose(c.sum(), jnp.sum(w * (zx - zr)), rtol=1e-5)
    np.testing.assert_allclose(c, (w - w.mean()) * (X - R), rtol=1e-5, atol=1e-6)
    c_pass = deeplift(t, R)(X)
    np.testing.assert_allclose(c_pass.sum(), t(X) - t(R), rtol=1e-5)


def test_constant_mode_under_jit_vmap_and_vjp_and_shap():
    xs = jnp.stack([X, X[::-1], X * 0.5])
    cs = jax.jit(jax.vmap(deeplift(f, R, stop_gradient="constant")))(xs)
    want = jax.vmap(lambda x: f(x) - f_frozen(R, x))(xs)
    np.testing.assert_allclose(cs.sum(1), want, rtol=1e-5)
    out, out_ref, pullback = deeplift_vjp(f, R, X, stop_gradient="constant")
    np.testing.assert_allclose(out_ref, f_frozen(R, X), rtol=1e-6)  # out_ref is f~(ref)
    m = pullback(1.0)
    m = m[0] if isinstance(m, tuple) else m
    np.testing.assert_allclose((m * (X - R)).sum(), f(X) - f_frozen(R, X), rtol=1e-5)
    refs = jnp.stack([R, R * 2])
    s = deeplift_shap(f, refs, stop_gradient="constant")(X)
    want = jnp.mean(jnp.stack([f(X) - f_frozen(r, X) for r in refs]))
    np.testing.assert_allclose(s.sum(), want, rtol=1e-5)


def test_bad_mode_raises():
    with pytest.raises(DeepLiftError, match="stop_gradient"):
        deeplift(f, R, stop_gradient="cut")(X)
