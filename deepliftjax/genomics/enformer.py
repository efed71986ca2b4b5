"""An Enformer-style model in Flax, written as the published implementations write it.

Avsec et al. 2021 (Enformer) and its ports (enformer-pytorch, Borzoi): a convolutional
stem, a convolutional tower that halves the length at every stage with **attention
pooling** (a softmax over each window's logits, times the window's values), transformer
blocks whose attention has **relative positional bias** (Enformer's exponential,
central-mask and gamma basis functions of the distance, with content and position biases
and the Transformer-XL relative shift), GELU (``x * sigmoid(1.702 x)``), BatchNorm (in
inference mode) and LayerNorm, cropping to a target length, a pointwise block and a
softplus head. Nothing is rewritten for attribution: :func:`deepliftjax.deeplift` and
:func:`deepliftjax.deeplift_shap` run on it as it is, and the scores sum to delta.

Inputs are one-hot ``(length, 4)`` (or batched ``(batch, length, 4)``); the output is
``(out_length, num_outputs)`` with ``out_length = length / 2**(1 + tower_layers) - 2 *
crop``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = Enformer(channels=16, num_heads=2, transformer_layers=1, tower_layers=2, crop=2)
  >>> x = jax.nn.one_hot(jnp.arange(256) % 4, 4)
  >>> variables = m.init(jax.random.key(0), x)
  >>> m.apply(variables, x).shape
  (28, 1)
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

from deepliftjax._errors import error

__all__ = [
    "Enformer",
    "AttentionPool",
    "RelativeMultiHeadAttention",
    "positional_features",
    "scanned_variables",
]


def gelu(x: jax.Array) -> jax.Array:
    """Enformer's GELU approximation, ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


def positional_features(length: int, num_features: int) -> np.ndarray:
    """Enformer's relative position features of the distances ``-(length-1) .. length-1``.

    Exponential, central-mask and gamma bases (``num_features // 6`` each), then the same
    times ``sign(distance)``: ``(2 * length - 1, 6 * (num_features // 6))``. Constants.

    Example:
      >>> positional_features(4, 12).shape
      (7, 12)
    """
    n = num_features // 6
    d = np.arange(-length + 1, length, dtype=np.float64)
    a = np.abs(d)[:, None]
    max_range = math.log(length) / math.log(2.0)
    half_life = 2 ** np.linspace(3.0, max(max_range, 3.0), n)
    exponential = np.exp(-math.log(2.0) / half_life * a)
    central = (2.0 ** np.arange(1, n + 1) - 1 > a).astype(np.float64)
    stddev, start = length / (2 * n), length / n
    mean = np.linspace(start, length, n)[None]
    conc, rate = (mean / stddev) ** 2, mean / stddev**2
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogy = np.where(a == 0, 0.0, (conc - 1) * np.log(np.where(a == 0, 1.0, a)))
    log_p = xlogy - rate * a - (gammaln(conc) - conc * np.log(rate))
    gamma = np.exp(log_p) + 1e-8
    gamma = gamma / gamma.max(axis=-1, keepdims=True)
    feats = np.concatenate([exponential, central, gamma], axis=-1)
    return np.concatenate([feats, np.sign(d)[:, None] * feats], axis=-1).astype(np.float32)


class AttentionPool(nn.Module):
    """Attention pooling as published: per window of ``pool_size`` positions, a softmax
    over the window of per-channel logits (a pointwise linear map initialised to
    ``2 * identity``), times the values, summed over the window."""

    pool_size: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        length, channels = x.shape[-2:]
        if length % self.pool_size:
            raise error(
                f"length {length} is not a multiple of pool_size {self.pool_size}.",
                "crop or pad the sequence to a multiple of the pooling size.",
            )
        w = x.reshape(*x.shape[:-2], length // self.pool_size, self.pool_size, channels)
        init = lambda key, shape, dtype=jnp.float32: 2.0 * jnp.eye(shape[0], dtype=dtype)  # noqa: E731
        logits = nn.Dense(channels, use_bias=False, kernel_init=init, name="to_attn_logits")(w)
        attn = jax.nn.softmax(logits, axis=-2)
        return jnp.sum(w * attn, axis=-2)


class ConvBlock(nn.Module):
    """BatchNorm (inference) - GELU - Conv, Enformer's conv block."""

    features: int
    width: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-3, name="bn")(x)
        return nn.Conv(self.features, (self.width,), padding="SAME", name="conv")(gelu(h))


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention with Enformer's relative positional bias.

    ``logits[i, j] = (q_i + u) . k_j + (q_i + v) . r(j - i)``, ``r`` a linear map of
    :func:`positional_features`, as in Transformer-XL; softmax over ``j``; values, heads
    concatenated, output projection.
    """

    num_heads: int
    key_size: int
    value_size: int
    num_rel_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, channels = x.shape[-2:]
        h, dk, dv = self.num_heads, self.key_size, self.value_size
        dense = lambda f, name, bias=False: nn.Dense(f, use_bias=bias, name=name)  # noqa: E731
        split = lambda t, d: t.reshape(*t.shape[:-1], h, d)  # noqa: E731
        q = split(dense(h * dk, "to_q")(x), dk) * dk**-0.5  # (..., n, h, dk)
        k = split(dense(h * dk, "to_k")(x), dk)
        v = split(dense(h * dv, "to_v")(x), dv)
        u = self.param("rel_content_bias", nn.initializers.normal(1.0), (h, dk))
        w = self.param("rel_pos_bias", nn.initializers.normal(1.0), (h, dk))
        pos = jnp.asarray(positional_features(n, self.num_rel_features))  # (2n-1, F)
        rel_k = split(dense(h * dk, "to_rel_k")(pos), dk)  # (2n-1, h, dk)
        content = jnp.einsum("...ihd,...jhd->...hij", q + u, k)
        rel = jnp.einsum("...ihd,mhd->...him", q + w, rel_k)  # m: distance + n - 1
        idx = np.arange(n)[None, :] - np.arange(n)[:, None] + n - 1  # (i, j) -> j - i
        rel = jnp.take_along_axis(rel, jnp.broadcast_to(idx, (*rel.shape[:-1], n)), axis=-1)
        attn = jax.nn.softmax(content + rel, axis=-1)
        out = jnp.einsum("...hij,...jhd->...ihd", attn, v).reshape(*x.shape[:-1], h * dv)
        return nn.Dense(channels, name="to_out")(out)


class TransformerBlock(nn.Module):
    num_heads: int
    num_rel_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = nn.LayerNorm(name="ln_attn")(x)
        h = RelativeMultiHeadAttention(
            self.num_heads, c // self.num_heads, c // self.num_heads, self.num_rel_features,
            name="mha",
        )(h)  # fmt: skip
        x = x + h
        h = nn.LayerNorm(name="ln_ff")(x)
        h = nn.Dense(2 * c, name="ff_in")(h)
        h = nn.Dense(c, name="ff_out")(jax.nn.relu(h))
        return x + h


class _ScannedBlock(nn.Module):
    """A transformer block as a ``scan`` body: ``(h, None) -> (h', None)``."""

    num_heads: int
    num_rel_features: int

    @nn.compact
    def __call__(self, h: jax.Array, _: None) -> tuple[jax.Array, None]:
        return TransformerBlock(self.num_heads, self.num_rel_features, name="block")(h), None


class Enformer(nn.Module):
    """Enformer-style model (see the module docstring).

    Attributes:
      channels: transformer width (Enformer: 1536); the stem has ``channels // 2``.
      num_heads: attention heads (Enformer: 8).
      transformer_layers: transformer blocks (Enformer: 11).
      tower_layers: conv tower stages, each halving the length (Enformer: 6).
      crop: positions cropped from each end after the transformer (Enformer: 320 of 1536
        at 196,608 bp).
      num_outputs: output tracks (softplus).
      num_rel_features: relative position features (default ``channels // num_heads``).
      remat: checkpoint the model as long-context training does: the transformer blocks
        run as one ``nn.scan`` over ``nn.remat`` blocks (their parameters stacked under
        ``"transformer"``, see :func:`scanned_variables`), and every conv block and
        attention pool, the stem's included, under ``nn.remat`` (same parameters as the
        plain model). Outputs equal the plain
        model's; activation memory, under the gradient and under DeepLIFT alike (its
        pass keeps ``jax.checkpoint``), is that of the scan's carries plus one block.
    """

    channels: int = 1536
    num_heads: int = 8
    transformer_layers: int = 11
    tower_layers: int = 6
    crop: int = 320
    num_outputs: int = 1
    num_rel_features: int | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        half = self.channels // 2
        conv_block = nn.remat(ConvBlock) if self.remat else ConvBlock
        pool = nn.remat(AttentionPool) if self.remat else AttentionPool
        h = nn.Conv(half, (15,), padding="SAME", name="stem_conv")(x)
        h = h + conv_block(half, 1, name="stem_res")(h)
        h = pool(2, name="stem_pool")(h)
        widths = np.linspace(half, self.channels, self.tower_layers + 1)[1:]
        for i, f in enumerate(widths):
            h = conv_block(int(round(f)), 5, name=f"tower_conv_{i}")(h)
            h = h + conv_block(int(round(f)), 1, name=f"tower_res_{i}")(h)
            h = pool(2, name=f"tower_pool_{i}")(h)
        rel = self.num_rel_features or max(6, self.channels // self.num_heads)
        if self.remat and self.transformer_layers:
            blocks = nn.scan(
                nn.remat(_ScannedBlock),
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=self.transformer_layers,
            )
            h, _ = blocks(self.num_heads, rel, name="transformer")(h, None)
        else:
            for i in range(self.transformer_layers):
                h = TransformerBlock(self.num_heads, rel, name=f"transformer_{i}")(h)
        if self.crop:
            h = h[..., self.crop : h.shape[-2] - self.crop, :]
        h = gelu(ConvBlock(2 * self.channels, 1, name="final_pointwise")(h))
        return jax.nn.softplus(nn.Dense(self.num_outputs, name="head")(h))


def scanned_variables(variables: dict, transformer_layers: int) -> dict:
    """The plain model's variables in the layout of ``Enformer(remat=True)``.

    The transformer blocks' parameters ``transformer_0 .. transformer_{L-1}`` are stacked
    on a leading axis under ``"transformer"`` (``nn.scan``'s layout); everything else is
    unchanged.

    Example:
      >>> m = Enformer(channels=12, num_heads=2, transformer_layers=2, tower_layers=1, crop=0)
      >>> x = jax.nn.one_hot(jnp.arange(16) % 4, 4)
      >>> v = m.init(jax.random.key(0), x)
      >>> r = m.clone(remat=True)
      >>> bool(jnp.allclose(m.apply(v, x), r.apply(scanned_variables(v, 2), x), atol=1e-6))
      True
    """
    params = dict(variables["params"])
    blocks = [params.pop(f"transformer_{i}") for i in range(transformer_layers)]
    if blocks:
        stacked = jax.tree_util.tree_map(lambda *b: jnp.stack(b), *blocks)
        params["transformer"] = {"block": stacked}
    return {**variables, "params": params}
