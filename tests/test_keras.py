"""Keras 3 models on the JAX backend attributed as they are: ``deepliftjax.keras.from_keras``.

A DNA CNN (Conv1D, inference BatchNormalization with set statistics, ReLU, MaxPooling1D,
Dense) sums to delta, plain, jitted and vmapped, and equals the same network written in
Flax with the same weights (outputs and DeepLIFT scores); a legacy ``.h5`` round trip gives
the same function; a small ChromBPNet-style model (dilated residual Conv1D stack, cropping,
profile and counts heads) sums to delta for both heads and, per reference, under
DeepLIFT-SHAP with dinucleotide shuffles; the errors for another backend, an unbuilt model
and a non-Keras argument. All in float32 (see ``TOL``).
"""

from __future__ import annotations

import doctest
import functools
import os

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

L, LC, N, K = 64, 100, 3, 4
# float32: on the JAX backend Keras's type promotion maps float64 to float32
# (keras.backend.result_type("float64", "float64") is "float32"), so a float64 Keras model
# still computes BatchNormalization and other promoted ops in float32
TOL = 1e-5


def _onehot(seed: int, n: int, length: int) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.eye(4)[rng.integers(0, 4, (n, length))], jnp.float32)


def _randomise(model: keras.Model, seed: int) -> keras.Model:
    """Random weights, BatchNormalization statistics and affine terms: no layer is trivial.

    The models are built with zero initialisers, which is fast; Keras's random ones
    compile one JAX program per weight shape.
    """
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name, shape = v.path.rsplit("/", 1)[-1], tuple(v.shape)
        if name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.3, shape)
        v.assign(value.astype(v.dtype))
    return model


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _summation(f, c, xs, refs) -> float:
    """Worst ``|sum(C) - Δf| / (|Δf| + 0.1 |f|)`` over a batch (``refs`` one per example).

    Relative to the delta, plus a tenth of f's own size: float32 rounds f(x) and f(ref)
    themselves at ~6e-8 of their size, more than 1e-5 of a delta under 1% of f (the counts
    head of a model against dinucleotide shuffles of its input).
    """
    fx, fr = np.asarray(jax.vmap(f)(xs), np.float64), np.asarray(jax.vmap(f)(refs), np.float64)
    total = np.asarray(c, np.float64).reshape(len(xs), -1).sum(1)
    scale = np.abs(fx - fr) + 0.1 * np.maximum(np.abs(fx), np.abs(fr))
    return float(np.max(np.abs(total - (fx - fr)) / scale))


def test_docstring_example():
    result = doctest.testmod(dlkeras, raise_on_error=False, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


# ---------------------------------------------------------------- a DNA CNN, and Flax
@pytest.fixture(scope="module")
def dna() -> keras.Model:
    """Conv1D (even width, "same") - inference BN - ReLU - MaxPool - Conv1D - Dense."""
    z = dict(kernel_initializer="zeros")
    model = keras.Sequential(
        [
            keras.Input((L, 4)),
            keras.layers.Conv1D(8, 6, padding="same", **z),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling1D(4),
            keras.layers.Conv1D(6, 3, padding="valid", activation="relu", **z),
            keras.layers.Flatten(),
            keras.layers.Dense(3, **z),
        ]
    )
    return _randomise(model, 0)


class _FlaxDNA(nn.Module):
    """The same network in Flax (Keras's BN epsilon, 1e-3, set explicitly)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (6,), padding="SAME")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (4,), strides=(4,))
        x = nn.relu(nn.Conv(6, (3,), padding="VALID")(x))
        x = x.reshape(x.shape[:-2] + (-1,))
        return nn.Dense(3)(x)


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


def test_dna_cnn_sums_to_delta(dna):
    fn, params = from_keras(dna, batched=True)
    xs = _onehot(1, N, L)
    # the batched function is the model itself
    assert _rel(fn(params, xs), dna(xs)) < 1e-6
    f = lambda xi: fn(params, xi[None])[0, 1]  # noqa: E731 - one example, one logit
    ref = jnp.full((L, 4), 0.25)
    refs = jnp.broadcast_to(ref, xs.shape)
    plain = deeplift(f, ref)(xs[0])
    jitted = jax.jit(deeplift(f, ref))(xs[0])
    vmapped = jax.jit(jax.vmap(deeplift(f, ref)))(xs)
    assert _summation(f, plain[None], xs[:1], refs[:1]) < TOL
    assert _summation(f, jitted[None], xs[:1], refs[:1]) < TOL
    assert _summation(f, vmapped, xs, refs) < TOL
    assert _rel(jitted, plain) < TOL and _rel(vmapped[0], plain) < TOL
    # the weights as a traced argument of a jitted function, as in a training loop
    fn1, _ = from_keras(dna, batched=False)
    by_arg = jax.jit(jax.vmap(lambda p, x: deeplift(lambda xi: fn1(p, xi)[1], ref)(x), (None, 0)))
    assert _rel(by_arg(params, xs), vmapped) < TOL
    # not a linear model: the scores differ from gradient x (input - reference)
    grad = jax.vmap(jax.grad(f))(xs) * (xs - refs)
    assert _rel(vmapped, grad) > 1e-2


def test_dna_cnn_equals_flax(dna):
    fn, params = from_keras(dna, batched=False)
    flax_model, variables = _FlaxDNA(), _flax_variables(dna)
    xs = _onehot(3, N, L)
    flax_out = flax_model.apply(variables, xs)
    assert _rel(jax.vmap(lambda x: fn(params, x))(xs), flax_out) < TOL
    assert _rel(dna(xs), flax_out) < TOL
    assert float(jnp.abs(flax_out).min()) > 1e-2

    ref = jnp.full((L, 4), 0.25)

    @jax.jit
    def scores(x):
        ck = [deeplift(lambda x, j=j: fn(params, x)[j], ref)(x) for j in range(3)]
        cf = [deeplift(lambda x, j=j: flax_model.apply(variables, x)[j], ref)(x) for j in range(3)]
        return jnp.stack(ck), jnp.stack(cf)

    ck, cf = jax.vmap(scores)(xs)
    assert _rel(ck, cf) < TOL
    assert float(jnp.abs(ck).max()) > 1e-2  # the comparison is not of zeros


# Keras's saving converts its variables through numpy's pre-2.0 __array__ protocol
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_legacy_h5_round_trip(dna, tmp_path):
    """A model saved in the legacy ``.h5`` format and reloaded with ``compile=False`` (as
    from_keras's Notes advise for ChromBPNet's files) gives the same function."""
    model = keras.models.clone_model(dna)
    model.set_weights(dna.get_weights())
    model.compile(optimizer="adam", loss="mse")  # a training configuration in the file
    path = str(tmp_path / "dna.h5")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    fn, params = from_keras(model, batched=True)
    fn2, params2 = from_keras(loaded, batched=True)
    # every variable, BatchNormalization's statistics included, in the same order
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
    xs = _onehot(11, N, L)
    np.testing.assert_array_equal(jax.jit(fn)(params, xs), jax.jit(fn2)(params2, xs))


# ---------------------------------------------------------------- ChromBPNet-style
@pytest.fixture(scope="module")
def chrombpnet() -> keras.Model:
    """A ChromBPNet-shaped model: dilated residual Conv1D stack, cropping, two heads."""
    z, filters = dict(kernel_initializer="zeros"), 8
    inp = keras.Input((LC, 4), name="sequence")
    h = keras.layers.Conv1D(filters, 9, activation="relu", name="bpnet_1st_conv", **z)(inp)
    for i, d in enumerate((1, 2, 4, 8), start=1):
        conv = keras.layers.Conv1D(
            filters, 3, dilation_rate=d, activation="relu", name=f"bpnet_{i}conv", **z
        )(h)
        crop = (h.shape[1] - conv.shape[1]) // 2
        h = keras.layers.Add(name=f"add_{i}")([keras.layers.Cropping1D(crop)(h), conv])
    prof = keras.layers.Conv1D(1, 15, name="prof_out_precrop", **z)(h)  # (None, 48, 1)
    prof = keras.layers.Cropping1D(8, name="logits_profile_crop")(prof)
    prof = keras.layers.Flatten(name="logits_profile_predictions")(prof)  # (None, 32)
    counts = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    counts = keras.layers.Dense(1, name="logcount_predictions", **z)(counts)
    return _randomise(keras.Model(inp, [prof, counts]), 4)


@pytest.fixture(scope="module")
def dna_batch() -> tuple[jax.Array, jax.Array]:
    """``N`` one-hot sequences and ``K`` dinucleotide shuffles of each, ``(N, K, LC, 4)``."""
    xs = _onehot(5, N, LC)
    keys = jax.random.split(jax.random.key(6), N)
    gen = functools.partial(dinuc_shuffle, num_shuffles=K)
    return xs, jax.jit(jax.vmap(gen))(keys, xs)


def _heads(fn, params):
    """The counts head and bpnet's profile target ``sum(stop_gradient(softmax(z)) * z)``."""

    def counts(x):
        return fn(params, x)[1][0]

    def profile(x):
        z = fn(params, x)[0]
        return jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(z)) * z)

    return {"counts": counts, "profile": profile}


def test_chrombpnet_heads_sum_to_delta(chrombpnet, dna_batch):
    fn, params = from_keras(chrombpnet, batched=False)
    xs, refs = dna_batch[0], dna_batch[1][:, 0]  # one shuffle per example
    outs = jax.jit(jax.vmap(fn, (None, 0)))(params, xs)
    assert [o.shape for o in outs] == [(N, 32), (N, 1)]
    assert all(_rel(o, w) < 1e-6 for o, w in zip(outs, chrombpnet(xs), strict=True))
    heads = _heads(fn, params)

    def both(x, r):
        return {name: deeplift(f, r)(x) for name, f in heads.items()}

    plain = both(xs[0], refs[0])
    jitted = jax.jit(both)(xs[0], refs[0])
    vmapped = jax.jit(jax.vmap(both))(xs, refs)
    for name, f in heads.items():
        assert _summation(f, plain[name][None], xs[:1], refs[:1]) < TOL, name
        assert _summation(f, jitted[name][None], xs[:1], refs[:1]) < TOL, name
        assert _summation(f, vmapped[name], xs, refs) < TOL, name
        assert _rel(jitted[name], plain[name]) < TOL, name
        assert _rel(vmapped[name][0], plain[name]) < TOL, name


def test_chrombpnet_deeplift_shap_per_reference(chrombpnet, dna_batch):
    fn, params = from_keras(chrombpnet, batched=False)
    heads = _heads(fn, params)
    xs, refs = dna_batch

    @jax.jit
    @jax.vmap
    def shap(x, rs):
        return {name: deeplift_shap(f, rs, return_residuals=True)(x) for name, f in heads.items()}

    scores = shap(xs, refs)
    for name, f in heads.items():
        fx = np.asarray(jax.vmap(f)(xs), np.float64)
        frefs = np.asarray(jax.vmap(jax.vmap(f))(refs), np.float64)  # (N, K)
        deltas = fx[:, None] - frefs
        scale = np.abs(deltas) + 0.1 * np.maximum(np.abs(fx)[:, None], np.abs(frefs))
        # every reference's scores sum to its own delta (max over k of |sum(C_k) - Δf_k|) ...
        assert np.all(np.asarray(scores[name].residuals) <= TOL * scale.min(1)), name
        # ... so the mean scores sum to f(x) minus the mean of f over the references
        total = np.asarray(scores[name].contributions, np.float64).reshape(N, -1).sum(1)
        assert np.all(np.abs(total - deltas.mean(1)) <= TOL * scale.mean(1)), name
        assert float(np.abs(total).min()) > 1e-3, name  # not a comparison of zeros


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
    fn, params = from_keras(model, batched=True)
    assert fn(params, jnp.ones((5, 3))).shape == (5, 2)
    one, _ = from_keras(model)  # the default: one example
    assert one(params, jnp.ones(3)).shape == (2,)


def test_error_not_a_keras_model():
    with pytest.raises(DeepLiftError, match="Keras 3 model"):
        from_keras(lambda x: x)
