"""DeepLIFT-SHAP over many references, hypothetical contributions, modisco-lite export."""

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepliftjax
from deepliftjax._hypothetical import (
    export_modisco,
    hypothetical_from_multipliers,
    project_hypothetical,
)
from deepliftjax._shap import ShapScores, check_residuals, deeplift_shap
from deepliftjax._shuffle import dinuc_shuffle

L = 12


def _cnn():
    k = jax.random.split(jax.random.key(0), 3)
    w1 = jax.random.normal(k[0], (5, 4, 6)) * 0.5
    w2 = jax.random.normal(k[1], (L - 4, 6)) * 0.1

    def f(x):  # conv - relu - dense - tanh: nonlinear, exact under DeepLIFT's rules
        h = jax.lax.conv_general_dilated(
            x[None], w1, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
        )[0]
        return jnp.tanh(jnp.sum(jax.nn.relu(h - 0.1) * w2))

    return f


def _onehot(key, shape):
    return jax.nn.one_hot(jax.random.randint(key, shape, 0, 4), 4)


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_mean_over_references_equals_mean_of_single_runs(chunk):
    f = _cnn()
    x = _onehot(jax.random.key(1), (L,))
    refs = jax.random.uniform(jax.random.key(2), (7, L, 4))
    got = jax.jit(deeplift_shap(f, refs, reference_chunk_size=chunk))(x)
    single = jax.jit(lambda r: deepliftjax.deeplift(f, r)(x))
    singles = [single(refs[k]) for k in range(7)]
    want = jnp.mean(jnp.stack(singles), 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(want))) > 3e-2  # not trivially zero
    # the mean of contributions sums to the mean of f(x) - f(ref_k)
    delta = jnp.mean(jnp.stack([f(x) - f(r) for r in refs]))
    np.testing.assert_allclose(float(got.sum()), float(delta), rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # ~30 s; the mean-over-references identity is checked by the fast tests
def test_jit_vmap_per_example_and_generated_references():
    f = _cnn()
    xs = _onehot(jax.random.key(3), (5, L))
    refs = _onehot(jax.random.key(4), (5, 4, L))
    per_ex = jax.jit(jax.vmap(lambda x, r: deeplift_shap(f, r, reference_chunk_size=3)(x)))
    got = per_ex(xs, refs)
    one = jax.jit(lambda x, r: deeplift_shap(f, r)(x))
    for i in (0, 4):
        np.testing.assert_allclose(got[i], one(xs[i], refs[i]), rtol=1e-5, atol=1e-6)
    gen = functools.partial(dinuc_shuffle, num_shuffles=4)
    keys = jax.random.split(jax.random.key(5), 5)
    by_gen = jax.jit(jax.vmap(lambda k, x: deeplift_shap(f, gen, key=k)(x)))(keys, xs)
    drawn = jax.vmap(gen)(keys, xs)
    np.testing.assert_allclose(by_gen, per_ex(xs, drawn), rtol=1e-5, atol=1e-6)


def test_residuals_hypothetical_and_projection():
    f = _cnn()
    x = _onehot(jax.random.key(6), (L,))
    refs = dinuc_shuffle(jax.random.key(7), x, 6)
    shap = deeplift_shap(f, refs, hypothetical=True, return_residuals=True, reference_chunk_size=4)
    out = jax.jit(shap)(x)  # compiled: eager calls are tested in test_dtypes_and_reference_counts
    assert isinstance(out, ShapScores)
    assert out.residuals.shape == () and float(out.residuals) < 1e-5
    # hypothetical scores projected on the letter present = contributions per position
    np.testing.assert_allclose(
        project_hypothetical(out.hypothetical, x), out.contributions.sum(-1), rtol=1e-5, atol=1e-6
    )
    # and by definition: mean_k sum_c m_k[i, c] (e_b[c] - r_k[i, c])
    hyp = []
    mult = jax.jit(lambda r: deepliftjax.deeplift(f, r, multiply_by_inputs=False)(x))
    for r in refs:
        m = mult(r)
        eye = jnp.eye(4)
        hyp.append(jnp.einsum("ic,ibc->ib", m, eye[None, :, :] - r[:, None, :]))
    np.testing.assert_allclose(out.hypothetical, jnp.mean(jnp.stack(hyp), 0), rtol=1e-5, atol=1e-6)


def test_hypothetical_of_linear_model_is_the_counterfactual_change():
    """For f linear, hyp[i, b] = f(x with letter b at i) - f(x) + C[i] exactly."""
    w = jax.random.normal(jax.random.key(8), (L, 4))
    f = lambda x: jnp.sum(w * x)
    x = _onehot(jax.random.key(9), (L,))
    ref = jnp.full((L, 4), 0.25)
    hyp = hypothetical_from_multipliers(w, ref)
    contrib = deepliftjax.deeplift(f, ref)(x).sum(-1)
    for i in (0, 5, L - 1):
        for b in range(4):
            xb = x.at[i].set(jax.nn.one_hot(b, 4))
            np.testing.assert_allclose(hyp[i, b], f(xb) - f(x) + contrib[i], rtol=1e-5, atol=1e-5)


def test_reference_memory_does_not_grow_with_k():
    f = _cnn()
    x = _onehot(jax.random.key(1), (L,))

    def temp_bytes(k):
        refs = jnp.zeros((k, L, 4))
        g = jax.jit(lambda x, r: deeplift_shap(f, r, reference_chunk_size=4)(x))
        mem = g.lower(x, refs).compile().memory_analysis()
        if mem is None:
            pytest.skip("no memory analysis on this backend")
        return mem.temp_size_in_bytes

    small, large = temp_bytes(8), temp_bytes(400)
    assert large < 1.5 * small + 4096, (small, large)


def test_pytree_inputs_and_errors():
    f = lambda d: jnp.sum(jnp.tanh(d["a"]) * d["b"])
    x = {"a": jnp.ones(3), "b": jnp.arange(3.0)}
    refs = {"a": jnp.zeros((2, 3)), "b": jnp.ones((2, 3))}
    c = deeplift_shap(f, refs)(x)
    total = c["a"].sum() + c["b"].sum()
    want = f(x) - 0.5 * (f({"a": jnp.zeros(3), "b": jnp.ones(3)}) * 2)
    np.testing.assert_allclose(float(total), float(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(K, \*x.shape\)"):
        deeplift_shap(_cnn(), jnp.zeros((L, 4)))(jnp.zeros((L, 4)))
    with pytest.raises(ValueError, match="key="):
        deeplift_shap(_cnn(), dinuc_shuffle)(jnp.zeros((L, 4)))
    with pytest.raises(ValueError, match="scalar"):
        deeplift_shap(lambda x: x * 2, jnp.zeros((1, 3)))(jnp.ones(3))


def test_check_residuals_warns_above_threshold():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_residuals(np.array([0.0, 1e-5])) == 0
    with pytest.warns(UserWarning, match=r"2 example\(s\).*example 12"):
        assert check_residuals(np.array([0.0, 0.5, np.nan]), 1e-3, offset=10) == 2


def test_export_modisco_layout(tmp_path):
    x = np.asarray(_onehot(jax.random.key(0), (3, L)))
    h = np.random.default_rng(0).normal(size=(3, L, 4)).astype(np.float32)
    s, a = export_modisco(tmp_path, x, h)
    ohe, shap = np.load(s), np.load(a)
    assert ohe.shape == shap.shape == (3, 4, L)
    np.testing.assert_array_equal(ohe[1, :, 5], x[1, 5])
    np.testing.assert_array_equal(shap[2, :, 7], h[2, 7])
    s2, a2 = export_modisco(
        tmp_path / "z", x.transpose(0, 2, 1), h.transpose(0, 2, 1), alphabet_axis=1, compressed=True
    )
    assert os.path.basename(s2) == "ohe.npz"
    np.testing.assert_array_equal(np.load(a2)["arr_0"], shap)
    with pytest.raises(ValueError, match="size"):
        export_modisco(tmp_path, x, h, alphabet_axis=1)


# ---- dtypes: accumulators take the dtype of what they accumulate -------------------------

CHUNK = 4


def _mlp(x):
    """A small tanh MLP computed in x's dtype (the weights are cast to it)."""
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(6, 5)) * 0.6, x.dtype)
    w2 = jnp.asarray(rng.normal(size=(5,)), x.dtype)
    return jnp.sum(jnp.tanh(jnp.tanh(x @ w1) * w2))


_mlp_jit = jax.jit(_mlp)
_mlp_single = jax.jit(lambda x, r: deepliftjax.deeplift(_mlp, r)(x))  # compiled per dtype


# dtype -> (dtype of the mean, rtol of mean(shap) vs mean(single runs), relative atol)
DTYPES = {
    "float32": (jnp.float32, jnp.float32, 1e-5, 1e-6),
    "float64": (jnp.float64, jnp.float64, 1e-12, 1e-13),
    # each reference's scores are rounded to bfloat16 once per op; vmapped and single runs
    # may fuse differently, so they agree to bfloat16's resolution, not float32's
    "bfloat16": (jnp.bfloat16, jnp.float32, 2e-2, 2e-2),
}


def _dtype_cases():
    """dtype x number of references x plain (eager) / jit / jit(vmap). Eager calls compile
    every primitive of the interpreter on their own (~5-10 s a case): the default suite
    runs them where the scan over chunks is used with a tail (2 chunks and a tail)."""
    for name in sorted(DTYPES):
        for k in (1, CHUNK, 2 * CHUNK, 2 * CHUNK + 3):
            for mode in ("plain", "jit", "vmap"):
                slow = mode == "plain" and k <= 2 * CHUNK
                marks = [pytest.mark.slow] if slow else []
                yield pytest.param(name, k, mode, marks=marks, id=f"{name}-{k}-{mode}")


@pytest.mark.parametrize("dtype_name, num_refs, mode", list(_dtype_cases()))
def test_dtypes_and_reference_counts(dtype_name, num_refs, mode):
    """float64 with several chunks raised (a float32 residual carry in a float64 scan)."""
    dtype, mean_dtype, rtol, atol = DTYPES[dtype_name]
    with jax.enable_x64(dtype_name == "float64"):
        rng = np.random.default_rng(num_refs)
        xs = jnp.asarray(rng.normal(size=(2, 6)), dtype)
        refs = jnp.asarray(rng.normal(size=(num_refs, 6)), dtype)
        shap = deeplift_shap(
            _mlp, refs, reference_chunk_size=CHUNK, return_residuals=True, return_conditioning=True
        )
        if mode == "plain":
            outs = [shap(xs[0])]
        elif mode == "jit":
            outs = [jax.jit(shap)(xs[0])]
        else:
            out = jax.jit(jax.vmap(shap))(xs)
            outs = [jax.tree_util.tree_map(lambda v, i=i: v[i], out) for i in range(2)]
        for x, out in zip(xs, outs, strict=False):
            assert out.contributions.dtype == mean_dtype
            assert out.residuals.dtype == out.conditioning.dtype == mean_dtype
            runs = np.stack([np.asarray(_mlp_single(x, r), np.float64) for r in refs])
            want = runs.mean(0)
            scale = float(np.abs(runs).max())
            assert scale > 1e-2
            np.testing.assert_allclose(
                np.asarray(out.contributions, np.float64), want, rtol=rtol, atol=atol * scale
            )
            # residual: the worst over references of |sum(C_k) - Δf_k|
            fx, frs = float(_mlp_jit(x)), np.array([float(_mlp_jit(r)) for r in refs])
            worst = np.max(np.abs(runs.sum(1) - (fx - frs)))
            assert float(out.residuals) <= max(10 * worst, 50 * float(jnp.finfo(dtype).eps))
            # conditioning: sum_k sum|C_k| / sum_k max(|Δf_k|, floor)
            den = np.maximum(np.abs(fx - frs), 1e-3 * np.maximum(np.maximum(abs(fx), abs(frs)), 1))
            np.testing.assert_allclose(
                float(out.conditioning), np.abs(runs).sum() / den.sum(), rtol=max(rtol, 1e-6)
            )


def test_accumulators_widen_when_f_returns_a_wider_dtype():
    """x float32, f computing in float64 (x64 on): the residual carry widens to float64."""
    with jax.enable_x64(True):
        f = lambda x: jnp.sum(jnp.tanh(x.astype(jnp.float64) * 1.5))
        refs = jnp.asarray(np.random.default_rng(0).normal(size=(2 * CHUNK, 3)), jnp.float32)
        x = jnp.ones(3, jnp.float32)
        for fn in (deeplift_shap, lambda *a, **k: jax.jit(deeplift_shap(*a, **k))):
            out = fn(f, refs, reference_chunk_size=CHUNK, return_residuals=True)(x)
            assert out.contributions.dtype == jnp.float32
            assert out.residuals.dtype == jnp.float64
            want = np.mean([np.asarray(deepliftjax.deeplift(f, r)(x)) for r in refs], 0)
            np.testing.assert_allclose(out.contributions, want, rtol=1e-5, atol=1e-6)


# ---- bad inputs: DeepLiftError with a hint ------------------------------------------------


def _gen_none(key, x):
    return jnp.zeros((0, *x.shape), x.dtype)


SHAP_ERRORS = {
    "zero references": (dict(references=jnp.zeros((0, L, 4))), {}, r"no references: K = 0"),
    "zero generated references": (
        dict(references=_gen_none, key=jax.random.key(0)),
        {},
        r"no references: K = 0",
    ),
    "reference_chunk_size 0": (
        dict(references=jnp.zeros((2, L, 4)), reference_chunk_size=0),
        {},
        r"reference_chunk_size must be an int >= 1 or None, got 0",
    ),
    "reference_chunk_size -2": (
        dict(references=jnp.zeros((2, L, 4)), reference_chunk_size=-2),
        {},
        r"reference_chunk_size must be an int >= 1",
    ),
    "reference_chunk_size 2.5": (
        dict(references=jnp.zeros((2, L, 4)), reference_chunk_size=2.5),
        {},
        r"reference_chunk_size must be an int >= 1",
    ),
    "no reference axis": (dict(references=jnp.zeros((L, 4))), {}, r"\(K, \*x.shape\)"),
    "generator without key": (dict(references=dinuc_shuffle), {}, r"no key was given"),
    "argnums": (dict(references=jnp.zeros((1, L, 4)), argnums=2), {}, r"argnums=2"),
    "non-scalar f": (
        dict(references=jnp.zeros((1, L, 4)), f=lambda x: x * 2),
        {},
        r"scalar, got shape \(12, 4\)",
    ),
    "structure": (
        dict(references={"a": jnp.zeros((1, L, 4))}),
        {},
        r"x's pytree structure",
    ),
    "alphabet_axis": (
        dict(references=jnp.zeros((1, L, 4)), hypothetical=True, alphabet_axis=2),
        {},
        r"alphabet_axis=2 is out of range",
    ),
    "hypothetical pytree": (
        dict(
            references={"a": jnp.zeros((1, L, 4))},
            hypothetical=True,
            f=lambda d: jnp.sum(d["a"]),
        ),
        {"pytree": True},
        r"hypothetical=True needs x to be one array",
    ),
}


@pytest.mark.parametrize("case", sorted(SHAP_ERRORS))
def test_bad_inputs_raise_deeplift_error_with_a_hint(case):
    kwargs, how, message = SHAP_ERRORS[case]
    kwargs = dict(kwargs)
    f = kwargs.pop("f", _cnn())
    refs = kwargs.pop("references")
    x = jnp.zeros((L, 4))
    if how.get("pytree"):
        x = {"a": x}
    with pytest.raises(deepliftjax.DeepLiftError, match=message) as e:
        deeplift_shap(f, refs, **kwargs)(x)
    assert "\nHint: " in str(e.value)
    assert isinstance(e.value, ValueError)  # DeepLiftError subclasses ValueError
