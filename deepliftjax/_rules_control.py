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
    """Rebuild the loop with a carry of (actual, reference) pairs and the body interpreted.

    Float carries are always pairs; an integer carry (a counter) stays plain unless the
    body makes it depend on the input, found by tracing the body (no execution) first.
    """
    num_consts, num_carry = _compat.scan_counts(params)
    body, body_consts = _compat.open_jaxpr(jaxpr)
    consts = list(vals[:num_consts])
    init = list(vals[num_consts : num_consts + num_carry])
    xs_flat, xs_is_p = _flatten(list(vals[num_consts + num_carry :]))
    mask = [isinstance(v, Pair) or _is_float(v) for v in init]

    def make_step(mask, grown, ys_mask):
        def step(carry_flat, x_flat):
            carry = _unflatten(carry_flat, mask)
            args = consts + carry + _unflatten(x_flat, xs_is_p)
            outs = eval_jaxpr(body, body_consts, args, ctx.options)
            new = []
            for k, (v, m) in enumerate(zip(outs[:num_carry], mask, strict=True)):
                if m:
                    v = _as_pair(v)
                    new.append((v.x, v.r))
                else:
                    if isinstance(v, Pair):
                        grown.add(k)
                        v = v.x
                    new.append(v)
            ys = outs[num_carry:]
            ys_mask[:] = [isinstance(y, Pair) for y in ys]
            return new, _flatten(ys)[0]

        return step

    ys_mask: list[bool] = []
    for _ in range(num_carry + 1):
        grown: set[int] = set()
        init_flat = _flatten([_as_pair(v) if m else v for v, m in zip(init, mask, strict=True)])[0]
        x0 = jax.tree_util.tree_map(lambda a: a[0], xs_flat) if length else xs_flat
        jax.eval_shape(make_step(mask, grown, ys_mask), init_flat, x0)
        if not grown:
            break
        mask = [m or k in grown for k, m in enumerate(mask)]

    carry, ys = jax.lax.scan(
        make_step(mask, set(), []),
        init_flat,
        xs_flat,
        length=length,
        reverse=reverse,
        unroll=unroll,
    )
    return _unflatten(carry, mask) + _unflatten(ys, ys_mask)


def _is_float(v: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(v), jnp.inexact)


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
