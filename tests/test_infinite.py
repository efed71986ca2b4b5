"""Infinite values at the max rules: ``-inf`` masks and operands infinite on one side.

Each case is a function, an input and a reference, with an independent float64 oracle for
every score, run plain, under ``jit`` and under ``vmap`` (jit and vmap compiled as one
program; the batch holds the reference itself, which must score exactly 0).

* Masks (the same infinity at input and reference: ``x + mask``, ``where(mask, -inf, x)``)
  in ``maximum``/``minimum``/``clamp``, ``reduce_max``/``reduce_min``, max pooling (tiled and
  overlapping windows), argmax selections, ``softmax``, ``logsumexp`` and causal attention.
  A masked element does not move: it contributes exactly 0, and the other elements get
  what they get without it. Oracles: the path and cross-max rules evaluated in float64
  with ``-inf`` as the limit ``-BIG`` (``BIG = 1e9``, where the limit is reached to 1e-9),
  or DeepLIFT of the same function with the masked entries removed, in float64.
* One side infinite (``log`` of a reference at 0, ``-log`` for ``+inf``): an operand
  arriving from (or leaving to) ``-inf`` gets what it wins at its finite end, the other
  operand its whole change, credited to the input the operand was computed from.
  Oracle: the same rules in float64 at ``-BIG``.
* Where ``f(x) - f(ref)`` is itself infinite no finite scores can sum to it: the scores
  stay finite and the summation guard reports the example.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deepliftjax as dl
from deepliftjax._guard import SummationWarning

BIG = 1e9
INF = np.inf


def _f32(v):
    return np.asarray(v, np.float32)


def _lim(v):
    """float64, with ±inf replaced by ±BIG (the limit the rules take)."""
    v = np.asarray(v, np.float64)
    return np.where(np.isposinf(v), BIG, np.where(np.isneginf(v), -BIG, v))


def _frac(d0, d1):
    """Fraction of t in [0, 1] with d0 + t (d1 - d0) >= 0 (ties to the first operand)."""
    d0, d1 = np.asarray(d0, np.float64), np.asarray(d1, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.clip(d1 / (d1 - d0), 0, 1)  # t >= -d0 / (d1 - d0)
        falling = np.clip(d0 / (d0 - d1), 0, 1)  # t <= d0 / (d0 - d1)
    return np.where(d0 == d1, (d0 >= 0) * 1.0, np.where(d1 > d0, rising, falling))


def _max2(ux, vx, ur, vr, sign=1.0):
    """(C_u, C_v) of max(u, v) (sign 1) or min(u, v) (sign -1) along the straight path."""
    ux, vx, ur, vr = (sign * _lim(t) for t in (ux, vx, ur, vr))
    f = _frac(ur - vr, ux - vx)
    return f * (ux - ur) * sign, (1 - f) * (vx - vr) * sign


def _cross(xs, rs, sign=1.0):
    """Per-element credits of the cross-max rule on one window (first maximum on ties)."""
    xs, rs = sign * _lim(xs), sign * _lim(rs)
    y, yr = xs.max(), rs.max()
    top = max(y, yr)
    c = np.zeros_like(xs)
    c[np.argmax(xs)] += top - yr
    c[np.argmax(rs)] += y - top
    return sign * c


def _d64(f, x, r):
    with jax.enable_x64(True):
        g = jax.jit(f)
        return float(g(jnp.asarray(x, jnp.float64))) - float(g(jnp.asarray(r, jnp.float64)))


def _deeplift64(f, x, r):
    with jax.enable_x64(True):
        d = dl.deeplift(f, jnp.asarray(r, jnp.float64), check=None)
        return np.asarray(jax.jit(d)(jnp.asarray(x, jnp.float64)), np.float64)


def _run(f, x, r):
    """Scores plain, under jit, under vmap (jit and vmap in one program), and the vmap
    scores of the reference itself."""
    d = dl.deeplift(f, jnp.asarray(r), check=None)
    batch = jnp.stack([jnp.asarray(x), jnp.asarray(r)])
    cj, cv = jax.jit(lambda u, us: (d(u), jax.vmap(d)(us)))(jnp.asarray(x), batch)
    out = {"plain": d(jnp.asarray(x)), "jit": cj, "vmap": cv[0]}
    return {m: np.asarray(c, np.float64) for m, c in out.items()}, np.asarray(cv[1])


# ---- oracles of the cases -----------------------------------------------------------------

MASK3 = _f32([0, -INF, 0])
MASK5 = np.array([False, True, False, False, True])
W5 = _f32([0.5, -1.25, 2.0, 0.75, -0.5])


def _pairwise(sign, shift_u=0.0, shift_v=0.0, n=3):
    """``sum(max(x[:n] + shift_u, x[n:] + shift_v))``: each pair's two path contributions."""

    def oracle(x, r):
        x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
        cu, cv = _max2(x[:n] + shift_u, x[n:] + shift_v, r[:n] + shift_u, r[n:] + shift_v, sign)
        return np.concatenate([cu, cv])

    return oracle


def _elementwise(g):
    """``sum(g(x))`` with g elementwise: each input's score is its own term's change."""

    def oracle(x, r):
        with jax.enable_x64(True):
            gx = np.asarray(g(jnp.asarray(x, jnp.float64)), np.float64)
            gr = np.asarray(g(jnp.asarray(r, jnp.float64)), np.float64)
        return np.where(gx == gr, 0.0, gx - gr)

    return oracle


def _row_max(values, sign=1.0, extra=None):
    """``max(values(x))`` with ``values`` elementwise in x (a mask, a ``log``): each
    element's cross-max credit is its input's score; ``extra(x, r)`` adds linear terms."""

    def oracle(x, r):
        with jax.enable_x64(True):
            vx = np.asarray(values(jnp.asarray(x, jnp.float64)), np.float64)
            vr = np.asarray(values(jnp.asarray(r, jnp.float64)), np.float64)
        c = _cross(vx, vr, sign)
        return (
            c if extra is None else c + extra(np.asarray(x, np.float64), np.asarray(r, np.float64))
        )

    return oracle


def _pool_oracle(values, window, stride):
    """Sum of 1-D max pooling of ``values(x)`` (elementwise): credits summed over windows."""

    def oracle(x, r):
        with jax.enable_x64(True):
            vx = np.asarray(values(jnp.asarray(x, jnp.float64)), np.float64)
            vr = np.asarray(values(jnp.asarray(r, jnp.float64)), np.float64)
        c = np.zeros_like(vx)
        for s in range(0, len(vx) - window + 1, stride):
            wx, wr = vx[s : s + window], vr[s : s + window]
            if np.all(np.isneginf(wx) & np.isneginf(wr)):
                continue  # a fully masked window: -inf on both sides, nothing moves
            c[s : s + window] += _cross(wx, wr)
        return c

    return oracle


def _dropped(reduced, keep):
    """Masked inputs score 0; the kept ones what ``reduced`` (f without the masked
    entries, no infinities anywhere) gets from DeepLIFT in float64."""

    def oracle(x, r):
        c = np.zeros(np.shape(x))
        c[keep] = _deeplift64(reduced, np.asarray(x)[keep], np.asarray(r)[keep])
        return c

    return oracle


def _pool(v, window, stride):
    return lax.reduce_window(v, -jnp.inf, lax.max, (window,), (stride,), "VALID")


WQ = _f32([[0.6, -0.3], [0.2, 0.9]])
WK = _f32([[-0.4, 0.7], [0.5, 0.1]])
WV = _f32([[1.1, -0.2], [0.3, 0.8]])
W6 = _f32([0.4, -0.9, 1.3, 0.2, -0.6, 0.7])


def _causal_attention(z):
    t = z.reshape(3, 2)
    q, k, v = t @ WQ, t @ WK, t @ WV
    s = jnp.where(np.tril(np.ones((3, 3), bool)), q @ k.T / math.sqrt(2.0), -jnp.inf)
    return jnp.sum((jax.nn.softmax(s, axis=-1) @ v) * W6.reshape(3, 2))


def _causal_attention_rows(z):
    """The same attention, each query row over its allowed keys only (no -inf)."""
    t = z.reshape(3, 2)
    q, k, v = t @ WQ, t @ WK, t @ WV
    rows = [jax.nn.softmax(q[i] @ k[: i + 1].T / math.sqrt(2.0)) @ v[: i + 1] for i in range(3)]
    return jnp.sum(jnp.stack(rows) * W6.reshape(3, 2))


X6 = _f32([0.3, -1.2, 0.8, 2.0, -0.4, 1.1])
R6 = _f32([-0.5, 0.4, 0.8, -1.0, 0.6, 0.2])
X5 = _f32([0.3, -1.2, 0.8, 2.0, -0.4])
R5 = _f32([1.0, 2.0, 0.0, 0.0, 0.0])
KEEP5 = ~MASK5

# (name, f, x, ref, oracle(x, r) -> expected scores in float64)
MASKS = [
    ("maximum_mask", lambda x: jnp.sum(jnp.maximum(x[:3] + MASK3, x[3:])), X6, R6,
     _pairwise(1.0, MASK3)),
    ("maximum_mask_second_operand", lambda x: jnp.sum(jnp.maximum(x[:3], x[3:] + MASK3)), X6,
     R6, _pairwise(1.0, 0.0, MASK3)),
    ("minimum_posinf_mask", lambda x: jnp.sum(jnp.minimum(x[:3] - MASK3, x[3:])), X6, R6,
     _pairwise(-1.0, -MASK3)),
    ("maximum_both_masked_then_finite",  # a tie at -inf on both sides, then a finite operand
     lambda x: jnp.maximum(jnp.maximum(x[0] - jnp.inf, x[1] - jnp.inf), x[2]),
     _f32([1.0, 3.0, 0.5]), _f32([2.0, -1.0, 0.25]), lambda x, r: np.array([0, 0, x[2] - r[2]])),
    ("maximum_with_neg_inf_constant", lambda x: jnp.sum(jnp.maximum(-jnp.inf, x * x)),
     X6, R6, _elementwise(lambda x: x * x)),
    ("clamp_mask", lambda x: jnp.sum(lax.clamp(-1.0, 2.0 * x + _f32([0, -INF, INF, 0, 0, 0]), 1.0)),
     X6, R6, _elementwise(lambda x: jnp.clip(2.0 * x + jnp.array([0, -INF, INF, 0, 0, 0]), -1, 1))),
    ("reduce_max_mask", lambda x: jnp.max(jnp.where(MASK5, -jnp.inf, x)) + 0.5 * x[0], X5,
     _f32([1.0, 2.0, 0.0, 3.0, 0.0]),
     _row_max(lambda x: jnp.where(MASK5, -jnp.inf, x),
              extra=lambda x, r: np.eye(5)[0] * 0.5 * (x[0] - r[0]))),
    ("reduce_max_mask_holds_the_max",  # the masked element is the largest on both sides
     lambda x: jnp.max(x + _f32([0, 0, -INF, 0])), _f32([1.0, -0.5, 9.0, 0.2]),
     _f32([-1.0, 0.3, 8.0, 0.1]), _row_max(lambda x: x + jnp.array([0, 0, -INF, 0]))),
    ("reduce_min_posinf_mask", lambda x: jnp.min(x + _f32([INF, 0, 0, INF, 0])), X5, R5,
     _row_max(lambda x: x + jnp.array([INF, 0, 0, INF, 0]), sign=-1.0)),
    ("reduce_max_fully_masked_row", lambda x: jnp.maximum(jnp.max(x[:2] - jnp.inf), x[2]),
     _f32([1.0, 3.0, 0.5]), _f32([2.0, -1.0, 0.25]), lambda x, r: np.array([0, 0, x[2] - r[2]])),
    ("max_pool_mask_tiled",  # the last window fully masked, then held at -5
     lambda x: jnp.sum(jnp.maximum(_pool(x + _f32([0, -INF, 0, 0, -INF, -INF]), 2, 2), -5.0)),
     X6, R6, _pool_oracle(lambda x: x + jnp.array([0, -INF, 0, 0, -INF, -INF]), 2, 2)),
    ("max_pool_mask_overlapping",
     lambda x: jnp.sum(_pool(x + _f32([0, -INF, 0, 0, -INF, 0]), 3, 1)), X6, R6,
     _pool_oracle(lambda x: x + jnp.array([0, -INF, 0, 0, -INF, 0]), 3, 1)),
    ("softmax_mask", lambda x: jax.nn.softmax(jnp.where(MASK5, -jnp.inf, x)) @ W5, X5,
     _f32([0.0, 0.0, 1.0, -1.0, 0.5]), _dropped(lambda z: jax.nn.softmax(z) @ W5[KEEP5], KEEP5)),
    ("softmax_mask_holds_the_max", lambda x: jax.nn.softmax(x + _f32([0, -INF, 0, 0, 0]))[0], X5,
     _f32([0.0, 9.0, 1.0, -1.0, 0.5]),
     _dropped(lambda z: jax.nn.softmax(z)[0], np.array([True, False, True, True, True]))),
    ("log_softmax_mask", lambda x: jax.nn.log_softmax(jnp.where(MASK5, -jnp.inf, x))[2], X5, R5,
     _dropped(lambda z: jax.nn.log_softmax(z)[1], KEEP5)),
    ("logsumexp_mask", lambda x: jax.nn.logsumexp(jnp.where(MASK5, -jnp.inf, x)), X5, R5,
     _dropped(jax.nn.logsumexp, KEEP5)),
    ("causal_attention", _causal_attention, X6, R6,
     lambda x, r: _deeplift64(_causal_attention_rows, x, r)),
]  # fmt: skip

ONE_SIDE = [
    ("maximum_log_arrives_and_wins", lambda x: jnp.maximum(jnp.log(x[0]), x[1]),
     _f32([10.0, 2.0]), _f32([0.0, 0.5]),
     lambda x, r: np.concatenate(_max2(np.log(x[:1]), x[1:], [-INF], r[1:]))),
    ("maximum_log_arrives_and_loses", lambda x: jnp.maximum(jnp.log(x[0]), x[1]),
     _f32([3.0, 2.0]), _f32([0.0, 0.5]),
     lambda x, r: np.concatenate(_max2(np.log(x[:1]), x[1:], [-INF], r[1:]))),
    ("maximum_log_leaves", lambda x: jnp.maximum(jnp.log(x[0]), x[1]),
     _f32([0.0, 2.0]), _f32([10.0, 0.5]),
     lambda x, r: np.concatenate(_max2([-INF], x[1:], np.log(r[:1]), r[1:]))),
    ("maximum_log_second_operand", lambda x: jnp.maximum(x[1], jnp.log(x[0])),
     _f32([10.0, 2.0]), _f32([0.0, 0.5]),
     lambda x, r: np.concatenate(_max2(x[1:], np.log(x[:1]), r[1:], [-INF]))[::-1]),
    ("maximum_log_ties_at_input", lambda x: jnp.maximum(jnp.log(x[0]), x[1]),
     _f32([1.0, 0.0]), _f32([0.0, 0.5]), lambda x, r: np.array([0.0, x[1] - r[1]])),
    ("maximum_one_arrives_one_leaves", lambda x: jnp.maximum(jnp.log(x[0]), jnp.log(x[1])),
     _f32([2.0, 0.0]), _f32([0.0, 3.0]),
     lambda x, r: np.array([max(np.log(2) - np.log(3), 0), np.log(2) - max(np.log(2), np.log(3))])),
    ("clip_log_at_zero_reference", lambda x: jnp.sum(jnp.maximum(jnp.log(x), -10.0)),
     _f32([10.0, 2.0, 1e-6]), _f32([0.0, 0.0, 0.0]),
     _elementwise(lambda x: jnp.maximum(jnp.log(x), -10.0))),
    ("relu_log", lambda x: jnp.sum(jax.nn.relu(jnp.log(x))), _f32([10.0, 0.5, 1e-6]),
     _f32([0.0, 0.0, 0.0]), _elementwise(lambda x: jax.nn.relu(jnp.log(x)))),
    ("clamp_log", lambda x: jnp.sum(lax.clamp(-5.0, jnp.log(x), 1.0)), _f32([10.0, 0.5, 1e-6]),
     _f32([0.0, 2.0, 0.0]), _elementwise(lambda x: jnp.clip(jnp.log(x), -5.0, 1.0))),
    ("minimum_neg_log_posinf", lambda x: jnp.sum(jnp.minimum(-jnp.log(x), 5.0)),
     _f32([10.0, 0.5, 1e-6]), _f32([0.0, 0.0, 0.0]),
     _elementwise(lambda x: jnp.minimum(-jnp.log(x), 5.0))),
    ("minimum_neg_log_two_operands", lambda x: jnp.minimum(-jnp.log(x[0]), x[1]),
     _f32([0.2, 3.0]), _f32([0.0, 0.5]),
     lambda x, r: np.concatenate(_max2(-np.log(x[:1]), x[1:], [INF], r[1:], sign=-1.0))),
    ("reduce_max_log_row", lambda x: jnp.max(jnp.log(x)), _f32([10.0, 2.0, 1.0]),
     _f32([0.0, 2.5, 1.5]), _row_max(jnp.log)),
    ("reduce_max_log_leaves", lambda x: jnp.max(jnp.log(x)), _f32([0.0, 2.0, 1.0]),
     _f32([10.0, 2.5, 1.5]), _row_max(jnp.log)),
    ("reduce_min_neg_log_row", lambda x: jnp.min(-jnp.log(x)), _f32([10.0, 2.0, 1.0]),
     _f32([0.0, 2.5, 1.5]), _row_max(lambda x: -jnp.log(x), sign=-1.0)),
    ("max_pool_log_tiled",  # window maxima arriving from -inf and one leaving to it
     lambda x: jnp.sum(_pool(jnp.log(x), 2, 2)),
     _f32([5.0, 2.0, 3.0, 1.0, 0.0, 2.0]), _f32([0.0, 1.0, 0.0, 1.0, 4.0, 3.0]),
     _pool_oracle(jnp.log, 2, 2)),
    ("max_pool_log_overlapping", lambda x: jnp.sum(_pool(jnp.log(x), 2, 1)),
     _f32([5.0, 2.0, 3.0, 4.0]), _f32([0.0, 1.0, 0.0, 1.0]), _pool_oracle(jnp.log, 2, 1)),
]  # fmt: skip


def _check(f, x, r, oracle):
    want = np.asarray(oracle(np.asarray(x, np.float64), np.asarray(r, np.float64)), np.float64)
    d64 = _d64(f, x, r)
    assert np.isfinite(d64) and np.all(np.isfinite(want))
    assert abs(want.sum() - d64) <= 1e-6 * max(1.0, abs(d64)), (want, d64)  # the oracle sums
    scale = max(1.0, np.abs(want).max())
    modes, at_ref = _run(f, x, r)
    for mode, c in modes.items():
        assert np.all(np.isfinite(c)), (mode, c)
        np.testing.assert_allclose(c, want, rtol=0, atol=2e-5 * scale, err_msg=mode)
        assert abs(c.sum() - d64) <= 1e-5 * max(abs(d64), 1e-3 * scale), (mode, c.sum(), d64)
    assert np.all(at_ref == 0), at_ref  # the reference itself scores exactly 0


# The default suite keeps one case per rule and structure (softmax with a -inf mask: in
# test_shapley_oracle); ``-m slow`` runs them all.
DEFAULT = {
    "maximum_mask",
    "reduce_max_mask",
    "max_pool_mask_overlapping",
    "maximum_log_arrives_and_wins",
    "maximum_one_arrives_one_leaves",
    "reduce_max_log_row",
}


def _params(cases):
    marks = lambda name: [] if name in DEFAULT else [pytest.mark.slow]  # noqa: E731
    return [pytest.param(c, id=c[0], marks=marks(c[0])) for c in cases]


@pytest.mark.parametrize("case", _params(MASKS))
def test_masks_contribute_nothing(case) -> None:
    _, f, x, r, oracle = case
    _check(f, x, r, oracle)


@pytest.mark.parametrize("case", _params(ONE_SIDE))
def test_one_side_infinite_is_a_limit(case) -> None:
    _, f, x, r, oracle = case
    _check(f, x, r, oracle)


MASK4 = _f32([0, -INF, 0, 0])


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(lambda x: 2.0 * x[jnp.argmax(x + MASK4)], marks=pytest.mark.slow),
        pytest.param(
            lambda x: jnp.sum(jax.nn.one_hot(jnp.argmax(x + MASK4), 4) * x),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["index", "one_hot"],
)
def test_argmax_selection_ignores_the_masked_element(f) -> None:
    """The argmax moves (from 2 at the reference to 0 at the input) past a masked element
    that is the largest on both sides: it scores 0 and the scores sum to Δf."""
    x, r = _f32([4.0, 9.0, 2.0, 0.5]), _f32([0.0, 8.0, 3.0, 1.0])
    d64 = _d64(f, x, r)
    modes, at_ref = _run(f, x, r)
    for mode, c in modes.items():
        assert c[1] == 0 and np.all(np.isfinite(c)), (mode, c)
        assert abs(c.sum() - d64) <= 1e-5 * max(1.0, abs(d64)), (mode, c, d64)
    assert np.all(at_ref == 0)


def test_infinite_change_has_finite_scores_and_the_guard_reports_it() -> None:
    """``max(log x)`` with the whole reference at 0 changes by +inf: no finite scores sum
    to it. They are 0 (finite), and the guard says f(x) - f(ref) is not finite."""
    f = lambda x: jnp.max(jnp.log(x))  # noqa: E731
    x, r = _f32([10.0, 2.0, 1.0]), _f32([0.0, 0.0, 0.0])
    modes, at_ref = _run(f, x, r)
    for mode, c in modes.items():
        assert np.all(c == 0), (mode, c)
    with pytest.warns(SummationWarning, match="not finite"):
        dl.deeplift(f, jnp.asarray(r))(jnp.asarray(x))
