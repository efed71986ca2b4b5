"""PyTorch's channels-first DNA, ``(4, L)`` per example, end to end: every API that takes an
``alphabet_axis`` gives the scores of the ``(L, 4)`` path, transposed, and checks that the
named axis is one-hot.

Found here and not closed: with ``stop_gradient="pass"`` (``profile_shap``'s "exact"
weighting, and any target through ``jax.nn.softmax``'s max shift) the multipliers of inputs
that did not change (a position where x == r) differ by up to 3e-2 between an eager and a
jitted run in float64: hypothetical scores there are not stable. Contributions are.

The CLI's ``--alphabet-axis 0`` is tested in ``tests/test_cli.py``; ``from_torch`` models in
``tests/test_torch.py`` (parity).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from deepliftjax import (
    DeepLiftError,
    deeplift_shap,
    dinuc_shuffle,
    export_modisco,
    hypothetical_from_multipliers,
    project_hypothetical,
)
from deepliftjax.genomics import targets

matplotlib.use("Agg")

L = 24
W = np.random.default_rng(0).normal(size=(L, 4, 3))

# float64: the profile targets on random logits are ill-conditioned in float32 (a change of
# summation order moves bpnet-lite's weights by percents), so equality is checked in float64


def x64(test):
    """Run ``test`` under ``jax.enable_x64`` (a fixture's context would not reach its body)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        with jax.enable_x64(True):
            return test(*args, **kwargs)

    return run


def model_last(x):
    """A small profile model of one (L, 4) example: (profile logits (L, 2), log counts (1,))."""
    h = jnp.tanh(jnp.einsum("la,lao->lo", x, jnp.asarray(W, x.dtype)))
    return h[:, :2], jnp.log1p(jnp.sum(jnp.exp(h[:, 2:]), axis=0))


def model_first(x):
    """The same model as PyTorch would take it: (4, L) in, (2, L) profile out."""
    p, c = model_last(x.T)
    return p.T, c


@pytest.fixture(scope="module")
@x64
def data():
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (3, L), 0, 4), 4, dtype=jnp.float64)
    refs = dinuc_shuffle(jax.random.key(2), x, 4, batched=True)  # (N, K, L, 4)
    return x, refs


@x64
def test_batched_dinuc_shuffle_is_vmap_over_split_keys_in_either_layout(data):
    x, refs = data
    keys = jax.random.split(jax.random.key(2), len(x))
    want = jax.vmap(lambda k, s: dinuc_shuffle(k, s, 4))(keys, x)
    np.testing.assert_array_equal(refs, want)
    first = dinuc_shuffle(jax.random.key(2), x.transpose(0, 2, 1), 4, batched=True, alphabet_axis=1)
    np.testing.assert_array_equal(first, refs.transpose(0, 1, 3, 2))
    one = dinuc_shuffle(jax.random.key(2), x.transpose(0, 2, 1), batched=True, alphabet_axis=1)
    assert one.shape == (3, 4, L)
    with pytest.raises(DeepLiftError, match="not one-hot"):  # (N, L, 4) read as (N, 4, L)
        dinuc_shuffle(jax.random.key(0), x, 2, batched=True, alphabet_axis=1)
    with pytest.raises(DeepLiftError, match="batched=True takes a batch"):
        dinuc_shuffle(jax.random.key(0), x[0, :, 0], 2, batched=True)


@pytest.mark.parametrize(
    "name", ["counts", "profile_fixed", "profile_exact", "profile_bpnet-lite", "profile_chrombpnet"]
)
@x64
def test_targets_hypothetical_scores_in_either_layout(data, name):
    x, refs = data

    def shap(model, r, **kw):
        if name == "counts":
            return targets.counts_shap(model, r, hypothetical=True, **kw)
        return targets.profile_shap(model, r, weighting=name[8:], hypothetical=True, **kw)

    for i in range(len(x)):
        # both jitted: the "exact" weighting's multipliers of positions where x == r move by
        # up to 3e-2 between an eager and a jitted run (float64), in either layout
        last = jax.jit(shap(model_last, refs[i]))(x[i])
        first = jax.jit(shap(model_first, refs[i].transpose(0, 2, 1), alphabet_axis=0))(x[i].T)
        np.testing.assert_allclose(
            first.contributions.T, last.contributions, rtol=1e-10, atol=1e-12
        )
        # the "exact" weighting's hypothetical scores of positions where x == r are not
        # stable to 1e-10 (module docstring): 1e-3 of the largest score there
        scale = float(jnp.abs(last.hypothetical).max())
        atol = 1e-3 * scale if name == "profile_exact" else 1e-12
        np.testing.assert_allclose(first.hypothetical.T, last.hypothetical, rtol=1e-10, atol=atol)
    with pytest.raises(DeepLiftError, match="not one-hot"):  # the wrong axis named
        shap(model_first, refs[0].transpose(0, 2, 1))(x[0].T)


@x64
def test_deeplift_shap_projection_and_modisco_in_either_layout(data, tmp_path):
    x, refs = data
    f_last = lambda s: targets.counts(model_last(s))  # noqa: E731
    f_first = lambda s: targets.counts(model_first(s))  # noqa: E731
    last = jax.vmap(lambda s, r: deeplift_shap(f_last, r, hypothetical=True)(s))(x, refs)
    first = jax.vmap(lambda s, r: deeplift_shap(f_first, r, hypothetical=True, alphabet_axis=0)(s))(
        x.transpose(0, 2, 1), refs.transpose(0, 1, 3, 2)
    )
    hyp_first = np.asarray(first.hypothetical)
    np.testing.assert_allclose(
        hyp_first.transpose(0, 2, 1), last.hypothetical, rtol=1e-10, atol=1e-12
    )
    proj = project_hypothetical(hyp_first, x.transpose(0, 2, 1), axis=-2)
    np.testing.assert_allclose(  # per position, (N, L) either way
        proj, project_hypothetical(last.hypothetical, x), rtol=1e-10, atol=1e-12
    )
    m = jnp.ones((L, 4)).at[:, 2].set(3.0)
    np.testing.assert_allclose(
        hypothetical_from_multipliers(m.T, refs[0, 0].T, axis=0, onehot=x[0].T).T,
        hypothetical_from_multipliers(m, refs[0, 0], onehot=x[0]),
    )
    export_modisco(tmp_path / "last", x, last.hypothetical)
    export_modisco(tmp_path / "first", x.transpose(0, 2, 1), hyp_first, alphabet_axis=1)
    for name in ("ohe.npy", "shap.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "first" / name),
            np.load(tmp_path / "last" / name),
            rtol=1e-5,
            atol=1e-7,
        )
    with pytest.raises(DeepLiftError, match="not one-hot"):
        deeplift_shap(f_first, refs[0], hypothetical=True, alphabet_axis=0)(x[0])


@x64
def test_plots_in_either_layout(data):
    from deepliftjax import plot

    x, refs = data
    hyp = np.random.default_rng(3).normal(size=(L, 4))
    xs = np.asarray(x[0])
    heights = lambda ax: [round(p.get_path().get_extents().height, 9) for p in ax.patches]  # noqa: E731
    assert heights(plot.sequence_logo(hyp, xs, hypothetical=True)) == heights(
        plot.sequence_logo(hyp.T, xs.T, hypothetical=True, alphabet_axis=0)
    )
    bars = lambda ax: [p.get_height() for p in ax.patches]  # noqa: E731
    assert bars(plot.sequence_bars(hyp, xs, hypothetical=True)) == bars(
        plot.sequence_bars(hyp.T, xs.T, hypothetical=True, alphabet_axis=0)
    )
    a = plot.method_panels({"m": hyp[None]}, xs[None], kind="bars", hypothetical=True)
    b = plot.method_panels(
        {"m": hyp.T[None]}, xs.T[None], kind="bars", hypothetical=True, alphabet_axis=0
    )
    assert bars(a.axes[0]) == bars(b.axes[0]) and len(bars(a.axes[0])) == L
    with pytest.raises(DeepLiftError, match="alphabet_axis=2"):
        plot.sequence_logo(hyp.T, xs.T, alphabet_axis=2)
    with pytest.raises(DeepLiftError, match="shaped \\(length, 4\\)"):  # (4, L) read as (L, 4)
        plot.sequence_logo(hyp.T, xs.T)
