"""The public transforms: :func:`deeplift` and :func:`deeplift_vjp`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The rule modules fill the rule table when imported.
from deepliftjax import (  # noqa: F401, I001
    _compat,
    _rules_control,
    _rules_elementwise,
    _rules_linear,
    _rules_reduce,
    _rules_stop,
    _rulesets,  # the other rule sets: RevealCancel, LRP, guided backpropagation
)
from deepliftjax._errors import error
from deepliftjax._guard import check_options, guard
from deepliftjax._interpreter import EXACT_METHODS, Options, eval_jaxpr
from deepliftjax._pair import Pair
from deepliftjax._rulemap import RuleSite, rule_map

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, float, int, bool, complex)


def deeplift(
    f: Callable[..., Any],
    ref: Any,
    *,
    argnums: int | Sequence[int] = 0,
    multiply_by_inputs: bool = True,
    has_aux: bool = False,
    onehot_axis: int | None = None,
    rule: str | Mapping[Any, str] | Callable[[RuleSite], str | None] = "rescale",
    max_rule: str = "cross",
    fallback: str | None = None,
    precision: str | jax.lax.Precision | None = "highest",
    product_rule: str = "guarded",
    stop_gradient: str = "pass",
    check: str | None = "warn",
    check_tolerance: float | None = None,
) -> Callable[..., Any]:
    """DeepLIFT contribution scores of a scalar function, as a transform like ``jax.grad``.

    ``f`` is traced to a jaxpr and re-run on (input, reference) pairs with every
    primitive's derivative replaced by its DeepLIFT multiplier rule (Shrikumar et al.
    2016, §2.3): linear maps keep their VJP, elementwise nonlinearities use Rescale,
    products the midpoint rule, max/min and max pooling exact path rules. The scores
    satisfy summation to delta: ``sum(C) == f(x) - f(ref)``.

    Args:
      f: function to attribute; returns a scalar (or ``(scalar, aux)`` with ``has_aux``).
        To attribute one output of a vector function, wrap it, e.g. ``lambda x: f(x)[3]``,
        or use :func:`deeplift_vjp`.
      ref: the reference: an array broadcastable to the attributed argument, or a pytree
        of such arrays with the structure of ``args[argnums]``.
      argnums: which positional argument(s) to attribute, as in ``jax.grad``; a tuple
        returns the scores in its order. The other arguments (and keyword arguments) are
        passed to ``f`` as they are, not traced: Python numbers and flags stay static.
      multiply_by_inputs: return contributions ``m * (x - ref)`` (default) or, when
        False, the multipliers ``m``.
      has_aux: ``f`` returns ``(out, aux)``; the transform returns ``(scores, aux)``.
      onehot_axis: treat this axis of the input as one-hot with a sum constraint and
        mean-centre the input multipliers over it: the weight normalisation of §2.6
        (exact when the first layer is linear in the input, e.g. a convolution on one-hot
        DNA). With ``ref=1/K`` the scores of the present base, ``m * x``, are the paper's
        scores against an all-zero reference after normalisation.
      rule: ``"rescale"`` (the paper's rules, default) or ``"reveal_cancel"`` (Shrikumar et
        al. 2017: positive and negative parts of Δ kept apart through linear maps, weights
        split by sign, and treated separately at each nonlinearity). Both are exact. The
        gradient-based methods are their own functions (:func:`lrp_epsilon`, ...).
        Rule sets per layer: a mapping from a primitive's name (as the jaxpr prints it)
        or a ``jax.named_scope`` path (Flax modules' names, ``"Block_*/Dense_0"``;
        ``fnmatch`` wildcards) to a rule set, ``"*"`` naming the default; or a function of
        a :class:`RuleSite` returning a rule-set name (None: not chosen). The 2017 paper's
        best variant on genomics CNNs, RevealCancel on dense layers and Rescale on
        convolutions, is ``{"dot_general": "reveal_cancel", "conv_general_dilated":
        "rescale"}``. The innermost matching scope wins, then a primitive's name; an
        equation no key names follows the equations its operands came from (a layer's
        bias, activation and pooling get the layer's rule), except a new layer
        (``dot_general``/``conv``), which gets the default. Every mixture is exact. A key
        that names nothing in ``f`` raises.
      max_rule: rule for max pooling and ``reduce_max``: ``"cross"`` (exact, default),
        ``"paper"`` (eq. 11) or ``"gradient"`` (not exact). Under every rule a tie goes to
        the first maximal element (as in torch, Captum, shap), whatever the lowering.
      fallback: ``"gradient"`` uses the ordinary derivative for primitives without a rule,
        with a warning (not exact); by default they raise :class:`DeepLiftError`.
      precision: how the float32 matrix products and convolutions that leave precision
        to JAX (``precision=None`` in ``f``) are computed, in the forward, reference and
        multiplier passes alike. ``"highest"`` (default) keeps float32 exact on GPUs and
        TPUs, whose default precision (TF32, bfloat16 passes) breaks summation to delta at
        about 1e-3, but turns tensor cores off. ``"split_tf32"`` / ``"split_bf16"``
        compute each product as a float32-accurate sum of 3 TF32 (6 bfloat16) products:
        ``a = a_hi + a_lo``, ``a·b ≈ a_hi·b_hi + a_hi·b_lo + a_lo·b_hi`` (JAX's
        ``DotAlgorithmPreset`` for ``dot_general`` where the backend takes it, a portable
        split elsewhere); summation to delta holds to ~1e-5. On CPU the split modes only
        cost time (CPU products are float32 anyway). ``None`` leaves precision to JAX:
        fastest on accelerators (2-5x on an H200, benchmarks/RESULTS.md), not exact. A
        product whose precision ``f`` sets itself is left as it is.

      product_rule: how products of two varying operands (``mul``, ``dot_general``,
        ``conv``: attention, gates, norms) split their change. All choices are exact.
        ``"guarded"`` (default) is the paper's midpoint rule (§2.3.5) wherever that does
        not cancel, and otherwise moves toward the ordering with the least
        ``|C_a| + |C_b|``: at a degenerate reference (a LayerNorm/RMSNorm/GroupNorm input
        with zero variance, e.g. a zero-embedding baseline) the midpoint gives
        contributions hundreds of times Δf that cancel, and float32 loses the sum (a
        2-block transformer at a zero embedding: residual 1e7 with ``"midpoint"``, 5e-6
        with ``"guarded"``, Σ|C|/|Δf| ≈ 30). ``"midpoint"`` is the paper's rule
        everywhere; ``"balanced"`` always takes the least ``|C_a| + |C_b|``. Models
        without such products (CNNs, MLPs) are unaffected; on transformers ``"guarded"``
        costs 1.3-2.6x the midpoint (benchmarks/RESULTS_products.md). Use
        ``summation_check`` to see the conditioning of your scores.
      stop_gradient: what ``jax.lax.stop_gradient`` in ``f`` means. ``"pass"`` (default):
        a stopped value is attributed like any other, and the scores sum to
        ``f(x) - f(ref)``. ``"constant"``: a stopped value is held fixed at its value at
        the input, on the reference side too, and gets no multiplier; the scores sum to
        ``f(x) - f~(ref)`` with ``f~`` = ``f`` with stopped values frozen at ``x`` (for the
        profile target ``sum(stop_gradient(softmax(z)) * z)``: ``sum(softmax(z(x)) *
        (z(x) - z(ref)))``, the softmax weights held fixed per example). Shift-only uses
        such as the max shift in ``jax.nn.softmax`` keep ``f~ = f``.
      check: the summation guard. Every call compares the sum of each example's scores
        with ``f(x) - f(ref)`` (the reference side of ``stop_gradient="constant"``) and
        reports the examples whose residual exceeds ``check_tolerance * |Δf|`` plus the
        rounding of ``f`` itself (64 eps ``max(|f(x)|, |f(ref)|)``), or whose scores are not
        finite. ``"warn"`` (default): a :class:`deepliftjax.SummationWarning` naming the
        worst example (its index in the vmapped batch), its numbers and the likely cause;
        ``"raise"``: a :class:`DeepLiftError` outside ``jit`` (inside, the call fails with
        the same message); ``"checkify"``: a ``jax.experimental.checkify`` check, for
        ``checkify.checkify(...)`` to functionalise; ``None``: off. The guard works under
        ``jit``, ``vmap`` (one report per batch), ``grad`` and ``scan``, never changes the
        scores, and costs a few reductions per call (``benchmarks/RESULTS_guard.md``);
        the host is called only when an example fails.
      check_tolerance: the guard's relative tolerance; ``None`` picks it from the least
        precise dtype of the scores and the output (float32: 1e-4, float64: 1e-9,
        float16: 1e-2, bfloat16: 5e-2).

    Returns:
      A function with ``f``'s signature returning the scores for ``args[argnums]``
      (a tuple for a tuple ``argnums``), plus ``aux`` when ``has_aux``.

    Raises:
      DeepLiftError: at trace time, for a non-scalar or integer output, a reference that
        does not broadcast, integer or boolean attributed inputs, repeated ``argnums``, a
        rule set that is not DeepLIFT's, or an unsupported primitive.

    Predicates (``where``, ``cond``, masks, ``argmax`` routing, integer operands) that
    differ between input and reference stay exact: their jumps are credited through switch
    scores (see the README). Inputs equal to the reference score exactly 0.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from deepliftjax import deeplift
      >>> f = lambda x: 0.2 * jax.nn.relu(x[0] + 2 * x[1] + 2) + 0.1
      >>> deeplift(f, jnp.zeros(2))(jnp.array([-1.0, -1.0]))
      Array([-0.13333334, -0.26666668], dtype=float32)
    """
    options = _options(rule, max_rule, fallback, precision, product_rule, stop_gradient)
    check_options(check, check_tolerance)
    guarded = functools.partial(guard, check=check, tolerance=check_tolerance, what="deeplift")
    return _transform(
        f, ref, argnums, multiply_by_inputs, has_aux, onehot_axis, options, guard=guarded
    )


def _transform(
    f, ref, argnums, multiply_by_inputs, has_aux, onehot_axis, options, post=None, guard=None
):
    @functools.wraps(f)
    def scores(*args: Any, **kwargs: Any) -> Any:
        out, out_ref, pullback, aux, (diff, refs) = _vjp(
            f, ref, args, kwargs, argnums, has_aux, options
        )
        if not (hasattr(out, "shape") and jnp.shape(out) == ()):
            raise error(
                f"deeplift needs f to return a scalar, like jax.grad; got {_describe(out)}.",
                "pick a target, e.g. deeplift(lambda x: f(x)[i], ref) "
                "for output i or lambda x: f(x)[i] - f(x)[j] for a difference, or use "
                "deeplift_vjp(f, ref, x) to attribute any combination of a vector output.",
            )
        (m,) = pullback(jnp.ones_like(out))
        if guard is not None:
            guard(_raw_contributions(m, diff, refs), [out], [out_ref], None)
        if post is not None:
            m = jax.tree_util.tree_map(post, m, diff)
        m = _finish(m, diff, refs, multiply_by_inputs, onehot_axis)
        return (m, aux) if has_aux else m

    return scores


def deeplift_vjp(
    f: Callable[..., Any],
    ref: Any,
    *primals: Any,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    rule: str | Mapping[Any, str] | Callable[[RuleSite], str | None] = "rescale",
    max_rule: str = "cross",
    fallback: str | None = None,
    precision: str | jax.lax.Precision | None = "highest",
    product_rule: str = "guarded",
    stop_gradient: str = "pass",
    check: str | None = "warn",
    check_tolerance: float | None = None,
) -> tuple[Any, ...]:
    """DeepLIFT's analogue of ``jax.vjp``: attribute any linear combination of the outputs.

    Args:
      f: function to attribute; may return any pytree of arrays.
      ref: the reference, as for :func:`deeplift`.
      *primals: the arguments of ``f``.
      argnums, has_aux, rule, max_rule, fallback, precision: as for :func:`deeplift`.
      product_rule, stop_gradient, check, check_tolerance: as for :func:`deeplift`; the
        guard checks each ``pullback(cotangent)``'s contributions against
        ``sum(cotangent * (out - out_ref))``.

    Returns:
      ``(out, out_ref, pullback)`` (plus ``aux`` when ``has_aux``): ``f`` at the input
      and at the reference, and ``pullback(cotangent)``, which returns, as ``jax.vjp``'s
      does, a tuple with the multipliers of each attributed argument (one entry for an
      int ``argnums``) for the target ``sum(cotangent * out)``. Contributions are the
      multipliers times ``x - ref``; they sum to ``sum(cotangent * (out - out_ref))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from deepliftjax import deeplift_vjp
      >>> f = lambda x: jnp.tanh(jnp.stack([x.sum(), x[0] * x[1]]))
      >>> out, out_ref, pullback = deeplift_vjp(f, jnp.zeros(2), jnp.array([1.0, 2.0]))
      >>> (m,) = pullback(jnp.array([1.0, -1.0]))  # attribute out[0] - out[1]
    """
    options = _options(rule, max_rule, fallback, precision, product_rule, stop_gradient)
    check_options(check, check_tolerance)
    out, out_ref, pullback, aux, (diff, refs) = _vjp(
        f, ref, primals, {}, argnums, has_aux, options, any_output=True
    )

    def multipliers(cotangent: Any) -> tuple[Any, ...]:
        (m,) = pullback(cotangent)
        if check is not None:
            guard(
                _raw_contributions(m, diff, refs),
                jax.tree_util.tree_leaves(out),
                jax.tree_util.tree_leaves(out_ref),
                jax.tree_util.tree_leaves(cotangent),
                check=check,
                tolerance=check_tolerance,
                what="deeplift_vjp",
            )
        return m if isinstance(argnums, Sequence) else (m,)

    return (out, out_ref, multipliers, aux) if has_aux else (out, out_ref, multipliers)


# ---- implementation ---------------------------------------------------------------------


def _vjp(f, ref, args, kwargs, argnums, has_aux, options, any_output=False):
    """``(out, out_ref, pullback, aux, (diff, refs))`` of ``f`` over (input, reference)."""
    if not callable(f):
        raise error(
            f"deeplift expects a function; got {type(f).__name__}.",
            "pass the model first and the reference second: deeplift(f, ref)(x).",
        )
    argnums_t = _check_argnums(argnums, len(args))
    args = list(args)
    for i in argnums_t:  # Python numbers become arrays, as jax.grad takes them
        args[i] = jax.tree_util.tree_map(jnp.asarray, args[i])
    _check_float_leaves(args, argnums_t)
    diff = tuple(args[i] for i in argnums_t) if isinstance(argnums, Sequence) else args[argnums]
    refs = _broadcast_ref(ref, diff, argnums)
    flat_f, diff_leaf_list = _flatten_attributed(f, args, kwargs, argnums_t)
    closed, out_shape = jax.make_jaxpr(flat_f, return_shape=True)(*diff_leaf_list)
    out_tree = _output_tree(out_shape, has_aux, argnums, any_output)
    full_tree = jax.tree_util.tree_structure(out_shape)
    n_main = out_tree.num_leaves
    run = _pair_runner(closed, jax.tree_util.tree_leaves(refs), n_main, options)
    out_flat, pullback_flat, (ref_flat, aux_flat) = jax.vjp(run, *diff_leaf_list, has_aux=True)
    out = jax.tree_util.tree_unflatten(out_tree, out_flat)
    out_ref = jax.tree_util.tree_unflatten(out_tree, ref_flat)
    aux = None
    if has_aux:
        aux = jax.tree_util.tree_unflatten(full_tree, out_flat + aux_flat)[1]

    diff_tree = jax.tree_util.tree_structure(diff)

    def pullback(cotangent):
        ct_flat = jax.tree_util.tree_leaves(cotangent)
        if len(ct_flat) != len(out_flat):
            raise error(
                f"the cotangent has {len(ct_flat)} leaves but f's output has {len(out_flat)}.",
                "pass a cotangent with the structure and shapes of out.",
            )
        ct_flat = [
            jnp.broadcast_to(jnp.asarray(c, o.dtype), o.shape)
            for c, o in zip(ct_flat, out_flat, strict=True)
        ]
        ms = pullback_flat(ct_flat)
        return (jax.tree_util.tree_unflatten(diff_tree, list(ms)),)

    return out, out_ref, pullback, aux, (diff, refs)


def _flatten_attributed(f, args, kwargs, argnums_t):
    """``f`` as a function of the attributed arguments' leaves (in argnums order), and
    those leaves. Only they are traced; the other arguments stay as they are (Python
    numbers and flags static), as in ``jax.grad``."""
    arg_trees = [jax.tree_util.tree_structure(args[i]) for i in argnums_t]
    leaves = [leaf for i in argnums_t for leaf in jax.tree_util.tree_leaves(args[i])]

    def flat_f(*leaves):
        a, pos = list(args), 0
        for i, tree in zip(argnums_t, arg_trees, strict=True):
            a[i] = jax.tree_util.tree_unflatten(tree, leaves[pos : pos + tree.num_leaves])
            pos += tree.num_leaves
        return f(*a, **kwargs)

    return flat_f, leaves


def _output_tree(out_shape, has_aux, argnums, any_output=False):
    """The tree of the attributed outputs, checked: float leaves, ``(out, aux)`` if
    ``has_aux``."""
    if has_aux:
        if not (isinstance(out_shape, tuple) and len(out_shape) == 2):
            raise error(
                f"has_aux=True needs f to return a pair (out, aux); got {_describe(out_shape)}.",
                "return (out, aux) from f, or leave has_aux=False if f returns out alone.",
            )
        out_shape = out_shape[0]
    elif (
        not any_output  # deeplift_vjp takes any pytree of outputs
        and isinstance(out_shape, tuple | list)
        and not isinstance(argnums, Sequence)
        and _is_aux_like(out_shape)
    ):
        raise error(
            f"f returned a {type(out_shape).__name__} of {len(out_shape)} values; deeplift "
            "attributes one scalar.",
            "pass has_aux=True if f returns (out, aux), or select the output to attribute, "
            "e.g. lambda x: f(x)[0].",
        )
    for o in jax.tree_util.tree_leaves(out_shape):
        if not jnp.issubdtype(o.dtype, jnp.inexact):
            raise error(
                f"f returns a value of dtype {o.dtype}; DeepLIFT attributes floating-point "
                "outputs (an integer or boolean output, such as an argmax or a class label, "
                "changes in jumps that have no contributions of their own).",
                "attribute the float value the decision is made from, e.g. the logit of the "
                "chosen class (lambda x: logits(x)[k]) or a difference of logits.",
            )
    return jax.tree_util.tree_structure(out_shape)


def _pair_runner(closed, ref_leaves, n_main, options):
    """``run(*xs) -> (outs at x, (outs at ref, aux))``: the jaxpr over (input, reference)
    pairs, whose VJP gives the multipliers.

    The reference is not stop-gradiented: it is constant for the VJP in ``xs`` anyway, and
    a reference traced by an outer transform (``jax.grad`` with respect to the reference)
    then gets the true derivative of the scores, since every rule's backward pass is
    ordinary JAX code in the reference-side values it keeps as residuals.
    """
    from deepliftjax._rulekit import custom_multiplier

    jaxpr, consts = _compat.open_jaxpr(closed)

    def distance(xs, rs_):
        # The switch score of last resort (_discrete.input_distance): ΔT = ‖Δx‖ with
        # multipliers Δx/‖Δx‖. The multipliers are computed in the backward pass from both
        # sides instead of being held constant with stop_gradient, which would also hide
        # their dependence on x and ref from an outer jax.grad.
        n = len(xs)
        dt = jnp.result_type(jnp.float32, *[jnp.result_type(x) for x in xs])

        def unit(args):
            ds = [
                (jnp.asarray(x, dt) - jnp.asarray(r, dt))
                for x, r in zip(args[:n], args[n:], strict=True)
            ]
            top = jnp.max(jnp.stack([jnp.max(jnp.abs(d), initial=0) for d in ds]))
            still = top == 0  # no input moved: T does not move, and has no multiplier
            top_ = jnp.where(still, jnp.ones((), dt), top)
            norm = top_ * jnp.sqrt(sum(jnp.sum(jnp.square(d / top_)) for d in ds))
            return ds, jnp.where(still, jnp.zeros((), dt), norm), still, norm

        def backward(args, out, g):
            ds, _, still, norm = unit(args)
            scale = jnp.where(still, jnp.zeros((), dt), g / norm)
            return [scale * d for d in ds] + [None] * n

        tx = custom_multiplier(lambda *args: unit(args)[1], backward)(*xs, *rs_)
        return Pair(tx, jnp.zeros((), dt))

    def run(*xs):
        # A closed-over reference is broadcast now, so the reference pass the interpreter
        # runs on it is computed at trace time too (``_pair.bind_both``).
        with jax.ensure_compile_time_eval():
            rs_ = [
                jnp.broadcast_to(jnp.asarray(r, x.dtype), jnp.shape(x))
                for x, r in zip(xs, ref_leaves, strict=True)
            ]
        opts = dataclasses.replace(options, distance=distance(xs, rs_))
        vals = [Pair(x, r, exact=True) for x, r in zip(xs, rs_, strict=True)]
        outs = eval_jaxpr(jaxpr, consts, vals, opts)
        ox = [o.x if isinstance(o, Pair) else o for o in outs]
        orf = [o.r if isinstance(o, Pair) else o for o in outs]
        return ox[:n_main], (orf[:n_main], ox[n_main:])

    return run


def scores_of(m, x, ref, multiply_by_inputs=True, onehot_axis=None):
    """One leaf's scores from its multipliers ``m``: mean-normalised over ``onehot_axis``,
    then times ``x - ref`` unless ``multiply_by_inputs`` is False."""
    if onehot_axis is not None:
        m = m - jnp.mean(m, axis=onehot_axis, keepdims=True)
    if not multiply_by_inputs:
        return m
    dx = x - jnp.asarray(ref, x.dtype)
    # an input equal to its reference contributes exactly 0 (its multiplier may be the
    # infinite derivative of sqrt at 0); m * dx rather than a select keeps the derivative
    # of the scores in the reference (-m there) for an outer jax.grad, and + 0.0 turns -0
    # into 0
    m = jnp.where((dx == 0) & ~jnp.isfinite(m), jnp.zeros((), m.dtype), m)
    return m * dx + jnp.zeros((), m.dtype)


def _raw_contributions(m, diff, refs):
    """The leaves of ``m * (x - ref)``, before any normalisation: what eq. 1 constrains."""
    return jax.tree_util.tree_leaves(jax.tree_util.tree_map(scores_of, m, diff, refs))


def _finish(m, diff, refs, multiply_by_inputs, onehot_axis):
    one = functools.partial(
        scores_of, multiply_by_inputs=multiply_by_inputs, onehot_axis=onehot_axis
    )
    return jax.tree_util.tree_map(one, m, diff, refs)


def _options(rule, max_rule, fallback, precision, product_rule, stop_gradient="pass"):
    """The options of :func:`deeplift` and :func:`deeplift_vjp`, checked."""
    if not isinstance(rule, str):
        rules = rule_map(rule)
        return Options(
            max_rule=max_rule,
            fallback=fallback,
            method=rules.default,
            precision=precision,
            product_rule=product_rule,
            stop_gradient=stop_gradient,
            rules=rules,
        )
    if rule not in EXACT_METHODS:
        raise error(
            f"rule={rule!r} is not a DeepLIFT rule set; deeplift accepts {EXACT_METHODS}.",
            "'rescale' is the paper's (default), 'reveal_cancel' Shrikumar et al. 2017. "
            "The gradient-based methods are their own functions: deepliftjax.lrp_epsilon, "
            "guided_backprop, gradient, gradient_x_input, integrated_gradients.",
        )
    return Options(
        max_rule=max_rule,
        fallback=fallback,
        method=rule,
        precision=precision,
        product_rule=product_rule,
        stop_gradient=stop_gradient,
    )


def _check_argnums(argnums, nargs):
    nums = tuple(argnums) if isinstance(argnums, Sequence) else (argnums,)
    if not nums:
        raise error("argnums is empty.", "name at least one positional argument.")
    for a in nums:
        if not isinstance(a, int) or isinstance(a, bool) or not -nargs <= a < nargs:
            raise error(
                f"argnums={argnums!r} does not name a positional argument of the {nargs} given.",
                "pass the attributed input positionally.",
            )
    out = tuple(a % nargs for a in nums)
    if len(set(out)) != len(out):
        raise error(
            f"argnums={argnums!r} names an argument twice.",
            "list each attributed argument once; the scores come back in the order argnums gives.",
        )
    return out


def _check_float_leaves(args, argnums_t):
    for i in argnums_t:
        for path, leaf in jax.tree_util.tree_flatten_with_path(args[i])[0]:
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, jnp.inexact):
                where = jax.tree_util.keystr(path)
                raise error(
                    f"the attributed argument {i}{where} has dtype {dtype}; DeepLIFT "
                    "attributes floating-point inputs only.",
                    "one-hot encode integer inputs (jax.nn.one_hot), or attribute the "
                    "embedding output instead of token ids; cast with .astype(jnp.float32) if "
                    "the values are real numbers.",
                )


def _broadcast_ref(ref, diff, argnums):
    diff_tree = jax.tree_util.tree_structure(diff)
    if ref is None:
        raise error("ref is None.", "pass a reference input, e.g. jnp.zeros_like(x) or 0.0.")
    if _is_leaf_like(ref):
        refs = jax.tree_util.tree_map(lambda _: ref, diff)
    else:
        ref_tree = jax.tree_util.tree_structure(ref)
        if ref_tree != diff_tree:
            raise error(
                f"the reference's pytree structure {ref_tree} does not match the attributed "
                f"argument's {diff_tree}.",
                "pass one array (broadcast to every leaf) or a pytree with the structure of "
                "args[argnums].",
            )
        refs = ref

    def check(path, r, x):
        rs_, xs_ = jnp.shape(r), jnp.shape(x)
        where = f" at {jax.tree_util.keystr(path)}" if path else ""
        try:
            b = jnp.broadcast_shapes(rs_, xs_)
        except ValueError:
            b = None
        if b != tuple(xs_):
            raise error(
                f"the reference{where} of shape {rs_} does not broadcast to the input's shape "
                f"{xs_}.",
                "give a reference of the input's shape, or one that broadcasts to it "
                "(a scalar, or a per-feature array); to attribute a batch, jax.vmap the "
                "transform (in_axes selects batched or shared references).",
            )
        return r

    return jax.tree_util.tree_map_with_path(check, refs, diff)


def _is_leaf_like(v):
    return isinstance(v, _ARRAY_TYPES) or hasattr(v, "shape") and hasattr(v, "dtype")


def _is_aux_like(out_shape):
    return any(hasattr(o, "shape") for o in out_shape) and len(out_shape) >= 1


def _describe(v):
    if hasattr(v, "shape"):
        return f"an array of shape {tuple(v.shape)}"
    return f"a {type(v).__name__} ({jax.tree_util.tree_structure(v)})"


__all__ = ["deeplift", "deeplift_vjp"]
