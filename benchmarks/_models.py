"""Benchmark models, built in PyTorch and in Flax linen with identical weights.

* ``genomics``: the paper's §3.2 CNN, ReLU version. Conv1d 20 filters of width 15 (valid),
  ReLU, MaxPool 50/50, Dense 200, ReLU, Dense 200, ReLU, Dense 1; input 200-bp one-hot.
* ``vgg16``: the §3.1 model. The standard VGG16 conv stack (13 conv 3x3 'same' + ReLU,
  5 max pools 2x2) on 64x64x3 images, then a smaller classifier than ImageNet's
  (Dense 512, ReLU, Dense 512, ReLU, Dense 200): after five pools the map is 2x2x512.

Torch uses NCL/NCHW, Flax NLC/NHWC; conv kernels are transposed to (*k, in, out), linear
weights to (in, out), and the first Dense's rows are permuted from torch's (C, *spatial)
flatten order to Flax's (*spatial, C).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


# ----------------------------------------------------------------------------- torch
def torch_genomics() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(4, 20, 15),
        nn.ReLU(),
        nn.MaxPool1d(50, 50),
        nn.Flatten(),
        nn.Linear(20 * 3, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 1),
    )


def torch_vgg16(n_classes: int = 200, hidden: int = 512) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU()]
            c = int(v)
    layers += [
        nn.Flatten(),
        nn.Linear(512 * 2 * 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    ]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- flax
def tiled_max_pool(x: jnp.ndarray, window: tuple[int, ...]) -> jnp.ndarray:
    """Max pooling with stride = window as reshape + max (same values as ``fnn.max_pool``).

    Its gradient is a mask instead of XLA's ``select_and_scatter_add``, much faster on CPU;
    used only for the "tuned floor" row.
    """
    n = [s // w for s, w in zip(x.shape[1:-1], window, strict=True)]
    x = x[(slice(None), *(slice(0, k * w) for k, w in zip(n, window, strict=True)))]
    split = [d for k, w in zip(n, window, strict=True) for d in (k, w)]
    x = x.reshape(x.shape[0], *split, x.shape[-1])
    return x.max(axis=tuple(range(2, 2 * len(window) + 1, 2)))


def _pool(x: jnp.ndarray, window: tuple[int, ...], tiled: bool) -> jnp.ndarray:
    return tiled_max_pool(x, window) if tiled else fnn.max_pool(x, window, window)


class FlaxGenomics(fnn.Module):
    tiled_pool: bool = False

    @fnn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # (N, 200, 4)
        x = fnn.relu(fnn.Conv(20, (15,), padding="VALID")(x))
        x = _pool(x, (50,), self.tiled_pool)
        x = x.reshape(x.shape[0], -1)
        x = fnn.relu(fnn.Dense(200)(x))
        x = fnn.relu(fnn.Dense(200)(x))
        return fnn.Dense(1)(x)


class FlaxVGG16(fnn.Module):
    n_classes: int = 200
    hidden: int = 512
    tiled_pool: bool = False

    @fnn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # (N, 64, 64, 3)
        for v in VGG16_CFG:
            if v == "M":
                x = _pool(x, (2, 2), self.tiled_pool)
            else:
                x = fnn.relu(fnn.Conv(int(v), (3, 3), padding=((1, 1), (1, 1)))(x))
        x = x.reshape(x.shape[0], -1)
        x = fnn.relu(fnn.Dense(self.hidden)(x))
        x = fnn.relu(fnn.Dense(self.hidden)(x))
        return fnn.Dense(self.n_classes)(x)


def copy_params(model: nn.Sequential, flat_chw: tuple[int, ...]) -> dict:
    """Flax params for ``FlaxGenomics``/``FlaxVGG16`` from the matching torch model."""
    params: dict = {}
    convs = [m for m in model if isinstance(m, nn.Conv1d | nn.Conv2d)]
    denses = [m for m in model if isinstance(m, nn.Linear)]
    for i, m in enumerate(convs):
        w = m.weight.detach().numpy()
        nd = w.ndim - 2
        params[f"Conv_{i}"] = {
            "kernel": np.transpose(w, (*range(2, 2 + nd), 1, 0)),
            "bias": m.bias.detach().numpy(),
        }
    for i, m in enumerate(denses):
        w = m.weight.detach().numpy().T
        if i == 0:
            perm = np.moveaxis(np.arange(w.shape[0]).reshape(flat_chw), 0, -1).reshape(-1)
            w = w[perm]
        params[f"Dense_{i}"] = {"kernel": w, "bias": m.bias.detach().numpy()}
    return {"params": jax.tree.map(jnp.asarray, params)}


# ----------------------------------------------------------------------------- pairs
@dataclass
class Pair:
    """One model in both frameworks, with matching data and reference."""

    name: str
    torch_model: nn.Sequential
    flax_model: fnn.Module
    params: dict
    shape_torch: tuple[int, ...]  # one example, channels first
    target: int

    @property
    def shape_jax(self) -> tuple[int, ...]:
        return (*self.shape_torch[1:], self.shape_torch[0])

    def scalar_fn(self, tiled_pool: bool = False) -> Callable[[jnp.ndarray], jnp.ndarray]:
        """f(x) -> scalar output ``target`` for one channels-last example."""
        model, params, t = self.flax_model.clone(tiled_pool=tiled_pool), self.params, self.target
        return lambda x: model.apply(params, x[None])[0, t]

    def data(self, n: int, seed: int = 0) -> np.ndarray:
        """A batch in torch layout: one-hot DNA for genomics, N(0,1) pixels for VGG16."""
        rng = np.random.default_rng(seed)
        if self.name == "genomics":
            c, length = self.shape_torch
            idx = rng.integers(0, c, size=(n, length))
            return np.moveaxis(np.eye(c, dtype=np.float32)[idx], -1, 1).copy()
        return rng.normal(size=(n, *self.shape_torch)).astype(np.float32)

    def reference(self) -> np.ndarray:
        """Fixed reference in torch layout: uniform 0.25 background for DNA, zeros for images."""
        if self.name == "genomics":
            return np.full(self.shape_torch, 0.25, np.float32)
        return np.zeros(self.shape_torch, np.float32)


def make_pair(name: str, seed: int = 0) -> Pair:
    torch.manual_seed(seed)
    if name == "genomics":
        tm = torch_genomics().eval()
        return Pair(name, tm, FlaxGenomics(), copy_params(tm, (20, 3)), (4, 200), 0)
    if name == "vgg16":
        tm = torch_vgg16().eval()
        return Pair(name, tm, FlaxVGG16(), copy_params(tm, (512, 2, 2)), (3, 64, 64), 0)
    raise ValueError(name)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere), for the reports."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
