"""Conditioning of exact scores, sum|C| / |Δf|: summation_check, deeplift_shap, attribute.

At a degenerate reference (a LayerNorm whose input has zero variance there, as at an
all-zero reference) the midpoint product rule gives single scores hundreds to thousands of
times |Δf| that cancel in the sum; the sum is still exact, but the scores say little and
float rounding is amplified as much. These tests pin the number that reports it and the
runner's warning. The default product rule ("guarded") keeps this LayerNorm's scores within
a few |Δf| (the "layer_norm-zero_reference" case below), so the ill-conditioned
cases ask for the midpoint rule, and turn the guard off: its float32 drift is the point.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepliftjax as dl
from deepliftjax._checks import (
    ConditioningWarning,
    SummationCheck,
    summation_check,
    summation_residual,
)
from deepliftjax._errors import DeepLiftError
from deepliftjax._runner import attribute
from deepliftjax._shap import deeplift_shap

D = 8
_rng = np.random.default_rng(5)
W = _rng.normal(size=D).astype(np.float32)
W1 = (_rng.normal(size=(D, 16)) / 3).astype(np.float32)
W2 = (_rng.normal(size=16) / 4).astype(np.float32)
XS = _rng.normal(size=(6, D)).astype(np.float32)
REFS = _rng.normal(size=(5, D)).astype(np.float32)  # random references
LN_XS = 3 * XS  # std ~3 at the input: the zero reference's 1/sqrt(eps) is ~500x 1/std


# the paper's midpoint product rule, whose float32 drift at these references the guard
# would (rightly) report
MIDPOINT = dict(product_rule="midpoint", check=None)


def layer_norm(x):
    return jnp.sum(W * (x - x.mean()) / jnp.sqrt(x.var() + 1e-5))


def tanh_mlp(x):
    return jnp.tanh(jnp.tanh(x @ W1) @ W2)


def _numpy_conditioning(f, scores, xs, refs, floor=1e-3):
    """sum|C| / max(|Δf|, floor * max(|f(x)|, |f(r)|, 1)) in float64, from given scores."""
    c = np.asarray(scores, np.float64).reshape(len(xs), -1)
    fwd = jax.jit(jax.vmap(f))
    fx = np.asarray(fwd(jnp.asarray(xs)), np.float64)
    fr = np.asarray(fwd(jnp.asarray(np.broadcast_to(refs, np.shape(xs)))), np.float64)
    den = np.maximum(np.abs(fx - fr), floor * np.maximum(np.maximum(abs(fx), abs(fr)), 1.0))
    return np.abs(c).sum(1) / den


def _scores(f, ref, xs, **opts):
    return jax.jit(jax.vmap(lambda x: dl.deeplift(f, ref, **opts)(x)))(xs)


# ---- summation_check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "f, ref, xs, ill, opts",
    [
        (layer_norm, np.zeros(D, np.float32), LN_XS, True, MIDPOINT),  # zero variance at ref
        (layer_norm, np.zeros(D, np.float32), LN_XS, False, {}),  # the default product rule
        (tanh_mlp, REFS[1], XS, False, {}),
    ],
    ids=["layer_norm-zero_reference-midpoint", "layer_norm-zero_reference", "tanh_mlp"],
)
def test_summation_check_conditioning(f, ref, xs, ill, opts):
    check = jax.jit(lambda r, x: summation_check(f, r, x, batched=True, **opts))(ref, xs)
    assert isinstance(check, SummationCheck)
    assert check.conditioning.shape == check.residual.shape == (len(xs),)
    scores = _scores(f, ref, xs, **opts)
    want = _numpy_conditioning(f, scores, xs, ref)
    np.testing.assert_allclose(check.conditioning, want, rtol=1e-5)
    if ill:
        assert float(check.conditioning.min()) > 300  # >> 100 on every example
        assert float(check.conditioning.max()) > 5000
    else:
        assert float(check.conditioning.max()) < 100
        assert float(check.conditioning.min()) >= 1 - 1e-5  # sum|C| >= |sum C| = |Δf|
    # exact all the same: the residual is summation_residual's, float32 rounding amplified
    # by the conditioning
    assert np.all(np.asarray(check.residual) <= 1e-5 + 2e-7 * np.asarray(check.conditioning))
    given = summation_check(f, ref, xs, scores, batched=True)
    np.testing.assert_array_equal(
        given.residual, summation_residual(f, ref, xs, scores, batched=True)
    )
    np.testing.assert_allclose(given.conditioning, want, rtol=1e-5)


def test_summation_check_single_example_given_scores_and_floor():
    f, x, ref = layer_norm, jnp.asarray(LN_XS[0]), jnp.zeros(D)
    c = dl.deeplift(f, ref)(x)
    one = summation_check(f, ref, x, c)
    assert one.conditioning.shape == ()
    np.testing.assert_allclose(one.conditioning, _numpy_conditioning(f, c[None], x[None], ref)[0])
    np.testing.assert_allclose(one.conditioning, summation_check(f, ref, x).conditioning, rtol=1e-6)
    # floor=0: 0 where Δf and sum|C| are both 0; inf where only Δf is
    h = lambda v: jnp.sum(v * v) - jnp.sum(v) ** 2 / 3  # f(x) == f(ref) below
    v = jnp.array([1.0, 2.0, 3.0])
    zero = summation_check(h, v, v, jnp.zeros(3), floor=0.0)
    assert float(zero.conditioning) == 0.0 and float(zero.residual) == 0.0
    cancel = summation_check(h, v + 1.0, v, jnp.array([1.0, -1.0, 0.0]), floor=0.0)
    assert np.isinf(float(cancel.conditioning)) and float(cancel.residual) == 0.0
    # pytrees: sum over every leaf
    g = lambda p: jnp.sum(jnp.tanh(p["a"])) * jnp.sum(p["b"])
    p = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([2.0, 1.0])}
    cp = dl.deeplift(g, 0.0)(p)
    total = sum(float(jnp.abs(v).sum()) for v in jax.tree_util.tree_leaves(cp))
    np.testing.assert_allclose(
        summation_check(g, 0.0, p).conditioning, total / abs(float(g(p))), rtol=1e-6
    )


@pytest.mark.parametrize("floor", [-1e-3, float("nan"), float("inf")])
def test_summation_check_rejects_a_bad_floor(floor):
    for fn in (summation_check, summation_residual):
        with pytest.raises(DeepLiftError, match=r"floor must be a finite number >= 0") as e:
            fn(tanh_mlp, REFS[0], XS[0], floor=floor)
        assert "\nHint: " in str(e.value)


# ---- deeplift_shap ------------------------------------------------------------------------


def test_deeplift_shap_conditioning_is_pooled_over_references():
    """sum_k sum|C_k| / sum_k max(|Δf_k|, floor); one reference: summation_check's."""
    x = XS[0]
    shap = deeplift_shap(tanh_mlp, REFS, reference_chunk_size=2, return_conditioning=True)
    out = jax.jit(shap)(x)
    assert out.residuals is None and out.conditioning.shape == ()
    runs = np.stack([np.asarray(dl.deeplift(tanh_mlp, r)(x), np.float64) for r in REFS])
    fx, fr = float(tanh_mlp(x)), np.array([float(tanh_mlp(r)) for r in REFS])
    den = np.maximum(np.abs(fx - fr), 1e-3 * np.maximum(np.maximum(abs(fx), abs(fr)), 1.0))
    np.testing.assert_allclose(out.conditioning, np.abs(runs).sum() / den.sum(), rtol=1e-5)
    single = deeplift_shap(layer_norm, jnp.zeros((1, D)), return_conditioning=True)(LN_XS[2])
    np.testing.assert_allclose(
        single.conditioning, summation_check(layer_norm, jnp.zeros(D), LN_XS[2]).conditioning
    )


# ---- attribute: the tally and the warning ---------------------------------------------------


def _warning_numbers(record):
    msgs = [str(w.message) for w in record if issubclass(w.category, ConditioningWarning)]
    assert len(msgs) == 1, msgs  # one warning for the whole job
    m = re.search(r"(\d+) example\(s\).*above (\S+) \(worst: example (\d+), (\S+)\)", msgs[0])
    assert m, msgs[0]
    assert "\nHint: " in msgs[0] and "non-zero variance" in msgs[0]
    return int(m[1]), float(m[2]), int(m[3]), float(m[4])


def test_runner_warns_about_a_layer_norm_at_a_zero_reference():
    with pytest.warns(ConditioningWarning) as record:
        res = attribute(layer_norm, LN_XS, None, chunk_size=4, progress=False, **MIDPOINT)
    want = _numpy_conditioning(layer_norm, res.contributions, LN_XS, np.zeros(D))
    np.testing.assert_allclose(res.conditioning, want, rtol=1e-5)
    count, threshold, where, worst = _warning_numbers(record)
    assert threshold == 100 and count == int(np.sum(want > 100)) == len(LN_XS)
    assert where == int(np.argmax(want)) and worst == pytest.approx(want.max(), rel=1e-2)
    # the threshold is settable; None switches the check off
    with pytest.warns(ConditioningWarning) as record:
        attribute(
            layer_norm,
            LN_XS,
            None,
            chunk_size=4,
            progress=False,
            conditioning_threshold=2000,
            **MIDPOINT,
        )
    assert _warning_numbers(record)[0] == int(np.sum(want > 2000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        attribute(
            layer_norm,
            LN_XS,
            None,
            chunk_size=4,
            progress=False,
            conditioning_threshold=None,
            **MIDPOINT,
        )


@pytest.mark.parametrize("num_refs", [1, 5])
def test_runner_is_quiet_for_a_tanh_mlp_at_random_references(num_refs):
    refs = REFS[1 : 1 + num_refs]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        res = attribute(tanh_mlp, XS, refs, chunk_size=4, progress=False)
    assert float(res.conditioning.max()) < 100
    if num_refs == 1:
        want = _numpy_conditioning(tanh_mlp, res.contributions, XS, refs[0])
        np.testing.assert_allclose(res.conditioning, want, rtol=1e-5)


def test_runner_writes_conditioning_and_reads_older_chunks(tmp_path):
    """conditioning.npy is written; a finished job warns again when read back; a chunk
    written without its key and checksum (an older version) is recomputed with a warning."""
    out = tmp_path / "job"
    kw = dict(chunk_size=4, progress=False, out_dir=out, **MIDPOINT)

    def stop(c, _):
        raise KeyboardInterrupt("after the first chunk")

    with pytest.raises(KeyboardInterrupt):
        attribute(layer_norm, LN_XS, None, callback=stop, **kw)
    chunk = out / "chunks" / "chunk_000000.npz"
    with np.load(chunk) as z:
        old = {k: z[k] for k in ("contributions", "residuals")}
    np.savez(chunk, **old)  # as an older version wrote it: no key, no checksum
    with pytest.warns(UserWarning, match="chunk_000000.npz is damaged"):
        with pytest.warns(ConditioningWarning) as record:
            res = attribute(layer_norm, LN_XS, None, **kw)
    assert (res.conditioning > 100).all()  # recomputed, not resumed with NaN
    assert _warning_numbers(record)[0] == len(LN_XS)
    np.testing.assert_array_equal(np.load(out / "conditioning.npy"), res.conditioning)
    with pytest.warns(ConditioningWarning, match=rf"in .*job: {len(LN_XS)} example\(s\)"):
        again = attribute(layer_norm, LN_XS, None, **kw)  # complete: read from disk
    np.testing.assert_array_equal(again.conditioning, res.conditioning)
