"""Bad input: each case raises DeepLiftError with a message that says what and how to fix.

tests/test_errors.py covers the basic cases (a (2,) reference for a (3,) input, int/bool
arrays, a tuple output, dict keys that differ, sort without a rule); these add the rest:
pytree leaves, batch-shaped references, NaN/Inf (the opt-in check_finite), lists, nested
jit, and summation_residual's own errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deepliftjax as dl
from deepliftjax._checks import check_finite, summation_residual

X = jnp.array([1.0, -2.0, 0.5])
f = lambda x: jnp.sum(jnp.tanh(x))


# ---- mismatched shapes ----


@pytest.mark.parametrize(
    "ref_shape", [(2,), (1, 3), (4, 3), (3, 1)], ids=["short", "extra_axis", "batch", "column"]
)
def test_reference_shape_mismatch_names_both_shapes(ref_shape):
    with pytest.raises(dl.DeepLiftError) as e:
        dl.deeplift(f, jnp.zeros(ref_shape))(X)
    msg = str(e.value)
    assert f"shape {ref_shape}" in msg and "(3,)" in msg and "Hint:" in msg
    if ref_shape == (4, 3):
        assert "vmap" in msg  # a batch of references: the hint says how


def test_reference_shape_mismatch_inside_a_pytree():
    g = lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"] ** 2)
    x = {"a": jnp.ones(3), "b": jnp.ones(3)}
    with pytest.raises(dl.DeepLiftError, match=r"shape \(2,\) does not broadcast.*\(3,\)"):
        dl.deeplift(g, {"a": jnp.zeros(3), "b": jnp.zeros(2)})(x)


def test_reference_shape_mismatch_names_the_leaf():
    g = lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"] ** 2)
    x = {"a": jnp.ones(3), "b": jnp.ones(3)}
    with pytest.raises(dl.DeepLiftError, match=r"\['b'\]"):
        dl.deeplift(g, {"a": jnp.zeros(3), "b": jnp.zeros(2)})(x)


def test_reference_shape_mismatch_under_jit_and_vmap():
    with pytest.raises(dl.DeepLiftError, match="does not broadcast"):
        jax.jit(dl.deeplift(f, jnp.zeros(2)))(X)
    with pytest.raises(dl.DeepLiftError, match="does not broadcast"):
        jax.vmap(dl.deeplift(f, jnp.zeros((5, 3))))(jnp.ones((5, 3)))


# ---- NaN / Inf: the opt-in check ----


def test_nan_in_the_reference_silently_poisons_scores_without_the_check():
    c = dl.deeplift(f, jnp.array([0.0, jnp.nan, 0.0]), check=None)(X)
    assert np.isnan(np.asarray(c)).any()  # what check_finite is for


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["input", "reference"])
def test_check_finite_reports_where(bad, where):
    x = {"w": np.ones((2, 3), np.float32), "v": np.ones(4, np.float32)}
    r = {"w": np.zeros((2, 3), np.float32), "v": np.zeros(4, np.float32)}
    target = x if where == "input" else r
    target["w"][1, 2] = bad
    target["w"][0, 1] = bad  # the first in C order is reported
    with pytest.raises(dl.DeepLiftError) as e:
        check_finite(x, r)
    msg = str(e.value)
    assert f"the {where} has 2 non-finite value(s)" in msg
    assert "['w']" in msg and "index (0, 1)" in msg and str(bad) in msg
    assert "shape (2, 3)" in msg and "Hint:" in msg


def test_check_finite_passes_and_skips_integer_leaves():
    big = jnp.array([jnp.iinfo(jnp.int32).max, jnp.iinfo(jnp.int32).min, 0])
    assert check_finite({"a": jnp.ones(3), "i": big}, 0.0) is None
    assert check_finite(X) is None  # no reference
    assert check_finite(X, jnp.zeros(3)) is None
    # the integer leaf is skipped, not the tree: a NaN in the float leaf beside it is named
    with pytest.raises(dl.DeepLiftError, match=r"\['f'\].*index \(1,\)"):
        check_finite({"i": big, "f": jnp.array([0.0, jnp.nan])}, 0.0)


def test_check_finite_scalar_reference_and_root_leaf():
    with pytest.raises(dl.DeepLiftError, match=r"reference.*<root>.*index \(\)"):
        check_finite(X, float("nan"))


def test_check_finite_needs_concrete_values():
    with pytest.raises(dl.DeepLiftError, match="(?s)concrete.*before the jitted call"):
        jax.jit(lambda x: check_finite(x))(X)


# ---- integer inputs ----


def test_integer_leaf_in_a_pytree_argument():
    g = lambda p: jnp.sum(p["a"]) + jnp.sum(p["tokens"] * 1.0)
    with pytest.raises(dl.DeepLiftError, match="(?s)argument 0.*int32.*floating-point.*one_hot"):
        dl.deeplift(g, 0.0)({"a": X, "tokens": jnp.arange(3)})


def test_integer_second_argument_with_argnums():
    g = lambda x, k: jnp.sum(x * k)
    with pytest.raises(dl.DeepLiftError, match="(?s)argument 1.*int32"):
        dl.deeplift(g, 0.0, argnums=1)(X, jnp.arange(3))
    # an integer argument that is not attributed is fine
    c = dl.deeplift(g, 0.0, argnums=0)(X, jnp.arange(3))
    np.testing.assert_allclose(c, X * jnp.arange(3))


# ---- outputs ----


def test_list_output_without_has_aux():
    with pytest.raises(dl.DeepLiftError, match="(?s)list of 2 values.*has_aux=True"):
        dl.deeplift(lambda x: [jnp.sum(x), x], 0.0)(X)


def test_tuple_output_message_says_both_fixes():
    with pytest.raises(dl.DeepLiftError) as e:
        dl.deeplift(lambda x: (jnp.sum(x), {"aux": x}), 0.0)(X)
    msg = str(e.value)
    assert "tuple of 2 values" in msg and "has_aux=True" in msg and "f(x)[0]" in msg


def test_has_aux_with_a_scalar_output():
    with pytest.raises(dl.DeepLiftError, match=r"has_aux=True needs f to return a pair"):
        dl.deeplift(f, 0.0, has_aux=True)(X)


# ---- unsupported primitive ----


def test_unsupported_primitive_inside_nested_jit():
    g = lambda x: jnp.sum(jax.jit(lambda v: lax.top_k(v, 2)[0])(x))
    with pytest.raises(dl.DeepLiftError) as e:
        dl.deeplift(g, 0.0)(X)
    msg = str(e.value)
    assert "'top_k'" in msg  # the name
    assert "top_k[axis=0 k=2]" in msg or "top_k[" in msg  # the equation, with its params
    assert "register_rule" in msg and "fallback='gradient'" in msg  # the fix
    assert "not exact" in msg  # and the cost of the fallback


def test_unsupported_primitive_on_a_constant_is_fine():
    # a primitive without a rule that does not touch the attributed input is just evaluated
    w = jnp.array([3.0, 1.0, 2.0])
    g = lambda x: jnp.sum(jnp.tanh(x) * jnp.sort(w))
    c = dl.deeplift(g, 0.0)(X)
    np.testing.assert_allclose(float(c.sum()), float(g(X) - g(jnp.zeros(3))), rtol=1e-6)


# ---- reference pytree of the wrong structure ----


@pytest.mark.parametrize(
    "ref",
    [
        [jnp.zeros(3)],  # a list for a tuple
        (jnp.zeros(3), jnp.zeros(3)),  # an extra leaf
        {"a": jnp.zeros(3)},  # a dict for a tuple
    ],
    ids=["list_for_tuple", "extra_leaf", "dict_for_tuple"],
)
def test_reference_pytree_structure(ref):
    with pytest.raises(dl.DeepLiftError) as e:
        dl.deeplift(lambda p: jnp.sum(p[0]), ref)((X,))
    msg = str(e.value)
    assert "pytree structure" in msg and "PyTreeDef" in msg and "args[argnums]" in msg


def test_reference_structure_for_a_tuple_of_argnums():
    g = lambda a, b: jnp.sum(a * b)
    with pytest.raises(dl.DeepLiftError, match="pytree structure"):
        dl.deeplift(g, (0.0, 0.0, 0.0), argnums=(0, 1))(X, X)
    c = dl.deeplift(g, (0.0, 1.0), argnums=(0, 1))(X, X)  # one leaf per argument: fine
    assert len(c) == 2


# ---- summation_residual's own errors ----


def test_summation_residual_needs_a_scalar_f():
    with pytest.raises(dl.DeepLiftError, match="scalar"):
        summation_residual(jnp.tanh, 0.0, X, contributions=X)


def test_summation_residual_batched_needs_a_common_batch_axis():
    with pytest.raises(dl.DeepLiftError, match="leading batch axis"):
        summation_residual(
            lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"]),
            0.0,
            {"a": jnp.ones((4, 3)), "b": jnp.ones((5, 3))},
            batched=True,
        )
