"""Matrix-product precision: ``deeplift(..., precision=)``.

GPUs run float32 products in TF32 under JAX's default precision, which breaks summation to
delta at about 1e-3 (measured on an H200 in benchmarks/RESULTS_accel.md). The transform
therefore binds every dot/conv that leaves precision to JAX at ``HIGHEST`` by default, or,
with ``precision="split_tf32"``/``"split_bf16"``, as float32-accurate sums of TF32/bfloat16
passes. CPU ignores precision, so these tests check the bound parameters in the traced
program, and simulate the accelerator's rounding of each pass (``_precision.simulate``).
"""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import equations_in
from jax import lax

import deepliftjax as dl
from deepliftjax import DeepLiftError, _precision

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
    c = jax.jit(fn)(x) if mode == "vmap" else fn(x)  # vmap: compiled, not op by op
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
    assert pullback(jnp.ones(()))[0].shape == X.shape


def test_bad_precision_says_what_to_pass():
    with pytest.raises(DeepLiftError, match=r"(?s)precision=.fast.*Hint: .highest."):
        dl.deeplift(model, REF, precision="fast")


# ---- split-precision products ------------------------------------------------------------

SPLITS = tuple(_precision.SPLIT_MODES)
SPLIT_PRIMS = tuple(_precision.SPLIT_PRIMS.values())
W4 = jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)
W5 = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)


def nested_model(x):
    """``model`` plus a product in a checkpoint and in both branches of a cond."""
    h = model(x)

    @jax.checkpoint
    def block(v):
        return jnp.tanh(v @ W4)

    v = block(x.mean((0, 1)) @ W5)
    v = lax.cond(h > -1e6, lambda u: u @ W4, lambda u: -(u @ W4), v)
    return h + v.sum()


def _split_ok(eqn, mode: str) -> bool:
    """A dot/conv bound as the split ``mode``: the split primitive or the algorithm preset."""
    if eqn.primitive in SPLIT_PRIMS:
        return eqn.params["split"] == mode
    preset = _precision.SPLIT_MODES[mode].preset
    return eqn.params.get("precision") == getattr(lax.DotAlgorithmPreset, preset)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
def test_split_binds_every_product_in_nested_jaxprs(split, rule, mode):
    """Forward, reference and multiplier passes, in scan, cond and checkpoint bodies (the
    values: ``test_split_scores_equal_highest_on_cpu``)."""
    fn = dl.deeplift(nested_model, REF, rule=rule, precision=split)
    if mode == "jit":
        fn = jax.jit(fn)
    x = X
    if mode == "vmap":
        fn, x = jax.vmap(fn), jnp.stack([X, -X])
    eqns = equations_in(jax.make_jaxpr(fn)(x).jaxpr)
    products = [e for e in eqns if e.primitive in PRIMS + SPLIT_PRIMS]
    source = {e.primitive.name for e in equations_in(jax.make_jaxpr(nested_model)(X).jaxpr)}
    assert {"scan", "cond"} <= source, source  # the model's nested jaxprs
    assert any(n.startswith(("remat", "checkpoint")) for n in source), source
    assert "scan" in {e.primitive.name for e in eqns}  # rebuilt: its products are nested
    assert len(products) >= 14  # forward, reference and multiplier passes
    assert all(_split_ok(e, split) for e in products), [
        (e.primitive.name, e.params.get("precision"), e.params.get("split")) for e in products
    ]


@functools.cache
def _highest_scores(rule):
    """The default (highest) scores of [X, -X], computed once per rule for every split."""
    return jax.jit(jax.vmap(dl.deeplift(nested_model, REF, rule=rule)))(jnp.stack([X, -X]))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_split_scores_equal_highest_on_cpu(split, rule):
    """CPU computes each pass in float32: the split changes nothing but the rounding."""
    xs = jnp.stack([X, -X])
    hi = _highest_scores(rule)
    sp = jax.jit(jax.vmap(dl.deeplift(nested_model, REF, rule=rule, precision=split)))(xs)
    np.testing.assert_allclose(sp, hi, rtol=1e-5, atol=1e-5 * float(jnp.abs(hi).max()))
    delta = jax.vmap(nested_model)(xs) - nested_model(REF)
    np.testing.assert_allclose(sp.reshape(2, -1).sum(1), delta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prim", ["dot", "conv"])
def test_split_primitive_grad_vmap_and_transpose_stay_split(prim):
    """The split primitive's JVP, transposes and batching are JAX's, re-bound split: under
    simulated TF32 its gradients (and gradients of gradients) keep float32 accuracy where
    one TF32 pass (``tf32_1pass``) loses three digits."""
    a = jnp.asarray(rng.normal(size=(4, 9, 9, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)
    if prim == "dot":
        a, w = a.reshape(36, 27), w.reshape(27, 5)

        def op(u, v, precision=None):
            return lax.dot_general(u, v, (((1,), (0,)), ((), ())), precision=precision)
    else:

        def op(u, v, precision=None):
            dn = ("NHWC", "HWIO", "NHWC")
            return lax.conv_general_dilated(u, v, (1, 1), "SAME", dimension_numbers=dn,
                                            precision=precision)  # fmt: skip

    def second(op_):  # d/dw of the gradient in u: products and transposes of products
        return jax.jit(jax.grad(lambda u, v: jnp.sum(jax.grad(lambda t: jnp.sum(jnp.sin(
            op_(t, v))))(u) ** 2), argnums=1))  # fmt: skip

    truth = second(lambda u, v: op(u, v, lax.Precision.HIGHEST))(a, w)

    def errors(mode):
        def split_op(u, v):
            eqn = jax.make_jaxpr(op)(u, v).jaxpr.eqns[0]
            eqn = _precision.split_eqn(eqn, mode)
            return eqn.primitive.bind(u, v, **eqn.params)

        with _precision.simulate(10):
            got = second(split_op)(a, w)
            batched = jax.jit(jax.vmap(lambda u: op(u[None], w)[0]))(a)
            batched_split = jax.jit(jax.vmap(lambda u: split_op(u[None], w)[0]))(a)
        scale = float(jnp.abs(truth).max())
        return float(jnp.abs(got - truth).max()) / scale, batched, batched_split

    err, batched, batched_split = errors("split_tf32")
    assert err < 1e-5, err
    np.testing.assert_allclose(batched_split, batched, rtol=1e-5, atol=1e-5)
    with _one_pass_mode():
        err_one, _, _ = errors("tf32_1pass")
    assert err_one > 1e-4, err_one


@contextlib.contextmanager
def _one_pass_mode():
    """A test-only split mode with one pass: JAX's default precision on a TF32 unit."""
    _precision.SPLIT_MODES["tf32_1pass"] = _precision.SplitMode("tf32_1pass", 10, ((0, 0),), None)
    try:
        yield
    finally:
        del _precision.SPLIT_MODES["tf32_1pass"]


def _genomics():
    from deepliftjax.genomics import GenomicsCNN

    model = GenomicsCNN()
    x = jnp.asarray(np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(6, 200))])
    params = model.init(jax.random.key(0), x[:1])
    return (lambda s: model.apply(params, s)), x, jnp.full((200, 4), 0.25, jnp.float32)


class _VGGLike(nn.Module):
    """VGG16's stack (13 conv 3x3 + ReLU, 5 max pools), widths / 8, then 3 dense layers."""

    @nn.compact
    def __call__(self, x):
        for v in (8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 64, 64, 64, "M", 64, 64, 64, "M"):
            if v == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
            else:
                x = nn.relu(nn.Conv(int(v), (3, 3), padding="SAME")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(64)(x))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)[:, 0]


def _vgg():
    model = _VGGLike()
    x = jnp.asarray(rng.normal(size=(3, 32, 32, 3)), jnp.float32)
    params = model.init(jax.random.key(1), x[:1])
    return (lambda s: model.apply(params, s)), x, jnp.zeros((32, 32, 3), jnp.float32)


@pytest.mark.parametrize(
    "net", ["genomics", pytest.param("vgg16_like", marks=pytest.mark.slow)]
)  # vgg16_like: ~50 s on 2 cores, the same claim on a deeper 2-D network
def test_simulated_tf32_split_keeps_summation_where_one_pass_breaks_it(net):
    """Every product rounded as a TF32 (or bfloat16) unit rounds its operands: one pass
    breaks summation to delta at ~1e-3; split_tf32 and split_bf16 keep it within 1e-5."""
    batch_f, x, ref = _genomics() if net == "genomics" else _vgg()

    def f(s):
        return batch_f(s[None])[0]

    with jax.default_matmul_precision("highest"):
        delta = np.asarray(jax.vmap(f)(x)) - float(f(ref))

    def residual(mode: str, bits: int) -> float:
        with _precision.simulate(bits):
            # check=None: the one pass is the inexact case measured here
            c = jax.jit(jax.vmap(dl.deeplift(f, ref, precision=mode, check=None)))(x)
        total = np.asarray(c, np.float64).reshape(len(x), -1).sum(1)
        return float(np.max(np.abs(total - delta) / np.maximum(np.abs(delta), 1e-3)))

    with _one_pass_mode():
        one = residual("tf32_1pass", 10)
    res = {m: residual(m, _precision.SPLIT_MODES[m].mantissa_bits) for m in SPLITS}
    print(f"{net}: simulated TF32 one pass {one:.1e}, " + ", ".join(
        f"{m} {r:.1e}" for m, r in res.items()))  # fmt: skip
    assert one > 1e-4, one
    assert all(r <= 1e-5 for r in res.values()), res


def test_split_of_other_dtypes_is_highest():
    def f(x):
        return jnp.tanh(x.astype(jnp.bfloat16) @ W2.astype(jnp.bfloat16)).astype(jnp.float32).sum()

    x = X.reshape(-1)[:4]
    eqns = equations_in(jax.make_jaxpr(dl.deeplift(f, jnp.zeros(4), precision="split_tf32"))(x))
    products = [e for e in eqns if e.primitive in PRIMS + SPLIT_PRIMS]
    assert products and all(e.params["precision"] == HIGHEST for e in products)


@pytest.mark.parametrize("split", SPLITS)
def test_preset_path_on_a_backend_that_takes_presets(split, monkeypatch):
    """Where the backend compiles the algorithm preset (GPUs), dot_general carries it in every
    pass (JAX's transposes keep it) and convolutions, which ignore presets, take the split
    primitive. Traced only: CPU does not run TF32 presets."""
    monkeypatch.setattr(_precision._compat, "dot_algorithm_supported", lambda preset: True)

    def fn(xs, ref):  # a traced reference: its pass is staged too, never run eagerly here
        return jax.vmap(dl.deeplift(nested_model, ref, precision=split))(xs)

    eqns = equations_in(jax.make_jaxpr(fn)(jnp.stack([X, -X]), REF).jaxpr)
    preset = getattr(lax.DotAlgorithmPreset, _precision.SPLIT_MODES[split].preset)
    dots = [e for e in eqns if e.primitive in (lax.dot_general_p, SPLIT_PRIMS[0])]
    convs = [e for e in eqns if e.primitive in (lax.conv_general_dilated_p, SPLIT_PRIMS[1])]
    assert len(dots) >= 14 and len(convs) >= 3
    assert all(e.primitive is lax.dot_general_p and e.params["precision"] == preset for e in dots)
    assert all(e.primitive is SPLIT_PRIMS[1] and e.params["split"] == split for e in convs)
