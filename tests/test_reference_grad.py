"""``jax.grad`` of the scores with respect to the reference (and, beside it, the input).

The scores are a function of the reference like any other: every rule's backward pass is
ordinary JAX code in the reference-side values it keeps, so an outer ``jax.grad`` through
``deeplift``/``deeplift_shap`` must give their true derivative. Oracles: central finite
differences of the same scores in float64 (per element, at points away from kinks), and
for elementwise and one-nonlinearity functions the derivative of the scores' closed form.
Each case runs as one compiled program, ``jit(vmap(grad))`` beside the finite
differences; the same gradients op by op (plain) are in the slow suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from deepliftjax import deeplift, deeplift_shap

N = 6
EPS = 1e-6  # finite-difference step (float64)
RTOL = 1e-6  # of the largest derivative in the case: FD error is ~1e-10 here


@dataclass(frozen=True)
class Case:
    name: str
    f: Callable  # float64 arrays of shape (N,) -> scalar
    rule: str = "rescale"


def _weights():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(N, 5)),
        rng.normal(size=(5,)),
        rng.normal(size=(3, 4)),
        rng.normal(size=(3, 4)),
    )


W1, W2, A, B = _weights()


def _layernorm(v):
    c = v - v.mean()
    return c * lax.rsqrt(jnp.mean(c * c) + 1e-5)


def _rnn(x):
    def step(h, xi):
        h = jnp.tanh(0.7 * h + xi)
        return h, h

    h, hs = lax.scan(step, jnp.zeros((), x.dtype), x)
    return h + hs.sum()


def _cond(x):
    return lax.cond(x.sum() > 0, lambda v: jnp.sum(jnp.sin(v)), lambda v: jnp.sum(v**2) - 1.0, x)


def _argmax_gather(x):
    v = jnp.tanh(x @ W1)
    return v[jnp.argmax(v)] * 2 + v.sum()


def _pool(x):
    h = jnp.tanh(x @ W1 @ W1.T)
    p = lax.reduce_window(h, -jnp.inf, lax.max, (2,), (2,), "VALID")
    return jnp.sum(p * jnp.arange(1.0, 4.0)) + jnp.max(x)


CASES = [
    Case("mlp_relu", lambda x: jnp.dot(jax.nn.relu(x @ W1 + 0.1), W2)),
    Case("mlp_tanh", lambda x: jnp.dot(jnp.tanh(x @ W1), W2)),
    Case("softmax", lambda x: jax.nn.softmax(x @ W1)[2]),
    Case("logsumexp", lambda x: jax.nn.logsumexp(x @ W1)),
    Case("products", lambda x: x[0] * x[1] + x[2] * x[3] * x[4] + x[5]),
    Case("attention", lambda x: jnp.dot(x[:3] @ A, x[3:] @ B)),
    Case("max_pool", _pool),
    Case("maximum", lambda x: jnp.sum(jnp.maximum(x[:3], x[3:]) * jnp.arange(1.0, 4.0))),
    Case("clip", lambda x: jnp.sum(jnp.clip(x, -0.3, 0.45) ** 2)),
    Case("where", lambda x: jnp.sum(jnp.where(x > 0.3, jnp.sin(x), x**2))),
    Case("div", lambda x: jnp.sum(x[:3] / (1.0 + x[3:] ** 2))),
    Case("layernorm", lambda x: jnp.dot(_layernorm(x), jnp.arange(1.0, N + 1))),
    Case("cond", _cond),
    Case("scan", _rnn),
    Case("argmax_gather", _argmax_gather),
    # x[0] * 1e308 overflows at the input only: the predicate's own score is not finite and
    # the jump is credited through the input distance (the switch score of last resort)
    Case(
        "input_distance",
        lambda x: (
            jnp.where(jnp.isfinite(x[0] * 1e308), x[1] ** 2, jnp.sin(x[2])) + x[3] * x[4] + x[5]
        ),
    ),
    Case("mlp_relu", lambda x: jnp.dot(jax.nn.relu(x @ W1 + 0.1), W2), "reveal_cancel"),
    Case("softmax", lambda x: jax.nn.softmax(x @ W1)[2], "reveal_cancel"),
    Case("where", lambda x: jnp.sum(jnp.where(x > 0.3, jnp.sin(x), x**2)), "reveal_cancel"),
]
DEFAULT = {("mlp_relu", "rescale"), ("input_distance", "rescale")}
"""Cases in the default suite (one compile each); the others are marked slow."""


def _points():
    """Two (input, reference) pairs: the input positive and the reference negative, so
    the predicates above (x > 0.3, x.sum() > 0, the argmax, the overflow of x[0] * 1e308)
    differ between them, with no kink within EPS of either."""
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(2, N))) + 0.2
    x[:, 0] = [2.1, 1.9]  # x[0] * 1e308 overflows; the reference's does not
    r = -np.abs(rng.normal(size=(2, N))) * 0.5
    r[:, 0] = [0.6, 0.4]
    w = rng.normal(size=N)
    return jnp.asarray(x), jnp.asarray(r), jnp.asarray(w)


def _params(cases):
    out = []
    for c in cases:
        marks = [] if (c.name, c.rule) in DEFAULT else [pytest.mark.slow]
        out.append(pytest.param(c, id=f"{c.name}-{c.rule}", marks=marks))
    return out


def _fd_points(x, r):
    """Inputs and references for central differences in each element of x, then of r."""
    e = EPS * np.eye(N)
    px = np.concatenate([x + e, x - e, np.broadcast_to(x, (2 * N, N))])
    pr = np.concatenate([np.broadcast_to(r, (2 * N, N)), r + e, r - e])
    return jnp.asarray(px), jnp.asarray(pr)


def _fd(vals):
    v = np.asarray(vals)
    return (v[:N] - v[N : 2 * N]) / (2 * EPS), (v[2 * N : 3 * N] - v[3 * N :]) / (2 * EPS)


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    tol = RTOL * max(1.0, np.max(np.abs(want)))
    err = np.abs(got - want)
    assert np.all(err <= tol), f"{what}: per-element error {err} > {tol:.1e}\n{got}\n{want}"


def _fd_program(case):
    """``(xs, rs, px, pr) -> (vmap(grad)(xs, rs), vmap(loss)(px, pr))``, compiled once."""
    _, _, w = _points()

    def loss(x, r):
        return jnp.sum(w * deeplift(case.f, r, rule=case.rule)(x))

    grad = jax.grad(loss, argnums=(0, 1))

    @jax.jit
    def program(xs, rs, px, pr):
        return jax.vmap(grad)(xs, rs), jax.vmap(loss)(px, pr)

    return program, grad


@pytest.mark.parametrize("case", _params(CASES))
def test_grad_of_scores_matches_finite_differences(case):
    """d/dref and d/dx of Σ w·scores under jit(vmap(grad)), at two points, per element."""
    with jax.enable_x64(True):
        xs, rs, _ = _points()
        fd_in = [_fd_points(np.asarray(xs[i]), np.asarray(rs[i])) for i in range(2)]
        px = jnp.concatenate([p for p, _ in fd_in])
        pr = jnp.concatenate([q for _, q in fd_in])
        program, _ = _fd_program(case)
        (gx, gr), vals = program(xs, rs, px, pr)
        for i in range(2):
            fdx, fdr = _fd(vals[4 * N * i : 4 * N * (i + 1)])
            _close(gr[i], fdr, f"{case.name}: d/dref, point {i}")
            _close(gx[i], fdx, f"{case.name}: d/dx, point {i}")


@pytest.mark.slow
@pytest.mark.parametrize("case", _params(CASES))
def test_grad_of_scores_plain_matches_compiled(case):
    """The same gradients eagerly (no jit, no vmap): equal to the compiled ones."""
    with jax.enable_x64(True):
        xs, rs, _ = _points()
        px, pr = _fd_points(np.asarray(xs[0]), np.asarray(rs[0]))
        program, grad = _fd_program(case)
        (gx_b, gr_b), vals = program(xs, rs, px, pr)
        gx, gr = grad(xs[0], rs[0])
        fdx, fdr = _fd(vals)
        _close(gr, fdr, f"{case.name}: d/dref, plain")
        _close(gx, fdx, f"{case.name}: d/dx, plain")
        np.testing.assert_allclose(gr, gr_b[0], rtol=1e-12, atol=1e-12)


# ---- closed forms: Rescale's secant, its tiny-Δx branch, inputs equal to the reference ----


def _closed_elementwise(x, r):
    """f = Σ c·tanh(x): C_i = c_i (tanh x_i − tanh r_i) exactly."""
    c = jnp.arange(1.0, x.shape[0] + 1)
    return c * (jnp.tanh(x) - jnp.tanh(r))


def _closed_one_unit(x, r):
    """f = tanh(Σx): C_i = Δx_i / ΣΔx · (tanh Σx − tanh Σr) (Rescale at the one unit)."""
    dx = x - r
    return dx / jnp.sum(dx) * (jnp.tanh(jnp.sum(x)) - jnp.tanh(jnp.sum(r)))


CLOSED = {
    "elementwise": (lambda x: jnp.sum(jnp.arange(1.0, 6.0) * jnp.tanh(x)), _closed_elementwise),
    "one_unit": (lambda x: jnp.tanh(jnp.sum(x)), _closed_one_unit),
}


def _closed_points(kind):
    x = np.array([0.3, -0.7, 1.1, 0.5, 2.0])
    if kind == "secant":  # every Δx well above the tiny-Δx threshold
        r = np.array([-0.2, 0.2, 0.4, -0.4, 1.3])
    else:  # Δx within sqrt(eps)·|x| (float64: 1.5e-8 relative): Rescale's mean derivative
        r = x * (1 + np.array([1e-10, -3e-10, 2e-9, -5e-9, 1e-9]))
    return jnp.asarray(x), jnp.asarray(r)


def _closed_check(name, compiled):
    f, closed = CLOSED[name]
    with jax.enable_x64(True):
        pts = [_closed_points(kind) for kind in ("secant", "tiny_dx")]
        xs, rs = jnp.stack([p[0] for p in pts]), jnp.stack([p[1] for p in pts])
        w = jnp.array([1.0, -2.0, 3.0, 0.5, -1.5])

        def loss(r, x):
            return jnp.sum(w * deeplift(f, r)(x))

        def oracle(r, x):
            return jnp.sum(w * closed(x, r))

        want = jax.vmap(jax.grad(oracle))(rs, xs)
        if compiled:
            got = jax.jit(jax.vmap(jax.grad(loss)))(rs, xs)
        else:
            got = jnp.stack([jax.grad(loss)(r, x) for r, x in zip(rs, xs, strict=True)])
        for i, kind in enumerate(("secant", "tiny_dx")):
            _close(got[i], want[i], f"{name}/{kind}")


@pytest.mark.parametrize("name", list(CLOSED))
def test_grad_wrt_reference_matches_closed_form(name):
    """Rescale's secant and, where |Δx| is within sqrt(eps)|x|, its mean derivative:
    jit(vmap(grad)) equals the derivative of the closed-form scores per element."""
    _closed_check(name, compiled=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLOSED))
def test_grad_wrt_reference_matches_closed_form_plain(name):
    _closed_check(name, compiled=False)


def test_grad_wrt_reference_where_input_equals_reference():
    """An input equal to its reference scores 0, but its score still moves with the
    reference: d C_i / d r_i = -m_i (dinucleotide shuffles share many bases with x)."""
    f, closed = CLOSED["elementwise"]
    with jax.enable_x64(True):
        x = jnp.array([0.3, -0.7, 1.1, 0.5, 2.0])
        r = jnp.array([0.3, 0.2, 1.1, -0.4, 2.0])  # elements 0, 2, 4 equal
        w = jnp.array([1.0, -2.0, 3.0, 0.5, -1.5])
        got = jax.grad(lambda r: jnp.sum(w * deeplift(f, r)(x)))(r)
        want = jax.grad(lambda r: jnp.sum(w * closed(x, r)))(r)
        _close(got, want, "x == ref")


# ---- deeplift_shap: the references argument ---------------------------------------------

SEQ = 5


def _cnn(x):
    """A small model of one-hot DNA: a width-2 convolution, ReLU, max over positions."""
    rng = np.random.default_rng(2)
    k = jnp.asarray(rng.normal(size=(2, 4, 3)), x.dtype)
    h = lax.conv_general_dilated(
        x[None], k, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
    )[0]
    return jnp.sum(jnp.max(jax.nn.relu(h + 0.1), axis=0) * jnp.arange(1.0, 4.0))


def _shap_check(chunk, compiled):
    """Σ w·contributions + Σ w2·hypothetical, differentiated in the (K, L, 4) references."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = jax.nn.one_hot(jnp.array([0, 2, 1, 3, 3]), 4, dtype=jnp.float64)
        refs = jnp.asarray(rng.uniform(0.05, 0.45, size=(2, SEQ, 4)))
        w, w2 = (jnp.asarray(rng.normal(size=(SEQ, 4))) for _ in range(2))

        def loss(refs):
            s = deeplift_shap(_cnn, refs, hypothetical=True, reference_chunk_size=chunk)(x)
            return jnp.sum(w * s.contributions) + jnp.sum(w2 * s.hypothetical)

        e = EPS * np.eye(refs.size).reshape(-1, *refs.shape)
        pts = jnp.concatenate([refs + e, refs - e])

        @jax.jit
        def program(batch, pts):
            return jax.vmap(jax.grad(loss))(batch), jax.vmap(loss)(pts)

        # the second reference set is the first in the other order: the same mean
        g_b, vals = program(jnp.stack([refs, refs[::-1]]), pts)
        fd = ((vals[: refs.size] - vals[refs.size :]) / (2 * EPS)).reshape(refs.shape)
        if compiled:
            _close(g_b[0], fd, "deeplift_shap d/drefs, jit(vmap)")
            _close(g_b[1], fd[::-1], "deeplift_shap d/drefs, permuted references")
        else:
            _close(jax.grad(loss)(refs), fd, "deeplift_shap d/drefs, plain")


@pytest.mark.parametrize(
    "chunk", [1, pytest.param(None, marks=pytest.mark.slow)], ids=["scan", "one_chunk"]
)
def test_deeplift_shap_grad_wrt_references(chunk):
    """Through ``references=`` (a (K, L, 4) array), chunks under lax.scan or one vmap."""
    _shap_check(chunk, compiled=True)


@pytest.mark.slow
def test_deeplift_shap_grad_wrt_references_plain():
    _shap_check(1, compiled=False)
