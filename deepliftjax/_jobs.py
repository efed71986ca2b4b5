"""Content-addressed identity of a batch job and of each of its chunks.

A job's identity is what determines its numbers: the traced computation (the jaxpr's text
with object addresses removed, plus a hash of its constants, so weights count and
function names do not), the options, the reference specification (the arrays' bytes, or a
generator's traced computation and key) and the library versions. A chunk's key adds the
bytes of its rows (inputs, per-example references and targets), so an edited row changes
its chunk's key and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from deepliftjax._references import ReferenceSpec

__all__ = ["digest", "array_digest", "computation_digest", "job_identity", "chunk_key"]

FORMAT = 2  # the on-disk layout of a job (manifest and chunk files)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def digest(*parts: bytes | str) -> str:
    """A hex digest of byte strings (each length-prefixed, so boundaries count)."""
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def array_digest(*arrays: Any) -> str:
    """Digest of arrays' dtypes, shapes and bytes (``None`` entries count as such)."""
    parts: list[bytes | str] = []
    for a in arrays:
        if a is None:
            parts.append("none")
            continue
        a = np.ascontiguousarray(np.asarray(a))
        parts += [f"{a.dtype.str}{a.shape}", a.view(np.uint8).reshape(-1).data.tobytes()]
    return digest(*parts)


def computation_digest(fn: Callable, *args: Any) -> str:
    """Digest of ``fn`` traced at ``args`` (arrays or ``jax.ShapeDtypeStruct``).

    The jaxpr's text (with ``at 0x...`` object addresses removed, which change from one
    process to the next) and the values of its constants (closed-over weights).
    """
    closed = jax.make_jaxpr(fn)(*args)
    text = _ADDRESS.sub("", str(closed.jaxpr))
    consts = [array_digest(np.asarray(c)) for c in closed.consts]
    return digest(text, *consts)


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
    key_data = np.asarray(jax.random.key_data(key))
    return f"generator {computation_digest(refs.generator, key, example)} key {key_data.tolist()}"


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
      ``{"format", "versions", "inputs", "model", "references", "chunk_size", "options"}``.
    """
    t = jax.ShapeDtypeStruct((), np.int32) if per_target else None
    model = computation_digest(lambda x, tt: scalar(x, tt), example, t)
    opts = json.dumps({k: _ADDRESS.sub("", repr(v)) for k, v in sorted(options.items())})
    return {
        "format": str(FORMAT),
        "versions": _versions(),
        "inputs": f"examples {tuple(example.shape)} {np.dtype(input_dtype).str}",
        "model": model,
        "references": _reference_identity(refs, key, example),
        "chunk_size": str(chunk_size),
        "options": opts,
    }


def job_id(identity: dict[str, str]) -> str:
    """One digest of all the parts of an identity."""
    return digest(json.dumps(identity, sort_keys=True))


def chunk_key(job: str, index: int, *rows: Any) -> str:
    """A chunk's key: the job's digest, the chunk's index and the bytes of its rows."""
    return digest(job, str(index), array_digest(*rows))
