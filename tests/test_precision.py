"""Matrix-product precision: ``deeplift(..., precision=)``.

GPUs run float32 products in TF32 under JAX's default precision, which breaks summation to
delta at about 1e-3 (measured on an H200 in benchmarks/RESULTS_accel.md). The transform
therefore binds every dot/conv that leaves precision to JAX at ``HIGHEST`` by default. CPU
ignores precision, so these tests check the bound parameters in the traced program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import equations_in
from jax import lax

import deepliftjax as dl
from deepliftjax import DeepLiftError

HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
PRIMS = (lax.dot_general_p, lax.conv_general_dilated_p)

rng = np.random.default_rng(0)
W1 = jnp.asarray(rng.normal(size=(3, 5, 2, 4)), jnp.float32)  # HWIO, 5x5 input, 2 -> 4
W2 = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
W3 = jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)


def model(x):
    """conv -> relu -> dense -> scan of a dense tanh cell (a nested jaxpr) -> x*x product."""
    h = lax.conv_general_dilated(
        x[None], W1, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = jax.nn.relu(h[0]).mean((0, 1)) @ W2

    def cell(c, _):
        return jnp.tanh(c @ W3 + h), None

    c, _ = lax.scan(cell, jnp.zeros(6), None, length=3)
    return jnp.dot(c, c)  # both operands vary: the midpoint rule


def _precisions(jaxpr) -> list:
    """``precision`` of every dot/conv in a jaxpr and the jaxprs nested in its equations."""
    return [e.params["precision"] for e in equations_in(jaxpr) if e.primitive in PRIMS]


X = jnp.asarray(rng.normal(size=(5, 5, 2)), jnp.float32)
REF = jnp.zeros((5, 5, 2))


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
def test_default_binds_every_product_at_highest(rule, mode):
    fn = dl.deeplift(model, REF, rule=rule)
    if mode == "jit":
        fn = jax.jit(fn)
    x = X
    if mode == "vmap":
        fn, x = jax.vmap(fn), jnp.stack([X, -X])
    precs = _precisions(jax.make_jaxpr(fn)(x).jaxpr)
    # conv, dense, the cell's dense and the product, forward and multiplier passes
    assert len(precs) >= 8
    assert all(p == HIGHEST for p in precs), precs
    c = fn(x)
    assert np.all(np.isfinite(np.asarray(c)))


def test_none_leaves_precision_to_jax():
    precs = _precisions(jax.make_jaxpr(dl.deeplift(model, REF, precision=None))(X).jaxpr)
    assert precs and all(p is None for p in precs), precs


def test_explicit_precision_in_f_is_kept():
    def f(x):
        return jnp.tanh(jnp.dot(x.reshape(-1)[:4], W2, precision=lax.Precision.DEFAULT)).sum()

    precs = _precisions(jax.make_jaxpr(dl.deeplift(f, REF))(X).jaxpr)
    default = (lax.Precision.DEFAULT, lax.Precision.DEFAULT)
    assert precs and all(p == default for p in precs), precs


@pytest.mark.parametrize("precision", ["highest", "high", None, lax.Precision.HIGHEST])
def test_scores_sum_to_delta_at_any_setting_on_cpu(precision):
    c = jax.jit(dl.deeplift(model, REF, precision=precision))(X)
    delta = model(X) - model(REF)
    assert abs(float(c.sum() - delta)) <= 1e-5 * max(1.0, abs(float(delta)))


def test_deeplift_vjp_takes_precision():
    _, _, pullback = dl.deeplift_vjp(model, REF, X, precision=None)
    assert pullback(jnp.ones(())).shape == X.shape


def test_bad_precision_says_what_to_pass():
    with pytest.raises(DeepLiftError, match=r"(?s)precision=.fast.*Hint: .highest."):
        dl.deeplift(model, REF, precision="fast")
