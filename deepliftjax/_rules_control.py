"""Rules for higher-order primitives: calls, custom derivatives, remat, cond, scan, while.

Calls are interpreted inline (a custom derivative is ignored: DeepLIFT replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax import _compat
from deepliftjax._compat import primitive
from deepliftjax._interpreter import Context, eval_closed, eval_jaxpr, register_rule
from deepliftjax._pair import Pair

# ---- calls ------------------------------------------------------------------------------


def call_rule(param: str, ctx: Context, *vals: Any, **params: Any) -> list[Any]:
    """Interpret the jaxpr held in ``params[param]`` inline."""
    return eval_closed(params[param], vals, ctx.options)


def defcall(prim: Any, param: str) -> None:
    """Interpret the jaxpr held in ``params[param]`` inline."""
    register_rule(prim, partial(call_rule, param), call=True)


def _slot_names(cls: type) -> list[str]:
    return [n for c in reversed(cls.__mro__) for n in getattr(c, "__slots__", ())]


def _flatten_value(v: Any, leaves: list[Any]) -> Any:
    """Append ``v``'s arrays to ``leaves``; return what rebuilds it. Pairs of any subclass
    (RevealCancel's split pairs) keep every slot, switch scores included; a float pair's
    provenance (``_discrete.with_provenance``) is not carried out of the body."""
    if not isinstance(v, Pair):
        leaves.append(v)
        return None
    spec = []
    for name in _slot_names(type(v)):
        val = getattr(v, name)
        if name in ("exact", "rule"):  # Python values: a flag, a rule-set name
            spec.append((name, "static", val))
        elif name == "s" and v.is_float:  # a float pair's provenance stays inside
            spec.append((name, "pair", None))
        elif name == "s" or isinstance(val, Pair):
            spec.append((name, "pair", None if val is None else _flatten_value(val, leaves)))
        else:
            leaves.append(val)
            spec.append((name, "leaf", None))
    return (type(v), spec)


def _rebuild_value(spec: Any, it: Any) -> Any:
    if spec is None:
        return next(it)
    cls, fields = spec
    v = object.__new__(cls)
    for name, kind, sub in fields:
        if kind == "static":
            setattr(v, name, sub)
        elif kind == "pair":
            setattr(v, name, None if sub is None else _rebuild_value(sub, it))
        else:
            setattr(v, name, next(it))
    return v


def _flatten_pairs(vals: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """``vals`` (pairs and plain values) as a flat list of arrays and the spec to rebuild them."""
    leaves: list[Any] = []
    return leaves, [_flatten_value(v, leaves) for v in vals]


def _unflatten_pairs(leaves: Sequence[Any], spec: Sequence[Any]) -> list[Any]:
    it = iter(leaves)
    return [_rebuild_value(entry, it) for entry in spec]


def _remat_rule(
    ctx: Context,
    *vals: Any,
    jaxpr: Any,
    prevent_cse: bool = True,
    policy: Any = None,
    **params: Any,
) -> list[Any]:
    """The body is interpreted inside ``jax.checkpoint`` with the same policy, so the
    DeepLIFT pass keeps the model's rematerialisation: the backward pass recomputes the
    body's pairs (both sides and their switch scores) instead of storing them."""
    inner, consts = _compat.open_jaxpr(jaxpr)
    leaves, spec = _flatten_pairs(vals)
    out_spec: list[Any] = []

    def body(*leaves: Any) -> list[Any]:
        outs = eval_jaxpr(inner, consts, _unflatten_pairs(leaves, spec), ctx.options)
        flat, out_spec[:] = _flatten_pairs(outs)
        return [jnp.asarray(v) for v in flat]

    flat = jax.checkpoint(body, prevent_cse=prevent_cse, policy=policy)(*leaves)
    return _unflatten_pairs(flat, out_spec)


# ---- cond / switch ----------------------------------------------------------------------


def _as_pair(v: Any) -> Pair:
    return v if isinstance(v, Pair) else Pair(v, v)


def _cond_rule(ctx: Context, index: Any, *ops: Any, branches: Any, **params: Any) -> list[Any]:
    """Every branch is interpreted on the pairs; the outputs are combined as ``select_n``.

    Where input and reference take the same branch this is that branch; where they take
    different branches it is the exact select between the two branch outputs (the jump
    credited through the index's switch score; see :mod:`deepliftjax._discrete`).
    """
    outs = [eval_closed(b, ops, ctx.options) for b in branches]
    results = []
    for k in range(len(outs[0])):
        cases = [o[k] for o in outs]
        float_out = _is_float(cases[0].x if isinstance(cases[0], Pair) else cases[0])
        results.append(ctx.bind(select_n_p, [index, *cases], {}, float_out))
    return results


# ---- scan -------------------------------------------------------------------------------
PLAIN, FLOAT, DISCRETE = 0, 1, 2


def _kind(v: Any) -> int:
    if not isinstance(v, Pair):
        return PLAIN
    return FLOAT if v.is_float else DISCRETE


def _pack(v: Any, kind: int, score_dtype: Any) -> Any:
    """A carry or output as a tuple of arrays: (x, r) for a float pair, (x, r, s.x, s.r) for
    a discrete one (its switch score travels with it)."""
    if kind == PLAIN:
        return v
    v = _as_pair(v)
    if kind == FLOAT:
        return (v.x, v.r)
    shape = jnp.shape(v.x)
    if v.s is None:  # the same on both sides: any score will do
        z = jnp.zeros(shape, score_dtype)
        return (v.x, v.r, z, z)
    sx, sr = (jnp.broadcast_to(jnp.asarray(t, score_dtype), shape) for t in (v.s.x, v.s.r))
    return (v.x, v.r, sx, sr)


def _unpack(t: Any, kind: int) -> Any:
    if kind == PLAIN:
        return t
    if kind == FLOAT:
        return Pair(*t)
    return Pair(t[0], t[1], Pair(t[2], t[3]))


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
    sdt = jnp.result_type(ctx.options.distance.x)
    consts = list(vals[:num_consts])
    init = list(vals[num_consts : num_consts + num_carry])
    xs_in = list(vals[num_consts + num_carry :])
    xs_kind = [_kind(v) for v in xs_in]
    xs_flat = [_pack(v, k, sdt) for v, k in zip(xs_in, xs_kind, strict=True)]
    kinds = [FLOAT if _is_float(v.x if isinstance(v, Pair) else v) else _kind(v) for v in init]

    def make_step(kinds, grown, ys_kinds):
        def step(carry_flat, x_flat):
            carry = [_unpack(c, k) for c, k in zip(carry_flat, kinds, strict=True)]
            xs_ = [_unpack(x, k) for x, k in zip(x_flat, xs_kind, strict=True)]
            outs = eval_jaxpr(body, body_consts, consts + carry + xs_, ctx.options)
            new = []
            for j, (v, k) in enumerate(zip(outs[:num_carry], kinds, strict=True)):
                if k == PLAIN and isinstance(v, Pair):
                    grown.add(j)
                    v = v.x
                new.append(_pack(v, k, sdt))
            ys = outs[num_carry:]
            ys_kinds[:] = [_kind(y) for y in ys]
            return new, [_pack(y, k, sdt) for y, k in zip(ys, ys_kinds, strict=True)]

        return step

    for _ in range(num_carry + 1):
        grown: set[int] = set()
        init_flat = [_pack(v, k, sdt) for v, k in zip(init, kinds, strict=True)]
        x0 = jax.tree_util.tree_map(lambda a: a[0], xs_flat) if length else xs_flat
        jax.eval_shape(make_step(kinds, grown, []), init_flat, x0)
        if not grown:
            break
        kinds = [DISCRETE if j in grown else k for j, k in enumerate(kinds)]

    ys_kinds: list[int] = []
    carry, ys = jax.lax.scan(
        make_step(kinds, set(), ys_kinds),
        init_flat,
        xs_flat,
        length=length,
        reverse=reverse,
        unroll=unroll,
    )
    return [_unpack(c, k) for c, k in zip(carry, kinds, strict=True)] + [
        _unpack(y, k) for y, k in zip(ys, ys_kinds, strict=True)
    ]


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
select_n_p = primitive("select_n_p")
register_rule(primitive("remat_p"), _remat_rule, call=True)
register_rule(primitive("cond_p"), _cond_rule, call=True)
register_rule(primitive("scan_p"), _scan_rule, call=True)
register_rule(primitive("while_p"), _while_rule, call=True)
