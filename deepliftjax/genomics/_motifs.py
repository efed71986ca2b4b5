"""Motif discovery from hypothetical scores with modisco-lite, matched against known PWMs.

:func:`discover_motifs` hands one-hot sequences and hypothetical contributions (both
``(N, L, 4)``, channels last, as modisco-lite's Python API takes them; its files and CLI
use ``(N, 4, L)``) to ``modiscolite.tfmodisco.TFMoDISco`` and scores every discovered
pattern against the given PWMs with :func:`similarity`: the best Pearson correlation
between the PWM and the pattern's position probability matrix over all alignments on
both strands (the motif may hang over the pattern's ends by up to ``1 - min_overlap`` of
its length). modisco-lite is optional (the ``parity`` extra).

Example:
  >>> import numpy as np
  >>> pwm = np.eye(4)[[2, 0, 3, 0]] * 0.9 + 0.025
  >>> ppm = np.vstack([np.full((3, 4), 0.25), pwm, np.full((3, 4), 0.25)])
  >>> round(similarity(ppm, pwm), 3)
  1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DiscoveredPattern", "discover_motifs", "similarity", "TINY_MODISCO"]

TINY_MODISCO: dict[str, Any] = dict(
    sliding_window_size=11,
    flank_size=5,
    min_metacluster_size=20,
    target_seqlet_fdr=0.2,
    max_seqlets_per_metacluster=2000,
    trim_to_window_size=20,
    initial_flank_to_add=3,
    final_flank_to_add=0,
    n_leiden_runs=2,
    final_min_cluster_size=10,
    min_num_to_trim_to=10,
)
"""modisco-lite settings for a few hundred short sequences (tests, quick runs)."""


@dataclass
class DiscoveredPattern:
    """One modisco-lite pattern and its similarity to each known motif.

    Attributes:
      name: ``"pos_0"``, ``"neg_1"``, ... (metacluster sign and index, as modisco-lite).
      num_seqlets: seqlets supporting the pattern.
      ppm: position probability matrix ``(length, 4)``.
      cwm: contribution weight matrix ``(length, 4)`` (mean contributions of the seqlets).
      hcwm: hypothetical contribution weight matrix ``(length, 4)``.
      similarity: motif name -> :func:`similarity` of ``ppm`` to it.
    """

    name: str
    num_seqlets: int
    ppm: np.ndarray
    cwm: np.ndarray
    hcwm: np.ndarray
    similarity: dict[str, float] = field(default_factory=dict)

    @property
    def best_match(self) -> tuple[str | None, float]:
        """The known motif it is most similar to, and that similarity."""
        if not self.similarity:
            return None, float("nan")
        name = max(self.similarity, key=self.similarity.get)
        return name, self.similarity[name]


def similarity(pattern: np.ndarray, pwm: np.ndarray, *, min_overlap: float = 0.7) -> float:
    """Best-alignment Pearson correlation of a PWM with a pattern, both strands.

    Args:
      pattern: ``(m, 4)`` matrix (a PPM, rows over A, C, G, T).
      pwm: ``(k, 4)`` motif probabilities.
      min_overlap: least fraction of the motif's positions inside the pattern.

    Returns:
      The maximum over offsets and strands of the correlation of the overlapping rows,
      flattened (``-1`` .. ``1``).

    Example:
      >>> pwm = np.eye(4)[[0, 1, 2]] * 0.7 + 0.075
      >>> round(similarity(pwm[::-1, ::-1], pwm), 3)  # the reverse complement
      1.0
    """
    pattern, pwm = np.asarray(pattern, float), np.asarray(pwm, float)
    m, k = len(pattern), len(pwm)
    need = max(2, int(np.ceil(min_overlap * k)))
    best = -1.0
    for motif in (pwm, pwm[::-1, ::-1]):
        for off in range(-(k - need), m - need + 1):
            lo, hi = max(off, 0), min(off + k, m)
            if hi - lo < need:
                continue
            a = pattern[lo:hi].ravel()
            b = motif[lo - off : hi - off].ravel()
            if a.std() == 0 or b.std() == 0:
                continue
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best


def discover_motifs(
    onehot: Any,
    hypothetical: Any,
    motifs: Mapping[str, Any] | None = None,
    **modisco_options: Any,
) -> list[DiscoveredPattern]:
    """Run modisco-lite on hypothetical scores; match the patterns to known motifs.

    Args:
      onehot: one-hot sequences ``(N, L, 4)``.
      hypothetical: hypothetical contributions ``(N, L, 4)`` (e.g. ``deeplift_shap(...,
        hypothetical=True)`` with dinucleotide-shuffled references).
      motifs: name -> PWM ``(k, 4)`` (or an object with a ``.pwm``, such as
        :func:`deepliftjax.genomics.load_motifs`'s values); None: no matching.
      **modisco_options: passed to ``modiscolite.tfmodisco.TFMoDISco`` (see
        :data:`TINY_MODISCO` for small inputs).

    Returns:
      The discovered patterns, positive metaclusters first, each with its similarity to
      every motif.

    Raises:
      ImportError: when modisco-lite is not installed.
    """
    from modiscolite.tfmodisco import TFMoDISco

    x = np.asarray(onehot, np.float32)
    h = np.asarray(hypothetical, np.float32)
    if x.shape != h.shape or x.ndim != 3 or x.shape[-1] != 4:
        raise ValueError(
            f"onehot and hypothetical must both be (N, L, 4); got {x.shape} and {h.shape} "
            "(for modisco-lite's (N, 4, L) files, transpose with .transpose(0, 2, 1))"
        )
    pwms = {name: np.asarray(getattr(m, "pwm", m), float) for name, m in (motifs or {}).items()}
    pos, neg = TFMoDISco(one_hot=x, hypothetical_contribs=h, **modisco_options)
    out = []
    for sign, patterns in (("pos", pos), ("neg", neg)):
        for i, p in enumerate(patterns or []):
            ppm = np.asarray(p.sequence)
            out.append(
                DiscoveredPattern(
                    name=f"{sign}_{i}",
                    num_seqlets=len(p.seqlets),
                    ppm=ppm,
                    cwm=np.asarray(p.contrib_scores),
                    hcwm=np.asarray(p.hypothetical_contribs),
                    similarity={n: similarity(ppm, w) for n, w in pwms.items()},
                )
            )
    return out
