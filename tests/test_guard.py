"""The summation guard: every call checks sum(scores) against f(x) - f(ref).

A primitive with a deliberately wrong rule (its plain gradient, or its exact multiplier
scaled by 1 + 1e-3) is planted, and the guard must report it under every transform (plain,
jit, vmap, jit of vmap, grad, scan), name the worst example, never change the scores, and
stay silent on exact rules (the whole suite runs with SummationWarning as an error, see
pyproject.toml, so any test of an exact rule that made the guard fire would fail).
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.interpreters import ad, batching, mlir

import deepliftjax as dl
from deepliftjax import rules
from deepliftjax._guard import TOLERANCES, report_message


def _planted(name, scale):
    """A tanh primitive whose DeepLIFT rule is wrong: the exact Rescale multiplier times
    ``scale``, or the plain gradient when ``scale`` is None."""
    p = jax.extend.core.Primitive(name)
    p.def_impl(jnp.tanh)
    p.def_abstract_eval(lambda x: x)
    ad.defjvp(p, lambda g, x: g * (1 - jnp.tanh(x) ** 2))
    mlir.register_lowering(p, mlir.lower_fun(jnp.tanh, multiple_results=False))
    batching.defvectorized(p)

    def wrong(ctx, x, **params):
        if scale is None:
            return rules.bind_both(p, [x], params)

        def backward(args, y, g):
            xa, xr, yr = args
            return (rules.times(g, scale * rules.secant(jnp.tanh, xa, xr, y, yr, True)), None, None)

        yr = jnp.tanh(x.r)
        ya = rules.custom_multiplier(lambda xa, xr, yr: jnp.tanh(xa), backward)(x.x, x.r, yr)
        return rules.Pair(ya, yr)

    rules.register_rule(p, wrong)
    return p


GRADIENT_P = _planted("planted_tanh_gradient", None)
SCALED_P = _planted("planted_tanh_scaled", 1.0 + 1e-3)

W = jnp.array([1.0, -2.0, 0.5, 3.0])


def f_wrong(x):
    return jnp.sum(W * GRADIENT_P.bind(2.0 * x)) + 0.1


def f_scaled(x):
    return jnp.sum(W * SCALED_P.bind(x))


def f_exact(x):
    return jnp.sum(W * jnp.tanh(2.0 * x)) + 0.1


REF = jnp.zeros(4)
# row 2 is the worst: its relative residual is the largest (row 1 equals the reference)
XS = jnp.array([[0.1, 0.2, -0.1, 0.05], [0.0, 0.0, 0.0, 0.0], [1.5, -2.0, 2.5, 1.0]])


def _modes(fn):
    return {
        "plain": lambda xs: jnp.stack([fn(x) for x in xs]),
        "jit": lambda xs: jnp.stack([jax.jit(fn)(x) for x in xs]),
        "vmap": jax.vmap(fn),
        "jit_vmap": jax.jit(jax.vmap(fn)),
    }


def _caught(call):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        out = call()
        jax.block_until_ready(out)
        jax.effects_barrier()
    return out, [w for w in got if issubclass(w.category, dl.SummationWarning)]


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap", "jit_vmap"])
def test_fires_on_a_planted_wrong_rule_and_keeps_the_scores(mode):
    guarded = _modes(dl.deeplift(f_wrong, REF))[mode]
    silent = _modes(dl.deeplift(f_wrong, REF, check=None))[mode]
    scores, got = _caught(lambda: guarded(XS))
    assert got, "the guard did not report a wrong rule"
    np.testing.assert_array_equal(scores, silent(XS))  # the guard never changes the scores
    # the scores really are wrong: the gradient of tanh times Δx
    delta = jax.vmap(f_exact)(XS) - f_exact(REF)
    assert abs(float(scores[2].sum()) - float(delta[2])) > 0.1
    msg = str(got[-1].message)
    if mode.endswith("vmap"):
        assert len(got) == 1, "one report per batch, not one per example"
        assert "2 of 3 example(s)" in msg and "batch index (2,)" in msg
    assert "miss summation to delta" in msg and "Hint:" in msg


def test_names_the_worst_example_with_its_numbers():
    scores, got = _caught(lambda: jax.jit(jax.vmap(dl.deeplift(f_wrong, REF)))(XS))
    (w,) = got
    msg = str(w.message)
    total = float(scores[2].sum())
    delta = float(f_wrong(XS[2]) - f_wrong(REF))
    nums = [
        float(v) for v in re.findall(r"sum of scores (\S+) where f\(x\) - f\(ref\) = (\S+)", msg)[0]
    ]
    assert nums[0] == pytest.approx(total, rel=1e-5)
    assert nums[1] == pytest.approx(delta, rel=1e-5)
    rel = float(re.search(r"relative residual (\S+);", msg).group(1))
    assert rel == pytest.approx(abs(total - delta) / abs(delta), rel=1e-2)


def test_silent_on_the_exact_rule_in_every_mode():
    for mode, fn in _modes(dl.deeplift(f_exact, REF)).items():
        _, got = _caught(lambda fn=fn: fn(XS))
        assert not got, mode


def test_tolerance_is_a_keyword_and_scales_with_dtype():
    x = XS[2]
    _, got = _caught(lambda: dl.deeplift(f_scaled, REF)(x))
    assert got  # a 1e-3 error is above float32's 1e-4
    _, got = _caught(lambda: dl.deeplift(f_scaled, REF, check_tolerance=1e-2)(x))
    assert not got
    assert TOLERANCES["float32"] == 1e-4
    with pytest.raises(dl.DeepLiftError, match="check_tolerance"):
        dl.deeplift(f_exact, REF, check_tolerance=-1.0)
    with pytest.raises(dl.DeepLiftError, match="check="):
        dl.deeplift(f_exact, REF, check="loud")


def test_raise_outside_jit_is_a_deeplift_error_and_inside_jit_fails_the_call():
    with pytest.raises(dl.DeepLiftError, match="miss summation to delta"):
        dl.deeplift(f_wrong, REF, check="raise")(XS[2])
    with pytest.raises(Exception, match="miss summation to delta"):
        jax.block_until_ready(jax.jit(jax.vmap(dl.deeplift(f_wrong, REF, check="raise")))(XS))
    # exact: no error
    jax.block_until_ready(jax.jit(jax.vmap(dl.deeplift(f_exact, REF, check="raise")))(XS))


def test_checkify_mode():
    fn = checkify.checkify(jax.jit(jax.vmap(dl.deeplift(f_wrong, REF, check="checkify"))))
    err, _ = fn(XS)
    assert "miss summation to delta" in (err.get() or "")
    err, _ = checkify.checkify(jax.jit(jax.vmap(dl.deeplift(f_exact, REF, check="checkify"))))(XS)
    assert err.get() is None


def test_under_grad_and_scan():
    grads = {}
    for check in ("warn", None):
        g = jax.grad(lambda x, c=check: dl.deeplift(f_wrong, REF, check=c)(x).sum())
        grads[check], got = _caught(lambda g=g: jax.jit(g)(XS[2]))
        assert bool(got) == (check == "warn")
    np.testing.assert_array_equal(grads["warn"], grads[None])

    def body(carry, x):
        return carry + dl.deeplift(f_wrong, REF)(x).sum(), None

    _, got = _caught(lambda: jax.jit(lambda xs: jax.lax.scan(body, 0.0, xs))(XS))
    assert len(got) == 2  # rows 0 and 2; row 1 equals the reference and is exact


def test_deeplift_vjp_checks_the_pullback_contributions():
    def vec(x):
        return jnp.stack([f_wrong(x), f_exact(x)])

    out, out_ref, pullback = dl.deeplift_vjp(vec, REF, XS[2])
    _, got = _caught(lambda: pullback(jnp.array([1.0, 0.0])))
    assert got and "deeplift_vjp" in str(got[0].message)
    _, got = _caught(lambda: pullback(jnp.array([0.0, 1.0])))  # the exact output alone
    assert not got


def test_deeplift_shap_checks_each_reference():
    refs = jnp.stack([REF, REF + 0.3, XS[2]])
    shap = jax.jit(dl.deeplift_shap(f_wrong, refs))
    _, got = _caught(lambda: shap(XS[2]))
    assert got and "2 of 3" in str(got[0].message)  # the reference equal to x is exact
    _, got = _caught(lambda: jax.jit(dl.deeplift_shap(f_exact, refs))(XS[2]))
    assert not got


def test_stop_gradient_constant_mode_is_checked_against_its_own_target():
    # the profile target: softmax weights held fixed per example
    def f(x):
        z = jnp.tanh(x) * 3.0
        return jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(z)) * z)

    for mode in ("pass", "constant"):
        _, got = _caught(lambda m=mode: jax.jit(jax.vmap(dl.deeplift(f, REF, stop_gradient=m)))(XS))
        assert not got, mode


@pytest.mark.parametrize(
    "stats, cause",
    [
        ((1.0, float("nan"), 1.0, 1.0), "is not finite: f is infinite"),
        ((float("nan"), 1.0, 1.0, 1.0), "scores are not finite"),
        ((1.0 + 3e-6, 1e-6, 1e6, 1.0), "roundings of f"),
        ((0.9, 1.0, 1.0, 5e3), "The scores cancel"),
        ((0.5, 1.0, 1.0, 1.0), "Usual causes"),
    ],
)
def test_message_names_the_likely_cause(stats, cause):
    s = np.array([stats])
    msg = report_message(s, np.array([True]), tol=1e-4, eps=2.0**-23, dtype="float32", what="x")
    assert cause in msg


def test_tiny_delta_within_rounding_of_f_is_not_reported():
    # f(x) and f(ref) agree to a few roundings of f (|f| = 1e4): a residual of that size
    # is no evidence of a wrong rule; a residual far above it is reported
    def f(x):
        return 1e4 + jnp.sum(W * SCALED_P.bind(x))

    near = jnp.array([1e-5, 0.0, 0.0, 0.0])
    _, got = _caught(lambda: dl.deeplift(f, REF)(near))
    assert not got

    def g(x):
        return 1e4 + jnp.sum(W * GRADIENT_P.bind(x))

    _, got = _caught(lambda: dl.deeplift(g, REF)(XS[2] * 10))
    assert got and "Usual causes" in str(got[0].message)


def test_takes_over_where_the_midpoint_cancels_at_a_degenerate_reference():
    """Two LayerNorms at a zero reference: the paper's midpoint rule credits Σ|C| ≈ 1e6
    |Δf| and float32 loses the sum (residual 10% of Δf); the guard reports it and names
    cancellation. The default ("guarded") keeps Σ|C|/|Δf| near 20 and the guard silent."""
    rng = np.random.default_rng(0)
    w_in = jnp.asarray(rng.normal(size=(16, 16)), jnp.float32)
    w_out = jnp.asarray(rng.normal(size=16), jnp.float32)

    def ln(h):
        c = h - h.mean(-1, keepdims=True)
        return c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5)

    f = lambda x: jnp.tanh(ln(jnp.tanh(ln(x) @ w_in)) @ w_in) @ w_out  # noqa: E731
    x, ref = jnp.asarray(3 * rng.normal(size=16), jnp.float32), jnp.zeros(16)
    delta = float(f(x) - f(ref))
    c, got = _caught(lambda: jax.jit(dl.deeplift(f, ref, product_rule="midpoint"))(x))
    assert abs(float(c.sum()) - delta) > 1e-2 * abs(delta)  # float32 has lost the sum
    assert len(got) == 1 and "The scores cancel" in str(got[0].message)
    c, got = _caught(lambda: jax.jit(dl.deeplift(f, ref))(x))
    assert not got
    assert abs(float(c.sum()) - delta) <= 1e-5 * abs(delta)
    assert float(jnp.abs(c).sum()) < 30 * abs(delta)
