"""Content-addressed identity of a batch job and of each of its chunks.

A job's identity is what determines its numbers: the traced computation, the options, the
reference specification (the arrays' bytes, or a generator's traced computation and key)
and the library versions. A chunk's key adds the bytes of its rows (inputs, per-example
references and targets), so an edited row changes its chunk's key and nothing else.

The traced computation is identified by walking its closed jaxpr and, recursively, every
jaxpr held by an equation's parameters (``jit``, ``custom_jvp_call``/``custom_vjp_call``,
``checkpoint``, ``scan``, ``while``, ``cond``, ``shard_map``, Flax's lifted transforms and
any higher-order primitive to come): the equations and their parameters, every literal,
and the bytes of every constant (closed-over weights, wherever they sit). Weights inside a
jitted closure therefore count, and function names and object addresses do not. A
parameter whose content the walk cannot see (an object without a faithful ``repr`` and
without attributes to read) stops the job with a :class:`DeepLiftError` instead of being
left out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import numpy as np

from deepliftjax._batch_references import ReferenceSpec
from deepliftjax._compat import Primitive, is_jaxpr, open_jaxpr, primitive
from deepliftjax._errors import DeepLiftError, error

__all__ = [
    "digest",
    "array_digest",
    "computation_digest",
    "trace_identity",
    "TraceIdentity",
    "job_identity",
    "chunk_key",
]

FORMAT = 3  # the on-disk layout of a job (manifest and chunk files) and its identity parts
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# Parameters of custom-derivative primitives that hold the derivative rules (and the thunks
# giving their output trees): DeepLIFT interprets the primal ``call_jaxpr`` (hashed) and
# never calls them, so they cannot change scores; their closed-over values are not
# reachable as arrays anyway.
_DERIVATIVE_PARAMS = frozenset(
    {"jvp_jaxpr_fun", "jvp_jaxpr_thunk", "fwd_jaxpr_thunk", "bwd", "out_trees"}
)
# Parameters that choose what is stored, never a value: remat's policy (which residuals
# the backward pass keeps; the values are the same whatever it keeps).
_VALUE_FREE_PARAMS: dict[Primitive, frozenset[str]] = {primitive("remat_p"): frozenset({"policy"})}
_MAX_DEPTH = 6  # nesting of containers, closures and attributes followed into a parameter


def digest(*parts: bytes | str | memoryview) -> str:
    """A hex digest of byte strings (each length-prefixed, so boundaries count)."""
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p  # memoryviews are 1-D bytes
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _host_array(a: Any) -> np.ndarray:
    """``a`` as a contiguous NumPy array; typed PRNG keys as their key data (and impl)."""
    dtype = getattr(a, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.ascontiguousarray(np.asarray(a))


_BLOCK = 1 << 25  # arrays larger than this are hashed in blocks of this size, in parallel


def _bytes_digest(data: memoryview) -> memoryview | str:
    """``data`` itself, or for a large array the digest of its blocks' digests (hashed on
    several threads: hashlib releases the GIL, and model weights reach gigabytes)."""
    if data.nbytes <= 2 * _BLOCK:
        return data
    blocks = [data[i : i + _BLOCK] for i in range(0, data.nbytes, _BLOCK)]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return "blocks " + digest(*pool.map(digest, blocks))


def _array_parts(a: Any) -> tuple[list[memoryview | str], int]:
    """What :func:`array_digest` hashes of one array, and its size in bytes."""
    if a is None:
        return ["none"], 0
    kind = str(getattr(a, "dtype", ""))  # a typed PRNG key's dtype names its impl
    host = _host_array(a)
    data = memoryview(host.reshape(-1).view(np.uint8))
    return [f"{kind}|{host.dtype.str}{host.shape}", _bytes_digest(data)], host.nbytes


def array_digest(*arrays: Any) -> str:
    """Digest of arrays' dtypes, shapes and bytes (``None`` entries count as such)."""
    return digest(*(part for a in arrays for part in _array_parts(a)[0]))


class TraceIdentity(NamedTuple):
    """What identifies a traced function: its structure and its constants.

    Attributes:
      structure: digest of the equations, their parameters and literals, nested jaxprs
        included (what the function computes, given its constants).
      weights: digest of every constant's dtype, shape and bytes, in the order the walk
        meets them (closed-over weights and array literals, nested jaxprs included).
      num_arrays: how many constants (distinct arrays) were hashed.
      num_bytes: their total size.
      seconds: time spent tracing and hashing.
    """

    structure: str
    weights: str
    num_arrays: int
    num_bytes: int
    seconds: float

    def describe(self) -> str:
        """The weights' part of a job's identity: the digest, how many arrays, bytes."""
        return f"{self.weights} (constants: {self.num_arrays} arrays, {self.num_bytes} bytes)"


class _Walk:
    """One walk over a closed jaxpr and the jaxprs nested in its parameters."""

    def __init__(self) -> None:
        self.weights: list[str] = []
        self.num_bytes = 0
        self._jaxprs: dict[int, str] = {}  # id -> structure digest; objects alive meanwhile
        self._arrays: dict[int, str] = {}  # id -> index into weights (shared constants)

    # ---- constants ---------------------------------------------------------------------------
    def const(self, a: Any) -> str:
        """Record a constant's bytes among the weights; return its place there."""
        key = id(a)
        if key not in self._arrays:
            parts, size = _array_parts(a)
            self.num_bytes += size
            self.weights.append(digest(*parts))  # = array_digest(a), one copy to the host
            self._arrays[key] = f"w{len(self.weights) - 1}"
        return self._arrays[key]

    # ---- jaxprs ------------------------------------------------------------------------------
    def jaxpr(self, closed: Any) -> str:
        """Structure digest of a (closed) jaxpr; its constants go to the weights."""
        key = id(closed)
        if key in self._jaxprs:
            return self._jaxprs[key]
        jaxpr, consts = open_jaxpr(closed)
        names: dict[int, str] = {}

        def bind(v: Any) -> str:
            names[id(v)] = f"v{len(names)}"
            return f"{names[id(v)]}:{v.aval}"

        lines = [
            "consts "
            + " ".join(
                f"{bind(v)}={self.const(c)}" for v, c in zip(jaxpr.constvars, consts, strict=False)
            )
        ]
        lines += ["constvars " + " ".join(bind(v) for v in jaxpr.constvars[len(consts) :])]
        lines += ["in " + " ".join(bind(v) for v in jaxpr.invars)]
        for eqn in jaxpr.eqns:
            prim = eqn.primitive.name
            ins = " ".join(self.atom(v, names) for v in eqn.invars)
            params = ", ".join(
                f"{k}={self.param(eqn.primitive, k, v)}" for k, v in sorted(eqn.params.items())
            )
            outs = " ".join("_" if type(v).__name__ == "DropVar" else bind(v) for v in eqn.outvars)
            lines.append(f"{outs} = {prim}[{params}] {ins}")
        lines.append("out " + " ".join(self.atom(v, names) for v in jaxpr.outvars))
        self._jaxprs[key] = out = digest(*lines)
        return out

    def atom(self, v: Any, names: dict[int, str]) -> str:
        if id(v) in names:
            return names[id(v)]
        if not hasattr(v, "val"):  # pragma: no cover - a variable the jaxpr never bound
            raise error(
                f"cannot identify the traced model: variable {v} is used before it is bound.",
                "pass out_dir=None (results in memory, nothing resumed).",
            )
        val = v.val  # a literal: scalars are structure, arrays (inlined constants) weights
        if np.size(_host_array(val)) <= 1:
            return f"lit:{v.aval}:{array_digest(val)}"
        return f"lit:{v.aval}:{self.const(val)}"

    # ---- parameters ---------------------------------------------------------------------------
    def param(self, prim: Primitive, name: str, value: Any) -> str:
        if name in _DERIVATIVE_PARAMS:
            return "<derivative rule: not used by DeepLIFT>"
        if name in _VALUE_FREE_PARAMS.get(prim, ()):
            return "<no effect on values>"
        return self.value(value, (prim.name, name), 0)

    def value(self, v: Any, where: tuple[str, str], depth: int) -> str:
        """A stable text for a parameter value (nested jaxprs and arrays by digest)."""
        if depth > _MAX_DEPTH:
            raise _unidentifiable(v, where, "it nests too deeply")
        if v is None or isinstance(v, bool | int | float | complex | str | bytes):
            return repr(v)
        if is_jaxpr(v):
            return f"jaxpr:{self.jaxpr(v)}"
        if isinstance(v, np.ndarray | np.generic | jax.Array):
            return f"array:{array_digest(v)}"
        if isinstance(v, np.dtype) or isinstance(v, type):
            return f"{v!r}"
        if isinstance(v, tuple | list):
            fields = getattr(v, "_fields", None)
            head = type(v).__qualname__ if fields else type(v).__name__
            return f"{head}(" + ",".join(self.value(x, where, depth + 1) for x in v) + ")"
        if isinstance(v, dict):
            items = sorted(v.items(), key=lambda kv: repr(kv[0]))
            return (
                "{"
                + ",".join(
                    f"{self.value(k, where, depth + 1)}:{self.value(x, where, depth + 1)}"
                    for k, x in items
                )
                + "}"
            )
        if isinstance(v, set | frozenset):
            return "set(" + ",".join(sorted(self.value(x, where, depth + 1) for x in v)) + ")"
        if isinstance(v, functools.partial):
            return (
                "partial("
                + ",".join(self.value(x, where, depth + 1) for x in (v.func, v.args, v.keywords))
                + ")"
            )
        if isinstance(v, types.FunctionType):
            return self.function(v, where, depth)
        text = repr(v)
        if not _ADDRESS.search(text):  # a repr that shows the value (enums, meshes, ...)
            return f"{type(v).__qualname__}:{text}"
        return self.attributes(v, where, depth)

    def function(self, f: types.FunctionType, where: tuple[str, str], depth: int) -> str:
        """A Python function: its code, defaults, the values it closes over and the module
        globals its code reads (functions among them by their code, modules by name)."""
        code = f.__code__
        cells = [c.cell_contents for c in f.__closure__ or () if _cell_set(c)]
        names = sorted(n for n in _code_names(code) if n in f.__globals__)
        read = [f"{n}={self.global_value(f.__globals__[n], where, depth)}" for n in names]
        return "fn:" + ",".join(
            [
                f"{f.__module__}.{f.__qualname__}",
                _code_digest(code),
                self.value(f.__defaults__, where, depth + 1),
                self.value(f.__kwdefaults__, where, depth + 1),
                self.value(cells, where, depth + 1),
                *read,
            ]
        )

    def global_value(self, v: Any, where: tuple[str, str], depth: int) -> str:
        """A module global read by a function's code: data by value (arrays, numbers,
        strings), anything else by its kind and name (not followed: library functions
        read many globals, and their code is identified by the versions)."""
        if v is None or isinstance(v, bool | int | float | complex | str | bytes):
            return repr(v)
        if isinstance(v, np.ndarray | np.generic | jax.Array):
            return f"array:{self.const(v)}"
        if isinstance(v, types.FunctionType):
            return f"fn {v.__module__}.{v.__qualname__} {_code_digest(v.__code__)}"
        name = getattr(v, "__qualname__", None) or getattr(v, "__name__", None)
        return f"{type(v).__module__}.{type(v).__qualname__} {name or ''}"

    def attributes(self, v: Any, where: tuple[str, str], depth: int) -> str:
        """An object whose repr hides its content: its attributes, read one by one."""
        fields = getattr(v, "__dict__", None)
        if fields is None:
            slots = [s for t in type(v).__mro__ for s in getattr(t, "__slots__", ())]
            fields = {s: getattr(v, s) for s in slots if hasattr(v, s)}
            if not fields:
                raise _unidentifiable(v, where, "its repr hides its content")
        if callable(v) and not fields:
            raise _unidentifiable(v, where, "it is a function whose content is not visible")
        return (
            f"{type(v).__module__}.{type(v).__qualname__}("
            + ",".join(f"{k}={self.value(x, where, depth + 1)}" for k, x in sorted(fields.items()))
            + ")"
        )


def _code_names(code: types.CodeType) -> set[str]:
    """The global names a code object (and the code nested in it) reads."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def _code_digest(code: types.CodeType) -> str:
    return digest(code.co_code, _ADDRESS.sub("", repr(code.co_consts)))


def _cell_set(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _unidentifiable(v: Any, where: tuple[str, str], why: str) -> DeepLiftError:
    prim, name = where
    return error(
        f"cannot identify the job: parameter {name!r} of primitive {prim!r} holds a "
        f"{type(v).__module__}.{type(v).__qualname__}, and {why}, so a change in it would go "
        "unnoticed on resume.",
        "pass out_dir=None (results in memory, nothing resumed), or report this parameter "
        "to deepliftjax so that its content can be hashed.",
    )


def trace_identity(fn: Callable, *args: Any) -> TraceIdentity:
    """Identity of ``fn`` traced at ``args`` (arrays or ``jax.ShapeDtypeStruct``).

    Walks the closed jaxpr and every jaxpr nested in its equations' parameters (see the
    module docstring); the structure digest is independent of function names and object
    addresses, the weights digest covers every constant's bytes.

    Raises:
      DeepLiftError: a parameter whose content cannot be read (see the module docstring).
    """
    t0 = time.perf_counter()
    closed = jax.make_jaxpr(fn)(*args)
    walk = _Walk()
    structure = walk.jaxpr(closed)
    weights = digest(*walk.weights)
    seconds = time.perf_counter() - t0
    return TraceIdentity(structure, weights, len(walk.weights), walk.num_bytes, seconds)


def computation_digest(fn: Callable, *args: Any) -> str:
    """One digest of ``fn`` traced at ``args``: structure and weights (see
    :func:`trace_identity`)."""
    ident = trace_identity(fn, *args)
    return digest(ident.structure, ident.weights)


def _versions() -> str:
    try:
        from importlib.metadata import version

        mine = version("deepliftjax")
    except Exception:  # noqa: BLE001 - not installed: the source tree's version
        mine = "unknown"
    return f"deepliftjax {mine}, jax {jax.__version__}"


def _reference_identity(refs: ReferenceSpec, key: jax.Array, example: Any) -> str:
    if refs.kind in ("zeros", "shared"):
        return f"{refs.kind} {array_digest(refs.shared)}"
    if refs.kind == "per_example":  # the rows count in each chunk's key
        shape = np.shape(refs.per_example)[1:]
        return f"per_example {shape} one_each={refs.one_each}"
    gen = trace_identity(refs.generator, key, example)
    key_data = np.asarray(jax.random.key_data(key))
    return f"generator {gen.structure} weights {gen.describe()} key {key_data.tolist()}"


def options_identity(options: dict[str, Any]) -> str:
    """The options' part of a job's identity (arrays by their bytes, functions by their
    code and closed-over values, like the parameters of the traced model)."""
    walk = _Walk()
    parts = {k: walk.value(v, ("options", k), 0) for k, v in sorted(options.items())}
    parts |= {"__arrays__": digest(*walk.weights)} if walk.weights else {}
    return json.dumps(parts, sort_keys=True)


def job_identity(
    scalar: Callable,
    example: jax.ShapeDtypeStruct,
    input_dtype: np.dtype,
    per_target: bool,
    refs: ReferenceSpec,
    key: jax.Array,
    chunk_size: int,
    options: dict[str, Any],
) -> dict[str, str]:
    """The parts of a job's identity, each a short string (compare them to say what differs).

    Args:
      scalar: ``scalar(x, t) -> ()`` the model with its target selection.
      example: one example's shape and computation dtype.
      input_dtype: the dtype of the inputs as given.
      per_target: whether ``t`` is a per-example int32 index (else ``None``).
      refs: the reference specification.
      key: the PRNG key of a reference generator.
      chunk_size: examples per chunk.
      options: everything else that changes the numbers (hypothetical, rules, ...).

    Returns:
      ``{"format", "versions", "inputs", "model", "weights", "references", "chunk_size",
      "options"}``: ``model`` is the traced computation's structure (equations, parameters,
      literals, nested jaxprs), ``weights`` the digest of all its constants.

    Raises:
      DeepLiftError: a part of the model that cannot be identified (see :func:`trace_identity`).
    """
    t = jax.ShapeDtypeStruct((), np.int32) if per_target else None
    model = trace_identity(lambda x, tt: scalar(x, tt), example, t)
    return {
        "format": str(FORMAT),
        "versions": _versions(),
        "inputs": f"examples {tuple(example.shape)} {np.dtype(input_dtype).str}",
        "model": model.structure,
        "weights": model.describe(),
        "references": _reference_identity(refs, key, example),
        "chunk_size": str(chunk_size),
        "options": options_identity(options),
    }


def job_id(identity: dict[str, str]) -> str:
    """One digest of all the parts of an identity."""
    return digest(json.dumps(identity, sort_keys=True))


def chunk_key(job: str, index: int, *rows: Any) -> str:
    """A chunk's key: the job's digest, the chunk's index and the bytes of its rows."""
    return digest(job, str(index), array_digest(*rows))
