"""Keras 3 models on the JAX backend attributed as they are: ``deepliftjax.keras.from_keras``.

A DNA CNN (Conv1D, inference BatchNormalization with set statistics, ReLU, MaxPooling1D,
Dense) sums to delta in float64 and float32, plain, jitted and vmapped, and equals the same
network written in Flax with the same weights (outputs and DeepLIFT scores); a small
ChromBPNet-style model (dilated residual Conv1D stack, cropping, profile and counts heads)
sums to delta for both heads and under DeepLIFT-SHAP with dinucleotide shuffles; the errors
for another backend and an unbuilt model.
"""

from __future__ import annotations

import contextlib
import doctest
import functools
import os
from collections.abc import Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.parity
# Keras fixes its backend on first import; the JAX backend is the one from_keras traces
os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("keras was imported with another backend than JAX", allow_module_level=True)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import deepliftjax.keras as dlkeras  # noqa: E402
from deepliftjax import DeepLiftError, deeplift, deeplift_shap, dinuc_shuffle  # noqa: E402
from deepliftjax.keras import from_keras  # noqa: E402

L, N, K = 64, 3, 4
TOL64, TOL32 = 1e-9, 1e-5


@contextlib.contextmanager
def _precision(dtype: str) -> Iterator[None]:
    """Keras layers made and JAX run in ``dtype`` ("float64" needs x64 while in use)."""
    old = keras.config.floatx()
    with jax.enable_x64(dtype == "float64"):
        keras.config.set_floatx(dtype)
        try:
            yield
        finally:
            keras.config.set_floatx(old)


def _onehot(seed: int, n: int, length: int = L, dtype: str = "float32") -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.eye(4)[rng.integers(0, 4, (n, length))], dtype)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _summation(f, c, xs, refs) -> float:
    """Worst relative ``|sum(C) - Δf|`` over a batch (``refs`` one per example)."""
    delta = np.asarray(jax.vmap(f)(xs) - jax.vmap(f)(refs), np.float64)
    total = np.asarray(c, np.float64).reshape(len(xs), -1).sum(1)
    return float(np.max(np.abs(total - delta) / np.maximum(np.abs(delta), 1e-300)))


def test_docstring_example():
    result = doctest.testmod(dlkeras, raise_on_error=False, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


# ---------------------------------------------------------------- a DNA CNN, and Flax
def _dna_keras(seed: int) -> keras.Model:
    """Conv1D (even width, "same") - inference BN - ReLU - MaxPool - Flatten - Dense."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((L, 4)),
            keras.layers.Conv1D(8, 6, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling1D(4),
            keras.layers.Conv1D(6, 3, padding="valid", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    # inference BN must not be the identity: statistics and affine parameters by hand
    bn = model.layers[1]
    rng = np.random.default_rng(seed + 100)
    bn.moving_mean.assign(rng.normal(0.0, 0.5, 8))
    bn.moving_variance.assign(rng.uniform(0.3, 2.0, 8))
    bn.gamma.assign(rng.uniform(0.5, 1.5, 8))
    bn.beta.assign(rng.normal(0.0, 0.3, 8))
    return model


class _FlaxDNA(nn.Module):
    """The same network in Flax (Keras's BN epsilon, 1e-3, set explicitly)."""

    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.dtype)
        x = nn.Conv(8, (6,), padding="SAME", **kw)(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, **kw)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (4,), strides=(4,))
        x = nn.relu(nn.Conv(6, (3,), padding="VALID", **kw)(x))
        x = x.reshape(x.shape[:-2] + (-1,))
        return nn.Dense(3, **kw)(x)


def _flax_variables(model: keras.Model) -> dict:
    """The Keras weights in Flax's tree (Conv1D and Dense kernels share Flax's layout)."""
    conv, bn, _, _, conv2, _, dense = model.layers
    a = lambda v: jnp.asarray(v.value)  # noqa: E731
    return {
        "params": {
            "Conv_0": {"kernel": a(conv.kernel), "bias": a(conv.bias)},
            "BatchNorm_0": {"scale": a(bn.gamma), "bias": a(bn.beta)},
            "Conv_1": {"kernel": a(conv2.kernel), "bias": a(conv2.bias)},
            "Dense_0": {"kernel": a(dense.kernel), "bias": a(dense.bias)},
        },
        "batch_stats": {"BatchNorm_0": {"mean": a(bn.moving_mean), "var": a(bn.moving_variance)}},
    }


def test_dna_cnn_sums_to_delta():
    # float32 only: on the JAX backend Keras's type promotion maps float64 to float32, so
    # BatchNormalization computes in float32 even in a float64 model (see from_keras)
    with _precision("float32"):
        model = _dna_keras(0)
        fn, params = from_keras(model)
        xs = _onehot(1, N)
        # the batched function is the model itself
        assert _rel(fn(params, xs), model(xs)) < 1e-6
        f = lambda xi: fn(params, xi[None])[0, 1]  # noqa: E731 - one example, one logit
        ref = jnp.full((L, 4), 0.25)
        refs = jnp.broadcast_to(ref, xs.shape)
        plain = deeplift(f, ref)(xs[0])
        jitted = jax.jit(deeplift(f, ref))(xs[0])
        vmapped = jax.jit(jax.vmap(deeplift(f, ref)))(xs)
        assert _summation(f, plain[None], xs[:1], refs[:1]) < TOL32
        assert _summation(f, jitted[None], xs[:1], refs[:1]) < TOL32
        assert _summation(f, vmapped, xs, refs) < TOL32
        assert _rel(jitted, plain) < TOL32 and _rel(vmapped[0], plain) < TOL32
        # the weights as a traced argument of a jitted function, as in a training loop
        fn1, _ = from_keras(model, batched=False)
        by_arg = jax.jit(
            jax.vmap(lambda p, x: deeplift(lambda xi: fn1(p, xi)[1], ref)(x), (None, 0))
        )(params, xs)
        assert _rel(by_arg, vmapped) < TOL32
        # not a linear model: the scores differ from gradient x (input - reference)
        grad = jax.vmap(jax.grad(f))(xs) * (xs - refs)
        assert _rel(vmapped, grad) > 1e-3


def test_dna_cnn_equals_flax():
    with _precision("float32"):
        model = _dna_keras(2)
        fn, params = from_keras(model, batched=False)
        flax_model, variables = _FlaxDNA(), _flax_variables(model)
        xs = _onehot(3, N)
        keras_out = jax.vmap(lambda x: fn(params, x))(xs)
        flax_out = flax_model.apply(variables, xs)
        assert _rel(keras_out, flax_out) < 1e-5
        assert _rel(model(xs), flax_out) < 1e-5

        ref = jnp.full((L, 4), 0.25)
        for j in range(3):
            fk = lambda x, j=j: fn(params, x)[j]  # noqa: E731
            ff = lambda x, j=j: flax_model.apply(variables, x)[j]  # noqa: E731
            ck = jax.vmap(deeplift(fk, ref))(xs)
            cf = jax.vmap(deeplift(ff, ref))(xs)
            assert _rel(ck, cf) < 1e-5
            assert float(jnp.abs(ck).max()) > 1e-3  # the comparison is not of zeros


# ---------------------------------------------------------------- ChromBPNet-style
LC = 100


def _chrombpnet_keras(seed: int, filters: int = 8) -> keras.Model:
    """A ChromBPNet-shaped model: dilated residual Conv1D stack, cropping, two heads."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((LC, 4), name="sequence")
    h = keras.layers.Conv1D(filters, 9, activation="relu", name="bpnet_1st_conv")(inp)
    for i, d in enumerate((1, 2, 4, 8), start=1):
        conv = keras.layers.Conv1D(
            filters, 3, dilation_rate=d, activation="relu", name=f"bpnet_{i}conv"
        )(h)
        crop = (h.shape[1] - conv.shape[1]) // 2
        h = keras.layers.Add(name=f"add_{i}")([keras.layers.Cropping1D(crop)(h), conv])
    prof = keras.layers.Conv1D(1, 15, name="prof_out_precrop")(h)  # (None, 48, 1)
    prof = keras.layers.Cropping1D(8, name="logits_profile_crop")(prof)
    prof = keras.layers.Flatten(name="logits_profile_predictions")(prof)  # (None, 32)
    counts = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    counts = keras.layers.Dense(1, name="logcount_predictions")(counts)
    return keras.Model(inp, [prof, counts])


def _heads(fn, params):
    """The counts head and bpnet's profile target ``sum(stop_gradient(softmax(z)) * z)``."""

    def counts(x):
        return fn(params, x)[1][0]

    def profile(x):
        z = fn(params, x)[0]
        return jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(z)) * z)

    return {"counts": counts, "profile": profile}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chrombpnet_heads_sum_to_delta(dtype):
    with _precision(dtype):
        model = _chrombpnet_keras(4)
        fn, params = from_keras(model, batched=False)
        xs = _onehot(5, N, LC, dtype)
        outs = jax.vmap(lambda x: fn(params, x))(xs)
        want = model(xs)
        assert [o.shape for o in outs] == [(N, 32), (N, 1)]
        assert all(_rel(o, w) < 1e-6 for o, w in zip(outs, want, strict=True))
        keys = jax.random.split(jax.random.key(6), N)
        refs = jax.vmap(dinuc_shuffle)(keys, xs)  # one shuffle per example
        tol = TOL64 if dtype == "float64" else TOL32
        for name, f in _heads(fn, params).items():
            plain = deeplift(f, refs[0])(xs[0])
            jitted = jax.jit(deeplift(f, refs[0]))(xs[0])
            vmapped = jax.jit(jax.vmap(lambda x, r, f=f: deeplift(f, r)(x)))(xs, refs)
            assert _summation(f, plain[None], xs[:1], refs[:1]) < tol, name
            assert _summation(f, jitted[None], xs[:1], refs[:1]) < tol, name
            assert _summation(f, vmapped, xs, refs) < tol, name
            assert _rel(jitted, plain) < tol and _rel(vmapped[0], plain) < tol, name


@pytest.mark.parametrize("head", ["counts", "profile"])
def test_chrombpnet_deeplift_shap_per_reference(head):
    with _precision("float64"):
        model = _chrombpnet_keras(7)
        fn, params = from_keras(model, batched=False)
        f = _heads(fn, params)[head]
        xs = _onehot(8, N, LC, "float64")
        keys = jax.random.split(jax.random.key(9), N)
        gen = functools.partial(dinuc_shuffle, num_shuffles=K)

        def shap(x, key):
            return deeplift_shap(f, gen, key=key, return_residuals=True, reference_chunk_size=2)(x)

        scores = jax.jit(jax.vmap(shap))(xs, keys)
        refs = jax.vmap(gen)(keys, xs)  # (N, K, LC, 4): the references the generator drew
        fx = jax.vmap(f)(xs)
        frefs = jax.vmap(jax.vmap(f))(refs)  # (N, K)
        # every reference's scores sum to its own delta ...
        deltas = np.abs(np.asarray(fx[:, None] - frefs))
        assert np.all(np.asarray(scores.residuals) <= TOL64 * deltas.max(1))
        # ... so the mean scores sum to f(x) minus the mean over references
        total = np.asarray(scores.contributions).reshape(N, -1).sum(1)
        mean_delta = np.asarray(fx - frefs.mean(1))
        assert np.max(np.abs(total - mean_delta) / np.abs(mean_delta)) < TOL64
        # and equal the mean of per-reference DeepLIFT
        each = jax.vmap(lambda x, rs: jax.vmap(lambda r: deeplift(f, r)(x))(rs).mean(0))(xs, refs)
        assert _rel(scores.contributions, each) < TOL64


# ---------------------------------------------------------------- errors
def test_error_other_backend(monkeypatch):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(DeepLiftError, match="KERAS_BACKEND=jax") as info:
        from_keras(model)
    assert "'tensorflow'" in str(info.value)


def test_error_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(DeepLiftError, match="not built") as info:
        from_keras(model)
    assert "model.build" in str(info.value) and "keras.Input" in str(info.value)
    model.build((None, 3))  # the hint's fix works
    fn, params = from_keras(model)
    assert fn(params, jnp.ones((5, 3))).shape == (5, 2)


def test_error_not_a_keras_model():
    with pytest.raises(DeepLiftError, match="Keras 3 model"):
        from_keras(lambda x: x)
