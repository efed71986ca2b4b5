"""Rule sets per equation (``deeplift(..., rule={...})``, Shrikumar et al. 2017's mixtures).

Three checks of a mixture: summation to delta (plain, jit, vmap); per-element values
against a float64 NumPy oracle that applies the rules layer by layer (written from the
rules' definitions: Rescale Δy/Δz at each ReLU, RevealCancel's two-player Shapley split of
Δz⁺ and Δz⁻ with each term w·Δh routed by its sign, a unit with Δh = 0 by the mean of
both routes); and on the genomics experiment's
model, equality with the split a user would chain by hand (RevealCancel ``deeplift`` of
the dense part at the convolutional part's outputs, pulled back through a Rescale
``deeplift_vjp`` of the convolutional part).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import source_info_util as siu

import deepliftjax as dl
from deepliftjax._rulemap import RuleUse, rule_map
from deepliftjax.genomics import _model

jax.config.update("jax_enable_x64", False)

RC, RS = "reveal_cancel", "rescale"
L, C, K, F, H = 7, 2, 3, 3, 5  # length, channels, kernel, filters, hidden


def _weights(seed: int):
    rng = np.random.default_rng(seed)
    return dict(
        w1=rng.normal(size=(K, C, F)),
        b1=rng.normal(size=F) * 0.3,
        w2=rng.normal(size=((L - K + 1) * F, H)) * 0.5,
        b2=rng.normal(size=H) * 0.3,
        w3=rng.normal(size=H),
    )


def _model_fn(p):
    """conv (VALID) - ReLU - flatten - dense - ReLU - dense, in float32 JAX."""
    w = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}

    def f(x):
        with jax.named_scope("conv_layer"):
            z = jax.lax.conv_general_dilated(
                x[None], w["w1"], (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
            )[0]
            h = jax.nn.relu(z + w["b1"])
        with jax.named_scope("dense_layer"):
            z = h.reshape(-1) @ w["w2"] + w["b2"]
        return jax.nn.relu(z) @ w["w3"]

    return f


def _conv_matrix(w1):
    """The convolution as a matrix from the flattened (L, C) input to (L-K+1, F) outputs."""
    a = np.zeros(((L - K + 1) * F, L * C))
    for t in range(L - K + 1):
        for f in range(F):
            for k in range(K):
                for c in range(C):
                    a[t * F + f, (t + k) * C + c] = w1[k, c, f]
    return a


def _relu(z):
    return np.maximum(z, 0)


def _oracle(p, x, r, rules):
    """Contributions of ``x`` against ``r`` in float64, one rule set per ReLU layer."""
    layers = [(_conv_matrix(p["w1"]), np.tile(p["b1"], L - K + 1)), (p["w2"].T, p["b2"])]
    hx, hr = x.reshape(-1).astype(np.float64), r.reshape(-1).astype(np.float64)
    saved = []
    for (a, b), rule in zip(layers, rules, strict=True):
        zx, zr = a @ hx + b, a @ hr + b
        d_in = hx - hr
        terms = a * d_in[None, :]  # terms[j, i] = a_ji Δh_i
        if rule == RS:
            m = (_relu(zx) - _relu(zr)) / (zx - zr)
            saved.append((a, d_in, rule, (m,)))
        else:
            dp, dn = np.where(terms > 0, terms, 0).sum(1), np.where(terms < 0, terms, 0).sum(1)
            yp = 0.5 * (_relu(zr + dp) - _relu(zr) + _relu(zr + dn + dp) - _relu(zr + dn))
            yn = 0.5 * (_relu(zr + dn) - _relu(zr) + _relu(zr + dp + dn) - _relu(zr + dp))
            with np.errstate(invalid="ignore", divide="ignore"):  # a part with no terms
                mp, mn = np.where(dp != 0, yp / dp, 0.0), np.where(dn != 0, yn / dn, 0.0)
            saved.append((a, d_in, rule, (mp, mn)))
        hx, hr = _relu(zx), _relu(zr)
    g = p["w3"].astype(np.float64)
    for a, d_in, rule, ms in reversed(saved):
        if rule == RS:
            g = a.T @ (g * ms[0])
        else:
            gp, gn = (g * ms[0])[:, None], (g * ms[1])[:, None]
            # a term w·Δh is routed by its sign; where Δh = 0 (a unit off on both sides,
            # whose parts cancel) it has none: the mean of both routes (the authors' code)
            routed = np.where(a * d_in[None, :] > 0, gp, gn)
            g = (a * np.where(d_in[None, :] == 0, 0.5 * (gp + gn), routed)).sum(0)
    return (g * (x - r).reshape(-1)).reshape(x.shape)


MIXTURES = {
    # name: (rule=, the rule set of the conv ReLU and of the dense ReLU)
    "rescale": (RS, (RS, RS)),
    "reveal_cancel": (RC, (RC, RC)),
    "dense_rc_conv_rs_by_primitive": (
        {"dot_general": RC, "conv_general_dilated": RS},
        (RS, RC),
    ),
    "dense_rc_by_primitive_object": ({jax.lax.dot_general_p: RC}, (RS, RC)),
    "conv_rc_dense_rs_by_primitive": ({"conv_general_dilated": RC}, (RC, RS)),
    "dense_rc_by_scope": ({"dense_layer": RC}, (RS, RC)),
    "conv_rs_default_rc": ({"*": RC, "conv_layer": RS}, (RS, RC)),
    "conv_rc_by_scope_glob": ({"conv_*": RC}, (RC, RS)),
    "by_function": (lambda site: RC if site.name == "dot_general" else None, (RS, RC)),
}


def _draws(seed, n):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, L, C)).astype(np.float32)
    refs = (rng.normal(size=(n, L, C)) * 0.5).astype(np.float32)
    return xs, refs


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
@pytest.mark.parametrize("name", list(MIXTURES))
def test_mixture_matches_the_layerwise_oracle(name, mode):
    rule, rules = MIXTURES[name]
    p = _weights(0)
    f = _model_fn(p)
    xs, refs = _draws(1, 4)
    if mode == "vmap":

        def one(x, r):
            return dl.deeplift(f, r, rule=rule)(x)

        got = np.asarray(jax.jit(jax.vmap(one))(xs, refs))
    else:
        outs = []
        for x, r in zip(xs, refs, strict=True):
            g = dl.deeplift(f, r, rule=rule)
            outs.append(np.asarray((jax.jit(g) if mode == "jit" else g)(x)))
        got = np.stack(outs)
    f64 = np.array([_oracle(p, x, r, rules) for x, r in zip(xs, refs, strict=True)])
    scale = np.abs(f64).max()
    np.testing.assert_allclose(got, f64, atol=2e-5 * scale, rtol=0)
    delta = np.array([f(x) - f(r) for x, r in zip(xs, refs, strict=True)])
    np.testing.assert_allclose(got.sum((1, 2)), delta, atol=1e-5 * np.abs(delta).max())


def test_the_rule_sets_differ_on_this_model():
    """The oracle's four assignments give different scores: the mixtures test something."""
    p = _weights(0)
    xs, refs = _draws(1, 1)
    outs = [_oracle(p, xs[0], refs[0], r) for r in [(RS, RS), (RS, RC), (RC, RS), (RC, RC)]]
    for i in range(4):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-3 * np.abs(outs[i]).max()


def _experiment_model(length=60):
    m = _model.GenomicsCNN(filters=6, kernel=7, pool=12, hidden=16)
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (length,), 0, 4), 4)
    params = m.init(jax.random.key(1), x)["params"]
    return m, params


def _split(m, params):
    """The model cut at the flatten step, as a user would write it."""

    def g(x):
        h = nn.Conv(m.filters, (m.kernel,), padding="VALID").apply({"params": params["conv"]}, x)
        h = _model.PReLU().apply({"params": params["prelu_conv"]}, h)
        return _model.window_max(h, m.pool).reshape(-1)

    def h(u):
        for dense, prelu in [("dense_1", "prelu_1"), ("dense_2", "prelu_2")]:
            u = nn.Dense(m.hidden).apply({"params": params[dense]}, u)
            u = _model.PReLU().apply({"params": params[prelu]}, u)
        return nn.Dense(1).apply({"params": params["out"]}, u)[0]

    return g, h


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
def test_dense_rc_conv_rs_equals_the_hand_chained_split_on_the_experiment_model(mode):
    m, params = _experiment_model()
    f = functools.partial(m.apply, {"params": params})
    g, h = _split(m, params)
    keys = jax.random.split(jax.random.key(2), 3)
    xs = jax.nn.one_hot(jax.random.randint(keys[0], (3, 60), 0, 4), 4)
    ref = jnp.full((60, 4), 0.25)
    mixture = {"dot_general": RC, "conv_general_dilated": RS}

    def mixed(x):
        return dl.deeplift(f, ref, rule=mixture)(x)

    def chained(x):
        m_h = dl.deeplift(h, g(ref), rule=RC, multiply_by_inputs=False)(g(x))
        _, _, pullback = dl.deeplift_vjp(g, ref, x)
        (m_x,) = pullback(m_h)
        return m_x * (x - ref)

    if mode == "vmap":
        got, want = jax.jit(jax.vmap(mixed))(xs), jax.jit(jax.vmap(chained))(xs)
    else:
        wrap = jax.jit if mode == "jit" else (lambda fn: fn)
        got = jnp.stack([wrap(mixed)(x) for x in xs])
        want = jnp.stack([wrap(chained)(x) for x in xs])
    np.testing.assert_allclose(got, want, atol=1e-6 * float(jnp.abs(want).max()), rtol=0)
    delta = jax.vmap(f)(xs) - f(ref)
    np.testing.assert_allclose(got.sum((1, 2)), delta, atol=1e-5 * float(jnp.abs(delta).max()))
    rescale = jnp.stack([dl.deeplift(f, ref)(x) for x in xs])
    assert float(jnp.abs(rescale - got).max()) > 1e-3 * float(jnp.abs(got).max())


def test_the_innermost_scope_wins_then_the_primitive():
    def f(x):
        with jax.named_scope("outer"):
            with jax.named_scope("inner"):
                a = jax.nn.relu(x @ jnp.array([[1.0, -2.0], [0.5, 1.0]]))
            b = jax.nn.relu(x @ jnp.array([[-1.0, 1.0], [2.0, 0.5]]))
        return (a + b).sum()

    seen = []

    def spy(site):
        seen.append((site.name, site.path))
        return None

    x, r = jnp.array([1.0, -0.5]), jnp.array([-0.3, 0.8])
    dl.deeplift(f, r, rule=spy)(x)
    assert ("dot_general", "outer/inner") in seen and ("dot_general", "outer") in seen
    rm = rule_map({"outer": RS, "inner": RC, "dot_general": RC})
    use = RuleUse()
    with siu.extend_name_stack("outer"), siu.extend_name_stack("inner"):
        assert rm.choose(jax.lax.dot_general_p, None, use) == RC
    with siu.extend_name_stack("outer"):
        assert rm.choose(jax.lax.dot_general_p, None, use) == RS
    assert rm.choose(jax.lax.dot_general_p, None, use) == RC  # no scope: the primitive
    assert rm.choose(jax.lax.max_p, RC, use) == RC  # follows its operands
    assert rm.choose(jax.lax.max_p, None, use) == RS  # the default
    assert rm.choose(jax.lax.dot_general_p, None, RuleUse()) == RC
    c = dl.deeplift(f, r, rule={"outer": RS, "inner": RC})(x)
    np.testing.assert_allclose(float(c.sum()), float(f(x) - f(r)), rtol=1e-6)


@pytest.mark.parametrize(
    "rule, match",
    [
        ({"dense": RC}, r"(?s)name no equation of f.*'dot_general'.*scopes"),
        ({"dot_general": "lrp"}, "not a DeepLIFT rule set"),
        ({3: RC}, "a key must be a primitive"),
        (lambda site: "gradient", "returned 'gradient'"),
        (42, "neither a rule-set name, a mapping nor a function"),
    ],
)
def test_bad_rule_maps_raise(rule, match):
    f = _model_fn(_weights(0))
    xs, refs = _draws(1, 1)
    with pytest.raises(dl.DeepLiftError, match=match):
        dl.deeplift(f, refs[0], rule=rule)(xs[0])


def test_mixtures_reach_deeplift_shap_and_attribute(tmp_path):
    p = _weights(3)
    f = _model_fn(p)
    xs, refs = _draws(4, 3)
    mixture = {"dot_general": RC}
    shap = dl.deeplift_shap(f, refs, rule=mixture)(xs[0])
    want = np.mean([_oracle(p, xs[0], r, (RS, RC)) for r in refs], axis=0)
    np.testing.assert_allclose(np.asarray(shap), want, atol=2e-5 * np.abs(want).max())
    job = tmp_path / "job"
    got = dl.attribute(f, xs, refs[0], rule=mixture, out_dir=job, progress=False)
    want = np.stack([_oracle(p, x, refs[0], (RS, RC)) for x in xs])
    np.testing.assert_allclose(np.asarray(got.contributions), want, atol=2e-5 * np.abs(want).max())
    # the mixture is part of the job's identity: another one is not served these results
    with pytest.raises(dl.DeepLiftError, match="different"):
        dl.attribute(f, xs, refs[0], rule={"conv_general_dilated": RC}, out_dir=job, progress=False)
