"""Split-precision products: float32-accurate ``dot_general``/``conv`` from low-precision passes.

``deeplift(..., precision="split_tf32")`` (or ``"split_bf16"``) binds every float32 product
that leaves precision to JAX as a sum of low-precision products with float32 accumulation.
Each operand is split into parts that a TF32 (10-bit mantissa) or bfloat16 (7-bit) unit
holds exactly: ``a = a0 + a1 (+ a2)``, ``a0 = round(a)``, ``a1 = round(a - a0)``, ... and

* ``split_tf32``: ``a·b ≈ a0·b0 + a0·b1 + a1·b0`` (3 passes, ~22 significant bits);
* ``split_bf16``: ``a·b ≈ a0·b0 + a0·b1 + a1·b0 + a0·b2 + a1·b1 + a2·b0`` (6 passes).

Two implementations:

* ``dot_general`` on a backend that accepts JAX's algorithm preset (``TF32_TF32_F32_X3``,
  ``BF16_BF16_F32_X6``; see :func:`deepliftjax._compat.dot_algorithm_supported`) is bound
  with the preset as its ``precision``; JAX's transposes keep it, so the backward passes
  are split too, and XLA runs the passes natively.
* Everything else (convolutions: JAX ignores presets there; ``dot_general`` on CPU) is bound
  as the primitive ``split_dot_general`` / ``split_conv_general_dilated``. Its lowering is the
  split written with ``lax`` ops, each pass at ``Precision.DEFAULT`` (TF32 or bfloat16 on
  the accelerator); its JVP, transposes and batching rule are JAX's own for the original
  primitive, traced and re-bound as split primitives, so forward, reference and the rules'
  backward passes (and gradients of them) all stay split. A plain ``jnp`` split would not
  do: the transpose of ``x ↦ split(x, W)`` multiplies the cotangent at DEFAULT precision,
  unsplit (about 1e-3 on a TF32 GPU).

On CPU DEFAULT already is float32, so the split only costs time there; use ``"highest"``.
TPUs have no TF32 (a DEFAULT pass is one bfloat16 product): ``split_tf32`` runs as
``split_bf16`` there.
:func:`simulate` rounds each pass's operands as the accelerator would, for tests on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive

from deepliftjax import _compat


@dataclasses.dataclass(frozen=True)
class SplitMode:
    """A split: parts of ``mantissa_bits`` each, products of parts ``terms`` (i, j)."""

    name: str
    mantissa_bits: int
    terms: tuple[tuple[int, int], ...]
    preset: str | None  # jax.lax.DotAlgorithmPreset member for dot_general, when supported

    @property
    def n_parts(self) -> int:
        return 1 + max(max(t) for t in self.terms)


SPLIT_MODES: dict[str, SplitMode] = {
    "split_tf32": SplitMode("split_tf32", 10, ((0, 0), (0, 1), (1, 0)), "TF32_TF32_F32_X3"),
    "split_bf16": SplitMode(
        "split_bf16", 7, ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)), "BF16_BF16_F32_X6"
    ),
}
"""The ``precision=`` values that split products, by name."""

_DEFAULT = (lax.Precision.DEFAULT, lax.Precision.DEFAULT)
_HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
_SIMULATE: list[int] = []  # mantissa bits each pass rounds its operands to (tests on CPU)
_PORTABLE: list[bool] = []


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """Trace every split product as the split primitive, even where a preset would do."""
    _PORTABLE.append(True)
    try:
        yield
    finally:
        _PORTABLE.pop()


@contextlib.contextmanager
def simulate(mantissa_bits: int) -> Iterator[None]:
    """Trace split products as an accelerator computes them, on any backend (for tests).

    Inside, every pass rounds its operands to ``mantissa_bits`` (10: TF32, 7: bfloat16)
    before its product, and ``dot_general`` takes the portable split (no preset). Applies at
    trace time (the split equations carry it as ``simulate``): trace inside the block.
    """
    _SIMULATE.append(mantissa_bits)
    try:
        yield
    finally:
        _SIMULATE.pop()


def _round(v: jax.Array, mantissa_bits: int) -> jax.Array:
    return lax.reduce_precision(v, exponent_bits=8, mantissa_bits=mantissa_bits)


def _parts(v: jax.Array, mode: SplitMode) -> list[jax.Array]:
    """``v = v0 + v1 + ...``: every part but the last rounded to the mode's mantissa."""
    parts, rest = [], v
    for _ in range(mode.n_parts - 1):
        hi = _round(rest, mode.mantissa_bits)
        parts.append(hi)
        rest = rest - hi
    return [*parts, rest]


def _split_impl(
    orig: Primitive, a: jax.Array, b: jax.Array, *, split: str, simulate: int | None, **params
) -> jax.Array:
    """``orig(a, b)`` as the mode's sum of DEFAULT-precision passes (smallest terms first)."""
    mode = SPLIT_MODES[split]
    pa, pb = _parts(a, mode), _parts(b, mode)
    if simulate is not None:  # the accelerator's rounding of each pass's operands
        pa, pb = [_round(p, simulate) for p in pa], [_round(p, simulate) for p in pb]
    params = {**params, "precision": _DEFAULT}
    out = None
    for i, j in sorted(mode.terms, key=lambda t: -sum(t)):
        term = orig.bind(pa[i], pb[j], **params)
        out = term if out is None else out + term
    return out


def _substituted(fn: Any, *args: Any, rebind: Any) -> Any:
    """``fn(*args)`` traced, its top-level equations bound as ``rebind(eqn)`` says."""
    from deepliftjax._walk import walk

    closed = jax.make_jaxpr(fn)(*args)
    jaxpr, consts = _compat.open_jaxpr(closed)

    def step(eqn: Any, invals: list[Any]) -> Any:
        eqn = rebind(eqn)
        outs = eqn.primitive.bind(*invals, **_compat.bind_params(eqn))
        return outs if eqn.primitive.multiple_results else [outs]

    outs = walk(jaxpr, consts, jax.tree_util.tree_leaves(args), step)
    return outs[0] if len(outs) == 1 else outs


def _to_split(split: dict[str, Any]) -> Any:
    """``rebind`` for :func:`_substituted`: every dot_general/conv as the split primitive."""

    def rebind(eqn: Any) -> Any:
        if eqn.primitive not in SPLIT_PRIMS:
            return eqn
        return eqn.replace(primitive=SPLIT_PRIMS[eqn.primitive], params={**eqn.params, **split})

    return rebind


def split_products(fn: Any, name: str) -> Any:
    """``fn`` with the float32 dot_general/conv equations of its top level split as ``name``.

    For benchmarks (the cost of the split alone, e.g. a split gradient x input); nested
    jaxprs (``jit``, ``scan``) keep their products as they are. Returns one output leaf, or
    a list of them.
    """

    def rebind(eqn: Any) -> Any:
        if eqn.primitive in SPLIT_PRIMS and eqn.params.get("precision", 0) is None:
            return split_eqn(eqn, name)
        return eqn

    return functools.wraps(fn)(lambda *args: _substituted(fn, *args, rebind=rebind))


def _pop_split(params: dict[str, Any]) -> dict[str, Any]:
    return {"split": params.pop("split"), "simulate": params.pop("simulate")}


def _transpose(orig: Primitive, which: int, ct: Any, x: Any, y: Any, **params: Any) -> Any:
    """JAX's transpose of ``orig`` in operand ``which``, its products split."""
    split = _pop_split(params)
    undefined = x if which == 0 else y
    aval = jax.ShapeDtypeStruct(undefined.aval.shape, undefined.aval.dtype)
    known = y if which == 0 else x

    def transpose(ct_, known_):
        def lin(u):
            return orig.bind(*((u, known_) if which == 0 else (known_, u)), **params)

        return jax.linear_transpose(lin, aval)(ct_)[0]

    return _substituted(transpose, ct, known, rebind=_to_split(split))


def _batch(orig: Primitive, args: Any, dims: Any, **params: Any) -> tuple[Any, int]:
    split = _pop_split(params)
    axes = tuple(d if isinstance(d, int) else None for d in dims)  # not mapped: None
    fn = jax.vmap(functools.partial(orig.bind, **params), in_axes=axes)
    return _substituted(fn, *args, rebind=_to_split(split)), 0


def _make_split_primitive(orig: Primitive) -> Primitive:
    p = Primitive(f"split_{orig.name}")

    def impl(a, b, **params):
        return _split_impl(orig, a, b, **params)

    def abstract_eval(a, b, *, split, simulate, **params):
        return _compat.abstract_eval(orig, a, b, **params)

    p.def_impl(impl)
    p.def_abstract_eval(abstract_eval)
    _compat.register_lowering_of(p, impl)
    _compat.register_bilinear(
        p, functools.partial(_transpose, orig, 0), functools.partial(_transpose, orig, 1)
    )
    _compat.register_batcher(p, functools.partial(_batch, orig))
    return p


SPLIT_PRIMS: dict[Primitive, Primitive] = {
    orig: _make_split_primitive(orig) for orig in (lax.dot_general_p, lax.conv_general_dilated_p)
}
"""Original primitive -> its split twin (params: the original's, ``split`` and ``simulate``)."""

# The split primitives get the rules of the primitives they replace in every rule set that
# has its own: the default table (_rules_elementwise) and RevealCancel (_rulesets) register
# them beside dot_general/conv, so this module imports no rule module.


def split_eqn(eqn: Any, name: str) -> Any:
    """``eqn`` (a dot_general/conv with precision None) bound with the split ``name``.

    float32 operands: the algorithm preset (dot_general, where the backend takes it) or the
    split primitive. Other dtypes (float64, bfloat16, integers): ``HIGHEST``, as by default.
    """
    if name == "split_tf32" and jax.default_backend() == "tpu" and not _SIMULATE:
        name = "split_bf16"  # TPUs have no TF32: their DEFAULT pass is one bfloat16 product
    mode = SPLIT_MODES[name]
    if not all(jnp.dtype(getattr(v.aval, "dtype", None)) == jnp.float32 for v in eqn.invars):
        return eqn.replace(params={**eqn.params, "precision": _HIGHEST})
    if (
        eqn.primitive is lax.dot_general_p
        and mode.preset is not None
        and not (_SIMULATE or _PORTABLE)
        and _compat.dot_algorithm_supported(mode.preset)
    ):
        preset = getattr(lax.DotAlgorithmPreset, mode.preset)
        return eqn.replace(params={**eqn.params, "precision": preset})
    return eqn.replace(
        primitive=SPLIT_PRIMS[eqn.primitive],
        params={**eqn.params, "split": name, "simulate": _SIMULATE[-1] if _SIMULATE else None},
    )
