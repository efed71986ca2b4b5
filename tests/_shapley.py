"""Exact Shapley values by enumeration: an oracle for functions of at most 12 inputs.

The players are the entries of ``x``; a coalition S is the hybrid point ``z_S`` that takes
``x`` on S and ``ref`` elsewhere, and its value is ``f(z_S)``. Every one of the ``2^n``
hybrids is evaluated in float64 in one batched call (``jit(vmap(f))`` with x64 on), then

    φ_i = Σ_{S ∌ i} |S|! (n − |S| − 1)! / n! · (f(z_{S ∪ {i}}) − f(z_S)).

No sampling, no linearisation: the only error is float64's rounding of f itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

MAX_PLAYERS = 12


def coalitions(n: int) -> np.ndarray:
    """(2^n, n) booleans: row s is the coalition whose members are the set bits of s."""
    s = np.arange(2**n, dtype=np.int64)[:, None]
    return ((s >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def coalition_values(f64_fn: Callable, x, ref) -> np.ndarray:
    """f at all 2^n hybrid points, in float64, in one compiled batched call."""
    x = np.asarray(x, np.float64)
    ref = np.broadcast_to(np.asarray(ref, np.float64), x.shape)
    n = x.size
    if n > MAX_PLAYERS:
        raise ValueError(f"exact_shapley enumerates 2^n coalitions: n = {n} > {MAX_PLAYERS}")
    members = coalitions(n)
    hybrids = np.where(members, x.ravel(), ref.ravel()).reshape((2**n,) + x.shape)
    with jax.enable_x64(True):
        g = jax.jit(jax.vmap(lambda z: jnp.asarray(f64_fn(z), jnp.float64).reshape(())))
        return np.asarray(g(jnp.asarray(hybrids)), np.float64)


def shapley_from_values(values: np.ndarray, n: int) -> np.ndarray:
    """φ from the 2^n coalition values (index s = the coalition of s's set bits)."""
    s = np.arange(2**n, dtype=np.int64)
    size = np.array([bin(int(v)).count("1") for v in s])
    weight = np.array(
        [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    )
    phi = np.empty(n)
    for i in range(n):
        without = s[(s >> i) & 1 == 0]  # coalitions without i
        gain = values[without | (1 << i)] - values[without]
        phi[i] = np.sum(weight[size[without]] * gain)
    return phi


def exact_shapley(f64_fn: Callable, x, ref) -> np.ndarray:
    """Exact Shapley values of ``f64_fn`` at ``x`` against ``ref`` (x's shape, float64).

    ``f64_fn`` maps an array of x's shape to a scalar and must be dtype-agnostic (it is
    called on float64 arrays with x64 enabled). Non-finite coalition values propagate.
    """
    x = np.asarray(x, np.float64)
    values = coalition_values(f64_fn, x, ref)
    return shapley_from_values(values, x.size).reshape(x.shape)


def delta_f64(f64_fn: Callable, x, ref) -> float:
    """f(x) − f(ref) in float64 (the grand coalition minus the empty one)."""
    x = np.asarray(x, np.float64)
    ref = np.broadcast_to(np.asarray(ref, np.float64), x.shape)
    with jax.enable_x64(True):
        g = jax.jit(lambda z: jnp.asarray(f64_fn(z), jnp.float64).reshape(()))
        return float(g(jnp.asarray(x))) - float(g(jnp.asarray(ref)))
