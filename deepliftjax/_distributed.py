"""Sharing a batch job among the processes of :func:`jax.distributed.initialize`.

Chunk ``c`` belongs to process ``c % process_count``; every process writes its chunks to
the shared ``out_dir``. Before anything is written the processes exchange their job
identities (:func:`agree`) and stop together, with one error, if they differ; barriers
and exchanges of JAX's coordination service (the distributed runtime's key-value store,
which works on every backend, CPU included) order the setup, the assembly by the first
process and the reading of the final files by the others.
"""

from __future__ import annotations

import itertools
import json
from typing import NamedTuple

import jax

from deepliftjax import _compat
from deepliftjax._errors import DeepLiftError, error
from deepliftjax._identity import digest

__all__ = ["Share", "share", "barrier", "exchange", "agree", "agree_rows", "raise_if_any"]

# What each part of a job's identity stands for, in the messages of agree()
PART_NAMES = {
    "format": "format (the on-disk layout)",
    "versions": "versions (of deepliftjax and jax)",
    "inputs": "inputs (example shape and dtype)",
    "model": "model (the traced computation)",
    "weights": "weights (the model's constants)",
    "references": "references",
    "chunk_size": "chunk_size",
    "options": "options",
    "rows": "inputs' row digests (input rows, per-example references or targets)",
}

_BARRIER_MS = 7 * 24 * 3600 * 1000  # a peer's failure ends a wait sooner (heartbeats)
_counter = itertools.count()


class Share(NamedTuple):
    """This process's part of a job: chunks ``c`` with ``c % count == index``."""

    index: int
    count: int

    def owns(self, c: int) -> bool:
        return c % self.count == self.index

    @property
    def writer(self) -> bool:
        """The process that writes the manifest and assembles the final files."""
        return self.index == 0


def share() -> Share:
    """This process's index and the number of processes (``Share(0, 1)`` when alone)."""
    return Share(jax.process_index(), jax.process_count())


def barrier(job: str, stage: str) -> None:
    """Wait until every process reaches this point (a no-op in a single process).

    Barrier names are unique per call (job digest, a per-process counter that advances
    alike in every process, stage), as the coordination service requires.
    """
    if jax.process_count() == 1:
        return
    client = _compat.coordination_client()
    if client is None:  # pragma: no cover - several processes without the runtime
        return
    client.wait_at_barrier(f"deepliftjax/{job[:16]}/{next(_counter)}/{stage}", _BARRIER_MS)


def exchange(stage: str, payload: str) -> list[str]:
    """Every process's ``payload``, in process order (``[payload]`` in a single process).

    Each process posts its payload to the coordination service's key-value store and reads
    the others' (waiting for them, so it is also a barrier). Keys are unique per call (a
    per-process counter that advances alike in every process), not per job, so processes
    holding different jobs still meet.
    """
    if jax.process_count() == 1:
        return [payload]
    client = _compat.coordination_client()
    if client is None:  # pragma: no cover - several processes without the runtime
        return [payload]
    prefix = f"deepliftjax/{next(_counter)}/{stage}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", payload)
    return [
        client.blocking_key_value_get(f"{prefix}/{p}", _BARRIER_MS)
        for p in range(jax.process_count())
    ]


def agree(parts: dict[str, str], stage: str = "identity") -> None:
    """Check that every process holds the same ``parts`` (a job's identity, or its rows).

    Raises:
      DeepLiftError: in every process, with the same message: the parts that differ and
        the processes that differ from process 0.
    """
    every = [json.loads(p) for p in exchange(stage, json.dumps(parts, sort_keys=True))]
    first = every[0]
    names = sorted({k for p in every for k in p})
    diff = [k for k in names if any(p.get(k) != first.get(k) for p in every)]
    if not diff:
        return
    which = [i for i, p in enumerate(every) if p != first]
    detail = "; ".join(
        f"{PART_NAMES.get(k, k)}: process {i} has {str(every[i].get(k))[:60]!r}, process 0 "
        f"{str(first.get(k))[:60]!r}"
        for k in diff
        for i in which[:1]
        if every[i].get(k) != first.get(k)
    )
    raise error(
        f"the {len(every)} processes of this jax.distributed job hold different jobs: "
        f"process(es) {', '.join(map(str, which))} differ from process 0 in "
        f"{', '.join(PART_NAMES.get(k, k) for k in diff)} ({detail}). Nothing was written "
        "to the final files.",
        "call attribute() in every process with the same model, weights (load them from "
        "one checkpoint), options, references and inputs.",
    )


def raise_if_any(stage: str, error: str | None) -> None:
    """Share one process's error (or ``None``) with all: every process raises the first
    error posted, as a :class:`DeepLiftError` with the same message."""
    errors = [e for e in exchange(stage, error or "") if e]
    if errors:
        raise DeepLiftError(errors[0])


def agree_rows(keys: list[str], chunk_size: int) -> None:
    """Check that every process read the same rows: the chunk keys (digests of each chunk's
    input rows, per-example references and targets) of all processes are equal. A barrier
    too: every process has stored its chunks when it returns.

    Raises:
      DeepLiftError: in every process, naming the first chunk whose rows differ.
    """
    if len(set(exchange("rows", digest(*keys)))) == 1:
        return
    every = [json.loads(k) for k in exchange("row keys", json.dumps(keys))]
    n = min(len(k) for k in every)
    c = next((i for i in range(n) if len({k[i] for k in every}) > 1), n)
    which = [p for p, k in enumerate(every) if k[c : c + 1] != every[0][c : c + 1]]
    counts = ", ".join(str(len(k)) for k in every)
    raise error(
        f"the {len(every)} processes of this jax.distributed job hold different inputs: "
        f"{PART_NAMES['rows']} differ from chunk {c} on (rows from {c * chunk_size}; "
        f"process(es) {', '.join(map(str, which))} differ from process 0; chunks per process: "
        f"{counts}). Nothing was written to the final files.",
        "give every process the same inputs, references and targets (e.g. memory-map one "
        ".npy on a shared file system).",
    )
