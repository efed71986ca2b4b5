"""auROC, auPRC and motif-recovery metrics in NumPy."""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

from deepliftjax._errors import error


def _check_binary(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise error(
            f"y_true has {y.size} entries but y_score has {s.size}.",
            "pass one label and one score per example.",
        )
    if not np.isin(y, (0, 1)).all():
        raise error(
            "y_true must hold only 0/1 (or False/True).",
            "pass binary labels, e.g. y == positive_class.",
        )
    if not np.isfinite(s).all():
        raise error(
            "y_score must be finite.",
            "drop or replace the NaN/inf scores (np.nan_to_num) before ranking them.",
        )
    return y.astype(bool), s


def auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half).

    Args:
      y_true: 0/1 labels.
      y_score: scores, higher = more positive.

    Returns:
      The auROC.
    """
    y, s = _check_binary(y_true, y_score)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise error(
            "auroc needs at least one positive and one negative.",
            "evaluate on a set holding both classes (the ROC curve is undefined otherwise).",
        )
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    ss = s[order]
    # average ranks (1-based) over ties
    _, first, counts = np.unique(ss, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auprc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision: sum_k (R_k - R_{k-1}) P_k over
    the distinct score thresholds, highest first (tied scores enter together).

    Args:
      y_true: 0/1 labels.
      y_score: scores, higher = more positive.

    Returns:
      The auPRC.
    """
    y, s = _check_binary(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise error(
            "auprc needs at least one positive.",
            "evaluate on a set holding a positive (precision is undefined otherwise).",
        )
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    last = np.r_[np.flatnonzero(np.diff(ss)), ys.size - 1]  # last index of each tie group
    tp_t = tp[last]
    precision = tp_t / (last + 1)
    recall = tp_t / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_position(scores: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Per-position score of the base present: sum over the base axis of scores * x.

    Args:
      scores: (..., length, 4) scores.
      x: (..., length, 4) one-hot sequences.

    Returns:
      (..., length) scores.
    """
    scores, x = np.asarray(scores), np.asarray(x)
    if scores.shape != x.shape:
        raise error(
            f"scores {scores.shape} and x {x.shape} differ in shape.",
            "pass the one-hot inputs the scores were computed on.",
        )
    return (scores * x).sum(-1)


def motif_auprc(scores: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """auPRC of per-position scores against a motif mask, one value per sequence.

    Args:
      scores: (n, length) per-position scores.
      mask: (n, length) bool, True on the motif's positions.

    Returns:
      (n,) auPRC per sequence; NaN where the mask is empty.
    """
    scores, mask = np.asarray(scores), np.asarray(mask, dtype=bool)
    if scores.shape != mask.shape or scores.ndim != 2:
        raise error(
            f"expected matching (n, length) arrays, got {scores.shape}, {mask.shape}.",
            "pass per-position scores (e.g. per_position(scores, x)) and a mask of that shape.",
        )
    return np.array([auprc(m, s) if m.any() else np.nan for s, m in zip(scores, mask, strict=True)])


def top_window_hit(
    scores: ArrayLike, starts: ArrayLike, width: int, exclude: ArrayLike | None = None
) -> np.ndarray:
    """Whether the top-scoring window of `width` overlaps a motif instance by at least half.

    The window score is the sum of per-position scores over the window.

    Args:
      scores: (n, length) per-position scores.
      starts: (n, k) start positions of the motif's instances (width `width`); -1 = absent.
      width: window width (the motif length).
      exclude: optional (n, length) bool; windows touching a True position are not candidates
        (e.g. the other motif's instances, to ask whether a motif is found at all).

    Returns:
      (n,) bool; rows with no instance (or no candidate window) give False.
    """
    scores, starts = np.asarray(scores, dtype=np.float64), np.asarray(starts)
    if scores.ndim != 2 or starts.ndim != 2 or starts.shape[0] != scores.shape[0]:
        raise error(
            f"expected (n, length) scores and (n, k) starts, got {scores.shape}, {starts.shape}.",
            "pass per-position scores and one row of motif start positions per sequence.",
        )
    if not 1 <= width <= scores.shape[1]:
        raise error(
            f"width must be in [1, {scores.shape[1]}], got {width}.",
            "pass the motif length, at most the sequence length.",
        )
    c = np.concatenate([np.zeros((scores.shape[0], 1)), np.cumsum(scores, axis=1)], axis=1)
    windows = c[:, width:] - c[:, :-width]
    valid = np.ones_like(windows, dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != scores.shape:
            raise error(
                f"exclude {exclude.shape} and scores {scores.shape} differ in shape.",
                "pass a bool mask with one entry per scored position.",
            )
        e = np.concatenate([np.zeros((len(exclude), 1)), np.cumsum(exclude, axis=1)], axis=1)
        valid = (e[:, width:] - e[:, :-width]) == 0
        windows = np.where(valid, windows, -np.inf)
    best = windows.argmax(axis=1)
    overlap = width - np.abs(best[:, None] - starts)
    hit = ((overlap * 2 >= width) & (starts >= 0)).any(axis=1)
    return hit & valid.any(axis=1)
