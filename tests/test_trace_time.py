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


def test_after_leaves_every_value_unchanged():
    """``_rulekit.after`` ties values to the cotangent without changing a bit of them as
    arithmetic reads them: ±0, ±inf, NaN, and subnormals as XLA reads them (as ±0 on CPU),
    whatever the cotangent holds (inf, NaN, nothing); it passes no derivative to the
    cotangent."""
    from deepliftjax._rulekit import after

    tiny = np.finfo(np.float32).smallest_subnormal
    v = jnp.array([0.0, -0.0, tiny, -tiny, 1.5, -np.inf, np.inf, np.nan], jnp.float32)
    read = jax.jit(lambda v, one: v * one)(v, 1.0)  # how XLA's arithmetic reads v
    ints = jnp.arange(3)
    for g in (jnp.ones(4), jnp.full(2, np.inf), jnp.full(2, -np.nan), jnp.zeros(0), 7.0):
        out, out_ints = jax.jit(after)((v, ints), g)
        bits, ok = np.asarray(out).view(np.uint32), np.asarray(v).view(np.uint32)
        ok_read = np.asarray(read).view(np.uint32)
        assert np.all((bits == ok) | (bits == ok_read)), (g, bits)
        assert np.array_equal(bits[[0, 1, 4, 5, 6, 7]], ok[[0, 1, 4, 5, 6, 7]])
        assert np.array_equal(out_ints, ints)
    dg = jax.grad(lambda g: jnp.sum(after(jnp.full(5, 1.5), g)))(jnp.full(3, 2.0))
    np.testing.assert_array_equal(dg, np.zeros(3))


def test_multipliers_are_computed_when_their_cotangent_is():
    """A layer's multipliers need only forward values; untied from the cotangent, XLA
    computed every layer's at the start of the backward pass and held them all (an
    Enformer's peak memory 98 -> 41 activations, with the tie). Memory of a 16-layer
    chain compiled: 124 activations with the tie, 226 without; the gradient's 32."""
    n, c, depth = 512, 64, 16
    ws = [jax.random.normal(jax.random.key(i), (c, c)) / 8 for i in range(depth)]

    def f(x):
        for w in ws:
            x = jax.nn.sigmoid(x @ w) * x
        return jnp.sum(x)

    def scores(x, r):
        out, out_ref, pullback = dl.deeplift_vjp(f, r, x)
        return pullback(jnp.ones_like(out))[0] * (x - r)

    x = jax.ShapeDtypeStruct((n, c), jnp.float32)
    temp = lambda fn, *a: jax.jit(fn).lower(*a).compile().memory_analysis().temp_size_in_bytes  # noqa: E731
    assert temp(scores, x, x) <= 5 * temp(jax.grad(f), x)
    a, b = jax.random.normal(jax.random.key(0), (2, n, c))
    np.testing.assert_allclose(jax.jit(scores)(a, b).sum(), f(a) - f(b), rtol=1e-4)
