"""Checks for users: how far scores are from summation to delta, and finite inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax._errors import DeepLiftError


def summation_residual(
    f: Callable[..., Any],
    ref: Any,
    x: Any,
    contributions: Any = None,
    *,
    batched: bool = False,
    floor: float = 1e-3,
    **deeplift_kwargs: Any,
) -> jax.Array:
    """Per-example relative residual of summation to delta, ``|sum(C) - Δf| / |Δf|``.

    DeepLIFT's scores satisfy ``sum(C) == f(x) - f(ref)`` (eq. 1) up to floating point; this
    returns how far given (or freshly computed) scores are from it, for your own checks.

    The denominator is floored: ``max(|Δf|, floor * max(|f(x)|, |f(ref)|, 1))``. A float
    rounds ``f`` itself at about ``eps * |f|`` (1e-7 of its size in float32), so a
    difference much smaller than ``f`` cannot be checked relative to itself; below the
    floor the residual is relative to the floor instead (absolute where ``|f| <= 1``).
    ``floor=0`` gives the plain relative residual (0 where ``Δf`` and ``sum(C)`` are both
    0, ``inf`` where only ``Δf`` is). The sums are taken in at least float32.

    Args:
      f: the attributed scalar function of one argument (close over any others).
      ref: the reference, as for :func:`deepliftjax.deeplift`.
      x: the input: an array or pytree; with ``batched=True`` every leaf has a leading
        batch axis.
      contributions: scores for ``x`` (a pytree like ``x``); computed with
        ``deeplift(f, ref, **deeplift_kwargs)`` when omitted.
      batched: ``x`` (and ``contributions``) hold a batch on axis 0. A reference leaf with
        the batched input's rank and batch size is taken per example, any other
        reference leaf is shared by the batch.
      floor: the floor of the denominator, relative to the scale of ``f`` (see above).
      **deeplift_kwargs: passed to :func:`deepliftjax.deeplift` when scores are computed
        here (e.g. ``max_rule``, ``rule``).

    Returns:
      A float array: a scalar, or one residual per example with ``batched=True``.
      Composes with ``jit`` (``f`` and the options static).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from deepliftjax._checks import summation_residual
      >>> f = lambda x: jnp.sum(jnp.tanh(x) * jax.nn.sigmoid(x[::-1]))
      >>> xs = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
      >>> r = summation_residual(f, jnp.zeros(5), xs, batched=True)
      >>> r.shape, bool(r.max() < 1e-5)
      ((8,), True)
    """
    from deepliftjax._api import deeplift  # late: _api imports the rule modules

    if not batched:
        return _residual_one(f, ref, x, contributions, floor, deeplift, deeplift_kwargs)

    x_leaves = jax.tree_util.tree_leaves(x)
    if not x_leaves:
        raise DeepLiftError("summation_residual: x has no array leaves.")
    n = jnp.shape(x_leaves[0])[0] if jnp.ndim(x_leaves[0]) else None
    for leaf in x_leaves:
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != n:
            raise DeepLiftError(
                "summation_residual(batched=True) needs every leaf of x to have the same "
                f"leading batch axis; got shapes {[jnp.shape(v) for v in x_leaves]}.\n"
                "Hint: pass batched=False for a single example."
            )
    ref_axes = _ref_axes(ref, x, n)
    c_axes = None if contributions is None else 0
    one = lambda xi, ri, ci: _residual_one(f, ri, xi, ci, floor, deeplift, deeplift_kwargs)
    return jax.vmap(one, in_axes=(0, ref_axes, c_axes))(x, ref, contributions)


def _ref_axes(ref, x, n):
    """0 for reference leaves that hold one reference per example, None for shared ones."""
    x_leaves = jax.tree_util.tree_leaves(x)

    def axis(r, xl):
        per_example = jnp.ndim(r) == jnp.ndim(xl) and jnp.ndim(r) > 0 and jnp.shape(r)[0] == n
        return 0 if per_example else None

    if _is_leaf(ref):
        axes = {axis(ref, xl) for xl in x_leaves}
        return 0 if axes == {0} else None
    try:
        return jax.tree_util.tree_map(axis, ref, x)
    except ValueError:
        return None  # a structure mismatch: deeplift raises its own error below


def _residual_one(f, ref, x, contributions, floor, deeplift, kwargs):
    if contributions is None:
        contributions = deeplift(f, ref, **kwargs)(x)
    if _is_leaf(ref):
        refs = jax.tree_util.tree_map(lambda xi: _like(ref, xi), x)
    else:
        refs = jax.tree_util.tree_map(_like, ref, x)
    fx, fr = f(x), f(refs)
    if jnp.shape(fx) != ():
        raise DeepLiftError(
            f"summation_residual needs f to return a scalar; got shape {jnp.shape(fx)}.\n"
            "Hint: pick a target, e.g. lambda x: f(x)[i]."
        )
    dt = jnp.promote_types(jnp.result_type(fx), jnp.float32)
    total = sum(
        (jnp.sum(jnp.asarray(c, dt)) for c in jax.tree_util.tree_leaves(contributions)),
        jnp.zeros((), dt),
    )
    fx, fr = jnp.asarray(fx, dt), jnp.asarray(fr, dt)
    delta = fx - fr
    err = jnp.abs(total - delta)
    scale = jnp.maximum(jnp.maximum(jnp.abs(fx), jnp.abs(fr)), 1.0)
    denom = jnp.maximum(jnp.abs(delta), floor * scale)
    safe = jnp.where(denom > 0, denom, 1.0)
    return jnp.where(denom > 0, err / safe, jnp.where(err > 0, jnp.inf, 0.0))


def check_finite(x: Any, ref: Any = None) -> None:
    """Raise :class:`DeepLiftError` naming the first NaN or Inf in the input or reference.

    DeepLIFT propagates a NaN or Inf in ``x`` or ``ref`` into every score it touches, and
    ``Δx = inf - inf`` is NaN even where both sides are infinite; this opt-in check finds
    the culprit before attribution. It needs concrete values (call it outside ``jit``).

    Args:
      x: the input, an array or pytree of arrays.
      ref: the reference: an array broadcastable to ``x``'s leaves, or a pytree like ``x``
        (or None to check ``x`` only).

    Raises:
      DeepLiftError: naming the argument (input or reference), the pytree path of the
        leaf, the index of the first non-finite entry, its value and how many there are.

    Example:
      >>> import jax.numpy as jnp
      >>> from deepliftjax._checks import check_finite
      >>> check_finite({"a": jnp.ones(3)}, 0.0)  # passes silently
      >>> check_finite({"a": jnp.array([1.0, jnp.nan])}, 0.0)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      deepliftjax._errors.DeepLiftError: the input has 1 non-finite value(s) in leaf ['a'] ...
    """
    _check_tree("input", x)
    if ref is not None:
        _check_tree("reference", ref)


def _check_tree(what, tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            raise DeepLiftError(
                f"check_finite needs concrete values; the {what} is being traced (inside "
                "jit, vmap or grad).\nHint: call check_finite on the arrays before the "
                "jitted call."
            )
        a = np.asarray(leaf)
        if not np.issubdtype(a.dtype, np.inexact):
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            where = jax.tree_util.keystr(path) or "<root>"
            raise DeepLiftError(
                f"the {what} has {int(bad.sum())} non-finite value(s) in leaf {where} of "
                f"shape {a.shape}; the first is {a[idx]} at index {idx}.\nHint: DeepLIFT "
                "scores are differences from the reference, and a NaN or Inf makes every "
                "score it reaches NaN; replace or mask these values (jnp.nan_to_num), or "
                "pick a finite reference."
            )


def _like(r, xi):
    return jnp.broadcast_to(jnp.asarray(r, jnp.result_type(xi)), jnp.shape(xi))


def _is_leaf(v):
    return hasattr(v, "shape") or isinstance(v, float | int | bool | np.generic)
