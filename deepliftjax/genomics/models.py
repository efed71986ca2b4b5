"""Profile models of today's regulatory genomics in Flax: BPNet and ChromBPNet.

:class:`BPNet` is bpnet-lite's ``BPNet`` (the architecture of the official ChromBPNet
repository): a wide first convolution, dilated residual convolutions (``x + relu(conv(x))``,
dilation ``2**i``), a profile head (a width-75 convolution over the features and the
optional control tracks, cropped by ``trimming`` on each side) and a counts head (the mean
of the features over the output window widened by 37 on each side, with
``log(1 + sum(controls))`` appended, then a dense layer to one log count).
:class:`ChromBPNet` adds a bias model's and an accessibility model's profile logits and
combines their log counts as ``log(exp(a) + exp(b))``, written as bpnet-lite writes it.

Inputs are channels-last one-hot sequences ``(batch, length, 4)`` (or one sequence
``(length, 4)``); outputs are the profile logits ``(batch, out_length, n_outputs)`` and the
log counts ``(batch, 1)``. :func:`bpnet_params_from_torch` and
:func:`chrombpnet_params_from_torch` convert a bpnet-lite ``state_dict`` (any mapping of
names to arrays) into these modules' parameters.

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = BPNet(n_filters=8, n_layers=2, n_control_tracks=0)
  >>> x = jax.nn.one_hot(jnp.zeros((1, 200), int), 4)
  >>> params = model.init(jax.random.key(0), x)
  >>> profile, counts = model.apply(params, x)
  >>> profile.shape, counts.shape
  ((1, 94, 2), (1, 1))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax._errors import error

__all__ = [
    "BPNet",
    "ChromBPNet",
    "bpnet_params_from_torch",
    "chrombpnet_params_from_torch",
    "default_trimming",
]


def default_trimming(n_layers: int) -> int:
    """bpnet-lite's default trimming: ``47 + sum(2**i for i in 1..n_layers)``.

    Example:
      >>> default_trimming(8)
      557
    """
    return 47 + sum(2**i for i in range(1, n_layers + 1))


class BPNet(nn.Module):
    """bpnet-lite's BPNet in Flax (see the module docstring for the layers).

    Attributes:
      n_filters: features of every convolution.
      n_layers: dilated residual layers (dilations 2, 4, ..., ``2**n_layers``).
      n_outputs: profile tracks (2 for stranded data).
      n_control_tracks: control tracks given as the second argument (0: none).
      profile_output_bias: bias in the profile convolution.
      count_output_bias: bias in the counts dense layer.
      trimming: positions cropped from each end for the output window (default
        :func:`default_trimming`).
      dtype: computation dtype (``None``: that of the inputs and parameters).
    """

    n_filters: int = 64
    n_layers: int = 8
    n_outputs: int = 2
    n_control_tracks: int = 2
    profile_output_bias: bool = True
    count_output_bias: bool = True
    trimming: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, x_ctl: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Args:
          x: one-hot ``(batch, length, 4)`` or ``(length, 4)``.
          x_ctl: control tracks ``(batch, length, n_control_tracks)`` (or unbatched), or
            None (zeros when the model has control tracks, as bpnet-lite's ControlWrapper).

        Returns:
          ``(profile_logits, log_counts)``: ``(batch, out_length, n_outputs)`` and
          ``(batch, 1)``, without the batch axis for an unbatched ``x``.
        """
        single = x.ndim == 2
        if single:
            x = x[None]
            x_ctl = None if x_ctl is None else x_ctl[None]
        if self.n_control_tracks and x_ctl is None:
            x_ctl = jnp.zeros((*x.shape[:2], self.n_control_tracks), x.dtype)
        trim = default_trimming(self.n_layers) if self.trimming is None else self.trimming
        length = x.shape[1]
        start, end = trim, length - trim
        if end <= start:
            raise error(
                f"length {length} leaves no output after trimming {trim} per side.",
                f"pass sequences longer than {2 * trim}, or a model with a smaller trim.",
            )
        conv = lambda f, k, d, name, bias=True: nn.Conv(  # noqa: E731
            f,
            (k,),
            kernel_dilation=(d,),
            padding=[(d * (k - 1) // 2,) * 2],
            use_bias=bias,
            dtype=self.dtype,
            name=name,
        )
        h = jax.nn.relu(conv(self.n_filters, 21, 1, "iconv")(x))
        for i in range(1, self.n_layers + 1):
            h = h + jax.nn.relu(conv(self.n_filters, 3, 2**i, f"rconv_{i}")(h))
        h_ctl = h if not self.n_control_tracks else jnp.concatenate([h, x_ctl], axis=-1)
        fconv = conv(self.n_outputs, 75, 1, "fconv", self.profile_output_bias)
        profile = fconv(h_ctl)[:, start:end]
        lo, hi = max(start - 37, 0), end + 37
        pooled = jnp.mean(h[:, lo:hi], axis=1)
        if self.n_control_tracks:
            ctl = jnp.sum(x_ctl[:, lo:hi], axis=(1, 2))[:, None]
            pooled = jnp.concatenate([pooled, jnp.log(ctl + 1)], axis=-1)
        counts = nn.Dense(1, use_bias=self.count_output_bias, dtype=self.dtype, name="linear")(
            pooled
        )
        if single:
            return profile[0], counts[0]
        return profile, counts


class ChromBPNet(nn.Module):
    """ChromBPNet: a (frozen) bias model plus an accessibility model, as in bpnet-lite.

    Profile logits add (the bias model's cropped to the accessibility model's window);
    log counts combine as ``log(exp(acc) + exp(bias))``.

    Attributes:
      bias: the bias model (a :class:`BPNet`, usually without control tracks).
      accessibility: the accessibility model (a :class:`BPNet`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = ChromBPNet(BPNet(4, 1, 1, 0), BPNet(4, 2, 1, 0))
      >>> x = jax.nn.one_hot(jnp.zeros((200,), int), 4)
      >>> p, c = m.apply(m.init(jax.random.key(0), x), x)
      >>> p.shape, c.shape
      ((94, 1), (1,))
    """

    bias: BPNet
    accessibility: BPNet

    @nn.compact
    def __call__(self, x: jax.Array, x_ctl: jax.Array | None = None):
        acc_profile, acc_counts = self.accessibility(x)
        bias_profile, bias_counts = self.bias(x)
        n0, n1 = acc_profile.shape[-2], bias_profile.shape[-2]
        w = (n1 - n0) // 2
        profile = acc_profile + bias_profile[..., w : n1 - w, :]
        counts = jnp.log(jnp.exp(acc_counts) + jnp.exp(bias_counts))
        return profile, counts


def _arr(v: Any, dtype: Any) -> jax.Array:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return jnp.asarray(np.asarray(v), dtype)


def bpnet_params_from_torch(
    state_dict: Mapping[str, Any], *, prefix: str = "", dtype: Any = jnp.float32
) -> dict[str, Any]:
    """Parameters of :class:`BPNet` from a bpnet-lite ``BPNet.state_dict()``.

    Args:
      state_dict: names to arrays (torch tensors or numpy arrays).
      prefix: prefix of the BPNet's names (``"bias."`` in a ChromBPNet).
      dtype: parameter dtype (``jnp.float64`` needs ``jax.enable_x64``).

    Returns:
      ``{"params": ...}`` for ``BPNet.apply``.

    Example:
      >>> import numpy as np
      >>> sd = {"iconv.weight": np.zeros((2, 4, 21)), "iconv.bias": np.zeros(2),
      ...       "fconv.weight": np.zeros((1, 2, 75)), "fconv.bias": np.zeros(1),
      ...       "linear.weight": np.zeros((1, 2)), "linear.bias": np.zeros(1)}
      >>> sorted(bpnet_params_from_torch(sd)["params"])
      ['fconv', 'iconv', 'linear']
    """
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}

    def conv(name: str) -> dict[str, jax.Array]:
        p = {"kernel": jnp.transpose(_arr(sd[f"{name}.weight"], dtype), (2, 1, 0))}
        if f"{name}.bias" in sd:
            p["bias"] = _arr(sd[f"{name}.bias"], dtype)
        return p

    params: dict[str, Any] = {"iconv": conv("iconv"), "fconv": conv("fconv")}
    i = 0
    while f"rconvs.{i}.weight" in sd:
        params[f"rconv_{i + 1}"] = conv(f"rconvs.{i}")
        i += 1
    params["linear"] = {"kernel": _arr(sd["linear.weight"], dtype).T}
    if "linear.bias" in sd:
        params["linear"]["bias"] = _arr(sd["linear.bias"], dtype)
    return {"params": params}


def chrombpnet_params_from_torch(
    state_dict: Mapping[str, Any], *, dtype: Any = jnp.float32
) -> dict[str, Any]:
    """Parameters of :class:`ChromBPNet` from a bpnet-lite ``ChromBPNet.state_dict()``.

    Example:
      >>> import numpy as np
      >>> one = {"iconv.weight": np.zeros((2, 4, 21)), "iconv.bias": np.zeros(2),
      ...        "fconv.weight": np.zeros((1, 2, 75)), "linear.weight": np.zeros((1, 2))}
      >>> sd = {p + k: v for p in ("bias.", "accessibility.") for k, v in one.items()}
      >>> sorted(chrombpnet_params_from_torch(sd)["params"])
      ['accessibility', 'bias']
    """
    return {
        "params": {
            name: bpnet_params_from_torch(state_dict, prefix=f"{name}.", dtype=dtype)["params"]
            for name in ("bias", "accessibility")
        }
    }
