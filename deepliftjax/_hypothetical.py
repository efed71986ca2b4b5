"""Hypothetical contributions for one-hot inputs, and export for modisco-lite.

For a one-hot input ``x`` (alphabet on ``axis``), multipliers ``m`` against reference
``r``, the hypothetical contribution of letter ``b`` at position ``i`` is the
contribution position ``i`` would get if the letter there were ``b``::

    hyp[i, b] = sum_c m[i, c] * (e_b[c] - r[i, c]) = m[i, b] - sum_c m[i, c] r[i, c]

(the definition of the DeepLIFT / TF-MoDISco code). With many references it is the
mean over references. Projected on the letter present, ``sum_b hyp[i, b] x[i, b]``
equals the ordinary contribution summed over the alphabet axis, ``sum_c C[i, c]``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from deepliftjax import _compat
from deepliftjax._errors import error

__all__ = [
    "hypothetical_from_multipliers",
    "project_hypothetical",
    "export_modisco",
    "check_onehot",
]


# ---- one-hot checks ---------------------------------------------------------------------
#
# Hypothetical scores, projections and shuffles read one axis of their input as the
# alphabet. Given an array whose one-hot axis is another (a (4, L) sequence read as (L, 4)),
# they compute finite numbers that mean nothing (hypothetical scores off by the sequence
# length, shuffles of the letters' rows), so the axis they read is checked first.


def axis_from_end(axis: int, shape: tuple[int, ...], name: str = "alphabet_axis") -> int:
    """``axis`` of an array of ``shape``, counted from the end: the same axis of one example
    and of a stack of them, ``(K, *shape)``.

    Raises:
      DeepLiftError: ``axis`` is not an axis of ``shape``; the message calls it ``name``.
    """
    n = len(shape)
    if not (isinstance(axis, int | np.integer) and -n <= axis < n):
        raise error(
            f"{name}={axis!r} is out of range for x of shape {tuple(shape)}.",
            "pass the axis of size 4 that holds the bases: -1 for (L, 4), 0 for (4, L).",
        )
    return int(axis) - n if axis >= 0 else int(axis)


def check_onehot(
    x: ArrayLike,
    axis: int = -1,
    *,
    what: str = "check_onehot",
    keyword: str | None = "alphabet_axis",
) -> None:
    """Raise :class:`DeepLiftError` unless ``x`` is one-hot along ``axis``.

    One-hot: every value is 0 or 1 and every position (a slice along ``axis``) holds at
    most one 1; an all-zero position (an unknown base, ``N``) is allowed. Concrete arrays are
    checked now. A traced ``x`` (inside ``jit``, ``vmap``, ``scan``) is checked when the
    computation runs, by a report to the host (only called on failure): under ``jit`` the
    call then fails with the same message (JAX wraps it in a ``JaxRuntimeError``).

    Args:
      x: the array read as one-hot.
      axis: the axis read as the alphabet.
      what: how the message names the caller, e.g. ``"dinuc_shuffle"``.
      keyword: the caller's keyword for the axis, named in the hint (None: it has none).

    Example:
      >>> import numpy as np
      >>> check_onehot(np.eye(4)[[0, 3, 1]], axis=-1)  # (L, 4): fine
      >>> try:
      ...     check_onehot(np.eye(4)[[0, 3, 1, 1, 2]].T, axis=-1)  # (4, L) read as (L, 4)
      ... except ValueError as e:
      ...     print(str(e).splitlines()[0].split(": ")[-1])
      position 1 sums to 2 (more than one 1).
    """
    shape = tuple(np.shape(x))
    ndim = len(shape)
    if not (isinstance(axis, int | np.integer) and -ndim <= axis < ndim):
        raise error(
            f"{what}: axis {axis!r} is not an axis of the input of shape {shape}.",
            "pass the axis that holds the one-hot alphabet (-1 for (L, 4), 0 for (4, L)).",
        )
    params = dict(shape=shape, axis=int(axis), what=what, keyword=keyword)
    if isinstance(x, jax.core.Tracer):
        ints, floats = _onehot_stats(jnp, jnp.asarray(x), int(axis))
        _onehot_report_p.bind(ints, floats, **params)
    else:
        ints, floats = _onehot_stats(np, np.asarray(x), int(axis))
        _onehot_host(ints, floats, **params)


def _onehot_stats(xp: Any, x: Any, axis: int) -> tuple[Any, Any]:
    """What the message needs, as fixed-size arrays (``xp`` is numpy or jax.numpy).

    ints: ``[#values not 0/1, flat index of the first, #positions summing above 1, flat
    position of the first, then 1 per axis along which x is one-hot]``; floats: ``[that
    value, that sum]``.
    """
    ndim = x.ndim
    dt = xp.float64 if xp is np else jnp.promote_types(jnp.result_type(x), jnp.float32)
    v = x.astype(dt)
    bad = ~((v == 0) | (v == 1))  # NaN included
    along = [((v.sum(axis=k) > 1).sum() == 0) & (bad.sum() == 0) for k in range(ndim)]
    sums = xp.moveaxis(v, axis, -1).sum(axis=-1)
    over = sums > 1
    first_bad = xp.argmax(bad.reshape(-1)) if bad.size else 0
    first_over = xp.argmax(over.reshape(-1)) if over.size else 0
    ints = xp.stack(
        [
            xp.asarray(bad.sum(), xp.int32),
            xp.asarray(first_bad, xp.int32),
            xp.asarray(over.sum(), xp.int32),
            xp.asarray(first_over, xp.int32),
            *[xp.asarray(a, xp.int32) for a in along],
        ]
    )
    zero = xp.zeros((), dt)
    floats = xp.stack(
        [
            v.reshape(-1)[first_bad] if v.size else zero,
            sums.reshape(-1)[first_over] if sums.size else zero,
        ]
    )
    return ints, floats


def _onehot_host(
    ints: Any, floats: Any, *, shape: tuple, axis: int, what: str, keyword: str | None
) -> None:
    """Raise the one-hot error for the first example (leading batch axes) that fails."""
    ints, floats = np.asarray(ints), np.asarray(floats, np.float64)
    failing = (ints[..., 0] > 0) | (ints[..., 2] > 0)
    if not np.any(failing):
        return
    at = np.unravel_index(int(np.argmax(failing)), failing.shape) if failing.ndim else ()
    i, f = ints[at], floats[at]
    n = len(shape)
    example = f" (example {tuple(int(k) for k in at)} of the batch)" if at else ""
    head = (
        f"{what}: x of shape {shape}{example} is not one-hot along axis {axis} "
        f"(size {shape[axis]}): "
    )
    if i[2] > 0:
        positions = shape[: axis % n] + shape[axis % n + 1 :]
        pos = np.unravel_index(int(i[3]), positions)
        pos_s = str(int(pos[0])) if len(pos) == 1 else str(tuple(int(p) for p in pos))
        found = (
            f"position {pos_s} sums to {f[1]:g} (more than one 1)"
            + (f"; {int(i[2])} positions do" if i[2] > 1 else "")
            + "."
        )
    else:
        idx = np.unravel_index(int(i[1]), shape)
        found = (
            f"x{list(int(k) for k in idx)} is {f[0]:g} (one-hot values are 0 or 1); "
            f"{int(i[0])} value(s) are not 0 or 1."
        )
    others = [k for k in range(n) if k != axis % n and i[4 + k] and shape[k] > 1]
    move = f"move the alphabet to axis {axis} (x.T, jnp.moveaxis)"
    if others:
        k = others[0]
        fix = f"pass {keyword}={k}, or {move}" if keyword else move
        hint = f"x is one-hot along axis {k} (size {shape[k]}): {fix}."
    else:
        fix = f"pass the axis that holds the alphabet as {keyword}=..., or {move}"
        hint = (
            (fix if keyword else move[0].upper() + move[1:])
            + "; encode an unknown base (N) as an all-zero position, and one-hot encode "
            "soft or probabilistic inputs first."
        )
    raise error(head + found, hint)


def _onehot_lowered(ints: Any, floats: Any, **params: Any) -> list:
    def on_host(i, f):
        _onehot_host(i, f, **params)

    bad = jnp.any(ints[..., 0] > 0) | jnp.any(ints[..., 2] > 0)
    jax.lax.cond(bad, lambda: jax.debug.callback(on_host, ints, floats), lambda: None)
    return []


def _onehot_impl(ints: Any, floats: Any, **params: Any) -> list:
    _onehot_host(ints, floats, **params)
    return []


_onehot_report_p = _compat.define_report_primitive(
    "deepliftjax_onehot_check", _onehot_impl, _onehot_lowered
)


def hypothetical_from_multipliers(
    multipliers: ArrayLike,
    reference: ArrayLike,
    *,
    axis: int = -1,
    onehot: ArrayLike | None = None,
) -> jax.Array:
    """Hypothetical contributions ``m[..., b] - sum_c m[..., c] * ref[..., c]``.

    Args:
      multipliers: DeepLIFT multipliers of a one-hot input (``multiply_by_inputs=False``).
      reference: the reference, broadcastable to ``multipliers``.
      axis: the alphabet (one-hot) axis.
      onehot: the input the multipliers belong to; when given, it is checked to be one-hot
        along ``axis`` (:func:`check_onehot`), which catches a ``(4, L)`` input read as
        ``(L, 4)``. The multipliers alone cannot tell.

    Raises:
      DeepLiftError: ``onehot`` is not one-hot along ``axis``.

    Returns:
      Hypothetical contributions, shaped like ``multipliers``.

    Example:
      >>> import jax.numpy as jnp
      >>> m = jnp.array([[1.0, 2.0, 3.0, 4.0]])
      >>> hypothetical_from_multipliers(m, jnp.full((1, 4), 0.25)).tolist()
      [[-1.5, -0.5, 0.5, 1.5]]
    """
    m = jnp.asarray(multipliers)
    if onehot is not None:
        check_onehot(onehot, axis, what="hypothetical_from_multipliers", keyword="axis")
    ref = jnp.broadcast_to(jnp.asarray(reference, m.dtype), m.shape)
    return m - jnp.sum(m * ref, axis=axis, keepdims=True)


def project_hypothetical(hypothetical: ArrayLike, x: ArrayLike, *, axis: int = -1) -> jax.Array:
    """Contributions per position: the hypothetical score of the letter present.

    Args:
      hypothetical: hypothetical contributions, shaped like ``x``.
      x: the one-hot input.
      axis: the alphabet axis (summed out).

    Returns:
      ``sum_b hyp[..., b] * x[..., b]`` -- equal to the ordinary contributions summed
      over ``axis`` at every position where ``x`` is one-hot (all-zero rows, e.g. ``N``,
      get 0 here but ``-sum_c m r`` in the ordinary contributions).

    Raises:
      DeepLiftError: ``x`` is not one-hot along ``axis`` (:func:`check_onehot`).

    Example:
      >>> import jax.numpy as jnp
      >>> project_hypothetical(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 1.0]])).tolist()
      [2.0]
    """
    check_onehot(x, axis, what="project_hypothetical", keyword="axis")
    return jnp.sum(jnp.asarray(hypothetical) * jnp.asarray(x), axis=axis)


_CHECK_ROWS = 1024
"""Examples read at a time when :func:`export_modisco` checks its one-hot input."""


def export_modisco(
    out_dir: str | os.PathLike,
    onehot: Any,
    hypothetical: Any,
    *,
    alphabet_axis: int = -1,
    compressed: bool = False,
) -> tuple[str, str]:
    """Write one-hot inputs and hypothetical scores in modisco-lite's layout.

    modisco-lite's ``motifs`` command reads ``-s`` (sequences) and ``-a``
    (attributions: the hypothetical contributions) as ``.npy`` arrays, or ``.npz``
    with the array under ``arr_0``, both shaped ``(N, 4, L)`` (alphabet before
    length). This writes ``ohe.npy`` and ``shap.npy`` (``.npz`` if ``compressed``),
    moving ``alphabet_axis`` to axis 1, streaming so memory-mapped inputs are not
    loaded whole. Then::

        modisco motifs -s ohe.npy -a shap.npy -n 2000 -w L -o modisco_results.h5

    (``-w`` must not exceed the sequence length ``L``; its default is 400.)

    Args:
      out_dir: directory to write into (created if needed).
      onehot: one-hot inputs ``(N, L, 4)`` (or with the alphabet on ``alphabet_axis``).
      hypothetical: hypothetical contributions, same shape.
      alphabet_axis: the alphabet axis of both arrays.
      compressed: write ``ohe.npz``/``shap.npz`` (key ``arr_0``) instead of ``.npy``.

    Returns:
      The paths written, ``(sequences_path, attributions_path)``.

    Raises:
      DeepLiftError: arrays not 3-D, different shapes, an alphabet axis not of size 4, or
        ``onehot`` not one-hot along it (checked chunk by chunk).

    Example:
      >>> import numpy as np, tempfile
      >>> x = np.eye(4, dtype=np.float32)[np.zeros((2, 10), int)]
      >>> s, a = export_modisco(tempfile.mkdtemp(), x, x)
      >>> np.load(s).shape
      (2, 4, 10)
    """
    x_shape, h_shape = np.shape(onehot), np.shape(hypothetical)
    if len(x_shape) != 3 or x_shape != h_shape:
        raise error(
            "onehot and hypothetical must both be (N, L, 4) arrays of the same shape, got "
            f"{x_shape} and {h_shape}.",
            "pass the one-hot inputs and their hypothetical contributions, one row per example.",
        )
    if not -3 <= alphabet_axis < 3 or x_shape[alphabet_axis] != 4:
        size = x_shape[alphabet_axis] if -3 <= alphabet_axis < 3 else "none"
        raise error(
            f"alphabet_axis={alphabet_axis} has size {size}, not 4; modisco-lite needs DNA "
            "one-hot.",
            "pass the axis of size 4 that holds the bases (alphabet_axis=1 for (N, 4, L), "
            "-1 for (N, L, 4)).",
        )
    for lo in range(0, x_shape[0], _CHECK_ROWS):  # chunks: memory-mapped inputs stay so
        hi = min(lo + _CHECK_ROWS, x_shape[0])
        where = f" (onehot[{lo}:{hi}])" if x_shape[0] > _CHECK_ROWS else ""
        check_onehot(np.asarray(onehot[lo:hi]), alphabet_axis, what=f"export_modisco{where}")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, arr in (("ohe", onehot), ("shap", hypothetical)):
        arr = np.moveaxis(np.asarray(arr), alphabet_axis, 1).astype(np.float32, copy=False)
        if compressed:
            path = os.path.join(out_dir, f"{name}.npz")
            np.savez_compressed(path, arr_0=arr)
        else:
            path = os.path.join(out_dir, f"{name}.npy")
            np.save(path, arr)
        paths.append(path)
    return paths[0], paths[1]
