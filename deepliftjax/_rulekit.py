"""The pieces every rule is built from; rule families import them, never each other.

* :func:`custom_multiplier`: a function whose VJP is a DeepLIFT multiplier;
* :func:`times`, :func:`safe_div`, :func:`sum_to_shape`: arithmetic for backward passes;
* :func:`secant`: the Rescale multiplier (eq. 15), robust where x ≈ r;
* :func:`bind_varying`: a primitive as a function of one operand, the others held;
* :func:`linear_rule` and :func:`rescale_rule`: the two rules most primitives get.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._pair import Pair, bind_both


# ---- functions whose VJP is a multiplier ------------------------------------------------
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


# ---- Rescale ---------------------------------------------------------------------------


def derivative(h: Callable[[jax.Array], jax.Array], v: jax.Array) -> jax.Array:
    """Elementwise derivative of an elementwise function."""
    return jax.jvp(h, (v,), (jnp.ones_like(v),))[1]


def _square_parts(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v²`` as ``hi + lo`` with ``hi = fl(v²)`` (Veltkamp split; |v| ≤ 30 assumed)."""
    bits = jnp.finfo(v.dtype).nmant + 1
    c = (2.0 ** ((bits + 1) // 2) + 1) * v
    vh = c - (c - v)
    vl = v - vh
    hi = v * v
    return hi, ((vh * vh - hi) + 2 * vh * vl) + vl * vl


def _gauss_density(v: jax.Array) -> jax.Array:
    """``2/√π exp(-v²)`` with ``v²`` split exactly: ``exp(-fl(v²))`` is off by ``v²·eps``
    relative (2e-6 at v = 4 in float32)."""
    v = jnp.clip(v, -30, 30)  # exp(-900) is 0 in every float type
    hi, lo = _square_parts(v)
    return (2 / jnp.sqrt(jnp.pi)).astype(v.dtype) * jnp.exp(-hi) * (1 - lo)


def _sech2(v: jax.Array) -> jax.Array:
    e = jnp.exp(-2 * jnp.abs(v))
    return 4 * e / (1 + e) ** 2


def _logistic_slope(v: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(v) * jax.nn.sigmoid(-v)


def _prims(**table: Any) -> dict[Any, Any]:
    return {p: v for name, v in table.items() if (p := primitive(name)) is not None}


SLOPES: dict[Any, Callable[[jax.Array], jax.Array]] = _prims(
    tanh_p=_sech2,
    logistic_p=_logistic_slope,
    expm1_p=jnp.exp,
    erf_p=_gauss_density,
    erfc_p=lambda v: -_gauss_density(v),
)
"""Derivatives of unary primitives accurate to a few ulps *relative* where JAX's derivative
rule cancels: ``1 - tanh²``, ``s (1 - s)`` and ``expm1 + 1`` in saturation (all digits
lost at tanh(9), logistic(17), expm1(-17)), ``exp(-fl(v²))``. A gradient's absolute error
there is harmless; the mean derivative of :func:`secant` is a multiplier, so it is not."""

H_ERROR: dict[Any, tuple[float, float]] = _prims(
    erf_inv_p=(64.0, 0.0),
    erfc_p=(64.0, 0.0),
    exp2_p=(16.0, 0.0),
    sinh_p=(16.0, 0.0),
    cosh_p=(16.0, 0.0),
    lgamma_p=(32.0, 1.0),
    digamma_p=(16.0, 1.0),
)
"""``(ulps, floor)``: a primitive's float error is at most ``ulps · eps · (|h| + floor)``
(measured on CPU at 2-3× margin: erf_inv 48 ulps near ±1, lgamma 22 ulps of 1 at its zeros
1 and 2). Others: :data:`H_ULPS` ulps of ``|h|``. Used to judge the secant's accuracy."""

H_ULPS = 8.0


def secant(
    h: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    r: jax.Array,
    y: jax.Array,
    yr: jax.Array,
    smooth: bool,
    dh: Callable[[jax.Array], jax.Array] | None = None,
    h_error: tuple[float, float] = (H_ULPS, 0.0),
) -> jax.Array:
    """The Rescale multiplier ``m`` with ``m (x - r) = h(x) - h(r)`` (eq. 15), per element.

    Two estimates of it, each with an error bound, and the better one is taken:

    * the secant ``(y - yr)/(x - r)``: its error is the float error of ``y`` and ``yr``,
      ``ulps · eps · (max(|y|, |yr|) + floor) / |x - r|`` (``h_error``), large wherever
      ``Δh`` is small against ``h`` (an interval of a few ulps, a saturated tanh);
    * the mean derivative over ``[r, x]`` (eq. 16), by Boole's rule on five nodes (``h'``
      from ``dh``, default the JVP of ``h``); its error bound is ``|S₂ − S₁|/15`` (Simpson
      on one and two panels: Richardson's estimate), plus the effect of nodes that float
      cannot place exactly (they are moved to the rule's place to first order), plus the
      derivatives' rounding. Near a singular point (arccos at 1, tan at π/2, a pole of
      digamma) the derivative varies fast on the interval, the bound is large, and the
      secant is taken.

    The mean derivative is also taken wherever its bound is under ``8 eps`` of it, which
    a primitive whose error exceeds ``h_error`` would otherwise miss. For a piecewise ``h``
    (kinks, steps) ``y`` and ``yr`` are exact and so is the secant.

    An element that does not move (``x == r``, both ±inf included) multiplies no
    difference: its multiplier is the finite derivative there, else 0, never inf − inf.
    """
    x, r = jnp.broadcast_arrays(x, r)
    ydt = jnp.result_type(y)
    wide = jnp.promote_types(x.dtype, ydt)
    x, r, y, yr = (jnp.asarray(v, wide) for v in (x, r, y, yr))  # differences in the wider type
    zero = jnp.zeros((), wide)
    still = x == r
    # still elements are evaluated at finite points (their inf - inf is never formed, so
    # neither this pass nor its derivative sees NaN)
    x = jnp.where(still & ~jnp.isfinite(x), zero, x)
    r = jnp.where(still, x, r)
    dx = x - r
    safe_dx = jnp.where(still, jnp.ones_like(dx), dx)
    sec = jnp.where(still, zero, y - yr) / safe_dx
    slope = dh if dh is not None else (lambda v: derivative(h, v))
    if not smooth:
        at = slope(jnp.where(still, x, r + dx / 2))
        return jnp.where(still, jnp.where(jnp.isfinite(at), at, zero), sec)

    quarter, half = dx / 4, dx / 2
    n1, nm, n3 = r + quarter, r + half, x - quarter
    # where float cannot hold a node (|Δx| a few ulps) it lands up to half an ulp away;
    # the offsets are exact (Sterbenz) and move the values back along g's mean slope
    o1, om, o3 = (n1 - r) - quarter, (nm - r) - half, (n3 - x) + quarter
    g0, g1, gm, g3, g4 = (slope(v) for v in (r, n1, nm, n3, x))
    # ≈ g'' Δx²/4, from the values where they are (at a node moved onto an end it is
    # |g(x) - g(r)|): what the first-order move of the nodes misses
    bend = jnp.abs(g4 - 2 * gm + g0)
    g_slope = (g4 - g0) / safe_dx
    g1, gm, g3 = g1 - o1 * g_slope, gm - om * g_slope, g3 - o3 * g_slope
    s1 = (g0 + 4 * gm + g4) / 6
    s2 = (g0 + 4 * g1 + 2 * gm + 4 * g3 + g4) / 12
    quad = s2 + (s2 - s1) / 15
    eps = jnp.finfo(wide).eps
    moved = (jnp.abs(o1) + jnp.abs(om) + jnp.abs(o3)) / jnp.abs(safe_dx)
    gmax = functools.reduce(jnp.maximum, [jnp.abs(g) for g in (g0, g1, gm, g3, g4)])
    e_quad = jnp.abs(s2 - s1) / 15 + 2 * moved * bend + 4 * eps * gmax
    ulps, floor = h_error
    eps_y = jnp.finfo(ydt).eps
    h_size = jnp.maximum(jnp.abs(y), jnp.abs(yr)) + floor
    e_sec = (ulps * eps_y * h_size + ulps * jnp.finfo(ydt).tiny) / jnp.abs(safe_dx)
    use_quad = jnp.isfinite(quad) & (
        (e_quad <= e_sec) | (e_quad <= 8 * eps * jnp.abs(quad)) | ~jnp.isfinite(sec)
    )
    at = jnp.where(jnp.isfinite(g4), g4, zero)
    return jnp.where(still, at, jnp.where(use_quad, quad, sec))


def float_pair_positions(vals: Sequence[Any]) -> list[int]:
    """Positions of the operands that are float pairs (vary with the input)."""
    return [i for i, v in enumerate(vals) if isinstance(v, Pair) and v.is_float]


def bind_varying(prim: Any, consts: Sequence[Any], i: int, params: dict) -> Callable:
    """``u -> prim(consts with u at position i)``: ``prim`` in its operand ``i`` alone."""

    def h(u: Any) -> Any:
        args = list(consts)
        args[i] = u
        return prim.bind(*args, **params)

    return h


def rescale_rule(prim: Any, smooth: bool, ctx: Any, *vals: Any, **params: Any) -> Pair:
    """Rescale (§2.3.4) in the single varying operand; other operands are constants."""
    (i,) = float_pair_positions(vals)
    consts = [v.x if isinstance(v, Pair) else v for v in vals]  # integer pairs: equal sides
    n = len(vals)

    def h_with(v, *cs):
        return bind_varying(prim, cs, i, params)(v)

    yr = bind_varying(prim, [v.r if isinstance(v, Pair) else v for v in vals], i, params)(vals[i].r)

    def primal(x, r, yr, *cs):
        return h_with(x, *cs)

    # an accurate derivative where JAX's cancels, for the primitive of one operand
    dh = SLOPES.get(prim) if n == 1 and not params.get("accuracy") else None
    h_error = H_ERROR.get(prim, (H_ULPS, 0.0))

    def backward(args, y, g):
        x, r, yr_, *cs = args
        m = secant(lambda v: h_with(v, *cs), x, r, y, yr_, smooth, dh, h_error)
        return (times(g, m), None, None, *([None] * n))

    ya = custom_multiplier(primal, backward)(vals[i].x, vals[i].r, yr, *consts)
    return Pair(ya, yr)


# ---- linear ----------------------------------------------------------------------------


def check_not_integer_pairs(ctx: Any, vals: Sequence[Any], which: str) -> None:
    """Raise when a non-float operand that varies with the input feeds a float result."""
    for v in vals:
        if isinstance(v, Pair) and not v.is_float:
            raise ctx.error(
                f"'{ctx.eqn.primitive.name}' takes {which} that depends on the attributed "
                "input and is integer or boolean, so its effect has no multiplier:",
                "integer and boolean values (indices, masks, comparisons) may depend on the "
                "input only through jnp.where/select; compute indices from constants, or "
                "write a mask m * x as jnp.where(cond, x, 0).",
            )


def linear_rule(prim: Any, ctx: Any, *vals: Any, **params: Any) -> Any:
    """Bind on both sides; autodiff of the actual side is the DeepLIFT multiplier."""
    check_not_integer_pairs(ctx, vals, "an operand (an index, mask or count)")
    return bind_both(prim, vals, params)
