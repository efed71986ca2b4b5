"""The Enformer-style model: attention pooling and relative positions as published, and
DeepLIFT-SHAP with dinucleotide-shuffled references summing to delta (float32, <= 1e-5
relative to the mean |f(x) - f(r_k)|; the target is the central four bins of a track)
with no rewrite of the model: 512 bp (one tower block, one transformer layer) in the
default suite, 2,048 bp and 8,192 bp marked slow (``pytest -m slow tests/test_enformer.py``).
f(x) - f(r_k) is evaluated in float64 (the true difference), compiled once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepliftjax as dl
from deepliftjax import deeplift_shap, dinuc_shuffle
from deepliftjax.genomics.enformer import (
    AttentionPool,
    Enformer,
    positional_features,
    scanned_variables,
)


def test_attention_pool_is_softmax_over_window_times_values():
    x = jax.random.normal(jax.random.key(0), (6, 3))
    pool = AttentionPool(2)
    v = pool.init(jax.random.key(1), x)
    w = v["params"]["to_attn_logits"]["kernel"]
    np.testing.assert_allclose(w, 2 * np.eye(3))
    win = x.reshape(3, 2, 3)
    a = jax.nn.softmax(win @ w, axis=1)
    np.testing.assert_allclose(pool.apply(v, x), (a * win).sum(1), rtol=1e-6)


def test_positional_features_symmetric_and_signed():
    p = positional_features(5, 12)
    assert p.shape == (9, 12)
    np.testing.assert_allclose(p[:, :6], p[::-1, :6])  # functions of |distance|
    np.testing.assert_allclose(p[:, 6:], -p[::-1, 6:])  # times sign(distance)
    assert np.all(p[4, 6:] == 0)


def _check(length, channels, tower, transformer, k, chunk):
    m = Enformer(
        channels=channels,
        num_heads=2,
        transformer_layers=transformer,
        tower_layers=tower,
        crop=2,
        num_outputs=2,
    )
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (length,), 0, 4), 4)
    variables = jax.jit(m.init)(jax.random.key(1), x)
    # non-trivial BatchNorm statistics
    stats = variables["batch_stats"]
    keys = iter(jax.random.split(jax.random.key(2), 1000))
    stats = jax.tree_util.tree_map(
        lambda s: s + 0.3 * jnp.abs(jax.random.normal(next(keys), s.shape)), stats
    )
    # weights 1.2x the initializer's: the track then moves by O(0.1-1) between a sequence and
    # its shuffles (at 1x, by ~1e-3 of its value at 8,192 bp; float32 cannot resolve that)
    params = jax.tree_util.tree_map(lambda p: 1.2 * p, variables["params"])
    variables = {**variables, "params": params, "batch_stats": stats}
    centre = jax.eval_shape(m.apply, variables, x).shape[0] // 2
    f = lambda s: jnp.sum(m.apply(variables, s)[centre - 2 : centre + 2, 0])  # noqa: E731
    refs = dinuc_shuffle(jax.random.key(3), x, num_shuffles=k)
    # references as a traced argument: closed over, XLA would constant-fold the reference pass
    shap = lambda x, refs: deeplift_shap(  # noqa: E731
        f, refs, reference_chunk_size=chunk, return_residuals=True
    )(x)
    s = jax.jit(shap)(x, refs)
    # Δf in float64 (x64 on, parameters and inputs cast): the true difference, compiled once
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        f64 = lambda s: jnp.sum(m.apply(v64, s)[centre - 2 : centre + 2, 0])  # noqa: E731
        x64, refs64 = jnp.asarray(x, jnp.float64), jnp.asarray(refs, jnp.float64)
        deltas = jax.jit(jax.vmap(lambda r: f64(x64) - f64(r)))(refs64)
        assert deltas.dtype == jnp.float64
        deltas = np.asarray(deltas)
    # relative to the changes explained (signed deltas of several references can cancel)
    scale = float(np.mean(np.abs(deltas)))
    total = float(np.sum(np.asarray(s.contributions, np.float64)))
    want = float(np.mean(deltas))
    assert abs(total - want) <= 1e-5 * scale, (total, want, scale)
    assert float(s.residuals) <= 1e-5 * float(np.max(np.abs(deltas))), s.residuals
    assert s.contributions.shape == x.shape


def test_enformer_shap_sums_to_delta_512bp():
    _check(512, channels=16, tower=1, transformer=1, k=2, chunk=1)


@pytest.mark.slow
def test_enformer_shap_sums_to_delta_2048bp():
    _check(2048, channels=16, tower=3, transformer=1, k=2, chunk=1)


@pytest.mark.slow
def test_enformer_shap_sums_to_delta_8192bp():
    _check(8192, channels=32, tower=4, transformer=2, k=4, chunk=2)


# ---- Enformer(remat=True): transformer blocks in nn.scan over nn.remat, tower blocks remat --

SMALL = dict(channels=12, num_heads=2, transformer_layers=3, tower_layers=1, crop=1)
SMALL_LEN = 32


def _small_models(dtype=jnp.float32):
    plain = Enformer(**SMALL)
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(4), (SMALL_LEN,), 0, 4), 4, dtype=dtype)
    v = jax.jit(plain.init)(jax.random.key(5), x.astype(jnp.float32))
    v = jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), v)
    v = {**v, "params": jax.tree_util.tree_map(lambda p: 1.5 * p, v["params"])}
    ck = plain.clone(remat=True)
    vs = scanned_variables(v, SMALL["transformer_layers"])
    f_plain = lambda s: jnp.sum(plain.apply(v, s)[:, 0])  # noqa: E731
    f_ck = lambda s: jnp.sum(ck.apply(vs, s)[:, 0])  # noqa: E731
    return f_plain, f_ck, x


def test_checkpointed_enformer_has_the_scanned_layout_and_the_same_outputs():
    f_plain, f_ck, x = _small_models()
    ck = Enformer(**SMALL, remat=True)
    shapes = jax.eval_shape(ck.init, jax.random.key(0), x)["params"]
    assert "transformer" in shapes and "transformer_0" not in shapes
    kernel = shapes["transformer"]["block"]["ff_in"]["kernel"]
    assert kernel.shape == (SMALL["transformer_layers"], 12, 24)
    # float32: the scan and the unrolled blocks fuse differently (2.9e-6 apart here)
    np.testing.assert_allclose(jax.jit(f_ck)(x), jax.jit(f_plain)(x), rtol=1e-5)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("plain", marks=pytest.mark.slow),
        "jit",
        pytest.param("vmap", marks=pytest.mark.slow),
    ],
)
def test_checkpointed_enformer_scores_equal_the_plain_model(mode):
    """In float64, so that the comparison sees the rules, not float32 fusion order."""
    with jax.enable_x64(True):
        f_plain, f_ck, x = _small_models(jnp.float64)
        ref = jnp.full_like(x, 0.25)
        xs = jnp.stack([x, ref, x[::-1]])  # the second row equals the reference: scores 0
        scores = {}
        for name, f in (("plain", f_plain), ("ck", f_ck)):
            g = dl.deeplift(f, ref)
            if mode == "plain" and name == "ck":
                scores[name] = jnp.stack([g(v) for v in xs])
            elif mode in ("jit", "plain"):
                scores[name] = jnp.stack([jax.jit(g)(v) for v in xs])
            else:
                scores[name] = jax.jit(jax.vmap(g))(xs)
        c, p = np.asarray(scores["ck"]), np.asarray(scores["plain"])
        deltas = np.asarray(jax.jit(jax.vmap(f_plain))(xs) - f_plain(ref))
    assert c.dtype == np.float64
    assert np.all(c[1] == 0)
    scale = np.abs(p).sum(axis=(1, 2), keepdims=True) + 1e-300
    assert np.max(np.abs(c - p) / scale) <= 1e-6
    np.testing.assert_allclose(c.sum(axis=(1, 2)), deltas, rtol=1e-9, atol=1e-12)


def test_checkpointed_enformer_scan_stores_only_the_carries():
    """Under DeepLIFT the transformer scan saves, per block, only its carry's two sides
    (input and reference, (layers, positions, channels) each): jax.checkpoint is kept."""
    import contextlib
    import io

    from jax.ad_checkpoint import print_saved_residuals

    from deepliftjax import _api

    _, f_ck, x = _small_models()
    ref = jnp.full_like(x, 0.25)
    options = _api._options("rescale", "cross", None, "highest", "guarded", "pass")
    run = _api._pair_runner(jax.make_jaxpr(f_ck)(x), [ref], 1, options)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(lambda x: run(x)[0], x)
    saved = {line.split()[0] for line in out.getvalue().splitlines() if "output of scan" in line}
    n = SMALL_LEN // 4  # stem pool and one tower stage halve the length twice
    assert saved, "nothing saved by the scan: the test does not look at the right thing"
    assert saved <= {f"f32[{SMALL['transformer_layers']},{n},12]"}, saved
