"""Functions that read an axis as the one-hot alphabet check that it is one.

Hypothetical scores, projections, present-base pictures, shuffles, dinucleotide counts,
``deeplift_shap(hypothetical=True)`` and the modisco export give meaningless finite numbers
on an array whose read axis is not one-hot (a ``(4, L)`` sequence read as ``(L, 4)``:
hypothetical scores off by the sequence length, "shuffles" of the letters' rows). Each
raises a :class:`DeepLiftError` saying which axis it read, what it found there and the
fix; concrete inputs at the call, traced ones (``jit``, ``vmap``) when they run.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax import (
    DeepLiftError,
    deeplift_shap,
    dinuc_shuffle,
    dinucleotide_counts,
    hypothetical_from_multipliers,
    plot,
    project_hypothetical,
    shuffle,
)
from deepliftjax._hypothetical import check_onehot, export_modisco

SEQ = np.array([0, 3, 1, 1, 2, 0, 3, 2])
GOOD = np.eye(4, dtype=np.float32)[SEQ]  # (L, 4)
GOOD_N = GOOD.copy()
GOOD_N[5] = 0  # an unknown base (N): an all-zero position is one-hot
SOFT = GOOD.copy()
SOFT[2] = 0.25  # a soft position
DOUBLE = GOOD.copy()
DOUBLE[4, 0] = 1.0  # two letters at position 4
KEY = jax.random.key(0)

BAD = {
    # (x, axis read, what the message must say was found there)
    "transposed": (GOOD.T, -1, r"position 0 sums to 2 \(more than one 1\)"),
    "soft": (SOFT, -1, r"x\[2, 0\] is 0\.25 \(one-hot values are 0 or 1\)"),
    "two_letters": (DOUBLE, -1, r"position 4 sums to 2"),
    "wrong_axis": (GOOD, 0, r"position 0 sums to 2"),
}


W = np.random.default_rng(0).normal(size=GOOD.shape).astype(np.float32)


def _model(v):
    """A function of one sequence in either layout ((L, 4) or (4, L)), the same values."""
    w = W if v.shape == W.shape else W.T
    return jnp.sum(jnp.tanh(0.7 * v + w) * w)


def _shap(x, axis):
    refs = jnp.full((2, *x.shape), 0.25, x.dtype)
    return deeplift_shap(_model, refs, hypothetical=True, alphabet_axis=axis)(x).hypothetical


CALLERS = {
    # name: (function of (x, axis), its keyword for the axis, or None: it reads the last)
    "hypothetical_from_multipliers": (
        lambda x, a: hypothetical_from_multipliers(jnp.ones_like(x), 0.25, axis=a, onehot=x),
        "axis",
    ),
    "project_hypothetical": (
        lambda x, a: project_hypothetical(jnp.ones_like(x), x, axis=a), "axis"
    ),
    "present_base": (lambda x, a: plot.present_base(np.ones(x.shape), x, hypothetical=True), None),
    "dinuc_shuffle": (lambda x, a: dinuc_shuffle(KEY, x, 2, alphabet_axis=a), "alphabet_axis"),
    "shuffle": (lambda x, a: shuffle(KEY, x, 2, alphabet_axis=a), "alphabet_axis"),
    "dinucleotide_counts": (lambda x, a: dinucleotide_counts(x), None),
    "deeplift_shap": (_shap, "alphabet_axis"),
}  # fmt: skip


def _cases():
    for name, (_, keyword) in CALLERS.items():
        for kind, (_, axis, _) in BAD.items():
            if keyword is None and axis != -1:
                continue
            yield pytest.param(name, kind, id=f"{name}-{kind}")


@pytest.mark.parametrize(("name", "kind"), list(_cases()))
def test_not_onehot_along_the_read_axis_raises(name, kind):
    fn, keyword = CALLERS[name]
    x, axis, found = BAD[kind]
    with pytest.raises(DeepLiftError) as info:
        jax.block_until_ready(fn(jnp.asarray(x), axis))
    message = str(info.value)
    assert message.startswith(name), message
    assert f"not one-hot along axis {axis} (size {x.shape[axis]})" in message, message
    assert re.search(found, message), message
    assert "\nHint: " in message
    if kind in ("transposed", "wrong_axis"):  # one-hot along the other axis: say so
        other = 1 - axis % 2
        fix = f"pass {keyword}={other}" if keyword else f"move the alphabet to axis {axis}"
        assert f"x is one-hot along axis {other} (size {x.shape[other]}): {fix}" in message


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.slow] if n in ("dinuc_shuffle", "deeplift_shap") else [])
        for n in CALLERS
    ],  # the slow ones also pass one-hot inputs in the tests below
)
def test_onehot_inputs_pass(name):
    """An all-zero position (N) is one-hot; the alphabet first, with its axis named, too."""
    fn, keyword = CALLERS[name]
    out = fn(jnp.asarray(GOOD_N), -1)
    assert np.all(np.isfinite(np.asarray(out)))
    if keyword is not None:
        first = fn(jnp.asarray(GOOD_N.T), 0)
        if name != "dinuc_shuffle" and name != "shuffle":  # the same numbers, transposed
            np.testing.assert_allclose(np.asarray(first), np.asarray(out).T, rtol=1e-6)


def test_export_modisco_checks_its_onehot_input(tmp_path):
    export_modisco(tmp_path, np.stack([GOOD, GOOD_N]), np.stack([GOOD, GOOD_N]))
    for x, found in ((SOFT, r"x\[1, 2, 0\] is 0\.25"), (DOUBLE, r"position \(1, 4\) sums to 2")):
        batch = np.stack([GOOD, x])
        with pytest.raises(DeepLiftError, match=rf"^export_modisco: .* axis -1 .*{found}"):
            export_modisco(tmp_path, batch, batch)
    with pytest.raises(DeepLiftError, match="has size 8, not 4"):  # (N, 4, L) read as (N, L, 4)
        export_modisco(tmp_path, GOOD.T[None], GOOD.T[None])


def test_hypothetical_scores_of_alphabet_first_input_equal_the_transposed_ones():
    """Oracle for the read axis: a (4, L) input with alphabet_axis=0 scores as its (L, 4)
    transpose with the default axis, per element (reading it as (L, 4) raises)."""
    hyp_last = _shap(jnp.asarray(GOOD), -1)
    hyp_first = _shap(jnp.asarray(GOOD.T), 0)
    np.testing.assert_allclose(hyp_first, hyp_last.T, rtol=1e-6, atol=1e-7)


# ---- traced inputs: checked when the computation runs ------------------------------------


def _batch(bad: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.stack([GOOD, bad, GOOD]))  # example 1 is the bad one


TRACED = {
    "check_onehot": lambda x: (check_onehot(x, -1, what="check_onehot"), x.sum())[1],
    "project_hypothetical": lambda x: project_hypothetical(jnp.ones_like(x), x),
    "dinuc_shuffle": lambda x: dinuc_shuffle(KEY, x),
}


@pytest.mark.parametrize("name", list(TRACED))
def test_traced_inputs_are_checked_when_they_run(name):
    fn = TRACED[name]
    program = jax.jit(jax.vmap(fn))
    good = jnp.asarray(np.stack([GOOD, GOOD_N, GOOD]))
    jax.block_until_ready(program(good))  # compiled once, silent on one-hot inputs
    for x, _, found in (BAD["soft"], BAD["two_letters"]):
        pattern = rf"{name}: x of shape \(8, 4\) \(example \(1,\) of the batch\) .*{found}"
        with pytest.raises(Exception, match=pattern):  # jit: JaxRuntimeError with the message
            jax.block_until_ready(program(_batch(x)))
        with pytest.raises(DeepLiftError, match=pattern):  # vmap op by op: the error itself
            jax.block_until_ready(jax.vmap(fn)(_batch(x)))


@pytest.mark.slow
def test_deeplift_shap_with_a_shuffle_generator_under_jit_vmap():
    """The usual genomics call: dinucleotide-shuffled references drawn per example."""
    f = lambda v: jnp.sum(jnp.tanh(v[:-1] * v[1:]))  # noqa: E731
    gen = functools.partial(dinuc_shuffle, num_shuffles=2)
    shap = deeplift_shap(f, gen, key=KEY, hypothetical=True)
    program = jax.jit(jax.vmap(lambda x: shap(x).hypothetical))
    assert np.all(np.isfinite(program(jnp.asarray(np.stack([GOOD, GOOD_N])))))
    with pytest.raises(Exception, match=r"\(example \(1,\) of the batch\).*x\[2, 0\] is 0\.25"):
        jax.block_until_ready(program(jnp.asarray(np.stack([GOOD, SOFT]))))
