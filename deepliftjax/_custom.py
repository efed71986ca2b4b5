"""Building blocks of rules: functions whose VJP is a DeepLIFT multiplier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp


def custom_multiplier(
    primal: Callable[..., Any], backward: Callable[[tuple, Any, Any], Sequence[Any]]
) -> Callable[..., Any]:
    """A function equal to ``primal`` whose VJP is ``backward(args, out, cotangent)``.

    ``backward`` returns one cotangent (or ``None`` for zero) per argument. The
    backward pass is ordinary JAX code, so the scores can be differentiated again.
    """

    @jax.custom_vjp
    def fun(*args):
        return primal(*args)

    def fwd(*args):
        out = primal(*args)
        return out, (args, out)

    def bwd(res, g):
        args, out = res
        cts = backward(args, out, g)
        return tuple(
            None if ct is None else sum_to_shape(ct, jnp.shape(a)).astype(jnp.result_type(a))
            for ct, a in zip(cts, args, strict=True)
        )

    fun.defvjp(fwd, bwd)
    return fun


def times(g: jax.Array, m: jax.Array) -> jax.Array:
    """``g * m``, and exactly 0 where ``g`` is 0.

    A position that receives no cotangent contributes nothing, even where its multiplier
    is infinite (a branch not taken that is undefined at the reference: ``log`` at 0).
    """
    return jnp.where(g == 0, jnp.zeros((), jnp.result_type(g, m)), g * m)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros((), jnp.result_type(num, den)), num / jnp.where(zero, 1, den))


def sum_to_shape(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum a cotangent over the axes it was broadcast along (rank-0 literal operands)."""
    if v.shape == tuple(shape):
        return v
    if len(shape) == 0:
        return jnp.sum(v)
    lead = v.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and v.shape[lead + i] != 1
    )
    return jnp.sum(v, axis=axes).reshape(shape)
