"""The references of a batch job: one, shared by every example, one or more per example,
or drawn by a generator, read from their shape (and ``reference_layout`` where the shape
is ambiguous) once, before any chunk is computed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from deepliftjax._errors import error

__all__ = ["ReferenceSpec", "classify_references"]

REFERENCE_LAYOUTS = ("shared", "per_example")


class ReferenceSpec(NamedTuple):
    """What the references of a batch job are, as :func:`classify_references` read them.

    Attributes:
      kind: ``"zeros"`` (one all-zero reference), ``"shared"`` (the same ``K`` for every
        example), ``"per_example"`` (``K`` of its own for each example) or
        ``"generator"`` (drawn by ``generator(key, x)`` for each example).
      shared: ``(K, *example_shape)`` references of kinds ``zeros`` and ``shared``.
      per_example: the ``(N, K, *example_shape)`` or ``(N, *example_shape)`` array (any
        array type; rows are read chunk by chunk) for kind ``per_example``.
      generator: the function ``(key, x) -> (K, *x.shape)`` for kind ``generator``.
      one_each: ``per_example`` holds one reference per example, ``(N, *example_shape)``.
    """

    kind: str
    shared: np.ndarray | None = None
    per_example: Any = None
    generator: Callable | None = None
    one_each: bool = False

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """The per-example references of examples ``lo:hi``, shaped ``(B, K, ...)``."""
        r = np.asarray(self.per_example[lo:hi])
        return r[:, None] if self.one_each else r


def classify_references(
    references: Any,
    example_shape: tuple[int, ...],
    num_examples: int | None,
    dtype: Any,
    layout: str | None = None,
) -> ReferenceSpec:
    """Read a batch job's references: one, shared, per example or generated.

    Args:
      references: ``None`` (all-zero), a function ``(key, x) -> (K, *example_shape)``, or
        an array shaped ``example_shape`` (one reference), ``(K, *example_shape)``,
        ``(N, *example_shape)`` or ``(N, K, *example_shape)``.
      example_shape: the shape of one example.
      num_examples: ``N``, or ``None`` for inputs streamed from an iterable.
      dtype: the dtype shared references are converted to.
      layout: ``"shared"`` (every example against all K), ``"per_example"`` (row i
        belongs to example i), or ``None``: read it from the shape, which must not be
        ambiguous (a ``(K, ...)`` array with ``K == N > 1`` is).

    Returns:
      A :class:`ReferenceSpec`.

    Raises:
      DeepLiftError: a shape that fits no layout or the given one, ``K = 0``, another
        ``N`` than the inputs', an ambiguous shape, or an unknown ``layout``.
    """
    if layout not in (None, *REFERENCE_LAYOUTS):
        raise error(
            f"reference_layout must be 'shared', 'per_example' or None, got {layout!r}.",
            "'shared': every example against all K references; 'per_example': row i of "
            "the references belongs to example i.",
        )
    if references is None:
        return ReferenceSpec("zeros", shared=np.zeros((1, *example_shape), dtype))
    if callable(references):
        return ReferenceSpec("generator", generator=references)
    shape, nd = tuple(np.shape(references)), len(example_shape)
    lead = shape[: len(shape) - nd]
    n = num_examples
    if shape[len(lead) :] != tuple(example_shape) or len(lead) > 2:
        raise error(
            f"references must be shaped {example_shape} (one), (K, *{example_shape}) "
            f"(shared), or (N, *{example_shape}) or (N, K, *{example_shape}) (per example) "
            f"for examples of shape {example_shape}; got {shape}.",
            "give every reference the shape of one example, stacked on leading axes.",
        )
    if lead and 0 in lead:
        raise error(
            f"references of shape {shape} hold no references (K = 0), and the mean over "
            "references of an empty set is undefined.",
            "pass at least one reference per example (K >= 1), or references=None for the "
            "all-zero reference.",
        )
    per_example = len(lead) == 2 or (len(lead) == 1 and layout == "per_example")
    if len(lead) == 1 and layout is None and n is not None and n > 1 and lead[0] == n:
        raise error(
            f"references of shape {shape} are ambiguous for {n} inputs: {n} references "
            "shared by every example, or one reference per example (as Captum's baselines)?",
            "say which: reference_layout='per_example' (row i belongs to example i) or "
            "reference_layout='shared' (--reference-layout on the command line).",
        )
    if (layout == "shared" and len(lead) == 2) or (layout == "per_example" and not lead):
        want = "(K, ...) or one reference" if layout == "shared" else "(N, ...) or (N, K, ...)"
        raise error(
            f"reference_layout={layout!r} needs references shaped {want}; got {shape}.",
            "pass references of that shape, or reference_layout=None to read the shape.",
        )
    if not per_example:
        return ReferenceSpec(
            "shared", shared=np.asarray(references, dtype=dtype).reshape(-1, *example_shape)
        )
    if n is None or lead[0] != n:
        raise error(
            f"per-example references need array inputs with the same N; got references "
            f"{shape} for inputs with N={n}.",
            "pass the inputs as one (N, ...) array, or references shared by all examples, "
            "(K, ...).",
        )
    return ReferenceSpec("per_example", per_example=references, one_each=len(lead) == 1)
