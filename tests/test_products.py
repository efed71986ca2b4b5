"""Products of two varying operands: ``product_rule="midpoint" | "guarded" | "balanced"``.

Every rule is an exact split of ``B(a, b) − B(a⁰, b⁰)`` (a convex mixture of the two
orderings per output element), so all must sum to delta on mul, dot, conv and attention.
The rules other than midpoint exist for degenerate references: a LayerNorm,
RMSNorm or GroupNorm whose input has zero variance at the reference, where the midpoint
rule credits each feature ~1/√ε times its share of Δf through ``x − μ`` and takes it
back through ``rsqrt(var + ε)``.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import deepliftjax as dl
from deepliftjax import _rules_products as rp
from deepliftjax._pair import Pair

RULES = ("midpoint", "guarded", "balanced")
NEW = ("guarded", "balanced")
TOL = 1e-5
slow = pytest.mark.slow


def test_rule_names():
    assert rp.PRODUCT_RULES == RULES
    with pytest.raises(dl.DeepLiftError, match="product_rule"):
        dl.deeplift(jnp.sum, 0.0, product_rule="nearest")


# ---- exactness on every bilinear primitive ----------------------------------------------


def _conv1d(lhs, rhs):
    return jax.lax.conv_general_dilated(lhs, rhs, (1,), "SAME")


W = np.random.default_rng(7).normal(size=(4, 4)).astype(np.float32)

PRODUCTS = {
    # elementwise: a gate times a candidate, and a size-1 operand broadcast by lax
    "mul": lambda x: jnp.sum(jax.nn.sigmoid(x[:3]) * jnp.tanh(x[3:] @ W)),
    "mul_broadcast": lambda x: jnp.sum(
        jax.lax.mul(jnp.sum(x**2, axis=1, keepdims=True), jnp.sin(x)) * jnp.arange(1.0, 5.0)
    ),
    "dot": lambda x: jnp.sum((x @ W) @ jnp.tanh(x).T * jnp.arange(6.0)),
    "conv": lambda x: jnp.sum(
        jnp.tanh(_conv1d(x.reshape(1, 1, 24), jnp.sin(x[:2, :3]).reshape(2, 1, 3)))
    ),
    "attention": lambda x: jnp.sum(
        jnp.einsum(
            "qk,kd->qd",
            jax.nn.softmax(jnp.einsum("qd,kd->qk", x @ W, x) / 2.0, axis=-1),
            jnp.tanh(x @ W.T),
        )
        * jnp.arange(4.0)
    ),
}


def _xs_refs(batch=3, seed=0):
    xs = jax.random.normal(jax.random.PRNGKey(seed), (batch, 6, 4))
    refs = 0.5 * jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, 6, 4))
    return xs, refs


def _sum_errors(c, f, xs, refs):
    """|sum(C) − Δf| / |Δf| per example, Δf in float64."""
    with jax.enable_x64(True):
        g = jax.jit(jax.vmap(f))  # compiled once, not op by op
        d = np.asarray(g(jnp.asarray(xs, jnp.float64))) - np.asarray(
            g(jnp.asarray(refs, jnp.float64))
        )
    total = np.asarray(c, np.float64).reshape(len(xs), -1).sum(1)
    return np.abs(total - d) / np.abs(d)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_every_rule_is_exact_plain_jit_vmap(name, rule):
    f = PRODUCTS[name]
    xs, refs = _xs_refs()
    attr = lambda x, r: dl.deeplift(f, r, product_rule=rule)(x)
    # jit of one example and jit of vmap over all: one compiled program
    jitted, batched = jax.jit(lambda x, r, xs, rs: (attr(x, r), jax.vmap(attr)(xs, rs)))(
        xs[1], refs[1], xs, refs
    )
    jitted, batched = np.asarray(jitted)[None], np.asarray(batched)
    plain = np.asarray(attr(xs[0], refs[0]))[None]
    assert np.isfinite(batched).all()
    assert (_sum_errors(batched, f, xs, refs) <= TOL).all()
    assert (_sum_errors(plain, f, xs[:1], refs[:1]) <= TOL).all()
    np.testing.assert_allclose(plain[0], batched[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jitted[0], batched[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", NEW)
@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_new_rules_exact_in_float64(name, rule):
    f = PRODUCTS[name]
    xs, refs = _xs_refs(batch=2)
    with jax.enable_x64(True):
        xs, refs = (jnp.asarray(v, jnp.float64) for v in (xs, refs))
        c = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r, product_rule=rule)(x)))(xs, refs)
        assert c.dtype == jnp.float64
    assert (_sum_errors(c, f, xs, refs) <= 1e-10).all()


@pytest.mark.parametrize("rule", NEW)
def test_new_rules_keep_the_midpoint_without_cancellation(rule):
    # both operands grow from the reference: c_a and c_b share a sign at every element,
    # every split costs |Δy|, and both rules keep the paper's midpoint exactly
    f = lambda x: jnp.sum(jax.nn.sigmoid(x[:3]) * jnp.exp(0.5 * x[3:]))
    x = jnp.linspace(0.1, 2.0, 24).reshape(6, 4)
    r = jnp.zeros((6, 4))
    mid = dl.deeplift(f, r)(x)
    np.testing.assert_allclose(dl.deeplift(f, r, product_rule=rule)(x), mid, rtol=1e-6)


@pytest.mark.parametrize("rule", NEW)
def test_new_rules_are_symmetric(rule):
    a = lambda x: jnp.tanh(x[:3] @ W)
    b = lambda x: jnp.sin(2 * x[3:]) + 0.1
    ab = lambda x: jnp.sum(a(x) * b(x) * jnp.arange(4.0))
    ba = lambda x: jnp.sum(b(x) * a(x) * jnp.arange(4.0))
    x, r = _xs_refs(batch=1, seed=3)
    x, r = x[0], r[0]
    c = dl.deeplift(ab, r, product_rule=rule)(x)
    # a <-> b
    np.testing.assert_allclose(dl.deeplift(ba, r, product_rule=rule)(x), c, atol=1e-6)
    # input <-> reference: the scores of f(r) − f(x) are minus those of f(x) − f(r)
    np.testing.assert_allclose(dl.deeplift(ab, x, product_rule=rule)(r), -c, atol=1e-6)


def test_mixture_weight_pieces():
    u = jnp.array([1.0, 1.0, 2.0, -0.01, 0.0])
    v = jnp.array([2.0, -1.0, 0.0, 0.0, 0.0])
    p = jnp.array([1.0, -1.0, -630.0, -1.01, 0.0])
    for rule in RULES:
        w = rp.mixture_weight(u, v, p, rule)
        assert ((w >= 0) & (w <= 1)).all()
        np.testing.assert_allclose(w[-1], 0.5)  # p = 0: any weight, the midpoint
    np.testing.assert_allclose(rp.mixture_weight(u, v, p, "midpoint"), 0.5)
    wb = rp.mixture_weight(u, v, p, "balanced")
    wg = rp.mixture_weight(u, v, p, "guarded")
    # same signs at the midpoint: kept
    np.testing.assert_allclose([wb[0], wg[0]], [0.5, 0.5])
    # Δy = 0, the midpoint credits ±1.5: the cheaper ordering (±1)
    np.testing.assert_allclose([wb[1], wg[1]], [0.0, 0.0])
    # LayerNorm at a zero reference: a⁰ = 0, b⁰/b = 316: all through a at b (w = 0)
    np.testing.assert_allclose([wb[2], wg[2]], [0.0, 0.0])
    cost = lambda w: np.abs(u - w * p) + np.abs(v + w * p)
    # R = 100 here: guarded has moved all the way; balanced reaches |Δy|
    np.testing.assert_allclose(cost(wb)[3], 0.01, rtol=1e-5)
    np.testing.assert_allclose(cost(wg)[3], 0.01, rtol=1e-5)


def test_guarded_allowance_is_continuous_and_capped():
    # a⁰ = 0, a = 1, b from b⁰ to b = 1: R = |b⁰| / b; sweep b⁰ through the band
    b0 = jnp.geomspace(2.0, 500.0, 400)
    u, v, p = jnp.ones_like(b0), jnp.zeros_like(b0), 1.0 - b0
    w = np.asarray(rp.mixture_weight(u, v, p, "guarded"))
    cost = np.abs(u - w * p) + np.abs(v + w * p)  # Δy = 1
    ratio_mid = np.abs(u - p / 2) + np.abs(v + p / 2)
    np.testing.assert_allclose(cost[ratio_mid <= 10], ratio_mid[ratio_mid <= 10], rtol=1e-6)
    assert cost.max() <= 10 + 1e-4
    np.testing.assert_allclose(cost[ratio_mid >= 100], 1.0, rtol=1e-6)
    assert np.abs(np.diff(cost)).max() < 0.2  # no jumps on a fine sweep


@pytest.mark.parametrize("rule", NEW)
def test_zero_cotangent_gives_zero_not_nan(rule):
    """Where the output does not matter (g = 0), an infinite reference operand (ε = 0 at a
    zero-variance reference) must not leak 0 · inf = NaN into the multipliers."""
    ctx = types.SimpleNamespace(options=types.SimpleNamespace(product_rule=rule))
    ar, br = jnp.zeros(3), jnp.array([jnp.inf, 2.0, jnp.inf])
    bx = jnp.array([1.0, 1.0, 0.5])

    def f(ax, bx):
        out = rp.product_rule(jax.lax.mul_p, ctx, Pair(ax, ar), Pair(bx, br))
        return jnp.sum(out.x * jnp.array([0.0, 1.0, 0.0]))

    ax = jnp.array([1.0, -2.0, 3.0])
    ga, gb = jax.grad(f, argnums=(0, 1))(ax, bx)
    assert np.isfinite(np.asarray(ga)).all() and np.isfinite(np.asarray(gb)).all()
    np.testing.assert_allclose([ga[0], ga[2], gb[0], gb[2]], 0.0)
    # element 1 is an ordinary product: still exact
    np.testing.assert_allclose(ga[1] * (ax[1] - ar[1]) + gb[1] * (bx[1] - br[1]), -2.0)


def _layer_norm(x):
    mu = jnp.mean(x, -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(jnp.mean((x - mu) ** 2, -1, keepdims=True) + 1e-3)


def _rms_norm(x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-3)


@pytest.mark.parametrize("norm", [_layer_norm, _rms_norm], ids=["layer", "rms"])
@pytest.mark.parametrize("big", ["input", "reference"])
def test_a_million_away(norm, big):
    """Input or reference 10⁶ from the other: ``b⁰/b`` (or ``b/b⁰``) at the normaliser is
    ~10⁶. The midpoint's contributions are ~10⁶ |Δf| and float32 loses the sum (measured
    1e-2 to 6e-2); the new rules' multipliers are convex combinations computed without
    cancellation (measured <= 5e-7)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    f = lambda x: jnp.sum(norm(x) * w)
    x = (rng.normal(size=(5, 4)) * 1e6).astype(np.float32)
    r = rng.normal(size=(5, 4)).astype(np.float32)
    if big == "reference":
        x, r = r, x
    with jax.enable_x64(True):
        d = float(f(jnp.asarray(x, jnp.float64)) - f(jnp.asarray(r, jnp.float64)))
    for rule in RULES:
        check = None if rule == "midpoint" else "warn"  # the midpoint's drift is measured
        c = np.asarray(jax.jit(dl.deeplift(f, r, product_rule=rule, check=check))(x), np.float64)
        err = abs(c.sum() - d) / abs(d)
        if rule == "midpoint":
            assert np.abs(c).sum() > 1e4 * abs(d) and err > 1e-3
        else:
            assert err <= TOL and np.abs(c).sum() <= 100 * abs(d), (rule, err)


@pytest.mark.parametrize("rule", NEW)
def test_scores_can_be_differentiated(rule):
    f = PRODUCTS["attention"]
    xs, refs = _xs_refs(batch=1)
    loss = lambda x: jnp.sum(dl.deeplift(f, refs[0], product_rule=rule)(x) ** 2)
    g = jax.jit(jax.grad(loss))(xs[0])
    assert np.isfinite(np.asarray(g)).all()


# ---- normalisation at degenerate references ----------------------------------------------

D = 16
_rng = np.random.default_rng(0)
SCALE = _rng.uniform(0.5, 2.0, D).astype(np.float32)
BIAS = (0.1 * _rng.normal(size=D)).astype(np.float32)
READOUT = _rng.normal(size=D).astype(np.float32)
NORM_XS = _rng.normal(size=(32, D)).astype(np.float32)
REFS = {"zero": np.zeros(D, np.float32), "constant": np.full(D, 0.5, np.float32)}


def _norm(kind, eps):
    if kind == "layer":
        mod, p = nn.LayerNorm(epsilon=eps), {"scale": SCALE, "bias": BIAS}
    elif kind == "rms":
        mod, p = nn.RMSNorm(epsilon=eps), {"scale": SCALE}
    else:
        mod, p = nn.GroupNorm(num_groups=4, epsilon=eps), {"scale": SCALE, "bias": BIAS}

    def y(x):
        return mod.apply({"params": jax.tree_util.tree_map(lambda v: v.astype(x.dtype), p)}, x)

    return y, lambda x: jnp.dot(y(x), READOUT.astype(x.dtype))


def norm_conditioning(kind, ref_name, eps, rule, xs=NORM_XS):
    """Per draw: float32 residual vs float64 Δf, Σ|C|/|Δf|, and the readout's own
    Σ_i |w_i Δy_i| / |Δf| (how much f = w·y itself cancels: no exact split of the
    LayerNorm's output changes can do better)."""
    y, f = _norm(kind, eps)
    ref = REFS[ref_name]
    # the midpoint's float32 drift is what is measured: its guard warning is expected
    check = None if rule == "midpoint" else "warn"
    c = jax.jit(jax.vmap(dl.deeplift(f, ref, product_rule=rule, check=check)))(xs)
    c = np.asarray(c, np.float64)
    with jax.enable_x64(True):
        x64, r64 = jnp.asarray(xs, jnp.float64), jnp.asarray(ref, jnp.float64)
        fy = jax.jit(jax.vmap(lambda v: (f(v), y(v))))  # compiled once, not op by op
        (fx, yx), (fr, yr) = fy(x64), fy(r64[None])
        d = np.asarray(fx) - float(fr[0])
        dy = np.asarray(yx) - np.asarray(yr[0])
    residual = np.abs(c.sum(1) - d) / np.abs(d)
    cond = np.abs(c).sum(1) / np.abs(d)
    readout = np.abs(dy * READOUT).sum(1) / np.abs(d)
    return residual, cond, readout


FAST_CASES = {("layer", "zero", 1e-5), ("rms", "zero", 1e-6), ("group", "constant", 1e-6)}
NORM_CASES = [
    pytest.param(kind, ref_name, eps, marks=[] if (kind, ref_name, eps) in FAST_CASES else slow)
    for kind in ("layer", "rms", "group")
    for ref_name in ("zero", "constant")
    for eps in (1e-5, 1e-6)
]  # the full table: python -m pytest -m slow tests/test_products.py
# draws on which the readout w·y itself cancels more than 10x are left out of the
# Σ|C| <= 100 |Δf| target (4 of 32 here): there Δf is small against every output change
READOUT_LIMIT = 10.0


@pytest.mark.parametrize("rule", NEW)
@pytest.mark.parametrize(("kind", "ref_name", "eps"), NORM_CASES)
def test_norm_targets_new_rules(kind, ref_name, eps, rule):
    residual, cond, readout = norm_conditioning(kind, ref_name, eps, rule)
    kept = readout <= READOUT_LIMIT
    assert kept.sum() >= 24
    limit = TOL
    if rule == "guarded" and kind == "group":
        # One draw has a 4-feature group with σ = 0.03: against the constant reference the
        # midpoint's |c_a| + |c_b| is only R = σ/√ε = 9.5 |Δy| there, under the band's 10, so
        # "guarded" keeps the midpoint; its ±4.7 Δy through rsqrt(var) then meet flax's
        # E[x²] − E[x]² variance, ~16x ill-conditioned for that group. Measured 7.5e-6 to
        # 1.1e-5 from run to run (the other cells: <= 5.1e-6); "balanced" credits nothing
        # through the variance at these references (<= 1.4e-6).
        limit = 2e-5
    assert residual[kept].max() <= limit, residual[kept].max()
    assert cond[kept].max() <= 100, cond[kept].max()
    # every draw, cancelling readouts included: within a small factor of that readout's
    # own cancellation (measured max 18, GroupNorm's 4-feature groups under "guarded")
    assert (cond <= 25 * readout).all(), (cond / readout).max()


@pytest.mark.parametrize(("kind", "ref_name", "eps"), NORM_CASES)
def test_norm_conditioning_of_the_midpoint(kind, ref_name, eps):
    """The measured problem: exact in float64, but Σ|C| is hundreds to thousands of |Δf|
    at zero-variance references, and float32 sums drift past 1e-5. RMSNorm at a constant
    reference is not degenerate (its reference scale is 1/|c|), and the midpoint is fine."""
    residual, cond, readout = norm_conditioning(kind, ref_name, eps, "midpoint")
    kept = readout <= READOUT_LIMIT
    if kind == "rms" and ref_name == "constant":
        assert cond[kept].max() <= 100 and residual[kept].max() <= TOL
    else:
        assert np.median(cond[kept]) >= 100
        assert residual.max() > TOL  # what the new rules fix


# ---- a small transformer with a planted token, zero-embedding baseline -------------------

T, E, VOCAB, SIGNAL = 6, 8, 16, 0


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, deterministic=True)(h, h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(E)(nn.gelu(nn.Dense(2 * E)(h)))


class PlantedTransformer(nn.Module):
    """Pre-LayerNorm encoder block, mean pooling, final LayerNorm, logit. No positional
    encoding (the task is whether the signal token occurs anywhere), so at the all-zero
    embedding baseline the first LayerNorm sees zero variance at every position."""

    @nn.compact
    def __call__(self, emb):  # (T, E): the attributed token embeddings
        return nn.Dense(1)(nn.LayerNorm()(jnp.mean(Block()(emb), axis=0)))[0]


def _planted_data(rng, n):
    table = np.random.default_rng(123).normal(size=(VOCAB, E)).astype(np.float32)
    tokens = rng.integers(1, VOCAB, size=(n, T))
    label = rng.integers(0, 2, size=n)
    pos = rng.integers(0, T, size=n)
    rows = np.arange(n)
    tokens[rows, pos] = np.where(label == 1, SIGNAL, tokens[rows, pos])
    return table[tokens], label.astype(np.float32), pos


@pytest.fixture(scope="module")
def planted():
    model = PlantedTransformer()
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((T, E)))
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(p, x, y):
        logits = jax.vmap(lambda e: model.apply(p, e))(x)
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(0)
    for _ in range(100):
        x, y, _ = _planted_data(rng, 64)
        params, state = step(params, state, x, y)
    x, y, pos = _planted_data(np.random.default_rng(1), 64)
    f = lambda e: model.apply(params, e)
    accuracy = float(((np.asarray(jax.jit(jax.vmap(f))(x)) > 0) == y).mean())
    p64 = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params)
    f.f64 = lambda e: model.apply(p64, e)
    return f, x[y == 1], pos[y == 1], accuracy


@pytest.mark.parametrize("rule", RULES)
def test_planted_token_in_a_transformer_zero_baseline(planted, rule):
    f, xs, pos, accuracy = planted
    assert accuracy >= 0.95
    ref = jnp.zeros((T, E))
    # the midpoint's float32 drift is what is measured: its guard warning is expected
    check = None if rule == "midpoint" else "warn"
    c = jax.jit(jax.vmap(dl.deeplift(f, ref, product_rule=rule, check=check)))(xs)
    c = np.asarray(c, np.float64)
    with jax.enable_x64(True):
        g = jax.jit(jax.vmap(f.f64))
        d = np.asarray(g(jnp.asarray(xs, jnp.float64))) - float(
            g(jnp.zeros((1, T, E), jnp.float64))[0]
        )
    residual = np.abs(c.reshape(len(xs), -1).sum(1) - d) / np.abs(d)
    cond = np.abs(c).reshape(len(xs), -1).sum(1) / np.abs(d)
    per_position = c.sum(-1)
    top = per_position.argmax(1) == pos
    assert top.mean() >= 0.95, top.mean()  # measured: 1.0 under every rule
    if rule == "midpoint":
        assert np.median(cond) >= 100  # measured median ~500: the first LayerNorm
    else:
        assert residual.max() <= TOL, residual.max()  # measured <= 2e-7
        assert cond.max() <= 100, cond.max()  # measured max 2.3
