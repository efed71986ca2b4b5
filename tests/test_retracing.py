"""No silent retracing: the jitted transform traces f once per input shape and dtype.

A Python side effect in f counts its traces (JAX runs the Python body only when tracing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


# ---- how often deepliftjax itself traces f ------------------------------------------------
# The transforms trace f to one jaxpr per call and interpret it at the input and the
# reference side by side (the guard's f(x), f(ref) come from that same interpretation); a
# second trace of f per call would double the trace time of a large model. Under jit the
# whole program, f's trace included, is cached: new values of the same shape trace nothing.


def _traces_per_call(make_call, seeds=range(3)):
    """The number of times f is traced by each of a few calls with new values."""
    f, calls = counted()
    call = make_call(f)
    counts = []
    for seed in seeds:
        before = calls["n"]
        jax.block_until_ready(call(seed))
        counts.append(calls["n"] - before)
    return counts


_EAGER = {
    "deeplift": lambda f: lambda s: dl.deeplift(f, _x(s + 50))(_x(s)),
    "deeplift_vjp": lambda f: lambda s: dl.deeplift_vjp(f, _x(s + 50), _x(s))[2](1.0),
    "deeplift_shap": lambda f: lambda s: dl.deeplift_shap(f, _x(s + 50, (4, 5)))(_x(s)),
}
_JITTED = {
    "deeplift": lambda f: jax.jit(lambda x, r: dl.deeplift(f, r)(x)),
    "deeplift_vjp": lambda f: jax.jit(lambda x, r: dl.deeplift_vjp(f, r, x)[2](1.0)),
    "deeplift_shap": lambda f: jax.jit(lambda x, r: dl.deeplift_shap(f, r)(x)),
}
_REF_SHAPES = {"deeplift": (5,), "deeplift_vjp": (5,), "deeplift_shap": (4, 5)}


@pytest.mark.parametrize("name", sorted(_EAGER))
def test_each_transform_traces_f_once_per_call_and_never_again_under_jit(name):
    # eager: no cache, so every call traces f, once (a new reference included)
    assert _traces_per_call(_EAGER[name], range(2)) == [1, 1]

    def call_of(f):
        g = _JITTED[name](f)
        return lambda s: g(_x(s), _x(s + 50, _REF_SHAPES[name]))

    assert _traces_per_call(call_of) == [1, 0, 0]


def test_vmap_under_jit_traces_f_once_for_every_batch_of_the_same_shape():
    def call_of(f):
        g = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r)(x)))
        return lambda s: g(_x(s, (8, 5)), _x(s + 50, (8, 5)))

    assert _traces_per_call(call_of) == [1, 0, 0]

    def shap_of(f):
        g = jax.jit(jax.vmap(lambda x, r: dl.deeplift_shap(f, r)(x), in_axes=(0, None)))
        return lambda s: g(_x(s, (3, 5)), _x(s + 50, (4, 5)))

    assert _traces_per_call(shap_of) == [1, 0, 0]


def test_deeplift_shap_traces_f_a_bounded_number_of_times_whatever_the_references():
    # references are scanned in chunks of reference_chunk_size (10): f is traced for the
    # scan's body and, when K is not a multiple of the chunk, for the remainder; never once
    # per reference. Counted while tracing the transform to a jaxpr (no compilation).
    def traces(k, **options):
        f, calls = counted()
        jax.make_jaxpr(lambda x, refs: dl.deeplift_shap(f, refs, **options)(x))(
            _x(0), _x(1, (k, 5))
        )
        return calls["n"]

    counts = {k: traces(k) for k in (1, 10, 16, 37, 100)}
    assert all(1 <= c <= 2 for c in counts.values()), counts
    assert counts[100] == counts[10] == counts[1], counts  # no remainder
    assert counts[37] == counts[16], counts
    assert traces(37, reference_chunk_size=None) == 1
    assert traces(100, reference_chunk_size=7) == counts[16]
    # and under vmap over examples with per-example references
    f, calls = counted()
    jax.make_jaxpr(jax.vmap(lambda x, refs: dl.deeplift_shap(f, refs)(x)))(
        _x(0, (3, 5)), _x(1, (3, 100, 5))
    )
    assert calls["n"] == counts[100]
