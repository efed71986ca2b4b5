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
from test_rules import CASES, _draw, _target

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
