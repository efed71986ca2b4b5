"""The summation guard: every DeepLIFT call checks its own scores against Δf.

The interpreter holds ``f(x)`` and ``f(ref)`` anyway, so each call of :func:`deeplift`,
:func:`deeplift_vjp`'s pullback and :func:`deeplift_shap` (per reference) compares
``sum(C)`` with ``f(x) - f(ref)`` per example and reports the examples that miss it. The
rules make the scores exact; the guard makes a wrong one impossible to miss, whatever
the cause (a rule gap, a user's rule, ``fallback="gradient"``, reduced precision).

The report is an equation of its own with JAX's debug effect (like
``jax.debug.callback``): it survives ``jit`` and dead-code elimination, works inside
``scan``, ``cond`` and ``checkpoint``, reports on the primal values under ``grad``, and
under ``vmap`` stays one check over the whole batch (``jax.debug.callback`` would unroll
once per example). Compiled, it costs a few reductions and one scalar branch; the host
is called only when an example fails. It never changes the scores.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax import _compat
from deepliftjax._errors import DeepLiftError

CHECKS = ("warn", "raise", "checkify", None)
"""The guard's modes (the ``check=`` keyword)."""

TOLERANCES = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
"""Default relative tolerance per working dtype (the least precise of scores and output)."""

ULPS = 64
"""Absolute slack, in units of the working dtype's eps times ``max(|f(x)|, |f(ref)|)``: Δf
itself is only known to a few roundings of ``f``, so a residual below this is no evidence
of a wrong rule."""

CONDITIONING = 1e3
"""Above this ``sum|C| / |Δf|`` the report names cancellation as the likely cause."""

_STATS = ("total", "delta", "scale", "sum_abs")


class SummationWarning(UserWarning):
    """DeepLIFT scores that miss summation to delta (eq. 1) beyond the tolerance.

    Emitted by the summation guard (``check="warn"``, the default) of
    :func:`deepliftjax.deeplift`, :func:`deepliftjax.deeplift_vjp`'s pullback,
    :func:`deepliftjax.deeplift_shap` and :func:`deepliftjax.attribute`. The message names
    the worst example, its residual and the usual causes. ``check="raise"`` makes it an
    error; ``warnings.filterwarnings("error", category=SummationWarning)`` does too.
    """


def check_options(check: Any, tolerance: Any) -> None:
    """Raise :class:`DeepLiftError` for a ``check``/``check_tolerance`` that is not valid."""
    if check not in CHECKS:
        raise DeepLiftError(
            f"check={check!r} is not one of {CHECKS}.\nHint: 'warn' (default) warns when "
            "scores miss summation to delta, 'raise' raises (a DeepLiftError outside jit; "
            "under jit the call fails with the same message), 'checkify' reports through "
            "jax.experimental.checkify, None turns the guard off."
        )
    if tolerance is not None and not (
        isinstance(tolerance, int | float | np.floating) and 0 < float(tolerance) < np.inf
    ):
        raise DeepLiftError(
            f"check_tolerance={tolerance!r} is not a positive number.\nHint: a relative "
            f"tolerance such as 1e-4 (None: by dtype, {TOLERANCES})."
        )


def working_dtype(*values: Any) -> np.dtype:
    """The least precise float dtype among ``values`` (scores and outputs)."""
    dts = [jnp.result_type(v) for v in values if jnp.issubdtype(jnp.result_type(v), jnp.inexact)]
    if not dts:
        return np.dtype(np.float32)
    return min(dts, key=lambda d: np.finfo(d).bits * 100 + np.finfo(d).nmant)


def guard(
    contributions: Sequence[Any],
    out: Sequence[Any],
    out_ref: Sequence[Any],
    cotangent: Sequence[Any] | None,
    *,
    check: str | None,
    tolerance: float | None,
    what: str,
) -> None:
    """Report the examples whose scores miss ``sum(cotangent * (out - out_ref))``.

    Args:
      contributions: the leaves of the raw contributions ``m * (x - ref)``.
      out, out_ref: the leaves of ``f`` at the input and at the reference.
      cotangent: the leaves of the attributed combination of outputs (None: ones).
      check: one of :data:`CHECKS`.
      tolerance: relative tolerance, or None for the dtype's default (:data:`TOLERANCES`).
      what: the public function's name, for the message.
    """
    if check is None:
        return
    dtype = working_dtype(*contributions, *out)
    tol = float(TOLERANCES.get(np.dtype(dtype).name, 1e-4) if tolerance is None else tolerance)
    acc = jnp.promote_types(dtype, jnp.float32)
    if cotangent is None:
        cotangent = [None] * len(out)
    zero = jnp.zeros((), acc)
    total = sum((jnp.sum(jnp.asarray(c, acc)) for c in contributions), zero)
    sum_abs = sum((jnp.sum(jnp.abs(jnp.asarray(c, acc))) for c in contributions), zero)
    delta, scale = zero, zero
    for o, r, ct in zip(out, out_ref, cotangent, strict=True):
        o, r = jnp.asarray(o, acc), jnp.asarray(r, acc)
        w = jnp.ones((), acc) if ct is None else jnp.asarray(ct, acc)
        # an output that does not move contributes nothing, even where it is infinite
        d = jnp.where(o == r, jnp.zeros((), acc), o - r)
        delta = delta + jnp.sum(jnp.where(w == 0, 0, w * d))
        big = jnp.maximum(
            jnp.abs(jnp.where(jnp.isfinite(o), o, 0)), jnp.abs(jnp.where(jnp.isfinite(r), r, 0))
        )
        scale = scale + jnp.sum(jnp.abs(w) * big)
    stats = jax.lax.stop_gradient(jnp.stack([total, delta, scale, sum_abs]))
    params = dict(
        mode=check, tol=tol, eps=float(np.finfo(dtype).eps), dtype=np.dtype(dtype).name, what=what
    )
    if check == "checkify":
        _checkify(stats, **params)
    else:
        _report_p.bind(stats, **params)


def _finite_abs(v: Any) -> Any:
    return jnp.abs(jnp.where(jnp.isfinite(v), v, jnp.zeros((), v.dtype)))


def _failing(stats: Any, tol: float, eps: float, xp: Any = jnp) -> Any:
    """Per example: whether the scores miss Δf (or are not finite)."""
    total, delta, scale, _ = (stats[..., i] for i in range(4))
    resid = xp.abs(total - delta)
    allowed = tol * xp.abs(delta) + ULPS * eps * scale
    finite = xp.isfinite(total) & xp.isfinite(delta)
    return ~finite | (resid > allowed)


def _checkify(stats, *, mode, tol, eps, dtype, what):
    from jax.experimental import checkify

    bad = _failing(stats, tol, eps)
    worst = jnp.argmax(jnp.where(bad, jnp.abs(stats[..., 0] - stats[..., 1]), -1.0).ravel())
    flat = stats.reshape(-1, 4)
    checkify.check(
        ~jnp.any(bad),
        f"deepliftjax.{what}: {{n}} example(s) miss summation to delta beyond tolerance "
        f"{tol:g} (worst: flat index {{i}}, sum of scores {{s}} where f(x) - f(ref) = {{d}}).",
        n=jnp.sum(bad),
        i=worst,
        s=flat[worst, 0],
        d=flat[worst, 1],
    )


def _lowered(stats, *, mode, tol, eps, dtype, what):
    params = dict(mode=mode, tol=tol, eps=eps, dtype=dtype, what=what)

    def on_host(s):
        _host_check(np.asarray(s), **params)

    jax.lax.cond(
        jnp.any(_failing(stats, tol, eps)),
        lambda s: jax.debug.callback(on_host, s),
        lambda s: None,
        stats,
    )
    return []


def _host_check(stats, *, mode, tol, eps, dtype, what):
    stats = np.asarray(stats, np.float64)
    bad = _failing(stats, tol, eps, xp=np)
    if not np.any(bad):
        return
    message = report_message(stats, bad, tol=tol, eps=eps, dtype=dtype, what=what)
    if mode == "raise":
        raise DeepLiftError(message)
    warnings.warn(message, SummationWarning, stacklevel=2)


def report_message(stats, bad, *, tol, eps, dtype, what) -> str:
    """The guard's report: the worst example, its numbers and the likely cause."""
    total, delta, scale, sum_abs = (stats[..., i] for i in range(4))
    with np.errstate(all="ignore"):
        resid = np.abs(total - delta)
        rel = np.where(delta != 0, resid / np.abs(delta), np.where(resid == 0, 0.0, np.inf))
        badness = np.where(bad, np.nan_to_num(rel, nan=np.inf, posinf=np.inf), -1.0)
    where = np.unravel_index(int(np.argmax(badness)), bad.shape) if bad.ndim else ()
    t, d, sc, sa = (float(v[where]) for v in (total, delta, scale, sum_abs))
    r = float(rel[where])
    n, size = int(np.sum(bad)), int(bad.size)
    at = f" at batch index {tuple(int(i) for i in where)} (outermost vmap first)" if where else ""
    head = (
        f"deepliftjax.{what}: the scores of {n} of {size} example(s) miss summation to "
        f"delta (eq. 1: sum of scores == f(x) - f(ref)) beyond the {dtype} tolerance "
        f"{tol:g}. Worst{at}: sum of scores {t:.7g} where f(x) - f(ref) = {d:.7g} "
        f"(relative residual {r:.3g}; sum|C| = {sa:.4g})."
    )
    return (
        head
        + "\n"
        + _cause(t, d, sc, sa, eps)
        + (
            "\nHint: check='raise' makes this an error, check=None turns the guard off, "
            "check_tolerance=... sets the relative tolerance."
        )
    )


def _cause(total, delta, scale, sum_abs, eps) -> str:
    if not np.isfinite(delta):
        return (
            "f(x) - f(ref) is not finite: f is infinite or NaN at the input or the "
            "reference (and not equal at both), so no finite scores can sum to it. Check "
            "f at both, and inputs and references with deepliftjax.check_finite."
        )
    if not np.isfinite(total):
        return (
            "The scores are not finite (NaN or inf) although f(x) - f(ref) is: usually "
            "an input or reference holding inf/NaN (deepliftjax.check_finite finds it), or "
            "a value undefined between input and reference that no rule could avoid; "
            "please report it with the function, input and reference."
        )
    unit = max(eps * scale, np.finfo(np.float64).tiny)
    ulps = abs(delta) / unit
    if ulps < 4 * ULPS and abs(total - delta) < 64 * ULPS * unit:
        return (
            f"|f(x) - f(ref)| is only {ulps:.3g} roundings of f (eps * |f| = "
            f"{eps * scale:.3g}): f(x) and f(ref) agree to the precision of the dtype, so "
            "the residual may be rounding of f itself rather than a wrong rule. Recheck in "
            "float64 (jax.config.update('jax_enable_x64', True)), or use a reference "
            "farther from the input."
        )
    if delta != 0 and sum_abs > CONDITIONING * abs(delta):
        return (
            f"The scores cancel: sum|C| / |Δf| = {sum_abs / abs(delta):.3g}, so float "
            "rounding is amplified as much. Typical of a reference at which a "
            "normalisation layer sees zero variance (an all-zero reference for a "
            "LayerNorm/RMSNorm input): try product_rule='balanced' or a reference with "
            "some variance there; deepliftjax.summation_check shows the conditioning."
        )
    return (
        "Usual causes: a primitive without an exact rule (fallback='gradient'), a rule "
        "registered with deepliftjax.rules that does not satisfy summation to delta, "
        "reduced precision in matrix products (precision=None on a GPU or TPU), or a "
        "rule gap in deepliftjax (please report it with the function, input and "
        "reference)."
    )


def _impl(stats, *, mode, tol, eps, dtype, what):
    _host_check(np.asarray(stats), mode=mode, tol=tol, eps=eps, dtype=dtype, what=what)
    return []


_report_p = _compat.define_report_primitive("deeplift_summation_guard", _impl, _lowered)
