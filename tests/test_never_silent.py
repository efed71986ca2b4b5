"""Never silently wrong: exact scores or a DeepLiftError, where a rule could go wrong.

Each case is a function, an input and a reference. Its scores must be finite and sum to
``f(x) - f(ref)`` computed in float64 (and, where the rule fixes them, equal the expected
values per element), run plain, under ``jit`` and under ``vmap``; or the transform must
raise ``DeepLiftError`` at trace time. The classes are those of the issue:

1. tuple ``argnums`` in any order; 2. predicates from ``==``, ``!=``, ``isnan``,
``isfinite``, ``argmax`` routing; 3. booleans and integers through structural maps;
4. integer operands that move (``pow(h, argmax)``, a gather at a moving index) and
integer outputs; 5. branches not taken that are undefined at the reference; 6. infinite
derivatives where x == ref; 7. ``>=`` combined with ``&``; 9. one tie convention for
every max path; 11. rule sets; 12. ``jax.grad``'s handling of arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deepliftjax as dl
from deepliftjax import _rules_reduce


def _f64(f, x):
    with jax.enable_x64(True):
        return float(f(jnp.asarray(np.asarray(x, np.float64))))


def _delta(f, x, r):
    """f(x) - f(r) in float64, f compiled once (not op by op)."""
    with jax.enable_x64(True):
        g = jax.jit(f)
        return float(g(jnp.asarray(np.asarray(x, np.float64)))) - float(
            g(jnp.asarray(np.asarray(r, np.float64)))
        )


A = jnp.array
# (name, f, x, ref, expected scores or None)
EXACT = [
    # 2: predicates without a margin of their own
    (
        "argmax_routing",
        lambda x: jnp.where(jnp.argmax(x[:2]) == 0, 2 * x[2], x[2] + 1),
        A([1.0, 0, 5]),
        A([0.0, 1, 5]),
        None,
    ),
    (
        "argmin_routing",
        lambda x: jnp.where(jnp.argmin(x[:3]) == 2, x[3] ** 2, -x[3]),
        A([1.0, 2, 0, 3]),
        A([0.0, 2, 1, 2]),
        None,
    ),
    ("eq", lambda x: jnp.sum(jnp.where(x == 1.0, 3.0, x)), A([1.0, 2, 1]), A([0.0, 1, 1]), None),
    ("ne", lambda x: jnp.sum(jnp.where(x != 0, 2.0, -1.0)), A([1.0, 0, 2]), A([0.0, 1, 2]), None),
    (
        "isnan",
        lambda x: jnp.sum(jnp.where(jnp.isnan(jnp.log(x)), 0.0, 1.0) * x),
        A([2.0, 1]),
        A([-1.0, 1]),
        None,
    ),
    (
        "isfinite",
        lambda x: jnp.sum(jnp.where(jnp.isfinite(1 / x), x, 7.0)),
        A([2.0, 0.0, 1]),
        A([0.0, 3.0, 1]),
        None,
    ),
    (
        "switch_on_argmax",
        lambda x: lax.switch(
            jnp.argmax(x), [lambda v: v[0], lambda v: 2 * v[1], lambda v: v[2] ** 2], x
        ),
        A([0.0, 3, 1]),
        A([2.0, 1, 0]),
        None,
    ),
    (
        "eq_of_ints",
        lambda x: jnp.where(jnp.floor(x[0]).astype(jnp.int32) == 2, x[1], -x[1]),
        A([2.5, 1.0]),
        A([1.5, 1.0]),
        None,
    ),
    # 3: structural maps of booleans and integers
    (
        "rev",
        lambda x: jnp.sum(jnp.where(jnp.flip(x > 0), A([10.0, 1.0]), 0.0)),
        A([1.0, 2]),
        A([-1.0, -1]),
        [1.0, 10.0],
    ),
    (
        "rev_one_moves",
        lambda x: jnp.sum(jnp.where(jnp.flip(x > 0), A([10.0, 1.0]), 0.0)),
        A([1.0, -1]),
        A([-1.0, -1]),
        [1.0, 0.0],
    ),
    (
        "transpose",
        lambda x: jnp.sum(jnp.where((x > 0).T, A([[1.0, 2], [3, 4]]), 0.0)),
        A([[1.0, -1], [2, 3]]),
        A([[-1.0, -1], [-1, -1]]),
        [1.0, 0.0, 2.0, 4.0],
    ),
    (
        "take",
        lambda x: jnp.sum(jnp.where(jnp.take(x > 0, A([2, 0])), A([5.0, 7.0]), 0.0)),
        A([1.0, 1, 1]),
        A([-1.0, -1, -1]),
        [7.0, 0.0, 5.0],
    ),
    (
        "cumsum_mask",
        lambda x: jnp.sum(jnp.cumsum((x > 0).astype(jnp.int32)).astype(jnp.float32)),
        A([1.0, -1, 1]),
        A([-1.0, 1, -1]),
        None,
    ),
    (
        "cummax_mask",
        lambda x: jnp.sum(lax.cummax((x > 0).astype(jnp.int32)).astype(jnp.float32)),
        A([1.0, -1, -1]),
        A([-1.0, -1, -1]),
        [3.0, 0.0, 0.0],
    ),
    (
        "roll_int",
        lambda x: jnp.sum(jnp.roll(x.astype(jnp.int32), 1) * A([1, 2, 3])).astype(float),
        A([1.5, 2.5, -0.5]),
        A([0.5, 0.2, 0.1]),
        None,
    ),
    # 4: integer operands that move
    (
        "pow_argmax",
        lambda x: lax.pow(x[0] + 2, jnp.argmax(x).astype(jnp.int32)),
        A([1.0, 0]),
        A([0.0, 1]),
        None,
    ),
    (
        "take_at_argmax",
        lambda x: jnp.take(x * x, jnp.argmax(x[:2])),
        A([1.0, 0]),
        A([0.0, 1]),
        None,
    ),
    (
        "dynamic_slice_at_int",
        lambda x: jnp.sum(
            lax.dynamic_slice(jnp.tanh(x), (jnp.floor(x[0]).astype(jnp.int32),), (2,))
        ),
        A([1.5, 0.3, -2.0, 1.0]),
        A([0.2, 0.5, 1.0, -1.0]),
        None,
    ),
    (
        "int_to_float",
        lambda x: jnp.argmax(x).astype(jnp.float32) * 3.0,
        A([0.0, 2]),
        A([1.0, 0]),
        None,
    ),
    # 5: branches undefined at the reference
    (
        "where_log",
        lambda v: jnp.sum(jnp.where(v > 0, jnp.log(v), -10.0)),
        A([2.0, 3]),
        A([0.0, 0]),
        None,
    ),
    (
        "where_sqrt",
        lambda v: jnp.sum(jnp.where(v > 0, jnp.sqrt(v), 0.0)),
        A([2.0, 3]),
        A([-1.0, -1]),
        None,
    ),
    (
        "where_reciprocal",
        lambda v: jnp.sum(jnp.where(v != 0, 1 / v, 0.0)),
        A([2.0, 0, -1]),
        A([0.0, 0, 1]),
        None,
    ),
    (
        "where_arccosh",
        lambda v: jnp.sum(jnp.where(v > 1, jnp.arccosh(v), 0.0)),
        A([2.0, 3]),
        A([0.0, -1]),
        None,
    ),
    (
        "cond_log",
        lambda v: lax.cond(v[0] > 0, lambda u: jnp.log(u).sum(), lambda u: 0.0 * u.sum(), v),
        A([2.0, 3]),
        A([0.0, 0]),
        None,
    ),
    ("xlogy", lambda v: jnp.sum(jax.scipy.special.xlogy(v, v)), A([2.0, 3]), A([0.0, 0]), None),
    ("entr", lambda v: jnp.sum(jax.scipy.special.entr(v)), A([2.0, 0.5]), A([0.0, 0]), None),
    (
        "where_log_both_sides",
        lambda v: jnp.sum(jnp.where(v > 0, jnp.log(v), jnp.log(-v))),
        A([2.0, -3]),
        A([-1.0, 4]),
        None,
    ),
    # 6: infinite derivatives where x == ref
    ("sqrt_at_ref", lambda v: jnp.sum(jnp.sqrt(v)), A([0.0, 1]), A([0.0, 0]), [0.0, 1.0]),
    (
        "norm_dead_relu",
        lambda v: jnp.linalg.norm(jax.nn.relu(v[:2])) + v[2],
        A([-1.0, -2, 1]),
        A([0.0, 0, 0]),
        [0.0, 0.0, 1.0],
    ),
    # 7: >= meets & / |
    (
        "ge_and",
        lambda v: jnp.where((v[0] >= 0) & (v[1] > 0), 1.0, 0.0),
        A([0.0, 5]),
        A([1.0, 0]),
        [0.0, 1.0],
    ),
    (
        "ge_or",
        lambda v: jnp.where((v[0] >= 0) | (v[1] > 0), 2.0, -1.0),
        A([0.0, -5]),
        A([-1.0, -3]),
        [3.0, 0.0],
    ),
    (
        "float_int_and",
        lambda v: jnp.where((v[0].astype(jnp.int32) > 0) & (v[1] >= 0), v[1], 0.0),
        A([1.5, 0.0]),
        A([0.5, -1.0]),
        None,
    ),
    (
        "xor_not",
        lambda v: jnp.where(~((v[0] > 0) ^ (v[1] > 0)), 3.0, 1.0),
        A([1.0, -1]),
        A([-1.0, -1]),
        None,
    ),
]

# near ties: a margin of computed values whose float32 change is mostly their rounding
# (x0 + 1 at a reference 1e-6 away changes by 8 ulps of 1, not 1e-6) credits by input
# distance; margins of the inputs themselves keep their local credit (last two cases)
NEAR_TIES = [
    ("near_tie_gt", lambda x: jnp.where(x[0] + 1 > x[1] + 1, 1.0, 0.0), [0, 0], [1e-6, 0], [-1, 0]),
    ("near_tie_eq", lambda x: jnp.where(x[0] + x[1] == 1, 5.0, 0.0), [0, 1], [-1e-6, 1], [5, 0]),
    (
        "near_tie_int",
        lambda x: jnp.where((x[0] + 1).astype(jnp.int32) >= 1, 2.0, 0.0) + x[1],
        [-1e-7, 3],
        [0, 3],
        [-2, 0],
    ),
    (
        "near_tie_argmax",
        lambda x: jnp.where(jnp.argmax(x[:2] + 1) == 0, x[2], 0.0),
        [1e-6, 0, 2],
        [0, 1e-6, 2],
        [1, 1, 0],
    ),
    (
        "exact_margin",
        lambda x: jnp.where(x[0] > 1.0, 1.0, 0.0) + x[1],
        [1 - 2**-23, 3],
        [1 + 2**-22, 2],
        [-1, 1],
    ),
    (
        "exact_argmax",
        lambda x: jnp.where(jnp.argmax(x[:2]) == 0, x[2], 0.0) + x[3],
        [1e-6, 0, 2, 1],
        [0, 1e-6, 2, 0],
        [1, 1, 0, 1],
    ),
]
# an infinite derivative at one end of a tiny step (arccosh at 1): the secant, not Simpson's
# mean derivative (found by the long fuzz run: inf)
NEAR_TIES.append(
    (
        "arccosh_at_one",
        lambda x: jnp.sum(jnp.arccosh(x)),
        [1, 1 + 2**-20, 1],
        [1 + 2**-20, 1, 1],
        [-float(np.arccosh(1 + 2**-20)), float(np.arccosh(1 + 2**-20)), 0],
    )
)
EXACT += [(n, f, A(x, jnp.float32), A(r, jnp.float32), e) for n, f, x, r, e in NEAR_TIES]

RAISES = [
    ("argmax_output", jnp.argmax, A([1.0, 2]), A([0.0, 0])),
    ("bool_output", lambda x: x[0] > 0, A([1.0, 2]), A([0.0, 0])),
]


def _run(mode, f, x, r):
    t = dl.deeplift(f, r)
    if mode == "plain":
        return t(x)
    if mode == "jit":
        return jax.jit(t)(x)
    xs = jnp.stack([x, x])
    return jax.jit(jax.vmap(t))(xs)[1]  # vmap, compiled


MODES = ("plain", "jit", "vmap")


def _in_mode(t, mode):
    """t eager, jitted, or vmapped over a batch of one (compiled)."""
    if mode == "jit":
        return jax.jit(t)
    if mode == "vmap":
        return lambda v: jax.jit(jax.vmap(t))(v[None])[0]
    return t


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", EXACT, ids=[c[0] for c in EXACT])
def test_exact_or_error(case, mode):
    name, f, x, r, expected = case
    c = _run(mode, f, x, r)
    assert bool(jnp.all(jnp.isfinite(c))), (name, c)
    delta = _delta(f, x, r)
    assert abs(float(jnp.sum(c.astype(jnp.float64))) - delta) <= 1e-5 * max(1.0, abs(delta)), (
        name,
        c,
        delta,
    )
    assert bool(jnp.all(jnp.where(x == r, c == 0, True))), (name, c)
    if expected is not None:
        np.testing.assert_allclose(np.ravel(c), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", RAISES, ids=[c[0] for c in RAISES])
def test_integer_outputs_raise(case, mode):
    name, f, x, r = case
    with pytest.raises(dl.DeepLiftError, match="floating-point outputs"):
        _run(mode, f, x, r)


# ---- 1: argnums in any order ------------------------------------------------------------


def _two(a, b):
    return jnp.sum(a**2 + 3 * b)


@pytest.mark.parametrize("mode", MODES)
def test_argnums_out_of_order(mode):
    a, b = A([1.0, 2.0]), A([10.0, 20.0])
    t = dl.deeplift(_two, 0.0, argnums=(1, 0))
    if mode == "jit":
        t = jax.jit(t)
    if mode == "vmap":
        cb, ca = jax.jit(jax.vmap(t))(jnp.stack([a, a]), jnp.stack([b, b]))
        cb, ca = cb[0], ca[0]
    else:
        cb, ca = t(a, b)
    np.testing.assert_allclose(cb, [30.0, 60.0])
    np.testing.assert_allclose(ca, [1.0, 4.0])


def test_argnums_out_of_order_with_pytrees_and_three_arguments():
    f = lambda p, q, s: jnp.sum(p["u"] * 2) + jnp.sum(q**3) + 5 * s  # noqa: E731
    p, q, s = {"u": A([1.0, 2.0])}, A([1.0, -1.0, 2.0]), A(3.0)
    cs, cp = dl.deeplift(f, 0.0, argnums=(2, 0))(p, q, s)
    np.testing.assert_allclose(cs, 15.0)
    np.testing.assert_allclose(cp["u"], [2.0, 4.0])


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0)])
def test_vjp_primal_is_f(argnums):
    a, b = A([1.0, 2.0]), A([10.0, 20.0])
    out, out_ref, pullback = dl.deeplift_vjp(_two, 0.0, a, b, argnums=argnums)
    assert float(out) == pytest.approx(float(_two(a, b)))
    zero = jnp.zeros(2)
    ref_args = [a, b]
    for i in argnums if isinstance(argnums, tuple) else (argnums,):
        ref_args[i] = zero
    assert float(out_ref) == pytest.approx(float(_two(*ref_args)))
    ms = pullback(1.0)  # a tuple, one entry per attributed argument, as jax.vjp's
    assert isinstance(ms, tuple) and len(ms) == (len(argnums) if isinstance(argnums, tuple) else 1)
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    total = sum(float(jnp.sum(mi * (a, b)[i])) for mi, i in zip(ms, nums, strict=True))
    assert total == pytest.approx(float(out - out_ref))


# ---- 9: one tie convention --------------------------------------------------------------


def _pool(v, win, stride, pad):
    return lax.reduce_window(v, -jnp.inf, lax.max, win, stride, pad)


POOLS = [((2,), (2,), "VALID"), ((2, 2), (2, 2), "VALID"), ((3, 2), (1, 2), "VALID"),
         ((2, 2), (2, 2), "SAME"), ((3, 3), (2, 2), "SAME")]  # fmt: skip


@pytest.mark.parametrize("max_rule", ["cross", "paper", "gradient"])
@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_tiled_and_general_pooling_agree_on_ties(pool, max_rule, monkeypatch):
    win, stride, pad = pool
    rng = np.random.default_rng(0)
    shape = (8,) if len(win) == 1 else (6, 8)
    x = jnp.asarray(rng.integers(0, 2, shape).astype(np.float32))  # ties everywhere
    r = jnp.full(shape, 0.25)
    w = jnp.asarray(rng.normal(size=_pool(x, win, stride, pad).shape).astype(np.float32))
    f = lambda v: jnp.sum(_pool(v, win, stride, pad) * w)  # noqa: E731
    check = "warn" if max_rule == "cross" else None  # the other max rules are not exact
    tiled = jax.jit(dl.deeplift(f, r, max_rule=max_rule, check=check))(x)
    monkeypatch.setattr(_rules_reduce, "TILE", False)
    general = jax.jit(dl.deeplift(f, r, max_rule=max_rule, check=check))(x)
    np.testing.assert_array_equal(tiled, general)


@pytest.mark.parametrize("mode", MODES)
def test_every_max_path_gives_ties_to_the_first(mode):
    x, r = jnp.ones(2), jnp.zeros(2)
    fs = [
        lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (2,), (2,), "VALID").sum(),
        lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (2,), (3,), "VALID").sum(),
        lambda v: jnp.max(v),
        lambda v: jnp.maximum(v[0], v[1]),
        lambda v: -jnp.min(-v),
    ]
    for f in fs:
        np.testing.assert_allclose(_run(mode, f, x, r), [1.0, 0.0])


def test_reduce_max_over_several_axes_and_pooling_as_reshape_agree():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(0, 2, (6, 8)).astype(np.float32))
    r = jnp.full((6, 8), 0.5)
    w = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    f1 = lambda v: jnp.sum(_pool(v, (2, 2), (2, 2), "VALID") * w)  # noqa: E731
    f2 = lambda v: jnp.sum(jnp.max(v.reshape(3, 2, 4, 2), axis=(1, 3)) * w)  # noqa: E731
    np.testing.assert_array_equal(dl.deeplift(f1, r)(x), dl.deeplift(f2, r)(x))


# ---- 11: rule sets ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["lrp", "guided_backprop", "gradient", "nonsense"])
def test_deeplift_accepts_deeplift_rule_sets_only(rule):
    with pytest.raises(dl.DeepLiftError, match="not a DeepLIFT rule set"):
        dl.deeplift(jnp.sum, 0.0, rule=rule)
    with pytest.raises(dl.DeepLiftError, match="not a DeepLIFT rule set"):
        dl.deeplift_vjp(jnp.sum, 0.0, jnp.ones(2), rule=rule)


@pytest.mark.parametrize("mode", MODES)
def test_reveal_cancel_min_and_max_of_two_varying_operands(mode):
    x, r = A([3.0, 1.0]), A([0.0, 0.0])

    def run(f):
        t = dl.deeplift(f, r, rule="reveal_cancel")
        return _in_mode(t, mode)(x)

    np.testing.assert_allclose(run(lambda v: jnp.minimum(v[0], v[1])), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(
        run(lambda v: v[0] - jax.nn.relu(v[0] - v[1])), [0.5, 0.5], atol=1e-6
    )
    np.testing.assert_allclose(run(lambda v: jnp.maximum(v[0], v[1])), [2.5, 0.5], atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_guided_backprop_treats_a_where_relu_as_a_relu(mode):
    w = A([1.0, -1.0, 2.0, 0.5])
    v = A([1.0, 2.0, -1.0, 3.0])

    def run(f):
        t = dl.guided_backprop(f)
        return _in_mode(t, mode)(v)

    by_where = run(lambda u: jnp.sum(jnp.where(u > 0, u, 0.0) * w))
    by_max = run(lambda u: jnp.sum(jnp.maximum(u, 0.0) * w))
    np.testing.assert_allclose(by_where, [1.0, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(by_where, by_max)


def _softsign_primitive():
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    p = Primitive("test_softsign")
    p.def_impl(lambda x: x / (1 + jnp.abs(x)))
    p.def_abstract_eval(lambda x: x)
    mlir.register_lowering(p, mlir.lower_fun(lambda x: x / (1 + jnp.abs(x)), False))
    ad.defjvp(p, lambda g, x: g / (1 + jnp.abs(x)) ** 2)
    batching.defvectorized(p)
    return p


@pytest.fixture
def softsign():
    """A primitive the library has never seen; its rules are removed afterwards."""
    from deepliftjax._rules_elementwise import RESCALE_PRIMS

    p = _softsign_primitive()
    yield p
    dl.rules.RULES.pop(p, None)
    RESCALE_PRIMS.pop(p, None)


@pytest.mark.parametrize("mode", MODES)
def test_a_users_defrescale_reaches_every_rule_set(mode, softsign):
    p = softsign
    dl.rules.defrescale(p)
    f = lambda v: jnp.sum(p.bind(v) * A([1.0, 2.0]))  # noqa: E731
    x, r = A([2.0, -3.0]), A([0.5, 1.0])
    h = lambda v: v / (1 + abs(v))  # noqa: E731
    expected = [1.0 * (h(2.0) - h(0.5)), 2.0 * (h(-3.0) - h(1.0))]

    def run(t):
        return _in_mode(t, mode)(x)

    np.testing.assert_allclose(run(dl.deeplift(f, r)), expected, rtol=1e-6)
    np.testing.assert_allclose(run(dl.deeplift(f, r, rule="reveal_cancel")), expected, rtol=1e-6)
    # ε-LRP: relevance y/z at the nonlinearity, times the input (not the gradient)
    lrp = run(dl.lrp_epsilon(f, epsilon=0.0))
    np.testing.assert_allclose(lrp, [1.0 * h(2.0), 2.0 * h(-3.0)], rtol=1e-6)


def test_a_missing_primitive_is_an_import_time_error():
    from deepliftjax import _compat

    with pytest.raises(ImportError, match="no primitive"):
        _compat.primitive("surely_not_a_primitive_p")
    for name in _compat.OPTIONAL_PRIMITIVES:
        _compat.primitive(name)  # declared optional: None or the primitive, no error


# ---- 12: arguments as jax.grad treats them ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_non_attributed_arguments_stay_static(mode):
    f = lambda v, n: sum(v[i] ** 2 for i in range(n))  # noqa: E731
    g = lambda v, train=False: jnp.sum(v) if train else -jnp.sum(v)  # noqa: E731
    x = A([1.0, 2.0, 3.0])
    tf, tg = dl.deeplift(f, 0.0), dl.deeplift(g, 0.0)
    if mode == "plain":
        cf, cg = tf(x, 2), tg(x, train=True)
    elif mode == "jit":
        cf = jax.jit(tf, static_argnums=1)(x, 2)
        cg = jax.jit(tg, static_argnames="train")(x, train=True)
    else:
        cf = jax.jit(jax.vmap(lambda u: tf(u, 2)))(x[None])[0]
        cg = jax.jit(jax.vmap(lambda u: tg(u, train=True)))(x[None])[0]
    np.testing.assert_allclose(cf, [1.0, 4.0, 0.0])
    np.testing.assert_allclose(cg, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(tg(x), [-1.0, -2.0, -3.0])


def test_python_float_input():
    assert float(dl.deeplift(lambda v: v**2, 0.0)(3.0)) == pytest.approx(9.0)
    assert float(jax.jit(dl.deeplift(lambda v: v**2, 1.0))(3.0)) == pytest.approx(8.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dl.deeplift(_two, 0.0, argnums=(0, 0))(A([1.0]), A([2.0])), "twice"),
        (lambda: dl.deeplift(_two, 0.0, argnums=(0, -2))(A([1.0]), A([2.0])), "twice"),
        (lambda: dl.integrated_gradients(jnp.sum, 0.0, steps=0)(A([1.0])), "steps >= 1"),
        (lambda: dl.integrated_gradients(jnp.sum, 0.0, steps=2.5)(A([1.0])), "steps >= 1"),
    ],
)
def test_argument_errors_say_the_fix(call, match):
    with pytest.raises(dl.DeepLiftError, match=match):
        call()
