"""Motif discovery from hypothetical scores with modisco-lite, matched against known PWMs.

:func:`discover_motifs` hands one-hot sequences and hypothetical contributions (both
``(N, L, 4)``, channels last, as modisco-lite's Python API takes them; its files and CLI
use ``(N, 4, L)``) to ``modiscolite.tfmodisco.TFMoDISco`` and scores every discovered
pattern against the given PWMs with :func:`similarity`: the best Pearson correlation
between the PWM and the pattern's position probability matrix over all alignments on
both strands (the motif may hang over the pattern's ends by up to ``1 - min_overlap`` of
its length). modisco-lite is optional (the ``parity`` extra).

:func:`motif_step` is the ``--motifs`` step of ``deepliftjax-genomics``: DeepLIFT-SHAP
with dinucleotide-shuffled references, ``contributions.npy``, ``hypothetical.npy`` and
``projected.npy`` written, modisco-lite run, and each known motif matched to the patterns.

Example:
  >>> import numpy as np
  >>> pwm = np.eye(4)[[2, 0, 3, 0]] * 0.9 + 0.025
  >>> ppm = np.vstack([np.full((3, 4), 0.25), pwm, np.full((3, 4), 0.25)])
  >>> round(similarity(ppm, pwm), 3)
  1.0
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepliftjax._errors import DeepLiftError, error

__all__ = [
    "DiscoveredPattern",
    "MATCH_THRESHOLD",
    "MODISCO",
    "TINY_MODISCO",
    "discover_motifs",
    "match_motifs",
    "motif_step",
    "require_modisco",
    "similarity",
]

MATCH_THRESHOLD = 0.8
"""A pattern matches a known motif when that motif is its best match with at least this
:func:`similarity`."""

MODISCO: dict[str, Any] = dict(
    max_seqlets_per_metacluster=1000, n_leiden_runs=2, nearest_neighbors_to_compute=200
)
"""modisco-lite settings of the command's ``--motifs`` step, otherwise its defaults: fewer
seqlets, Leiden runs and neighbours than its defaults (20000, 50, 500), so that the step
takes minutes, not ten, on 2 cores; the simulated motifs are still found (similarity
0.999)."""

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
      DeepLiftError: when modisco-lite is not installed, or shapes differ.
    """
    require_modisco()
    from modiscolite.tfmodisco import TFMoDISco

    x = np.asarray(onehot, np.float32)
    h = np.asarray(hypothetical, np.float32)
    if x.shape != h.shape or x.ndim != 3 or x.shape[-1] != 4:
        raise error(
            f"onehot and hypothetical must both be (N, L, 4); got {x.shape} and {h.shape}.",
            "pass one-hot DNA and its hypothetical contributions, one row per example; for "
            "modisco-lite's (N, 4, L) files, transpose with .transpose(0, 2, 1).",
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


def require_modisco() -> None:
    """Raises a one-line error naming the extra to install when modisco-lite is missing.

    Raises:
      DeepLiftError: modisco-lite (``modiscolite``) does not import.
    """
    try:
        import modiscolite.tfmodisco  # noqa: F401
    except ImportError as e:
        raise DeepLiftError(
            f"motif discovery needs modisco-lite ({e}): pip install 'deepliftjax[motifs]' "
            "(or pip install 'modisco-lite>=3.0,<4')"
        ) from None


def match_motifs(
    patterns: list[DiscoveredPattern], names: list[str], threshold: float = MATCH_THRESHOLD
) -> dict[str, dict[str, Any]]:
    """Which discovered patterns match each known motif.

    Args:
      patterns: :func:`discover_motifs`'s result.
      names: the known motifs (keys of each pattern's ``similarity``).
      threshold: least similarity of a match (:data:`MATCH_THRESHOLD`).

    Returns:
      motif name -> ``{"patterns": [names of the patterns whose best match it is, with
      similarity >= threshold], "best": the pattern most similar to it (or None),
      "similarity": that similarity, "num_seqlets": the seqlets of the matches}``.

    Example:
      >>> ppm = np.eye(4)[[2, 0, 3, 0]] * 0.9 + 0.025
      >>> p = DiscoveredPattern("pos_0", 50, ppm, ppm, ppm, {"G": 0.99, "T": 0.2})
      >>> match_motifs([p], ["G", "T"])["G"]["patterns"]
      ['pos_0']
    """
    out = {}
    for m in names:
        hits = [p for p in patterns if p.best_match[0] == m and p.similarity[m] >= threshold]
        best = max(patterns, key=lambda p: p.similarity.get(m, -1.0), default=None)
        out[m] = {
            "patterns": [p.name for p in hits],
            "best": None if best is None else best.name,
            "similarity": None if best is None else float(best.similarity[m]),
            "num_seqlets": int(sum(p.num_seqlets for p in hits)),
        }
    return out


def _shap_scores(
    logit_fn: Callable[[Any], Any], x: np.ndarray, shuffles: int, seed: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """DeepLIFT-SHAP with ``shuffles`` dinucleotide shuffles of each sequence.

    Returns:
      (contributions, hypothetical, present-base projection, max summation residual).
    """
    import jax

    from deepliftjax import attribute, dinuc_shuffle

    res = attribute(
        logit_fn,
        x,
        functools.partial(dinuc_shuffle, num_shuffles=shuffles),
        key=jax.random.key(seed),
        hypothetical=True,
        chunk_size=max(1, min(256, len(x))),
        progress=progress,
    )
    c, hyp, proj = (
        np.asarray(a, np.float32) for a in (res.contributions, res.hypothetical, res.projected)
    )
    return c, hyp, proj, float(np.max(res.residuals))


def motif_step(
    logit_fn: Callable[[Any], Any],
    x: Any,
    motifs: Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    shuffles: int = 20,
    seed: int = 0,
    modisco_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[DiscoveredPattern], dict[str, Any]]:
    """DeepLIFT-SHAP on sequences, then modisco-lite, matched against known motifs.

    Writes ``contributions.npy``, ``hypothetical.npy`` and ``projected.npy`` (all
    ``(N, L, 4)`` float32; ``projected = hypothetical * x``, the present-base projection,
    whose sum over the last axis equals that of the contributions) to ``out_dir``.

    Args:
      logit_fn: the model on one ``(L, 4)`` sequence, returning a scalar.
      x: one-hot sequences ``(N, L, 4)`` (e.g. the correctly predicted positives).
      motifs: name -> PWM (or an object with ``.pwm``) to match the patterns against.
      out_dir: folder for the ``.npy`` files (must exist).
      shuffles: dinucleotide-shuffled references per sequence.
      seed: key of the shuffles.
      modisco_options: passed to modisco-lite (default :data:`MODISCO`).
      progress: show a progress bar while scoring.

    Returns:
      (patterns, record): the record holds the settings, the matches
      (:func:`match_motifs`), every pattern's seqlets and similarities, the summation
      residual, the projection check and the times (``attribute_s``, ``modisco_s``).

    Raises:
      DeepLiftError: modisco-lite is not installed.
    """
    require_modisco()
    x = np.asarray(x, np.float32)
    opts = dict(MODISCO if modisco_options is None else modisco_options)
    t = time.perf_counter()
    contrib, hyp, projected, residual = _shap_scores(logit_fn, x, shuffles, seed, progress)
    for name, arr in (("contributions", contrib), ("hypothetical", hyp), ("projected", projected)):
        np.save(os.path.join(out_dir, f"{name}.npy"), arr)
    attribute_s = time.perf_counter() - t
    t = time.perf_counter()
    patterns = discover_motifs(x, hyp, motifs, **opts)
    modisco_s = time.perf_counter() - t
    names = list(motifs)
    record = {
        "n_sequences": len(x),
        "shuffles": shuffles,
        "modisco_options": opts,
        "match_threshold": MATCH_THRESHOLD,
        "matches": match_motifs(patterns, names),
        "patterns": [
            {
                "name": p.name,
                "num_seqlets": p.num_seqlets,
                "length": len(p.ppm),
                "similarity": {k: float(v) for k, v in p.similarity.items()},
            }
            for p in patterns
        ],
        "summation_residual": residual,
        "projection_check": float(np.abs(projected.sum(-1) - contrib.sum(-1)).max(initial=0)),
        "files": ["contributions.npy", "hypothetical.npy", "projected.npy"],
        "attribute_s": attribute_s,
        "modisco_s": modisco_s,
    }
    return patterns, record
