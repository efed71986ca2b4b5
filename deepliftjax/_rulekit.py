"""The pieces every rule is built from; rule families import them, never each other.

* :func:`custom_multiplier`: a function whose VJP is a DeepLIFT multiplier;
* :func:`times`, :func:`safe_div`, :func:`sum_to_shape`: arithmetic for backward passes;
* :func:`secant`: the Rescale multiplier (eq. 15), robust where x ≈ r;
* :func:`bind_varying`: a primitive as a function of one operand, the others held;
* :func:`linear_rule` and :func:`rescale_rule`: the two rules most primitives get.
"""

from __future__ import annotations

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
        args, out = after(res, g)  # computed when this layer's backward step runs
        cts = backward(args, out, g)
        return tuple(
            None if ct is None else sum_to_shape(ct, jnp.shape(a)).astype(jnp.result_type(a))
            for ct, a in zip(cts, args, strict=True)
        )

    fun.defvjp(fwd, bwd)
    return fun


def after(values: Any, g: Any) -> Any:
    """``values``, unchanged, but computed from the cotangent ``g`` as far as XLA can tell.

    A backward rule's multipliers need only the forward values, so XLA may compute them as
    soon as the forward pass ends and hold every layer's multipliers at once until the
    cotangents arrive (JAX's ``optimization_barrier`` does not stop it: XLA's CPU compiler
    removes barriers before scheduling). Each float value gets ``-0.0`` added, derived from
    one element of ``g``: ``v + (-0.0)`` is ``v`` for every ``v`` (±0, ±inf and NaN
    included), and nothing computed from it can run before ``g`` exists.
    """

    def is_float(v: Any) -> bool:
        return hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)

    floats = [v for v in jax.tree_util.tree_leaves(g) if is_float(v)]
    if not floats:
        return values
    g0 = jnp.ravel(floats[0])[:1].astype(jnp.float32)  # empty: the sum below is 0
    z = -jnp.abs(jnp.sum(jnp.where(jnp.isfinite(g0), g0, 0)) * 0)
    return jax.tree_util.tree_map(lambda v: v + z.astype(v.dtype) if is_float(v) else v, values)


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
    * the mean derivative over ``[r, x]`` (eq. 16) by Simpson's rule (``h'`` from ``dh``,
      default the JVP of ``h``), its bound ``bend²/|g|`` from the second difference ``bend``
      of ``g = h'`` (the size of Simpson's error where each derivative of ``g`` grows like
      that of a pole: near a singular point), plus what moving a midpoint that float cannot
      hold (|Δx| of a few ulps) misses, plus the derivatives' rounding. Near a singular point
      (arccos at 1, tan at π/2, a pole of digamma) ``g`` varies fast on the interval, the
      bound is large, and the secant is taken.

    The mean derivative is taken only where its bound is the smaller and it lies within the
    secant's bound of the secant (the secant certifies it: Simpson's bound misses where the
    second difference vanishes and the fourth does not), so the multiplier's error is at
    most twice the secant's. It differs from the forward pass's own ``y - yr`` by that
    difference's rounding, so where ``f`` amplifies the rounding of a value
    (``log1p(-sigmoid(z))`` at large z: σ rounds to 6e-8, log1p multiplies that by
    ``1/(1 - σ)``) the scores follow the exact Δf, not float's. For a piecewise ``h``
    (kinks, steps) ``y`` and ``yr`` are exact and so is the secant.

    An element that does not move (``x == r``) multiplies no difference: its multiplier is
    the finite derivative there, else 0; at ±inf on both sides it is 0 (changes upstream
    move nothing there), never inf − inf.
    """
    x, r = jnp.broadcast_arrays(x, r)
    ydt = jnp.result_type(y)
    wide = jnp.promote_types(x.dtype, ydt)
    x, r, y, yr = (jnp.asarray(v, wide) for v in (x, r, y, yr))  # differences in the wider type
    zero = jnp.zeros((), wide)
    still = x == r
    # at ±inf on both sides a change upstream moves nothing (-inf + 1 = -inf): the one
    # exact multiplier is 0. Such elements are evaluated at 0 instead, so neither this
    # pass nor its derivative forms inf - inf.
    infinite = still & ~jnp.isfinite(x)
    x = jnp.where(infinite, zero, x)
    r = jnp.where(still, x, r)
    dx = x - r
    safe_dx = jnp.where(still, jnp.ones_like(dx), dx)
    sec = jnp.where(still, zero, y - yr) / safe_dx
    slope = dh if dh is not None else (lambda v: derivative(h, v))
    if not smooth:
        at = slope(jnp.where(still, x, r + dx / 2))
        return jnp.where(still, jnp.where(jnp.isfinite(at) & ~infinite, at, zero), sec)

    half = dx / 2
    nm = r + half
    # where float cannot hold the midpoint (|Δx| an odd number of ulps) it lands half an
    # ulp away; the offset is exact (Sterbenz) and moves g's value back along its slope
    om = (nm - r) - half
    g0, gm, g4 = (slope(v) for v in (r, nm, x))
    # ≈ g'' Δx²/4, from the values where they are (at a midpoint moved onto an end it is
    # |g(x) - g(r)|: what the first-order move misses)
    bend = jnp.abs(g4 - 2 * gm + g0)
    gm = gm - om * (g4 - g0) / safe_dx
    quad = (g0 + 4 * gm + g4) / 6
    eps = jnp.finfo(wide).eps
    # Simpson's error is Δx⁴ g⁗/2880; near a singular point at distance L each derivative
    # of g grows by ~k/L per order, so g⁗ ≈ g''²/g up to a factor of order one
    # (1/30 for a pole 1/L, 1/15 for 1/√L): bend²/|g| bounds it
    e_quad = bend**2 / jnp.maximum(jnp.abs(quad), jnp.finfo(wide).tiny)
    gmax = jnp.maximum(jnp.maximum(jnp.abs(g0), jnp.abs(g4)), jnp.abs(gm))
    e_quad = e_quad + 2 * jnp.abs(om / safe_dx) * bend + 4 * eps * gmax
    ulps, floor = h_error
    eps_y = jnp.finfo(ydt).eps
    h_size = jnp.maximum(jnp.abs(y), jnp.abs(yr)) + floor
    e_sec = (ulps * eps_y * h_size + ulps * jnp.finfo(ydt).tiny) / jnp.abs(safe_dx)
    # the secant certifies: the mean derivative is within e_sec of it, so a value outside
    # that band is wrong whatever its own bound says (at an inflection of g the second
    # difference vanishes and the fourth does not)
    agrees = jnp.abs(quad - sec) <= e_sec
    use_quad = jnp.isfinite(quad) & (((e_quad < e_sec) & agrees) | ~jnp.isfinite(sec))
    at = jnp.where(jnp.isfinite(g4) & ~infinite, g4, zero)
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


JUMPS: dict[str, Callable[..., Any]] = {}
"""``JUMPS["score"](ctx, v, shape)``: the score through which a finite change across an
infinite one is credited (``_discrete.jump_score``, which builds on this module and
registers itself here)."""


def rescale_rule(prim: Any, smooth: bool, ctx: Any, *vals: Any, **params: Any) -> Pair:
    """Rescale (§2.3.4) in the single varying operand; other operands are constants.

    Where the operand's change is infinite and the result's finite (``exp`` of a ``log``
    that reaches ``-inf`` on one side), the secant is 0 and the result's change is
    credited through the operand's jump score instead (the value the ``log`` was taken of:
    :data:`JUMPS`), so ``exp(log(relu(x)))`` gets the scores of ``relu(x)``.
    """
    (i,) = float_pair_positions(vals)
    consts = [v.x if isinstance(v, Pair) else v for v in vals]  # integer pairs: equal sides
    n = len(vals)

    def h_with(v, *cs):
        return bind_varying(prim, cs, i, params)(v)

    yr = bind_varying(prim, [v.r if isinstance(v, Pair) else v for v in vals], i, params)(vals[i].r)
    shape = jnp.shape(vals[i].x)
    jump_score = JUMPS.get("score")
    score = jump_score(ctx, vals[i], shape) if jump_score and jnp.shape(yr) == shape else None
    extra = [] if score is None else [score.x, score.r]

    def primal(x, r, yr, *rest):
        return h_with(x, *rest[:n])

    # an accurate derivative where JAX's cancels, for the primitive of one operand
    dh = SLOPES.get(prim) if n == 1 and not params.get("accuracy") else None
    h_error = H_ERROR.get(prim, (H_ULPS, 0.0))

    def backward(args, y, g):
        x, r, yr_, *rest = args
        cs = rest[:n]
        m = secant(lambda v: h_with(v, *cs), x, r, y, yr_, smooth, dh, h_error)
        if score is None:
            return (times(g, m), None, None, *([None] * n))
        sx, sr = rest[n:]
        dy = y - yr_
        jump = jax.lax.stop_gradient(~jnp.isfinite(x - r) & jnp.isfinite(dy) & (dy != 0))
        credit = safe_div(times(g, jnp.where(jump, dy, 0)), (sx - sr).astype(g.dtype))
        return (times(g, jnp.where(jump, 0, m)), None, None, *([None] * n), credit, None)

    ya = custom_multiplier(primal, backward)(vals[i].x, vals[i].r, yr, *consts, *extra)
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
