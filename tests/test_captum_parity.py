"""Parity with Captum's DeepLift on identical weights.

Each model is built once as a PyTorch ``nn.Sequential`` and converted layer by layer to
Flax linen modules with the same weights (torch conv ``NCL``/``NCHW`` becomes flax
``NLC``/``NHWC``; linear weights are transposed; the first Dense after a ``Flatten`` has
its rows permuted because torch flattens ``C,H,W`` and flax ``H,W,C``).

Findings (captum 0.9.0, torch 2.13.0, jax 0.10.2; random non-constant reference):

* Where Captum's DeepLift is correct (Linear, Conv1d/2d, ReLU, ELU, LeakyReLU, Sigmoid,
  Tanh, Softplus, non-overlapping MaxPool, AvgPool) the scores agree to < 4e-13 relative
  in float64 and both sum to delta. In float32 they agree to 1e-5 on 8 of the 11 models;
  on the other three (Sigmoid, Tanh+AvgPool, Softplus+AvgPool) Captum is 4e-5 to 7.7e-4
  from its own float64 result (its Rescale divides Δy/Δx in float32 for any |Δx| > 1e-10)
  while deepliftjax stays within 1e-5 of float64. So parity is asserted in float64
  (``jax.enable_x64`` locally), and float32 accuracy separately.
* Captum's MaxPool rule credits ``max(o, o_ref) - o_ref`` to the input's argmax and
  ``o - max(o, o_ref)`` to the reference's argmax: deepliftjax's default
  ``max_rule="cross"``; ``"paper"`` and ``"gradient"`` do not match it.
* But Captum applies that rule only when the pool is not fed directly by a hooked
  activation: for Conv -> ReLU -> MaxPool (the genomics CNN and VGG16) its scores are the
  plain gradient through the pool (= deepliftjax ``max_rule="gradient"``) and do not sum
  to delta.
* Overlapping max pooling: Captum's ``max_unpool`` keeps one credit per position instead
  of the sum, so it does not sum to delta. PReLU: Captum has no rule and uses the gradient.
  In both, deepliftjax sums to delta to 1e-10.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
pytest.importorskip("captum")
jax = pytest.importorskip("jax")

import flax.linen as fnn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from captum.attr import DeepLift  # noqa: E402
from torch import nn  # noqa: E402

import deepliftjax  # noqa: E402

RTOL = 1e-5

Layer = tuple[Callable[..., jnp.ndarray], dict | None]


# --------------------------------------------------------------------------- conversion
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _flat_perm(chw: tuple[int, ...]) -> np.ndarray:
    """Index map from flax (spatial..., C) flatten order to torch (C, spatial...) order."""
    idx = np.arange(int(np.prod(chw))).reshape(chw)  # torch order
    return np.moveaxis(idx, 0, -1).reshape(-1)


def torch_to_flax(model: nn.Sequential, in_shape: tuple[int, ...]) -> list[Layer]:
    """Convert a torch ``Sequential`` (input shape ``in_shape`` = (C, *spatial)) to Flax layers.

    Returns a list of ``(apply, params)`` pairs; ``apply(params, x)`` acts on a channels-last
    batch. Modules without parameters become plain functions with ``params=None``.
    """
    layers: list[Layer] = []
    x = torch.zeros((1, *in_shape), dtype=next(model.parameters()).dtype)
    flat_from: tuple[int, ...] | None = None
    for mod in model:
        shape_in = tuple(x.shape[1:])
        x = mod(x)
        if isinstance(mod, nn.Linear):
            w = _np(mod.weight).T  # (in, out)
            if flat_from is not None:
                w = w[_flat_perm(flat_from)]
                flat_from = None
            d = fnn.Dense(mod.out_features)
            layers.append((d.apply, {"params": {"kernel": w, "bias": _np(mod.bias)}}))
        elif isinstance(mod, nn.Conv1d | nn.Conv2d):
            nd = mod.weight.ndim - 2
            w = np.transpose(_np(mod.weight), (*range(2, 2 + nd), 1, 0))  # (*k, in, out)
            pad = [(p, p) for p in mod.padding]
            c = fnn.Conv(mod.out_channels, mod.kernel_size, strides=mod.stride, padding=pad)
            layers.append((c.apply, {"params": {"kernel": w, "bias": _np(mod.bias)}}))
        elif isinstance(mod, nn.PReLU):
            p = fnn.PReLU()
            a = _np(mod.weight).reshape(())
            layers.append((p.apply, {"params": {"negative_slope": a}}))
        elif isinstance(mod, nn.Flatten):
            flat_from = shape_in
            layers.append((lambda _, h: h.reshape(h.shape[0], -1), None))
        else:
            act = _activation(mod)
            layers.append((lambda _, h, fn=act: fn(h), None))
    return layers


def _activation(mod: nn.Module) -> Callable[[jnp.ndarray], jnp.ndarray]:
    if isinstance(mod, nn.ReLU):
        return fnn.relu
    if isinstance(mod, nn.ELU):
        return partial(fnn.elu, alpha=mod.alpha)
    if isinstance(mod, nn.LeakyReLU):
        return partial(fnn.leaky_relu, negative_slope=mod.negative_slope)
    if isinstance(mod, nn.Sigmoid):
        return fnn.sigmoid
    if isinstance(mod, nn.Tanh):
        return fnn.tanh
    if isinstance(mod, nn.Softplus):
        assert mod.beta == 1  # torch is linear above `threshold`; keep activations below it
        return fnn.softplus
    if isinstance(mod, nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d):
        nd = 1 if isinstance(mod, nn.MaxPool1d | nn.AvgPool1d) else 2
        k, s = (_tuple(v, nd) for v in (mod.kernel_size, mod.stride))
        pool = fnn.max_pool if isinstance(mod, nn.MaxPool1d | nn.MaxPool2d) else fnn.avg_pool
        return partial(pool, window_shape=k, strides=s)
    raise NotImplementedError(type(mod).__name__)


def _tuple(v: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    return (v,) * nd if isinstance(v, int) else tuple(v)


def to_channels_last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1)


def jax_scalar_fn(layers: list[Layer], target: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """``f(x)`` for one unbatched channels-last example, returning output ``target``."""

    def f(x: jnp.ndarray) -> jnp.ndarray:
        h = x[None]
        for apply, params in layers:
            h = apply(params, h)
        return h[0, target]

    return f


# --------------------------------------------------------------------------- harness
def captum_scores(
    model: nn.Module, x: np.ndarray, ref: np.ndarray, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Captum DeepLift contributions (torch layout) and per-example summation residuals."""
    xt = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(np.broadcast_to(ref, x.shape).copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, delta = DeepLift(model).attribute(
            xt, baselines=rt, target=target, return_convergence_delta=True
        )
    return _np(c), _np(delta)


def jax_scores(
    layers: list[Layer], x: np.ndarray, ref: np.ndarray, target: int, **kw: object
) -> tuple[np.ndarray, np.ndarray]:
    """deepliftjax contributions (converted back to torch layout) and summation residuals."""
    f = jax_scalar_fn(layers, target)
    if kw.get("max_rule", "cross") != "cross":
        kw = {"check": None, **kw}  # not exact (Captum's reading): the guard would report it
    xj, rj = jnp.asarray(to_channels_last(x)), jnp.asarray(to_channels_last(ref[None])[0])
    c = jax.jit(jax.vmap(deepliftjax.deeplift(f, rj, **kw)))(xj)
    delta = jax.jit(lambda xs: jax.vmap(f)(xs) - f(rj))(xj)  # compiled, not op by op
    resid = np.asarray(c).reshape(len(x), -1).sum(1) - np.asarray(delta)
    return np.moveaxis(np.asarray(c), -1, 1), resid


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# --------------------------------------------------------------------------- models
def _dense(act: Callable[[], nn.Module]) -> Callable[[], nn.Sequential]:
    return lambda: nn.Sequential(nn.Linear(12, 16), act(), nn.Linear(16, 8), act(), nn.Linear(8, 3))


# No max pool directly follows or precedes a hooked nonlinearity: see
# test_captum_drops_its_maxpool_rule_after_an_activation for what Captum does then.
MODELS: dict[str, tuple[Callable[[], nn.Sequential], tuple[int, ...]]] = {
    "linear": (lambda: nn.Sequential(nn.Linear(12, 5), nn.Linear(5, 3)), (12,)),
    "dense_relu": (_dense(nn.ReLU), (12,)),
    "dense_elu": (_dense(nn.ELU), (12,)),
    "dense_leakyrelu": (_dense(lambda: nn.LeakyReLU(0.1)), (12,)),
    "dense_sigmoid": (_dense(nn.Sigmoid), (12,)),
    "dense_tanh": (_dense(nn.Tanh), (12,)),
    "dense_softplus": (_dense(nn.Softplus), (12,)),
    "conv1d_maxpool_elu": (
        lambda: nn.Sequential(
            nn.Conv1d(4, 6, 5),
            nn.MaxPool1d(4, 4),
            nn.Conv1d(6, 6, 1),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(6 * 5, 10),
            nn.ReLU(),
            nn.Linear(10, 2),
        ),
        (4, 24),
    ),
    "conv1d_tanh_avgpool": (
        lambda: nn.Sequential(
            nn.Conv1d(4, 6, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool1d(3, 3),
            nn.Flatten(),
            nn.Linear(6 * 6, 2),
        ),
        (4, 18),
    ),
    "conv2d_maxpool_sigmoid": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(5, 4, 3),
            nn.Sigmoid(),
            nn.Flatten(),
            nn.Linear(4 * 2 * 2, 3),
        ),
        (3, 8, 8),
    ),
    "conv2d_softplus_avgpool": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.Softplus(),
            nn.AvgPool2d(2, 2),
            nn.Conv2d(4, 4, 2),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(4 * 2 * 2, 3),
        ),
        (3, 8, 8),
    ),
}


def _setup(
    name: str, n: int = 8, seed: int = 0, dtype: type = np.float64
) -> tuple[nn.Module, list[Layer], np.ndarray, np.ndarray]:
    """Torch model, its Flax twin, a batch and a (non-constant) reference, all in ``dtype``."""
    build, shape = MODELS[name]
    return _build(build, shape, n, seed, dtype)


def _build(
    build: Callable[[], nn.Sequential],
    shape: tuple[int, ...],
    n: int,
    seed: int,
    dtype: type = np.float64,
) -> tuple[nn.Module, list[Layer], np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    model = build().eval().to(torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(dtype)
    ref = (0.3 * rng.normal(size=shape)).astype(dtype)
    return model, torch_to_flax(model, shape), x, ref


def _relative_residual(resid: np.ndarray, c: np.ndarray) -> float:
    """Largest |sum C - Δf| over the batch, relative to the largest sum |C|."""
    return float(np.abs(resid).max() / np.abs(c).reshape(len(c), -1).sum(1).max())


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(MODELS))
def test_scores_match_captum(name: str) -> None:
    """Same weights, same scores; both sum to delta. Float64 on both sides (see next test)."""
    with jax.enable_x64(True):
        model, layers, x, ref = _setup(name)
        c_captum, resid_captum = captum_scores(model, x, ref, 1)
        c_ours, resid_ours = jax_scores(layers, x, ref, 1)
    assert c_ours.dtype == np.float64
    assert c_ours.shape == c_captum.shape
    assert rel_err(c_ours, c_captum) < RTOL  # measured: < 4e-13
    assert _relative_residual(resid_ours, c_ours) < 1e-10
    assert _relative_residual(resid_captum, c_captum) < 1e-10


@pytest.mark.parametrize("name", list(MODELS))
def test_float32_close_to_float64(name: str) -> None:
    """Float32: the Flax twin matches torch (outputs, gradients) to 1e-5; deepliftjax's scores
    stay within 3e-5 of its float64 scores; Captum's may not.

    Captum's Rescale computes Δy/Δx in float32 for every |Δx| > 1e-10 and so loses digits
    where Δx is small (measured on dense_sigmoid: 7.7e-4 from its own float64 result;
    deepliftjax 9e-6). Hence the float64 parity test above; here the float32 scores of the
    two must still agree to 2e-3.
    """
    model, layers, x, ref = _setup(name, dtype=np.float32)
    # The Flax twin is the same function as the torch model: outputs and gradients.
    xt = torch.tensor(x, requires_grad=True)
    out = model(xt)
    out[:, 1].sum().backward()
    f = jax_scalar_fn(layers, 1)
    xj = jnp.asarray(to_channels_last(x))
    assert rel_err(np.asarray(jax.jit(jax.vmap(f))(xj)), _np(out[:, 1])) < RTOL
    g = np.moveaxis(np.asarray(jax.jit(jax.vmap(jax.grad(f)))(xj)), -1, 1)
    assert rel_err(g, _np(xt.grad)) < RTOL

    c32, _ = jax_scores(layers, x, ref, 1)
    c_captum32, _ = captum_scores(model, x, ref, 1)
    with jax.enable_x64(True):
        _, layers64, x64, ref64 = _setup(name)
        c64, _ = jax_scores(layers64, x64, ref64, 1)
    assert c32.dtype == np.float32
    assert rel_err(c32, c64) < 3e-5
    assert rel_err(c32, c_captum32) < 2e-3


def test_captum_maxpool_is_the_cross_max_rule() -> None:
    """Of deepliftjax's max_rule options only the default "cross" reproduces Captum's MaxPool."""
    with jax.enable_x64(True):
        model, layers, x, ref = _setup("conv1d_maxpool_elu", n=16)
        c_captum, _ = captum_scores(model, x, ref, 0)
        errs = {
            rule: rel_err(jax_scores(layers, x, ref, 0, max_rule=rule)[0], c_captum)
            for rule in ("cross", "paper", "gradient")
        }
    assert errs["cross"] < RTOL, errs
    assert errs["paper"] > 1e-2, errs
    assert errs["gradient"] > 1e-2, errs


# ------------------------------------------------------------------ documented differences
def test_captum_drops_its_maxpool_rule_after_an_activation() -> None:
    """Conv -> ReLU -> MaxPool (the genomics CNN's and VGG16's pattern): Captum's scores are
    the plain gradient through the pool and do not sum to delta.

    Captum hooks both modules on the tensor between them; the ReLU's hook records the
    gradient there before the MaxPool's hook replaces it, so the pool's multiplier is lost.
    deepliftjax's default sums to delta; its ``max_rule="gradient"`` reproduces Captum.
    """
    build = lambda: nn.Sequential(  # noqa: E731
        nn.Conv1d(4, 6, 5),
        nn.ReLU(),
        nn.MaxPool1d(4, 4),
        nn.Flatten(),
        nn.Linear(6 * 5, 10),
        nn.ReLU(),
        nn.Linear(10, 2),
    )
    with jax.enable_x64(True):
        model, layers, x, ref = _build(build, (4, 24), 16, 0)
        c_captum, resid_captum = captum_scores(model, x, ref, 0)
        c_ours, resid_ours = jax_scores(layers, x, ref, 0)
        c_grad, _ = jax_scores(layers, x, ref, 0, max_rule="gradient")
    assert rel_err(c_grad, c_captum) < RTOL
    assert rel_err(c_ours, c_captum) > 1e-2
    assert _relative_residual(resid_ours, c_ours) < 1e-10
    assert _relative_residual(resid_captum, c_captum) > 1e-3


def test_overlapping_maxpool_differs_and_only_deepliftjax_sums_to_delta() -> None:
    """Overlapping windows share argmaxes: Captum's ``max_unpool`` keeps one window's credit
    where deepliftjax's cross-max rule adds them up."""
    build = lambda: nn.Sequential(  # noqa: E731
        nn.Conv1d(2, 4, 3), nn.MaxPool1d(4, stride=1), nn.Flatten(), nn.Linear(4 * 11, 1)
    )
    with jax.enable_x64(True):
        model, layers, x, ref = _build(build, (2, 16), 16, 1)
        c_captum, resid_captum = captum_scores(model, x, ref, 0)
        c_ours, resid_ours = jax_scores(layers, x, ref, 0)
    assert _relative_residual(resid_ours, c_ours) < 1e-10
    assert _relative_residual(resid_captum, c_captum) > 1e-2
    assert rel_err(c_ours, c_captum) > 1e-2


def test_prelu_differs_and_only_deepliftjax_sums_to_delta() -> None:
    """Captum has no rule for ``nn.PReLU``: it uses the gradient (treats PReLU as linear)."""
    build = lambda: nn.Sequential(nn.Linear(10, 16), nn.PReLU(init=0.2), nn.Linear(16, 1))  # noqa: E731
    with jax.enable_x64(True):
        model, layers, x, ref = _build(build, (10,), 16, 2)
        c_captum, resid_captum = captum_scores(model, x, ref, 0)
        c_ours, resid_ours = jax_scores(layers, x, ref, 0)
    assert _relative_residual(resid_ours, c_ours) < 1e-10
    assert _relative_residual(resid_captum, c_captum) > 1e-2
    assert rel_err(c_ours, c_captum) > 1e-2
