"""The jaxpr interpreter that runs the input and the reference side by side.

Every value that depends on the attributed input is a :class:`Pair` of
``(actual, reference)``. Values that do not (weights, constants) stay plain
arrays and are computed once. Each primitive with a :class:`Pair` operand is
dispatched to its rule in :data:`RULES`; a rule returns the pair of outputs,
where the actual side is built so that its VJP is the DeepLIFT multiplier
(usually a ``jax.custom_vjp`` function) and the reference side is the ordinary
forward pass on the reference, which never carries gradient.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax import _compat, _discrete, _precision, _rulekit
from deepliftjax._errors import DeepLiftError, at_user_line, eqn_str, unsupported_primitive
from deepliftjax._pair import Accounts, Pair, bind_both, carried
from deepliftjax._registry import (  # noqa: F401  (RULES, register_rule: re-exported)
    CALLS,
    DOMAIN_EDGE,
    ELEMENTWISE,
    MOVES_ALL,
    MOVES_FIRST,
    RULES,
    Rule,
    register_rule,
)
from deepliftjax._rulemap import EXACT_METHODS, RuleUse  # noqa: F401  (re-exported)
from deepliftjax._rules_products import PRODUCT_RULES
from deepliftjax._walk import walk

MAX_RULES = ("cross", "paper", "gradient")
METHODS: dict[str, Callable[[Any], Any] | None] = {"rescale": None}
"""Rule sets over the same interpreter: name -> ``dispatch(prim)`` returning a rule (or None
for the default table). Filled by the modules that define them (``_rulesets.py``)."""
FALLBACKS = (None, "error", "gradient")


@dataclasses.dataclass(frozen=True)
class Options:
    """Choices that change which rule a primitive gets.

    Attributes:
      max_rule: rule for ``reduce_max``/``reduce_window_max`` (max pooling): ``"cross"``
        (exact, default), ``"paper"`` (eq. 11 of the paper, exact only when the input's
        argmax moved) or ``"gradient"`` (not exact).
      fallback: what to do with a primitive that has no rule: ``None``/``"error"`` raises,
        ``"gradient"`` uses its ordinary derivative with a warning (not exact).
    """

    max_rule: str = "cross"
    fallback: str | None = None
    method: str = "rescale"
    epsilon: float = 0.0
    bias: bool = True
    precision: Any = "highest"
    product_rule: str = "guarded"
    stop_gradient: str = "pass"
    """``"pass"`` or ``"constant"``: what ``stop_gradient`` means (``_rules_stop``)."""
    rules: Any = None
    """A :class:`deepliftjax._rulemap.RuleMap`: the rule set per equation (``method`` is
    then its default)."""
    rule_use: Any = dataclasses.field(default=None, compare=False, repr=False)
    """Set per call by :func:`eval_jaxpr` with ``rules``: which keys chose a rule."""
    distance: Any = dataclasses.field(default=None, compare=False, repr=False)
    """Set per call: the input distance, the switch score of last resort (``_discrete``)."""
    accounts: Any = dataclasses.field(default=None, compare=False, repr=False)
    """Set per call by :func:`eval_jaxpr`: the accounted differences (``_pair.Accounts``)."""

    def __post_init__(self):
        from deepliftjax._rules_stop import STOP_GRADIENT_MODES

        if self.stop_gradient not in STOP_GRADIENT_MODES:
            raise DeepLiftError(
                f"stop_gradient={self.stop_gradient!r} is not one of {STOP_GRADIENT_MODES}.\n"
                "Hint: 'pass' (default) attributes every change; 'constant' holds stopped "
                "values fixed at their value at the input."
            )
        if self.product_rule not in PRODUCT_RULES:
            raise DeepLiftError(
                f"product_rule={self.product_rule!r} is not one of {PRODUCT_RULES}.\n"
                "Hint: 'guarded' (default) is the paper's midpoint rule (§2.3.5) where it does not "
                "cancel; 'midpoint' is the paper's rule everywhere."
            )
        split = isinstance(self.precision, str) and self.precision in _precision.SPLIT_MODES
        if self.precision is not None and not split:
            try:
                object.__setattr__(self, "precision", jax.lax.Precision(self.precision))
            except (ValueError, TypeError) as err:
                raise DeepLiftError(
                    f"precision={self.precision!r} is not a jax.lax.Precision nor one of "
                    f"{tuple(_precision.SPLIT_MODES)}.\n"
                    "Hint: 'highest' (default: float32 products stay exact on GPU and TPU), "
                    "'split_tf32'/'split_bf16' (float32-accurate sums of TF32/bfloat16 "
                    "passes on tensor cores) or None (JAX's default precision: faster, but "
                    "TF32 on recent GPUs)."
                ) from err
        if self.method not in METHODS:
            raise DeepLiftError(
                f"rule={self.method!r} is not one of {tuple(m for m in METHODS if m)}.\n"
                "Hint: 'rescale' is the paper's default; 'reveal_cancel' is Shrikumar et al. 2017."
            )
        if self.max_rule not in MAX_RULES:
            raise DeepLiftError(
                f"max_rule={self.max_rule!r} is not one of {MAX_RULES}.\n"
                "Hint: 'cross' is exact and the default."
            )
        if self.fallback not in FALLBACKS:
            raise DeepLiftError(
                f"fallback={self.fallback!r} is not one of {FALLBACKS}.\n"
                "Hint: leave it unset to get an error for unsupported primitives."
            )


@dataclasses.dataclass
class Context:
    """What a rule may need besides its operands: the options and the equation."""

    options: Options
    eqn: Any = None
    account: bool = False
    """Whether this equation's float results get accounted differences (``_pair.Accounts``)."""
    method: str | None = None
    """The rule set chosen for this equation (``Options.rules``); None: ``options.method``."""

    def error(self, what: str, hint: str) -> DeepLiftError:
        return DeepLiftError(
            f"{what}\n    {eqn_str(self.eqn)}{at_user_line(self.eqn)}\nHint: {hint}"
        )

    def bind(self, prim: Any, vals: Sequence[Any], params: dict[str, Any], float_out: bool):
        """Apply ``prim`` as the interpreter would (its rule when an operand is a pair)."""
        if not any(isinstance(v, Pair) for v in vals):
            return prim.bind(*vals, **params)
        return _apply(self, prim, list(vals), params, float_out)


RULE_KINDS: dict[Callable[..., Any], str] = {}
"""Rule functions whose multipliers the accounted-difference analysis can read off, by
kind: ``"bilinear"`` (linear in one varying operand), ``"quotient"`` (linear in a varying
numerator), ``"rescale"`` (``partial(rule, prim, smooth)``: the secant). Filled where the
rules are defined, so the interpreter imports no rule family."""


def eval_jaxpr(
    jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], options: Options
) -> list[Any]:
    """Evaluate an open jaxpr on arguments that may be :class:`Pair` values."""
    if options.accounts is None:  # the outermost call decides for the nested ones
        rules = options.rules
        methods = rules.methods(EXACT_METHODS) if rules is not None else {options.method}
        eqns = _discrete.accounted_equations(jaxpr) if "rescale" in methods else frozenset()
        use = RuleUse() if rules is not None else None
        options = dataclasses.replace(options, accounts=Accounts(eqns), rule_use=use)
        outs = eval_jaxpr(jaxpr, consts, args, options)
        if use is not None:
            use.check(rules)
        return outs
    acc = options.accounts

    def step(eqn: Any, invals: list[Any]) -> Sequence[Any]:
        account = acc.on and id(eqn) in acc.equations
        if options.precision is not None and eqn.primitive in _PRECISION_PRIMS:
            eqn = _with_precision(eqn, options.precision)
        with _compat.equation_context(eqn):
            if any(isinstance(v, Pair) for v in invals):
                outs = apply_rule(eqn, invals, options, account)
            else:  # weights arithmetic: computed now where the weights are known
                with jax.ensure_compile_time_eval():
                    outs = eqn.primitive.bind(*invals, **_compat.bind_params(eqn))
        return outs if eqn.primitive.multiple_results else [outs]

    return walk(jaxpr, consts, args, step)


_PRECISION_PRIMS = (jax.lax.dot_general_p, jax.lax.conv_general_dilated_p)


def _with_precision(eqn: Any, precision: Any) -> Any:
    """The equation with ``precision`` where it left the choice to JAX (``None``).

    JAX's default lets GPUs run float32 products in TF32 (10-bit mantissa) and TPUs in
    bfloat16 passes; summation to delta then holds only to about 1e-3. A split mode binds
    the product as a float32-accurate sum of such passes (:mod:`deepliftjax._precision`).
    """
    if eqn.params.get("precision", 0) is not None:
        return eqn
    if isinstance(precision, str):  # a split mode: "split_tf32", "split_bf16"
        return _precision.split_eqn(eqn, precision)
    return eqn.replace(params={**eqn.params, "precision": (precision, precision)})


def eval_closed(closed: Any, args: Sequence[Any], options: Options) -> list[Any]:
    jaxpr, consts = _compat.open_jaxpr(closed)
    return eval_jaxpr(jaxpr, consts, args, options)


def apply_rule(eqn: Any, invals: list[Any], options: Options, account: bool = False) -> Any:
    ctx = Context(options, eqn, account)
    params = eqn.params
    if eqn.primitive not in CALLS:
        params = _compat.bind_params(eqn)
    if options.rules is None:
        return _apply(ctx, eqn.primitive, invals, params, _is_float_output(eqn))
    ctx.method = options.rules.choose(eqn.primitive, _inherited(invals), options.rule_use)
    out = _apply(ctx, eqn.primitive, invals, params, _is_float_output(eqn))
    for o in out if isinstance(out, list | tuple) else [out]:
        if isinstance(o, Pair):
            o.rule = ctx.method
    return out


def _inherited(invals: Sequence[Any]) -> str | None:
    """The rule set that computed the float pair operands, where they agree."""
    found = {v.rule for v in invals if isinstance(v, Pair) and v.is_float}
    return found.pop() if len(found) == 1 else None


def _apply(ctx: Context, prim: Any, invals: list[Any], params: dict, float_out: bool) -> Any:
    options = ctx.options
    method = ctx.method or options.method
    exact = method in EXACT_METHODS
    if prim not in CALLS:
        if not float_out:
            if exact:
                return _discrete.discrete_output_rule(ctx, prim, invals, params)
            return bind_both(prim, invals, params)
        if exact and any(isinstance(v, Pair) and not v.is_float for v in invals):

            def evaluate(args):
                return ctx.bind(prim, args, params, float_out)

            return _discrete.discrete_operand_rule(ctx, prim, invals, params, evaluate)
    dispatch = METHODS[method]
    rule = dispatch(prim) if dispatch is not None else RULES.get(prim)
    if rule is None:
        if options.fallback == "gradient":
            warnings.warn(
                f"deepliftjax: no DeepLIFT rule for '{prim.name}'; using its gradient "
                f"(fallback='gradient'), so summation to delta does not hold here:\n"
                f"    {eqn_str(ctx.eqn)}",
                stacklevel=4,
            )
            return bind_both(prim, invals, params)
        raise unsupported_primitive(ctx.eqn)
    out = rule(ctx, *invals, **params)
    if exact and isinstance(out, Pair) and out.s is None:
        if prim in ELEMENTWISE:
            _record_provenance(prim, out, invals, params)
        elif _discrete._data_positions(prim, len(invals)) is not None:
            out.s = _mapped_provenance(prim, invals, params, _discrete.PROVENANCE_DEPTH)
    if ctx.account and method == "rescale" and not options.accounts.paused and prim not in CALLS:
        _account(ctx, prim, rule, invals, params, out)
    return out


def _record_provenance(prim: Any, out: Pair, invals: Sequence[Any], params: dict) -> None:
    """``out.s``: the single float pair operand ``out`` was computed from elementwise; with
    several (``x + log(x)``), the same map of their provenances (:func:`_mapped_provenance`)."""
    pairs = [v for v in invals if isinstance(v, Pair)]
    if len(pairs) > 1:  # operands that broadcast (x - x[0], x - max(x)): the same map
        if prim in _MAPPABLE and all(
            _broadcasts_to(jnp.shape(v.x), jnp.shape(out.x)) for v in pairs
        ):
            out.s = _mapped_provenance(prim, invals, params, _discrete.PROVENANCE_DEPTH)
        return
    if len(pairs) != 1 or not pairs[0].is_float or jnp.shape(pairs[0].x) != jnp.shape(out.x):
        return
    if prim in DOMAIN_EDGE or pairs[0].s is not None:
        out.s = pairs[0]


_MAPPABLE = frozenset(
    _compat.primitive(n) for n in ("add_p", "sub_p", "max_p", "min_p", "select_n_p")
)
"""Maps of several operands whose provenance is the same map of theirs: derivatives 0 or
±1 everywhere, so a provenance that is infinite or undefined where it is not used passes
no NaN back (``mul``, ``div``, ``sqrt`` of provenances would: 0 · inf)."""


def _broadcasts_to(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    try:
        return jnp.broadcast_shapes(shape, out) == tuple(out)
    except ValueError:
        return False


def _mapped_provenance(prim: Any, invals: Sequence[Any], params: dict, depth: int) -> Any:
    """The provenance of a map that moves values (concatenate, reshape, gather, scatter and
    dynamic_update_slice of constant indices, ...) or of
    an elementwise map of several varying operands (``x + log(x)``): the same map of its
    data operands' provenances, and so on back ``depth`` steps. A moved operand without one
    stands for itself (its elements sit elsewhere); in an elementwise map it is held at its
    value at the input, so the jump is credited to what produced the infinite change (in
    ``exp(log(relu(x)) - x[0])``, to ``relu(x)``, not linearly to ``x[0]`` as well).
    ``max(concatenate([log(x[:2]), x[2:]]))`` and ``max(x + log(x))`` then credit an
    element arriving from ``-inf`` through ``x``, as for ``maximum``.
    None where no data operand has a provenance, or an index operand varies."""
    moved = _discrete._data_positions(prim, len(invals))
    data = range(len(invals)) if moved is None else moved  # elementwise: every operand
    if depth <= 0 or any(isinstance(v, Pair) for i, v in enumerate(invals) if i not in data):
        return None
    pairs = [invals[i] for i in data if isinstance(invals[i], Pair)]
    if not any(_has_provenance(v) for v in pairs):
        return None
    parents = [
        v.s
        if i in data and _has_provenance(v)
        else jax.lax.stop_gradient(v.x)
        if moved is None and isinstance(v, Pair)
        else v
        for i, v in enumerate(invals)
    ]
    out = bind_both(prim, parents, params)
    if not isinstance(out, Pair) or not out.is_float:
        return None
    out.s = _mapped_provenance(prim, parents, params, depth - 1)
    return out


def _has_provenance(v: Any) -> bool:
    """A float pair whose provenance (``_discrete._provenance``) has its dtype too, so the
    same map can be bound on it."""
    return (
        isinstance(v, Pair)
        and v.is_float
        and _discrete._provenance(v)
        and jnp.result_type(v.s.x) == jnp.result_type(v.x)
    )


# ---- accounted differences, carried forward ---------------------------------------------


def _account(ctx: Context, prim: Any, rule: Rule, invals: list[Any], params: dict, out: Any):
    """Record the accounted difference ``Σ_k M_k D_k`` of each float result that is not
    exact, ``M_k`` being the rule's multipliers for operand k and ``D_k`` the operand's
    accounted difference: the derivative's tangent for linear rules, the multipliers times
    the differences for elementwise rules and reductions. Elsewhere (products of two
    varying matrices, pooling windows, sorting) it stays unknown and switch scores fall
    back to the float difference, guarded against near ties (``_discrete.NEAR_TIE``)."""
    acc = ctx.options.accounts
    outs = list(out) if isinstance(out, list | tuple) else [out]
    targets = [k for k, o in enumerate(outs) if isinstance(o, Pair) and o.is_float and not o.exact]
    pos = [i for i, v in enumerate(invals) if isinstance(v, Pair) and v.is_float]
    if not targets or not pos:
        return
    diffs = [carried(invals[i], acc) for i in pos]
    if any(d is None for d in diffs):
        return
    if _linear(prim, rule, pos):
        found = _tangents(prim, invals, params, pos, diffs)
    elif (smooth := _rescale(rule, pos)) is not None:
        found = [_through_secant(smooth, invals, pos[0], diffs[0], outs[0])]
    elif prim in ELEMENTWISE or (len(outs) == 1 and "axes" in params):
        found = [_through_multipliers(ctx, rule, invals, params, pos, diffs)]
    else:
        return
    for k in targets:
        d, o = found[k], outs[k]
        if d is not None and jnp.shape(d) == jnp.shape(o.x):
            acc.put(o, jnp.asarray(d, jnp.result_type(o.x)))


def _linear(prim: Any, rule: Rule, pos: Sequence[int]) -> bool:
    """Whether the rule's multipliers are the primitive's derivative (a linear map of the
    varying operands): ``linear_rule``, and products and quotients with one varying
    operand (the numerator)."""
    func = getattr(rule, "func", rule)
    if func is _rulekit.linear_rule:
        return True
    kind = RULE_KINDS.get(func)
    if kind == "bilinear":
        return len(pos) == 1
    return kind == "quotient" and list(pos) == [0]


def _rescale(rule: Rule, pos: Sequence[int]) -> bool | None:
    """``smooth`` of a Rescale rule with one varying operand (None: another rule)."""
    if RULE_KINDS.get(getattr(rule, "func", None)) == "rescale" and len(pos) == 1:
        return bool(rule.args[1])
    return None


def _through_secant(smooth: bool, invals: list[Any], i: int, diff: Any, out: Pair) -> Any:
    """``m D`` for Rescale (``_rulekit.secant``) where its multiplier is the secant
    ``Δy / Δx``; NaN (not known) where the step is too small for it, where the rule
    takes the mean derivative instead."""
    v = invals[i]
    x, dx = jax.lax.stop_gradient(v.x), jax.lax.stop_gradient(v.x) - v.r
    dy = jax.lax.stop_gradient(out.x) - out.r
    if smooth:
        tol = jnp.sqrt(jnp.finfo(jnp.result_type(dx)).eps).astype(dx.dtype)
        tiny = jnp.abs(dx) <= tol * jnp.maximum(jnp.abs(x), jnp.abs(v.r))
    else:
        tiny = dx == 0
    nan = jnp.full((), jnp.nan, jnp.result_type(dy))
    d = jnp.where(tiny, nan, dy * (diff / jnp.where(tiny, 1, dx)))
    return jnp.where(diff == 0, jnp.zeros((), d.dtype), d)


def _tangents(prim: Any, invals: list[Any], params: dict, pos: Sequence[int], diffs: list):
    """The derivative of ``prim`` in its varying operands applied to their differences."""
    base = [v.x if isinstance(v, Pair) else v for v in invals]

    def f(*us: Any) -> Any:
        args = list(base)
        for i, u in zip(pos, us, strict=True):
            args[i] = u
        return prim.bind(*args, **params)

    primals = [jax.lax.stop_gradient(invals[i].x) for i in pos]
    tangents = [jnp.asarray(d, jnp.result_type(p)) for d, p in zip(diffs, primals, strict=True)]
    _, out = jax.jvp(f, primals, tangents)
    return list(out) if prim.multiple_results else [out]


def _through_multipliers(
    ctx: Context, rule: Rule, invals: list[Any], params: dict, pos: Sequence[int], diffs: list
) -> Any:
    """``Σ_k m_k D_k`` for an elementwise rule (or a reduction over ``axes``, summed there):
    the multipliers ``m_k`` are the rule's VJP of ones at the same operands."""
    acc = ctx.options.accounts

    def fx(*us: Any) -> Any:
        vals = list(invals)
        for i, u in zip(pos, us, strict=True):
            v = invals[i]
            vals[i] = Pair(u, v.r, v.s, v.exact)
        return rule(ctx, *vals, **params).x

    acc.paused += 1  # the rule traced again: its inner results are not recorded
    try:
        y, pull = jax.vjp(fx, *[jax.lax.stop_gradient(invals[i].x) for i in pos])
        ms = pull(jnp.ones_like(y))
    finally:
        acc.paused -= 1
    total = None
    for m, d in zip(ms, diffs, strict=True):
        if jnp.shape(m) != jnp.shape(d):
            return None
        term = jnp.where(d == 0, jnp.zeros((), m.dtype), m * d)  # a still operand: nothing
        total = term if total is None else total + term
    if "axes" in params and jnp.shape(total) != jnp.shape(y):
        total = jnp.sum(total, axis=tuple(params["axes"]))
    return total if jnp.shape(total) == jnp.shape(y) else None


def _is_float_output(eqn: Any) -> bool:
    return any(
        jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars if hasattr(v.aval, "dtype")
    )
