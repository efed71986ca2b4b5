"""Sharing a batch job among the processes of :func:`jax.distributed.initialize`.

Chunk ``c`` belongs to process ``c % process_count``; every process writes its chunks to
the shared ``out_dir``; barriers of JAX's coordination service (the distributed runtime's
key-value store, which works on every backend, CPU included) order the setup, the
assembly by the first process and the reading of the final files by the others.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax

__all__ = ["Share", "share", "barrier"]

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


def _client():
    from jax._src import distributed  # the coordination service's client (jax 0.10, 0.11)

    return distributed.global_state.client


def barrier(job: str, stage: str) -> None:
    """Wait until every process reaches this point (a no-op in a single process).

    Barrier names are unique per call (job digest, a per-process counter that advances
    alike in every process, stage), as the coordination service requires.
    """
    if jax.process_count() == 1:
        return
    client = _client()
    if client is None:  # pragma: no cover - several processes without the runtime
        return
    client.wait_at_barrier(f"deepliftjax/{job[:16]}/{next(_counter)}/{stage}", _BARRIER_MS)
