"""No silent retracing: the jitted transform traces f once per input shape and dtype.

A Python side effect in f counts its traces (JAX runs the Python body only when tracing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import deepliftjax as dl

W = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)


def counted():
    calls = {"n": 0}

    def f(x):
        calls["n"] += 1
        h = jnp.tanh(x @ W)
        return jnp.sum(jax.nn.relu(h) * jax.nn.sigmoid(h[::-1]))

    return f, calls


def _x(seed, shape=(5,)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_reference_as_an_argument_does_not_retrace():
    f, calls = counted()
    g = jax.jit(lambda x, r: dl.deeplift(f, r)(x))
    g(_x(0), _x(1)).block_until_ready()
    n = calls["n"]
    assert n >= 1
    for seed in range(2, 8):  # new inputs and new references of the same shape
        c = g(_x(seed), _x(seed + 100))
    c.block_until_ready()
    assert calls["n"] == n
    # the counter works: a new shape traces again
    g(jnp.zeros(5, jnp.float16), jnp.zeros(5, jnp.float16))
    assert calls["n"] > n


def test_fixed_reference_closure_does_not_retrace():
    f, calls = counted()
    g = jax.jit(dl.deeplift(f, jnp.zeros(5)))
    g(_x(0))
    n = calls["n"]
    for seed in range(1, 6):
        g(_x(seed))
    assert calls["n"] == n


def test_vmapped_batches_do_not_retrace():
    f, calls = counted()
    g = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r)(x), in_axes=(0, None)))
    g(_x(0, (8, 5)), _x(1))
    n = calls["n"]
    for seed in range(2, 6):
        g(_x(seed, (8, 5)), _x(seed + 10))
    assert calls["n"] == n


def test_options_and_pytrees_do_not_retrace():
    calls = {"n": 0}

    def f(p, scale):
        calls["n"] += 1
        return jnp.sum(jnp.tanh(p["a"] @ W) * scale) + jnp.sum(p["b"] ** 2), p["b"]

    g = jax.jit(lambda p, r, s: dl.deeplift(f, r, has_aux=True, multiply_by_inputs=False)(p, s))
    for seed in range(4):
        p = {"a": _x(seed), "b": _x(seed + 1, (3,))}
        r = {"a": _x(seed + 2), "b": jnp.zeros(3)}
        m, aux = g(p, r, jnp.float32(seed))
        if seed == 0:
            n = calls["n"]
    assert calls["n"] == n
    np.testing.assert_array_equal(aux, p["b"])


def test_deeplift_vjp_under_jit_does_not_retrace():
    f, calls = counted()

    @jax.jit
    def scores(x, r, ct):
        _, _, pullback = dl.deeplift_vjp(f, r, x)
        return pullback(ct)[0] * (x - r)

    scores(_x(0), _x(1), 1.0)
    n = calls["n"]
    for seed in range(2, 6):
        scores(_x(seed), _x(seed + 1), 2.0)
    assert calls["n"] == n


def test_summation_residual_under_jit_does_not_retrace():
    from deepliftjax._checks import summation_residual

    f, calls = counted()
    g = jax.jit(lambda xs, r: summation_residual(f, r, xs, batched=True))
    res = g(_x(0, (6, 5)), _x(1))
    n = calls["n"]
    for seed in range(2, 5):
        res = g(_x(seed, (6, 5)), _x(seed + 1))
    assert calls["n"] == n
    assert res.shape == (6,) and float(res.max()) < 1e-5
