"""Summation to delta on whole models: Flax linen and nnx, the paper's genomics CNN,
the paper's worked examples, and composition with jit, vmap and grad."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rel_sum_error, rel_sum_errors_batch
from flax import nnx

import deepliftjax as dl

TOL = 1e-5


# ---- the paper's worked examples --------------------------------------------------------


def test_figure_1_network():
    f = lambda x: 0.2 * jax.nn.relu(x[0] + 2 * x[1] + 2) + 0.1
    c = dl.deeplift(f, jnp.zeros(2))(jnp.array([-1.0, -1.0]))
    np.testing.assert_allclose(c, [(0.1 - 0.5) / 3, (0.1 - 0.5) * 2 / 3], rtol=1e-6)
    # the gradient is zero there: DeepLIFT's point
    np.testing.assert_array_equal(jax.grad(f)(jnp.array([-1.0, -1.0])), [0.0, 0.0])


def test_section_2_4_sigmoid_saturation():
    f = lambda x: jax.nn.sigmoid(x[0] + x[1])
    c1 = dl.deeplift(f, 0.0)(jnp.array([100.0, 0.0]))
    c2 = dl.deeplift(f, 0.0)(jnp.array([100.0, 100.0]))
    np.testing.assert_allclose(c1, [0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(c2, [0.25, 0.25], atol=1e-7)


def test_published_peer_case():
    f = lambda x: 2 * jax.nn.relu(x[0]) + 2 * jax.nn.relu(x[1] - 1.5)
    x = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(dl.deeplift(f, 0.0)(x), [2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(dl.deeplift(f, 0.0, multiply_by_inputs=False)(x), [2.0, 0.5])


# ---- composites of one input end with the Rescale multiplier ----------------------------

COMPOSITES = {
    "prelu_where": lambda x: jnp.where(x >= 0, x, 0.25 * x),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_of_one_input_is_rescale(name):
    g = COMPOSITES[name]
    x = jnp.linspace(-3.0, 3.0, 13)
    r = jnp.linspace(2.5, -2.0, 13)  # crosses every kink
    m = jax.jit(dl.deeplift(lambda v: jnp.sum(g(v)), r, multiply_by_inputs=False))(x)
    np.testing.assert_allclose(m, (g(x) - g(r)) / (x - r), rtol=2e-5, atol=1e-6)


# ---- Flax linen: every layer of the issue -----------------------------------------------


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.Conv(8, (3, 3), padding="SAME")(x)
        y = nn.BatchNorm(use_running_average=not train)(y)
        y = nn.PReLU()(y)
        return x + y  # residual


class EveryLayerCNN(nn.Module):
    @nn.compact
    def __call__(self, x):  # x: (H, W, C) image and a 1-D sequence cut from it
        x = x[None]
        h = nn.Conv(8, (3, 3), strides=(1, 1), padding=((1, 1), (2, 0)), kernel_dilation=(1, 2))(x)
        h = nn.relu(h)
        h = nn.Conv(8, (3, 3), padding="SAME", feature_group_count=4)(h)  # groups
        h = nn.leaky_relu(h, 0.1)
        block = Block()
        h = block(h)
        h = block(h)  # a reused layer
        h = nn.max_pool(h, (2, 2), strides=(1, 1), padding="SAME")  # overlapping windows
        h = nn.elu(nn.Conv(8, (3, 3), strides=(2, 2), padding="VALID")(h))
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.Dropout(0.5, deterministic=True)(h)
        seq = h.reshape(1, -1, 8)
        s = nn.Conv(6, (3,), padding="SAME", kernel_dilation=(2,))(seq)  # 1-D conv
        s = jax.nn.gelu(s, approximate=True) + jax.nn.gelu(s, approximate=False)
        s = nn.silu(s) * 0.5 + nn.softplus(s) - jnp.log1p(jnp.exp(-jnp.abs(s)))  # inline
        s = nn.max_pool(s, (2,), strides=(2,))
        z = nn.Dense(16)(s.reshape(-1))
        z = nn.tanh(z) + nn.sigmoid(nn.Dense(16)(z))
        return nn.Dense(1)(z)[0]


def _init(model, x):
    variables = model.init(jax.random.PRNGKey(0), x)
    # non-trivial BatchNorm statistics
    stats = jax.tree_util.tree_map(
        lambda v: v + 0.3 * jax.random.uniform(jax.random.PRNGKey(1), v.shape),
        variables.get("batch_stats", {}),
    )
    return {**variables, "batch_stats": stats} if stats else variables


@pytest.mark.parametrize(
    "mode", [pytest.param("plain", marks=pytest.mark.slow), "jit+vmap"]
)  # eager mode dispatches every rule op by op: a minute on 2 cores
def test_flax_cnn_with_every_layer(mode):
    model = EveryLayerCNN()
    xs = jax.random.normal(jax.random.PRNGKey(2), (6, 12, 12, 3))
    refs = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (6, 12, 12, 3))
    variables = _init(model, xs[0])
    f = lambda x: model.apply(variables, x)
    if mode == "plain":
        c = dl.deeplift(f, refs[0])(xs[0])
        assert rel_sum_error(c, f(xs[0]), f(refs[0])) <= TOL
    else:
        c, fx, fr = jax.jit(
            lambda xs, rs: (
                jax.vmap(lambda x, r: dl.deeplift(f, r)(x))(xs, rs),
                jax.vmap(f)(xs),
                jax.vmap(f)(rs),
            )
        )(xs, refs)
        errs = rel_sum_errors_batch(c, fx, fr)
        assert errs.max() <= TOL, errs


class PaperGenomicsCNN(nn.Module):
    """§3.2: conv 20x15, PReLU, max pool 50/50, two dense 200 with PReLU, sigmoid output."""

    @nn.compact
    def __call__(self, x):
        h = nn.PReLU()(nn.Conv(20, (15,), padding="VALID")(x))
        h = nn.max_pool(h, (50,), strides=(50,))
        h = nn.PReLU()(nn.Dense(200)(h.reshape(-1)))
        h = nn.PReLU()(nn.Dense(200)(h))
        return nn.sigmoid(nn.Dense(1)(h)[0])


def test_paper_genomics_cnn_batch_64():
    model = PaperGenomicsCNN()
    seqs = jax.random.randint(jax.random.PRNGKey(0), (64, 200), 0, 4)
    x = jax.nn.one_hot(seqs, 4)
    params = model.init(jax.random.PRNGKey(1), x[0])
    params = jax.tree_util.tree_map(lambda p: p * 3.0, params)  # push units off their kinks
    f = lambda v: model.apply(params, v)
    scores = jax.jit(jax.vmap(dl.deeplift(f, jnp.full((200, 4), 0.25))))(x)
    assert scores.shape == (64, 200, 4)
    errs = rel_sum_errors_batch(scores, jax.vmap(f)(x), jnp.full(64, f(jnp.full((200, 4), 0.25))))
    assert errs.max() <= TOL, errs


def test_flax_nnx_model():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs, use_running_average=True)
            self.drop = nnx.Dropout(0.3, deterministic=True, rngs=rngs)
            self.l2 = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(nnx.gelu(self.bn(self.l1(x)))))[0]

    model = MLP(nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (5,))
    r = jnp.zeros(5)
    c = dl.deeplift(model, r)(x)
    assert rel_sum_error(c, model(x), model(r)) <= TOL
    cj = nnx.jit(lambda m, v: dl.deeplift(m, r)(v))(model, x)
    np.testing.assert_allclose(cj, c, rtol=1e-5, atol=1e-7)


# ---- composition and the API ------------------------------------------------------------


def _mlp():
    w1 = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    w2 = jax.random.normal(jax.random.PRNGKey(1), (8,))
    return lambda x: jnp.tanh(jax.nn.relu(x @ w1 + 0.1) @ w2)


def test_vmap_over_references():
    f = _mlp()
    x = jnp.array([0.5, -1.0, 2.0, 0.3])
    refs = jax.random.normal(jax.random.PRNGKey(5), (7, 4))
    c = jax.vmap(lambda r: dl.deeplift(f, r)(x))(refs)
    one = jnp.stack([dl.deeplift(f, r)(x) for r in refs])
    np.testing.assert_allclose(c, one, rtol=1e-5, atol=1e-7)
    errs = rel_sum_errors_batch(c, jnp.full(7, f(x)), jax.vmap(f)(refs))
    assert errs.max() <= TOL


def test_grad_of_scores():
    # sum(C) = f(x) - f(ref) for every x, so the gradient of sum(C) is the gradient of f
    f = lambda x: jnp.sum(jnp.tanh(x * jnp.arange(1.0, 5.0)) * jax.nn.sigmoid(x[::-1]))
    x, r = jnp.array([0.3, -0.7, 1.1, 0.2]), jnp.array([-0.5, 0.4, 0.0, 1.0])
    g = jax.grad(lambda v: dl.deeplift(f, r)(v).sum())(x)
    np.testing.assert_allclose(g, jax.grad(f)(x), rtol=1e-4, atol=1e-6)
    # and the gradient of one score is not the gradient of f
    g0 = jax.jit(jax.grad(lambda v: dl.deeplift(f, r)(v)[0]))(x)
    eps = 1e-3
    fd = [
        (dl.deeplift(f, r)(x.at[i].add(eps))[0] - dl.deeplift(f, r)(x.at[i].add(-eps))[0])
        / (2 * eps)
        for i in range(4)
    ]
    np.testing.assert_allclose(g0, fd, rtol=2e-2, atol=2e-3)


def test_pytree_input_argnums_and_has_aux():
    def f(params, scale):
        y = jnp.tanh(params["a"] * scale) @ params["b"]
        return jnp.sum(y**2), {"y": y}

    p = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.ones((3, 2))}
    scale = jnp.array(1.5)
    ref = {"a": jnp.zeros(3), "b": jnp.zeros((3, 2))}
    (c, aux) = dl.deeplift(f, ref, has_aux=True)(p, scale)
    assert jax.tree_util.tree_structure(c) == jax.tree_util.tree_structure(p)
    np.testing.assert_allclose(aux["y"], f(p, scale)[1]["y"])
    assert rel_sum_error(c, f(p, scale)[0], f(ref, scale)[0]) <= TOL
    # tuple argnums: contributions for both arguments, together summing to delta
    (cp, cs), _ = dl.deeplift(f, (ref, 0.5), argnums=(0, 1), has_aux=True)(p, scale)
    total = sum(float(v.sum()) for v in jax.tree_util.tree_leaves(cp)) + float(cs)
    delta = float(f(p, scale)[0] - f(ref, jnp.array(0.5))[0])
    assert abs(total - delta) <= TOL * abs(delta)


def test_deeplift_vjp_vector_output():
    w = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    f = lambda x: jax.nn.relu(jnp.tanh(x) @ w)
    x, r = jnp.array([1.0, -0.5, 0.2, 2.0]), jnp.zeros(4)
    out, out_ref, pullback = dl.deeplift_vjp(f, r, x)
    np.testing.assert_allclose(out, f(x))
    np.testing.assert_allclose(out_ref, f(r))
    for ct in (jnp.array([1.0, 0.0, 0.0]), jnp.array([1.0, -1.0, 0.0]), jnp.array([0.2, 3, 1])):
        c = pullback(ct)[0] * (x - r)
        np.testing.assert_allclose(c.sum(), jnp.dot(ct, out - out_ref), rtol=1e-5)
        target = lambda v, ct=ct: jnp.dot(ct, f(v))
        np.testing.assert_allclose(c, dl.deeplift(target, r)(x), rtol=1e-5)


def test_onehot_axis_equals_weight_normalisation():
    """§2.6: normalised first-layer weights with a zero reference = uniform reference 1/K."""
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (5, 4, 6))  # conv kernel (width, in=bases, out)
    b = jax.random.normal(jax.random.PRNGKey(1), (6,))
    v = jax.random.normal(jax.random.PRNGKey(2), (6,))

    def net(x, w, b):
        h = jax.lax.conv_general_dilated(
            x[None], w, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
        )
        return jnp.sum(jax.nn.relu(h[0] + b) @ v)

    x = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(3), (20,), 0, 4), 4)
    mu = w.mean(axis=1, keepdims=True)
    w_norm, b_norm = w - mu, b + mu.sum(axis=(0, 1))
    explicit = dl.deeplift(lambda x: net(x, w_norm, b_norm), jnp.zeros((20, 4)))(x)
    m = dl.deeplift(lambda x: net(x, w, b), 0.25, onehot_axis=-1, multiply_by_inputs=False)(x)
    np.testing.assert_allclose(m * x, explicit, rtol=1e-5, atol=1e-6)
    plain = dl.deeplift(lambda x: net(x, w, b), 0.25)(x)
    np.testing.assert_allclose(plain.sum(-1), explicit.sum(-1), rtol=1e-5, atol=1e-5)
