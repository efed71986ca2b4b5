"""Table-driven tests: one case per DeepLIFT rule, each run plain, jitted and vmapped.

Every case checks summation to delta (eq. 1 of the paper) on random inputs and random
references, each score against an independent float64 oracle where one exists (``ORACLE``),
and that the multipliers tend to ``jax.grad`` as the reference tends to the
input. ``test_every_rule_has_a_case`` fails when a registered rule has no case here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import primitives_in, rel_sum_error, rel_sum_errors_batch
from _shapley import coalitions, shapley_from_values
from jax import lax

import deepliftjax as dl
from deepliftjax import _precision
from deepliftjax._compat import primitive as P

TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    fn: Callable  # x -> array; nonlinear in x through the primitives under test
    prims: tuple  # the primitive objects this case exercises
    shape: tuple = (3, 4)
    low: float = -2.0
    high: float = 2.0
    smooth: bool = True  # multipliers -> gradient is checked away from kinks only
    tol: float = TOL  # looser only where the case itself computes in a narrower dtype

    def __repr__(self):
        return self.name


def _idx():
    return jnp.array([2, 0, 1])


CASES = [
    # ---- linear ----
    Case("neg", lambda x: jnp.tanh(-x), (P("neg_p"),)),
    Case("add", lambda x: jnp.tanh(x[0] + x[1]), (P("add_p"),), (2, 3, 4)),
    Case("sub", lambda x: jnp.tanh(x[0] - x[1]), (P("sub_p"),), (2, 3, 4)),
    Case(
        "add_any",
        lambda x: jax.grad(lambda y: jnp.sum(jnp.sin(y) * y))(x),
        (P("add_jaxvals_p"), P("sin_p"), P("cos_p")),
    ),
    Case(
        "convert_widen",
        lambda x: jnp.tanh(x.astype(jnp.float16).astype(jnp.float32)),
        (P("convert_element_type_p"),),
        smooth=False,
        tol=4e-3,
    ),
    Case("copy", lambda x: jnp.tanh(jnp.copy(x)), (P("copy_p"),)),
    Case("device_put", lambda x: jnp.tanh(jax.device_put(x)), (P("device_put_p"),)),
    Case(
        "sharding_constraint",
        lambda x: jnp.tanh(
            lax.with_sharding_constraint(x, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        ),
        (P("sharding_constraint_p"),),
    ),
    Case(
        "optimization_barrier",
        lambda x: jnp.tanh(lax.optimization_barrier(x)),
        (P("optimization_barrier_p"),),
    ),
    Case(
        "stop_gradient",
        lambda x: jnp.tanh(x) * lax.stop_gradient(jnp.exp(x)),
        (P("stop_gradient_p"),),
        smooth=False,
    ),
    Case("reshape", lambda x: jnp.tanh(x.reshape(4, 3)), (P("reshape_p"),)),
    Case("squeeze", lambda x: jnp.tanh(x[:, :1].squeeze(1)), (P("squeeze_p"),)),
    Case(
        "broadcast",
        lambda x: jnp.tanh(x[None] * jnp.arange(1.0, 3.0)[:, None, None]),
        (P("broadcast_in_dim_p"),),
    ),
    Case("transpose", lambda x: jnp.tanh(x.T) @ jnp.ones(3), (P("transpose_p"),)),
    Case("rev", lambda x: jnp.tanh(x[::-1]) * jnp.arange(3.0)[:, None], (P("rev_p"),)),
    Case("concatenate", lambda x: jnp.tanh(jnp.concatenate([x, 2 * x])), (P("concatenate_p"),)),
    Case("pad", lambda x: jnp.tanh(jnp.pad(x, 1) + 0.3), (P("pad_p"),)),
    Case("split", lambda x: jnp.tanh(jnp.split(x, 2, axis=1)[0]), (P("split_p"),)),
    Case("tile", lambda x: jnp.tanh(jnp.tile(x, (2, 1))), (P("tile_p"),)),
    Case("stack", lambda x: jnp.tanh(jnp.stack([x, 2 * x])), (P("stack_p"),)),
    Case(
        "unstack",
        lambda x: jnp.tanh(sum(i * v for i, v in enumerate(jnp.unstack(x)))),
        (P("unstack_p"),),
    ),
    Case("slice", lambda x: jnp.tanh(x[1:, ::2]), (P("slice_p"),)),
    Case(
        "dynamic_slice",
        lambda x: jnp.tanh(lax.dynamic_slice(x, (1, 1), (2, 2))),
        (P("dynamic_slice_p"),),
    ),
    Case(
        "dynamic_update_slice",
        lambda x: jnp.tanh(lax.dynamic_update_slice(x, x[:1, :2] * 3, (2, 1))),
        (P("dynamic_update_slice_p"),),
    ),
    Case("gather", lambda x: jnp.tanh(x[_idx()]), (P("gather_p"),)),
    Case("scatter", lambda x: jnp.tanh(x.at[_idx()[:2]].set(x[:2] * 2)), (P("scatter_p"),)),
    Case("scatter_add", lambda x: jnp.tanh(x.at[_idx()].add(x * 0.5)), (P("scatter_add_p"),)),
    Case(
        "scatter_sub",
        lambda x: jnp.tanh(
            lax.scatter_sub(
                x, _idx()[:, None], x * 0.5, lax.ScatterDimensionNumbers((1,), (0,), (0,))
            )
        ),
        (P("scatter_sub_p"),),
    ),
    Case("reduce_sum", lambda x: jnp.tanh(x.sum(0)), (P("reduce_sum_p"),)),
    Case(
        "avg_pool",
        lambda x: jnp.tanh(lax.reduce_window(x, 0.0, lax.add, (2, 2), (1, 1), "VALID")),
        (P("reduce_window_sum_p"),),
    ),
    Case("cumsum", lambda x: jnp.tanh(jnp.cumsum(x, 1)), (P("cumsum_p"),)),
    # ---- Rescale, smooth ----
    Case("exp", lambda x: jnp.exp(x), (P("exp_p"),)),
    Case("exp2", lambda x: jnp.exp2(x), (P("exp2_p"),)),
    Case("expm1", lambda x: jnp.expm1(x), (P("expm1_p"),)),
    Case("log", lambda x: jnp.log(x), (P("log_p"),), low=0.1, high=3.0),
    Case("log1p", lambda x: jnp.log1p(x), (P("log1p_p"),), low=-0.5, high=3.0),
    Case("logistic", lambda x: jax.nn.sigmoid(x), (P("logistic_p"),)),
    Case("tanh", lambda x: jnp.tanh(x), (P("tanh_p"),)),
    Case("sin", lambda x: jnp.sin(x), (P("sin_p"),)),
    Case("cos", lambda x: jnp.cos(x), (P("cos_p"),)),
    Case("tan", lambda x: jnp.tan(x), (P("tan_p"),), low=-1.2, high=1.2),
    Case("asin", lambda x: jnp.arcsin(x), (P("asin_p"),), low=-0.9, high=0.9),
    Case("acos", lambda x: jnp.arccos(x), (P("acos_p"),), low=-0.9, high=0.9),
    Case("atan", lambda x: jnp.arctan(x), (P("atan_p"),)),
    Case("sinh", lambda x: jnp.sinh(x), (P("sinh_p"),)),
    Case("cosh", lambda x: jnp.cosh(x), (P("cosh_p"),)),
    Case("asinh", lambda x: jnp.arcsinh(x), (P("asinh_p"),)),
    Case("acosh", lambda x: jnp.arccosh(x), (P("acosh_p"),), low=1.1, high=4.0),
    Case("atanh", lambda x: jnp.arctanh(x), (P("atanh_p"),), low=-0.9, high=0.9),
    Case("erf", lambda x: lax.erf(x), (P("erf_p"),)),
    Case("erfc", lambda x: lax.erfc(x), (P("erfc_p"),)),
    Case("erf_inv", lambda x: lax.erf_inv(x), (P("erf_inv_p"),), low=-0.9, high=0.9),
    Case("lgamma", lambda x: lax.lgamma(x), (P("lgamma_p"),), low=0.5, high=4.0),
    Case("digamma", lambda x: lax.digamma(x), (P("digamma_p"),), low=0.5, high=4.0),
    Case("bessel_i0e", lambda x: lax.bessel_i0e(x), (P("bessel_i0e_p"),)),
    Case("bessel_i1e", lambda x: lax.bessel_i1e(x), (P("bessel_i1e_p"),)),
    Case("sqrt", lambda x: jnp.sqrt(x), (P("sqrt_p"),), low=0.1, high=4.0),
    Case("rsqrt", lambda x: lax.rsqrt(x), (P("rsqrt_p"),), low=0.2, high=4.0),
    Case("cbrt", lambda x: jnp.cbrt(x), (P("cbrt_p"),), low=0.1, high=4.0),
    Case("square", lambda x: lax.square(x), (P("square_p"),)),
    Case("integer_pow", lambda x: x**3, (P("integer_pow_p"),)),
    # ---- Rescale, piecewise ----
    Case("abs", lambda x: jnp.abs(x), (P("abs_p"),), smooth=False),
    Case("sign", lambda x: jnp.sign(x) * 0.5, (P("sign_p"),), smooth=False),
    Case("floor", lambda x: jnp.floor(2 * x), (P("floor_p"),), smooth=False),
    Case("ceil", lambda x: jnp.ceil(2 * x), (P("ceil_p"),), smooth=False),
    Case("round", lambda x: jnp.round(2 * x), (P("round_p"),), smooth=False),
    Case(
        "reduce_precision",
        lambda x: lax.reduce_precision(x, 4, 3),
        (P("reduce_precision_p"),),
        smooth=False,
    ),
    Case(
        "convert_narrow",
        lambda x: x.astype(jnp.bfloat16).astype(jnp.float32) * 3,
        (P("convert_element_type_p"),),
        smooth=False,
        tol=2e-2,
    ),
    Case(
        "relu",
        lambda x: jax.nn.relu(x),
        (P("max_p"), P("custom_jvp_call_p"), P("jit_p")),
        smooth=False,
    ),
    # ---- two inputs ----
    Case("mul", lambda x: x[0] * x[1], (P("mul_p"),), (2, 3, 4)),
    Case("mul_square", lambda x: x * x, (P("mul_p"),)),
    Case("dot_general", lambda x: jnp.tanh(x[0] @ x[1].T), (P("dot_general_p"),), (2, 3, 4)),
    Case(
        "conv",
        lambda x: lax.conv_general_dilated(
            x[0][None, None], x[1][None, None, :2, :2], (1, 1), "SAME"
        ),
        (P("conv_general_dilated_p"),),
        (2, 4, 5),
    ),
    Case(
        "split_dot_general",
        lambda x: jnp.tanh(_as_split(lambda a, b: a @ b.T)(x[0], x[1])),
        (_precision.SPLIT_PRIMS[lax.dot_general_p],),
        (2, 3, 4),
    ),
    Case(
        "split_conv",
        lambda x: _as_split(
            lambda a, b: lax.conv_general_dilated(a[None, None], b[None, None], (1, 1), "SAME")
        )(x[0], x[1, :2, :2]),
        (_precision.SPLIT_PRIMS[lax.conv_general_dilated_p],),
        (2, 4, 5),
    ),
    Case("max", lambda x: jnp.maximum(x[0], x[1]), (P("max_p"),), (2, 3, 4), smooth=False),
    Case("min", lambda x: jnp.minimum(x[0], x[1]), (P("min_p"),), (2, 3, 4), smooth=False),
    Case(
        "clamp",
        lambda x: lax.clamp(x[0] - 1, x[1], x[2] + 1),
        (P("clamp_p"),),
        (3, 3, 4),
        smooth=False,
    ),
    Case("clamp_const", lambda x: lax.clamp(-0.5, x, 0.7), (P("clamp_p"),), smooth=False),
    Case("div", lambda x: x[0] / (x[1] + 3.0), (P("div_p"),), (2, 3, 4)),
    Case("div_const", lambda x: jnp.tanh(x / 3.0), (P("div_p"),)),
    Case("pow", lambda x: (x[0] + 2.5) ** x[1], (P("pow_p"),), (2, 3, 4)),
    Case("atan2", lambda x: jnp.arctan2(x[0], x[1] + 3.0), (P("atan2_p"),), (2, 3, 4)),
    Case(
        "rem",
        lambda x: lax.rem(x[0] + 3.0, x[1] * 0.5 + 4.0),
        (P("rem_p"),),
        (2, 3, 4),
        smooth=False,
    ),
    Case(
        "select",
        lambda x: jnp.where(x[0] > x[1], jnp.tanh(x[0]), x[1] ** 2),
        (P("select_n_p"), P("gt_p")),
        (2, 3, 4),
        smooth=False,
    ),
    Case(
        "where_prelu",
        lambda x: jnp.where(x >= 0, x, 0.2 * x),
        (P("select_n_p"), P("ge_p")),
        smooth=False,
    ),
    Case("where_abs", lambda x: jnp.where(x > 0, x, -x), (P("select_n_p"),), smooth=False),
    Case(
        "select_int_pred",
        lambda x: lax.select_n(jnp.argmax(x, 0), x[0], x[1] * 2, x[2] ** 2),
        (P("select_n_p"), P("argmax_p")),
        (3, 4),
        smooth=False,
    ),
    Case(
        "compare_eq_ne_lt_le",
        lambda x: jnp.where((x[0] < x[1]) & (x[0] <= 1) & (x[1] != 0) & ~(x[0] == 5), x[0], x[1]),
        (P("lt_p"), P("le_p"), P("ne_p"), P("eq_p")),
        (2, 3, 4),
        smooth=False,
    ),
    Case(
        "step_mask",
        lambda x: (x[0] > x[1]).astype(jnp.float32) * x[1] + jnp.where(x[1] < 0.3, 1.0, -1.0),
        (P("convert_element_type_p"), P("lt_p")),
        (2, 3, 4),
        smooth=False,
    ),
    Case(
        "logic",
        lambda x: jnp.where((x[0] > 0) & ~(x[1] > 0.5) | (x[2] < -1), x[0] * x[1], x[2]),
        (P("and_p"), P("or_p"), P("not_p")),
        (3, 3, 4),
        smooth=False,
    ),
    Case(
        "xor",
        lambda x: jnp.where((x[0] > 0) ^ (x[1] > 0.5), x[0] * x[2], x[1] - x[2]),
        (P("xor_p"),),
        (3, 3, 4),
        smooth=False,
    ),
    Case("is_finite", lambda x: jnp.where(jnp.isfinite(x), jnp.tanh(x), 0.0), (P("is_finite_p"),)),
    Case(
        "argmin",
        lambda x: lax.select_n(jnp.argmin(x, 0), x[0], x[1] * 2, x[2] ** 2),
        (P("argmin_p"),),
        (3, 4),
        smooth=False,
    ),
    # ---- max reductions and pooling ----
    Case("reduce_max", lambda x: jnp.max(x, 1), (P("reduce_max_p"),), smooth=False),
    Case("reduce_min", lambda x: jnp.min(x, 0), (P("reduce_min_p"),), smooth=False),
    Case(
        "max_pool_overlap",
        lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (1, 1), "VALID"),
        (P("reduce_window_max_p"),),
        (5, 6),
        smooth=False,
    ),
    Case(
        "max_pool_same",
        lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (3, 3), (2, 2), "SAME"),
        (P("reduce_window_max_p"),),
        (5, 6),
        smooth=False,
    ),
    Case(
        "max_pool_tiled",  # stride = window: lowered to reshape + max, remainder cropped
        lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 3), (2, 3), "VALID"),
        (P("reduce_window_max_p"),),
        (5, 7),
        smooth=False,
    ),
    Case(
        "min_pool",
        lambda x: lax.reduce_window(x, jnp.inf, lax.min, (2, 2), (1, 1), "VALID"),
        (P("reduce_window_min_p"),),
        (5, 6),
        smooth=False,
    ),
    # ---- calls and control flow ----
    Case("jit", lambda x: jax.jit(jnp.tanh)(x), (P("jit_p"),)),
    Case(
        "custom_jvp",
        lambda x: jax.nn.softplus(x) + jax.nn.gelu(x, approximate=False),
        (P("custom_jvp_call_p"),),
    ),
    Case("custom_vjp", lambda x: _my_custom_vjp(x), (P("custom_vjp_call_p"),)),
    Case("remat", lambda x: jax.checkpoint(lambda y: jnp.sin(y) * y)(x), (P("remat_p"),)),
    Case(
        "cond",
        lambda x: lax.cond(x.sum() > 0, jnp.tanh, lambda y: y**2, x),
        (P("cond_p"),),
        smooth=False,
    ),
    Case(
        "scan",
        lambda x: lax.scan(lambda c, xi: (jnp.tanh(c * 0.5 + xi), c), x[0], x)[1],
        (P("scan_p"),),
    ),
]


@jax.custom_vjp
def _my_custom_vjp(x):
    return jnp.sin(x) * 2


# The custom rule is the true derivative, so the multipliers must tend to it; DeepLIFT
# interprets the primal computation and never calls it.
_my_custom_vjp.defvjp(lambda x: (_my_custom_vjp(x), x), lambda x, g: (g * 2 * jnp.cos(x),))


def _as_split(fn):
    """``fn`` (one product of its two arguments, after any reshapes) with the product bound
    as its split twin (``precision="split_tf32"``'s primitive, TF32 passes not simulated)."""

    def g(a, b):
        closed = jax.make_jaxpr(fn)(a, b)
        env = dict(zip(closed.jaxpr.invars, (a, b), strict=True))
        for eqn in closed.jaxpr.eqns:
            args = [env[v] if not hasattr(v, "val") else v.val for v in eqn.invars]
            twin = _precision.SPLIT_PRIMS.get(eqn.primitive)
            if twin is not None:
                out = twin.bind(*args, **eqn.params, split="split_tf32", simulate=None)
            else:
                out = eqn.primitive.bind(*args, **eqn.params)
            env[eqn.outvars[0]] = out
        return env[closed.jaxpr.outvars[0]]

    return g


NOT_TESTED_HERE = {
    # primitives whose rule exists only to give a clear error; tested in test_errors.py
    P("while_p"),
}


# ---- per-element oracles ----------------------------------------------------------------
# "separable": f = Σ_i h_i(x_i) (every op elementwise or moving elements without mixing
#   them), so the exact score of x_i is h_i(x_i) - h_i(r_i) = f(r with x_i) - f(r), the
#   Shapley value of an additive game; Rescale on a one-input chain passes the whole Δ.
# "groups": f = Σ_j g(x[0, j], x[1, j], ...) (operands stacked on axis 0): each group of
#   shape[0] players is an independent game, and the rule under test claims the exact
#   two-player Shapley value (defshapley: pow, atan2, rem; mul and div under
#   product_rule="midpoint", §2.3.5, whose weight ½ is the Shapley value). Enumerated over
#   all 2^k coalitions of each group in float64 (_shapley).
SEPARABLE = {
    "neg", "convert_widen", "copy", "device_put", "sharding_constraint",
    "optimization_barrier", "stop_gradient", "reshape", "squeeze", "broadcast",
    "transpose", "rev", "concatenate", "pad", "split", "tile", "stack", "slice",
    "dynamic_slice", "dynamic_update_slice", "gather", "scatter", "add_any",
    "exp", "exp2", "expm1", "log", "log1p", "logistic", "tanh", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc",
    "erf_inv", "lgamma", "digamma", "bessel_i0e", "bessel_i1e", "sqrt", "rsqrt", "cbrt",
    "square", "integer_pow", "abs", "sign", "floor", "ceil", "round", "reduce_precision",
    "convert_narrow", "relu", "mul_square", "div_const", "clamp_const", "where_prelu",
    "where_abs", "is_finite", "jit", "custom_jvp", "custom_vjp", "remat",
}  # fmt: skip
GROUPS = {"mul", "div", "pow", "atan2", "rem"}
# "rescale_linear": f = Σ_o w_o tanh(z_o), z = L x linear: Rescale's definition (§2.3.1 of
#   the paper) gives x_i the score Σ_o w_o L_oi Δx_i Δtanh_o / Δz_o, computed here in
#   float64 from L (the Jacobian of the linear part written out below, checked to be the
#   case's own) without the library; the split among mixed inputs is Rescale's, not Shapley.
RESCALE_LINEAR = {
    "add": lambda x: x[0] + x[1],
    "sub": lambda x: x[0] - x[1],
    "unstack": lambda x: sum(i * v for i, v in enumerate(jnp.unstack(x))),
    "scatter_add": lambda x: x.at[_idx()].add(x * 0.5),
    "scatter_sub": lambda x: x.at[_idx()].add(-x * 0.5),
    "reduce_sum": lambda x: x.sum(0),
    "avg_pool": lambda x: lax.reduce_window(x, 0.0, lax.add, (2, 2), (1, 1), "VALID"),
    "cumsum": lambda x: jnp.cumsum(x, 1),
}
# The rule's own per-element claim needs an option the table's default leaves off: the
# default product_rule "guarded" moves off the midpoint where it would cancel.
ORACLE_OPTIONS = {"mul": {"product_rule": "midpoint"}, "div": {"product_rule": "midpoint"}}
SUM_ONLY = {
    **dict.fromkeys(
        ["dot_general", "split_dot_general"],
        "products of two varying operands under tanh: the guarded split, no closed form",
    ),
    "scan": "a recurrence (tanh of a carried sum): the rule composes, no closed form",
    **dict.fromkeys(
        ["conv", "split_conv"],
        "bilinear form of 24 players under the guarded product rule: beyond enumeration",
    ),
    **dict.fromkeys(
        [
            "max",
            "min",
            "clamp",
            "reduce_max",
            "reduce_min",
            "max_pool_overlap",
            "max_pool_same",
            "max_pool_tiled",
            "min_pool",
        ],
        "max/min split Δ by the straight path's fraction (§2.3.3), not a Shapley value",
    ),
    **dict.fromkeys(
        [
            "select",
            "select_int_pred",
            "compare_eq_ne_lt_le",
            "step_mask",
            "logic",
            "xor",
            "argmin",
            "cond",
        ],
        "a moving predicate's switch score: the rule defines the split, no closed form",
    ),
}


def _oracle_scores(case: Case, f, x, r) -> np.ndarray | None:
    """Exact per-element scores (float64) of f at x against r (x, r: batch + case.shape)."""
    if case.name in RESCALE_LINEAR:
        return _rescale_linear_scores(case, x, r)
    if case.name in SEPARABLE:
        k = 1
    elif case.name in GROUPS:
        k = case.shape[0]
    else:
        return None
    x = np.asarray(x, np.float64)
    r = np.asarray(r, np.float64)
    batch = x.shape[: x.ndim - len(case.shape)]
    n = int(np.prod(case.shape))
    groups = np.arange(n).reshape(k, n // k).T  # (G, k): the flat indices of each group
    members = coalitions(k)  # (2^k, k)
    xf, rf = x.reshape(-1, n), r.reshape(-1, n)
    hyb = np.repeat(rf[:, None, None, :], len(groups), 1).repeat(2**k, 2)  # (B, G, 2^k, n)
    for g, idx in enumerate(groups):
        for s, m in enumerate(members):
            hyb[:, g, s, idx[m]] = xf[:, idx[m]]
    with jax.enable_x64(True):
        vals = np.asarray(
            jax.jit(jax.vmap(lambda z: f(z.reshape(case.shape))))(jnp.asarray(hyb.reshape(-1, n))),
            np.float64,
        ).reshape(len(xf), len(groups), 2**k)
    phi = np.zeros((len(xf), n))
    for b in range(len(xf)):
        for g, idx in enumerate(groups):
            phi[b, idx] = shapley_from_values(vals[b, g], k)
    return phi.reshape(batch + case.shape)


def _rescale_linear_scores(case: Case, x, r) -> np.ndarray:
    """Rescale's scores for f = Σ_o w_o tanh((L x)_o), in float64 (x, r: batch + shape)."""
    lin = RESCALE_LINEAR[case.name]
    n = int(np.prod(case.shape))
    with jax.enable_x64(True):
        zero = jnp.zeros(case.shape, jnp.float64)
        L = np.asarray(jax.jacobian(lin)(zero), np.float64)
        probe = jnp.asarray(np.asarray(x, np.float64).reshape((-1,) + case.shape)[0])
        # the linear part written here is the case's own
        np.testing.assert_allclose(np.tanh(lin(probe)), case.fn(probe), rtol=1e-12, atol=1e-12)
    L = L.reshape(-1, n)
    w = np.resize(np.random.default_rng(7).standard_normal(case.shape, np.float32).ravel(), len(L))
    xf = np.asarray(x, np.float64).reshape(-1, n)
    rf = np.asarray(r, np.float64).reshape(-1, n)
    dz = (xf - rf) @ L.T
    dy = np.tanh(xf @ L.T) - np.tanh(rf @ L.T)
    m = np.where(dz != 0, dy / np.where(dz != 0, dz, 1), 1 - np.tanh(rf @ L.T) ** 2)
    phi = ((w * m)[:, :, None] * L[None] * (xf - rf)[:, None, :]).sum(1)
    return phi.reshape(np.shape(x))


def _check_per_element(case: Case, c, phi, mode):
    """Each score against the oracle. Allowed: case.tol (1e-5: float32's rounding of f's
    values, as in the sum check) of the largest exact score, plus 8 float32 ulps of it
    (each score is a secant of two float32 values of f's terms times Δx)."""
    c = np.asarray(c, np.float64).reshape(phi.shape[0] if phi.ndim > len(case.shape) else 1, -1)
    phi = phi.reshape(c.shape)
    scale = np.abs(phi).max(1, keepdims=True)
    allowed = (case.tol + 8 * np.finfo(np.float32).eps) * scale
    err = np.abs(c - phi)
    worst = np.unravel_index(np.argmax(err / allowed), err.shape)
    limit = allowed[worst[0], 0]
    assert (err <= allowed).all(), (mode, "score", c[worst], "exact", phi[worst], limit)


def _target(case: Case):
    w = jnp.asarray(np.random.default_rng(7).standard_normal(case.shape, np.float32))

    def f(x):
        y = case.fn(x)
        return jnp.sum(jnp.reshape(y, (-1,)) * jnp.resize(w.reshape(-1), y.size))

    return f


def _draw(case: Case, seed: int, batch: tuple = ()):
    # numpy draws: jax.random would compile its sampler once per shape, eagerly
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(case.low, case.high, batch + case.shape).astype(np.float32))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_case_uses_its_primitives(case):
    found = primitives_in(jax.make_jaxpr(case.fn)(_draw(case, 0)))
    missing = [p.name for p in case.prims if p not in found]
    assert not missing, f"case {case.name} does not exercise {missing}"


@pytest.mark.parametrize("mode", ["plain", "jit+vmap"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_summation_to_delta(case, mode):
    """plain: eager, op by op. jit+vmap: one compiled program holding the jitted transform
    of one example (reference closed over) and the transform vmapped over 4 (input,
    reference) pairs, with f's values at all of them."""
    f = _target(case)
    x, r = _draw(case, 1), _draw(case, 2)
    if mode == "plain":
        transform = dl.deeplift(f, r, check=_check(case))
        c = transform(x)
        fx, fr = jax.jit(f)(x), jax.jit(f)(r)
        _check_one(case, c, x, fx, fr, "plain")
        phi = _oracle_scores(case, f, x, r)
        if phi is not None:
            if case.name in ORACLE_OPTIONS:
                c = dl.deeplift(f, r, check=_check(case), **ORACLE_OPTIONS[case.name])(x)
            _check_per_element(case, c, phi, "plain")
        return
    xs, rs = _draw(case, 1, (4,)), _draw(case, 2, (4,))
    prog = jax.jit(
        lambda x, xs, rs: (
            dl.deeplift(f, r, check=_check(case))(x),
            f(x),
            f(r),
            jax.vmap(lambda a, b: dl.deeplift(f, b, check=_check(case))(a))(xs, rs),
            jax.vmap(f)(xs),
            jax.vmap(f)(rs),
        )
    )
    c, fx, fr, cs, fxs, frs = prog(x, xs, rs)
    _check_one(case, c, x, fx, fr, "jit")
    assert cs.shape == xs.shape and cs.dtype == xs.dtype
    errs = rel_sum_errors_batch(cs, fxs, frs)
    assert errs.max() <= case.tol, ("vmap", errs)
    # one float64 program for the oracle of all five examples
    phi = _oracle_scores(case, f, jnp.concatenate([x[None], xs]), jnp.concatenate([r[None], rs]))
    if phi is None:
        return
    phi, phis = phi[0], phi[1:]
    if case.name in ORACLE_OPTIONS:
        opts = ORACLE_OPTIONS[case.name]
        c, cs = jax.jit(
            lambda x, xs, rs: (
                dl.deeplift(f, r, check=_check(case), **opts)(x),
                jax.vmap(lambda a, b: dl.deeplift(f, b, check=_check(case), **opts)(a))(xs, rs),
            )
        )(x, xs, rs)
    _check_per_element(case, c, phi, "jit")
    _check_per_element(case, cs, phis, "vmap")


def _check(case: Case) -> str | None:
    # cases computing in a narrower dtype are exact only to that dtype's rounding, which the
    # guard (keyed to f's float32 output) rightly reports; their own tolerance is checked here
    return "warn" if case.tol <= TOL else None


def _check_one(case, c, x, fx, fr, mode):
    assert c.shape == x.shape and c.dtype == x.dtype, mode
    assert np.isfinite(np.asarray(c)).all(), mode
    err = rel_sum_error(c, fx, fr)
    assert err <= case.tol, (mode, err)


def test_every_case_has_an_oracle_or_a_reason():
    names = [c.name for c in CASES]
    kinds = [SEPARABLE, GROUPS, set(RESCALE_LINEAR), set(SUM_ONLY)]
    for name in names:
        assert sum(name in k for k in kinds) == 1, f"classify case {name}: one of SEPARABLE, ..."
    assert set().union(*kinds) == set(names), set().union(*kinds) - set(names)


@pytest.mark.parametrize("case", [c for c in CASES if c.smooth], ids=repr)
def test_multipliers_tend_to_gradient(case):
    f = _target(case)
    x = _draw(case, 3)
    grad = jax.jit(jax.grad(f))(x)
    # at ref == x the multipliers are the gradient; nearby they converge to it linearly
    # (the secant's error is ½ h'' Δx). The reference is an argument: one compilation.
    # check=None: at Δx ~ 1e-5 Δf itself carries f's float32 evaluation error (digamma's is
    # ~1e-6 here), so the guard's Δf is the inexact side; the multipliers are what is tested
    m_of = jax.jit(lambda x, r: dl.deeplift(f, r, multiply_by_inputs=False, check=None)(x))
    noise = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    for eps, tol in ((0.0, 1e-5), (1e-5, 2e-3), (1e-2, 2e-1)):
        r = x + eps * jnp.asarray(noise)
        np.testing.assert_allclose(m_of(x, r), grad, rtol=tol, atol=tol)


def test_every_rule_has_a_case(builtin_rules):
    # builtin_rules (conftest): other test modules register rules of their own
    covered = set().union(*(set(c.prims) for c in CASES)) | NOT_TESTED_HERE
    missing = sorted(p.name for p in builtin_rules if p not in covered)
    assert not missing, f"registered rules without a test case: {missing}"
