"""Recurrent, attention and normalisation models: scan, cond, loops, softmax, norms,
transformers and LSTMs stay exact (summation to delta), under jit and vmap."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rel_sum_errors_batch, rel_sum_errors_f64

import deepliftjax as dl

TOL = 1e-5


def _dt(module) -> dict:
    return {"dtype": module.dtype, "param_dtype": module.dtype}


def _check_batch(f, xs, refs):
    c = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r)(x)))(xs, refs)
    assert c.shape == xs.shape
    assert np.isfinite(np.asarray(c)).all()
    fv = jax.jit(jax.vmap(f))  # f's float32 values, compiled once (not op by op)
    fx, fr = fv(xs), fv(refs)
    errs32 = rel_sum_errors_batch(c, fx, fr)
    errs64 = rel_sum_errors_f64(c, f, xs, refs)
    # Against the true Δf (float64). Where float32's own rounding of f is larger than 1e-5
    # of Δf (long recurrences), the scores must be within 4x that rounding instead.
    f32_noise = rel_sum_errors_f64(fx - fr, f, xs, refs)
    allowed = np.maximum(TOL, 4 * f32_noise)
    assert (errs64 <= allowed).all(), (errs64, allowed, errs32)
    return c


def _data(shape, batch=3, seed=0):
    xs = jax.random.normal(jax.random.PRNGKey(seed), (batch, *shape))
    refs = 0.5 * jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, *shape))
    return xs, refs


def _model_fn(model, x, seed=0, scale=1.0):
    params = model.init(jax.random.PRNGKey(seed), x)
    params = jax.tree_util.tree_map(lambda p: p * scale, params)

    def f(v):
        return model.apply(params, v)

    def f64(v):  # called with x64 enabled
        p64 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        return model.clone(dtype=jnp.float64).apply(p64, v)

    f.f64 = f64
    return f


# ---- recurrent --------------------------------------------------------------------------


class LSTMClassifier(nn.Module):
    hidden: int = 16
    layers: int = 2
    cell: type = nn.LSTMCell
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (T, F)
        h = x[None]
        for _ in range(self.layers):
            h = nn.RNN(self.cell(self.hidden, **_dt(self)))(h)
        return nn.Dense(1, **_dt(self))(h[0, -1])[0]


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.OptimizedLSTMCell], ids=["lstm", "optimized"])
def test_two_layer_lstm_length_50(cell):
    xs, refs = _data((50, 4))
    _check_batch(_model_fn(LSTMClassifier(cell=cell), xs[0]), xs, refs)


def test_gru():
    xs, refs = _data((20, 4))
    _check_batch(_model_fn(LSTMClassifier(cell=nn.GRUCell, layers=1), xs[0]), xs, refs)


class BiRNN(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        fwd, bwd = nn.RNN(nn.LSTMCell(8, **_dt(self))), nn.RNN(nn.GRUCell(8, **_dt(self)))
        h = nn.Bidirectional(fwd, bwd)(x[None])
        return jnp.sum(nn.Dense(1, **_dt(self))(h[0]))


def test_bidirectional_rnn():
    xs, refs = _data((15, 3))
    _check_batch(_model_fn(BiRNN(), xs[0]), xs, refs)


class ScannedDense(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, c, x):
        c = jnp.tanh(nn.Dense(6, **_dt(self))(c) + nn.Dense(6, **_dt(self))(x))
        return c, jax.nn.sigmoid(c)


class LiftedScan(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(ScannedDense, variable_broadcast="params", split_rngs={"params": False})
        c, ys = scan(dtype=self.dtype)(jnp.zeros(6, self.dtype), x)
        return jnp.sum(c) + jnp.sum(ys[-3:])


def test_nn_scan_lifted_module():
    xs, refs = _data((12, 3))
    _check_batch(_model_fn(LiftedScan(), xs[0]), xs, refs)


W = jax.random.normal(jax.random.PRNGKey(9), (5, 5)) * 0.7


def _hand_scan(x, reverse=False):
    def step(c, xt):
        c = jnp.tanh(c @ W + xt) * jax.nn.sigmoid(xt - c)
        return c, c**2

    c, ys = jax.lax.scan(step, jnp.zeros(5), x, reverse=reverse)
    return jnp.sum(c) + jnp.sum(ys)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_hand_written_scan(reverse):
    xs, refs = _data((9, 5))
    _check_batch(lambda x: _hand_scan(x, reverse), xs, refs)


def test_fori_loop_static_trip_count():
    def f(x):
        return jnp.sum(jax.lax.fori_loop(0, 6, lambda i, c: jnp.tanh(c @ W + x * i), x))

    xs, refs = _data((5,))
    _check_batch(f, xs, refs)


def test_cond_branch_differs_between_input_and_reference():
    def f(x):
        y = jax.lax.cond(x.sum() > 0, lambda v: jnp.tanh(v @ W), lambda v: jax.nn.relu(v) * 2, x)
        return jnp.sum(y * jnp.arange(5.0))

    xs = jnp.stack([jnp.full(5, 1.0), jnp.full(5, -1.0), jnp.linspace(-1, 2, 5)])
    refs = -xs  # every pair takes different branches
    assert all(bool(f(x) != f(r)) for x, r in zip(xs, refs, strict=True))
    _check_batch(f, xs, refs)


def test_switch_with_three_branches():
    def f(x):
        i = jnp.clip(jnp.floor(x[0] + 1.5), 0, 2).astype(jnp.int32)  # index from a float step
        branches = [lambda v: jnp.tanh(v), lambda v: v**2, lambda v: jnp.sin(v)]
        return jnp.sum(jax.lax.switch(i, branches, x))

    # an index computed from the input: the jump is credited through the float it came from
    xs = jnp.array([[0.7, -1.0, 2.0], [-1.2, 0.5, 0.3], [0.1, 0.2, -0.3]])
    refs = jnp.array([[-1.2, -1.0, 2.0], [0.9, 0.5, 0.3], [0.1, 0.2, -0.3]])
    _check_batch(f, xs, refs)

    def g(x, i):
        branches = [lambda v: jnp.tanh(v), lambda v: v**2, lambda v: jnp.sin(v)]
        return jnp.sum(jax.lax.switch(i, branches, x))

    x, r = jnp.array([0.3, -1.0, 2.0]), jnp.zeros(3)
    for i in range(3):  # a constant index: the chosen branch, exactly
        c = dl.deeplift(g, r)(x, i)
        np.testing.assert_allclose(c.sum(), g(x, i) - g(r, i), rtol=TOL)


def test_while_loop_error_names_the_loop_and_the_fix():
    def f(x):
        return jax.lax.while_loop(lambda c: jnp.sum(c) < 10.0, lambda c: c * 2.0 + 0.1, x).sum()

    with pytest.raises(dl.DeepLiftError, match="(?s)'while' loop.*fori_loop.*scan"):
        dl.deeplift(f, jnp.zeros(3))(jnp.ones(3))


def test_saturated_gates_deeplift_sees_what_the_gradient_misses():
    """§1/§3.3: a gate saturated at input and reference has a near-zero gradient, yet the
    difference it makes is credited by DeepLIFT."""

    def gated(x):  # an LSTM-style gate: sigmoid input gate times tanh candidate
        return jax.nn.sigmoid(10.0 * x[0]) * jnp.tanh(10.0 * x[1])

    x = jnp.array([1.5, 1.5])
    grad = jax.grad(gated)(x)
    assert np.abs(np.asarray(grad)).max() < 1e-5  # both units saturated: no gradient
    np.testing.assert_allclose(grad * (x - jnp.array([-1.5, 1.5])), 0.0, atol=1e-4)
    # the gate closed at the reference, open at the input: all of Δ ≈ 1 is the gate's
    c = dl.deeplift(gated, jnp.array([-1.5, 1.5]))(x)
    np.testing.assert_allclose(c, [1.0, 0.0], atol=1e-6)
    # both flipped: the midpoint rule credits the candidate (the gate's midpoint is 0.5,
    # the candidate's is 0), and the scores still sum to Δ
    r = jnp.array([-1.5, -1.5])
    c = dl.deeplift(gated, r)(x)
    np.testing.assert_allclose(c.sum(), gated(x) - gated(r), rtol=TOL)
    assert float(c[1]) > 0.99


# ---- attention, softmax and normalisation -----------------------------------------------

NORMS = {
    "softmax": lambda x: jax.nn.softmax(x, axis=-1) @ jnp.arange(6.0),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1) @ jnp.arange(6.0),
    "logsumexp": lambda x: jax.nn.logsumexp(x, axis=-1),
    "layer_norm": lambda x: nn.LayerNorm().apply(
        {"params": {"scale": jnp.linspace(0.5, 2, 6), "bias": jnp.ones(6) * 0.1}}, x
    ),
    "rms_norm": lambda x: nn.RMSNorm().apply({"params": {"scale": jnp.linspace(0.5, 2, 6)}}, x),
    "group_norm": lambda x: nn.GroupNorm(num_groups=2).apply(
        {"params": {"scale": jnp.linspace(0.5, 2, 6), "bias": jnp.ones(6) * 0.1}}, x
    ),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_normalisation_and_softmax_alone(name):
    g = NORMS[name]
    w = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
    f = lambda x: jnp.sum(jnp.reshape(g(x), (4, -1)) * w[:, : jnp.reshape(g(x), (4, -1)).shape[1]])
    xs, refs = _data((4, 6), batch=4)
    _check_batch(f, 2 * xs, refs)


class EncoderBlock(nn.Module):
    heads: int = 4
    dim: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(**_dt(self))(x)
        attention = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, deterministic=True, **_dt(self)
        )
        x = x + attention(h, h)
        h = nn.LayerNorm(**_dt(self))(x)
        h = nn.Dense(self.dim, **_dt(self))(nn.gelu(nn.Dense(2 * self.dim, **_dt(self))(h)))
        return x + h


class Transformer(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, emb):  # the embedding output is the attributed input
        t, d = emb.shape
        pos = jnp.sin(jnp.arange(t)[:, None] / 10.0 ** (jnp.arange(d)[None] / d))
        x = emb + pos.astype(self.dtype)
        for _ in range(2):
            x = EncoderBlock(dim=d, dtype=self.dtype)(x)
        return nn.Dense(1, **_dt(self))(jnp.mean(x, axis=0))[0]  # mean-pooled classifier head


def test_transformer_encoder_two_blocks_four_heads():
    xs, refs = _data((10, 16), batch=2)
    _check_batch(_model_fn(Transformer(), xs[0]), xs, refs)
