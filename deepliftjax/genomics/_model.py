"""The §3.2 CNN in Flax linen."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepliftjax._errors import error


class PReLU(nn.Module):
    """PReLU with one learnable slope per feature: max(x, 0) + a * min(x, 0)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.param("slope", nn.initializers.constant(self.init_slope), (x.shape[-1],))
        return jnp.maximum(x, 0) + a * jnp.minimum(x, 0)


def window_max(x: jax.Array, width: int) -> jax.Array:
    """Max pooling of width and stride `width` over axis -2; a shorter last window is kept.

    Written as slices, `max` reductions and a concatenation, so every position reaches the
    output.

    Args:
      x: (..., length, features).
      width: pool width and stride.

    Returns:
      (..., ceil(length / width), features).
    """
    n = math.ceil(x.shape[-2] / width)
    windows = [x[..., i * width : (i + 1) * width, :].max(axis=-2, keepdims=True) for i in range(n)]
    return jnp.concatenate(windows, axis=-2)


class GenomicsCNN(nn.Module):
    """Conv(20 x 15, stride 1, VALID) - PReLU - max pool 50/50 - Dense 200 - PReLU - Dense 200 -
    PReLU - Dense 1 (the logit; the paper's sigmoid output is applied in the loss).

    The convolution uses VALID padding so that every conv output sees 15 one-hot columns; this
    keeps the §2.6 weight normalisation exact (padded columns would break the one-hot
    constraint). The 186 conv outputs are pooled in windows [0, 50), ..., [150, 186).

    Attributes:
      filters: number of conv filters.
      kernel: conv filter length.
      pool: max pool width and stride.
      hidden: dense layer width.
    """

    filters: int = 20
    kernel: int = 15
    pool: int = 50
    hidden: int = 200

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Args:
          x: (..., length, 4) one-hot sequences.

        Returns:
          (...,) logits.
        """
        if x.ndim < 2 or x.shape[-1] != 4:
            raise error(
                f"expected one-hot input of shape (..., length, 4), got {x.shape}.",
                "pass one-hot DNA with the bases on the last axis (jax.nn.one_hot(tokens, 4)).",
            )
        if x.shape[-2] < self.kernel:
            raise error(
                f"sequence length {x.shape[-2]} is shorter than kernel {self.kernel}.",
                "pass sequences at least as long as the convolution kernel, or a smaller kernel.",
            )
        h = nn.Conv(self.filters, (self.kernel,), padding="VALID", name="conv")(x)
        h = PReLU(name="prelu_conv")(h)
        h = window_max(h, self.pool)
        h = h.reshape(*h.shape[:-2], -1)
        h = PReLU(name="prelu_1")(nn.Dense(self.hidden, name="dense_1")(h))
        h = PReLU(name="prelu_2")(nn.Dense(self.hidden, name="dense_2")(h))
        return nn.Dense(1, name="out")(h)[..., 0]
