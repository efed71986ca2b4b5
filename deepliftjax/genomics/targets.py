"""Attribution targets of profile models (BPNet, ChromBPNet), with the field's conventions.

A profile model returns ``(profile_logits, log_counts)``. The field attributes two scalars:

* **counts**: the predicted log total counts (:func:`counts`).
* **profile**: ``sum(stop_gradient(softmax(z)) * z)`` with ``z`` the mean-normalised,
  flattened profile logits (:func:`profile`; chrombpnet's and bpnet-lite's target): each
  logit weighted by the predicted probability of its position.

What DeepLIFT does with the profile target depends on the reading of the softmax weights
``w = softmax(z)``; :func:`profile_shap` offers them by name (``weighting=``), with what
each one's scores (one reference ``r``, contributions ``C``) sum to:

``"fixed"`` (default)
  ``w(x)`` held fixed per example: ``deeplift(profile_target(model), r,
  stop_gradient="constant")``. ``sum(C) = sum(w(x) * (z(x) - z(r)))``.
``"exact"``
  The whole function ``sum(softmax(z) * z)``, ``stop_gradient`` passed through (the
  default ``stop_gradient="pass"``). ``sum(C) = T(x) - T(r)``.
``"bpnet-lite"``
  bpnet-lite's ``ProfileWrapper`` under tangermeme's ``deep_lift_shap``, which registers
  ``z * softmax(z)`` as an elementwise nonlinearity: logit ``i`` gets the secant
  ``(z_i s_i(x) - z_i s_i(r)) / (z_i(x) - z_i(r))`` (written for ``z_i(x) != z_i(r)``).
  ``sum(C) = T(x) - T(r)`` as for "exact", split differently.
``"chrombpnet"``
  chrombpnet 1.x (kundajelab shap's ``TFDeepExplainer``): the ``stop_gradient`` is not
  a cut for shap, so the product gets the two-input Shapley rule and the weights are the
  midpoint ``(w(x) + w(r)) / 2`` (0 where ``|z_i(x) - z_i(r)| < 1e-7``).
  ``sum(C) = sum((w(x) + w(r)) / 2 * (z(x) - z(r)))``: not a difference of outputs.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from deepliftjax.genomics.models import BPNet
  >>> net = BPNet(n_filters=4, n_layers=1, n_outputs=1, n_control_tracks=0)
  >>> x = jax.nn.one_hot(jnp.arange(160) % 4, 4)
  >>> params = net.init(jax.random.key(0), x)
  >>> model = lambda s: net.apply(params, s)
  >>> refs = jnp.stack([x[::-1], jnp.roll(x, 3, 0)])
  >>> c = profile_shap(model, refs)(x)
  >>> c.shape
  (160, 4)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._api import deeplift_vjp
from deepliftjax._errors import DeepLiftError, error
from deepliftjax._hypothetical import axis_from_end, hypothetical_from_multipliers
from deepliftjax._shap import ShapScores, deeplift_shap

__all__ = [
    "PROFILE_WEIGHTINGS",
    "counts",
    "counts_shap",
    "counts_target",
    "mean_normalize",
    "profile",
    "profile_shap",
    "profile_target",
    "profile_weights",
]

PROFILE_WEIGHTINGS = ("fixed", "exact", "bpnet-lite", "chrombpnet")
Model = Callable[..., tuple[jax.Array, jax.Array]]


def mean_normalize(logits: jax.Array) -> jax.Array:
    """Flattened profile logits minus their mean (§2.5 of the DeepLIFT paper).

    Example:
      >>> mean_normalize(jnp.array([[1.0], [3.0]])).tolist()
      [-1.0, 1.0]
    """
    z = jnp.reshape(logits, (-1,))
    return z - jnp.mean(z)


def counts(outputs: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The counts target: the predicted log total counts (summed over count tracks).

    Example:
      >>> float(counts((jnp.zeros((3, 1)), jnp.array([2.5]))))
      2.5
    """
    return jnp.sum(outputs[1])


def profile(outputs: tuple[jax.Array, jax.Array], *, stop_gradient: bool = True) -> jax.Array:
    """The profile target ``sum(stop_gradient(softmax(z)) * z)``, ``z`` mean-normalised.

    Args:
      outputs: ``(profile_logits, log_counts)`` of one example.
      stop_gradient: wrap the softmax weights in ``jax.lax.stop_gradient`` (chrombpnet's
        formula). Its meaning for DeepLIFT is ``deeplift``'s ``stop_gradient=`` option.

    Example:
      >>> float(profile((jnp.zeros((4, 1)), jnp.zeros(1))))
      0.0
    """
    z = mean_normalize(outputs[0])
    w = jax.nn.softmax(z)
    if stop_gradient:
        w = jax.lax.stop_gradient(w)
    return jnp.sum(w * z)


def counts_target(model: Model) -> Callable[..., jax.Array]:
    """``lambda x, *args: counts(model(x, *args))``, for ``deeplift``/``deeplift_shap``.

    Example:
      >>> t = counts_target(lambda x: (x, jnp.sum(x, keepdims=True)))
      >>> float(t(jnp.ones((2, 4))))
      8.0
    """
    return lambda x, *args: counts(model(x, *args))


def profile_target(model: Model, *, stop_gradient: bool = True) -> Callable[..., jax.Array]:
    """``lambda x, *args: profile(model(x, *args))``, for ``deeplift``/``deeplift_shap``.

    Example:
      >>> t = profile_target(lambda x: (x, jnp.zeros(1)))
      >>> float(t(jnp.zeros((2, 4))))
      0.0
    """
    return lambda x, *args: profile(model(x, *args), stop_gradient=stop_gradient)


def _bad_weighting(weighting: Any) -> DeepLiftError:
    return error(
        f"weighting must be one of {PROFILE_WEIGHTINGS}, got {weighting!r}.",
        "'fixed' holds the softmax weights at the input's (the default), 'exact' attributes "
        "through them, 'bpnet-lite' and 'chrombpnet' reproduce those tools' conventions.",
    )


def profile_weights(z_x: jax.Array, z_r: jax.Array, weighting: str) -> jax.Array:
    """Per-logit multipliers ``dT/dz`` of the profile target under a named convention.

    Args:
      z_x, z_r: mean-normalised logits at the input and at the reference.
      weighting: ``"fixed"``, ``"bpnet-lite"`` or ``"chrombpnet"`` (module docstring).

    Example:
      >>> z = jnp.zeros(2)
      >>> profile_weights(z, z, "fixed").tolist()
      [0.5, 0.5]
    """
    s_x, s_r = jax.nn.softmax(z_x), jax.nn.softmax(z_r)
    d = z_x - z_r
    if weighting == "fixed":
        return s_x
    if weighting == "chrombpnet":
        return jnp.where(jnp.abs(d) < 1e-7, 0.0, 0.5 * (s_x + s_r))
    if weighting == "bpnet-lite":
        small = jnp.abs(d) < 1e-6  # tangermeme's threshold; there, the derivative at x
        grad = s_x * (1 + z_x - jnp.sum(s_x * z_x))
        return jnp.where(small, grad, (z_x * s_x - z_r * s_r) / jnp.where(small, 1.0, d))
    raise _bad_weighting(weighting)


def counts_shap(model: Model, references: Any, **shap_options: Any) -> Callable[..., Any]:
    """DeepLIFT-SHAP scores of the counts target: ``deeplift_shap(counts_target(model), ...)``.

    Example:
      >>> f = counts_shap(lambda x: (x, jnp.sum(x ** 2, keepdims=True)), jnp.zeros((2, 3)))
      >>> f(jnp.ones(3)).tolist()
      [1.0, 1.0, 1.0]
    """
    return deeplift_shap(counts_target(model), references, **shap_options)


def profile_shap(
    model: Model,
    references: Any,
    *,
    weighting: str = "fixed",
    key: jax.Array | None = None,
    reference_chunk_size: int | None = 10,
    hypothetical: bool = False,
    alphabet_axis: int = -1,
    **deeplift_options: Any,
) -> Callable[..., Any]:
    """DeepLIFT-SHAP scores of the profile target under a named ``weighting``.

    ``"fixed"`` and ``"exact"`` are :func:`deepliftjax.deeplift_shap` of
    :func:`profile_target` with ``stop_gradient="constant"`` and ``"pass"``;
    ``"bpnet-lite"`` and ``"chrombpnet"`` pull the convention's logit weights back
    through the model's DeepLIFT multipliers (:func:`deepliftjax.deeplift_vjp`).

    Args:
      model: ``model(x, *args) -> (profile_logits, log_counts)`` for one example.
      references: ``(K, *x.shape)`` or a generator ``(key, x) -> (K, *x.shape)``.
      weighting: one of :data:`PROFILE_WEIGHTINGS` (module docstring).
      key: PRNG key for a reference generator.
      reference_chunk_size: references processed together (``lax.map`` over chunks);
        None, or at least the number of references, processes all of them at once.
      hypothetical: also return hypothetical contributions (a :class:`ShapScores`).
      alphabet_axis: the one-hot axis of ``x`` for ``hypothetical``: ``-1`` for ``(L, 4)``,
        ``0`` for a PyTorch model's ``(4, L)``. The profile logits may have either layout
        (the target flattens them).
      **deeplift_options: passed to ``deeplift_vjp``.

    Returns:
      ``f(x, *args)`` returning the mean contributions (or :class:`ShapScores`).
    """
    if weighting not in PROFILE_WEIGHTINGS:
        raise _bad_weighting(weighting)
    if weighting in ("fixed", "exact"):
        mode = "constant" if weighting == "fixed" else "pass"
        return deeplift_shap(
            profile_target(model),
            references,
            key=key,
            reference_chunk_size=reference_chunk_size,
            hypothetical=hypothetical,
            alphabet_axis=alphabet_axis,
            stop_gradient=mode,
            **deeplift_options,
        )

    def scores(x: jax.Array, *args: Any) -> Any:
        refs = references(key, x) if callable(references) else jnp.asarray(references)

        def logits(x, *args):
            return model(x, *args)[0]

        def one(ref):
            out, out_ref, pullback = deeplift_vjp(logits, ref, x, *args, **deeplift_options)
            z_x, z_r = mean_normalize(out), mean_normalize(out_ref)
            w = profile_weights(z_x, z_r, weighting)
            m = pullback(jnp.reshape(w - jnp.mean(w), out.shape))  # through the mean
            return m[0] if isinstance(m, tuple) else m  # a tuple as jax.vjp's (newer API)

        if reference_chunk_size is None or reference_chunk_size >= len(refs):
            m = jax.vmap(one)(refs)  # all at once: a one-step scan costs 2x on XLA's CPU
        else:
            m = jax.lax.map(one, refs, batch_size=reference_chunk_size)
        contrib = jnp.mean(m * (x - refs), axis=0)
        if not hypothetical:
            return contrib
        axis = axis_from_end(alphabet_axis, x.shape)
        hyp = hypothetical_from_multipliers(m, refs, axis=axis, onehot=x)
        hyp = jnp.mean(hyp, axis=0)
        return ShapScores(contrib, hyp)

    return scores
