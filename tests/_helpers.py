"""Shared checks for the test suite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rel_sum_error(contribs, f_x, f_ref) -> float:
    """|sum(C) - (f(x) - f(ref))| relative to |f(x) - f(ref)|.

    The denominator is floored at 1e-3 * max(|f(x)|, |f(ref)|, 1): float32 rounds f itself
    at ~1e-7 of its size, so a smaller difference cannot be checked to 1e-5 of itself.
    """
    total = sum(float(jnp.sum(c)) for c in jax.tree_util.tree_leaves(contribs))
    delta = float(f_x) - float(f_ref)
    scale = max(abs(float(f_x)), abs(float(f_ref)), 1.0)
    return abs(total - delta) / max(abs(delta), 1e-3 * scale)


def rel_sum_errors_batch(contribs, f_x, f_ref) -> np.ndarray:
    c = np.asarray(contribs, np.float64).reshape(len(f_x), -1).sum(1)
    f_x, f_ref = np.asarray(f_x, np.float64), np.asarray(f_ref, np.float64)
    delta = f_x - f_ref
    scale = np.maximum(np.maximum(abs(f_x), abs(f_ref)), 1.0)
    return abs(c - delta) / np.maximum(abs(delta), 1e-3 * scale)


def equations_in(jaxpr) -> list:
    """Every equation of a jaxpr, including those of its sub-jaxprs (jit, scan, cond, ...)."""
    found = []

    def visit(j):
        j = getattr(j, "jaxpr", j)
        for eqn in j.eqns:
            found.append(eqn)
            for v in eqn.params.values():
                for sub in v if isinstance(v, tuple | list) else (v,):
                    if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        visit(sub)

    visit(jaxpr)
    return found


def primitives_in(jaxpr) -> set:
    """Every primitive in a jaxpr, including those in sub-jaxprs."""
    return {eqn.primitive for eqn in equations_in(jaxpr)}


def f64(f, x) -> float:
    """f evaluated in float64 (x64 enabled for the call): a reference for float32 sums."""
    with jax.enable_x64(True):
        return float(f(jnp.asarray(np.asarray(x, np.float64))))


def sum_error_vs_float_noise(contribs, f, x, r) -> tuple[float, float]:
    """(error, allowed): |sum(C) - Δf| against Δf in float64, and what float32 allows.

    Allowed is 1e-5 |Δf|, or, where f's own float32 rounding is larger than that (Δf
    tiny against f), four times that rounding (|Δf32 - Δf64|) plus 2 ulp of the scale.
    """
    total = float(np.sum(np.asarray(contribs, np.float64)))
    d64 = f64(f, x) - f64(f, r)
    d32 = float(f(jnp.asarray(x))) - float(f(jnp.asarray(r)))
    scale = max(abs(float(f(jnp.asarray(x)))), abs(float(f(jnp.asarray(r)))), 1e-30)
    noise = 4 * abs(d32 - d64) + 2 * float(np.finfo(np.float32).eps) * scale
    return abs(total - d64), max(1e-5 * abs(d64), noise)


def rel_sum_errors_f64(contribs, f, xs, refs) -> np.ndarray:
    """Per example |sum(C) - Δf| / |Δf|, with Δf evaluated in float64 (the true difference).

    ``f.f64``, when present, is f with float64 parameters (Flax models keep float32 state).
    """
    c = np.asarray(contribs, np.float64).reshape(len(xs), -1).sum(1)
    with jax.enable_x64(True):
        g = jax.jit(jax.vmap(getattr(f, "f64", f)))
        fx = np.asarray(g(jnp.asarray(np.asarray(xs, np.float64))), np.float64)
        fr = np.asarray(g(jnp.asarray(np.asarray(refs, np.float64))), np.float64)
    delta = fx - fr
    scale = np.maximum(np.maximum(abs(fx), abs(fr)), 1.0)
    return abs(c - delta) / np.maximum(abs(delta), 1e-3 * scale)
