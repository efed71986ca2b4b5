"""Every JAX-version difference deepliftjax depends on, in one place.

Each shim names the JAX version it serves. Code elsewhere never inspects
``jax.__version__`` or private JAX modules directly.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import jax
import jax.extend.core as jex_core
from jax import lax
from jax.extend.core import primitives as _prims

JAX_VERSION: tuple[int, ...] = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())

Literal = jex_core.Literal
Primitive = jex_core.Primitive
DropVar = jex_core.DropVar


OPTIONAL_PRIMITIVES: dict[str, str] = {
    "expand_dims_p": "jax <= 0.10 has none (jnp.expand_dims lowers to broadcast_in_dim)",
}
"""Primitives some supported JAX versions lack, each with the versions it serves."""


def primitive(name: str) -> Primitive | None:
    """The primitive object ``name_p`` from ``jax.extend.core.primitives`` or ``jax.lax``.

    Primitives come and go between releases. A name in :data:`OPTIONAL_PRIMITIVES` that
    this JAX lacks gives ``None`` (its rule is not registered); any other missing name is
    an import-time error, so a rule never silently disappears.
    """
    found = getattr(_prims, name, None) or getattr(lax, name, None)
    if found is None and name not in OPTIONAL_PRIMITIVES:
        raise ImportError(
            f"deepliftjax: jax {jax.__version__} has no primitive {name!r}. Add it to "
            "deepliftjax._compat.OPTIONAL_PRIMITIVES with the versions that lack it, or "
            "port the rule to its replacement."
        )
    return found


def open_jaxpr(j: Any) -> tuple[Any, list[Any]]:
    """Split a (closed) jaxpr parameter into ``(jaxpr, consts)``.

    jax <= 0.10: ``ClosedJaxpr`` wraps ``Jaxpr`` (``.jaxpr``, ``.consts``); a bare
    ``Jaxpr`` (remat's ``jaxpr`` parameter) has no consts.
    jax >= 0.11: ``ClosedJaxpr`` and ``Jaxpr`` merged; the merged object carries its
    consts itself (``.consts``) and has no ``.jaxpr`` wrapper.
    """
    inner = getattr(j, "jaxpr", None)
    if inner is not None and hasattr(j, "consts") and hasattr(inner, "eqns"):
        return inner, list(j.consts)
    return j, list(getattr(j, "consts", ()) or ())


def bind_params(eqn: Any) -> dict[str, Any]:
    """Keyword parameters to re-bind an equation's primitive, as ``eval_jaxpr`` does.

    jax >= 0.7 (incl. 0.10): ``get_bind_params`` returns one dict (subfunctions inside it).
    older jax: it returned ``(subfuns, params)``; the subfunctions went first, positionally.
    """
    out = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(out, tuple):  # jax < 0.7
        subfuns, params = out
        if subfuns:
            raise NotImplementedError("positional subfunctions need jax >= 0.7")
        return params
    return out


def scan_counts(params: dict[str, Any]) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a scan equation.

    jax <= 0.10: the parameters ``num_consts`` and ``num_carry``.
    jax >= 0.11: both replaced by ``ft_in``, a flat-tree tuple whose ``unpack()`` gives the
    groups (consts, carry, xs) of the equation's inputs; ``ft_out`` groups (carry, ys).
    """
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    ft_in = params["ft_in"]  # jax >= 0.11
    groups = list(ft_in.unpack() if hasattr(ft_in, "unpack") else ft_in)
    sizes = [g if isinstance(g, int) else len(g) for g in groups]
    return sizes[0], sizes[1]


# ---- split-precision products (deepliftjax._precision) ------------------------------------


def abstract_eval(prim: Primitive, *avals: Any, **params: Any) -> Any:
    """The output aval of ``prim`` at ``avals``.

    jax 0.10 and 0.11: ``Primitive.abstract_eval`` returns ``(aval, effects)`` for the
    standard (effect-free) primitives; a bare aval is taken as it is.
    """
    out = prim.abstract_eval(*avals, **params)
    return out[0] if isinstance(out, tuple) else out


def register_lowering_of(prim: Primitive, impl: Any) -> None:
    """Lower ``prim`` as the traced ``impl`` (one result).

    jax 0.10 and 0.11: ``jax.interpreters.mlir.register_lowering`` with ``lower_fun``.
    """
    from jax.interpreters import mlir

    mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))


def register_batcher(prim: Primitive, rule: Any) -> None:
    """``vmap`` rule ``rule(args, dims, **params) -> (out, out_dim)`` for a new primitive.

    jax 0.10 (and 0.11, as far as known): ``jax.interpreters.batching.primitive_batchers``.
    Where it is gone, nothing is registered: import still works, and only ``vmap`` of a
    split product fails, naming the primitive.
    """
    from jax.interpreters import batching

    batchers = getattr(batching, "primitive_batchers", None)
    if batchers is not None:
        batchers[prim] = rule


def register_bilinear(prim: Primitive, lhs_transpose: Any, rhs_transpose: Any) -> None:
    """JVP and transposes of a new bilinear primitive.

    jax 0.10 (and 0.11, as far as known): ``jax.interpreters.ad.defbilinear``. Where it is
    gone, nothing is registered: import still works, and only differentiating a split
    product fails, naming the primitive.
    """
    from jax.interpreters import ad

    defbilinear = getattr(ad, "defbilinear", None)
    if defbilinear is not None:
        defbilinear(prim, lhs_transpose, rhs_transpose)


_DOT_ALGORITHM_SUPPORT: dict[tuple[str, str], bool] = {}


_PRESET_PLATFORMS = {"gpu", "cuda", "rocm", "tpu"}


def dot_algorithm_supported(preset: str) -> bool:
    """Whether the default backend compiles ``dot_general`` with ``DotAlgorithmPreset.<preset>``.

    jax >= 0.4.36 (incl. 0.10, 0.11) has ``lax.DotAlgorithmPreset``; which presets a backend
    takes varies. jax 0.10 CPU: never (no TF32 presets; the BF16 ones compile for some
    shapes only, e.g. not for a vector product, and then run in float32 anyway). GPUs
    (Ampere on): TF32_TF32_F32_X3 and BF16_BF16_F32_X6; TPUs: the BF16 ones. Probed once
    per backend by compiling a small product.
    """
    backend = jax.default_backend()
    key = (preset, backend)
    if key not in _DOT_ALGORITHM_SUPPORT:
        algo = getattr(getattr(lax, "DotAlgorithmPreset", None), preset, None)
        ok = algo is not None and backend in _PRESET_PLATFORMS
        if ok:
            a = jax.ShapeDtypeStruct((16, 16), jax.numpy.float32)
            try:
                jax.jit(lambda u, v: lax.dot(u, v, precision=algo)).lower(a, a).compile()
            except Exception:  # noqa: BLE001 - any refusal (lowering or compiling) means no
                ok = False
        _DOT_ALGORITHM_SUPPORT[key] = ok
    return _DOT_ALGORITHM_SUPPORT[key]


# ---- the summation guard's primitive (deepliftjax._guard) -------------------------------


def define_report_primitive(name: str, impl: Any, lowered: Any) -> Primitive:
    """A primitive with no outputs and JAX's debug effect, for a report to the host.

    ``impl(*args, **params)`` runs on concrete values (eager calls); ``lowered(*args,
    **params)`` is traced at lowering time (under ``jit``) and may call
    ``jax.debug.callback``. The debug effect keeps the equation alive through dead-code
    elimination and is allowed in ``scan``, ``cond``, ``checkpoint`` and custom
    derivatives, as for ``jax.debug.callback`` itself. Under ``vmap`` the primitive is
    bound once with the mapped axis moved to the front (``jax.debug.callback`` unrolls its
    callback once per example instead); under differentiation it reports on the primal
    values and has no tangent.

    jax 0.10 and 0.11: the debug effect object is only in ``jax._src.debugging``;
    ``jax.interpreters.{ad,batching,mlir}`` hold the registries.
    """
    from jax._src.debugging import debug_effect
    from jax.interpreters import ad, batching, mlir

    prim = Primitive(name)
    prim.multiple_results = True
    prim.def_impl(lambda *args, **params: impl(*args, **params) or [])
    prim.def_effectful_abstract_eval(lambda *avals, **params: ([], {debug_effect}))

    def batch(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        moved = [
            jax.numpy.broadcast_to(a, (size, *a.shape))
            if d is None
            else jax.numpy.moveaxis(a, d, 0)
            for a, d in zip(args, dims, strict=True)
        ]
        return prim.bind(*moved, **params), []

    def jvp(primals, tangents, **params):
        return prim.bind(*primals, **params), []

    batching.primitive_batchers[prim] = batch
    ad.primitive_jvps[prim] = jvp
    mlir.register_lowering(prim, mlir.lower_fun(lowered, multiple_results=True), cacheable=False)
    return prim


# ---- source locations (jax 0.10-0.11: only jax._src.source_info_util offers them) --------

_MISSING: set[str] = set()


def missing(api: str, loses: str, err: BaseException) -> None:
    """Warn once per ``api`` that this JAX lacks it, and what is lost without it (the
    location of the user's line in ``loses``); nothing else changes."""
    if api in _MISSING:
        return
    _MISSING.add(api)
    warnings.warn(
        f"deepliftjax: this JAX ({jax.__version__}) has no usable {api} "
        f"({type(err).__name__}: {err}); {loses} will not name the line of your code. "
        "Scores are unaffected; please report it with your JAX version.",
        RuntimeWarning,
        stacklevel=3,
    )


def equation_context(eqn: Any) -> Any:
    """A context binding under ``eqn``'s source info and equation context, as
    ``jax.core.eval_jaxpr`` does, so what the interpreter binds points at the user's line.

    jax 0.10-0.11: ``eqn.source_info`` (traceback and name stack) and ``eqn.ctx.manager``;
    the context manager for them lives in ``jax._src.source_info_util``.
    """
    stack = contextlib.ExitStack()
    try:
        from jax._src import source_info_util as siu

        info = eqn.source_info
        names = siu.current_name_stack() + info.name_stack
        tb = info.traceback
        if tb is None or siu.user_frame(tb) is None:  # inside jnp's own jit: keep the caller's
            tb = siu.current().traceback
        stack.enter_context(siu.user_context(tb, name_stack=names))
    except Exception as err:  # noqa: BLE001 - a newer JAX without this API: no location
        missing("jax._src.source_info_util.user_context", "the interpreter's binds", err)
    manager = getattr(getattr(eqn, "ctx", None), "manager", None)
    if manager is not None:
        stack.enter_context(manager)
    return stack


def current_scope() -> tuple[str, ...]:
    """The ``jax.named_scope`` path the interpreter is binding under (Flax modules' names:
    ``("CNN", "Dense_0")``), transforms (``jvp``, ``vmap``) left out.

    jax 0.10-0.11: ``source_info_util.current_name_stack()`` holds ``Scope`` and
    ``Transform`` entries; :func:`equation_context` has already added the equation's own.
    """
    try:
        from jax._src import source_info_util as siu

        return tuple(e.name for e in siu.current_name_stack().stack if isinstance(e, siu.Scope))
    except Exception as err:  # noqa: BLE001 - a newer JAX without this API: no scopes
        missing("jax._src.source_info_util.current_name_stack", "rules chosen by scope", err)
        return ()


_CONVERTERS = ("/torchax/", "/torch/", "/keras/")
"""Libraries that turn a PyTorch or Keras model into JAX calls (``deepliftjax.torch``,
``deepliftjax.keras``): JAX counts their frames as user code, the user's model line is
further out."""


def _model_frame(frames: Any) -> Any:
    """The innermost frame outside the converters, else the innermost user frame."""
    first = None
    for f in frames:
        first = f if first is None else first
        if not any(c in f.file_name.replace("\\", "/") for c in _CONVERTERS):
            return f
    return first


def user_location(eqn: Any) -> str | None:
    """``file:line (function)`` of the user's code that made ``eqn``, if known.

    Equations inside a cached ``jit`` (``jnp.sort``'s) carry no traceback; the enclosing
    equation's, which the interpreter binds under (:func:`equation_context`), is used.
    Frames of torchax/torch/keras are skipped, so a converted model names the line of the
    user's ``forward`` or ``call``. jax 0.10-0.11: ``jax._src.source_info_util.user_frames``
    and ``current``.
    """
    try:
        from jax._src import source_info_util as siu

        frame = None
        for tb in (eqn.source_info.traceback, siu.current().traceback):
            frame = _model_frame(siu.user_frames(tb)) if tb is not None else None
            if frame is not None:
                break
    except Exception as err:  # noqa: BLE001 - a newer JAX without this API
        missing("jax._src.source_info_util.user_frames", "error messages", err)
        return None
    if frame is None:
        return None
    return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"


# ---- job identity (deepliftjax._identity): jaxprs held in equation parameters ---------------


def is_jaxpr(value: Any) -> bool:
    """Whether an equation parameter's value is a jaxpr (to walk into for a job's identity).

    jax <= 0.10: ``ClosedJaxpr`` (``jit``, ``scan``, ``cond``, ``while``, custom
    derivatives) or a bare ``Jaxpr`` (``checkpoint``/remat, ``shard_map``, scatter's
    ``update_jaxpr``). jax >= 0.11: the two merged into ``Jaxpr``, which carries its consts.
    """
    kinds = tuple(
        k for k in (getattr(jex_core, "ClosedJaxpr", None), getattr(jex_core, "Jaxpr", None)) if k
    )
    return isinstance(value, kinds)


# ---- many processes (deepliftjax._distributed) -------------------------------------------


def coordination_client() -> Any:
    """The client of JAX's coordination service, or ``None`` outside ``jax.distributed``.

    jax 0.10 and 0.11: ``jax._src.distributed.global_state.client`` (no public accessor).
    """
    from jax._src import distributed

    return distributed.global_state.client
