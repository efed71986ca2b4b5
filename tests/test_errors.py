"""Bad input raises DeepLiftError at trace time, naming what was wrong and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import deepliftjax as dl

X = jnp.array([1.0, -2.0, 0.5])


def test_unsupported_primitive_names_it_shows_the_equation_and_the_fix():
    f = lambda x: jnp.sum(jnp.sort(x) * jnp.arange(3.0))
    with pytest.raises(dl.DeepLiftError) as e:
        dl.deeplift(f, 0.0)(X)
    msg = str(e.value)
    assert "'sort'" in msg and "sort[" in msg and "register_rule" in msg and "Hint:" in msg


def test_fallback_gradient_warns_and_names_the_primitive():
    f = lambda x: jnp.sum(jnp.sort(x) * jnp.arange(3.0))
    with pytest.warns(UserWarning, match="'sort'"):
        c = dl.deeplift(f, 0.0, fallback="gradient")(X)
    assert c.shape == X.shape


def test_reference_that_does_not_broadcast():
    with pytest.raises(dl.DeepLiftError, match=r"shape \(2,\) does not broadcast.*\(3,\)"):
        dl.deeplift(lambda x: jnp.tanh(x).sum(), jnp.zeros(2))(X)


def test_integer_and_boolean_inputs():
    for bad in (jnp.array([1, 2, 3]), jnp.array([True, False])):
        with pytest.raises(dl.DeepLiftError, match="(?s)floating-point inputs only.*one_hot"):
            dl.deeplift(lambda x: jnp.sum(x * 2.0), 0)(bad)


def test_non_scalar_output():
    with pytest.raises(dl.DeepLiftError, match=r"(?s)scalar.*shape \(3,\).*deeplift_vjp"):
        dl.deeplift(jnp.tanh, 0.0)(X)


def test_tuple_output_without_has_aux():
    with pytest.raises(dl.DeepLiftError, match="has_aux=True"):
        dl.deeplift(lambda x: (jnp.sum(x), x), 0.0)(X)


def test_reference_pytree_of_the_wrong_structure():
    with pytest.raises(dl.DeepLiftError, match="pytree structure"):
        dl.deeplift(lambda p: jnp.sum(p["a"]), {"b": jnp.zeros(3)})({"a": X})


def test_while_loop_names_the_loop_and_the_fix():
    def f(x):
        return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (jnp.tanh(c[0]), c[1] + 1), (x, 0))[
            0
        ].sum()

    with pytest.raises(dl.DeepLiftError, match="(?s)'while' loop.*fori_loop"):
        dl.deeplift(f, 0.0)(X)


def test_step_functions_of_equality_are_exact():
    # == and (x == c).astype(float) * x carry a switch score: their jumps are credited exactly
    for f in (
        lambda x: jnp.sum(jnp.where(x == 0.5, 1.0, 0.0)),
        lambda x: jnp.sum((x == 0.5).astype(jnp.float32) * x),
    ):
        x = jnp.array([0.5, 1.0, -0.5])
        c = dl.deeplift(f, 0.0)(x)
        assert float(jnp.sum(c)) == pytest.approx(float(f(x) - f(jnp.zeros(3))))


def test_bad_options():
    with pytest.raises(dl.DeepLiftError, match="max_rule"):
        dl.deeplift(jnp.sum, 0.0, max_rule="nope")
    with pytest.raises(dl.DeepLiftError, match="argnums"):
        dl.deeplift(jnp.sum, 0.0, argnums=3)(X)
