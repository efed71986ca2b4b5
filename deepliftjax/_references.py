"""Many references: DeepLIFT-SHAP (the mean over references of DeepLIFT contributions).

``deeplift_shap(f, references)(x)`` returns ``mean_k m_k * (x - r_k)``, where ``m_k``
are the DeepLIFT multipliers of ``f`` at ``x`` against reference ``r_k``. The mean is
accumulated with :func:`jax.lax.scan` over chunks of references, so memory grows with
the chunk size, not with the number of references. Summation residuals
``sum_i m_k,i (x_i - r_k,i) - (f(x) - f(r_k))`` are computed on each reference's raw
multipliers, before any averaging or hypothetical projection.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from deepliftjax._hypothetical import hypothetical_from_multipliers

__all__ = ["deeplift_shap", "ShapScores", "check_residuals"]

ReferenceGenerator = Callable[[jax.Array, jax.Array], Any]


def _deeplift_vjp():
    from deepliftjax._api import deeplift_vjp  # the core transform

    return deeplift_vjp


class ShapScores(NamedTuple):
    """Outputs of :func:`deeplift_shap` when more than contributions are asked for.

    Attributes:
      contributions: mean over references of ``m_k * (x - r_k)``, shaped like ``x``.
      hypothetical: mean over references of the hypothetical contributions (one-hot
        inputs; see :func:`deepliftjax.hypothetical_contributions`), or ``None``.
      residuals: ``max_k |sum(m_k * (x - r_k)) - (f(x) - f(r_k))|``, a scalar per
        example, or ``None``.
    """

    contributions: Any
    hypothetical: Any = None
    residuals: Any = None


def _leading(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("references is an empty pytree.")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "references must have a leading reference axis K on every leaf, shaped "
            f"(K, *x.shape); got leaf shapes {[np.shape(v) for v in leaves]}."
        )
    return sizes.pop()


def deeplift_shap(
    f: Callable[..., Any],
    references: Any,
    *,
    argnums: int = 0,
    key: jax.Array | None = None,
    reference_chunk_size: int | None = 10,
    hypothetical: bool = False,
    alphabet_axis: int = -1,
    return_residuals: bool = False,
    **deeplift_options: Any,
) -> Callable[..., Any]:
    """DeepLIFT-SHAP: mean over references of DeepLIFT contributions.

    Args:
      f: function returning a scalar (like :func:`jax.grad`'s argument).
      references: ``(K, *x.shape)`` array (or pytree of such, matching ``x``), or a
        generator ``(key, x) -> (K, *x.shape)`` such as
        ``functools.partial(dinuc_shuffle, num_shuffles=20)``. May be traced, so
        per-example references compose with :func:`jax.vmap`.
      argnums: which positional argument of ``f`` to attribute.
      key: PRNG key for a reference generator (may be traced under ``vmap``).
      reference_chunk_size: references processed together (vmapped); chunks are
        accumulated with ``lax.scan``, so memory is that of this many references.
        ``None`` processes all ``K`` at once.
      hypothetical: also return hypothetical contributions (one-hot ``x`` only).
      alphabet_axis: the one-hot axis of ``x`` for ``hypothetical``.
      return_residuals: also return the per-example summation residual (max over
        references of the absolute residual of each reference's raw multipliers).
      **deeplift_options: passed to :func:`deepliftjax.deeplift_vjp` (``max_rule``,
        ``fallback``).

    Returns:
      A function with ``f``'s signature returning the mean contributions (shaped like
      ``args[argnums]``), or a :class:`ShapScores` when ``hypothetical`` or
      ``return_residuals`` is set.

    Raises:
      ValueError: bad reference shapes, a generator without ``key``, or ``f`` not
        returning a scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda x: jnp.sum(jnp.tanh(x))
      >>> refs = jnp.zeros((3, 4)).at[1].set(0.5)
      >>> deeplift_shap(f, refs)(jnp.ones(4)).shape
      (4,)
    """
    if reference_chunk_size is not None and reference_chunk_size < 1:
        raise ValueError(f"reference_chunk_size must be >= 1 or None, got {reference_chunk_size}.")

    def shap_fn(*args):
        if not 0 <= argnums < len(args):
            raise ValueError(f"argnums={argnums} but f was called with {len(args)} arguments.")
        x = args[argnums]
        if callable(references):
            if key is None:
                raise ValueError(
                    "references is a generator (key, x) -> (K, ...): pass key=jax.random.key(...)."
                )
            refs = references(key, x)
        else:
            refs = references
        refs = jax.tree_util.tree_map(jnp.asarray, refs)
        x_struct = jax.tree_util.tree_structure(x)
        if jax.tree_util.tree_structure(refs) != x_struct:
            raise ValueError(
                f"references must have x's pytree structure {x_struct}, got "
                f"{jax.tree_util.tree_structure(refs)}."
            )
        for xl, rl in zip(
            jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(refs), strict=True
        ):
            if rl.ndim != jnp.ndim(xl) + 1 or rl.shape[1:] != jnp.shape(xl):
                raise ValueError(
                    f"references must be shaped (K, *x.shape) with x.shape={jnp.shape(xl)}, "
                    f"got {rl.shape}; for a single reference use refs[None]."
                )
        num_refs = _leading(refs)
        chunk = num_refs if reference_chunk_size is None else min(reference_chunk_size, num_refs)

        vjp = _deeplift_vjp()

        def one_ref(ref):
            out, out_ref, pullback = vjp(f, ref, *args, argnums=argnums, **deeplift_options)
            if jnp.shape(out) != ():
                raise ValueError(
                    f"f must return a scalar, got shape {jnp.shape(out)}; select one output "
                    "(e.g. lambda x: model(x)[i], or target= in attribute())."
                )
            m = pullback(jnp.ones_like(out))
            if isinstance(m, tuple) and not isinstance(x, tuple) and len(m) == 1:
                m = m[0]
            contrib = jax.tree_util.tree_map(lambda mi, xi, ri: mi * (xi - ri), m, x, ref)
            total = sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(contrib))
            resid = jnp.abs(total - (out - out_ref))
            hyp = None
            if hypothetical:
                hyp = hypothetical_from_multipliers(m, ref, axis=alphabet_axis)
            return contrib, hyp, resid

        def chunk_sums(ref_chunk):
            c, h, r = jax.vmap(one_ref)(ref_chunk)
            csum = jax.tree_util.tree_map(lambda a: jnp.sum(a, 0), c)
            hsum = None if h is None else jnp.sum(h, 0)
            return csum, hsum, jnp.max(r)

        n_full, rest = divmod(num_refs, chunk)

        def body(acc, i):
            # dynamic_slice reads the chunk in place: no copy of the (K, ...) references
            ref_chunk = jax.tree_util.tree_map(
                lambda r: lax.dynamic_slice_in_dim(r, i * chunk, chunk), refs
            )
            s = chunk_sums(ref_chunk)
            acc = jax.tree_util.tree_map(jnp.add, acc[:2], s[:2]) + (jnp.maximum(acc[2], s[2]),)
            return acc, None

        zeros = jax.tree_util.tree_map(
            lambda v: jnp.zeros(jnp.shape(v), jnp.result_type(v, jnp.float32)), x
        )
        acc = (zeros, zeros if hypothetical else None, jnp.zeros((), jnp.float32))
        if n_full == 1:
            acc, _ = body(acc, 0)
        else:
            acc, _ = lax.scan(body, acc, jnp.arange(n_full))
        if rest:
            tail = jax.tree_util.tree_map(lambda r: r[n_full * chunk :], refs)
            s = chunk_sums(tail)
            acc = jax.tree_util.tree_map(jnp.add, acc[:2], s[:2]) + (jnp.maximum(acc[2], s[2]),)
        csum, hsum, resid = acc
        contrib = jax.tree_util.tree_map(lambda s: s / num_refs, csum)
        if not (hypothetical or return_residuals):
            return contrib
        return ShapScores(
            contrib,
            None if hsum is None else hsum / num_refs,
            resid if return_residuals else None,
        )

    return shap_fn


def check_residuals(residuals: ArrayLike, threshold: float = 1e-3, *, offset: int = 0) -> int:
    """Warn when summation residuals exceed ``threshold``; return how many did.

    Args:
      residuals: per-example residuals, as returned by :func:`deeplift_shap`.
      threshold: absolute residual above which an example is reported.
      offset: index of the first example (for messages about a chunk).

    Returns:
      The number of examples above the threshold.

    Example:
      >>> check_residuals([0.0, 1e-6])
      0
    """
    r = np.asarray(residuals)
    bad = np.flatnonzero(~(r <= threshold))  # NaN counts as bad
    if bad.size:
        worst = int(bad[np.nanargmax(np.where(np.isnan(r[bad]), np.inf, r[bad]))])
        warnings.warn(
            f"{bad.size} example(s) break DeepLIFT's summation-to-delta by more than "
            f"{threshold:g} (worst: example {offset + worst}, residual {r[worst]:.3g}). "
            "A rule is inexact for this model (check for warnings about gradient "
            "fallbacks) or the scale of f is large; raise residual_threshold to silence.",
            stacklevel=2,
        )
    return int(bad.size)
