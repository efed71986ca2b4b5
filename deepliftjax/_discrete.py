"""Boolean and integer values that depend on the input: switch scores and jumps.

A discrete value (a comparison, a mask, an index, a branch number) has no multiplier of its
own, but where input and reference give it different values, whatever it steers jumps. Each
discrete :class:`Pair` therefore carries a *switch score* ``s``: a float pair whose
difference is finite and non-zero wherever the two sides differ. A consumer credits its jump
``J`` through ``s`` with the multiplier ``J / Δs``; the score's own (exact) multipliers carry
it back to the inputs, so summation to delta holds whatever the score is.

Scores are built where the discrete value is made: ``a - b`` for ``a > b`` (the comparison's
margin), ``±(a - b)`` oriented by side for ``==``/``!=``, the margin between the two winners
for ``argmax``, the float itself for a float-to-integer cast; structural maps (``rev``,
transposes, gathers, concatenation, ...) move scores with the values; elementwise logic and
arithmetic average the scores of the operands that moved; reductions and cumulative ops sum
them. Wherever a candidate fails (its difference is 0 or not finite where the value moved,
e.g. ``isfinite`` or ties), the score of last resort is used: the *input distance*
``T = Σ_i c_i (x_i - r_i)`` with ``c = Δx / ‖Δx‖`` held constant, whose difference ``‖Δx‖``
is positive whenever any input moved (and a discrete value can move only then). Its credit
goes to every input in proportion to ``Δx_i²``.

Every score is built from *accounted* differences (:func:`deepliftjax._pair.accounted`): the
change its multipliers actually credit (``Σ m Δx``), not ``x - r`` recomputed from the two
sides. For the inputs that is ``Δx`` rounded as the scores round it (a margin ``x0 - x1``
changes by ``Δx0 - Δx1``, not by ``(x0 - x1) - (r0 - r1)``, which rounds differently); for
computed values it is carried forward by the interpreter where a jump could amplify the
difference. A score is the float pair ``(D + Σ w (p - stop_gradient(p)), 0)``: its
difference is exactly the accounted ``D`` the jump is divided by, and its multipliers are
the weights ``w`` on the operands ``p`` it is built from.

A margin whose operands moved much more than it did (a near tie of the movement: one side a
tie, the other 1e-7 away, while both operands moved by 1) would credit each operand
``J Δa / Δs``, up to ±1e8 that cancel. Beyond :data:`SPREAD` the jump is split instead as
the two-player Shapley value of the predicate between its operands (the mean over the two
orders of "a moves, then b"), bounded by ``|J|`` per operand.

A consumer whose discrete operand ``K`` moved (``select_n``/``cond``, ``pow(h, k)``, a
gather at a moving index, an integer cast to float) splits ``Δy`` exactly into the change of
its float operands ``F`` and the jump of ``K``, as the two-player Shapley value of ``F`` and
``K``: the mean of the orderings "F first, then K" and "K first, then F". Where one ordering
needs a value that is not finite (the branch of ``where(x > 0, log(x), c)`` not taken at the
reference is ``log(0)``), the other ordering alone is used; where both do, the whole
``Δy`` is the jump.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deepliftjax import _compat
from deepliftjax._compat import primitive
from deepliftjax._pair import MOVES_ALL, MOVES_FIRST, Accounts, Pair, accounted, bind_both, carried
from deepliftjax._registry import SCORES, register_rule
from deepliftjax._rulekit import JUMPS, custom_multiplier, safe_div, times

# ---- the score of last resort -----------------------------------------------------------


def input_distance(xs: Sequence[Any], refs: Sequence[Any]) -> Pair:
    """The scalar pair ``(Σ c_i (x_i - r_i), 0)`` with ``c = Δx / ‖Δx‖`` constant.

    Its difference is ``‖Δx‖``, positive whenever any attributed input moved; its
    multipliers are ``c``, so a jump ``J`` credited through it gives input i the
    contribution ``J Δx_i² / ‖Δx‖²``.
    """
    dt = jnp.result_type(jnp.float32, *[jnp.result_type(x) for x in xs])
    deltas = [
        (jnp.asarray(x, dt) - lax.stop_gradient(jnp.asarray(r, dt)))
        for x, r in zip(xs, refs, strict=True)
    ]
    consts = [lax.stop_gradient(d).ravel() for d in deltas]
    norm = jnp.sqrt(sum(jnp.sum(c * c) for c in consts))
    scale = jnp.where(norm == 0, jnp.zeros((), dt), 1 / jnp.where(norm == 0, 1, norm))
    tx = sum(jnp.sum(c * scale * d.ravel()) for c, d in zip(consts, deltas, strict=True))
    return Pair(jnp.asarray(tx, dt), jnp.zeros((), dt))


def _score_dtype(ctx: Any) -> Any:
    dist = ctx.options.distance
    return jnp.float32 if dist is None else jnp.result_type(dist.x)


def _accounts(ctx: Any) -> Accounts | None:
    return getattr(ctx.options, "accounts", None)


def _moved(v: Any, shape: tuple[int, ...]) -> jax.Array:
    if not isinstance(v, Pair):
        return jnp.zeros(shape, bool)
    return lax.stop_gradient(jnp.broadcast_to(v.x != v.r, shape))


# ---- scores from accounted differences --------------------------------------------------


def _null(x: Any, dt: Any) -> jax.Array:
    """0, with derivative 1 in ``x`` where ``x`` is finite: carries a weight's multiplier."""
    z = x - lax.stop_gradient(x)
    finite = lax.stop_gradient(jnp.isfinite(x))
    return jnp.where(finite, z, jnp.zeros((), z.dtype)).astype(dt)


def _score(value: Any, parts: Sequence[tuple[Any, Any]], dt: Any) -> Pair:
    """The score ``(value + Σ w·0_p, 0)``: its difference is ``value`` as computed and its
    multipliers are ``w`` on each operand's actual side ``p`` (``parts``: ``(w, p)``)."""
    sx = jnp.asarray(value, dt)
    for w, p in parts:
        sx = sx + lax.stop_gradient(jnp.asarray(w, dt)) * _null(p, dt)
    return Pair(sx, jnp.zeros_like(sx))


class _Operand(NamedTuple):
    """One operand of a predicate: both sides, its accounted difference ``d`` (score dtype)
    and its rounding floor (the part of ``d`` that may be upstream rounding; 0 if known)."""

    x: Any
    r: Any
    d: Any
    floor: Any
    varies: bool


def _operand(ctx: Any, v: Any, dt: Any) -> _Operand:
    if not isinstance(v, Pair):
        z = jnp.zeros((), dt)
        return _Operand(v, v, z, z, False)
    d, known = accounted(v, _accounts(ctx))
    return _Operand(v.x, v.r, jnp.asarray(d, dt), _floor(v.x, v.r, known, dt), True)


def _floor(x: Any, r: Any, known: Any, dt: Any) -> Any:
    """How much of a difference ``x - r`` of computed values may be their rounding: 0 where
    it is known (:func:`accounted`), else :data:`NEAR_TIE` ulps of the two sides."""
    if known is True:
        return jnp.zeros((), dt)
    eps = jnp.finfo(jnp.result_type(x)).eps
    mag = jnp.abs(jnp.asarray(x, dt)) + jnp.abs(jnp.asarray(r, dt))
    floor = NEAR_TIE * eps * mag
    return lax.stop_gradient(floor if known is False else jnp.where(known, 0, floor))


def _lent(ctx: Any, v: Pair, dt: Any, guard: bool = False) -> Pair:
    """The score a float pair lends (its accounted difference, multiplier 1). ``guard``:
    where that difference is within its rounding floor, none (0: the input distance)."""
    op = _operand(ctx, v, dt)
    value = op.d
    if guard:
        value = jnp.where(jnp.isfinite(value) & ~(jnp.abs(value) > op.floor), 0, value)
    return _score(value, [(1.0, v.x)], dt)


def _score_of(ctx: Any, v: Any) -> Pair | None:
    """The score an operand lends to what is computed from it (None: a constant).

    A float operand lends itself; where its difference is not finite (``log`` of a
    reference at 0), the difference of the value it was computed from elementwise
    (:func:`with_provenance`)."""
    if not isinstance(v, Pair):
        return None
    return with_provenance(ctx, v) if v.is_float else v.s


PROVENANCE_DEPTH = 8
"""How many elementwise steps back :func:`with_provenance` looks for a finite difference."""


def with_provenance(ctx: Any, v: Pair) -> Pair:
    """``v`` as a score, with each element whose difference is not finite replaced by the
    same element of the value ``v`` was computed from elementwise (``v.s``, set by the
    interpreter for one-operand elementwise rules), and so on back.

    That value moved wherever ``v`` did, so its difference is a valid score there, and its
    multipliers credit the jump to the inputs ``v`` depends on (not to every input, as the
    input distance does). Ancestors whose change is a near tie of computed values
    (:data:`NEAR_TIE`) are not used.
    """
    if not _provenance(v) and (v.exact or carried(v, _accounts(ctx)) is None):
        return v  # its float difference is the one its multipliers account for
    dt = _score_dtype(ctx)
    acc = _accounts(ctx)
    value = jnp.asarray(accounted(v, acc)[0], dt)
    chain, level = [v.x], jnp.zeros(jnp.shape(v.x), jnp.int32)
    cur = v
    for k in range(1, PROVENANCE_DEPTH + 1):
        if not _provenance(cur):
            break
        cur = cur.s
        op = _operand(ctx, cur, dt)
        use = lax.stop_gradient(
            ~jnp.isfinite(value) & jnp.isfinite(op.d) & (jnp.abs(op.d) > op.floor)
        )
        value = jnp.where(use, op.d, value)
        level = jnp.where(use, k, level)
        chain.append(cur.x)
    return _score(value, [((level == k).astype(dt), p) for k, p in enumerate(chain)], dt)


def _provenance(v: Pair) -> bool:
    anc = v.s
    return isinstance(anc, Pair) and anc.is_float and jnp.shape(anc.x) == jnp.shape(v.x)


def jump_score(ctx: Any, v: Any, shape: tuple[int, ...]) -> Pair | None:
    """The score through which the finite contribution of ``v`` is credited where its
    change is infinite (``log`` of a reference at 0): the value ``v`` was computed from
    elementwise (its provenance), else the input distance (``_discrete``).

    None where ``v`` has no provenance: an infinite change then arose elsewhere (a ``-inf``
    selected on one side, a linear map of a ``log``), its finite contribution is not
    credited, and the summation guard reports the example. A score for every operand
    would cost every ReLU and max pool a reduction in the backward pass (25-35% measured on
    a CNN) for a case no finite operand has.
    """
    dist = ctx.options.distance
    if not isinstance(v, Pair) or not v.is_float or v.s is None or dist is None:
        return None
    vx, vr = jnp.broadcast_to(v.x, shape), jnp.broadcast_to(v.r, shape)
    moved = jax.lax.stop_gradient(~jnp.isfinite(vx - vr) & (vx != vr))
    cand = with_provenance(ctx, v)
    if jnp.shape(cand.x) != shape:
        cand = None
    out = Pair(jnp.zeros(shape, bool), jnp.zeros(shape, bool))
    return ensure_score(ctx, out, cand, moved).s


JUMPS["score"] = jump_score


def _as_score(s: Pair | None, shape: tuple[int, ...], dt: Any) -> Pair:
    if s is None:
        z = jnp.zeros(shape, dt)
        return Pair(z, z)
    return Pair(
        jnp.broadcast_to(jnp.asarray(s.x, dt), shape), jnp.broadcast_to(jnp.asarray(s.r, dt), shape)
    )


def ensure_score(ctx: Any, out: Pair, cand: Pair | None, moved: jax.Array | None = None) -> Pair:
    """Give the discrete pair ``out`` the score ``cand`` where it is valid, else the input
    distance. ``moved`` (default: where ``out``'s sides differ) is where it must be valid."""
    dt = _score_dtype(ctx)
    shape = jnp.shape(out.x)
    if moved is None:
        moved = _moved(out, shape)
    dist = ctx.options.distance
    if dist is None:  # pragma: no cover - every entry point sets it
        raise RuntimeError("deepliftjax internal error: no input distance")
    tx = jnp.broadcast_to(jnp.asarray(dist.x, dt), shape)
    tr = jnp.broadcast_to(jnp.asarray(dist.r, dt), shape)
    if cand is None:
        out.s = Pair(tx, tr)
        return out
    c = _as_score(cand, shape, dt)
    d = c.x - c.r
    bad = lax.stop_gradient(moved & ~(jnp.isfinite(d) & (d != 0)))
    zero = jnp.zeros((), dt)
    sx = jnp.where(bad, tx, jnp.where(moved, c.x, zero))
    sr = jnp.where(bad, tr, jnp.where(moved, c.r, zero))
    out.s = Pair(sx, sr)
    return out


# ---- discrete outputs: where their scores come from -------------------------------------

Builder = Callable[..., Any]
"""primitive -> ``builder(ctx, prim, invals, params, outs)`` returning candidate scores (a list
aligned with ``outs``, entries may be None). Primitives not here get :func:`_generic`."""


def _differences(a: Any, b: Any) -> tuple[Any, Any]:
    """``a - b`` at the input and at the reference (operands may be constants)."""
    ax, ar = (a.x, a.r) if isinstance(a, Pair) else (a, a)
    bx, br = (b.x, b.r) if isinstance(b, Pair) else (b, b)
    return ax - bx, ar - br


NEAR_TIE = 2.0**12
"""A difference of computed values whose accounted change is not known (see
:func:`deepliftjax._pair.accounted`) and is below ``NEAR_TIE`` ulps of their magnitude is a
near tie: it can be mostly the rounding of the values (``x0 + 1`` at a reference 1e-6 away
changes by 8 ulps of 1, not by 1e-6), which a jump credited through it with ``J / Δs``
would amplify, so the input distance scores it instead. Exact values (the inputs,
structural maps of them, constants) and values whose accounted change the interpreter
carries are exempt: their difference is what their multipliers credit."""

SPREAD = 2.0**3
"""A margin ``a - b`` whose operands moved more than ``SPREAD`` times as much as it did
(``|Δa| + |Δb| > SPREAD |Δa - Δb|``) splits its jump as the two-player Shapley value of the
predicate between ``a`` and ``b``: the linear split ``J Δa / Δs`` would credit each operand
up to ``SPREAD |J|`` (±1e8 at a near tie, that cancel to ``J`` only as far as float32 keeps
them). Below it the linear split stands; float32 rounds its parts to ``SPREAD eps`` of J."""


def _binary(
    ctx: Any,
    a: _Operand,
    b: _Operand,
    side: Any,
    holds: Callable[[Any, Any], Any],
    px: Any,
    pr: Any,
) -> Pair:
    """The score of a predicate ``P(a, b)`` decided by the sign of ``side (a - b)``.

    Linear (the margin ``side (Δa - Δb)``, multipliers ``±side``) where that is well
    conditioned (:data:`SPREAD`) and above the operands' rounding floors; else the Shapley
    split ``φ_a, φ_b`` of ``ΔP`` between the operands (``holds(u, v)`` is ``P``; ``px``,
    ``pr`` its values), credited through each operand's own accounted difference. Neither
    possible: 0 (the input distance); not finite: as is (the operands' scores serve).
    """
    dt = _score_dtype(ctx)
    side = lax.stop_gradient(jnp.asarray(side, dt))
    lin = side * (a.d - b.d)
    mag = jnp.abs(a.d) + jnp.abs(b.d)
    finite = jnp.isfinite(lin)
    above = jnp.abs(lin) > a.floor + b.floor
    if not (a.varies and b.varies):  # one operand: always linear (or nothing)
        ok = lax.stop_gradient(finite & (lin != 0) & above)
        w = side if a.varies else -side
        op = a if a.varies else b
        return _score(jnp.where(ok | ~finite, lin, 0), [(jnp.where(ok, w, 0), op.x)], dt)
    linear = finite & (lin != 0) & above & (SPREAD * jnp.abs(lin) >= mag)

    def as_f(p: Any) -> Any:
        return jnp.asarray(p, dt)

    p_ab, p_ba = as_f(holds(a.x, b.r)), as_f(holds(a.r, b.x))
    px, pr = as_f(px), as_f(pr)
    phi_a = 0.5 * ((p_ab - pr) + (px - p_ba))
    phi_b = 0.5 * ((p_ba - pr) + (px - p_ab))

    def usable(op: _Operand, phi: Any) -> Any:
        return (phi == 0) | (jnp.isfinite(op.d) & (op.d != 0) & (jnp.abs(op.d) > op.floor))

    split = finite & ~linear & usable(a, phi_a) & usable(b, phi_b) & (phi_a + phi_b != 0)
    split = lax.stop_gradient(split)
    linear = lax.stop_gradient(linear)
    zero = jnp.zeros((), dt)
    w_a = jnp.where(linear, side, jnp.where(split, safe_div(mag * phi_a, a.d), zero))
    w_b = jnp.where(linear, -side, jnp.where(split, safe_div(mag * phi_b, b.d), zero))
    split_value = jnp.where(w_a == 0, zero, w_a * a.d) + jnp.where(w_b == 0, zero, w_b * b.d)
    value = jnp.where(linear, lin, jnp.where(split, split_value, jnp.where(finite, zero, lin)))
    parts = [(w, op.x) for w, op in ((w_a, a), (w_b, b)) if op.varies]
    return _score(value, parts, dt)


def _margin(sign: float) -> Builder:
    """``a > b`` is decided by the sign of ``a - b``: that margin is the score."""

    def build(ctx, prim, invals, params, outs):
        a, b = invals
        if not any(isinstance(v, Pair) and v.is_float for v in (a, b)):
            return _generic(ctx, prim, invals, params, outs)
        dt = _score_dtype(ctx)
        (out,) = outs

        def holds(u, v):
            return prim.bind(u, v, **params)

        cand = _binary(ctx, _operand(ctx, a, dt), _operand(ctx, b, dt), sign, holds, out.x, out.r)
        return [_or_operands(ctx, cand, (a, b), outs)]

    return build


def _or_operands(ctx: Any, cand: Pair, operands: Sequence[Any], outs: Sequence[Any]) -> Pair:
    """``cand`` where its difference is finite, else the mean of the moved operands' scores
    (elementwise comparisons: the result moved only where an operand did)."""
    shape = jnp.shape(outs[0].x)
    pairs = [v for v in operands if isinstance(v, Pair) and v.is_float]
    if not any(v.s is not None for v in pairs):  # no provenance: the operands fail as it does
        return cand
    if not _broadcast_to_shape(pairs, shape):
        return cand
    dt = _score_dtype(ctx)
    alt = _mean_of_moved(ctx, pairs, shape, dt)
    c = _as_score(cand, shape, dt)
    inf = lax.stop_gradient(~jnp.isfinite(c.x - c.r))
    return Pair(jnp.where(inf, alt.x, c.x), jnp.where(inf, alt.r, c.r))


def _equality(sign: float) -> Builder:
    """``a == b`` flips where ``a - b`` leaves or reaches 0: ``±(a - b)`` with the sign
    fixed per element (the true side gets the larger score)."""

    def build(ctx, prim, invals, params, outs):
        a, b = invals
        if not any(isinstance(v, Pair) and v.is_float for v in (a, b)):
            return _generic(ctx, prim, invals, params, outs)
        dx, dr = _differences(a, b)
        side = jnp.where(dr != 0, -jnp.sign(dr), -jnp.sign(dx))
        side = lax.stop_gradient(jnp.where(jnp.isfinite(side), side, 1))  # NaN: operands
        dt = _score_dtype(ctx)
        (out,) = outs

        def holds(u, v):
            return prim.bind(u, v, **params)

        opa, opb = _operand(ctx, a, dt), _operand(ctx, b, dt)
        cand = _binary(ctx, opa, opb, sign * side, holds, out.x, out.r)
        return [_or_operands(ctx, cand, (a, b), outs)]

    return build


def _arg_extreme(sign: float) -> Builder:
    """argmax moves from k⁰ to k: the margin ``v[k] - v[k⁰]`` (≥ 0 at the input, ≤ 0 at the
    reference) between the two winners; ties fall back to the input distance."""

    def build(ctx, prim, invals, params, outs):
        (v,) = invals
        if not v.is_float:
            return _generic(ctx, prim, invals, params, outs)
        (axis,) = params["axes"]
        (out,) = outs
        dt = _score_dtype(ctx)

        def at(vals, k):
            return jnp.take_along_axis(vals, jnp.expand_dims(k, axis), axis).squeeze(axis)

        kx, kr = lax.stop_gradient(out.x), lax.stop_gradient(out.r)
        d, known = accounted(v, _accounts(ctx))
        d = jnp.asarray(d, dt)

        def operand(k):
            x, r = at(v.x, k), at(v.r, k)
            known_k = known if isinstance(known, bool) else at(known, k)
            return _Operand(x, r, at(d, k), _floor(x, r, known_k, dt), True)

        def holds(u, w):  # v[k] beats v[k⁰]: larger (argmin: smaller), ties to the first
            su, sw = sign * u, sign * w
            return (su > sw) | ((su == sw) & (kx < kr))

        one = jnp.ones(jnp.shape(kx), dt)
        cand = _binary(ctx, operand(kx), operand(kr), sign, holds, one, 0 * one)
        return [cand]

    return build


def convert_score(ctx, prim, invals, params, outs):
    """The score of a cast to an integer or boolean type (registered with the cast's rule)."""
    (v,) = invals
    if v.is_float and jnp.dtype(params["new_dtype"]) == jnp.bool_:  # bool(v) is v != 0
        return _equality(-1.0)(ctx, prim, [v, jnp.zeros((), v.dtype)], params, outs)
    if v.is_float:  # int(v) jumps where v crosses an integer: v is the score
        cand = _lent(ctx, v, _score_dtype(ctx), guard=True)
        return [_or_operands(ctx, cand, (v,), outs)]
    return [_score_of(ctx, v)]  # int -> int keeps the score


def _data_positions(prim: Any, n: int) -> Sequence[int] | None:
    if prim in MOVES_ALL:
        return range(n)
    if prim in MOVES_FIRST:
        return (0,)
    if prim is select_n_p:
        return range(1, n)
    if prim is dynamic_update_slice_p:
        return (0, 1)
    if prim is scatter_p:
        return (0, 2)
    return None


def _generic(ctx, prim, invals, params, outs):
    """Candidates from the operands' scores: moved with the values by structural maps,
    summed by reductions and cumulative ops, averaged over moved operands elementwise."""
    dt = _score_dtype(ctx)
    data = _data_positions(prim, len(invals))
    if data is not None and not any(
        isinstance(v, Pair) for i, v in enumerate(invals) if i not in data
    ):
        sx, sr = [], []
        for i, v in enumerate(invals):
            if i in data:
                s = _as_score(_score_of(ctx, v), jnp.shape(v.x if isinstance(v, Pair) else v), dt)
                sx.append(s.x)
                sr.append(s.r)
            else:
                sx.append(v)
                sr.append(v)
        ox, orf = prim.bind(*sx, **params), prim.bind(*sr, **params)
        if prim.multiple_results:
            return [Pair(a, b) for a, b in zip(ox, orf, strict=True)]
        return [Pair(ox, orf)]
    pairs = [v for v in invals if isinstance(v, Pair)]
    if len(outs) != 1:
        return [None] * len(outs)
    shape = jnp.shape(outs[0].x)
    if len(pairs) == 1 and ("axes" in params or prim in _CUMULATIVE):
        (v,) = pairs
        vshape = jnp.shape(v.x)
        s = _as_score(_score_of(ctx, v), vshape, dt)
        w = _moved(v, vshape).astype(dt)
        if prim in _CUMULATIVE:
            axis, reverse = params["axis"], params.get("reverse", False)
            red = lambda u: lax.cumsum(u, axis=axis, reverse=reverse)  # noqa: E731
        else:
            red = lambda u: jnp.sum(u, axis=tuple(params["axes"]))  # noqa: E731
        cand = Pair(red(w * s.x), red(w * s.r))
        return [cand if jnp.shape(cand.x) == shape else None]
    if not _broadcast_to_shape(pairs, shape):
        return [None]
    return [_mean_of_moved(ctx, pairs, shape, dt)]


def _broadcast_to_shape(pairs: Sequence[Pair], shape: tuple[int, ...]) -> bool:
    """Whether the pairs broadcast elementwise to ``shape`` (an elementwise result)."""
    try:
        return jnp.broadcast_shapes(shape, *[jnp.shape(v.x) for v in pairs]) == shape
    except ValueError:
        return False


def _mean_of_moved(ctx: Any, vals: Sequence[Any], shape: tuple[int, ...], dt: Any) -> Pair:
    """The mean of the scores of the operands that moved, per element."""
    moved = [_moved(v, shape).astype(dt) for v in vals]
    count = sum(moved)
    inv = lax.stop_gradient(1 / jnp.maximum(count, 1))
    sx = jnp.zeros(shape, dt)
    sr = jnp.zeros(shape, dt)
    for v, m in zip(vals, moved, strict=True):
        s = _as_score(_score_of(ctx, v), shape, dt)
        sx = sx + m * inv * s.x
        sr = sr + m * inv * s.r
    return Pair(sx, sr)


def discrete_output_rule(ctx: Any, prim: Any, invals: Sequence[Any], params: dict) -> Any:
    """A primitive with boolean/integer results: both sides, each result with a score."""
    out = bind_both(prim, invals, params)
    outs = out if prim.multiple_results else [out]
    cands = SCORES.get(prim, _generic)(ctx, prim, invals, params, outs)
    for o, c in zip(outs, cands, strict=True):
        if isinstance(o, Pair) and not o.is_float:
            ensure_score(ctx, o, c)
    return out


# ---- discrete operands of float results: the jump ---------------------------------------


def combined_score(ctx: Any, kvals: Sequence[Pair], shape: tuple[int, ...]) -> Pair:
    """One score for the discrete operands ``kvals`` of a result of ``shape``: their mean
    elementwise (scalars broadcast), else the input distance (a scalar)."""
    dt = _score_dtype(ctx)
    if all(jnp.shape(k.x) in ((), shape) for k in kvals):
        moved = jnp.zeros(shape, bool)
        for k in kvals:
            moved = moved | _moved(k, shape)
        out = Pair(jnp.zeros(shape, bool), jnp.zeros(shape, bool))
        return ensure_score(ctx, out, _mean_of_moved(ctx, kvals, shape, dt), moved).s
    return ctx.options.distance


def _orderings(crx: Any, cxr: Any, crr: Any, y: Any) -> tuple[Any, Any, Any]:
    """``(w_A, w_B, J)`` of :func:`jump`: the weights of the two orderings and the jump."""
    ok_a = jnp.isfinite(crx)
    ok_b = jnp.isfinite(cxr)
    both = ok_a & ok_b
    half = jnp.asarray(0.5, y.dtype)
    one, zero = jnp.asarray(1, y.dtype), jnp.zeros((), y.dtype)
    w_a = jnp.where(both, half, jnp.where(ok_a, one, zero))
    w_b = jnp.where(both, half, jnp.where(ok_b, one, zero))
    j_a = jnp.where(ok_a, y - jnp.where(ok_a, crx, 0), zero)
    j_b = jnp.where(ok_b, jnp.where(ok_b, cxr, 0) - crr, zero)
    j = jnp.where(ok_a | ok_b, w_a * j_a + w_b * j_b, y - crr)
    return w_a, w_b, j


def jump(case_r: Any, case_x: Any, score: Pair) -> Pair:
    """``y = h(F, K)`` with ``case_r = (h(F, K⁰), h(F⁰, K⁰))``, ``case_x = (h(F, K), h(F⁰, K))``.

    Δy = w_A [Δcase_r + (y - case_r.x)] + w_B [Δcase_x + (case_x.r - yr)]: the two orderings
    (floats first, then the switch at the input; switch first at the reference, then the
    floats), averaged where both are finite, one alone where only it is, and all jump
    (credited through ``score``) where neither is.
    """
    case_r = case_r if isinstance(case_r, Pair) else Pair(case_r, case_r)
    case_x = case_x if isinstance(case_x, Pair) else Pair(case_x, case_x)
    yr = case_r.r

    def primal(crx, cxx, sx, crr, cxr, sr):
        return cxx

    def backward(args, y, g):
        crx, cxx, sx, crr, cxr, sr = args
        w_a, w_b, j = _orderings(crx, cxr, crr, y)
        ms = safe_div(j, jnp.broadcast_to(sx - sr, jnp.shape(j)).astype(j.dtype))
        return times(g, w_a), times(g, w_b), times(g, ms), None, None, None

    ya = custom_multiplier(primal, backward)(
        case_r.x, case_x.x, score.x, case_r.r, case_x.r, score.r
    )
    return Pair(ya, yr)


def _account_jump(ctx: Any, out: Pair, case_r: Any, case_x: Any, score: Pair) -> None:
    """Record the accounted difference of a jump's result: ``w_A D(case_r) + w_B D(case_x)``
    plus the jump itself (what its score credits, since the score's difference is its
    accounted one), where both cases' are known."""
    acc = _accounts(ctx)
    if not ctx.account or acc is None or acc.paused or not out.is_float:
        return
    d_r, d_x = carried(case_r, acc), carried(case_x, acc)
    if d_r is None or d_x is None:
        return
    sg = lax.stop_gradient
    crx, crr = (sg(case_r.x), case_r.r) if isinstance(case_r, Pair) else (case_r, case_r)
    cxr = case_x.r if isinstance(case_x, Pair) else case_x
    y = sg(out.x)
    w_a, w_b, j = _orderings(crx, cxr, crr, y)
    ds = jnp.broadcast_to(sg(score.x) - score.r, jnp.shape(y))
    zero = jnp.zeros((), y.dtype)
    d = (
        jnp.where(w_a == 0, zero, w_a * d_r)
        + jnp.where(w_b == 0, zero, w_b * d_x)
        + jnp.where(ds == 0, zero, j)
    )
    acc.put(out, d.astype(y.dtype))


def discrete_operand_rule(
    ctx: Any, prim: Any, invals: Sequence[Any], params: dict, evaluate: Callable
) -> Any:
    """A float result with discrete operands that depend on the input (``select_n``'s
    predicate, ``pow(h, k)``'s exponent, a gather's indices, ``float(k)``).

    ``evaluate(args)`` applies the primitive's own rule with the discrete operands held
    constant; the jump between the two is credited through the operands' score.
    """
    k_pos = [i for i, v in enumerate(invals) if isinstance(v, Pair) and not v.is_float]
    at_r = [v.r if i in k_pos else v for i, v in enumerate(invals)]
    at_x = [v.x if i in k_pos else v for i, v in enumerate(invals)]
    out_r, out_x = evaluate(at_r), evaluate(at_x)
    multiple = isinstance(out_r, list | tuple)
    outs_r = list(out_r) if multiple else [out_r]
    outs_x = list(out_x) if multiple else [out_x]
    kvals = [invals[i] for i in k_pos]
    results = []
    for cr, cx in zip(outs_r, outs_x, strict=True):
        shape = jnp.shape(cx.x if isinstance(cx, Pair) else cx)
        score = combined_score(ctx, kvals, shape)
        out = jump(cr, cx, score)
        _account_jump(ctx, out, cr, cx, score)
        results.append(out)
    return results if multiple else results[0]


# ---- registrations ----------------------------------------------------------------------
select_n_p = primitive("select_n_p")
mul_p = primitive("mul_p")
dynamic_update_slice_p = primitive("dynamic_update_slice_p")
scatter_p = primitive("scatter_p")
_CUMULATIVE = {
    primitive(n) for n in ("cumsum_p", "cummax_p", "cummin_p", "cumprod_p", "cumlogsumexp_p")
}

# comparisons and arg-extremes have no float result for a rule: their trait is the score
register_rule(primitive("gt_p"), None, score=_margin(1.0))
register_rule(primitive("ge_p"), None, score=_margin(1.0))
register_rule(primitive("lt_p"), None, score=_margin(-1.0))
register_rule(primitive("le_p"), None, score=_margin(-1.0))
register_rule(primitive("eq_p"), None, score=_equality(1.0))
register_rule(primitive("ne_p"), None, score=_equality(-1.0))
register_rule(primitive("argmax_p"), None, score=_arg_extreme(1.0))
register_rule(primitive("argmin_p"), None, score=_arg_extreme(-1.0))


# ---- where a jump can amplify a difference's rounding -----------------------------------

_COMPARISONS = {primitive(n) for n in ("gt_p", "ge_p", "lt_p", "le_p")}
_EQUALITIES = {primitive("eq_p"), primitive("ne_p")}
is_finite_p = primitive("is_finite_p")
_LOOPS = {primitive("scan_p"), primitive("while_p")}
_KEEPS_VALUE = {
    primitive(n)
    for n in ("broadcast_in_dim_p", "convert_element_type_p", "reshape_p", "copy_p", "squeeze_p")
}
_ZERO_AT_ZERO = _KEEPS_VALUE | {
    primitive(n)
    for n in (
        "neg_p", "mul_p", "expm1_p", "log1p_p", "sin_p", "sinh_p", "tan_p", "tanh_p", "asin_p",
        "asinh_p", "atan_p", "atanh_p", "erf_p", "sqrt_p", "cbrt_p", "integer_pow_p",
        "square_p", "abs_p", "sign_p", "reduce_precision_p",
    )
}  # fmt: skip
"""Elementwise maps that are 0 where their operand is (for mul: where either is)."""
_ZERO = ("lit", 0.0)


class _Switches:
    """A walk over a jaxpr, calls inlined, that finds the equations whose results need
    accounted differences: those upstream of a switch point whose jump can be large against
    the change of its score.

    Each value gets a token (a literal's token is its value, so ``0.0`` broadcast inside a
    ``jnp.where`` matches the ``0.0`` it is compared with) and the set of tokens where it is
    0 (``roots``). A comparison ``a > b`` whose every use is the predicate of a
    ``select_n`` between ``a`` and ``b`` (max, min, clipping written with ``where``), or,
    with ``b = 0``, between values that are 0 where ``a`` is (ReLU, leaky ReLU, ELU), jumps
    by no more than its margin moves: its jump cannot amplify the margin's rounding. Any
    other use, and any other discrete result of float values (``argmax``, ``==``, a cast to
    an integer, a switch point inside a loop or branches), can.
    """

    def __init__(self) -> None:
        self.count = 0
        self.roots: dict[Any, frozenset] = {}
        self.compared: dict[Any, tuple[Any, Any]] = {}
        self.uses: dict[Any, list[Any]] = {}
        self.seeds: set[Any] = set()
        self.made_from: dict[Any, list[Any]] = {}
        """token -> the float operand tokens of the equation that made it."""
        self.known: dict[Any, Any] = {}
        """(primitive, operand tokens, parameters) -> result token: equal values, one token."""
        self.steps: list[tuple[list[int], list[Any], list[Any], bool]] = []
        """(equation ids, float operand tokens, result tokens, whether a switch point inside
        needs them), in evaluation order."""

    def fresh(self) -> int:
        self.count += 1
        return self.count

    def token(self, env: dict, v: Any) -> Any:
        if isinstance(v, _compat.Literal):
            val = np.asarray(v.val)
            return ("lit", float(val)) if val.ndim == 0 else self.fresh()
        if v not in env:
            env[v] = self.fresh()
        return env[v]

    def root(self, t: Any) -> frozenset:
        if isinstance(t, tuple):
            return frozenset({_ZERO}) if t == _ZERO else frozenset()
        return self.roots.get(t, frozenset({t}))

    def walk(self, jaxpr: Any, env: dict) -> None:
        for eqn in jaxpr.eqns:
            ins = [self.token(env, v) for v in eqn.invars]
            subs = [
                q
                for p in eqn.params.values()
                for q in (p if isinstance(p, tuple | list) else (p,))
                if _compat.is_jaxpr(q)
            ]
            if len(subs) == 1 and eqn.primitive not in _LOOPS:
                inner, _ = _compat.open_jaxpr(subs[0])
                if len(inner.invars) == len(ins):  # a call: inlined
                    ienv = dict(zip(inner.invars, ins, strict=True))
                    self.walk(inner, ienv)
                    for v, w in zip(eqn.outvars, inner.outvars, strict=True):
                        env[v] = self.token(ienv, w)
                    continue
            self.visit(eqn, ins, env, [_compat.open_jaxpr(q)[0] for q in subs])

    def visit(self, eqn: Any, ins: list[Any], env: dict, subs: list[Any]) -> None:
        prim = eqn.primitive
        if len(eqn.outvars) == 1 and not subs and not eqn.effects:
            # the same pure computation twice (``x[:2]`` in a predicate and in a case)
            key = (prim, tuple(ins), tuple(sorted((k, str(v)) for k, v in eqn.params.items())))
            env[eqn.outvars[0]] = self.known.setdefault(key, self.token(env, eqn.outvars[0]))
        outs = [self.token(env, v) for v in eqn.outvars]
        floats = [t for t, v in zip(ins, eqn.invars, strict=True) if _is_float_var(v)]
        float_in = any(not isinstance(t, tuple) for t in floats)
        ids = [id(eqn)]
        inside = False
        if subs:  # a loop or branches: every equation inside, if anything here needs them
            ids += [i for q in subs for i in _equation_ids(q)]
            inside = any(_has_switch_point(q) for q in subs)
            if inside:
                self.seeds.update(floats)
        elif prim in _COMPARISONS and float_in:
            self.compared[outs[0]] = (ins[0], ins[1])
        elif float_in and any(not _is_float_var(v) for v in eqn.outvars):
            # isfinite(v), isnan(v) (v != v): they move only where v's difference is not
            # finite, so only the values v was computed from lend it (``with_provenance``)
            only_provenance = prim is is_finite_p or (prim in _EQUALITIES and ins[0] == ins[1])
            self.seeds.update(self.made_from.get(floats[0], ()) if only_provenance else floats)
        self.steps.append((ids, floats, outs, inside))
        for t in outs:
            self.made_from[t] = floats
        if prim is select_n_p:
            self.uses.setdefault(ins[0], []).append(tuple(ins[1:]))
        else:
            for t in ins:
                self.uses.setdefault(t, []).append(None)
        if len(outs) != 1:
            return
        if prim in _KEEPS_VALUE and isinstance(ins[0], tuple):
            env[eqn.outvars[0]] = ins[0]
        elif prim in _ZERO_AT_ZERO:
            operands = ins if prim is mul_p else ins[:1]
            self.roots[outs[0]] = frozenset().union(*(self.root(t) for t in operands))
        elif prim is select_n_p and len(ins) == 3:
            ra, rb = self.root(ins[1]), self.root(ins[2])
            self.roots[outs[0]] = rb if _ZERO in ra else ra if _ZERO in rb else ra & rb

    def continuous(self, a: Any, b: Any, cases: Any) -> bool:
        if cases is None or len(cases) != 2:
            return False
        if set(cases) <= {a, b}:
            return True
        for zero, other in ((b, a), (a, b)):
            if zero == _ZERO and all(self.root(c) & {_ZERO, other} for c in cases):
                return True
        return False

    def needed(self) -> frozenset[int]:
        """Ids of the equations upstream of a seed (the operands of amplifying switches)."""
        want = set(self.seeds)
        for t, (a, b) in self.compared.items():
            if not all(self.continuous(a, b, use) for use in self.uses.get(t, ())):
                want.update((a, b))
        out: set[int] = set()
        for ids, floats, outs, inside in reversed(self.steps):
            if inside or not want.isdisjoint(outs):
                out.update(ids)
                want.update(floats)
        return frozenset(out)


def _equation_ids(jaxpr: Any) -> list[int]:
    out = []
    for eqn in jaxpr.eqns:
        out.append(id(eqn))
        for p in eqn.params.values():
            for q in p if isinstance(p, tuple | list) else (p,):
                if _compat.is_jaxpr(q):
                    out += _equation_ids(_compat.open_jaxpr(q)[0])
    return out


def _is_float_var(v: Any) -> bool:
    dtype = getattr(getattr(v, "aval", None), "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _has_switch_point(jaxpr: Any) -> bool:
    """Whether any equation, at any depth, makes a discrete value from float values."""
    for eqn in jaxpr.eqns:
        float_in = any(not isinstance(v, _compat.Literal) and _is_float_var(v) for v in eqn.invars)
        if float_in and any(not _is_float_var(v) for v in eqn.outvars):
            return True
        for p in eqn.params.values():
            for q in p if isinstance(p, tuple | list) else (p,):
                if _compat.is_jaxpr(q) and _has_switch_point(_compat.open_jaxpr(q)[0]):
                    return True
    return False


def accounted_equations(jaxpr: Any) -> frozenset[int]:
    """Ids of the equations of ``jaxpr`` (at any depth) whose float results need accounted
    differences (:class:`Accounts`): those upstream of a switch point whose jump can be
    large against its score's change. Carrying them costs about one more forward pass of
    those equations' linear maps; models without such a switch point (CNNs, MLPs with
    ``max``/ReLU, ``where``-ReLU and clipping) have none and pay nothing."""
    walk = _Switches()
    walk.walk(jaxpr, {})
    return walk.needed()
