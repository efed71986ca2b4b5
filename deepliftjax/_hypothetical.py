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

__all__ = ["hypothetical_from_multipliers", "project_hypothetical", "export_modisco"]


def hypothetical_from_multipliers(
    multipliers: ArrayLike, reference: ArrayLike, *, axis: int = -1
) -> jax.Array:
    """Hypothetical contributions ``m[..., b] - sum_c m[..., c] * ref[..., c]``.

    Args:
      multipliers: DeepLIFT multipliers of a one-hot input (``multiply_by_inputs=False``).
      reference: the reference, broadcastable to ``multipliers``.
      axis: the alphabet (one-hot) axis.

    Returns:
      Hypothetical contributions, shaped like ``multipliers``.

    Example:
      >>> import jax.numpy as jnp
      >>> m = jnp.array([[1.0, 2.0, 3.0, 4.0]])
      >>> hypothetical_from_multipliers(m, jnp.full((1, 4), 0.25)).tolist()
      [[-1.5, -0.5, 0.5, 1.5]]
    """
    m = jnp.asarray(multipliers)
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

    Example:
      >>> import jax.numpy as jnp
      >>> project_hypothetical(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 1.0]])).tolist()
      [2.0]
    """
    return jnp.sum(jnp.asarray(hypothetical) * jnp.asarray(x), axis=axis)


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
      ValueError: arrays not 3-D, different shapes, or an alphabet axis not of size 4.

    Example:
      >>> import numpy as np, tempfile
      >>> x = np.eye(4, dtype=np.float32)[np.zeros((2, 10), int)]
      >>> s, a = export_modisco(tempfile.mkdtemp(), x, x)
      >>> np.load(s).shape
      (2, 4, 10)
    """
    x_shape, h_shape = np.shape(onehot), np.shape(hypothetical)
    if len(x_shape) != 3 or x_shape != h_shape:
        raise ValueError(
            "onehot and hypothetical must both be (N, L, 4) arrays of the same shape, got "
            f"{x_shape} and {h_shape}."
        )
    if x_shape[alphabet_axis] != 4:
        raise ValueError(
            f"alphabet_axis={alphabet_axis} has size {x_shape[alphabet_axis]}, not 4; "
            "modisco-lite needs DNA one-hot. Pass the right alphabet_axis."
        )
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
