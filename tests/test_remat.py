"""``jax.checkpoint`` inside a model is kept by the DeepLIFT pass: the body is interpreted
inside a checkpoint with the same policy, so the backward pass recomputes the body's pairs
instead of storing them, and the scores are those of the unchecked model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepliftjax as dl
from deepliftjax._compat import primitive
from tests._helpers import equations_in, rel_sum_error

REMAT = primitive("remat_p")
N, DEPTH = 6, 2


def _weights():
    k1, k2 = jax.random.split(jax.random.key(0))
    w1 = jax.random.normal(k1, (DEPTH, N, 2 * N)) / np.sqrt(N)
    w2 = jax.random.normal(k2, (DEPTH, 2 * N, N)) / np.sqrt(2 * N)
    return w1, w2


def _block(h, w1, w2):
    """Products of two varying values, a kink, a discrete value (argmax) and its integer
    output crossing the checkpoint boundary with its switch score."""
    u = jax.nn.gelu(h @ w1)
    v = jnp.where(u > 0.1, u, 0.3 * u) * jnp.tanh(u)
    k = jnp.argmax(v)
    return h + v @ w2, k


def _model(checkpoint: dict | None, scan: bool):
    w1, w2 = _weights()
    block = _block if checkpoint is None else jax.checkpoint(_block, **checkpoint)

    def f(x):
        if scan:
            h, ks = jax.lax.scan(lambda h, w: block(h, *w), x, (w1, w2))
        else:
            h, ks = x, []
            for i in range(DEPTH):
                h, k = block(h, w1[i], w2[i])
                ks.append(k)
            ks = jnp.stack(ks)
        return jnp.sum(jnp.sin(h)) + 0.1 * jnp.sum(ks.astype(h.dtype))

    return f


CHECKPOINTS = {
    "default": {},
    "no_cse": {"prevent_cse": False},
    "dots_saveable": {"policy": jax.checkpoint_policies.dots_saveable},
}
MODES = ("plain", "jit", "vmap")


def _scores(f, x, ref, mode, rule):
    g = dl.deeplift(f, ref, rule=rule)
    if mode == "jit":
        return jax.jit(g)(x)
    if mode == "vmap":
        return jax.jit(jax.vmap(g))(jnp.stack([x, 0.5 * x]))[0]  # compiled, not op by op
    return g(x)


SLOW = pytest.mark.slow  # the same claims in other settings; the default suite keeps one each
CASES = [
    *[("default", True, mode, "rescale") for mode in MODES],
    ("default", False, "jit", "rescale"),
    ("default", True, "jit", "reveal_cancel"),
    ("dots_saveable", True, "jit", "rescale"),
    *[pytest.param("default", False, mode, "rescale", marks=SLOW) for mode in ("plain", "vmap")],
    pytest.param("default", False, "jit", "reveal_cancel", marks=SLOW),
    pytest.param("no_cse", False, "jit", "rescale", marks=SLOW),
]


def _input_and_reference():
    return jax.random.normal(jax.random.key(1), (N,)), jnp.full((N,), 0.05)


@functools.cache
def _unchecked_scores(scan: bool, rule: str) -> np.ndarray:
    x, ref = _input_and_reference()
    return np.asarray(_scores(_model(None, scan), x, ref, "jit", rule))


@pytest.mark.parametrize(
    "checkpoint,scan,mode,rule",
    CASES,
    ids=[
        "-".join((c, "scan" if s else "unrolled", m, r))
        for c, s, m, r in (getattr(case, "values", case) for case in CASES)
    ],
)
def test_checkpointed_model_scores_equal_the_unchecked_model(checkpoint, scan, mode, rule):
    x, ref = _input_and_reference()
    ck = _model(CHECKPOINTS[checkpoint], scan)
    c_ck = _scores(ck, x, ref, mode, rule)
    c_plain = _unchecked_scores(scan, rule)
    # the same rules in one more or one less fusion: float32 rounding apart (measured 2.2e-6
    # on one element of the vmapped scan), not a different split
    np.testing.assert_allclose(c_ck, c_plain, rtol=1e-5, atol=1e-6)
    assert rel_sum_error(c_ck, ck(x), ck(ref)) < 1e-5


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_the_deeplift_pass_keeps_the_checkpoint_and_its_policy(scan):
    """The transformed function still holds a checkpoint, with the model's policy, around the
    body (inlining it would store every intermediate pair and lose the memory saving)."""
    policy = jax.checkpoint_policies.dots_saveable
    f = _model({"policy": policy}, scan)
    x = jnp.ones((N,))
    jaxpr = jax.make_jaxpr(dl.deeplift(f, jnp.zeros((N,))))(x)
    remats = [e for e in equations_in(jaxpr) if e.primitive is REMAT]
    assert remats, "the checkpoint was inlined"
    assert all(e.params["policy"] is policy for e in remats)
    unchecked = equations_in(jax.make_jaxpr(dl.deeplift(_model(None, scan), jnp.zeros((N,))))(x))
    assert not any(e.primitive is REMAT for e in unchecked)


def test_checkpoint_in_scan_stores_fewer_residuals():
    """What the backward pass of the DeepLIFT pass stores: with the checkpoint only the
    carries (both sides), without it every intermediate of every layer."""
    import contextlib
    import io

    from jax.ad_checkpoint import print_saved_residuals

    from deepliftjax import _api

    def stacked(f):
        x = jax.random.normal(jax.random.key(1), (N,))
        options = _api._options("rescale", "cross", None, "highest", "guarded", "pass")
        run = _api._pair_runner(jax.make_jaxpr(f)(x), [jnp.zeros((N,))], 1, options)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_saved_residuals(lambda x: run(x)[0], x)
        lines = out.getvalue().splitlines()
        return {line.split()[0] for line in lines if "output of scan" in line}

    # per-layer stacks saved by the scan: with the checkpoint only the carry's two sides
    # (DEPTH, N); without it every intermediate of the block, (DEPTH, 2N)
    unchecked, checked = stacked(_model(None, True)), stacked(_model({}, True))
    carry = f"f32[{DEPTH},{N}]"
    assert checked == {carry, f"f32[{N}]"}, checked
    assert f"f32[{DEPTH},{2 * N}]" in unchecked, unchecked
