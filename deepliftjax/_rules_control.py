"""Rules for higher-order primitives: calls, custom derivatives, remat, cond, scan, while.

Calls are interpreted inline (a custom derivative is ignored: DeepLIFT replaces it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax import _compat
from deepliftjax._compat import primitive
from deepliftjax._interpreter import Context, Pair, eval_closed, eval_jaxpr, register_rule
from deepliftjax._rules_elementwise import _select_n_rule

# ---- calls ------------------------------------------------------------------------------


def defcall(prim: Any, param: str) -> None:
    """Interpret the jaxpr held in ``params[param]`` inline."""

    def rule(ctx: Context, *vals: Any, **params: Any) -> list[Any]:
        return eval_closed(params[param], vals, ctx.options)

    register_rule(prim, rule)


def _remat_rule(ctx: Context, *vals: Any, jaxpr: Any, **params: Any) -> list[Any]:
    inner, consts = _compat.open_jaxpr(jaxpr)
    return eval_jaxpr(inner, consts, vals, ctx.options)


# ---- cond / switch ----------------------------------------------------------------------


def _as_pair(v: Any) -> Pair:
    return v if isinstance(v, Pair) else Pair(v, v)


def _cond_rule(ctx: Context, index: Any, *ops: Any, branches: Any, **params: Any) -> list[Any]:
    """Every branch is interpreted on the pairs; the outputs are combined by the select rule.

    Where input and reference take the same branch this is that branch; where they take
    different branches it is the exact select between the two branch outputs.
    """
    outs = [eval_closed(b, ops, ctx.options) for b in branches]
    results = []
    for k in range(len(outs[0])):
        cases = [o[k] for o in outs]
        if not any(isinstance(c, Pair) for c in cases) and not isinstance(index, Pair):
            results.append(jax.lax.select_n(index, *cases))
            continue
        cases = [_as_pair(c) for c in cases]
        if not cases[0].is_float:
            idx = _as_pair(index)
            results.append(
                Pair(
                    jax.lax.select_n(idx.x, *[c.x for c in cases]),
                    jax.lax.select_n(idx.r, *[c.r for c in cases]),
                )
            )
            continue
        results.append(_select_n_rule(ctx, index, *cases))
    return results


# ---- scan -------------------------------------------------------------------------------


def _flatten(vals: list[Any]) -> tuple[list[Any], list[bool]]:
    flat, is_p = [], []
    for v in vals:
        if isinstance(v, Pair):
            flat.append((v.x, v.r))
            is_p.append(True)
        else:
            flat.append(v)
            is_p.append(False)
    return flat, is_p


def _unflatten(flat: list[Any], is_p: list[bool]) -> list[Any]:
    return [Pair(*v) if p else v for v, p in zip(flat, is_p, strict=True)]


def _scan_rule(
    ctx: Context,
    *vals: Any,
    jaxpr: Any,
    length: int,
    reverse: bool,
    unroll: Any = 1,
    **params: Any,
) -> list[Any]:
    """Rebuild the loop with a carry of (actual, reference) pairs and the body interpreted."""
    num_consts, num_carry = _compat.scan_counts(params)
    body, body_consts = _compat.open_jaxpr(jaxpr)
    consts = list(vals[:num_consts])
    init = [_as_pair(v) for v in vals[num_consts : num_consts + num_carry]]
    xs = list(vals[num_consts + num_carry :])
    xs_flat, xs_is_p = _flatten(xs)
    init_flat, _ = _flatten(init)
    num_ys = len(body.outvars) - num_carry

    def step(carry_flat, x_flat):
        carry = [Pair(*c) for c in carry_flat]
        outs = eval_jaxpr(
            body, body_consts, consts + carry + _unflatten(x_flat, xs_is_p), ctx.options
        )
        new_carry = [_as_pair(v) for v in outs[:num_carry]]
        ys = [_as_pair(v) for v in outs[num_carry:]]
        return [(c.x, c.r) for c in new_carry], [(y.x, y.r) for y in ys]

    carry, ys = jax.lax.scan(
        step, init_flat, xs_flat, length=length, reverse=reverse, unroll=unroll
    )
    assert len(ys) == num_ys
    return [Pair(*c) for c in carry] + [Pair(*y) for y in ys]


# ---- while ------------------------------------------------------------------------------


def _while_rule(ctx: Context, *vals: Any, **params: Any) -> Any:
    raise ctx.error(
        "DeepLIFT cannot differentiate a 'while' loop (jax.lax.while_loop, or fori_loop with "
        "a trip count that is not static) whose values depend on the attributed input:",
        "use jax.lax.fori_loop with Python int bounds (it lowers to scan) or jax.lax.scan "
        "with a fixed length.",
    )


# ---- registrations ----------------------------------------------------------------------
defcall(primitive("jit_p"), "jaxpr")
defcall(primitive("custom_jvp_call_p"), "call_jaxpr")
defcall(primitive("custom_vjp_call_p"), "call_jaxpr")
register_rule(primitive("remat_p"), _remat_rule)
register_rule(primitive("cond_p"), _cond_rule)
register_rule(primitive("scan_p"), _scan_rule)
register_rule(primitive("while_p"), _while_rule)

__all__ = ["defcall", "jnp"]
