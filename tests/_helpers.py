"""Shared checks for the test suite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rel_sum_error(contribs, f_x, f_ref) -> float:
    """|sum(C) - (f(x) - f(ref))| relative to |f(x) - f(ref)| (floored at 1e-6 * scale)."""
    total = sum(float(jnp.sum(c)) for c in jax.tree_util.tree_leaves(contribs))
    delta = float(f_x) - float(f_ref)
    scale = max(abs(float(f_x)), abs(float(f_ref)), 1.0)
    return abs(total - delta) / max(abs(delta), 1e-6 * scale)


def rel_sum_errors_batch(contribs, f_x, f_ref) -> np.ndarray:
    c = np.asarray(contribs, np.float64).reshape(len(f_x), -1).sum(1)
    f_x, f_ref = np.asarray(f_x, np.float64), np.asarray(f_ref, np.float64)
    delta = f_x - f_ref
    scale = np.maximum(np.maximum(abs(f_x), abs(f_ref)), 1.0)
    return abs(c - delta) / np.maximum(abs(delta), 1e-6 * scale)


def primitives_in(jaxpr) -> set:
    """Every primitive in a jaxpr, including those in sub-jaxprs."""
    found = set()

    def visit(j):
        j = getattr(j, "jaxpr", j)
        for eqn in j.eqns:
            found.add(eqn.primitive)
            for v in eqn.params.values():
                for sub in v if isinstance(v, tuple | list) else (v,):
                    if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        visit(sub)

    visit(jaxpr)
    return found
