"""Checks for users: how far scores are from summation to delta, how well conditioned they
are, and finite inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax._errors import error

__all__ = [
    "ConditioningWarning",
    "SummationCheck",
    "check_finite",
    "summation_check",
    "summation_residual",
]

FLOOR = 1e-3  # the default floor of |Δf|, relative to the scale of f (see summation_residual)
CONDITIONING_THRESHOLD = 100.0  # attribute()'s default: warn above sum|C| / |Δf| = 100


class ConditioningWarning(UserWarning):
    """Scores that sum to ``Δf`` but cancel: ``sum|C| / |Δf|`` is large.

    Emitted by :func:`deepliftjax.attribute` when an example's conditioning exceeds its
    ``conditioning_threshold``; filter it with ``warnings.filterwarnings``.
    """


class SummationCheck(NamedTuple):
    """What :func:`summation_check` returns, per example.

    Attributes:
      residual: ``|sum(C) - Δf| / max(|Δf|, floor)``, as :func:`summation_residual`.
      conditioning: ``sum(|C|) / max(|Δf|, floor)``: how many times larger than the change
        they explain the scores are in total. 1 when all scores share Δf's sign; large
        when big scores of both signs cancel (e.g. a LayerNorm whose input has zero
        variance at the reference), where each score is dominated by that cancellation
        and float rounding is amplified by the same factor.
    """

    residual: jax.Array
    conditioning: jax.Array


def summation_residual(
    f: Callable[..., Any],
    ref: Any,
    x: Any,
    contributions: Any = None,
    *,
    batched: bool = False,
    floor: float = FLOOR,
    **deeplift_kwargs: Any,
) -> jax.Array:
    """Per-example relative residual of summation to delta, ``|sum(C) - Δf| / |Δf|``.

    DeepLIFT's scores satisfy ``sum(C) == f(x) - f(ref)`` (eq. 1) up to floating point; this
    returns how far given (or freshly computed) scores are from it, for your own checks.
    :func:`summation_check` also returns how well conditioned the scores are.

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
      floor: the floor of the denominator, relative to the scale of ``f`` (see above); a
        number ``>= 0``.
      **deeplift_kwargs: passed to :func:`deepliftjax.deeplift` when scores are computed
        here (e.g. ``max_rule``, ``rule``).

    Returns:
      A float array: a scalar, or one residual per example with ``batched=True``.
      Composes with ``jit`` (``f`` and the options static).

    Raises:
      DeepLiftError: ``f`` not returning a scalar, a batch whose leaves disagree on the
        batch size, or a negative ``floor``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from deepliftjax import summation_residual
      >>> f = lambda x: jnp.sum(jnp.tanh(x) * jax.nn.sigmoid(x[::-1]))
      >>> xs = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
      >>> r = summation_residual(f, jnp.zeros(5), xs, batched=True)
      >>> r.shape, bool(r.max() < 1e-5)
      ((8,), True)
    """
    check = _summation(
        "summation_residual", f, ref, x, contributions, batched, floor, deeplift_kwargs
    )
    return check.residual


def summation_check(
    f: Callable[..., Any],
    ref: Any,
    x: Any,
    contributions: Any = None,
    *,
    batched: bool = False,
    floor: float = FLOOR,
    **deeplift_kwargs: Any,
) -> SummationCheck:
    """Summation residual and conditioning of DeepLIFT scores, per example.

    Exact scores can still be badly conditioned: at a degenerate reference (a LayerNorm
    or RMSNorm whose input has zero variance there, as with an all-zero reference) the
    scores of single features can be thousands of times ``|Δf|``, with opposite signs that
    cancel in the sum. Such scores are exact but say little about any one feature, and
    every float rounding error in them is amplified by the same factor. This returns
    both numbers: the residual of :func:`summation_residual` and the conditioning
    ``sum(|C|) / max(|Δf|, floor * max(|f(x)|, |f(ref)|, 1))`` (the same floored
    denominator). A conditioning near 1 means the scores add up without cancelling; above
    about 100 consider a reference with some variance at the normalisation layers (a small
    random or shuffled one) or ``product_rule="balanced"``. It is also large where ``f(x)``
    happens to be close to ``f(ref)``: little to explain, however small the scores.

    Args:
      f, ref, x, contributions, batched, floor, **deeplift_kwargs: as for
        :func:`summation_residual`.

    Returns:
      A :class:`SummationCheck` ``(residual, conditioning)`` of float arrays: scalars, or
      one value per example with ``batched=True``. ``floor=0`` gives 0 where ``Δf`` and
      ``sum(|C|)`` are both 0 and ``inf`` where only ``Δf`` is. Composes with ``jit``.

    Raises:
      DeepLiftError: as :func:`summation_residual`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from deepliftjax import summation_check
      >>> w = jnp.array([1.0, -2.0, 0.5, 3.0])
      >>> norm = lambda x: jnp.sum(w * (x - x.mean()) / jnp.sqrt(x.var() + 1e-5))
      >>> check = summation_check(norm, jnp.zeros(4), jnp.array([1.0, 2.0, 3.0, 4.0]))
      >>> bool(check.residual < 1e-3), bool(check.conditioning > 100)
      (True, True)
    """
    return _summation("summation_check", f, ref, x, contributions, batched, floor, deeplift_kwargs)


def floored_delta(fx: Any, fr: Any, floor: float = FLOOR) -> jax.Array:
    """``max(|fx - fr|, floor * max(|fx|, |fr|, 1))``, in at least float32.

    The denominator of the residual and the conditioning, here and in
    :func:`deepliftjax.deeplift_shap` (see :func:`summation_residual` for the floor).
    """
    dt = jnp.promote_types(jnp.result_type(fx, fr), jnp.float32)
    fx, fr = jnp.asarray(fx, dt), jnp.asarray(fr, dt)
    scale = jnp.maximum(jnp.maximum(jnp.abs(fx), jnp.abs(fr)), 1.0)
    return jnp.maximum(jnp.abs(fx - fr), floor * scale)


def ratio(value: Any, denom: Any) -> jax.Array:
    """``value / denom``, with 0 for ``0 / 0`` and ``inf`` for ``value / 0``."""
    safe = jnp.where(denom > 0, denom, jnp.ones_like(denom))
    return jnp.where(denom > 0, value / safe, jnp.where(value > 0, jnp.inf, 0.0))


def _summation(name, f, ref, x, contributions, batched, floor, deeplift_kwargs):
    """The shared body of summation_residual and summation_check."""
    from deepliftjax._api import deeplift  # late: _api imports the rule modules

    if isinstance(floor, int | float | np.number) and not (floor >= 0 and math.isfinite(floor)):
        raise error(
            f"{name}: floor must be a finite number >= 0, got {floor!r}.",
            f"the default floor={FLOOR:g} bounds |Δf| below by that fraction of "
            "max(|f(x)|, |f(ref)|, 1); floor=0 gives the plain relative values.",
        )
    if not batched:
        return _check_one(name, f, ref, x, contributions, floor, deeplift, deeplift_kwargs)

    x_leaves = jax.tree_util.tree_leaves(x)
    if not x_leaves:
        raise error(
            f"{name}: x has no array leaves.",
            "pass the input(s) of f as an array or a pytree of arrays.",
        )
    n = jnp.shape(x_leaves[0])[0] if jnp.ndim(x_leaves[0]) else None
    for leaf in x_leaves:
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != n:
            raise error(
                f"{name}(batched=True) needs every leaf of x to have the same "
                f"leading batch axis; got shapes {[jnp.shape(v) for v in x_leaves]}.",
                "pass batched=False for a single example.",
            )
    ref_axes = _ref_axes(ref, x, n)
    c_axes = None if contributions is None else 0

    def one(xi, ri, ci):
        return _check_one(name, f, ri, xi, ci, floor, deeplift, deeplift_kwargs)

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


def _check_one(name, f, ref, x, contributions, floor, deeplift, kwargs):
    if contributions is None:
        contributions = deeplift(f, ref, **kwargs)(x)
    if _is_leaf(ref):
        refs = jax.tree_util.tree_map(lambda xi: _like(ref, xi), x)
    else:
        refs = jax.tree_util.tree_map(_like, ref, x)
    fx, fr = f(x), f(refs)
    if jnp.shape(fx) != ():
        raise error(
            f"{name} needs f to return a scalar; got shape {jnp.shape(fx)}.",
            "pick a target, e.g. lambda x: f(x)[i].",
        )
    dt = jnp.promote_types(jnp.result_type(fx), jnp.float32)
    leaves = [jnp.asarray(c, dt) for c in jax.tree_util.tree_leaves(contributions)]
    total = sum((jnp.sum(c) for c in leaves), jnp.zeros((), dt))
    total_abs = sum((jnp.sum(jnp.abs(c)) for c in leaves), jnp.zeros((), dt))
    fx, fr = jnp.asarray(fx, dt), jnp.asarray(fr, dt)
    denom = floored_delta(fx, fr, floor)
    return SummationCheck(
        residual=ratio(jnp.abs(total - (fx - fr)), denom),
        conditioning=ratio(total_abs, denom),
    )


def conditioning_message(
    count: int, worst: float, where: int, threshold: float, small_delta: int = 0
) -> str:
    """The warning about ill-conditioned scores, shared by the runner's code paths.

    ``small_delta``: how many of the reported examples have ``|Δf|`` below a thousandth of
    ``max(|f(x)|, |f(ref)|, 1)`` (little to explain): for those the ratio is large whatever
    the model, and the message says so first.
    """
    if small_delta:
        cause = (
            f"{small_delta} of them have f(x) within a thousandth of f(ref): there is "
            "little to explain, so any scores are large relative to it; the rest (if any) "
            "are typical of a reference at which a normalisation layer (LayerNorm, RMSNorm) "
            "sees zero variance, such as an all-zero reference."
        )
    else:
        cause = (
            "Typical of a reference at which a normalisation layer (LayerNorm, RMSNorm) sees "
            "zero variance, such as an all-zero reference, or of an example whose f(x) is "
            "close to f(ref)."
        )
    return (
        f"{count} example(s) have ill-conditioned DeepLIFT scores: sum(|C|) / |Δf| above "
        f"{threshold:g} (worst: example {where}, {worst:.3g}). The scores still sum to Δf, "
        "but large scores of opposite signs cancel, so single scores say little and float "
        f"rounding is amplified as much. {cause}\n"
        "Hint: use a reference with non-zero variance at the norm layers, e.g. a small "
        "random reference or shuffled inputs (references=functools.partial(dinuc_shuffle, "
        "num_shuffles=K) for DNA), or deeplift's product_rule='balanced' (also taken by "
        "attribute()), which keeps products such as (x - mean) * rsqrt(var + eps) from "
        "cancelling wherever possible; conditioning_threshold=None silences this check."
    )


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
      >>> from deepliftjax import check_finite
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
            raise error(
                f"check_finite needs concrete values; the {what} is being traced (inside "
                "jit, vmap or grad).",
                "call check_finite on the arrays before the jitted call.",
            )
        a = np.asarray(leaf)
        if not np.issubdtype(a.dtype, np.inexact):
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            where = jax.tree_util.keystr(path) or "<root>"
            raise error(
                f"the {what} has {int(bad.sum())} non-finite value(s) in leaf {where} of "
                f"shape {a.shape}; the first is {a[idx]} at index {idx}.",
                "DeepLIFT scores are differences from the reference, and a NaN or Inf "
                "makes every score it reaches NaN; replace or mask these values "
                "(jnp.nan_to_num), or pick a finite reference.",
            )


def _like(r, xi):
    return jnp.broadcast_to(jnp.asarray(r, jnp.result_type(xi)), jnp.shape(xi))


def _is_leaf(v):
    return hasattr(v, "shape") or isinstance(v, float | int | bool | np.generic)
