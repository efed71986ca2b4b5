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
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from deepliftjax._compat import primitive
from deepliftjax._pair import MOVES_ALL, MOVES_FIRST, Pair, bind_both
from deepliftjax._rulekit import custom_multiplier, safe_div, times

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


def _moved(v: Any, shape: tuple[int, ...]) -> jax.Array:
    if not isinstance(v, Pair):
        return jnp.zeros(shape, bool)
    return lax.stop_gradient(jnp.broadcast_to(v.x != v.r, shape))


def _score_of(v: Any) -> Pair | None:
    """The score an operand lends to what is computed from it (None: a constant).

    A float operand lends itself; where its difference is not finite (``log`` of a
    reference at 0), the difference of the value it was computed from elementwise
    (:func:`with_provenance`)."""
    if not isinstance(v, Pair):
        return None
    return with_provenance(v) if v.is_float else v.s


PROVENANCE_DEPTH = 8
"""How many elementwise steps back :func:`with_provenance` looks for a finite difference."""


def with_provenance(v: Pair) -> Pair:
    """``v`` as a score, with each element whose difference is not finite replaced by the
    same element of the value ``v`` was computed from elementwise (``v.s``, set by the
    interpreter for one-operand elementwise rules), and so on back.

    That value moved wherever ``v`` did, so its difference is a valid score there, and its
    multipliers credit the jump to the inputs ``v`` depends on (not to every input, as the
    input distance does). Ancestors whose change is a near tie of computed values
    (:data:`NEAR_TIE`) are not used.
    """
    sx, sr, cur = v.x, v.r, v
    for _ in range(PROVENANCE_DEPTH):
        anc = cur.s
        if not isinstance(anc, Pair) or not anc.is_float or jnp.shape(anc.x) != jnp.shape(sx):
            break
        dt = jnp.result_type(sx)
        good = _reliable(anc.x, anc.r, (anc,))
        d_anc = good.x - good.r
        use = ~jnp.isfinite(sx - sr) & jnp.isfinite(d_anc) & (d_anc != 0)
        use = lax.stop_gradient(use)
        sx = jnp.where(use, jnp.asarray(anc.x, dt), sx)
        sr = jnp.where(use, jnp.asarray(anc.r, dt), sr)
        cur = anc
    if cur is v:
        return v
    return Pair(sx, sr)


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
SCORES: dict[Any, Builder] = {}
"""primitive -> ``builder(ctx, prim, invals, params, outs)`` returning candidate scores (a list
aligned with ``outs``, entries may be None). Primitives not here get :func:`_generic`."""


def _differences(a: Any, b: Any) -> tuple[Any, Any]:
    """``a - b`` at the input and at the reference (operands may be constants)."""
    ax, ar = (a.x, a.r) if isinstance(a, Pair) else (a, a)
    bx, br = (b.x, b.r) if isinstance(b, Pair) else (b, b)
    return ax - bx, ar - br


NEAR_TIE = 2.0**12
"""A margin between computed values whose change is below ``NEAR_TIE`` ulps of its operands'
magnitude is a near tie: its float difference can be mostly the rounding of the operands
(``x0 + 1`` at a reference 1e-6 away changes by 8 ulps of 1, not by 1e-6), which a jump
credited through it with ``J / Δs`` would amplify, so the input distance scores it instead.
A margin of exact values (the inputs, structural maps of them, constants) is exempt: its
only rounding is the final subtraction's, relative to the margin itself."""


def _reliable(sx: Any, sr: Any, operands: Sequence[Any], sides: Sequence[Any] = ()) -> Pair:
    """The candidate ``(sx, sr)``, made invalid (no change) at near ties of computed
    operands, so that :func:`ensure_score` falls back to the input distance there.
    ``sides``: the values whose magnitude bounds the rounding (default: the operands')."""
    if all(v.exact for v in operands if isinstance(v, Pair)):
        return Pair(sx, sr)
    dt = jnp.result_type(sx)
    if not sides:
        sides = [u for v in operands for u in ((v.x, v.r) if isinstance(v, Pair) else (v,))]
    mag = sum(jnp.abs(jnp.asarray(u, dt)) for u in sides)
    d = sx - sr  # a non-finite margin stays one (its operands' scores may serve)
    near = lax.stop_gradient(jnp.isfinite(d) & ~(jnp.abs(d) > NEAR_TIE * jnp.finfo(dt).eps * mag))
    return Pair(jnp.where(near, 0, sx), jnp.where(near, 0, sr))


def _margin(sign: float) -> Builder:
    """``a > b`` is decided by the sign of ``a - b``: that margin is the score."""

    def build(ctx, prim, invals, params, outs):
        a, b = invals
        if not any(isinstance(v, Pair) and v.is_float for v in (a, b)):
            return _generic(ctx, prim, invals, params, outs)
        dx, dr = _differences(a, b)
        return [_or_operands(ctx, _reliable(sign * dx, sign * dr, (a, b)), (a, b), outs)]

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
    alt = _mean_of_moved(pairs, shape, dt)
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
        cand = _reliable(sign * side * dx, sign * side * dr, (a, b))
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

        def at(vals, k):
            return jnp.take_along_axis(vals, jnp.expand_dims(k, axis), axis).squeeze(axis)

        kx, kr = lax.stop_gradient(out.x), lax.stop_gradient(out.r)
        wins = (at(v.x, kx), at(v.x, kr), at(v.r, kx), at(v.r, kr))
        cand = _reliable(wins[0] - wins[1], wins[2] - wins[3], (v,), wins)
        return [Pair(sign * cand.x, sign * cand.r)]

    return build


def _convert(ctx, prim, invals, params, outs):
    (v,) = invals
    if v.is_float and jnp.dtype(params["new_dtype"]) == jnp.bool_:  # bool(v) is v != 0
        return _equality(-1.0)(ctx, prim, [v, jnp.zeros((), v.dtype)], params, outs)
    if v.is_float:  # int(v) jumps where v crosses an integer: v is the score
        return [_or_operands(ctx, _reliable(v.x, v.r, (v,)), (v,), outs)]
    return [_score_of(v)]  # int -> int keeps the score


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
                s = _as_score(_score_of(v), jnp.shape(v.x if isinstance(v, Pair) else v), dt)
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
        s = _as_score(_score_of(v), vshape, dt)
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
    return [_mean_of_moved(pairs, shape, dt)]


def _broadcast_to_shape(pairs: Sequence[Pair], shape: tuple[int, ...]) -> bool:
    """Whether the pairs broadcast elementwise to ``shape`` (an elementwise result)."""
    try:
        return jnp.broadcast_shapes(shape, *[jnp.shape(v.x) for v in pairs]) == shape
    except ValueError:
        return False


def _mean_of_moved(vals: Sequence[Any], shape: tuple[int, ...], dt: Any) -> Pair:
    """The mean of the scores of the operands that moved, per element."""
    moved = [_moved(v, shape).astype(dt) for v in vals]
    count = sum(moved)
    inv = lax.stop_gradient(1 / jnp.maximum(count, 1))
    sx = jnp.zeros(shape, dt)
    sr = jnp.zeros(shape, dt)
    for v, m in zip(vals, moved, strict=True):
        s = _as_score(_score_of(v), shape, dt)
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
        return ensure_score(ctx, out, _mean_of_moved(kvals, shape, dt), moved).s
    return ctx.options.distance


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
        ms = safe_div(j, jnp.broadcast_to(sx - sr, jnp.shape(j)).astype(j.dtype))
        return times(g, w_a), times(g, w_b), times(g, ms), None, None, None

    ya = custom_multiplier(primal, backward)(
        case_r.x, case_x.x, score.x, case_r.r, case_x.r, score.r
    )
    return Pair(ya, yr)


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
        results.append(jump(cr, cx, combined_score(ctx, kvals, shape)))
    return results if multiple else results[0]


# ---- registrations ----------------------------------------------------------------------
select_n_p = primitive("select_n_p")
dynamic_update_slice_p = primitive("dynamic_update_slice_p")
scatter_p = primitive("scatter_p")
_CUMULATIVE = {
    primitive(n) for n in ("cumsum_p", "cummax_p", "cummin_p", "cumprod_p", "cumlogsumexp_p")
}

SCORES[primitive("gt_p")] = _margin(1.0)
SCORES[primitive("ge_p")] = _margin(1.0)
SCORES[primitive("lt_p")] = _margin(-1.0)
SCORES[primitive("le_p")] = _margin(-1.0)
SCORES[primitive("eq_p")] = _equality(1.0)
SCORES[primitive("ne_p")] = _equality(-1.0)
SCORES[primitive("argmax_p")] = _arg_extreme(1.0)
SCORES[primitive("argmin_p")] = _arg_extreme(-1.0)
SCORES[primitive("convert_element_type_p")] = _convert
