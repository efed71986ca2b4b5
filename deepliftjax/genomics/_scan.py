"""PWM scanning: where a motif occurs in a sequence, planted or by chance.

The simulator plants motif instances into a uniform background, and the background holds
chance matches of the same motifs that nobody labelled. A method whose top window lands on
such a match has found a real site, not missed the motif; the experiment reports its
metrics both ways (planted instances only, and planted or chance matches).

A match is a window whose log-odds score against the uniform background, summed over the
motif's informative positions, on either strand, is at least ``threshold`` times the best
possible (the consensus).
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

from deepliftjax._errors import error

from ._simulate import Motif

MATCH_THRESHOLD = 0.8
"""A match scores at least this fraction of the motif's maximal log-odds score."""
PSEUDOCOUNT = 0.01
"""Added to each PWM probability before the log (PWM zeros would give -inf)."""


def log_odds(motif: Motif, min_bits: float = 1.0, pseudocount: float = PSEUDOCOUNT) -> np.ndarray:
    """``(length, 4)`` log2 odds of the motif's probabilities against the uniform 0.25, on
    its informative positions (information content >= ``min_bits``; 0 elsewhere): the
    core a model learns (``GATAAG`` of GATA_disc1, ``CAGATG.T`` of TAL1_known1), whose
    chance copies it responds to as to planted ones."""
    p = (motif.pwm + pseudocount) / (1.0 + 4 * pseudocount)
    return np.where(motif.informative(min_bits)[:, None], np.log2(p / 0.25), 0.0)


def window_scores(x: ArrayLike, motif: Motif, min_bits: float = 1.0) -> np.ndarray:
    """``(n, length - width + 1)`` best log-odds score of each window over both strands.

    Args:
      x: ``(n, length, 4)`` one-hot sequences (A, C, G, T).
      motif: the PWM.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 3 or x.shape[-1] != 4:
        raise error(
            f"expected one-hot sequences of shape (n, length, 4), got {x.shape}.",
            "pass a batch of one-hot DNA with the bases (A, C, G, T) on the last axis.",
        )
    w = motif.length
    if x.shape[1] < w:
        raise error(
            f"sequences of length {x.shape[1]} are shorter than {motif.name} ({w}).",
            "scan sequences at least as long as the motif.",
        )
    lo = log_odds(motif, min_bits)
    rc = lo[::-1, ::-1]  # the reverse complement: positions reversed, A<->T and C<->G
    n_win = x.shape[1] - w + 1
    fwd = np.zeros((x.shape[0], n_win))
    rev = np.zeros((x.shape[0], n_win))
    for k in range(w):
        fwd += x[:, k : k + n_win] @ lo[k]
        rev += x[:, k : k + n_win] @ rc[k]
    return np.maximum(fwd, rev)


def match_starts(
    x: ArrayLike, motif: Motif, threshold: float = MATCH_THRESHOLD, min_bits: float = 1.0
) -> list[np.ndarray]:
    """Start positions of the windows scoring at least ``threshold`` × the maximal score.

    Returns:
      One int array of starts per sequence.
    """
    if not 0 < threshold <= 1:
        raise error(
            f"threshold must be in (0, 1], got {threshold}.",
            "pass a fraction of the motif's maximal log-odds score, e.g. 0.8.",
        )
    best = log_odds(motif, min_bits).max(axis=1).sum()
    # the slack keeps a consensus window a match whatever order its terms were summed in
    hits = window_scores(x, motif, min_bits) >= threshold * best - 1e-9 * best
    return [np.flatnonzero(h) for h in hits]


def chance_matches(
    x: ArrayLike,
    motif: Motif,
    planted: ArrayLike,
    threshold: float = MATCH_THRESHOLD,
    min_bits: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The matches of ``motif`` that overlap none of its planted instances.

    Args:
      x: ``(n, length, 4)`` one-hot sequences.
      motif: the PWM.
      planted: ``(n, k)`` start positions of the planted instances (-1: none).
      threshold: as for :func:`match_starts`.

    Returns:
      ``(starts, mask)``: ``(n, m)`` start positions of the chance matches (-1 padded; ``m``
      at least 1) and ``(n, length)`` bool, True on their positions.
    """
    x, planted = np.asarray(x), np.asarray(planted)
    w = motif.length
    found = []
    for starts, own in zip(match_starts(x, motif, threshold, min_bits), planted, strict=True):
        own = own[own >= 0]
        apart = np.abs(starts[:, None] - own[None, :]) >= w if own.size else None
        found.append(starts if apart is None else starts[apart.all(axis=1)])
    m = max(1, max((len(s) for s in found), default=0))
    out = np.full((len(found), m), -1, np.int32)
    mask = np.zeros(x.shape[:2], bool)
    for i, s in enumerate(found):
        out[i, : len(s)] = s
        for j in s:
            mask[i, j : j + w] = True
    return out, mask
