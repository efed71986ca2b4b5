"""BPNet / ChromBPNet in Flax: shapes, and summation to delta of the counts and profile
targets in float32 (<= 1e-5 relative) under jit and vmap, for every profile weighting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax import deeplift, deeplift_vjp, dinuc_shuffle
from deepliftjax.genomics import targets
from deepliftjax.genomics.models import BPNet, ChromBPNet, default_trimming

L, K = 200, 2


def _random_params(module, x, *args, scale=1.5):
    params = module.init(jax.random.key(0), x, *args)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    # larger weights than the initializer's, so the ReLUs switch between input and refs
    return tree.unflatten(
        [
            p * scale + 0.05 * jax.random.normal(k, p.shape)
            for p, k in zip(leaves, keys, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def seqs():
    toks = jax.random.randint(jax.random.key(2), (2, L), 0, 4)
    x = jax.nn.one_hot(toks, 4)
    refs = jax.vmap(lambda k, s: dinuc_shuffle(k, s, num_shuffles=K))(
        jax.random.split(jax.random.key(3), 2), x
    )
    return x, refs


@pytest.fixture(scope="module")
def bpnet(seqs):
    x, _ = seqs
    net = BPNet(n_filters=8, n_layers=2, n_outputs=2, n_control_tracks=2)
    ctl = jnp.abs(jax.random.normal(jax.random.key(4), (2, L, 2)))
    params = _random_params(net, x, ctl)
    return (lambda s, c: net.apply(params, s, c)), ctl


@pytest.fixture(scope="module")
def chrombpnet(seqs):
    x, _ = seqs
    net = ChromBPNet(BPNet(4, 1, 1, 0), BPNet(6, 2, 1, 0))
    params = _random_params(net, x[0])
    return lambda s: net.apply(params, s)


def _close(total, want, tol=1e-5, floor=0.1):
    """|total - want| <= tol * |want|, with |want| floored at 0.1 (the targets are O(1))."""
    total, want = np.asarray(total), np.asarray(want)
    assert np.all(np.abs(total - want) <= tol * np.maximum(np.abs(want), floor)), (total, want)


def test_shapes_and_trimming():
    x = jnp.zeros((3, L, 4))
    net = BPNet(n_filters=4, n_layers=2, n_control_tracks=0)
    p, c = net.apply(net.init(jax.random.key(0), x), x)
    assert p.shape == (3, L - 2 * default_trimming(2), 2) and c.shape == (3, 1)
    p1, c1 = net.apply(net.init(jax.random.key(0), x), x[0])
    assert p1.shape == p.shape[1:] and c1.shape == (1,)
    m = ChromBPNet(BPNet(4, 1, 1, 0), BPNet(4, 2, 1, 0))
    p, c = m.apply(m.init(jax.random.key(0), x), x)
    assert p.shape == (3, L - 2 * default_trimming(2), 1) and c.shape == (3, 1)
    with pytest.raises(ValueError, match="trimming"):
        net.apply(net.init(jax.random.key(0), x), jnp.zeros((3, 100, 4)))


def test_counts_sum_to_delta_jit_vmap(bpnet, seqs):
    model, ctl = bpnet
    x, refs = seqs
    t = targets.counts_target(model)
    f = jax.jit(jax.vmap(deeplift(t, refs[0, 0])))
    c = f(x, ctl)
    delta = jax.jit(lambda r: jax.vmap(t)(x, ctl) - jax.vmap(t, (None, 0))(r, ctl))
    _close(c.sum((1, 2)), delta(refs[0, 0]))
    shap = jax.jit(jax.vmap(targets.counts_shap(model, refs[0], return_residuals=True)))(x, ctl)
    want = jnp.mean(jax.jit(jax.vmap(delta))(refs[0]), 0)
    _close(shap.contributions.sum((1, 2)), want)


@pytest.mark.parametrize("weighting", targets.PROFILE_WEIGHTINGS)
def test_profile_weightings_sum_jit_vmap(bpnet, seqs, weighting):
    """What each profile weighting's scores sum to (see genomics.targets)."""
    model, ctl = bpnet
    x, refs = seqs
    t = targets.profile_target(model)

    def expected(xi, ci, r):
        zx = targets.mean_normalize(model(xi, ci)[0])
        zr = targets.mean_normalize(model(r, ci)[0])
        if weighting in ("exact", "bpnet-lite"):
            return t(xi, ci) - t(r, ci)
        return jnp.sum(targets.profile_weights(zx, zr, weighting) * (zx - zr))

    fn = jax.jit(jax.vmap(targets.profile_shap(model, refs[0], weighting=weighting)))
    c = fn(x, ctl)
    want = jax.jit(
        jax.vmap(lambda xi, ci: jnp.mean(jax.vmap(lambda r: expected(xi, ci, r))(refs[0])))
    )(x, ctl)
    _close(c.sum((1, 2)), want)


def test_fixed_weighting_is_stop_gradient_constant(bpnet, seqs):
    """The "fixed" weights pulled back through the logits = deeplift with "constant"."""
    model, ctl = bpnet
    x, refs = seqs
    logits = lambda s: model(s, ctl[0])[0]  # noqa: E731
    out, out_ref, pullback = deeplift_vjp(logits, refs[0, 0], x[0])
    w = targets.profile_weights(
        targets.mean_normalize(out), targets.mean_normalize(out_ref), "fixed"
    )
    m = pullback(jnp.reshape(w - w.mean(), out.shape))
    m = m[0] if isinstance(m, tuple) else m
    t = targets.profile_target(lambda s: model(s, ctl[0]))
    c = deeplift(t, refs[0, 0], stop_gradient="constant")(x[0])
    np.testing.assert_allclose(m * (x[0] - refs[0, 0]), c, rtol=1e-4, atol=1e-6)


def test_chrombpnet_targets_sum_to_delta(chrombpnet, seqs):
    x, refs = seqs
    for t in (
        targets.counts_target(chrombpnet),
        targets.profile_target(chrombpnet, stop_gradient=False),
    ):
        c = jax.jit(jax.vmap(deeplift(t, refs[1, 0])))(x)
        _close(c.sum((1, 2)), jax.jit(jax.vmap(t))(x) - jax.jit(t)(refs[1, 0]))
    c = jax.vmap(targets.profile_shap(chrombpnet, refs[1], weighting="bpnet-lite"))(x)
    t = targets.profile_target(chrombpnet)
    want = jnp.mean(jax.vmap(lambda r: jax.vmap(t)(x) - t(r))(refs[1]), 0)
    _close(c.sum((1, 2)), want)


def test_profile_shap_chunks_and_all_at_once_agree(bpnet, seqs):
    """All references at once (vmap) and in chunks (lax.map) give the same scores."""
    model, ctl = bpnet
    x, refs = seqs
    k = refs.shape[1]
    out = [
        jax.jit(jax.vmap(targets.profile_shap(model, refs[0], reference_chunk_size=c)))(x, ctl)
        for c in (None, k, 2)
    ]
    _close(out[1], out[0])
    _close(out[2], out[0])
