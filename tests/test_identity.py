"""A job's identity sees every constant of the traced model, however deeply nested.

The weight sits inside a jitted closure called from a scan body, a cond branch, a while
body, a custom_jvp/custom_vjp function, a checkpoint body, a shard_map body or a Flax
``nn.jit`` module (where the top-level jaxpr has no constants at all), in JAX's default
constant handling and with constants inlined as literals (``jax_use_simplified_jaxpr_
constants``, the coming default); a changed weight changes the ``weights`` part, a changed
literal the ``model`` part, and a re-created function neither. Only tracing: no compiles.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from deepliftjax._errors import DeepLiftError
from deepliftjax._identity import computation_digest, options_identity, trace_identity

S = jax.ShapeDtypeStruct((4,), jnp.float32)
W1 = np.arange(1.0, 5.0, dtype=np.float32)
W2 = W1.copy()
W2[2] += 0.5  # one weight edited


def _inner(w):
    """A jitted closure over ``w``: its jaxpr keeps ``w`` as its own constant."""
    return jax.jit(lambda y: jnp.tanh(y * w))


def _custom_jvp(w):
    @jax.custom_jvp
    def g(x):
        return _inner(w)(x)

    g.defjvp(lambda p, t: (g(p[0]), t[0]))
    return lambda x: g(x).sum()


def _custom_vjp(w):
    @jax.custom_vjp
    def g(x):
        return _inner(w)(x)

    g.defvjp(lambda x: (g(x), None), lambda r, c: (c,))
    return lambda x: g(x).sum()


def _shard_map(w):
    mesh = jax.make_mesh((1,), ("b",))
    body = jax.shard_map(lambda y: _inner(w)(y), mesh=mesh, in_specs=P(), out_specs=P())
    return lambda x: body(x).sum()


class _Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(2)(x)).sum()


@functools.cache
def _dense_params():
    return _Dense().init(jax.random.key(0), jnp.zeros(4))  # eager: nn.jit's init compiles


def _nn_jit(w):
    params = jax.tree_util.tree_map(lambda p: p * w[2], _dense_params())  # other w: new params
    model = nn.jit(_Dense)()
    return lambda x: model.apply(params, x)


MODELS = {
    "jit closure": lambda w: lambda x: _inner(w)(x).sum(),
    "nested jit": lambda w: jax.jit(lambda x: jax.jit(lambda y: _inner(w)(y) * 2)(x).sum()),
    "scan body": lambda w: (
        lambda x: lax.scan(lambda c, xi: (c + _inner(w)(xi).sum(), None), 0.0, x[None])[0]
    ),
    "cond branch": lambda w: (
        lambda x: lax.cond(x.sum() > 0, lambda y: _inner(w)(y).sum(), lambda y: y.sum(), x)
    ),
    "while body": lambda w: (
        lambda x: lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, _inner(w)(c[1])), (0, x))[
            1
        ].sum()
    ),
    "custom_jvp": _custom_jvp,
    "custom_vjp": _custom_vjp,
    "checkpoint body": lambda w: lambda x: jax.checkpoint(lambda y: _inner(w)(y).sum())(x),
    "shard_map body": _shard_map,
    "flax nn.jit": _nn_jit,
}


@pytest.fixture(params=["default constants", "constants as literals"])
def constants_mode(request):
    """JAX's constant handling: hoisted constants, or (the coming default) constants
    inlined as literals in the equations that use them."""
    literals = request.param == "constants as literals"
    old = jax.config.jax_use_simplified_jaxpr_constants
    jax.config.update("jax_use_simplified_jaxpr_constants", literals)
    yield literals
    jax.config.update("jax_use_simplified_jaxpr_constants", old)


@pytest.mark.parametrize("kind", list(MODELS))
def test_weight_changes_are_seen_through_nested_jaxprs(kind, constants_mode):
    make = MODELS[kind]
    a, again, b = (trace_identity(make(w), S) for w in (W1, W1, W2))
    if kind != "flax nn.jit":  # the weight is nowhere in the top-level jaxpr's constants
        assert jax.make_jaxpr(make(W1))(S).consts == []
    assert a.weights != b.weights, "a changed weight went unseen"
    assert a.structure == b.structure  # what changed is named: weights, not the model
    assert (a.structure, a.weights) == (again.structure, again.weights)  # re-created: same
    assert a.num_arrays >= 1 and a.num_bytes >= W1.nbytes or kind == "flax nn.jit"


def test_all_weights_scaled_and_a_reference_generator():
    a = trace_identity(MODELS["jit closure"](W1), S)
    assert a.weights != trace_identity(MODELS["jit closure"](W1 * 3), S).weights

    def generator(w):  # a jitted reference generator closing over a weight
        return jax.jit(lambda key, x: x[None] * w + jax.random.normal(key, (2, 4)))

    key = jax.random.key(0)
    d1, d2 = (computation_digest(generator(w), key, S) for w in (W1, W2))
    assert d1 != d2 and d1 == computation_digest(generator(W1), key, S)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: lambda x: _inner(W1)(x).sum() + c,  # a Python scalar literal
        lambda c: jax.jit(lambda x: lax.cond(x[0] > c, jnp.sin, jnp.cos, x).sum()),
        lambda c: lambda x: lax.scan(lambda s, xi: (s * c + xi, None), 0.0, x)[0],
    ],
)
def test_literal_changes_the_model_part(change):
    a, b, again = (trace_identity(change(c), S) for c in (0.25, 0.5, 0.25))
    assert a.structure != b.structure and a.structure == again.structure


def test_function_names_and_addresses_do_not_count():
    def predict(x):
        return _inner(W1)(x).sum()

    other = lambda x: _inner(W1)(x).sum()  # noqa: E731 - another name, the same computation
    assert trace_identity(predict, S)[:2] == trace_identity(other, S)[:2]


# ---- parameters the walk cannot read: refused, not skipped ------------------------------------

_probe = jax.extend.core.Primitive("identity_probe")
_probe.def_abstract_eval(lambda x, **params: x)
_probe.def_impl(lambda x, **params: x)


class _Opaque:
    """A value whose repr hides its content and that has no attributes to read."""

    __slots__ = ()


class _Holder:
    """A value whose repr hides its content, with an attribute holding an array."""

    def __init__(self, w):
        self.w = w


def _bind(value):
    return lambda x: _probe.bind(x, payload=value).sum()


def test_unknown_parameter_values_are_hashed_or_refused():
    with pytest.raises(DeepLiftError, match=r"parameter 'payload' of primitive 'identity_probe'"):
        trace_identity(_bind(_Opaque()), S)
    # attributes, closures, partials and arrays are read, so a change in them is seen
    for make in (
        _Holder,
        lambda w: functools.partial(np.dot, w),
        lambda w: lambda v: v * w,
        lambda w: (3, _Holder((w, "x"))),
    ):
        a, b, again = (trace_identity(_bind(make(w)), S) for w in (W1, W2, W1.copy()))
        assert a[:2] != b[:2] and a[:2] == again[:2]


def test_options_identity_reads_arrays_and_functions():
    assert options_identity({"a": W1}) != options_identity({"a": W2})
    assert options_identity({"rule": "rescale"}) == options_identity({"rule": "rescale"})
    assert options_identity({"f": lambda y: y * W1}) != options_identity({"f": lambda y: y * W2})
