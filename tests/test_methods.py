"""RevealCancel and the comparison methods, all through one interpreter (issue: RevealCancel
and the paper's comparison methods)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rel_sum_error, rel_sum_errors_batch
from test_models import EveryLayerCNN, PaperGenomicsCNN, _init
from test_recurrent import LSTMClassifier, Transformer
from test_rules import CASES, SEPARABLE, _check_per_element, _draw, _oracle_scores, _target

import deepliftjax as dl

TOL = 1e-5


# ---- RevealCancel -----------------------------------------------------------------------


# The default suite runs RevealCancel on the rule families that it treats differently from
# Rescale (linear maps, nonlinearities, products, max, select, control flow); -m slow runs
# every case of the rule table.
RC_DEFAULT = {
    "neg", "sub", "add", "scatter_add", "reduce_sum", "avg_pool", "tanh", "log", "rsqrt",
    "relu", "abs", "mul", "dot_general", "conv", "max", "div_const", "div", "where_prelu",
    "select", "step_mask", "reduce_max", "max_pool_overlap", "custom_jvp", "cond", "scan",
}  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        c if c.name in RC_DEFAULT else pytest.param(c, marks=pytest.mark.slow)
        for c in CASES
        if c.tol == TOL
    ],
    ids=repr,
)
def test_reveal_cancel_sums_to_delta_on_every_rule_case(case):
    f = _target(case)
    xs, rs = _draw(case, 1, (3,)), _draw(case, 2, (3,))
    c, fx, fr = _rc_and_values(f, xs, rs)
    errs = rel_sum_errors_batch(c, fx, fr)
    assert errs.max() <= TOL, errs
    if case.name in SEPARABLE:
        # f = Σ_i h_i(x_i): each element is the only input of its own chain, so Δz⁺ or Δz⁻
        # is zero at every nonlinearity and RevealCancel's score is Δh_i, as Rescale's
        _check_per_element(case, c, _oracle_scores(case, f, xs, rs), "reveal_cancel")


def _rc_and_values(f, xs, rs):
    """RevealCancel scores vmapped over (xs, rs), and f at both: one compiled program."""
    rc = jax.vmap(lambda x, r: dl.deeplift(f, r, rule="reveal_cancel")(x))
    return jax.jit(lambda xs, rs: (rc(xs, rs), jax.vmap(f)(xs), jax.vmap(f)(rs)))(xs, rs)


def test_min_example_of_the_2017_paper():
    f = lambda x: x[0] - jax.nn.relu(x[0] - x[1])  # = min(x1, x2)
    x = jnp.array([3.0, 1.0])
    np.testing.assert_allclose(dl.deeplift(f, 0.0)(x), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(dl.deeplift(f, 0.0, rule="reveal_cancel")(x), [0.5, 0.5], atol=1e-6)


def test_dense_then_relu_by_hand():
    # z = x1 + x2 = 2 - 1: Δz⁺ = 2, Δz⁻ = -1. relu from 0:
    # Δy⁺ = ½(relu(2) - relu(0)) + ½(relu(1) - relu(-1)) = 1.5
    # Δy⁻ = ½(relu(-1) - relu(0)) + ½(relu(1) - relu(2)) = -0.5
    w, b = jnp.array([[1.0], [1.0]]), jnp.array([0.0])
    f = lambda x: jax.nn.relu(x @ w + b)[0]
    x = jnp.array([2.0, -1.0])
    np.testing.assert_allclose(dl.deeplift(f, 0.0, rule="reveal_cancel")(x), [1.5, -0.5])
    np.testing.assert_allclose(dl.deeplift(f, 0.0)(x), [2.0, -1.0])
    # weights of both signs: z = 2*x1 - 3*x2 with x = (1, 1): terms +2 and -3
    f2 = lambda x: jax.nn.relu(x @ jnp.array([[2.0], [-3.0]]) + 2.0)[0]
    # from z0 = 2: Δy⁺ = ½(relu(4)-relu(2)) + ½(relu(1)-relu(-1)) = 1 + 0.5 = 1.5
    #              Δy⁻ = ½(relu(-1)-relu(2)) + ½(relu(1)-relu(4)) = -1 - 1.5 = -2.5
    np.testing.assert_allclose(
        dl.deeplift(f2, 0.0, rule="reveal_cancel")(jnp.array([1.0, 1.0])), [1.5, -2.5]
    )


def _flax(model, x0, scale=1.0):
    variables = _init(model, x0)
    variables = jax.tree_util.tree_map(lambda p: p * scale, variables)
    return lambda v: model.apply(variables, v)


MODELS = {
    "every_layer_cnn": (lambda: EveryLayerCNN(), (12, 12, 3), 1.0),
    "genomics_cnn": (
        lambda: PaperGenomicsCNN(),
        (200, 4),
        1.0,
    ),  # scale 3 saturates the sigmoid: Δf = 0
    "lstm": (lambda: LSTMClassifier(hidden=8, layers=1), (12, 4), 1.0),
    "transformer": (lambda: Transformer(), (6, 16), 1.0),
}


@pytest.mark.parametrize(
    "name",
    [
        n if n in ("genomics_cnn", "lstm") else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(MODELS)
    ],
)  # the CNN with every layer and the transformer take a minute or more each: -m slow
def test_reveal_cancel_on_the_model_zoo(name):
    make, shape, scale = MODELS[name]
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, *shape))
    refs = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (3, *shape))
    f = _flax(make(), xs[0], scale)
    c, fx, fr = _rc_and_values(f, xs, refs)
    errs = rel_sum_errors_batch(c, fx, fr)
    assert errs.max() <= TOL, errs
    rescale = jax.jit(jax.vmap(lambda x, r: dl.deeplift(f, r)(x)))(xs, refs)
    assert not np.allclose(c, rescale)  # a different rule, not a relabelled Rescale


# ---- §3.4: LRP, gradient×input and DeepLIFT ---------------------------------------------


def _relu_net(with_bias: bool):
    k = jax.random.split(jax.random.PRNGKey(3), 6)
    w1, w2, w3 = (jax.random.normal(k[i], s) for i, s in enumerate([(6, 8), (8, 8), (8,)]))
    b1, b2 = (jax.random.normal(k[3 + i], (8,)) * with_bias for i in range(2))
    return lambda x: jax.nn.relu(jax.nn.relu(x @ w1 + b1) @ w2 + b2) @ w3 + 0.3 * with_bias


def test_lrp_with_bias_equals_gradient_x_input_on_piecewise_linear_nets():
    f = _relu_net(with_bias=True)
    xs = jax.random.normal(jax.random.PRNGKey(0), (16, 6))
    lrp = jax.jit(jax.vmap(dl.lrp_epsilon(f, epsilon=1e-9)))(xs)
    gxi = jax.jit(jax.vmap(dl.gradient_x_input(f)))(xs)
    np.testing.assert_allclose(lrp, gxi, rtol=1e-5, atol=1e-5)
    dlift = jax.jit(jax.vmap(dl.deeplift(f, jnp.zeros(6))))(xs)
    assert np.abs(np.asarray(dlift - gxi)).max() > 0.1  # with biases DeepLIFT differs
    # ... and it is the one that sums to delta
    errs = rel_sum_errors_batch(dlift, jax.vmap(f)(xs), jnp.full(16, f(jnp.zeros(6))))
    assert errs.max() <= TOL
    lrp_nobias = jax.jit(jax.vmap(dl.lrp_epsilon(f, epsilon=1e-6, bias=False)))(xs)
    assert np.abs(np.asarray(lrp_nobias - lrp)).max() > 1e-3


def test_deeplift_equals_gradient_x_input_without_biases_and_zero_reference():
    f = _relu_net(with_bias=False)
    xs = jax.random.normal(jax.random.PRNGKey(0), (16, 6))
    dlift = jax.jit(jax.vmap(dl.deeplift(f, jnp.zeros(6))))(xs)
    gxi = jax.jit(jax.vmap(dl.gradient_x_input(f)))(xs)
    np.testing.assert_allclose(dlift, gxi, rtol=1e-5, atol=1e-5)


# ---- integrated gradients ---------------------------------------------------------------


def test_integrated_gradients_converges_to_rescale_with_one_nonlinearity_per_path():
    w, b, v = jnp.array([1.5, -2.0, 0.7]), jnp.array([0.2, -0.4, 0.1]), jnp.array([1.0, 2.0, -1])
    f = lambda x: jnp.sum(v * jnp.tanh(w * x + b))  # each input reaches one nonlinearity
    x, r = jnp.array([1.0, 0.5, -2.0]), jnp.array([-0.5, 0.0, 1.0])
    rescale = dl.deeplift(f, r)(x)
    errors = []
    for steps in (4, 16, 64, 256):
        ig, err = jax.jit(dl.integrated_gradients(f, r, steps=steps, return_error=True))(x)
        errors.append(float(err))
    np.testing.assert_allclose(ig, rescale, rtol=1e-4, atol=1e-5)
    assert errors[0] > errors[1] > errors[2] > errors[3], errors


# ---- closed forms on small linear and ReLU nets, per element ----------------------------
# Each method's value written out by hand in float64 numpy (the methods' definitions in
# their papers), compared per element under jit(vmap) over 4 inputs. Tolerance: 1e-5 of the
# largest |score| of the example plus 8 float32 ulps of it (float32 rounding of a few dot
# products of 6-8 terms); gradients and guided backprop are exact up to that rounding.

_R = np.random.default_rng(11)
_W1, _B1 = _R.standard_normal((6, 8)), _R.standard_normal(8)
_W2, _B2 = _R.standard_normal((8, 5)), _R.standard_normal(5)
_V = _R.standard_normal(5)
_XS = _R.standard_normal((4, 6))
_REFS = 0.3 * _R.standard_normal((4, 6))


def _f32(a):
    return jnp.asarray(a, jnp.float32)


def _net(x):  # v · relu(W2 relu(W1 x + b1) + b2)
    h = jax.nn.relu(x @ _f32(_W1) + _f32(_B1))
    return jax.nn.relu(h @ _f32(_W2) + _f32(_B2)) @ _f32(_V)


def _one_layer(x):  # v · relu(W1 x + b1), v = first 8 of a fixed draw
    return jax.nn.relu(x @ _f32(_W1) + _f32(_B1)) @ _f32(_ONE_V)


_ONE_V = _R.standard_normal(8)


def _grad_net(x):
    z1 = x @ _W1 + _B1
    z2 = np.maximum(z1, 0) @ _W2 + _B2
    return _W1 @ ((z1 > 0) * (_W2 @ ((z2 > 0) * _V)))


def _guided_net(x):
    # at each ReLU only positive gradients pass, and only where the unit is active
    z1 = x @ _W1 + _B1
    z2 = np.maximum(z1, 0) @ _W2 + _B2
    g2 = np.maximum(_V, 0) * (z2 > 0)
    g1 = np.maximum(_W2 @ g2, 0) * (z1 > 0)
    return _W1 @ g1


def _lrp_one_layer(x, eps, bias):
    # ε-LRP: R_i = x_i Σ_j w_ij R_j / (z_j + ε sign z_j), R_j = v_j relu(z_j); without the
    # bias's share the denominator is u_j = (W1 x)_j (the bias absorbs nothing), z_j / u_j
    u = x @ _W1
    z = u + _B1
    sgn = np.where(z >= 0, 1.0, -1.0)
    ratio = np.maximum(z, 0) / (z + eps * sgn)
    if not bias:
        ratio = ratio * z / (u + eps * np.where(u >= 0, 1.0, -1.0))
    return x * (_W1 @ (_ONE_V * ratio))


def _reveal_cancel_one_layer(x, r):
    # §3.5.3 of the 2017 paper: per hidden unit, Δz⁺ / Δz⁻ the sums of the positive /
    # negative terms w_ij Δx_i; Δy⁺ = ½[relu(z0+Δz⁺) - relu(z0)] + ½[relu(z0+Δz⁻+Δz⁺) -
    # relu(z0+Δz⁻)], Δy⁻ symmetric; each term gets its part's multiplier Δy^± / Δz^±
    relu = lambda t: np.maximum(t, 0)
    terms = _W1 * (x - r)[:, None]  # (i, j)
    zp, zn = np.where(terms > 0, terms, 0).sum(0), np.where(terms < 0, terms, 0).sum(0)
    z0 = r @ _W1 + _B1
    yp = 0.5 * (relu(z0 + zp) - relu(z0)) + 0.5 * (relu(z0 + zn + zp) - relu(z0 + zn))
    yn = 0.5 * (relu(z0 + zn) - relu(z0)) + 0.5 * (relu(z0 + zp + zn) - relu(z0 + zp))
    mp = np.where(zp != 0, yp / np.where(zp != 0, zp, 1), 0)
    mn = np.where(zn != 0, yn / np.where(zn != 0, zn, 1), 0)
    m = np.where(terms > 0, mp, 0) + np.where(terms < 0, mn, 0)
    return (terms * m * _ONE_V).sum(1)


_A, _LIN = _R.standard_normal(6), _R.standard_normal(6)


def _quadratic(x):  # Σ a x² + w·x + 0.7: its gradient is linear along any straight path
    return jnp.sum(_f32(_A) * x**2 + _f32(_LIN) * x) + 0.7


CLOSED_FORMS = {
    # name: (method(f, ref), f, closed form(x, r) in float64)
    "gradient": (lambda f, r: dl.gradient(f), _net, lambda x, r: _grad_net(x)),
    "abs_gradient": (
        lambda f, r: dl.gradient(f, absolute=True),
        _net,
        lambda x, r: np.abs(_grad_net(x)),
    ),
    "gradient_x_input": (lambda f, r: dl.gradient_x_input(f), _net, lambda x, r: x * _grad_net(x)),
    "guided_backprop": (lambda f, r: dl.guided_backprop(f), _net, lambda x, r: _guided_net(x)),
    "guided_backprop_x_input": (
        lambda f, r: dl.guided_backprop(f, multiply_by_inputs=True),
        _net,
        lambda x, r: x * _guided_net(x),
    ),
    # the trapezoidal rule is exact for a gradient linear in the path's parameter
    "integrated_gradients": (
        lambda f, r: dl.integrated_gradients(f, r, steps=3),
        _quadratic,
        lambda x, r: _A * (x**2 - r**2) + _LIN * (x - r),
    ),
    "integrated_gradients_linear": (
        lambda f, r: dl.integrated_gradients(f, r, steps=1),
        lambda x: x @ _f32(_LIN) - 2.0,
        lambda x, r: _LIN * (x - r),
    ),
    "lrp_epsilon": (
        lambda f, r: dl.lrp_epsilon(f, epsilon=0.5),
        _one_layer,
        lambda x, r: _lrp_one_layer(x, 0.5, True),
    ),
    "lrp_epsilon_nobias": (
        lambda f, r: dl.lrp_epsilon(f, epsilon=0.5, bias=False),
        _one_layer,
        lambda x, r: _lrp_one_layer(x, 0.5, False),
    ),
    "reveal_cancel": (
        lambda f, r: dl.deeplift(f, r, rule="reveal_cancel"),
        _one_layer,
        _reveal_cancel_one_layer,
    ),
    # Rescale on one dense layer + ReLU: each unit's Δy_j split in proportion to w_ij Δx_i
    "rescale": (
        lambda f, r: dl.deeplift(f, r),
        _one_layer,
        lambda x, r: (
            _W1
            * (x - r)[:, None]
            * _ONE_V
            * np.where(
                np.abs((x - r) @ _W1) > 0,
                (np.maximum(x @ _W1 + _B1, 0) - np.maximum(r @ _W1 + _B1, 0)) / ((x - r) @ _W1),
                0,
            )
        ).sum(1),
    ),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_method_equals_its_closed_form(name):
    method, f, closed = CLOSED_FORMS[name]
    xs, refs = _f32(_XS), _f32(_REFS)
    out = jax.jit(jax.vmap(lambda x, r: method(f, r)(x)))(xs, refs)
    # float32 inputs as the methods saw them, the closed form in float64
    x64, r64 = np.asarray(xs, np.float64), np.asarray(refs, np.float64)
    want = np.stack([closed(x, r) for x, r in zip(x64, r64, strict=True)])
    assert np.abs(want).max() > 0.1  # a closed form that is not trivially zero
    scale = np.abs(want).max(1, keepdims=True)
    allowed = (1e-5 + 8 * np.finfo(np.float32).eps) * scale
    err = np.abs(np.asarray(out, np.float64) - want)
    assert (err <= allowed).all(), (name, err.max(), allowed.min(), out, want)


def test_closed_forms_tell_the_methods_apart():
    # the closed forms differ from one another at these draws, so each pins its method
    x, r = _XS[0], _REFS[0]
    lrp, lrp_nb = _lrp_one_layer(x, 0.5, True), _lrp_one_layer(x, 0.5, False)
    assert np.abs(lrp - lrp_nb).max() > 0.05
    assert np.abs(_grad_net(x) - _guided_net(x)).max() > 0.05
    rc = _reveal_cancel_one_layer(x, r)
    rescale = CLOSED_FORMS["rescale"][2](x, r)
    assert np.abs(rc - rescale).max() > 0.01
    delta = float(_one_layer(_f32(x))) - float(_one_layer(_f32(r)))
    np.testing.assert_allclose([rc.sum(), rescale.sum()], delta, rtol=1e-5)


# ---- every method under jit and vmap on the models --------------------------------------

METHODS = {
    "gradient": lambda f, r: dl.gradient(f),
    "abs_gradient": lambda f, r: dl.gradient(f, absolute=True),
    "gradient_x_input": lambda f, r: dl.gradient_x_input(f),
    "guided_backprop": lambda f, r: dl.guided_backprop(f),
    "integrated_gradients": lambda f, r: dl.integrated_gradients(f, r, steps=8),
    "lrp_epsilon": lambda f, r: dl.lrp_epsilon(f, epsilon=1e-6),
    "lrp_epsilon_nobias": lambda f, r: dl.lrp_epsilon(f, epsilon=1e-2, bias=False),
    "reveal_cancel": lambda f, r: dl.deeplift(f, r, rule="reveal_cancel"),
}


@pytest.mark.parametrize(
    "model", ["genomics_cnn", pytest.param("every_layer_cnn", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_under_jit_and_vmap(method, model):
    make, shape, scale = MODELS[model]
    xs = jax.random.normal(jax.random.PRNGKey(0), (2, *shape))
    f = _flax(make(), xs[0], scale)
    ref = jnp.zeros(shape)
    out = jax.jit(jax.vmap(METHODS[method](f, ref)))(xs)
    assert out.shape == xs.shape
    assert np.isfinite(np.asarray(out)).all()
    assert np.abs(np.asarray(out)).max() > 0
    one = METHODS[method](f, ref)(xs[0])
    np.testing.assert_allclose(out[0], one, rtol=1e-4, atol=1e-5)


def test_guided_backprop_blocks_negative_gradients_at_relus():
    f = lambda x: jnp.sum(jnp.array([1.0, -1.0]) * jax.nn.relu(x))
    x = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(dl.gradient(f)(x), [1.0, -1.0])
    np.testing.assert_allclose(dl.guided_backprop(f)(x), [1.0, 0.0])


def test_unknown_rule_is_a_clear_error():
    with pytest.raises(dl.DeepLiftError, match="reveal_cancel"):
        dl.deeplift(jnp.sum, 0.0, rule="revealcancel")


def test_rule_sets_sum_to_delta_single():
    f = lambda x: jnp.tanh(x @ jnp.array([[1.0, -2.0], [0.5, 1.0]])).sum() * jax.nn.sigmoid(x[0])
    x, r = jnp.array([0.4, -1.2]), jnp.array([-0.3, 0.5])
    for rule in ("rescale", "reveal_cancel"):
        assert rel_sum_error(dl.deeplift(f, r, rule=rule)(x), f(x), f(r)) <= TOL
