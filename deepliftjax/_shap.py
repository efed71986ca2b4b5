"""Many references: DeepLIFT-SHAP (the mean over references of DeepLIFT contributions).

``deeplift_shap(f, references)(x)`` returns ``mean_k m_k * (x - r_k)``, where ``m_k``
are the DeepLIFT multipliers of ``f`` at ``x`` against reference ``r_k``. The mean is
accumulated with :func:`jax.lax.scan` over chunks of references, so memory grows with
the chunk size, not with the number of references. Summation residuals
``sum_i m_k,i (x_i - r_k,i) - (f(x) - f(r_k))`` are computed on each reference's raw
multipliers, before any averaging or hypothetical projection.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from deepliftjax._api import deeplift_vjp, scores_of
from deepliftjax._checks import floored_delta, ratio
from deepliftjax._errors import error
from deepliftjax._hypothetical import (
    axis_from_end,
    check_onehot,
    hypothetical_from_multipliers,
)

__all__ = [
    "deeplift_shap",
    "ShapScores",
    "check_residuals",
    "Tally",
]


class ShapScores(NamedTuple):
    """Outputs of :func:`deeplift_shap` when more than contributions are asked for.

    Attributes:
      contributions: mean over references of ``m_k * (x - r_k)``, shaped like ``x``.
      hypothetical: mean over references of the hypothetical contributions (one-hot
        inputs; see :func:`deepliftjax.hypothetical_from_multipliers`), or ``None``.
      residuals: the absolute summation residual
        ``max_k |sum(m_k * (x - r_k)) - (f(x) - f(r_k))|``, a scalar per example, or
        ``None``.
      conditioning: ``sum_k sum|C_k| / sum_k max(|f(x) - f(r_k)|, floor)``, with
        ``C_k = m_k * (x - r_k)`` and the floor of :func:`deepliftjax.summation_check`:
        how many times larger than the changes they explain the scores are in total
        (with one reference, :func:`~deepliftjax.summation_check`'s conditioning; pooled
        over references so that one reference with ``f(r_k) ≈ f(x)`` does not dominate).
        A scalar per example, or ``None``.
    """

    contributions: Any
    hypothetical: Any = None
    residuals: Any = None
    conditioning: Any = None


def check_chunk_size(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise :class:`DeepLiftError` unless ``value`` is an int >= 1 (or None if allowed)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise error(
            f"{name} must be an int >= 1{' or None' if allow_none else ''}, got {value!r}.",
            f"{name} is how many are processed together; pass a positive int such as 10"
            + (" (None: all at once)." if allow_none else "."),
        )


def _leading(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise error(
            "references is an empty pytree.",
            "pass the references as a (K, *x.shape) array, or a pytree like x with a "
            "leading reference axis K on every leaf.",
        )
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise error(
            "references must have a leading reference axis K on every leaf, shaped "
            f"(K, *x.shape); got leaf shapes {[np.shape(v) for v in leaves]}.",
            "stack the references on a new axis 0 of the same length K on every leaf.",
        )
    num = sizes.pop()
    if num == 0:
        raise error(
            f"there are no references: K = 0 (leaf shapes {[np.shape(v) for v in leaves]}), "
            "and the mean over references of an empty set is undefined.",
            "pass at least one reference, shaped (K, *x.shape) with K >= 1 (refs[None] for "
            "a single one); a reference generator must return K >= 1 of them.",
        )
    return num


class _Widen(Exception):
    """Raised while tracing the scan body: the accumulators need wider dtypes."""

    def __init__(self, dtypes):
        super().__init__(f"accumulators need dtypes {dtypes}")
        self.dtypes = dtypes


def _acc_dtype(*values_or_dtypes) -> np.dtype:
    """Accumulators hold the dtype of what they accumulate, and at least float32."""
    return jnp.promote_types(jnp.result_type(*values_or_dtypes), jnp.float32)


def _dtypes(acc):
    return [jnp.result_type(a) for a in jax.tree_util.tree_leaves(acc)]


def deeplift_shap(
    f: Callable[..., Any],
    references: Any,
    *,
    argnums: int = 0,
    key: jax.Array | None = None,
    reference_chunk_size: int | None = 10,
    hypothetical: bool = False,
    alphabet_axis: int = -1,
    multiply_by_inputs: bool = True,
    onehot_axis: int | None = None,
    return_residuals: bool = False,
    return_conditioning: bool = False,
    **deeplift_options: Any,
) -> Callable[..., Any]:
    """DeepLIFT-SHAP: mean over references of DeepLIFT contributions.

    Args:
      f: function returning a scalar (like :func:`jax.grad`'s argument).
      references: ``(K, *x.shape)`` array (or pytree of such, matching ``x``), ``K >= 1``,
        or a generator ``(key, x) -> (K, *x.shape)`` such as
        ``functools.partial(dinuc_shuffle, num_shuffles=20)``. May be traced, so
        per-example references compose with :func:`jax.vmap`.
      argnums: which positional argument of ``f`` to attribute.
      key: PRNG key for a reference generator (may be traced under ``vmap``).
      reference_chunk_size: references processed together (vmapped); chunks are
        accumulated with ``lax.scan``, so memory is that of this many references.
        ``None`` processes all ``K`` at once.
      hypothetical: also return hypothetical contributions (one-hot ``x`` only).
      alphabet_axis: the one-hot axis of ``x`` for ``hypothetical``.
      multiply_by_inputs: as for :func:`deepliftjax.deeplift`: ``False`` returns the mean
        over references of the multipliers instead of the contributions.
      onehot_axis: as for :func:`deepliftjax.deeplift`: each reference's multipliers are
        mean-normalised over this axis (the one-hot alphabet) before they are used.
      return_residuals: also return the per-example absolute summation residual
        ``|sum(C_k) - Δf_k|`` (max over references, from each reference's raw
        multipliers); :func:`deepliftjax.summation_residual` gives the relative one.
      return_conditioning: also return the per-example conditioning (``sum_k sum|C_k| /
        sum_k |Δf_k|``, see :class:`ShapScores` and :func:`deepliftjax.summation_check`).
      **deeplift_options: passed to :func:`deepliftjax.deeplift_vjp` (``max_rule``,
        ``fallback``).

    Returns:
      A function with ``f``'s signature returning the mean contributions (shaped like
      ``args[argnums]``), or a :class:`ShapScores` when ``hypothetical``,
      ``return_residuals`` or ``return_conditioning`` is set. Means are accumulated in
      the dtype of the contributions, at least float32 (so bfloat16 and float16 inputs
      give float32 means, float64 inputs float64 ones).

    Raises:
      DeepLiftError: no references (``K = 0``), bad reference shapes, a
        ``reference_chunk_size`` below 1, a generator without ``key``, or ``f`` not
        returning a scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda x: jnp.sum(jnp.tanh(x))
      >>> refs = jnp.zeros((3, 4)).at[1].set(0.5)
      >>> deeplift_shap(f, refs)(jnp.ones(4)).shape
      (4,)
    """
    check_chunk_size("reference_chunk_size", reference_chunk_size, allow_none=True)

    def shap_fn(*args):
        x, refs = _shap_inputs(args, argnums, references, key, hypothetical, alphabet_axis)
        one_ref = _per_reference(
            f, args, argnums, deeplift_options, hypothetical, alphabet_axis,
            multiply_by_inputs, onehot_axis,
        )  # fmt: skip
        num_refs = _leading(refs)
        chunk = num_refs if reference_chunk_size is None else min(reference_chunk_size, num_refs)
        csum, hsum, resid, knum, kden = _over_references(one_ref, x, refs, chunk, hypothetical)
        contrib = jax.tree_util.tree_map(lambda s: s / num_refs, csum)
        if not (hypothetical or return_residuals or return_conditioning):
            return contrib
        return ShapScores(
            contrib,
            None if hsum is None else hsum / num_refs,
            resid if return_residuals else None,
            ratio(knum, kden) if return_conditioning else None,
        )

    return shap_fn


def _shap_inputs(args, argnums, references, key, hypothetical, alphabet_axis):
    """``(x, refs)`` for one call of a :func:`deeplift_shap` function, checked."""
    if not 0 <= argnums < len(args):
        raise error(
            f"argnums={argnums} but f was called with {len(args)} argument(s).",
            f"pass argnums in [0, {len(args)}), the position of the argument to attribute.",
        )
    x = args[argnums]
    if callable(references):
        if key is None:
            raise error(
                "references is a generator (key, x) -> (K, ...) but no key was given.",
                "pass key=jax.random.key(...) to deeplift_shap.",
            )
        refs = references(key, x)
    else:
        refs = references
    refs = jax.tree_util.tree_map(jnp.asarray, refs)
    x_struct = jax.tree_util.tree_structure(x)
    if jax.tree_util.tree_structure(refs) != x_struct:
        raise error(
            f"references must have x's pytree structure {x_struct}, got "
            f"{jax.tree_util.tree_structure(refs)}.",
            "give every leaf of x a (K, *leaf.shape) array of references.",
        )
    for xl, rl in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(refs), strict=True):
        if rl.ndim != jnp.ndim(xl) + 1 or rl.shape[1:] != jnp.shape(xl):
            raise error(
                f"references must be shaped (K, *x.shape) with x.shape={jnp.shape(xl)}, "
                f"got {rl.shape}.",
                "stack the references on a new leading axis; for a single reference "
                "use refs[None].",
            )
    _leading(refs)  # K >= 1
    if hypothetical:
        if not (hasattr(x, "shape") and hasattr(x, "ndim")):
            raise error(
                "hypothetical=True needs x to be one array (one-hot, the alphabet on "
                f"alphabet_axis), got {x_struct}.",
                "attribute the one-hot array alone, closing over any other inputs.",
            )
        axis_from_end(alphabet_axis, x.shape)
        check_onehot(x, alphabet_axis, what="deeplift_shap(hypothetical=True)")
    return x, refs


def _per_reference(
    f, args, argnums, deeplift_options, hypothetical, alphabet_axis, multiply_by_inputs,
    onehot_axis,
):  # fmt: skip
    """``ref -> (scores, hypothetical, residual, Σ|C|, floored Δf)`` for one reference."""
    vjp = deeplift_vjp
    x = args[argnums]

    def one_ref(ref):
        out, out_ref, pullback = vjp(f, ref, *args, argnums=argnums, **deeplift_options)
        if jnp.shape(out) != ():
            raise error(
                f"f must return a scalar, got shape {jnp.shape(out)}.",
                "select one output (e.g. lambda x: model(x)[i], or target= in attribute()).",
            )
        m = pullback(jnp.ones_like(out))
        if isinstance(m, tuple) and not isinstance(x, tuple) and len(m) == 1:
            m = m[0]
        contrib = jax.tree_util.tree_map(scores_of, m, x, ref)
        leaves = jax.tree_util.tree_leaves(contrib)
        dt = _acc_dtype(out, *leaves)  # the sums in at least float32
        total = sum((jnp.sum(c.astype(dt)) for c in leaves), jnp.zeros((), dt))
        total_abs = sum((jnp.sum(jnp.abs(c.astype(dt))) for c in leaves), jnp.zeros((), dt))
        resid = jnp.abs(total - (out.astype(dt) - out_ref.astype(dt)))
        hyp = None
        if hypothetical:
            hyp = hypothetical_from_multipliers(m, ref, axis=alphabet_axis)
        if onehot_axis is not None or not multiply_by_inputs:
            score = functools.partial(
                scores_of, multiply_by_inputs=multiply_by_inputs, onehot_axis=onehot_axis
            )
            contrib = jax.tree_util.tree_map(score, m, x, ref)
        return contrib, hyp, resid, total_abs, floored_delta(out, out_ref)

    return one_ref


def _over_references(one_ref, x, refs, chunk, hypothetical):
    """Sums (maxima for the residual) of ``one_ref`` over the references, ``chunk`` at a
    time (vmapped), full chunks under ``lax.scan``."""

    def chunk_stats(ref_chunk):
        c, h, r, k_num, k_den = jax.vmap(one_ref)(ref_chunk)
        return c, h, jnp.max(r), k_num, k_den

    def add(acc, stats):
        """acc + the chunk's sums (and maxima), in the wider of the two dtypes."""
        csum, hsum, rmax, knum, kden = acc
        c, h, r, k_num, k_den = stats
        wide = lambda a, v: a.astype(_acc_dtype(a, v))
        total = lambda a, v: wide(a, v) + jnp.sum(wide(v, a), 0)
        csum = jax.tree_util.tree_map(total, csum, c)
        if hsum is not None:
            hsum = total(hsum, h)
        rmax = jnp.maximum(wide(rmax, r), wide(r, rmax))
        return csum, hsum, rmax, total(knum, k_num), total(kden, k_den)

    # Accumulators start in the dtypes the contributions will have (m has x's dtype);
    # the tail chunk and the scan body widen them if what they accumulate is wider.
    leaf_dt = jax.tree_util.tree_map(lambda xl, rl: _acc_dtype(xl, rl), x, refs)
    stat_dt = _acc_dtype(*jax.tree_util.tree_leaves(leaf_dt))
    acc = (
        jax.tree_util.tree_map(lambda xl, dt: jnp.zeros(jnp.shape(xl), dt), x, leaf_dt),
        jnp.zeros(jnp.shape(x), leaf_dt) if hypothetical else None,
        jnp.zeros((), stat_dt),
        jnp.zeros((), stat_dt),
        jnp.zeros((), stat_dt),
    )
    n_full, rest = divmod(_leading(refs), chunk)
    if rest:
        tail = jax.tree_util.tree_map(lambda r: r[n_full * chunk :], refs)
        acc = add(acc, chunk_stats(tail))
    if n_full == 1:
        acc = add(acc, chunk_stats(jax.tree_util.tree_map(lambda r: r[:chunk], refs)))
    elif n_full > 1:
        acc = _scan_chunks(add, chunk_stats, acc, refs, chunk, n_full)
    return acc


def _scan_chunks(add, chunk_stats, acc, refs, chunk, n_full):
    """acc + the sums over ``n_full`` chunks of references, in a ``lax.scan``.

    A scan's carry keeps its dtypes; if a chunk's results are wider than the carry (f
    returns float64 for float32 inputs, say), the body raises while it is traced, before
    anything runs, and the scan is traced again with the carry widened.
    """

    def body(acc, i):
        # dynamic_slice reads the chunk in place: no copy of the (K, ...) references
        ref_chunk = jax.tree_util.tree_map(
            lambda r: lax.dynamic_slice_in_dim(r, i * chunk, chunk), refs
        )
        new = add(acc, chunk_stats(ref_chunk))
        if _dtypes(new) != _dtypes(acc):
            raise _Widen(_dtypes(new))
        return new, None

    try:
        return lax.scan(body, acc, jnp.arange(n_full))[0]
    except _Widen as w:
        leaves, tree = jax.tree_util.tree_flatten(acc)
        wider = tree.unflatten([a.astype(d) for a, d in zip(leaves, w.dtypes, strict=True)])
        return _scan_chunks(add, chunk_stats, wider, refs, chunk, n_full)


class Tally:
    """Examples whose value exceeds a threshold: how many, the worst value and where.

    Shared by :func:`check_residuals` and :func:`deepliftjax.attribute` (residuals, where
    NaN counts as over the threshold, and conditioning, where it does not).

    Args:
      threshold: the value above which an example is counted; ``None`` counts nothing.
      nan_exceeds: whether NaN counts as above the threshold.
    """

    def __init__(self, threshold: float | None, *, nan_exceeds: bool = True):
        self.threshold = threshold
        self.nan_exceeds = nan_exceeds
        self.count, self.worst, self.where = 0, -1.0, -1

    def add(self, values: ArrayLike, offset: int = 0) -> None:
        """Count the examples of ``values`` (example ``offset`` first) above the threshold."""
        if self.threshold is None:
            return
        v = np.asarray(values)
        over = ~(v <= self.threshold) if self.nan_exceeds else v > self.threshold
        if not over.any():
            return
        self.count += int(over.sum())
        ranked = np.where(over, np.where(np.isnan(v), np.inf, v), -np.inf)
        i = int(np.argmax(ranked))
        if ranked[i] > self.worst:
            self.worst, self.where = float(v[i]), offset + i

    def residual_message(self) -> str:
        """The warning about summation residuals above the threshold."""
        return (
            f"{self.count} example(s) break DeepLIFT's summation-to-delta by more than "
            f"{self.threshold:g} in absolute residual |sum(C) - Δf| (worst: example "
            f"{self.where}, absolute residual {self.worst:.3g}). "
            "A rule is inexact for this model (check for warnings about gradient "
            "fallbacks) or the scale of f is large; raise residual_threshold to silence."
        )


def check_residuals(residuals: ArrayLike, threshold: float = 1e-3, *, offset: int = 0) -> int:
    """Warn when summation residuals exceed ``threshold``; return how many did.

    Args:
      residuals: per-example residuals, as returned by :func:`deeplift_shap`.
      threshold: absolute residual above which an example is reported (NaN counts).
      offset: index of the first example (for messages about a chunk).

    Returns:
      The number of examples above the threshold.

    Example:
      >>> check_residuals([0.0, 1e-6])
      0
    """
    tally = Tally(threshold)
    tally.add(residuals, offset)
    if tally.count:
        warnings.warn(tally.residual_message(), stacklevel=2)
    return tally.count
