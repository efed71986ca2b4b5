"""Fuzzing: summation to delta on random models nobody hand-checked.

Two grammars, each drawn by hypothesis with a fixed seed (no shrinking: the failure message
names every failing model).

Architectures (``test_random_models_sum_to_delta``): depth, widths, kernel sizes, strides,
padding, max pooling incl. overlapping windows, average pooling, LayerNorm / BatchNorm
(inference) / RMSNorm, residual branches, sigmoid*tanh gates, every supported nonlinearity,
1-D and 2-D inputs, built as plain JAX functions from the spec with random weights, random
inputs and references (random, zero, a perturbation of the input, equal on some entries,
negated). To keep compilation cheap, each hypothesis example packs ``MODELS_PER_CALL``
architectures into one function ``F(x_1..x_K) = sum_k g_k(x_k)`` (their contributions are
exactly those of each g_k alone: the pullback of a sum is each summand's) and vmaps it over
``INSTANCES`` (weights, input, reference) draws, so one compiled call checks K * B models:
2 examples * 8 architectures * 6 instances = 96 models in CI.

Programs (``test_random_programs_sum_to_delta_or_raise``): small vector programs made of
the families where a rule can give silent wrong numbers or NaN (the grammar is written out
above ``programs``):
- predicates ``==  !=  >=  >  <=  <`` against -1, 0, 0.5, 1 or a shifted copy,
  ``isnan``/``isfinite``, ``argmax``/``argmin(h[:k]) == j``, ``& | ^ ~`` of those, steering
  ``jnp.where``, ``lax.switch``, ``lax.cond``, or cast to float and multiplied;
- integer paths: float -> int32 casts, ``lax.pow``/``jnp.power(h, k)`` and ``jnp.take``
  with k an argmax, a count or a cumsum of a mask, ``cumsum``/``cummax`` of int masks,
  integer arithmetic on masks, cast back to float;
- branches undefined where not taken: ``where(h > 0, log h, c)``, ``where(h != 0, 1/h, 0)``,
  sqrt, arccosh, ``xlogy``, ``entr``, ``where(isfinite(log h), ...)``, ``lax.cond`` with a log;
- boolean / integer masks moved by flip, roll, transpose, cumsum, take with constant
  indices, reshape, concatenate;
- max pooling (stride <, ==, > window) and reduce_max/min with ties; sqrt and norms of
  values that are 0 on both sides;
- predicates inside a ``fori_loop`` (a scan); ``sort``, ``take(h, argsort h)`` and a
  ``while_loop``, which have no rule today and must raise ``DeepLiftError``;
- layers with weights in {-1, 0, 1} (so values stay on the integer grid) or random ones,
  and elementwise nonlinearities (incl. sign, floor, round) between them.
Inputs and references sit at boundary values so the predicates are crossed, met with
equality and tied: entries in {-1, 0, 1}, a half-integer grid, one-hot vectors or normal
draws; references 0, 1, -1, -x, another draw, one-hot, equal to x on some or all entries,
1e-6 / 1e-3 or one float32 ulp away on some entries. A quarter of the programs take their
input as a pytree of two leaves. Each program is its own compiled call over
``PROGRAM_INSTANCES`` draws, vmapped (half of them) or jitted for one draw and called on
each (so ``lax.cond`` stays a cond instead of becoming a select). Programs are not packed
as above, because a jump credited through the input distance (deepliftjax/_discrete.py)
goes to every attributed input, so the scores of a sum of programs are not each
program's. CI: 2 examples * 4 programs * 24 instances = 192 models.

Property, per model: either ``deeplift`` raises ``DeepLiftError`` at trace time (programs
only; architectures must never raise), or the scores are all finite (exactly zero where
x == ref on every entry) and sum to f(x) - f(ref) within 1e-4 relative in float32, against
Δf evaluated in float64, with ``rel_sum_errors_batch``'s floor for tiny differences; errors
that float32 cannot avoid (f's own rounding, or contributions that cancel: 4 eps sum|C|)
pass too (see ``_errors``; programs also allow 8 float32 ulps of max(|f|, 1), since jumps
inside a program can cancel). NaN, inf, a wrong finite sum or any other exception fails.
Draws where f itself is not finite at x or at the reference have no Δf and are skipped.
``test_argnums_order`` checks that a tuple ``argnums`` in any order gives the scores of the
sorted order, permuted.

The default run (CI) checks 96 + 192 = 288 models (the first examples of the same fixed
seeds; kept small so the default suite stays under 10 minutes on 2 cores). The long runs
(marked slow; ``-m slow`` runs them at the defaults below)::

    DEEPLIFTJAX_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py -m slow -s -k models
    DEEPLIFTJAX_FUZZ_PROGRAMS=500 python -m pytest tests/test_fuzz.py -m slow -s -k programs

(2,000 architectures = 12,000 models; 500 programs = 12,000 models) print the counts, the
largest error, the time and (programs) the counts by family, and list every failing model.
A long run can be split across processes: ``DEEPLIFTJAX_FUZZ_SEED=<n>`` gives each its own
fixed stream of draws.

Last long run of the programs (2026-12-07, commit 825ce81, jax 0.10.2, CPU, two processes
of one core each, the machine otherwise busy): ``DEEPLIFTJAX_FUZZ_PROGRAMS=210`` with
``DEEPLIFTJAX_FUZZ_SEED=2`` and ``=3``: 2 x 5,088 = 10,176 models, 714 s and 1,198 s.
**0 silent, 0 crashed.** DeepLiftError at trace time for the whole unsupported family (1,200
models). 51 models missed summation to delta, every one reported by the summation guard
(47 and 4): raw-input ties behind an inf-masked ``maximum`` and integer mixing (27), L1-norm
quotients behind an ``xlogy`` guard (11), an L2 norm and an integer power before an
inf-masked ``maximum`` (4), ``tanh`` of a raw tie under ``where`` (5), and causal attention
whose mask puts ``-inf`` on one side by a predicate (4: an infinity with no value it was
computed from, which the README names as the guard's case). The same seeds on the code at
the session's start (b9339cf): 138 reported (120 and 18), 0 silent; the families fixed
since (``exp``/``softmax``/attention of a one-sided ``log`` mask, provenance through
scatters and broadcasting maps) are table cases in ``tests/test_shapley_oracle.py``
(``*_one_sided_*``) and ``test_programs_a_long_run_found`` below; a rerun between the two
fixes found 4 models with NaN scores (reported), whose cause (provenance mapped through a
division) is fixed and kept below too. Run before these (seed 2, 252 programs): 136 missed,
135 reported and 1 silent (two masked ``x + log(relu(x))`` maxima under a saturating
``tanh``; fixed: ``max_of_x_plus_masked_log_twice``).

Earlier long run of the programs (2026-12-02, jax 0.10.2, CPU, 564 s at load ~6):
``DEEPLIFTJAX_FUZZ_PROGRAMS=128`` = 3,072 models, 1 failure; DeepLiftError at trace time
where expected (all 240 of the unsupported family: sort, argsort, while). The failure: a
near tie of an equality margin whose operand is a dot product that cancels (-1 + 1e-6 + 1
computed in float32 rounds to 1.0013e-6), so the margin's float change is not what its
multipliers account for and the jump's credit is off by 0.38% of Δf (float64: exact). That
family (rounding upstream that dwarfs the margin's own operands) is the documented limit of
the near-tie guard in ``deepliftjax/_discrete.py``. Last long run of the architectures
(2026-11-26, jax 0.10.2; not rerun since the interpreter's rules changed): 0 failures;
largest error 7.9e-4, all 52 models above 1e-4 within float32's own rounding; largest
error outside that allowance 8.5e-5; 1,377 s.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shapley import coalitions, shapley_from_values
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from jax import lax

import deepliftjax as dl

TOL = 1e-4
MODELS_PER_CALL = 8
INSTANCES = 6
CI_EXAMPLES = 2  # hypothesis examples in CI: 16 architectures, 96 models
# LayerNorm / RMSNorm epsilon. With 1e-5 the rules stay exact (float64: 1e-12) but float32
# loses up to 1e-3 where a reference has zero variance at a norm (gain 1/sqrt(eps), an
# internal cancellation in the midpoint rule): 2 of 2,000 architectures in the long run.
# That case is measured in test_numerics (test_layer_norm_at_a_zero_variance_reference).
NORM_EPS = 1e-3
SLOW_MODELS = int(os.environ.get("DEEPLIFTJAX_FUZZ_EXAMPLES", "2000"))

ACTS = ("relu", "prelu", "leaky", "elu", "gelu", "silu", "softplus", "tanh", "sigmoid")
SMOOTH_ACTS = ("gelu", "silu", "softplus", "tanh", "sigmoid")
NORMS = ("layer", "batch", "rms")
# the same norms written with `/` and `sqrt` (quotients of two varying operands), and the
# L2 normalisation x / (||x|| + eps)
NORMS += ("layer_div", "rms_div", "l2")

# ---- the spec language ------------------------------------------------------------------
# A model is (input_shape, layers); each layer is a tuple whose first item names it:
#   ("dense", n)                        affine map on the channel (last) axis
#   ("conv", k, stride, cout, pad)      1-D or 2-D convolution (k per spatial axis)
#   ("act", name)                       elementwise nonlinearity
#   ("maxpool", w, stride, pad)         max pooling; stride < w overlaps
#   ("avgpool", w, stride)              average pooling
#   ("norm", kind)                      LayerNorm / BatchNorm (inference) / RMSNorm
#   ("res", act, k)                     x + conv_k(act(norm-free conv_k(x))) or dense, same shape
#   ("gate", k)                         sigmoid(conv_a(x)) * tanh(conv_b(x))
#   ("global", "max" | "avg")           reduce the spatial axes
#   ("attn", causal)                    x + softmax(q k^T / sqrt(C)) v on a sequence (L, C),
#                                       causal: scores above the diagonal are -inf on both
#                                       sides (a mask written with -jnp.inf)
# and the head flattens and maps to a scalar through tanh or not.


def _spatial(shape):
    return shape[:-1]


@st.composite
def architectures(draw, smooth=False):
    """A random architecture; ``smooth``: no kinks (smooth activations, no max pooling or
    global max), so the scores are differentiable in the reference."""
    acts = SMOOTH_ACTS if smooth else ACTS
    # 0: a plain vector of features; smooth ones are kept small (their gradient is compiled)
    ndim = draw(st.sampled_from([0, 1] if smooth else [0, 1, 1, 2, 2]))
    if ndim == 0:
        shape = (draw(st.integers(2, 12)),)
    elif ndim == 1 and smooth:
        shape = (draw(st.integers(3, 6)), draw(st.integers(1, 3)))
    elif ndim == 1:
        shape = (draw(st.integers(6, 16)), draw(st.integers(1, 4)))
    else:
        shape = (draw(st.integers(5, 9)), draw(st.integers(5, 9)), draw(st.integers(1, 3)))
    in_shape, layers = shape, []
    depth = draw(st.integers(1, 3 if smooth else 6))
    for _ in range(depth):
        spatial = _spatial(shape)
        kinds = ["dense", "act", "act", "norm", "res", "gate"]
        if spatial:
            kinds += ["conv", "conv", "avgpool", "global"] + ([] if smooth else ["maxpool"])
        if len(spatial) == 1:
            kinds += ["attn"]
        kind = draw(st.sampled_from(kinds))
        if kind == "dense":
            layer = ("dense", draw(st.integers(1, 8)))
            shape = shape[:-1] + (layer[1],)
        elif kind == "act":
            layer = ("act", draw(st.sampled_from(acts)))
        elif kind == "norm":
            if shape[-1] < 2:
                continue
            layer = ("norm", draw(st.sampled_from(NORMS)))
        elif kind == "res":
            k = draw(st.sampled_from([1, 3])) if spatial else 1
            layer = ("res", draw(st.sampled_from(acts)), k)
        elif kind == "gate":
            k = draw(st.sampled_from([1, 2, 3])) if spatial else 1
            layer = ("gate", k)
        elif kind == "conv":
            k = draw(st.integers(1, min(4, min(spatial))))
            s = draw(st.integers(1, 2))
            pad = draw(st.sampled_from(["SAME", "VALID"]))
            layer = ("conv", k, s, draw(st.integers(1, 5)), pad)
            shape = _conv_shape(spatial, k, s, pad) + (layer[3],)
        elif kind in ("maxpool", "avgpool"):
            w = draw(st.integers(2, 3))
            if min(spatial) < w:
                continue
            s = draw(st.integers(1, w))  # s < w: overlapping windows
            if kind == "maxpool":
                pad = draw(st.sampled_from(["SAME", "VALID"]))
                layer = ("maxpool", w, s, pad)
            else:
                pad = "VALID"
                layer = ("avgpool", w, s)
            shape = _conv_shape(spatial, w, s, pad) + (shape[-1],)
        elif kind == "attn":
            layer = ("attn", draw(st.booleans()))
        else:
            layer = ("global", draw(st.sampled_from(["avg"] if smooth else ["max", "avg"])))
            shape = (shape[-1],)
        layers.append(layer)
    head = draw(st.sampled_from(["linear", "tanh", "sigmoid"]))
    return in_shape, tuple(layers), head


def _conv_shape(spatial, k, s, pad):
    if pad == "SAME":
        return tuple(-(-n // s) for n in spatial)
    return tuple((n - k) // s + 1 for n in spatial)


# ---- building a model from a spec --------------------------------------------------------


class _Init:
    """Parameter source that draws fresh weights (numpy, so it works under eval_shape)."""

    def __init__(self, rng):
        self.rng, self.params = rng, []

    def __call__(self, kind, shape, fan_in=1):
        r = self.rng
        if kind == "w":
            p = r.normal(size=shape) * (1.3 / math.sqrt(fan_in))
        elif kind == "b":
            p = r.normal(size=shape) * 0.3
        elif kind == "slope":
            p = r.uniform(-0.3, 0.6, size=shape)
        elif kind == "gamma":
            p = r.uniform(0.5, 1.5, size=shape)
        elif kind == "var":
            p = r.uniform(0.3, 2.0, size=shape)
        elif kind == "int":  # weights and biases in {-1, 0, 1}: integers stay integers
            p = r.integers(-1, 2, size=shape)
        else:
            raise AssertionError(kind)
        p = np.asarray(p, np.float32)
        self.params.append(p)
        return p


class _Apply:
    def __init__(self, params):
        self.params = iter(params)

    def __call__(self, kind, shape, fan_in=1):
        return next(self.params)


def _act(name, x, P):
    if name == "relu":
        return jax.nn.relu(x)
    if name == "prelu":
        return jnp.where(x > 0, x, P("slope", (x.shape[-1],)) * x)
    if name == "leaky":
        return jax.nn.leaky_relu(x, 0.1)
    return getattr(jax.nn, name)(x)


def _conv(x, P, k, s, cout, pad):
    nsp = x.ndim - 1
    cin = x.shape[-1]
    w = P("w", (k,) * nsp + (cin, cout), fan_in=cin * k**nsp)
    dn = ("NHC", "HIO", "NHC") if nsp == 1 else ("NHWC", "HWIO", "NHWC")
    y = lax.conv_general_dilated(x[None], w, (s,) * nsp, pad, dimension_numbers=dn)[0]
    return y + P("b", (cout,))


def _linear(x, P, k, cout):
    """Dense on the channel axis, or a SAME convolution of kernel k when there are axes."""
    if x.ndim == 1 or k == 1:
        return x @ P("w", (x.shape[-1], cout), fan_in=x.shape[-1]) + P("b", (cout,))
    return _conv(x, P, k, 1, cout, "SAME")


def _norm(kind, x, P):
    c = x.shape[-1]
    if kind == "layer":
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
        y = (x - mu) * lax.rsqrt(var + NORM_EPS)
    elif kind == "rms":
        y = x * lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + NORM_EPS)
    elif kind == "layer_div":
        d = x - jnp.mean(x, -1, keepdims=True)
        y = d / jnp.sqrt(jnp.mean(d * d, -1, keepdims=True) + NORM_EPS)
    elif kind == "rms_div":
        y = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + NORM_EPS)
    elif kind == "l2":
        y = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)
    else:  # batch norm, inference mode: running statistics are constants
        y = (x - P("b", (c,))) / jnp.sqrt(P("var", (c,)) + 1e-5)
    return y * P("gamma", (c,)) + P("b", (c,))


def _pool(x, op, w, s, pad):
    nsp = x.ndim - 1
    win, strides = (w,) * nsp + (1,), (s,) * nsp + (1,)
    if op == "max":
        return lax.reduce_window(x, -jnp.inf, lax.max, win, strides, pad)
    return lax.reduce_window(x, 0.0, lax.add, win, strides, pad) / w**nsp


def _attention(x, P, causal):
    length, c = x.shape
    q, k, v = (x @ P("w", (c, c), fan_in=c) for _ in range(3))
    s = q @ k.T / math.sqrt(c)
    if causal:
        s = jnp.where(np.tril(np.ones((length, length), bool)), s, -jnp.inf)
    return jax.nn.softmax(s, axis=-1) @ v


def model(spec, x, P):
    _, layers, head = spec
    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            x = _linear(x, P, 1, layer[1])
        elif kind == "conv":
            x = _conv(x, P, *layer[1:])
        elif kind == "act":
            x = _act(layer[1], x, P)
        elif kind == "maxpool":
            x = _pool(x, "max", *layer[1:])
        elif kind == "avgpool":
            x = _pool(x, "avg", *layer[1:], "VALID")
        elif kind == "norm":
            x = _norm(layer[1], x, P)
        elif kind == "res":
            c = x.shape[-1]
            x = x + _linear(_act(layer[1], _linear(x, P, layer[2], c), P), P, layer[2], c)
        elif kind == "gate":
            c = x.shape[-1]
            x = jax.nn.sigmoid(_linear(x, P, layer[1], c)) * jnp.tanh(_linear(x, P, layer[1], c))
        elif kind == "attn":
            x = x + _attention(x, P, layer[1])
        elif kind == "global":
            axes = tuple(range(x.ndim - 1))
            x = jnp.max(x, axes) if layer[1] == "max" else jnp.mean(x, axes)
        else:
            raise AssertionError(kind)
    flat = x.reshape(-1)
    y = flat @ P("w", (flat.shape[0],), fan_in=flat.shape[0]) + P("b", ())
    return {"linear": y, "tanh": jnp.tanh(y), "sigmoid": jax.nn.sigmoid(y)}[head]


def init(spec, rng, build=None):
    build, P = build or model, _Init(rng)
    jax.eval_shape(lambda x: build(spec, x, P), jax.ShapeDtypeStruct(spec[0], jnp.float32))
    return P.params


# ---- inputs and references ----------------------------------------------------------------

RELATIONS = ("random", "zero", "near", "some_equal", "negated", "equal")


def input_and_reference(shape, rng, relation):
    scale = rng.choice([0.1, 1.0, 3.0])
    x = rng.normal(size=shape) * scale
    if rng.random() < 0.2:  # the integer grid: ties in max pooling, values on kinks
        x = np.round(x)
    if relation == "random":
        r = rng.normal(size=shape) * scale
    elif relation == "zero":
        r = np.zeros(shape)
    elif relation == "near":
        r = x + rng.normal(size=shape) * 1e-3
    elif relation == "some_equal":
        r = np.where(rng.random(shape) < 0.5, x, rng.normal(size=shape) * scale)
    elif relation == "negated":
        r = -x  # the reference on the other side of every kink at 0
    else:
        r = x.copy()
    return np.asarray(x, np.float32), np.asarray(r, np.float32)


# ---- the check ----------------------------------------------------------------------------


def _compiled(specs, build=None, batched=True):
    """One jitted call: deeplift of sum_k g_k(x_k), vmapped over weight/input draws (or,
    when not ``batched``, jitted for one draw and called on each in turn)."""
    build = build or model

    def F(xs, ps):
        return sum(build(s, x, _Apply(p)) for s, x, p in zip(specs, xs, ps, strict=True))

    def one(xs, rs, ps):
        c = dl.deeplift(F, rs)(xs, ps)
        fx = [build(s, x, _Apply(p)) for s, x, p in zip(specs, xs, ps, strict=True)]
        fr = [build(s, r, _Apply(p)) for s, r, p in zip(specs, rs, ps, strict=True)]
        return c, fx, fr

    if batched:
        return jax.jit(jax.vmap(one))
    one = jax.jit(one)

    def each(*args):
        n = len(jax.tree_util.tree_leaves(args)[0])
        outs = [one(*jax.tree_util.tree_map(lambda a, i=i: a[i], args)) for i in range(n)]
        return jax.tree_util.tree_map(lambda *a: np.stack(a), *outs)

    return each


def _forward(specs, build=None):
    build = build or model

    def one(xs, rs, ps):
        fx = [build(s, x, _Apply(p)) for s, x, p in zip(specs, xs, ps, strict=True)]
        fr = [build(s, r, _Apply(p)) for s, r, p in zip(specs, rs, ps, strict=True)]
        return fx, fr

    return jax.jit(jax.vmap(one))


def _run(fn, *args):
    # XLA's CPU compile of the DeepLIFT graph (~1 s an architecture) is the whole cost here.
    # (Compiling with xla_backend_optimization_level=0 is ~30% faster but gave NaN scores
    # for a maxpool(SAME) -> LayerNorm -> global max model: not used.)
    return fn(*args)


def _errors(c, fx32, fr32, fx64, fr64, ulps_of_f=0):
    """Per instance: (relative error against the float64 Δf, within float32's own noise).

    Relative: |sum(C) - Δf64| / max(|Δf64|, 1e-3 max(|f|, 1)), the floor of
    ``rel_sum_errors_batch``. An error that float32 cannot avoid passes too: within f's own
    rounding (4 |Δf32 - Δf64| + 2 ulp of f, as in ``sum_error_vs_float_noise``), or within
    4 eps * sum|C| where contributions cancel (e.g. 1.8 in |C| summing to Δf = 5e-4 after an
    RMSNorm: the sum of float32 terms is good to about eps * sum|C|, whatever the rule).
    ``ulps_of_f``: any error within that many float32 ulps of max(|f(x)|, |f(ref)|, 1)
    passes (the programs use 8: jumps of size ~|f| inside a program can cancel before they
    reach the inputs, so sum|C| does not show the rounding they carry).
    """
    c = np.asarray(c, np.float64).reshape(len(fx64), -1)
    total, abs_total = c.sum(1), np.abs(c).sum(1)
    d64 = fx64 - fr64
    err = np.abs(total - d64)
    scale = np.maximum(np.maximum(np.abs(fx64), np.abs(fr64)), 1.0)
    rel = err / np.maximum(np.abs(d64), 1e-3 * scale)
    d32 = np.asarray(fx32, np.float64) - np.asarray(fr32, np.float64)
    eps = float(np.finfo(np.float32).eps)
    ulp = eps * np.maximum(np.abs(fx64), np.abs(fr64))
    noise = (err <= 4 * np.abs(d32 - d64) + 2 * ulp) | (err <= 4 * eps * abs_total)
    noise |= err <= ulps_of_f * eps * scale
    return rel, noise


def check_models(specs, seed, instances=INSTANCES):
    """Draw weights, inputs and references for each spec; return per-model errors.

    One entry per spec: (spec, relations, rel errors, finite, noise, xs, refs, params)."""
    rng = np.random.default_rng(seed)
    xs, rs, ps, rels = [], [], [], []
    for s in specs:
        rel = [RELATIONS[i] for i in rng.integers(0, len(RELATIONS), instances)]
        pairs = [input_and_reference(s[0], rng, r) for r in rel]
        xs.append(np.stack([p[0] for p in pairs]))
        rs.append(np.stack([p[1] for p in pairs]))
        draws = [init(s, rng) for _ in range(instances)]
        ps.append([np.stack(leaves) for leaves in zip(*draws, strict=True)])
        rels.append(rel)
    specs = tuple(specs)
    with warnings.catch_warnings():  # the packed sum's guard: each model is judged alone
        warnings.simplefilter("ignore", dl.SummationWarning)
        c, fx, fr = _run(_compiled(specs), xs, rs, ps)
    with jax.enable_x64(True):
        as64 = lambda t: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), t)
        fx64, fr64 = _run(_forward(specs), as64(xs), as64(rs), as64(ps))
        fx64, fr64 = as64(fx64), as64(fr64)
    report = []
    for k, s in enumerate(specs):
        ck = np.asarray(c[k])
        errs, noise = _errors(ck, fx[k], fr[k], fx64[k], fr64[k])
        finite = np.isfinite(ck).reshape(instances, -1).all(1)
        for b in range(instances):
            if rels[k][b] == "equal":
                finite[b] &= not np.any(ck[b])  # input == reference: exactly zero
        report.append((s, rels[k], errs, finite, noise, xs[k], rs[k], ps[k]))
    return report


# ---- what a wrong model looks like to its user: a guard report, or silence ----------------


def guard_reports(build, spec, x, r, p, batched=True, split=0):
    """Whether deeplift run on this one model, as a user would (jit of vmap over a batch of
    one, or jit), reports its scores: a ``SummationWarning`` from the summation guard, or a
    ``DeepLiftError``. Models that fail the check above are re-run alone this way, since the
    architectures are packed into one function and the guard sees only their sum."""
    if split:
        x, r = (x[:split], x[split:]), (r[:split], r[split:])
    t = dl.deeplift(lambda x, p: build(spec, x, _Apply(p)), r)
    one = lambda a: jax.tree_util.tree_map(lambda v: np.asarray(v)[None], a)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if batched:
                jax.block_until_ready(jax.jit(jax.vmap(t))(one(x), one(p)))
            else:
                jax.block_until_ready(jax.jit(t)(x, p))
        except dl.DeepLiftError:
            return True
    return any(issubclass(w.category, dl.SummationWarning) for w in caught)


def model_families(spec):
    """The fuzzed families in an architecture: -inf masks, norms written with /."""
    fams = set()
    for layer in spec[1]:
        if layer[0] == "attn" and layer[1]:
            fams.add("inf_mask")
        if layer[0] == "norm" and layer[1] in ("layer_div", "rms_div", "l2"):
            fams.add("norm_div")
    return fams


def _failures(report, classify=True):
    """[(class, message)] for each model that misses summation to delta: "reported" where
    the guard reports it when the model is run alone, "silent" where nothing does."""
    bad = []
    for s, rel, errs, fin, noise, x, r, p in report:
        for b in range(len(errs)):
            if (errs[b] <= TOL or noise[b]) and fin[b]:
                continue
            cls = "unclassified"
            if classify:
                said = guard_reports(model, s, x[b], r[b], [a[b] for a in p])
                cls = "reported" if said else "silent"
            msg = f"{s} ref={rel[b]}: rel error {errs[b]:.3g}, finite/zero ok={bool(fin[b])}"
            bad.append((cls, f"[{cls}] {msg}"))
    return bad


def _not_allowed(bad, fams):
    """Failures the tests reject: silent ones always; reported ones outside the families the
    guard is allowed to catch (the others stay exact, as before the guard)."""
    return [m for cls, m in bad if cls != "reported" or not (fams & GUARDED_FAMILIES)]


def _assert_ok(report):
    bad = []
    for entry in report:
        bad += _not_allowed(_failures([entry]), model_families(entry[0]))
    assert not bad, "models breaking summation to delta:\n" + "\n".join(bad)


model_batches = st.lists(architectures(), min_size=MODELS_PER_CALL, max_size=MODELS_PER_CALL)
_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    # no shrinking: every recompile costs seconds, and the message already names each
    # failing model's spec, reference relation and error
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SLOW_SEED = os.environ.get("DEEPLIFTJAX_FUZZ_SEED")
"""Long runs only: another fixed stream of draws (so a long run can be split across
processes, each with its own seed); unset, the stream is the test's own fixed one."""


def _long_run(examples):
    """Settings (and seed) of a long run of ``examples`` hypothesis examples."""
    conf = settings(max_examples=examples, **dict(_SETTINGS, derandomize=SLOW_SEED is None))

    def apply(fn):
        fn = conf(fn)
        return fn if SLOW_SEED is None else seed(int(SLOW_SEED))(fn)

    return apply


@settings(max_examples=CI_EXAMPLES, **_SETTINGS)
@given(specs=model_batches, seed=st.integers(0, 2**31 - 1))
def test_random_models_sum_to_delta(specs, seed):
    _assert_ok(check_models(specs, seed))


@pytest.mark.slow
def test_random_models_long_run():
    """DEEPLIFTJAX_FUZZ_EXAMPLES architectures (default 2000), INSTANCES draws each."""
    examples = -(-SLOW_MODELS // MODELS_PER_CALL)
    stats = {"n": 0, "max": 0.0, "strict": 0.0, "noise": 0, "bad": [], "listed": []}

    @_long_run(examples)
    @given(specs=model_batches, seed=st.integers(0, 2**31 - 1))
    def run(specs, seed):
        report = check_models(specs, seed)
        for entry in report:
            e, noise = entry[2], entry[4]
            stats["n"] += len(e)
            stats["noise"] += int(np.sum(noise & (e > TOL)))
            stats["max"] = max(stats["max"], float(np.nanmax(e)))
            stats["strict"] = max(stats["strict"], float(np.nanmax(np.where(noise, 0.0, e))))
            found = _failures([entry])  # all of them, not just the first example's
            for cls, _ in found:
                stats[cls] = stats.get(cls, 0) + 1
            stats["bad"] += _not_allowed(found, model_families(entry[0]))
            stats["listed"] += [m for _, m in found]

    t0 = time.perf_counter()
    run()
    print(
        f"\nfuzz: {examples * MODELS_PER_CALL} architectures, {stats['n']} models, "
        f"max rel error {stats['max']:.3g}; {stats['noise']} above {TOL:g} but within "
        f"float32's rounding; max outside it {stats['strict']:.3g}; "
        f"{len(stats['listed'])} missing it ({stats.get('reported', 0)} reported by the guard, "
        f"{stats.get('silent', 0)} silent), {len(stats['bad'])} failures, "
        f"{time.perf_counter() - t0:.0f} s\n" + "\n".join(stats["listed"])
    )
    assert not stats["bad"], "models breaking summation to delta:\n" + "\n".join(stats["bad"])


def test_packing_models_gives_each_model_its_own_scores():
    """The batching trick above: scores of g_k inside sum_j g_j(x_j) are deeplift(g_k)'s."""
    specs = (
        ((8, 3), (("conv", 3, 1, 4, "SAME"), ("act", "relu"), ("maxpool", 3, 1, "VALID")), "tanh"),
        (
            (5,),
            (("dense", 6), ("norm", "layer"), ("act", "gelu")),
            "linear",
        ),
    )
    rng = np.random.default_rng(1)
    ps = [init(s, rng) for s in specs]
    xr = [input_and_reference(s[0], rng, "random") for s in specs]
    xs, rs = [a for a, _ in xr], [b for _, b in xr]
    F = lambda xs, ps: sum(model(s, x, _Apply(p)) for s, x, p in zip(specs, xs, ps, strict=True))
    packed = dl.deeplift(F, rs)(xs, ps)
    for k, s in enumerate(specs):
        alone = dl.deeplift(lambda x, p, s=s: model(s, x, _Apply(p)), rs[k])(xs[k], ps[k])
        np.testing.assert_allclose(packed[k], alone, rtol=1e-5, atol=1e-7)


# ==== gradients with respect to the reference ================================================
# jax.grad of a weighted sum of the scores w.r.t. the reference (deeplift's, and each of
# deeplift_shap's references), on smooth architectures at random references, against central
# finite differences of the same sum computed in float64, along random directions. The
# architectures are packed as above (the scores of a sum are each model's, so the gradient
# w.r.t. model k's reference is model k's). A DeepLiftError (a refusal) passes; a gradient
# that is not the derivative of the scores fails.

GRAD_INSTANCES = 2
GRAD_DIRECTIONS = 2
SLOW_GRAD_MODELS = int(os.environ.get("DEEPLIFTJAX_FUZZ_GRAD_MODELS", "200"))
GRAD_RTOL = 1e-3


def _weighted_scores(specs, shap=True):
    """(refs, shap_refs, xs, ps, ws) -> (Σ w·deeplift scores, Σ w·deeplift_shap scores);
    without ``shap`` the second is 0 (compiling deeplift_shap's gradient costs more than
    deeplift's)."""

    def F(xs, ps):
        return sum(model(s, x, _Apply(p)) for s, x, p in zip(specs, xs, ps, strict=True))

    def dot(ws, cs):
        return sum(jnp.sum(w * c) for w, c in zip(ws, cs, strict=True))

    def q(rs, shap_rs, xs, ps, ws):
        c = dot(ws, dl.deeplift(F, rs)(xs, ps))
        if not shap:
            return c, 0.0 * jnp.sum(shap_rs[0])
        shap_c = dl.deeplift_shap(F, shap_rs, reference_chunk_size=None)(xs, ps)
        return c, dot(ws, shap_c)

    return q


def check_reference_grads(
    specs, seed, instances=GRAD_INSTANCES, directions=GRAD_DIRECTIONS, shap=True
):
    """Per model and direction: (relative error of d/dref along v, of d/dshap_refs), or the
    string "raised" where deeplift refuses the gradient with DeepLiftError.

    Gradient and finite differences are both taken in float64: what is checked is that the
    gradient is the derivative of the scores (a stop_gradient on the reference gives 0 or
    the wrong sign), not float32's conditioning (a secant's derivative in the reference
    cancels where x ≈ ref)."""
    rng = np.random.default_rng(seed)
    specs = tuple(specs)
    xs, rs, srs, ps, ws, vs, svs = ([] for _ in range(7))
    for s in specs:
        pairs = [input_and_reference(s[0], rng, "random") for _ in range(instances)]
        xs.append(np.stack([a for a, _ in pairs]))
        rs.append(np.stack([b for _, b in pairs]))
        srs.append(np.asarray(rng.normal(size=(instances, 2) + s[0]), np.float32))
        draws = [init(s, rng) for _ in range(instances)]
        ps.append([np.stack(leaves) for leaves in zip(*draws, strict=True)])
        ws.append(rng.normal(size=(instances,) + s[0]))
        vs.append(rng.normal(size=(directions, instances) + s[0]))
        svs.append(rng.normal(size=(directions, instances, 2) + s[0]))
    q = _weighted_scores(specs, shap)

    def grads(rs, srs, xs, ps, ws):
        return (
            jax.grad(lambda r: q(r, srs, xs, ps, ws)[0])(rs),
            jax.grad(lambda t: q(rs, t, xs, ps, ws)[1])(srs),
        )

    steps = (1e-3, 1e-4)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.SummationWarning)
        as64 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)
        try:
            g, sg = jax.jit(jax.vmap(grads))(*as64((rs, srs, xs, ps, ws)))
        except dl.DeepLiftError:
            return "raised"
        # over directions, then instances; the deeplift sum depends on the reference only
        # and deeplift_shap's on its references only, so both move in one call
        q64 = jax.jit(jax.vmap(jax.vmap(q), in_axes=(0, 0, None, None, None)))
        fds = []  # central differences at two steps: (deeplift's, deeplift_shap's)
        for h in steps:
            out = []
            for sign in (1, -1):
                moved = [r[None] + sign * h * v for r, v in zip(rs, vs, strict=True)]
                smoved = [r[None] + sign * h * v for r, v in zip(srs, svs, strict=True)]
                a, b = q64(*as64((moved, smoved, xs, ps, ws)))
                out.append((np.asarray(a), np.asarray(b)))
            fds.append([(out[0][i] - out[1][i]) / (2 * h) for i in (0, 1)])
    # Scores are piecewise smooth in the reference (a rule switches regime at some
    # boundary: a secant or its mean-derivative fallback, an argmax): a difference across
    # such a boundary is off by jump / 2h, so the better of the two steps is compared; a
    # gradient that is not the derivative misses both.
    errors = []
    for i, (gg, vv) in enumerate(((g, vs), (sg, svs))):
        terms = [np.asarray(a, np.float64)[None] * v for a, v in zip(gg, vv, strict=True)]
        along = sum(t.reshape(directions, instances, -1).sum(-1) for t in terms)
        scale = sum(np.abs(t).reshape(directions, instances, -1).sum(-1) for t in terms)
        errs = [np.abs(along - fd[i]) / np.maximum(scale + np.abs(fd[i]), 1e-12) for fd in fds]
        errors.append(np.minimum(*errs))
    return errors


def _grad_failures(specs, errors):
    if isinstance(errors, str):
        return []
    bad = []
    for what, err in zip(("deeplift", "deeplift_shap"), errors, strict=True):
        for d, b in zip(*np.nonzero(~(err <= GRAD_RTOL)), strict=True):
            bad.append(
                f"{what}: d/dref along direction {d}, instance {b}: "
                f"rel error {err[d, b]:.3g} {specs}"
            )
    return bad


smooth_batches = st.lists(architectures(smooth=True), min_size=4, max_size=4)
# the default run: one fixed draw of small models covering the families (the long run draws)
GRAD_CI_SPECS = (
    ((4, 2), (("attn", True), ("act", "tanh")), "linear"),
    ((5,), (("dense", 4), ("norm", "layer_div"), ("gate", 1)), "sigmoid"),
)


def test_gradients_with_respect_to_references():
    """deeplift's reference; deeplift_shap's references in the long run (its gradient
    compiles slowly)."""
    bad = _grad_failures(GRAD_CI_SPECS, check_reference_grads(GRAD_CI_SPECS, 0, shap=False))
    assert not bad, "gradients w.r.t. the reference that are not the scores' derivative:\n" + (
        "\n".join(bad)
    )


@pytest.mark.slow
def test_gradients_with_respect_to_references_long_run():
    """DEEPLIFTJAX_FUZZ_GRAD_MODELS smooth architectures (default 200), GRAD_INSTANCES draws."""
    examples = -(-SLOW_GRAD_MODELS // 4)  # 4 architectures per example
    bad, raised = [], [0]

    @_long_run(examples)
    @given(specs=smooth_batches, seed=st.integers(0, 2**31 - 1))
    def run(specs, seed):
        errors = check_reference_grads(specs, seed)
        raised[0] += isinstance(errors, str)
        bad.extend(_grad_failures(specs, errors))

    t0 = time.perf_counter()
    run()
    print(
        f"\nreference gradients: {examples * 4} architectures, {examples * 4 * GRAD_INSTANCES} "
        f"models, {raised[0]} batches refused, {len(bad)} failures, "
        f"{time.perf_counter() - t0:.0f} s"
    )
    assert not bad, "\n".join(bad)


# ==== the second grammar: predicates, integer paths, guarded branches ======================
# A program is ((n,), ops, head, split, batching) on a vector h, at first the input (given to
# deeplift as the pytree (x[:split], x[split:]) when split > 0; "vmap": deeplift vmapped over
# the draws, "each": jitted for one draw and called on each). Every op maps h to a new
# float vector, through booleans and integers derived from h:
#   predicates p (booleans of h's shape):
#     ("cmp", op, t)                h op t; op in == != >= > <= <, t in -1 0 0.5 1
#     ("cmp2", op)                  h op roll(h, 1): two varying operands
#     ("isfinite", "log" | "inv")   isfinite(log h), isfinite(1 / h)
#     ("isnan", "sqrt")             isnan(sqrt h)
#     ("arg", "max" | "min", k, j)  argmax(h[:k]) == j (argmin), broadcast
#     ("and" | "or" | "xor", p, q), ("not", p)     p & q, p | q, p ^ q, ~p
#   branches b: h, -h, h*h, tanh h, 2, 0, roll(h, 1), 2h + 1 (BRANCHES)
#   sources i (an integer scalar): ("arg", "max" | "min", k) argmax(h[:k]), ("count", p)
#   min(sum(p as int32), 3)
#   ops:
#     ("mix", m, "int" | "float")   h @ W + c; "int": W, c in {-1, 0, 1} keep the integer grid
#     ("act", name)                 relu tanh sigmoid softplus abs sq sign floor round
#     ("where", p, b1, b2)          jnp.where(p, b1(h), b2(h))
#     ("cast", p, b)                p.astype(float) * b(h)
#     ("switch", i, (b, ...))       lax.switch(i, bs, h)
#     ("cond", p, "first" | "any", b1, b2)   lax.cond(p[0] or any(p), b1, b2, h)
#     ("trunc", s, "add" | "mul")   t = (s h).astype(int32) as float; t + h / 2 or t * h
#     ("ipow", i, "lax" | "jnp")    lax.pow(h, i) or jnp.power(h, i)
#     ("take", src)                 h + take(h, argmax b(h)) (argmin), or take(h, cumsum(p) % n)
#     ("icum", p, "cumsum" | "cummax", use, b1, b2)   an int32 mask through cumsum / cummax
#     ("iarith", p, q, use, b1, b2)                   2p - q + 3pq on int32 masks
#     ("smap", p, map, "bool" | "int", use, b1, b2, arg)   a mask through flip, roll,
#                                   transpose, cumsum, take (constant indices), reshape, concat
#       use: "where": where(mask != 0, b1, b2); "odd": where(mask % 2 == 1, b1, b2);
#            "cast": mask.astype(float) * b1
#     ("guard", kind)               branches undefined where not taken (GUARDS): where(h > 0,
#                                   log h, -1), where(h != 0, 1/h, 0), where(h > 0, sqrt h, 0),
#                                   where(h > 1, arccosh h, 0), xlogy(relu h, relu h),
#                                   entr(relu h), where(isfinite(log h), log h, 0),
#                                   lax.cond(h[0] > 0, h + log h[0], h)
#     ("maxpool", w, s)             1-D max pooling, s < w, s == w or s > w
#     ("reduce", "max" | "min")     h + max(h), h - min(h)
#     ("sqrt0", kind)               sqrt(h * h), sqrt(relu h), h + norm(h[:2]): zero on both sides
#     ("loop", p, b1, b2)           fori_loop(0, 2, where(p, b1, b2)): predicates inside a scan
#     ("unsupported", kind)         jnp.sort(h), take(h, argsort(h)), a while_loop: no exact
#                                   rule, so deeplift must raise DeepLiftError (or be exact)
#     ("infmask", target, side, arg)   -inf masks: v = h + b with b in {0, -inf}; side "both":
#                                   a constant mask (-inf at input and reference), "pred":
#                                   -inf where a predicate of h holds (it can hold on one side
#                                   only), "log": b = log(relu(h)) (-inf where h <= 0); entry
#                                   0 is never masked; target: softmax(v), h + logsumexp(v),
#                                   h + max(v), maximum(v, roll(h, 1)), or causal attention
#                                   over n tokens of dimension 1 with b added to the keys
#     ("pole", fn, delta, sign)     singular functions near their poles: arcsin / arccos /
#                                   arctanh(±(1 - delta sigmoid(h))), delta tan(pi/2 - delta
#                                   sigmoid(h)), delta tan(pi/2 + delta tanh(h)) (across the
#                                   pole), log(delta sigmoid(h)), log1p(delta sigmoid(h) - 1),
#                                   sqrt(delta) rsqrt(delta sigmoid(h)),
#                                   log1p(-sigmoid(h - log(delta))) (large logits)
#     ("normdiv", kind, eps)        divisions by norms: h / (||h|| + eps), h / sqrt(h.h + eps),
#                                   h / safe_norm(h, eps) (optax's), h / (|h|_1 + eps), RMSNorm
#                                   and LayerNorm written with / and sqrt, h + cos-sim of the
#                                   two halves of h, h + cos-sim of h and a constant
#     ("rawtie", op, b1, b2)        where(h[0] op h[1], b1(h), b2(h)), only as the first op: a
#                                   predicate on the raw input, drawn with the "tie_*"
#                                   references below (a tie on one side, a near tie or a
#                                   float32 ulp on the other)
#   head: w . h + c, or its tanh.

PROGRAMS_PER_EXAMPLE = 4
PROGRAM_INSTANCES = 24
PROGRAM_CI_EXAMPLES = 2  # 8 programs, 192 models
SLOW_PROGRAMS = int(os.environ.get("DEEPLIFTJAX_FUZZ_PROGRAMS", "500"))

CMPS = {
    "==": jnp.equal,
    "!=": jnp.not_equal,
    ">=": jnp.greater_equal,
    ">": jnp.greater,
    "<=": jnp.less_equal,
    "<": jnp.less,
}
THRESHOLDS = (-1.0, 0.0, 0.0, 0.5, 1.0)
BRANCHES = ("id", "neg", "sq", "tanh", "const", "zero", "roll", "affine")
PROGRAM_ACTS = ("relu", "tanh", "sigmoid", "softplus", "abs", "sq", "sign", "floor", "round")
GUARDS = ("log", "inv", "sqrt", "arccosh", "xlogy", "entr", "isfinite", "cond_log")
SMAPS = ("flip", "roll", "transpose", "cumsum", "take", "reshape", "concat")
INF_TARGETS = ("softmax", "logsumexp", "reduce_max", "maximum", "attention")
INF_SIDES = ("both", "pred", "log")
POLES = ("arcsin", "arccos", "arctanh", "tan", "tan_across", "log", "log1p", "rsqrt")
POLES += ("log1p_sigmoid",)
POLE_DELTAS = (1e-1, 1e-3, 1e-4, 1e-6)
NORM_DIVS = ("l2", "l2_sqrt", "safe", "l1", "rms", "layer", "cos", "cos_const")
NORM_DIV_EPS = (1e-6, 1e-3)
USES = ("where", "odd", "cast")
OP_KINDS = (
    ("mix", "act", "where", "where", "cast", "switch", "cond")
    + ("trunc", "ipow", "take", "icum", "iarith", "guard", "guard", "smap", "smap")
    + ("maxpool", "reduce", "sqrt0", "loop", "unsupported")
    + ("infmask", "infmask", "pole", "pole", "normdiv", "normdiv")
)
FAMILIES = {
    "where": "predicate",
    "cast": "predicate",
    "switch": "predicate",
    "cond": "predicate",
    "trunc": "integer",
    "ipow": "integer",
    "take": "integer",
    "icum": "integer",
    "iarith": "integer",
    "guard": "guarded",
    "smap": "structural",
    "maxpool": "pooling",
    "reduce": "pooling",
    "sqrt0": "boundary",
    "loop": "predicate",
    "unsupported": "unsupported",
    "infmask": "inf_mask",
    "pole": "pole",
    "normdiv": "norm_div",
    "rawtie": "raw_tie",
}
# families whose failures may be reported by the summation guard instead of being exact
# (never silent: a guard report or a DeepLiftError, never a silent wrong number); the
# others, whose rules are exact, are held to exact-or-DeepLiftError
GUARDED_FAMILIES = {"inf_mask", "pole", "norm_div", "raw_tie"}
# programs made only of these (and plain layers) are continuous: no jumps, no switch scores,
# so their scores are compared with the exact Shapley values: Σ|C| > SPREAD Σ|φ| is listed
# as "wide" in the long run (DeepLIFT is not Shapley, but hundreds of times wider is a
# cancellation between contributions, which the summation guard cannot see)
CONTINUOUS_FAMILIES = {"inf_mask", "pole", "norm_div", "boundary"}
SPREAD = 2.0


def _draw_pred(draw, n, depth=1):
    kinds = ["cmp", "cmp", "cmp", "cmp2", "isfinite", "isnan", "arg"]
    if depth:
        kinds += ["and", "and", "or", "xor", "not"]
    kind = draw(st.sampled_from(kinds))
    if kind == "cmp":
        return ("cmp", draw(st.sampled_from(tuple(CMPS))), draw(st.sampled_from(THRESHOLDS)))
    if kind == "cmp2":
        return ("cmp2", draw(st.sampled_from(tuple(CMPS))))
    if kind == "isfinite":
        return ("isfinite", draw(st.sampled_from(["log", "inv"])))
    if kind == "isnan":
        return ("isnan", "sqrt")
    if kind == "arg":
        k = draw(st.integers(2, n))
        return ("arg", draw(st.sampled_from(["max", "min"])), k, draw(st.integers(0, k - 1)))
    if kind == "not":
        return ("not", _draw_pred(draw, n, depth - 1))
    return (kind, _draw_pred(draw, n, depth - 1), _draw_pred(draw, n, depth - 1))


def _draw_source(draw, n):
    if draw(st.booleans()):
        return ("arg", draw(st.sampled_from(["max", "min"])), draw(st.integers(2, n)))
    return ("count", _draw_pred(draw, n))


@st.composite
def programs(draw):
    n = draw(st.sampled_from([3, 4, 4, 5, 6, 6, 8]))
    in_shape, ops = (n,), []
    branch = st.sampled_from(BRANCHES)
    if draw(st.integers(0, 3)) == 0:  # a predicate on the raw input (ties: "tie_*" refs)
        ops.append(("rawtie", draw(st.sampled_from(tuple(CMPS))), draw(branch), draw(branch)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(OP_KINDS))
        if kind == "mix":
            m = draw(st.integers(2, 8))
            op, n = ("mix", m, draw(st.sampled_from(["int", "int", "float"]))), m
        elif kind == "act":
            op = ("act", draw(st.sampled_from(PROGRAM_ACTS)))
        elif kind == "where":
            op = ("where", _draw_pred(draw, n), draw(branch), draw(branch))
        elif kind == "cast":
            op = ("cast", _draw_pred(draw, n), draw(branch))
        elif kind == "switch":
            bs = tuple(draw(branch) for _ in range(draw(st.integers(2, 3))))
            op = ("switch", _draw_source(draw, n), bs)
        elif kind == "cond":
            how = draw(st.sampled_from(["first", "any"]))
            op = ("cond", _draw_pred(draw, n), how, draw(branch), draw(branch))
        elif kind == "trunc":
            op = ("trunc", draw(st.sampled_from([1.0, 2.0])), draw(st.sampled_from(["add", "mul"])))
        elif kind == "ipow":
            op = ("ipow", _draw_source(draw, n), draw(st.sampled_from(["lax", "jnp"])))
        elif kind == "take":
            how = draw(st.sampled_from(["argmax", "argmin", "cumsum"]))
            arg = _draw_pred(draw, n) if how == "cumsum" else draw(branch)
            op = ("take", (how, arg))
        elif kind in ("icum", "iarith"):
            first = _draw_pred(draw, n)
            second = draw(st.sampled_from(["cumsum", "cummax"])) if kind == "icum" else None
            second = second or _draw_pred(draw, n)
            op = (kind, first, second, draw(st.sampled_from(USES)), draw(branch), draw(branch))
        elif kind == "smap":
            maps = [m for m in SMAPS if n % 2 == 0 or m not in ("transpose", "reshape")]
            mp = draw(st.sampled_from(maps))
            if mp == "take":
                arg = tuple(draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n)))
            else:
                arg = draw(st.integers(1, n - 1))
            dtype = draw(st.sampled_from(["bool", "int"]))
            use = draw(st.sampled_from(USES))
            op = ("smap", _draw_pred(draw, n), mp, dtype, use, draw(branch), draw(branch), arg)
        elif kind == "guard":
            op = ("guard", draw(st.sampled_from(GUARDS)))
        elif kind == "maxpool":
            w = draw(st.integers(2, 3))
            s = draw(st.sampled_from([w - 1, w, w + 1]))  # overlapping, tiling, gaps
            if n < w or (n - w) // s + 1 < 2:
                continue
            op, n = ("maxpool", w, s), (n - w) // s + 1
        elif kind == "reduce":
            op = ("reduce", draw(st.sampled_from(["max", "min"])))
        elif kind == "loop":
            op = ("loop", _draw_pred(draw, n), draw(branch), draw(branch))
        elif kind == "unsupported":
            op = ("unsupported", draw(st.sampled_from(["sort", "argsort", "while"])))
        elif kind == "infmask":
            side = draw(st.sampled_from(INF_SIDES))
            if side == "both":
                arg = (False,) + tuple(
                    draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
                )
            else:
                arg = _draw_pred(draw, n) if side == "pred" else None
            op = ("infmask", draw(st.sampled_from(INF_TARGETS)), side, arg)
        elif kind == "pole":
            fn = draw(st.sampled_from(POLES))
            op = ("pole", fn, draw(st.sampled_from(POLE_DELTAS)), draw(st.sampled_from([1, -1])))
        elif kind == "normdiv":
            op = ("normdiv", draw(st.sampled_from(NORM_DIVS)), draw(st.sampled_from(NORM_DIV_EPS)))
        else:
            op = ("sqrt0", draw(st.sampled_from(["abs", "relu", "norm"])))
        ops.append(op)
    head = draw(st.sampled_from(["linear", "tanh"]))
    # split k > 0: the input is the pytree (x[:k], x[k:]), joined inside the program
    split = draw(st.integers(1, in_shape[0] - 1)) if draw(st.integers(0, 3)) == 0 else 0
    # vmapped over the draws (cond becomes select), or jitted for one draw (a real cond)
    return in_shape, tuple(ops), head, split, draw(st.sampled_from(["vmap", "each"]))


def _pred(p, h):
    kind = p[0]
    if kind == "cmp":
        return CMPS[p[1]](h, p[2])
    if kind == "cmp2":
        return CMPS[p[1]](h, jnp.roll(h, 1))
    if kind == "isfinite":
        return jnp.isfinite(jnp.log(h) if p[1] == "log" else 1 / h)
    if kind == "isnan":
        return jnp.isnan(jnp.sqrt(h))
    if kind == "arg":
        i = (jnp.argmax if p[1] == "max" else jnp.argmin)(h[: p[2]])
        return jnp.broadcast_to(i == p[3], h.shape)
    if kind == "not":
        return ~_pred(p[1], h)
    a, b = _pred(p[1], h), _pred(p[2], h)
    return a & b if kind == "and" else a | b if kind == "or" else a ^ b


def _branch(name, h):
    if name == "id":
        return h
    if name == "neg":
        return -h
    if name == "sq":
        return h * h
    if name == "tanh":
        return jnp.tanh(h)
    if name == "const":
        return jnp.full_like(h, 2.0)
    if name == "zero":
        return jnp.zeros_like(h)
    if name == "roll":
        return jnp.roll(h, 1)
    return 2 * h + 1


def _source(src, h):
    if src[0] == "arg":
        return (jnp.argmax if src[1] == "max" else jnp.argmin)(h[: src[2]])
    return jnp.minimum(jnp.sum(_pred(src[1], h).astype(jnp.int32)), 3)


def _use(use, m, b1, b2, h):
    if use == "cast":
        return m.astype(h.dtype) * _branch(b1, h)
    cond = m != 0 if use == "where" else m.astype(jnp.int32) % 2 == 1
    return jnp.where(cond, _branch(b1, h), _branch(b2, h))


def _smap(mp, m, arg):
    n = m.shape[0]
    if mp == "flip":
        return jnp.flip(m)
    if mp == "roll":
        return jnp.roll(m, arg)
    if mp == "transpose":
        return m.reshape(2, n // 2).T.reshape(n)
    if mp == "cumsum":
        return jnp.cumsum(m.astype(jnp.int32))
    if mp == "take":
        return jnp.take(m, np.asarray(arg, np.int32))
    if mp == "reshape":
        return m.reshape(2, n // 2)[::-1].reshape(n)
    return jnp.concatenate([m[arg:], m[:arg]])


def _guard(kind, h):
    if kind == "log":
        return jnp.where(h > 0, jnp.log(h), -1.0)
    if kind == "inv":
        return jnp.where(h != 0, 1 / h, 0.0)
    if kind == "sqrt":
        return jnp.where(h > 0, jnp.sqrt(h), 0.0)
    if kind == "arccosh":
        return jnp.where(h > 1, jnp.arccosh(h), 0.0)
    if kind == "xlogy":
        return jax.scipy.special.xlogy(jax.nn.relu(h), jax.nn.relu(h))
    if kind == "entr":
        return jax.scipy.special.entr(jax.nn.relu(h))
    if kind == "isfinite":
        log = jnp.log(h)
        return jnp.where(jnp.isfinite(log), log, 0.0)
    return lax.cond(h[0] > 0, lambda v: v + jnp.log(v[0]), lambda v: v, h)


def _safe_norm(v, min_norm):
    # optax.safe_norm: the norm floored at min_norm, with a finite gradient at 0
    sq = jnp.sum(v * v)
    return jnp.where(sq > min_norm**2, jnp.sqrt(jnp.where(sq > min_norm**2, sq, 1.0)), min_norm)


def _inf_bias(side, arg, h):
    """0 or -inf per entry (entry 0 always 0), or log(relu(h)) for side "log"."""
    first = np.arange(h.shape[0]) == 0
    if side == "both":
        return jnp.where(np.asarray(arg), -jnp.inf, jnp.zeros_like(h))
    if side == "pred":
        return jnp.where(_pred(arg, h) & ~first, -jnp.inf, jnp.zeros_like(h))
    return jnp.where(first, jnp.zeros_like(h), jnp.log(jax.nn.relu(h)))


def _inf_op(target, side, arg, h, P):
    b = _inf_bias(side, arg, h)
    if target == "attention":  # n tokens of dimension 1, causal, b added to the keys
        n = h.shape[0]
        s = (h * P("w", (n,), fan_in=1))[:, None] * h[None, :] + b[None, :]
        s = jnp.where(np.tril(np.ones((n, n), bool)), s, -jnp.inf)
        return jax.nn.softmax(s, axis=-1) @ h
    v = h + b
    if target == "softmax":
        return jax.nn.softmax(v)
    if target == "logsumexp":
        return h + jax.nn.logsumexp(v)
    if target == "reduce_max":
        return h + jnp.max(v)
    return jnp.maximum(v, jnp.roll(h, 1))


HALF_PI = float(np.float32(np.pi / 2))


def _pole(fn, delta, sign, h):
    s = jax.nn.sigmoid(h)
    if fn in ("arcsin", "arccos", "arctanh"):
        return getattr(jnp, fn)(sign * (1 - delta * s))
    if fn == "tan":
        return delta * jnp.tan(HALF_PI - delta * s)
    if fn == "tan_across":
        return delta * jnp.tan(HALF_PI + delta * jnp.tanh(h))
    if fn == "log":
        return jnp.log(delta * s)
    if fn == "log1p":
        return jnp.log1p(delta * s - 1)
    if fn == "rsqrt":
        return math.sqrt(delta) * lax.rsqrt(delta * s)
    return jnp.log1p(-jax.nn.sigmoid(h - math.log(delta)))


def _norm_div(kind, eps, h, P):
    if kind == "l2":
        return h / (jnp.linalg.norm(h) + eps)
    if kind == "l2_sqrt":
        return h / jnp.sqrt(jnp.sum(h * h) + eps)
    if kind == "safe":
        return h / _safe_norm(h, eps)
    if kind == "l1":
        return h / (jnp.sum(jnp.abs(h)) + eps)
    if kind == "rms":
        return h / jnp.sqrt(jnp.mean(h * h) + eps)
    if kind == "layer":
        d = h - jnp.mean(h)
        return d / jnp.sqrt(jnp.mean(d * d) + eps)
    if kind == "cos":
        k = h.shape[0] // 2
        a, b = h[:k], h[k : 2 * k]
        return h + (a @ b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + eps)
    w = P("w", h.shape, fan_in=1)
    return h + (h @ w) / (jnp.linalg.norm(h) * jnp.linalg.norm(w) + eps)


def _program_op(op, h, P):
    kind = op[0]
    if kind == "mix":
        n, m = h.shape[0], op[1]
        if op[2] == "int":
            return h @ P("int", (n, m)) + P("int", (m,))
        return h @ P("w", (n, m), fan_in=n) + P("b", (m,))
    if kind == "act":
        name = op[1]
        if name == "abs":
            return jnp.abs(h)
        if name == "sq":
            return h * h
        if name in ("sign", "floor", "round"):
            return getattr(jnp, name)(h)
        return jnp.tanh(h) if name == "tanh" else getattr(jax.nn, name)(h)
    if kind == "where":
        return jnp.where(_pred(op[1], h), _branch(op[2], h), _branch(op[3], h))
    if kind == "cast":
        return _pred(op[1], h).astype(h.dtype) * _branch(op[2], h)
    if kind == "switch":
        bs = [functools.partial(_branch, b) for b in op[2]]
        return lax.switch(_source(op[1], h), bs, h)
    if kind == "cond":
        p = _pred(op[1], h)
        p = p[0] if op[2] == "first" else jnp.any(p)
        return lax.cond(p, functools.partial(_branch, op[3]), functools.partial(_branch, op[4]), h)
    if kind == "trunc":
        t = (op[1] * h).astype(jnp.int32).astype(h.dtype)
        return t + 0.5 * h if op[2] == "add" else t * h
    if kind == "ipow":
        i = _source(op[1], h)
        return lax.pow(h, i.astype(jnp.int32)) if op[2] == "lax" else jnp.power(h, i)
    if kind == "take":
        how, arg = op[1]
        if how == "cumsum":
            return jnp.take(h, jnp.cumsum(_pred(arg, h).astype(jnp.int32)) % h.shape[0])
        i = (jnp.argmax if how == "argmax" else jnp.argmin)(_branch(arg, h))
        return h + jnp.take(h, i)
    if kind == "icum":
        m = _pred(op[1], h).astype(jnp.int32)
        m = jnp.cumsum(m) if op[2] == "cumsum" else lax.cummax(m, axis=0)
        return _use(op[3], m, op[4], op[5], h)
    if kind == "iarith":
        a, b = (_pred(p, h).astype(jnp.int32) for p in op[1:3])
        return _use(op[3], 2 * a - b + 3 * a * b, op[4], op[5], h)
    if kind == "smap":
        _, p, mp, dtype, use, b1, b2, arg = op
        m = _pred(p, h)
        m = m.astype(jnp.int32) if dtype == "int" else m
        return _use(use, _smap(mp, m, arg), b1, b2, h)
    if kind == "guard":
        return _guard(op[1], h)
    if kind == "maxpool":
        return lax.reduce_window(h, -jnp.inf, lax.max, (op[1],), (op[2],), "VALID")
    if kind == "reduce":
        return h + jnp.max(h) if op[1] == "max" else h - jnp.min(h)
    if kind == "loop":
        step = lambda i, v: jnp.where(_pred(op[1], v), _branch(op[2], v), _branch(op[3], v))
        return lax.fori_loop(0, 2, step, h)
    if kind == "infmask":
        return _inf_op(op[1], op[2], op[3], h, P)
    if kind == "pole":
        return _pole(op[1], op[2], op[3], h)
    if kind == "normdiv":
        return _norm_div(op[1], op[2], h, P)
    if kind == "rawtie":
        return jnp.where(CMPS[op[1]](h[0], h[1]), _branch(op[2], h), _branch(op[3], h))
    if kind == "unsupported":
        if op[1] == "sort":
            return jnp.sort(h)
        if op[1] == "argsort":
            return jnp.take(h, jnp.argsort(h))
        return lax.while_loop(lambda v: jnp.sum(v) < 0, lambda v: v + 1.0, h)
    if op[1] == "abs":
        return jnp.sqrt(h * h)
    if op[1] == "relu":
        return jnp.sqrt(jax.nn.relu(h))
    return h + jnp.linalg.norm(h[:2])


def program(spec, x, P):
    h = jnp.concatenate(x) if isinstance(x, tuple | list) else x
    for op in spec[1]:
        h = _program_op(op, h, P)
    y = h @ P("w", h.shape, fan_in=h.shape[0]) + P("b", ())
    return jnp.tanh(y) if spec[2] == "tanh" else y


def families(spec):
    return sorted({FAMILIES[op[0]] for op in spec[1] if op[0] in FAMILIES})


# ---- inputs and references at boundary values ----------------------------------------------

PROGRAM_RELATIONS = ("zero", "ones", "minus_ones", "negated", "some_equal", "equal", "random")
PROGRAM_RELATIONS += ("onehot", "near", "ulp", "tie_x", "tie_r", "tie_both")


def _boundary_vector(n, rng, style):
    if style == "sign":  # -1, 0, 1: every threshold, ties, x == ref on many entries
        return rng.integers(-1, 2, n).astype(np.float64)
    if style == "grid":
        return rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], n)
    if style == "onehot":
        v = np.zeros(n)
        v[rng.integers(n)] = rng.choice([-1.0, 1.0, 1.0])
        return v
    return rng.normal(size=n)


def program_input_and_reference(n, rng, relation):
    style = rng.choice(["sign", "sign", "grid", "onehot", "normal"])
    x = _boundary_vector(n, rng, style)
    if relation in ("zero", "ones", "minus_ones"):
        r = np.full(n, {"zero": 0.0, "ones": 1.0, "minus_ones": -1.0}[relation])
    elif relation == "negated":
        r = -x
    elif relation == "some_equal":
        r = np.where(rng.random(n) < 0.5, x, _boundary_vector(n, rng, style))
    elif relation == "equal":
        r = x.copy()
    elif relation == "onehot":
        r = _boundary_vector(n, rng, "onehot")
    elif relation == "near":  # thresholds crossed by tiny steps: 0 vs 1e-6
        step = rng.choice([1e-6, 1e-3]) * rng.choice([-1.0, 1.0], n)
        r = x + np.where(rng.random(n) < 0.5, step, 0.0)
    elif relation.startswith("tie"):  # x[1] == x[0] and/or r[1] == r[0], or a near tie
        r = _boundary_vector(n, rng, rng.choice(["sign", "grid", "normal"]))
        x[1], r[1] = x[0], r[0]
        how = rng.choice(["ulp", "ulps", "1e-6"])
        side = {"tie_x": r, "tie_r": x}.get(relation)  # the side with the near tie
        if side is not None:
            v, up = np.float32(side[0]), rng.choice([-np.inf, np.inf]).astype(np.float32)
            if how == "1e-6":
                side[1] = side[0] + np.sign(up) * 1e-6 * max(1.0, abs(side[0]))
            else:
                for _ in range(1 if how == "ulp" else 8):
                    v = np.nextafter(v, up)
                side[1] = float(v)
    elif relation == "ulp":  # one float32 ulp away on some entries
        x = np.asarray(x, np.float32)
        away = np.nextafter(x, rng.choice([-np.inf, np.inf], n).astype(np.float32))
        r = np.where(rng.random(n) < 0.5, away, x)
    else:
        r = _boundary_vector(n, rng, rng.choice(["sign", "grid", "normal"]))
    return np.asarray(x, np.float32), np.asarray(r, np.float32)


# ---- the check: DeepLiftError at trace time, or finite scores that sum to delta --------------


def _trace_outcome(spec, x, r, p):
    """None if deeplift traces, "raised" on DeepLiftError, else the other exception."""
    g = lambda x, p: program(spec, x, _Apply(p))
    sds = lambda t: jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), t)
    attr = lambda x, r, p: dl.deeplift(g, r)(x, p)
    try:
        jax.eval_shape(attr, sds(x), sds(r), sds(p))  # one instance
    except dl.DeepLiftError:
        return "raised"
    except Exception as e:  # a failure too: only DeepLiftError may be raised
        return _error_text(e)
    return None


def _error_text(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"


def _program_values64(spec, x, r, p):
    """(B, 2^n): the program at every hybrid of x and r (tests/_shapley.py), in float64.

    Column 0 is f(r), the last f(x); the exact Shapley values follow from all of them."""
    n, k = x.shape[1], spec[3]
    members = coalitions(n)
    hybrids = np.where(members[None], x[:, None, :], r[:, None, :])

    def one(z, q):
        return program(spec, (z[:k], z[k:]) if k else z, _Apply(q))

    with jax.enable_x64(True):
        as64 = lambda t: jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), t)
        g = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None))))
        return np.asarray(g(*as64((hybrids, p))), np.float64)


def _spread(c, values):
    """Per instance Σ|C| / Σ|φ| against the exact Shapley values; NaN where some hybrid is
    not finite (no Shapley value) or φ is 0."""
    n = c.shape[1]
    out = np.full(len(c), np.nan)
    for b in range(len(c)):
        if np.all(np.isfinite(values[b])):
            width = np.abs(shapley_from_values(values[b], n)).sum()
            if width > 0:
                out[b] = np.abs(c[b]).sum() / width
    return out


def check_program(spec, rng, instances=PROGRAM_INSTANCES):
    """(spec, relations, rel errors, finite, noise, outcome, xs, refs, params, spread), one
    program.

    outcome is None (scores checked), "raised" (DeepLiftError at trace time: passes) or the
    text of any other exception (fails). spread: Σ|C| / Σ|φ| per instance (NaN where the
    exact Shapley values are not defined). Each program is its own compiled call: packing
    programs into one function as above is not used here, because a jump credited through
    the input distance (the score of last resort, see deepliftjax/_discrete.py) goes to
    every attributed input, so a sum of programs is not each program's scores."""
    rel = [PROGRAM_RELATIONS[i] for i in rng.integers(0, len(PROGRAM_RELATIONS), instances)]
    pairs = [program_input_and_reference(spec[0][0], rng, r) for r in rel]
    params = [init(spec, rng, program) for _ in range(instances)]
    x, r = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
    p = [np.stack(leaves) for leaves in zip(*params, strict=True)]
    nothing = np.zeros(instances)
    k = spec[3]
    split = (lambda a: (a[:, :k], a[:, k:])) if k else (lambda a: a)
    outcome = _trace_outcome(spec, split(x), split(r), p)
    if outcome is None:
        try:
            fn = _compiled((spec,), program, batched=spec[4] == "vmap")
            with warnings.catch_warnings():  # failing draws are re-run alone for the guard
                warnings.simplefilter("ignore", dl.SummationWarning)
                c, fx, fr = _run(fn, [split(x)], [split(r)], [p])
            c = np.concatenate(c[0], -1) if k else c[0]
        except dl.DeepLiftError:
            outcome = "raised"
        except Exception as e:
            outcome = _error_text(e)
    if outcome is not None:
        return (spec, rel, nothing, nothing > 0, nothing > 0, outcome, x, r, p, nothing * np.nan)
    c, fx, fr = (np.asarray(a, np.float64) for a in (c, fx[0], fr[0]))
    values = _program_values64(spec, x, r, p)
    fx64, fr64 = values[:, -1], values[:, 0]
    errs, noise = _errors(c, fx, fr, fx64, fr64, ulps_of_f=8)
    finite = np.isfinite(c).reshape(instances, -1).all(1)
    for b in range(instances):
        if rel[b] == "equal":
            finite[b] &= not np.any(c[b])  # input == reference: exactly zero
    # f itself not finite at x or ref (no Δf to sum to): nothing to check
    defined = np.isfinite(fx) & np.isfinite(fr) & np.isfinite(fx64) & np.isfinite(fr64)
    errs = np.where(defined, errs, 0.0)
    spread = np.where(defined, _spread(c, values), np.nan)
    return (spec, rel, errs, finite | ~defined, noise | ~defined, None, x, r, p, spread)


def check_programs(specs, seed, instances=PROGRAM_INSTANCES):
    rng = np.random.default_rng(seed)
    return [check_program(s, rng, instances) for s in specs]


def _fmt(a):
    """An array on one line, with every digit float32 needs to give it back exactly."""
    return " ".join(np.array2string(a, separator=",", floatmode="unique").split())


def _program_failures(report, classify=True):
    """[(class, message)]: "crashed" (an exception other than DeepLiftError), "reported"
    (the guard reports the draw when it is run alone) or "silent"."""
    fmt = _fmt
    bad = []
    for s, rel, errs, fin, noise, outcome, x, r, p, _ in report:
        if outcome is not None:
            if outcome != "raised":
                bad.append(("crashed", f"[crashed] {families(s)} {s}: raised {outcome}"))
            continue
        for b in range(len(errs)):
            if (errs[b] <= TOL or noise[b]) and fin[b]:
                continue
            cls = "unclassified"
            if classify:
                pb = [a[b] for a in p]
                said = guard_reports(program, s, x[b], r[b], pb, s[4] == "vmap", s[3])
                cls = "reported" if said else "silent"
            bad.append(
                (
                    cls,
                    f"[{cls}] {families(s)} {s} ref={rel[b]} x={fmt(x[b])} r={fmt(r[b])}: "
                    f"rel error {errs[b]:.3g}, finite/zero ok={bool(fin[b])}; "
                    f"params={[fmt(a[b]) for a in p]}",
                )
            )
    return bad


def _program_not_allowed(report):
    bad = []
    for entry in report:
        fams = set(families(entry[0]))
        bad += _not_allowed(_program_failures([entry]), fams)
    return bad


program_batches = st.lists(programs(), min_size=PROGRAMS_PER_EXAMPLE, max_size=PROGRAMS_PER_EXAMPLE)


@settings(max_examples=PROGRAM_CI_EXAMPLES, **_SETTINGS)
@given(specs=program_batches, seed=st.integers(0, 2**31 - 1))
def test_random_programs_sum_to_delta_or_raise(specs, seed):
    bad = _program_not_allowed(check_programs(specs, seed))
    assert not bad, "programs breaking summation to delta:\n" + "\n".join(bad)


CLASSES = ("raised", "reported", "silent", "crashed")


@pytest.mark.slow
def test_random_programs_long_run():
    """DEEPLIFTJAX_FUZZ_PROGRAMS programs (default 500), PROGRAM_INSTANCES draws each."""
    examples = -(-SLOW_PROGRAMS // PROGRAMS_PER_EXAMPLE)
    stats, bad, listed, spreads, wide = {}, [], [], {}, []

    @_long_run(examples)
    @given(specs=program_batches, seed=st.integers(0, 2**31 - 1))
    def run(specs, seed):
        report = check_programs(specs, seed)
        for entry in report:
            found = _program_failures([entry])
            fams = families(entry[0]) or ["plain"]
            for fam in fams:
                # models, raised, reported, silent, crashed (a crash counts every draw)
                st_ = stats.setdefault(fam, [0] * (1 + len(CLASSES)))
                st_[0] += len(entry[2])
                st_[1] += len(entry[2]) if entry[5] == "raised" else 0
                for cls, _ in found:  # st_[0] counts models: classes start at 1
                    st_[1 + CLASSES.index(cls)] += len(entry[2]) if cls == "crashed" else 1
                spreads.setdefault(fam, []).extend(entry[9][np.isfinite(entry[9])])
            listed.extend(m for _, m in found)
            bad.extend(_not_allowed(found, set(fams)))
            if set(families(entry[0])) <= CONTINUOUS_FAMILIES:
                s, rel, *_, x, r, p, spread = entry
                wide.extend(
                    f"[wide] {families(s)} {s} ref={rel[b]} x={_fmt(x[b])} r={_fmt(r[b])}: "
                    f"sum|C| = {spread[b]:.3g} sum|phi|; params={[_fmt(a[b]) for a in p]}"
                    for b in np.nonzero(spread > SPREAD)[0]
                )

    t0 = time.perf_counter()
    run()
    lines = []
    for f, (n, *counts) in sorted(stats.items()):
        sp = np.asarray(spreads.get(f, []))
        width = f"; {np.sum(sp > 2)} of {sp.size} wider than 2 sum|phi|" if sp.size else ""
        width += f" (max {sp.max():.3g})" if sp.size else ""
        lines.append(
            f"  {f}: {n} models, "
            + ", ".join(f"{c} {k}" for c, k in zip(counts, CLASSES, strict=True))
            + width
        )
    print(
        f"\nfuzz programs: {examples * PROGRAMS_PER_EXAMPLE} programs, "
        f"{examples * PROGRAMS_PER_EXAMPLE * PROGRAM_INSTANCES} models, {len(listed)} missing "
        f"summation to delta, {len(bad)} failures (silent, crashed, or reported outside "
        f"{sorted(GUARDED_FAMILIES)}), {time.perf_counter() - t0:.0f} s; by family (a "
        "program can be in several):\n"
        + "\n".join(lines)
        + f"\n{len(wide)} models of continuous programs wider than {SPREAD:g} sum|phi|\n"
        + "\n".join(listed + wide)
    )
    assert not bad, "programs breaking summation to delta:\n" + "\n".join(bad)


# ---- programs a long run found, kept as regressions ----------------------------------------------

FOUND = [
    # NaN scores (2026-12-07): a cosine similarity broadcast into h, a -inf mask under
    # maximum, then log / sqrt predicates; provenance mapped through a division passed
    # 0 * inf back
    (
        ((6,), (("normdiv", "cos", 1e-06), ("smap", ("cmp", ">", 0.0), "transpose", "int",
         "where", "zero", "sq", 1), ("infmask", "maximum", "both", (False, True, False, True,
         False, True)), ("iarith", ("and", ("arg", "max", 5, 1), ("isfinite", "log")), ("and",
         ("cmp", ">=", -1.0), ("isnan", "sqrt")), "where", "tanh", "sq")), "tanh", 0, "vmap"),
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [1.0] * 6,
        [[0.49116534, -0.1640804, -0.5423966, -0.22788256, 0.9320607, -0.4285114], 0.2825454],
    ),
    # the family's smallest member (2026-12-07, relative error 2.5, reported): causal
    # attention whose keys carry log(relu(h)), -inf on one side only
    (
        ((8,), (("infmask", "attention", "log", None),), "linear", 0, "vmap"),
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [0.5, 0.5, -2.0, 0.5, -0.5, 0.5, 2.0, 0.5],
        [
            [-0.093935356, 1.5406723, -1.7943032, 0.027450228, 0.86041427, -1.2104002,
             2.3362818, -0.78134245],
            [-0.63685006, -0.3076426, 0.15533292, 1.0608836, -0.21333185, -0.080793604,
             0.21236947, -0.7153768],
            -0.052154984,
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize("spec, x, r, p", FOUND, ids=["nan_through_cos_norm", "masked_keys"])
def test_programs_a_long_run_found(spec, x, r, p):
    """Exact now, under jit(vmap) and jit alone: finite scores summing to float64 Δf."""
    x, r = np.asarray(x, np.float32), np.asarray(r, np.float32)
    p = [np.asarray(a, np.float32) for a in p]
    f = lambda v, q: program(spec, v, _Apply(q))  # noqa: E731
    d64 = float(
        program(spec, x.astype(np.float64), _Apply([a.astype(np.float64) for a in p]))
        - program(spec, r.astype(np.float64), _Apply([a.astype(np.float64) for a in p]))
    )
    t = dl.deeplift(f, r)
    one = lambda a: np.asarray(a)[None]  # noqa: E731
    for c in (jax.jit(jax.vmap(t))(one(x), [one(a) for a in p])[0], jax.jit(t)(x, p)):
        c = np.asarray(c)
        assert np.all(np.isfinite(c)), c
        assert abs(c.sum() - d64) <= 1e-5 * abs(d64) + 1e-6, (c.sum(), d64)


# ---- argnums: scores come back in argnums' order ----------------------------------------------


ARGNUMS = tuple(itertools.permutations((0, 1, 2))) + ((1, 0), (2, 0), (2, 1), (1,), (0, 2))


def test_argnums_order():
    """Tuple argnums in any order return the scores of the sorted order, permuted."""

    def f(a, b, c):  # every argument interacts with another
        return jnp.sum(jnp.tanh(a) * b[0]) + jnp.sum(jax.nn.relu(c - a[0])) + jnp.sum(b[1:] ** 2)

    rng = np.random.default_rng(0)
    args = [rng.normal(size=n).astype(np.float32) for n in (2, 3, 4)]
    refs = [rng.normal(size=n).astype(np.float32) for n in (2, 3, 4)]
    cases = ARGNUMS + tuple(sorted({tuple(sorted(n)) for n in ARGNUMS} - set(ARGNUMS)))
    run = lambda *a: [dl.deeplift(f, tuple(refs[i] for i in n), argnums=n)(*a) for n in cases]
    got = dict(zip(cases, jax.jit(run)(*args), strict=True))  # one compile for all
    for nums in ARGNUMS:
        want = dict(zip(sorted(nums), got[tuple(sorted(nums))], strict=True))
        assert len(got[nums]) == len(nums), nums
        for i, c in zip(nums, got[nums], strict=True):
            assert c.shape == args[i].shape, (nums, i)
            np.testing.assert_allclose(c, want[i], rtol=1e-5, atol=1e-6, err_msg=str(nums))
        at_ref = [refs[i] if i in nums else a for i, a in enumerate(args)]
        delta = float(f(*args)) - float(f(*at_ref))
        total = sum(float(jnp.sum(c)) for c in got[nums])
        assert abs(total - delta) <= 1e-5 * max(abs(delta), 1.0), nums
