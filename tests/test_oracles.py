"""Per-element oracles: every DeepLIFT rule against its defining formula in numpy float64.

The rule tests (test_rules.py) check summation to delta, which any exact split passes
(e.g. sharing Δf in proportion to Δx). Here each rule is pinned element by element
against an oracle written from its definition, in numpy float64, never calling
deepliftjax or JAX's autodiff:

* one-operand cases use f(x) = sum(w * h(x)) with random w, so C_i = w_i m_i Δx_i;
* Rescale (§2.3.4): m = (h(x) − h(r)) / (x − r), and h'(x) where x == r;
* piecewise (relu, abs, clamp, floor, round, ...): the exact secant, with x and r on both
  sides of each kink and at it;
* products (§2.3.5): midpoint multipliers m_a = b⁰ + Δb/2; bilinear maps: the VJP at the
  midpoints;
* max/min of two varying operands: the fraction of the straight path r → x on which each
  operand wins (crossing point t* in numpy); a tie along the whole path goes to the first;
* div/pow/atan2/rem: the two-player Shapley value;
* select with a flipping predicate: the cases share ½(Δc_p + Δc_q), the jump
  J = ½[(c_p(r) − c_q(r)) + (c_p(x) − c_q(x))] goes through the switch score with J/Δs;
* reduce_max and max pooling ("cross"): max(o, o⁰) − o⁰ to the input's argmax and
  o − max(o, o⁰) to the reference's, per window, ties to the FIRST argmax in row-major
  window order (torch, shap, Captum); "paper": all of Δo to the input's argmax;
* linear maps: the ordinary VJP (built here as an explicit numpy Jacobian);
* RevealCancel (Shrikumar et al. 2017), integrated gradients, gradient × input, guided
  backprop and ε-LRP against numpy implementations of their definitions, plus Captum's
  IntegratedGradients, GuidedBackprop, InputXGradient and LRP on mirrored torch weights.

Each table case runs under ``jax.jit`` (reference closed over; contributions) and under
``jax.vmap`` (3 draws, each with its own traced reference; multipliers, and m · Δx) in
float64 (``jax.enable_x64`` locally), both from one compiled program; plain (eager) in
float64 and under ``jax.jit`` in float32 (against the float64 oracle of the
float32-rounded inputs, to 1e-6 of the largest contribution) for the REPRESENTATIVE
cases by default and for all with ``-m slow`` (eager runs compile every operation,
~0.5 s a case). Multipliers are compared wherever the oracle defines them: NaN in an
oracle means "not pinned", a multiplier at Δx = 0 where the rule leaves it free.

Conventions that are choices, not consequences of exactness, and are pinned here:
ties in max reductions and pooling go to the first argmax; a binary max/min tied along
the whole path goes to the first operand; under RevealCancel an input of a linear layer
whose Δ is exactly zero inherits ½(m⁺ + m⁻)·W, as in the authors' implementation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deepliftjax as dl

F64_RTOL = 1e-9  # float64: every rule here is closed-form; allow a few ulps of the scale
F32_TOL = 1e-6  # float32: max |error| relative to the largest |value|

# ============================================================================ numpy oracles


def _sec(h, dh, x, r):
    """Rescale multiplier (h(x) − h(r)) / (x − r); dh(x) where x == r (NaN: not pinned)."""
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    dx = x - r
    same = dx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (h(x) - h(r)) / np.where(same, 1.0, dx)
        d = dh(x) if dh is not None else np.full_like(x, np.nan)
    return np.where(same, d, s)


def _nan_at(points):
    """A derivative that is undefined (NaN) at the given kinks or jumps."""

    def wrap(dh):
        def d(v):
            out = np.asarray(dh(v), np.float64) * np.ones_like(v)
            for p in points:  # the kink as written, and as float32 rounds it
                out = np.where((v == p) | (v == np.float32(p)), np.nan, out)
            return out

        return d

    return wrap


def _erf(v):
    return np.vectorize(math.erf, otypes=[np.float64])(v)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _relu(v):
    return np.maximum(v, 0.0)


def _win_fraction(d0, d1):
    """Fraction of t ∈ [0, 1] on which d0 + t (d1 − d0) > 0: the share of the straight path
    on which the first operand wins. Tied along the whole path (d0 == d1 == 0): the first
    operand wins (1)."""
    d0, d1 = np.broadcast_arrays(np.asarray(d0, np.float64), np.asarray(d1, np.float64))
    out = np.empty(d0.shape)
    for i in np.ndindex(d0.shape):
        a, b = d0[i], d1[i]
        if a == b:
            out[i] = 1.0 if a >= 0 else 0.0
            continue
        t = min(max(a / (a - b), 0.0), 1.0)  # crossing point of the path
        out[i] = 1.0 - t if b > a else t
    return out


def _jacobian(L, shape):
    """The matrix of an affine numpy map L on arrays of ``shape`` (columns L(e_i) − L(0))."""
    n = int(np.prod(shape))
    base = np.asarray(L(np.zeros(shape))).ravel()
    cols = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        cols.append(np.asarray(L(e.reshape(shape))).ravel() - base)
    return np.stack(cols, 1)


def _shapley(g, a_x, a_r, b_x, b_r):
    """Two-player Shapley values (C_a, C_b) of g(a, b) from (a⁰, b⁰) to (a, b)."""
    ca = 0.5 * ((g(a_x, b_r) - g(a_r, b_r)) + (g(a_x, b_x) - g(a_r, b_x)))
    cb = 0.5 * ((g(a_r, b_x) - g(a_r, b_r)) + (g(a_x, b_x) - g(a_x, b_r)))
    return ca, cb


def _div_or(num, den, limit):
    """num / den where den != 0, else ``limit`` (the multiplier's value at Δ = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, limit, num / np.where(den == 0, 1.0, den))


# ---- window groups for max-type reductions ---------------------------------------------


def _groups_reduce(shape, axes):
    """(output index, input flat indices in row-major order) of a reduction over ``axes``."""
    keep = [d for d in range(len(shape)) if d not in axes]
    groups: dict = {}
    for idx in np.ndindex(*shape):
        key = tuple(idx[d] for d in keep)
        groups.setdefault(key, []).append(np.ravel_multi_index(idx, shape))
    return list(groups.items())


def _same_pads(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _groups_pool(shape, window, strides, padding):
    """(output index, in-bounds input flat indices in row-major window order) per window."""
    if padding == "VALID":
        pads = [(0, 0)] * len(shape)
    else:
        pads = [_same_pads(n, k, s) for n, k, s in zip(shape, window, strides, strict=True)]
    out_shape = [
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(shape, window, strides, pads, strict=True)
    ]
    groups = []
    for o in np.ndindex(*out_shape):
        idx = []
        for j in np.ndindex(*window):
            pos = [oi * s - lo + ji for oi, s, (lo, _), ji in zip(o, strides, pads, j, strict=True)]
            if all(0 <= p < n for p, n in zip(pos, shape, strict=True)):
                idx.append(np.ravel_multi_index(pos, shape))
        groups.append((o, idx))
    return groups


def _max_credit(x, r, w, groups, kind="max", rule="cross"):
    """Per-element contributions of sum(w * maxreduce(x)); ties to the FIRST argmax."""
    pick = np.argmax if kind == "max" else np.argmin  # both return the first occurrence
    comb = np.maximum if kind == "max" else np.minimum
    C = np.zeros(x.size)
    w = np.asarray(w, np.float64)
    for o, idx in groups:
        idx = np.asarray(idx)
        vx, vr = x.ravel()[idx], r.ravel()[idx]
        i, j = idx[pick(vx)], idx[pick(vr)]
        ox, orf = (vx.max(), vr.max()) if kind == "max" else (vx.min(), vr.min())
        wo = w[o] if w.ndim else w
        if rule == "paper":
            C[i] += wo * (ox - orf)
        else:
            top = comb(ox, orf)
            C[i] += wo * (top - orf)
            C[j] += wo * (ox - top)
    return C.reshape(x.shape)


def _from_credit(C, x, r, exact=True):
    """Multipliers credit / Δx (NaN where Δx == 0, where the credit is provably zero)."""
    dx = x - r
    if exact:
        assert np.all(C[dx == 0] == 0), "oracle: credit routed to an element that did not move"
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dx == 0, np.nan, C / np.where(dx == 0, 1.0, dx))


# ---- select ----------------------------------------------------------------------------


def _select_oracle(x, r, w, score, true_case, false_case):
    """Multipliers of sum(w * where(pred, c_true, c_false)).

    score = (slot_a, slot_b or None, const, sign, strict): s = sign (x[a] − (x[b] or const))
    and pred = s > 0 (strict) or s >= 0. A case is ("const", value) or (slot, h, dh).
    Same predicate: linear in the selected case. Flipped: each case gets half its own Δ,
    the jump J = ½[(c_p(r) − c_q(r)) + (c_p(x) − c_q(x))] goes through s with J / Δs.
    """
    M = np.zeros_like(x)
    a, b, const, sign, strict = score

    def s_of(v):
        return sign * (v[a] - (v[b] if b is not None else const))

    sx, sr = s_of(x), s_of(r)
    px, pr = (sx > 0, sr > 0) if strict else (sx >= 0, sr >= 0)
    same = px == pr

    def vals(case, v):
        if case[0] == "const":
            return np.broadcast_to(np.float64(case[1]), w.shape)
        slot, h, _ = case
        return h(v[slot])

    for case, taken in ((true_case, px), (false_case, ~px)):
        if case[0] == "const":
            continue
        slot, h, dh = case
        share = np.where(same, taken.astype(np.float64), 0.5)
        M[slot] += w * share * _sec(h, dh, x[slot], r[slot])
    tx, fx = vals(true_case, x), vals(false_case, x)
    tr, fr = vals(true_case, r), vals(false_case, r)
    cp_x, cq_x = np.where(px, tx, fx), np.where(pr, tx, fx)
    cp_r, cq_r = np.where(px, tr, fr), np.where(pr, tr, fr)
    jump = 0.5 * ((cp_r - cq_r) + (cp_x - cq_x))
    ds = sx - sr
    ms = np.where(same, 0.0, jump / np.where(same, 1.0, ds))
    M[a] += w * ms * sign
    if b is not None:
        M[b] -= w * ms * sign
    return M


# ---- RevealCancel ----------------------------------------------------------------------


def _rc_relu(zr, dp, dn):
    """RevealCancel at a ReLU (2017, §3.5.3): Δy⁺, Δy⁻ as Shapley values of Δx⁺, Δx⁻, and
    m⁺ = Δy⁺/Δx⁺, m⁻ = Δy⁻/Δx⁻; where a part is zero, the limit of that quotient,
    m⁺ = ½[h'(x⁰) + h'(x⁰ + Δx⁻)] (and symmetrically)."""
    yp = 0.5 * ((_relu(zr + dp) - _relu(zr)) + (_relu(zr + dp + dn) - _relu(zr + dn)))
    yn = 0.5 * ((_relu(zr + dn) - _relu(zr)) + (_relu(zr + dp + dn) - _relu(zr + dp)))
    d_relu = lambda v: (v > 0).astype(np.float64)  # noqa: E731
    mp = _div_or(yp, dp, 0.5 * (d_relu(zr) + d_relu(zr + dn)))
    mn = _div_or(yn, dn, 0.5 * (d_relu(zr) + d_relu(zr + dp)))
    return mp, mn


def _rc_mlp(x, r, w, layers):
    """Multipliers of sum(w * relu(...relu(x W1 + b1)... W_L + b_L)) under RevealCancel.

    Linear rule of the 2017 paper: the terms w_ji Δx_i are split by their sign into Δz⁺
    and Δz⁻ (both parts of an input inherit the multiplier of the part its term fed), so
    m_{x_i} = Σ_j W_ij (m⁺_j if W_ij Δx_i > 0 else m⁻_j). An input whose Δ is exactly zero
    gets ½ (m⁺ + m⁻) W, as the authors' implementation does (kundajelab/deeplift,
    ``zero_inp_mask``); it matters for hidden units with Δh = 0 whose Δz⁺, Δz⁻ ≠ 0.
    """
    hx, hr = x, r
    cache = []
    for W, b in layers:
        d = hx - hr
        t = d[:, None] * W
        dp, dn = np.where(t > 0, t, 0).sum(0), np.where(t < 0, t, 0).sum(0)
        zr = hr @ W + b
        mp, mn = _rc_relu(zr, dp, dn)
        cache.append((d, W, mp, mn))
        hx, hr = _relu(hx @ W + b), _relu(zr)
    g = np.asarray(w, np.float64)
    for d, W, mp, mn in reversed(cache):
        gp, gn = g * mp, g * mn
        t = d[:, None] * W
        pos = np.where(t > 0, W * gp, 0) + np.where(t < 0, W * gn, 0)
        zero = 0.5 * W * (gp + gn)
        g = np.where(d[:, None] == 0, zero, pos).sum(1)
    return np.where(x == r, np.nan, g)


def _rc_min(ax, ar, bx, br):
    """RevealCancel multipliers (m_a, m_b) of min(a, b) written as a − relu(a − b)."""
    da, db = ax - ar, bx - br
    dp = np.maximum(da, 0) - np.minimum(db, 0)  # Δ⁺ of h = a − b
    dn = np.minimum(da, 0) - np.maximum(db, 0)
    mp, mn = _rc_relu(ar - br, dp, dn)
    ma = 1.0 - np.where(da > 0, mp, mn)
    mb = np.where(db < 0, mp, mn)
    return np.where(da == 0, np.nan, ma), np.where(db == 0, np.nan, mb)


# ============================================================================ draws


def _uniform(lo=-2.0, hi=2.0, n_equal=2):
    """x, r uniform in [lo, hi]; ``n_equal`` elements with r == x (derivative points)."""

    def draw(rng, shape):
        x, r = rng.uniform(lo, hi, shape), rng.uniform(lo, hi, shape)
        idx = rng.choice(x.size, n_equal, replace=False)
        r.ravel()[idx] = x.ravel()[idx]
        return x, r

    return draw


def _kinks(points, lo=-2.0, hi=2.0):
    """x and r on both sides of each kink, at it, and equal on either side or at it."""

    def draw(rng, shape):
        pairs = []
        for k in points:
            a, b = rng.uniform(0.05, 0.8, 2)
            pairs += [(k + a, k - b), (k - b, k + a), (k, k + a), (k + a, k), (k, k - b)]
            pairs += [(k - b, k), (k, k), (k + a, k + a / 3), (k - b, k - b)]
        x, r = rng.uniform(lo, hi, shape), rng.uniform(lo, hi, shape)
        assert len(pairs) <= x.size
        idx = rng.permutation(x.size)[: len(pairs)]
        x.ravel()[idx], r.ravel()[idx] = np.array(pairs).T
        return x, r

    return draw


def _ties2(lo=-2.0, hi=2.0):
    """Two operands (shape (2, ...)): some tied along the whole path, some tied at the
    reference or at the input only, some with one operand unchanged."""

    def draw(rng, shape):
        x, r = rng.uniform(lo, hi, shape), rng.uniform(lo, hi, shape)
        idx = rng.permutation(x[0].size)
        a_x, b_x, a_r, b_r = x[0].ravel(), x[1].ravel(), r[0].ravel(), r[1].ravel()
        both, at_r, at_x, still = idx[0:2], idx[2:4], idx[4:6], idx[6:7]
        b_x[both], b_r[both] = a_x[both], a_r[both]
        b_r[at_r] = a_r[at_r]
        b_x[at_x] = a_x[at_x]
        a_r[still] = a_x[still]
        return x, r

    return draw


def _onehot(ref=0.25):
    """One-hot rows (DNA-like) against a constant reference: ties in x and in r."""

    def draw(rng, shape):
        x = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
        return x, np.full(shape, ref)

    return draw


def _repeated(levels=3, shift=False):
    """Small integers: many ties within x and within r, and some Δx == 0. With ``shift``,
    r is moved by ±½ (by draw), so that o ≠ o⁰ in most windows and the ties decide who
    gets the credit (with o == o⁰ both credits vanish and ties do not matter)."""

    def draw(rng, shape):
        x = rng.integers(0, levels, shape).astype(np.float64)
        r = rng.integers(0, levels, shape).astype(np.float64)
        return x, r + (rng.choice([-0.5, 0.5]) if shift else 0.0)

    return draw


# ============================================================================ the table


MIDPOINT = (("product_rule", "midpoint"),)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    fn: Callable  # jax: x -> array; f(x) = sum(w * fn(x))
    oracle: Callable  # numpy float64: (x, r, w) -> multipliers of f (NaN: not pinned)
    shape: tuple = (3, 4)
    draw: Callable = _uniform()
    opts: tuple = ()  # keyword options of dl.deeplift, as (name, value) pairs

    def __repr__(self):
        return self.name


def _rescale(name, fn, h, dh, lo=-2.0, hi=2.0, **kw):
    return Case(name, fn, lambda x, r, w: w * _sec(h, dh, x, r), draw=_uniform(lo, hi), **kw)


def _piecewise(name, fn, h, dh, kinks, shape=(6, 8), **kw):
    return Case(
        name,
        fn,
        lambda x, r, w: w * _sec(h, _nan_at(kinks)(dh), x, r),
        shape=shape,
        draw=_kinks(kinks),
        **kw,
    )


_RNG = np.random.default_rng(20160410)
WC, BC = _RNG.normal(size=(4, 5)), _RNG.normal(size=5)
K3 = _RNG.normal(size=(3, 3))
WQ, WK = 0.5 * _RNG.normal(size=(4, 5)), 0.5 * _RNG.normal(size=(4, 5))
IDX = [2, 0, 2, 1]
MLP1 = [(_RNG.normal(size=(5, 4)), 0.3 * _RNG.normal(size=4))]
MLP2 = [
    (_RNG.normal(size=(6, 5)), 0.3 * _RNG.normal(size=5)),
    (_RNG.normal(size=(5, 4)), 0.3 * _RNG.normal(size=4)),
]


def _k(a, x):
    """A numpy constant in x's dtype, converted at trace time.

    Closing over the same numpy array in traces made both with and without x64 (as this
    file does: float64 modes, then float32) hits a JAX 0.10 cache that keeps the float64
    conversion: float32 traces then see float64 constants (lowering or dtype errors).
    """
    return jnp.asarray(a, x.dtype)


def _np_conv_same(x, k):
    xp = np.pad(x, 1)
    H, W = x.shape
    return sum(k[u, v] * xp[u : u + H, v : v + W] for u in range(3) for v in range(3))


def _jax_conv_same(x, k):
    return lax.conv_general_dilated(x[None, None], _k(k, x)[None, None], (1, 1), "SAME")[0, 0]


def _linear_tanh(name, L_jax, L_np, shape=(3, 4)):
    """tanh(L(x)) with L affine: m = Lᵀ (w · sec_tanh(L x, L r)), Lᵀ from a numpy Jacobian."""

    def oracle(x, r, w):
        J = _jacobian(L_np, x.shape)
        lx, lr = np.asarray(L_np(x)), np.asarray(L_np(r))
        g = w * _sec(np.tanh, lambda v: 1 - np.tanh(v) ** 2, lx, lr)
        return (J.T @ g.ravel()).reshape(x.shape)

    return Case(name, lambda x: jnp.tanh(L_jax(x)), oracle, shape=shape)


def _mul_oracle(x, r, w):
    a_x, b_x, a_r, b_r = x[0], x[1], r[0], r[1]
    return np.stack([w * (b_r + (b_x - b_r) / 2), w * (a_r + (a_x - a_r) / 2)])


def _gate_oracle(x, r, w):
    a_bar = (x[0] + r[0]) / 2
    s_bar = (_sigmoid(x[1]) + _sigmoid(r[1])) / 2
    ds = _sec(_sigmoid, lambda v: _sigmoid(v) * (1 - _sigmoid(v)), x[1], r[1])
    return np.stack([w * s_bar, w * a_bar * ds])


def _dot_oracle(x, r, w):
    A, B = (x[0] + r[0]) / 2, (x[1] + r[1]) / 2  # f = sum(w * A Bᵀ): VJP at the midpoints
    return np.stack([w @ B, w.T @ A])


def _attention_oracle(x, r, w):
    xb = (x + r) / 2
    q, k = xb @ WQ, xb @ WK  # midpoints of q = x Wq, k = x Wk (linear in x)
    return (w @ k) @ WQ.T + (w.T @ q) @ WK.T


def _conv2_oracle(x, r, w):
    """y[o] = Σ_k a[o + k] b[k] (a = x[0], b = x[1, :3]); VJPs at the midpoints."""
    a, b = (x[0] + r[0]) / 2, (x[1, :3] + r[1, :3]) / 2
    M = np.zeros_like(x)
    for o in range(len(w)):
        for k in range(3):
            M[0, o + k] += w[o] * b[k]
            M[1, k] += w[o] * a[o + k]
    return M


def _maxmin_oracle(sign):
    def oracle(x, r, w):
        fa = _win_fraction(sign * (r[0] - r[1]), sign * (x[0] - x[1]))
        return np.stack([w * fa, w * (1 - fa)])

    return oracle


def _clamp_oracle(x, r, w):
    """clamp(lo, v, hi) = min(max(v, lo), hi), each step on its own operands' endpoints."""
    lo_x, lo_r, v_x, v_r, hi_x, hi_r = x[0] - 1, r[0] - 1, x[1], r[1], x[2] + 1, r[2] + 1
    f1 = _win_fraction(v_r - lo_r, v_x - lo_x)  # v wins max(v, lo)
    u_x, u_r = np.maximum(v_x, lo_x), np.maximum(v_r, lo_r)
    f2 = _win_fraction(hi_r - u_r, hi_x - u_x)  # u wins min(u, hi)
    return np.stack([w * f2 * (1 - f1), w * f2 * f1, w * (1 - f2)])


def _shapley_oracle(g, ta, tb, da=None, db=None):
    """Two varying operands a = ta(x[0]), b = tb(x[1]) (affine, slope ta[1], tb[1])."""

    def oracle(x, r, w):
        (fa, sa), (fb, sb) = ta, tb
        a_x, a_r, b_x, b_r = fa(x[0]), fa(r[0]), fb(x[1]), fb(r[1])
        ca, cb = _shapley(g, a_x, a_r, b_x, b_r)
        la = np.nan if da is None else 0.5 * (da(a_x, b_r) + da(a_x, b_x)) * sa
        lb = np.nan if db is None else 0.5 * (db(a_r, b_x) + db(a_x, b_x)) * sb
        return np.stack([w * _div_or(ca, x[0] - r[0], la), w * _div_or(cb, x[1] - r[1], lb)])

    return oracle


def _pool(kind, window, strides, padding):
    init, op = (-jnp.inf, lax.max) if kind == "max" else (jnp.inf, lax.min)
    return lambda x: lax.reduce_window(x, init, op, window, strides, padding)


def _pool_case(name, kind, window, strides, padding, shape, draw, rule="cross"):
    def oracle(x, r, w):
        groups = _groups_pool(x.shape, window, strides, padding)
        C = _max_credit(x, r, w, groups, kind, rule)
        return _from_credit(C, x, r, exact=rule == "cross")

    # the paper's rule is not exact in general: the summation guard would report it
    opts = () if rule == "cross" else (("max_rule", rule), ("check", None))
    return Case(name, _pool(kind, window, strides, padding), oracle, shape, draw, opts)


def _reduce_case(name, kind, axes, shape, draw, rule="cross"):
    red = jnp.max if kind == "max" else jnp.min

    def oracle(x, r, w):
        C = _max_credit(x, r, w, _groups_reduce(x.shape, axes), kind, rule)
        return _from_credit(C, x, r, exact=rule == "cross")

    # the paper's rule is not exact in general: the summation guard would report it
    opts = () if rule == "cross" else (("max_rule", rule), ("check", None))
    return Case(name, lambda x: red(x, axis=axes), oracle, shape, draw, opts)


def _mlp_jax(layers):
    def fn(x):
        for W, b in layers:
            x = jax.nn.relu(x @ _k(W, x) + _k(b, x))
        return x

    return fn


def _mlp_rescale_oracle(layers):
    """Rescale through dense + ReLU layers: m = W1 (m1 ⊙ W2 (m2 ⊙ w)), m_j the ReLU secant."""

    def oracle(x, r, w):
        hx, hr, secs = x, r, []
        for W, b in layers:
            zx, zr = hx @ W + b, hr @ W + b
            secs.append((W, _sec(_relu, _nan_at([0])(lambda v: (v > 0) * 1.0), zx, zr)))
            hx, hr = _relu(zx), _relu(zr)
        g = w
        for W, s in reversed(secs):
            g = W @ (g * s)
        return g

    return oracle


def _rc_min_oracle(x, r, w):
    ma, mb = _rc_min(x[0], r[0], x[1], r[1])
    return np.stack([w * ma, w * mb])


_d_tanh = lambda v: 1 - np.tanh(v) ** 2  # noqa: E731
_d_sigmoid = lambda v: _sigmoid(v) * (1 - _sigmoid(v))  # noqa: E731
_gelu = lambda v: v * 0.5 * (1 + _erf(v / math.sqrt(2)))  # noqa: E731
_d_gelu = lambda v: (
    0.5 * (1 + _erf(v / math.sqrt(2)))
    + v
    * np.exp(-(v**2) / 2)
    / math.sqrt(  # noqa: E731
        2 * math.pi
    )
)
_ONEHOT_R = (12, 4)

CASES = [
    # ---- Rescale, smooth (§2.3.4): m = Δh/Δx, h'(x) where x == r ----
    _rescale("tanh", jnp.tanh, np.tanh, _d_tanh),
    _rescale("logistic", jax.nn.sigmoid, _sigmoid, _d_sigmoid),
    _rescale("exp", jnp.exp, np.exp, np.exp),
    _rescale("log", jnp.log, np.log, lambda v: 1 / v, 0.1, 3.0),
    _rescale("sqrt", jnp.sqrt, np.sqrt, lambda v: 0.5 / np.sqrt(v), 0.1, 4.0),
    _rescale("erf", lax.erf, _erf, lambda v: 2 / math.sqrt(math.pi) * np.exp(-(v**2))),
    _rescale("integer_pow", lambda x: x**3, lambda v: v**3, lambda v: 3 * v**2),
    # composites of one input: every piece exact, so the multiplier is Δh/Δx
    _rescale("softplus", jax.nn.softplus, lambda v: np.logaddexp(v, 0), _sigmoid),
    _rescale(
        "silu",
        jax.nn.silu,
        lambda v: v * _sigmoid(v),
        lambda v: _sigmoid(v) + v * _d_sigmoid(v),
    ),
    _rescale("gelu", lambda x: jax.nn.gelu(x, approximate=False), _gelu, _d_gelu),
    _rescale(
        "elu",
        jax.nn.elu,
        lambda v: np.where(v > 0, v, np.expm1(v)),
        lambda v: np.minimum(np.exp(v), 1),
    ),
    # ---- piecewise: the exact secant across kinks ----
    _piecewise("relu", jax.nn.relu, _relu, lambda v: v > 0, [0.0]),
    _piecewise("relu_where", lambda x: jnp.where(x > 0, x, 0.0), _relu, lambda v: v > 0, [0.0]),
    _piecewise(
        "leaky_relu",
        lambda x: jax.nn.leaky_relu(x, 0.1),
        lambda v: np.where(v >= 0, v, 0.1 * v),
        lambda v: np.where(v > 0, 1.0, 0.1),
        [0.0],
    ),
    _piecewise("abs", jnp.abs, np.abs, np.sign, [0.0]),
    _piecewise(
        "clamp_const",
        lambda x: lax.clamp(-0.5, x, 0.7),
        lambda v: np.clip(v, -0.5, 0.7),
        lambda v: (v > -0.5) & (v < 0.7),
        [-0.5, 0.7],
    ),
    _piecewise(
        "floor",
        lambda x: jnp.floor(2 * x),
        lambda v: np.floor(2 * v),
        lambda v: 0 * v,
        [-0.5, 0.0, 0.5, 1.0],
    ),
    _piecewise(
        "round",
        lambda x: jnp.round(2 * x),  # half to even, as np.round
        lambda v: np.round(2 * v),
        lambda v: 0 * v,
        [-0.25, 0.25, 0.75],
    ),
    # ---- products (§2.3.5): the midpoint rule, pinned (the default "guarded" rule is the
    # midpoint wherever it does not cancel: tests/test_products.py) ----
    Case("mul", lambda x: x[0] * x[1], _mul_oracle, (2, 3, 4), opts=MIDPOINT),
    Case("gate", lambda x: x[0] * jax.nn.sigmoid(x[1]), _gate_oracle, (2, 3, 4), opts=MIDPOINT),
    Case("dot_general", lambda x: x[0] @ x[1].T, _dot_oracle, (2, 3, 4), opts=MIDPOINT),
    Case(
        "attention_scores",
        lambda x: (x @ _k(WQ, x)) @ (x @ _k(WK, x)).T,
        _attention_oracle,
        (3, 4),
        opts=MIDPOINT,
    ),
    Case(
        "conv_two_varying",
        lambda x: lax.conv_general_dilated(x[0][None, None], x[1, :3][None, None], (1,), "VALID")[
            0, 0
        ],
        _conv2_oracle,
        (2, 8),
        opts=MIDPOINT,
    ),
    # ---- max / min of two varying operands: share of the straight path ----
    Case("max", lambda x: jnp.maximum(x[0], x[1]), _maxmin_oracle(1.0), (2, 3, 4)),
    Case("min", lambda x: jnp.minimum(x[0], x[1]), _maxmin_oracle(-1.0), (2, 3, 4)),
    Case("max_ties", lambda x: jnp.maximum(x[0], x[1]), _maxmin_oracle(1.0), (2, 3, 4), _ties2()),
    Case("min_ties", lambda x: jnp.minimum(x[0], x[1]), _maxmin_oracle(-1.0), (2, 3, 4), _ties2()),
    Case("clamp_varying", lambda x: lax.clamp(x[0] - 1, x[1], x[2] + 1), _clamp_oracle, (3, 3, 4)),
    # ---- two varying operands: two-player Shapley value ----
    Case(
        "div",
        lambda x: x[0] / (x[1] + 3.0),
        _shapley_oracle(
            lambda a, b: a / b,
            (lambda v: v, 1.0),
            (lambda v: v + 3.0, 1.0),
            lambda a, b: 1 / b,
            lambda a, b: -a / b**2,
        ),
        (2, 3, 4),
        opts=MIDPOINT,  # a / b is the product a * (1/b): Shapley under the midpoint rule
    ),
    Case(
        "pow",
        lambda x: (x[0] + 2.5) ** x[1],
        _shapley_oracle(
            lambda a, b: a**b,
            (lambda v: v + 2.5, 1.0),
            (lambda v: v, 1.0),
            lambda a, b: b * a ** (b - 1),
            lambda a, b: a**b * np.log(a),
        ),
        (2, 3, 4),
    ),
    Case(
        "atan2",
        lambda x: jnp.arctan2(x[0], x[1] + 3.0),
        _shapley_oracle(
            np.arctan2,
            (lambda v: v, 1.0),
            (lambda v: v + 3.0, 1.0),
            lambda a, b: b / (a**2 + b**2),
            lambda a, b: -a / (a**2 + b**2),
        ),
        (2, 3, 4),
    ),
    Case(
        "rem",
        lambda x: lax.rem(x[0] + 3.0, x[1] * 0.5 + 4.0),
        _shapley_oracle(np.fmod, (lambda v: v + 3.0, 1.0), (lambda v: 0.5 * v + 4.0, 0.5)),
        (2, 3, 4),
    ),
    # ---- select / where: cases share ½(Δc_p + Δc_q), the jump goes through the score ----
    Case(
        "select_gt",
        lambda x: jnp.where(x[0] > x[1], jnp.tanh(x[0]), x[1] ** 2),
        lambda x, r, w: _select_oracle(
            x, r, w, (0, 1, 0.0, 1.0, True), (0, np.tanh, _d_tanh), (1, np.square, lambda v: 2 * v)
        ),
        (2, 3, 4),
    ),
    Case(
        "select_lt",
        lambda x: jnp.where(x[0] < x[1], x[0] ** 2, jnp.sin(x[1])),
        lambda x, r, w: _select_oracle(
            x, r, w, (0, 1, 0.0, -1.0, True), (0, np.square, lambda v: 2 * v), (1, np.sin, np.cos)
        ),
        (2, 3, 4),
    ),
    Case(
        "select_score_elsewhere",
        lambda x: jnp.where(x[2] > 0.3, 2 * x[0], jnp.tanh(x[1])),
        lambda x, r, w: _select_oracle(
            x,
            r,
            w,
            (2, None, 0.3, 1.0, True),
            (0, lambda v: 2 * v, lambda v: 2 + 0 * v),
            (1, np.tanh, _d_tanh),
        ),  # fmt: skip
        (3, 3, 4),
    ),
    Case(
        "select_prelu_ge",
        lambda x: jnp.where(x >= 0, x, 0.2 * x),
        lambda x, r, w: _select_oracle(
            x[None],
            r[None],
            w,
            (0, None, 0.0, 1.0, False),
            (0, lambda v: v, lambda v: 1 + 0 * v),
            (0, lambda v: 0.2 * v, lambda v: 0.2 + 0 * v),
        )[0],  # fmt: skip
    ),
    Case(
        "select_step",
        lambda x: jnp.where(x > 0.3, 1.0, -1.0),
        lambda x, r, w: _select_oracle(
            x[None], r[None], w, (0, None, 0.3, 1.0, True), ("const", 1.0), ("const", -1.0)
        )[0],
    ),
    # ---- max reductions and pooling: cross rule, ties to the first argmax ----
    _reduce_case("reduce_max_axis1", "max", (1,), (3, 4), _uniform()),
    _reduce_case("reduce_max_all_repeated", "max", (0, 1), (3, 4), _repeated()),
    _reduce_case("reduce_max_axis1_repeated", "max", (1,), (4, 6), _repeated(shift=True)),
    _reduce_case("reduce_max_onehot_positions", "max", (0,), (8, 4), _onehot()),
    _reduce_case("reduce_min_axis0_repeated", "min", (0,), (5, 4), _repeated(shift=True)),
    _pool_case("maxpool_overlap", "max", (2, 2), (1, 1), "VALID", (5, 6), _uniform()),
    _pool_case(
        "maxpool_overlap_repeated", "max", (2, 2), (1, 1), "VALID", (5, 6), _repeated(shift=True)
    ),  # fmt: skip
    _pool_case("maxpool_tiled", "max", (2, 3), (2, 3), "VALID", (5, 7), _uniform()),
    _pool_case(
        "maxpool_tiled_repeated", "max", (2, 3), (2, 3), "VALID", (5, 7), _repeated(shift=True)
    ),  # fmt: skip
    _pool_case("maxpool_same_s2", "max", (3, 3), (2, 2), "SAME", (5, 6), _repeated(shift=True)),
    _pool_case("maxpool_onehot_tiled", "max", (4, 1), (4, 1), "VALID", _ONEHOT_R, _onehot()),
    _pool_case("maxpool_onehot_overlap", "max", (4, 1), (2, 1), "VALID", _ONEHOT_R, _onehot()),
    _pool_case(
        "minpool_overlap_repeated", "min", (2, 2), (1, 1), "VALID", (5, 6), _repeated(shift=True)
    ),  # fmt: skip
    # max_rule="paper": all of Δo to the input's (first) argmax
    _reduce_case("paper_reduce_max", "max", (1,), (3, 4), _uniform(), "paper"),
    _pool_case(
        "paper_maxpool_tiled_onehot", "max", (4, 1), (4, 1), "VALID", _ONEHOT_R, _onehot(), "paper"
    ),  # fmt: skip
    _pool_case(
        "paper_maxpool_overlap", "max", (2, 2), (1, 1), "VALID", (5, 6), _uniform(), "paper"
    ),  # fmt: skip
    # ---- linear maps: the ordinary VJP (then a tanh, so the chain is pinned too) ----
    Case("dense_const", lambda x: x @ _k(WC, x), lambda x, r, w: w @ WC.T),
    _linear_tanh("dense_bias", lambda x: x @ _k(WC, x) + _k(BC, x), lambda x: x @ WC + BC),
    _linear_tanh(
        "conv_const", lambda x: _jax_conv_same(x, K3), lambda x: _np_conv_same(x, K3), (5, 6)
    ),  # fmt: skip
    _linear_tanh("gather", lambda x: x[jnp.array(IDX)], lambda x: x[np.array(IDX)]),
    _linear_tanh("cumsum", lambda x: jnp.cumsum(x, 1), lambda x: np.cumsum(x, 1)),
    _linear_tanh(  # reshape, transpose, pad, rev, slice, concatenate
        "structural",
        lambda x: jnp.concatenate(
            [jnp.pad(x.reshape(4, 3).T, ((1, 0), (0, 1))).ravel(), 2 * x[::-1, ::2].ravel()]
        ),
        lambda x: np.concatenate(
            [np.pad(x.reshape(4, 3).T, ((1, 0), (0, 1))).ravel(), 2 * x[::-1, ::2].ravel()]
        ),
    ),
    _linear_tanh(
        "avg_pool",
        lambda x: lax.reduce_window(x, 0.0, lax.add, (2, 2), (1, 1), "VALID") / 4,
        lambda x: (x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:]) / 4,
        (4, 5),
    ),
    Case("mlp_rescale", _mlp_jax(MLP2), _mlp_rescale_oracle(MLP2), (6,)),
    # ---- RevealCancel (Shrikumar et al. 2017) ----
    Case(
        "rc_min",
        lambda x: jnp.minimum(x[0], x[1]),
        _rc_min_oracle,
        (2, 3, 4),
        opts=(("rule", "reveal_cancel"),),
    ),
    Case(
        "rc_a_minus_relu",
        lambda x: x[0] - jax.nn.relu(x[0] - x[1]),
        _rc_min_oracle,
        (2, 3, 4),
        opts=(("rule", "reveal_cancel"),),
    ),
    Case(
        "rc_dense_relu",
        _mlp_jax(MLP1),
        lambda x, r, w: _rc_mlp(x, r, w, MLP1),
        (5,),
        opts=(("rule", "reveal_cancel"),),
    ),
    Case(
        "rc_mlp2",
        _mlp_jax(MLP2),
        lambda x, r, w: _rc_mlp(x, r, w, MLP2),
        (6,),
        opts=(("rule", "reveal_cancel"),),
    ),
]


# ============================================================================ harness


@functools.cache
def _weights(case: Case) -> np.ndarray:
    """Fixed random output weights w of f(x) = sum(w * fn(x)) (callers copy via astype)."""
    with jax.enable_x64(True):
        out = jax.eval_shape(case.fn, jax.ShapeDtypeStruct(case.shape, jnp.float64))
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    return rng.normal(size=out.shape)


def _draws(case: Case, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [case.draw(np.random.default_rng(seed), case.shape) for seed in range(1, n + 1)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _expected(oracle, x, r, w):
    """(contributions, multipliers) from an oracle, in float64."""
    x, r, w = (np.asarray(v, np.float64) for v in (x, r, w))
    M = np.asarray(oracle(x, r, w), np.float64)
    assert M.shape == x.shape
    dx = x - r
    assert not np.isnan(M[dx != 0]).any(), "oracle leaves a moved element unpinned"
    C = np.where(dx == 0, 0.0, np.nan_to_num(M) * dx)
    return C, M


def _assert_close(what, got, want, tol, rtol=0.0):
    """|got − want| <= tol · max|want| + rtol · |want| on every pinned (finite) element;
    the message lists the worst elements, expected vs got."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    pinned = np.isfinite(want)
    scale = max(float(np.abs(want[pinned]).max(initial=0.0)), 1e-300)
    err = np.where(pinned, np.abs(got - want), 0.0)
    err = np.where(np.isnan(got) & pinned, np.inf, err)
    bound = tol * scale + rtol * np.abs(np.where(pinned, want, 0.0))
    bad = err > bound
    if bad.any():
        worst = np.argsort(-(err / np.maximum(bound, 1e-300)).ravel())[: min(6, int(bad.sum()))]
        lines = [
            f"  {np.unravel_index(i, want.shape)}: expected {want.ravel()[i]:.10g}, "
            f"got {got.ravel()[i]:.10g}"
            for i in worst
        ]
        pytest.fail(
            f"{what}: {int(bad.sum())}/{int(pinned.sum())} elements off "
            f"(max err {float(err.max()):.3g}, scale {scale:.3g}, tol {tol:g})\n" + "\n".join(lines)
        )


@functools.cache
def _compiled(case: Case) -> dict:
    """The jit and vmap modes of a case, compiled as one program (one XLA compilation
    instead of two; each mode's test reads its part).

    jit: draw 1, the reference closed over as in ``jax.jit(dl.deeplift(f, ref))``,
    contributions. vmap: draws 1-3, one traced reference each, multipliers
    (``multiply_by_inputs=False``); the test checks them and m · Δx.
    """
    w = _weights(case).copy()
    xs, rs = _draws(case, 3)
    opts = dict(case.opts)
    with jax.enable_x64(True):
        f = lambda x: jnp.sum(w * case.fn(x))  # noqa: E731
        r1 = jnp.asarray(rs[0])
        m_of = lambda a, b: dl.deeplift(f, b, multiply_by_inputs=False, **opts)(a)  # noqa: E731
        prog = jax.jit(lambda x1, a, b: (dl.deeplift(f, r1, **opts)(x1), jax.vmap(m_of)(a, b)))
        c1, m = prog(jnp.asarray(xs[0]), jnp.asarray(xs), jnp.asarray(rs))
    return {
        "jit": (xs[:1], rs[:1], np.asarray(c1)[None], None),
        "vmap": (xs, rs, None, np.asarray(m)),
    }


def _run(case: Case, mode: str):
    """Batched (x, r, contributions or None, multipliers or None) of one mode."""
    if mode in ("jit", "vmap"):
        return _compiled(case)[mode]
    f32 = mode == "jit_f32"
    w = _weights(case).astype(np.float32 if f32 else np.float64)
    x, r = (v.astype(w.dtype) for v in _draws(case, 1))
    with jax.enable_x64(not f32):
        f = lambda v: jnp.sum(w * case.fn(v))  # noqa: E731
        t = dl.deeplift(f, jnp.asarray(r[0]), **dict(case.opts))
        c = (jax.jit(t) if f32 else t)(jnp.asarray(x[0]))  # plain: eager, op by op
        return x, r, np.asarray(c)[None], None


MODES = ["plain", "jit", "vmap", "jit_f32"]

# One case of each family runs in every mode by default; the others run plain (eager:
# about a second of XLA compilations of single operations per case) and in float32 only
# with -m slow, to keep the default file near a minute on two cores. Never in float32:
# rem, whose float32 secant of an affine shift (b = 0.5 x + 4) rounds Δb, which the
# float64 oracle does not, so a 1e-6 comparison would test float32 rounding, not the rule.
REPRESENTATIVE = {
    "tanh", "softplus", "relu", "floor", "mul", "dot_general", "max_ties", "div",
    "select_gt", "maxpool_overlap", "maxpool_onehot_tiled", "conv_const", "rc_mlp2",
}  # fmt: skip
NO_F32 = {"rem"}


def _params():
    out = []
    for c in CASES:
        for m in MODES:
            if m == "jit_f32" and c.name in NO_F32:
                continue
            slow = m in ("plain", "jit_f32") and c.name not in REPRESENTATIVE
            out.append(pytest.param(c, m, id=f"{c.name}-{m}", marks=[pytest.mark.slow] * slow))
    return out


@pytest.mark.parametrize("case,mode", _params())
def test_rule_matches_oracle(case: Case, mode: str) -> None:
    xs, rs, cs, ms = _run(case, mode)
    w = _weights(case).astype(xs.dtype)  # the oracle sees the weights f saw
    want = [_expected(case.oracle, a, b, w) for a, b in zip(xs, rs, strict=True)]
    C, M = np.stack([e[0] for e in want]), np.stack([e[1] for e in want])
    if ms is not None:
        assert ms.dtype == xs.dtype and ms.shape == xs.shape
        _assert_close(f"{case.name} multipliers ({mode})", ms, M, F64_RTOL, 1e-9)
        cs = ms * (xs - rs)
    assert cs.dtype == xs.dtype and cs.shape == xs.shape
    tol = F32_TOL if xs.dtype == np.float32 else F64_RTOL
    _assert_close(f"{case.name} contributions ({mode})", cs, C, tol)


def test_table_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert REPRESENTATIVE | NO_F32 <= set(names)


def test_draws_exercise_their_cases() -> None:
    """The draws hold what the cases are about (guards the draws, not the library)."""
    by = {c.name: c for c in CASES}

    def draw(name):
        return by[name].draw(np.random.default_rng(1), by[name].shape)

    x, r = draw("max_ties")  # ties along the whole path, at one end only
    assert ((x[0] == x[1]) & (r[0] == r[1])).any() and ((x[0] != x[1]) & (r[0] == r[1])).any()
    for name in ("maxpool_onehot_tiled", "maxpool_tiled_repeated", "reduce_max_all_repeated"):
        x, r = draw(name)  # repeated values in x and in r
        assert len(np.unique(x)) < x.size and len(np.unique(r)) < r.size, name
    x, r = draw("select_gt")  # the predicate flips for some elements, not for others
    flips = (x[0] > x[1]) != (r[0] > r[1])
    assert flips.any() and not flips.all()
    x, r = draw("relu")  # both sides of the kink, at it, and x == r
    assert ((x > 0) & (r < 0)).any() and ((x < 0) & (r > 0)).any()
    assert (x == 0).any() and (r == 0).any() and ((x == r) & (x != 0)).any()
    x, r = draw("tanh")  # derivative points
    assert (x == r).any()


# ============================================================================ hand examples


def test_tie_convention_hand_example() -> None:
    """Ties go to the first argmax: one window, x = (1, 1, 0), r = (0, 2, 2).

    o = 1, o⁰ = 2: the input's argmax (index 0) gets max(o, o⁰) − o⁰ = 0, the reference's
    first argmax (index 1) gets o − max(o, o⁰) = −1: C = (0, −1, 0), with Δx = (1, −1, −2).
    Binary max tied along the whole path: everything to the first operand.
    """
    with jax.enable_x64(True):
        x, r = jnp.array([1.0, 1.0, 0.0]), jnp.array([0.0, 2.0, 2.0])
        c = dl.deeplift(jnp.max, r)(x)
        np.testing.assert_allclose(np.asarray(c), [0.0, -1.0, 0.0], atol=1e-12)
        x, r = jnp.array([3.0, 3.0, 1.0]), jnp.array([0.0, 0.0, 0.0])
        c = dl.deeplift(jnp.max, r)(x)  # both tied at the input and at the reference
        np.testing.assert_allclose(np.asarray(c), [3.0, 0.0, 0.0], atol=1e-12)
        f = lambda v: jnp.maximum(v[0], v[1])  # noqa: E731
        c = dl.deeplift(f, jnp.array([1.0, 1.0]))(jnp.array([2.0, 2.0]))
        np.testing.assert_allclose(np.asarray(c), [1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("mode", ["plain", "jit", "vmap"])
@pytest.mark.parametrize(
    "fn",
    [lambda x: jnp.minimum(x[0], x[1]), lambda x: x[0] - jax.nn.relu(x[0] - x[1])],
    ids=["min", "x1_minus_relu"],
)
def test_reveal_cancel_2017_min_example(fn, mode: str) -> None:
    """Shrikumar et al. 2017: min(x1, x2) at (3, 1) from (0, 0) gets (0.5, 0.5) under
    RevealCancel (Rescale/path rules give (0, 1)); the same for x1 − relu(x1 − x2)."""
    with jax.enable_x64(True):
        x, r = jnp.array([3.0, 1.0]), jnp.zeros(2)
        t = dl.deeplift(fn, r, rule="reveal_cancel")
        if mode == "vmap":
            xs = jnp.array([[3.0, 1.0], [1.0, 3.0]])
            c = jax.jit(jax.vmap(t))(xs)
            np.testing.assert_allclose(np.asarray(c), [[0.5, 0.5], [0.5, 0.5]], atol=1e-12)
            return
        c = (jax.jit(t) if mode == "jit" else t)(x)
        np.testing.assert_allclose(np.asarray(c), [0.5, 0.5], atol=1e-12)


def test_reveal_cancel_dense_relu_hand_example() -> None:
    """One ReLU unit y = relu(x1 − x2 + x3 + b) from r = 0, with b = −1, x = (3, 1, −1).

    Terms w_i Δx_i = (3, −1, −1): Δz⁺ = 3, Δz⁻ = −2, z⁰ = −1.
    Δy⁺ = ½[(relu(2) − relu(−1)) + (relu(0) − relu(−3))] = 1,
    Δy⁻ = ½[(relu(−3) − relu(−1)) + (relu(0) − relu(2))] = −1: Δy = 0.
    C = (m⁺·3, m⁻·(−1), m⁻·(−1)) = (1, −0.5, −0.5).
    """
    W = np.array([[1.0], [-1.0], [1.0]])
    b = np.array([-1.0])
    x, r = np.array([3.0, 1.0, -1.0]), np.zeros(3)
    expected = _rc_mlp(x, r, np.ones(1), [(W, b)]) * (x - r)
    np.testing.assert_allclose(expected, [1.0, -0.5, -0.5], atol=1e-15)  # the oracle itself
    with jax.enable_x64(True):
        f = lambda v: jnp.sum(jax.nn.relu(v @ W + b))  # noqa: E731
        c = dl.deeplift(f, jnp.asarray(r), rule="reveal_cancel")(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(c), [1.0, -0.5, -0.5], atol=1e-12)


def test_select_hand_example() -> None:
    """where(a > b, a, b²) from (a⁰, b⁰) = (0, 1) to (a, b) = (2, 1): the predicate flips.

    c_p = a (taken at the input), c_q = b² (at the reference); Δc_p = 2, Δc_q = 0.
    J = ½[(0 − 1) + (2 − 1)] = 0 through s = a − b (Δs = 2): C = (½·2 + 0, 0) = (1, 0).
    Total 1 = 2 − 1.
    """
    f = lambda v: jnp.where(v[0] > v[1], v[0], v[1] ** 2)  # noqa: E731
    with jax.enable_x64(True):
        c = dl.deeplift(f, jnp.array([0.0, 1.0]))(jnp.array([2.0, 1.0]))
    np.testing.assert_allclose(np.asarray(c), [1.0, 0.0], atol=1e-12)


# ============================================================================ other methods
# A two-layer network f(x) = v · act2(act1(x W1 + b1) W2 + b2), backpropagated by hand in
# numpy with each method's rule at the nonlinearities.

M_LAYERS = [
    (_RNG.normal(size=(6, 8)), 0.5 * _RNG.normal(size=8)),
    (_RNG.normal(size=(8, 5)) / 2, 0.5 * _RNG.normal(size=5)),
]
M_V = _RNG.normal(size=5)
_NP_ACTS = {
    "relu": (_relu, lambda z: (z > 0).astype(np.float64)),
    "where_relu": (_relu, lambda z: (z > 0).astype(np.float64)),
    "tanh": (np.tanh, _d_tanh),
}
_JAX_ACTS = {
    "relu": jax.nn.relu,
    "where_relu": lambda z: jnp.where(z > 0, z, 0.0),
    "tanh": jnp.tanh,
}


def _net(acts):
    def f(x):
        h = x
        for (W, b), act in zip(M_LAYERS, acts, strict=True):
            h = _JAX_ACTS[act](h @ _k(W, x) + _k(b, x))
        return h @ _k(M_V, x)

    return f


def _np_backward(x, acts, rule="grad", eps=0.0, bias=True):
    """The (modified) gradient of the network at x.

    grad: the derivative; guided: at a ReLU only positive gradients pass, where active
    (Springenberg et al.); lrp: at every nonlinearity g_z = g_y · y / (z + ε sign z), sign 0
    counted positive, and with ``bias=False`` the bias add passes g_u = g_z · z / (u + ε sign u)
    (u = h W: the bias absorbs no relevance), as ``dl.lrp_epsilon``'s docstring states.
    """
    h, cache = x, []
    for (W, b), act in zip(M_LAYERS, acts, strict=True):
        u = h @ W
        z = u + b
        y = _NP_ACTS[act][0](z)
        cache.append((W, u, z, y, act))
        h = y
    g = M_V.copy()
    for W, u, z, y, act in reversed(cache):
        if rule == "lrp":
            gu = g * y / (z + eps * np.where(z >= 0, 1.0, -1.0))
            if not bias:
                gu = gu * z / (u + eps * np.where(u >= 0, 1.0, -1.0))
        else:
            gu = g * _NP_ACTS[act][1](z)
            if rule == "guided" and act.endswith("relu"):
                gu = np.where(g > 0, gu, 0.0)
        g = W @ gu
    return g


def _np_ig(x, r, acts, steps):
    """Integrated gradients by the trapezoid rule on ``steps`` intervals of [0, 1]."""
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2
    grads = [_np_backward(r + a * (x - r), acts) for a in alphas]
    return sum(wk * g for wk, g in zip(weights, grads, strict=True)) * (x - r)


@dataclasses.dataclass(frozen=True)
class MethodCase:
    name: str
    method: Callable  # (f, ref) -> (x -> scores)
    oracle: Callable  # numpy: (x, ref, acts) -> scores
    acts: tuple = ("tanh", "relu")

    def __repr__(self):
        return self.name


METHOD_CASES = [
    MethodCase(
        "ig_8",
        lambda f, r: dl.integrated_gradients(f, r, steps=8),
        lambda x, r, a: _np_ig(x, r, a, 8),
    ),
    MethodCase(
        "ig_50_relu",
        lambda f, r: dl.integrated_gradients(f, r, steps=50),
        lambda x, r, a: _np_ig(x, r, a, 50),
        ("relu", "relu"),
    ),
    MethodCase("gradient", lambda f, r: dl.gradient(f), lambda x, r, a: _np_backward(x, a)),
    MethodCase(
        "gradient_x_input",
        lambda f, r: dl.gradient_x_input(f),
        lambda x, r, a: _np_backward(x, a) * x,
    ),
    MethodCase(
        "guided_relu",
        lambda f, r: dl.guided_backprop(f),
        lambda x, r, a: _np_backward(x, a, "guided"),
        ("relu", "relu"),
    ),
    MethodCase(
        "guided_tanh_relu",
        lambda f, r: dl.guided_backprop(f),
        lambda x, r, a: _np_backward(x, a, "guided"),
    ),
    MethodCase(
        "guided_x_input",
        lambda f, r: dl.guided_backprop(f, multiply_by_inputs=True),
        lambda x, r, a: _np_backward(x, a, "guided") * x,
        ("relu", "relu"),
    ),
    MethodCase(  # jnp.where(z > 0, z, 0) is a ReLU too
        "guided_where_relu",
        lambda f, r: dl.guided_backprop(f),
        lambda x, r, a: _np_backward(x, a, "guided"),
        ("where_relu", "where_relu"),
    ),
    MethodCase(
        "lrp_eps_relu",
        lambda f, r: dl.lrp_epsilon(f, epsilon=0.05),
        lambda x, r, a: _np_backward(x, a, "lrp", 0.05) * x,
        ("relu", "relu"),
    ),
    MethodCase(
        "lrp_eps_tanh_relu",
        lambda f, r: dl.lrp_epsilon(f, epsilon=0.05),
        lambda x, r, a: _np_backward(x, a, "lrp", 0.05) * x,
    ),
    MethodCase(
        "lrp_eps_no_bias",
        lambda f, r: dl.lrp_epsilon(f, epsilon=0.05, bias=False),
        lambda x, r, a: _np_backward(x, a, "lrp", 0.05, bias=False) * x,
        ("relu", "relu"),
    ),
    MethodCase(  # default ε = 1e-9
        "lrp_default_eps",
        lambda f, r: dl.lrp_epsilon(f),
        lambda x, r, a: _np_backward(x, a, "lrp", 1e-9) * x,
        ("relu", "relu"),
    ),
]


def _method_draws():
    rng = np.random.default_rng(5)
    return rng.uniform(-2, 2, (3, 6)), 0.3 * rng.uniform(-1, 1, (3, 6))


@functools.cache
def _method_compiled(case: MethodCase) -> dict:
    """jit (draw 1, reference closed over) and vmap (draws 1-3) as one program."""
    xs, rs = _method_draws()
    with jax.enable_x64(True):
        f, r1 = _net(case.acts), jnp.asarray(rs[0])
        prog = jax.jit(
            lambda x1, a, b: (
                case.method(f, r1)(x1),
                jax.vmap(lambda x, r: case.method(f, r)(x))(a, b),
            )
        )
        one, many = prog(jnp.asarray(xs[0]), jnp.asarray(xs), jnp.asarray(rs))
    return {"jit": (xs[:1], rs[:1], np.asarray(one)[None]), "vmap": (xs, rs, np.asarray(many))}


METHOD_REPRESENTATIVE = {"ig_8", "gradient_x_input", "guided_relu", "lrp_eps_no_bias"}


def _method_params():
    return [
        pytest.param(
            c, m, id=f"{c.name}-{m}",
            marks=[pytest.mark.slow] * (m == "plain" and c.name not in METHOD_REPRESENTATIVE),
        )
        for c in METHOD_CASES
        for m in ("plain", "jit", "vmap")
    ]  # fmt: skip


@pytest.mark.parametrize("case,mode", _method_params())
def test_method_matches_oracle(case: MethodCase, mode: str) -> None:
    if mode == "plain":
        xs, rs = (v[:1] for v in _method_draws())
        with jax.enable_x64(True):
            t = case.method(_net(case.acts), jnp.asarray(rs[0]))
            got = np.asarray(t(jnp.asarray(xs[0])))[None]
    else:
        xs, rs, got = _method_compiled(case)[mode]
    want = np.stack([case.oracle(x, r, case.acts) for x, r in zip(xs, rs, strict=True)])
    _assert_close(f"{case.name} ({mode})", got, want, F64_RTOL, 1e-9)


# ============================================================================ Captum peers
# The same weights in torch (float64) and in JAX; each Captum method against its
# deepliftjax counterpart. Definitions that differ are stated and asserted.


def _torch_nets():
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    from torch import nn

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.r1 = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()
            self.c2, self.r2 = nn.Conv2d(3, 4, 3), nn.ReLU()
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            h = self.r2(self.c2(self.r1(self.c1(x))))
            return self.fc(h.reshape(h.shape[0], -1))

    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    )  # fmt: skip
    return (
        torch,
        nn,
        {"mlp": (mlp.double().eval(), (6,)), "cnn": (CNN().double().eval(), (2, 6, 6))},
    )


def _jax_twin(nn, model, target):
    """The torch model in JAX with the same weights, torch layout (C, H, W) kept."""
    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if isinstance(model, nn.Sequential):
        names = [k[: -len(".weight")] for k in p if k.endswith(".weight")]

        def f(x):
            h = x
            for i, n in enumerate(names):
                h = h @ p[n + ".weight"].T + p[n + ".bias"]
                h = jax.nn.relu(h) if i < len(names) - 1 else h
            return h[target]

        return f

    def conv(h, n, pad):
        dn = ("NCHW", "OIHW", "NCHW")
        y = lax.conv_general_dilated(h[None], p[n + ".weight"], (1, 1), pad, dimension_numbers=dn)
        return y[0] + p[n + ".bias"][:, None, None]

    def f(x):
        h = jax.nn.relu(conv(x, "c1", [(1, 1), (1, 1)]))
        h = jax.nn.relu(conv(h, "c2", "VALID"))
        return (h.reshape(-1) @ p["fc.weight"].T + p["fc.bias"])[target]

    return f


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")
@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["ig", "guided", "input_x_gradient", "lrp"])
def test_captum_peer(method: str, net: str) -> None:
    torch, nn, nets = _torch_nets()
    import captum.attr as ca

    model, shape = nets[net]
    target, eps, steps = 0, 0.05, 8
    tol = 1e-10
    rng = np.random.default_rng(11)
    xs, rs = rng.normal(size=(3, *shape)), 0.3 * rng.normal(size=(3, *shape))
    xt, rt = torch.tensor(xs, requires_grad=True), torch.tensor(rs)
    with jax.enable_x64(True):
        f = _jax_twin(nn, model, target)
        out_t = model(xt)[:, target].detach().numpy()
        out_j = np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(xs)))
        np.testing.assert_allclose(out_j, out_t, rtol=1e-12)
        if method == "ig":
            # Captum's riemann_trapezoid with n points: alphas linspace(0, 1, n), as here
            # with steps = n - 1, but step sizes 1/n (ends halved) where the spacing is
            # 1/(n - 1): its weights sum to (n - 1)/n, so Captum = deepliftjax · steps/n.
            n = steps + 1
            theirs = ca.IntegratedGradients(model).attribute(
                xt, baselines=rt, target=target, n_steps=n, method="riemann_trapezoid"
            )
            ours = jax.vmap(lambda x, r: dl.integrated_gradients(f, r, steps=steps)(x))
            ours = jax.jit(ours)(jnp.asarray(xs), jnp.asarray(rs))
            ours = np.asarray(ours) * steps / n
            tol = 1e-7  # Captum's alphas come from a float32 torch.linspace
        elif method == "guided":
            theirs = ca.GuidedBackprop(model).attribute(xt, target=target)
            ours = jax.jit(jax.vmap(dl.guided_backprop(f)))(jnp.asarray(xs))
        elif method == "input_x_gradient":
            theirs = ca.InputXGradient(model).attribute(xt, target=target)
            ours = jax.jit(jax.vmap(dl.gradient_x_input(f)))(jnp.asarray(xs))
        else:
            # Captum's ε-rule divides at every Linear/Conv output z (bias included, as
            # dl.lrp_epsilon's bias=True) and passes relevance through ReLUs unchanged;
            # dl.lrp_epsilon divides at the ReLUs by their input, the same z. Difference:
            # Captum also divides at the last layer's output and multiplies by the output,
            # a factor z_t / (z_t + ε sign z_t) that dl.lrp_epsilon (no nonlinearity
            # there) does not apply.
            from captum.attr._utils.lrp_rules import EpsilonRule

            for m in model.modules():
                if isinstance(m, nn.Linear | nn.Conv2d):
                    m.rule = EpsilonRule(epsilon=eps)
            theirs = ca.LRP(model).attribute(xt, target=target)
            ours = jax.jit(jax.vmap(dl.lrp_epsilon(f, epsilon=eps)))(jnp.asarray(xs))
            z = out_t.reshape((-1,) + (1,) * len(shape))
            ours = ours * z / (z + eps * np.where(z >= 0, 1.0, -1.0))
    theirs = theirs.detach().numpy()
    assert np.abs(theirs).max() > 1e-3  # not trivially zero
    _assert_close(f"{method} vs Captum ({net})", np.asarray(ours), theirs, tol, tol)
