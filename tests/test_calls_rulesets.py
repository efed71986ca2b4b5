"""A user's call primitive (``rules.defcall``) is interpreted inside under every rule set.

A call primitive holds a jaxpr; its own derivative is the plain gradient of everything
inside. Every rule set (DeepLIFT's Rescale and RevealCancel, guided backpropagation,
ε-LRP) must therefore run the inner jaxpr through its own rules, for the primitives that
``defcall`` registers as much as for ``jit``. Oracle: the same function with the call
inlined, per element, plain and under ``jit(vmap(...))``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.interpreters import ad, batching, mlir

import deepliftjax as dl
from deepliftjax import rules

user_call_p = jax.extend.core.Primitive("user_call")
user_call_p.multiple_results = True


def _impl(*args, jaxpr):
    return jax.extend.core.jaxpr_as_fun(jaxpr)(*args)


def _jvp(primals, tangents, *, jaxpr):
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(functools.partial(_impl, jaxpr=jaxpr), tuple(primals), tangents)


def _batch(args, dims, *, jaxpr):
    outs = jax.vmap(functools.partial(_impl, jaxpr=jaxpr), in_axes=tuple(dims))(*args)
    return outs, [0] * len(outs)


user_call_p.def_impl(_impl)
user_call_p.def_abstract_eval(lambda *args, jaxpr: jaxpr.out_avals)
ad.primitive_jvps[user_call_p] = _jvp
batching.primitive_batchers[user_call_p] = _batch
mlir.register_lowering(user_call_p, mlir.lower_fun(_impl, multiple_results=True))
rules.defcall(user_call_p, "jaxpr")


def user_call(fun, *args):
    """``fun(*args)`` (a list of arrays) as one ``user_call`` equation."""
    return user_call_p.bind(*args, jaxpr=jax.make_jaxpr(fun)(*args))


_rng = np.random.default_rng(0)
W = jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32)
V = jnp.asarray(_rng.normal(size=(3,)), jnp.float32)


def _block(x, w):
    """ReLU and tanh units and a product, two results: what every rule set changes."""
    h = jax.nn.relu(x @ w - 0.1)
    return [jnp.tanh(h) * h, jnp.maximum(x[:3], h)]


def _model(call):
    def f(x):
        a, b = call(_block, x, W) if call else _block(x, W)
        return jnp.dot(jnp.tanh(a), V) - jnp.dot(b, jnp.array([1.0, -2.0, 0.5]))

    return f


def _nested(call):
    """A call inside a call (the inner one inside ``jit``)."""

    def inner(x, w):
        return [jax.jit(lambda u: jnp.tanh(jax.nn.relu(u @ w)))(x)]

    def outer(x, w):
        (h,) = call(inner, x, w) if call else inner(x, w)
        return [jax.nn.relu(h - 0.3) * V]

    def f(x):
        (y,) = call(outer, x, W) if call else outer(x, W)
        return jnp.sum(y)

    return f


METHODS = {
    "guided_backprop": dl.guided_backprop,
    "lrp_epsilon": dl.lrp_epsilon,
    "lrp_epsilon_no_bias": functools.partial(dl.lrp_epsilon, bias=False),
    "rescale": functools.partial(dl.deeplift, ref=0.1, rule="rescale"),
    "reveal_cancel": functools.partial(dl.deeplift, ref=0.1, rule="reveal_cancel"),
}
PLAIN = {
    "guided_backprop": jax.grad,
    "lrp_epsilon": dl.gradient_x_input,
    "lrp_epsilon_no_bias": dl.gradient_x_input,
}
"""The plain gradient each modified-gradient method would silently become."""
MODELS = {"block": _model, "nested": _nested}
X = jnp.asarray(_rng.normal(size=(3, 4)), jnp.float32)


SLOW = {("nested", "rescale"), ("nested", "reveal_cancel"), ("nested", "lrp_epsilon_no_bias")}


@pytest.mark.parametrize(
    ("method", "model"),
    [
        pytest.param(me, mo, marks=[pytest.mark.slow] if (mo, me) in SLOW else [])
        for me in METHODS
        for mo in MODELS
    ],
)
def test_user_call_scores_equal_inlined(method, model):
    transform = METHODS[method]
    f_call, f_inline = MODELS[model](user_call), MODELS[model](None)
    plain = PLAIN.get(method, jax.grad)

    @jax.jit
    def program(xs):
        return tuple(jax.vmap(g)(xs) for g in (transform(f_call), transform(f_inline),
                                                plain(f_inline)))  # fmt: skip

    got, want, ungoverned = program(X)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if method in PLAIN:  # the rule set changes these scores: equal is not by accident
        assert np.max(np.abs(want - ungoverned)) > 1e-3
    if model == "block":  # plain (op by op)
        np.testing.assert_allclose(transform(f_call)(X[0]), want[0], rtol=1e-6, atol=1e-7)
