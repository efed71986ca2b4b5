"""The reference pass is computed at trace time when it is known then (closed-over reference
and weights), so XLA does not constant-fold it at compile time (VGG16: 17.9 s -> 6.7 s)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _helpers import equations_in
from jax import lax

import deepliftjax as dl

W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 4)), jnp.float32)


def f(x):
    h = lax.conv_general_dilated(x[None], W, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    return jnp.tanh(h).sum()


def _convs(jaxpr) -> int:
    return sum(e.primitive is lax.conv_general_dilated_p for e in equations_in(jaxpr))


X, REF = jnp.linspace(-1, 1, 16).reshape(8, 2), jnp.zeros((8, 2))


def test_closed_over_reference_is_not_staged():
    # the input's forward conv and its transpose; the reference's conv ran at trace time
    assert _convs(jax.make_jaxpr(jax.jit(dl.deeplift(f, REF)))(X).jaxpr) == 2


def test_traced_reference_is_staged_and_both_agree():
    g = jax.jit(lambda x, r: dl.deeplift(f, r)(x))
    assert _convs(jax.make_jaxpr(g)(X, REF).jaxpr) == 3
    a, b = jax.jit(dl.deeplift(f, REF))(X), g(X, REF)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.sum(), f(X) - f(REF), rtol=1e-5)


def test_rule_masks_are_not_program_constants():
    """Arrays a rule builds from shapes alone (``ones_like`` multipliers, "no jump" masks)
    are staged, not captured as activation-sized constants of the program (at Enformer's
    full width they came to 2 GB per 8 kb of sequence)."""
    from deepliftjax.genomics.enformer import Enformer

    model = Enformer(channels=16, num_heads=2, transformer_layers=1, tower_layers=1, crop=0)
    x = jax.nn.one_hot(jnp.arange(256) % 4, 4)
    v = model.init(jax.random.key(0), x)
    f = lambda s, w=v: model.apply(w, s)[:, 0].sum()  # noqa: E731
    r = x[::-1]
    nbytes = lambda jaxpr: sum(np.asarray(c).nbytes for c in jaxpr.consts)  # noqa: E731
    plain = nbytes(jax.make_jaxpr(f)(x))  # the model's own constants (positional features)
    for fn, args, limit in (
        (lambda a, b: dl.deeplift(f, b)(a), (x, r), 5 * plain),  # traced reference
        # weights traced, as in a training loop
        (lambda w, a, b: dl.deeplift(lambda s: f(s, w), b)(a), (v, x, r), 5 * plain),
        # closed over: the reference pass is computed now, its values are constants
        (dl.deeplift(f, r), (x,), 10 * plain),
    ):
        # not under jit, whose constants would sit inside its equation; 1.7 MB each before
        assert nbytes(jax.make_jaxpr(fn)(*args)) <= limit
    c = jax.jit(lambda a, b: dl.deeplift(f, b)(a))(x, r)
    np.testing.assert_allclose(c.sum(), f(x) - f(r), rtol=1e-4, atol=1e-6)
