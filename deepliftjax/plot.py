"""Pictures of attributions: sequence logos and bars for one-hot DNA, heatmaps for images,
and side-by-side panels for several methods.

matplotlib is an optional dependency (``pip install "deepliftjax[plot]"``); it is imported
only when a function here is called. Every function draws on a given ``ax`` or makes a new
figure with :func:`matplotlib.pyplot.subplots`, and returns what it drew on, so it works
under any backend, including the non-interactive ``Agg``.

>>> import numpy as np
>>> from deepliftjax import plot
>>> x = np.eye(4)[[0, 1, 2, 3]]
>>> ax = plot.sequence_logo(x * np.array([[1.0], [-0.5], [0.2], [0.0]]))
>>> [float(v) for v in ax.get_xlim()]
[-0.5, 3.5]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from deepliftjax._errors import DeepLiftError, error

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BASE_COLORS",
    "image_heatmap",
    "method_panels",
    "present_base",
    "sequence_bars",
    "sequence_logo",
]

BASE_COLORS: dict[str, str] = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
"""Colours of the bases (the usual logo colours: A green, C blue, G orange, T red)."""

_SPAN_COLORS = ("#7E57C2", "#26A69A", "#8D6E63", "#EC407A", "#78909C")
_OTHER_COLORS = ("#6A1B9A", "#00838F", "#5D4037", "#AD1457", "#37474F", "#9E9D24")

Highlight = Mapping[str, Any]

_NONFINITE_HINT = (
    "find where they come from with deepliftjax.check_finite (an input, a reference or the "
    "model), or drop those examples before plotting."
)


def _mpl() -> Any:
    """Imports matplotlib.pyplot, or raises an ImportError naming the ``plot`` extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            "deepliftjax.plot needs matplotlib: pip install 'deepliftjax[plot]' "
            "(or pip install matplotlib)."
        ) from e
    return plt


def _colors(alphabet: str, colors: Mapping[str, str] | None) -> list[str]:
    table = dict(BASE_COLORS if colors is None else colors)
    return [table.get(a, _OTHER_COLORS[i % len(_OTHER_COLORS)]) for i, a in enumerate(alphabet)]


def _bases_last(a: ArrayLike | None, alphabet_axis: int, batch: bool = False) -> Any:
    """``a`` with the alphabet axis of one example (``alphabet_axis``: ``-1`` for
    ``(length, 4)``, ``0`` for PyTorch's ``(4, length)``) moved last; ``batch``: ``a`` has a
    leading batch axis."""
    if a is None or alphabet_axis in (-1, 1 + batch):
        return a
    if alphabet_axis not in (0, -2):
        raise error(
            f"alphabet_axis={alphabet_axis!r}: one sequence is (length, 4) (-1, the default) "
            "or (4, length) (0).",
            "pass alphabet_axis=0 for channels-first (PyTorch) scores, -1 otherwise.",
        )
    return np.moveaxis(np.asarray(a), int(batch), -1)


def _as_scores(scores: ArrayLike, alphabet: str, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(alphabet):
        raise error(
            f"{name} must be shaped (length, {len(alphabet)}) for the alphabet {alphabet!r}, "
            f"got shape {s.shape}.",
            "pass one sequence (index a batch first, e.g. scores[i]); for another alphabet "
            "pass alphabet= with one letter per channel.",
        )
    if s.shape[0] == 0:
        raise error(f"{name} is empty (length 0).", "pass a sequence of length >= 1.")
    if not np.isfinite(s).all():
        raise error(f"{name} holds NaN or infinite values.", _NONFINITE_HINT)
    return s


def _check_onehot(onehot: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if onehot is None:
        return None
    x = np.asarray(onehot, dtype=np.float64)
    if x.shape != shape:
        raise error(
            f"onehot must have the scores' shape {shape}, got {x.shape}.",
            "pass the one-hot sequence the scores were computed on (the same example).",
        )
    return x


def present_base(
    scores: ArrayLike, onehot: ArrayLike, *, hypothetical: bool | None = None
) -> np.ndarray:
    """The present-base projection of scores on one-hot sequences (tangermeme's default).

    At each position the present base gets the position's total and the other bases 0:
    for contributions ``sum_b scores[..., b] * onehot``, for hypothetical contributions
    ``scores * onehot`` (the hypothetical score of the base present). Both are the same
    array for the same references, and their sum over a sequence is the contributions'
    sum, ``f(x) - mean f(ref)`` (summation to delta). ``contributions * onehot`` is not it:
    against references that are not zero it keeps only the present base's own term
    ``m_p (1 - r_p)`` and drops ``-sum_{b != p} m_b r_b``.

    Args:
      scores: (..., length, K) contributions or hypothetical contributions.
      onehot: the one-hot sequences, same shape.
      hypothetical: True: ``scores`` are hypothetical contributions; False: they are
        contributions (any reference); None: only scores that are zero off the present
        base (one-reference one-hot DeepLIFT, gradient×input), where both readings agree.

    Returns:
      (..., length, K) float64 array, nonzero only on the present base.

    Raises:
      DeepLiftError: shapes differ, ``onehot`` is not one-hot along its last axis (0/1
        values, at most one 1 per position), or ``hypothetical=None`` with scores on absent
        bases.

    Example:
      >>> m, r = np.array([[1.0, 2.0, 3.0, 4.0]]), np.full((1, 4), 0.25)
      >>> x = np.array([[0.0, 0.0, 1.0, 0.0]])
      >>> contrib, hyp = m * (x - r), m - (m * r).sum(-1, keepdims=True)
      >>> present_base(contrib, x, hypothetical=False).tolist()
      [[0.0, 0.0, 0.5, 0.0]]
      >>> present_base(hyp, x, hypothetical=True).tolist()
      [[0.0, 0.0, 0.5, 0.0]]
    """
    from deepliftjax._hypothetical import check_onehot

    s = np.asarray(scores, dtype=np.float64)
    x = np.asarray(onehot, dtype=np.float64)
    if s.shape != x.shape or s.ndim < 1:
        raise error(
            f"scores {s.shape} and onehot {x.shape} must have one shape.",
            "pass the one-hot sequences the scores were computed on.",
        )
    check_onehot(x, -1, what="present_base", keyword=None)  # the last axis holds the bases
    if hypothetical is None:
        if np.any(s[x == 0] != 0):
            raise error(
                "the scores are nonzero on bases that are not present, so whether they are "
                "contributions or hypothetical contributions changes the picture.",
                "pass hypothetical=True (drawn: scores * onehot) or hypothetical=False "
                "(drawn: scores summed over bases, on the present base).",
            )
        hypothetical = True
    out = s * x if hypothetical else s.sum(-1, keepdims=True) * x
    return out + 0.0  # no negative zeros


def _bad_spans(name: str, length: int, shape: tuple[int, ...]) -> DeepLiftError:
    return error(
        f"highlight[{name!r}] must be a bool mask of shape ({length},) or a list of "
        f"(start, stop) pairs, got shape {shape}.",
        "mark positions with a mask as long as the sequence, or list spans as "
        "[(start, stop), ...] with stop > start.",
    )


def _spans(value: Any, length: int, name: str) -> list[tuple[float, float]]:
    """(start, stop) spans of a bool mask of shape (length,) or of an iterable of pairs."""
    arr = np.asarray(value)
    if arr.dtype == bool or (arr.ndim == 1 and arr.shape[0] == length and arr.shape[0] != 2):
        if arr.shape != (length,):
            raise _bad_spans(name, length, arr.shape)
        m = arr.astype(bool).astype(int)
        edges = np.flatnonzero(np.diff(np.r_[0, m, 0]))
        return [(float(a), float(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise _bad_spans(name, length, arr.shape)
    return [(float(a), float(b)) for a, b in arr if b > a]


def _draw_highlight(ax: Axes, highlight: Highlight | None, length: int) -> list[Any]:
    """Shades highlighted spans; returns legend handles."""
    if not highlight:
        return []
    from matplotlib.patches import Patch

    handles = []
    for i, (name, value) in enumerate(highlight.items()):
        color = _SPAN_COLORS[i % len(_SPAN_COLORS)]
        for a, b in _spans(value, length, name):
            ax.axvspan(a - 0.5, b - 0.5, color=color, alpha=0.18, lw=0, zorder=0)
        handles.append(Patch(color=color, alpha=0.35, label=name))
    return handles


@functools.lru_cache(maxsize=64)
def _glyph(letter: str) -> Any:
    """The letter's outline as a Path normalised to the unit square [0, 1] x [0, 1]."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    path = TextPath(
        (0, 0), letter, size=1, prop=FontProperties(family="DejaVu Sans", weight="bold")
    )
    ext = path.get_extents()
    w, h = max(ext.width, 1e-9), max(ext.height, 1e-9)
    t = Affine2D().translate(-ext.x0, -ext.y0).scale(1.0 / w, 1.0 / h)
    return Path(t.transform(path.vertices), path.codes)


def _new_ax(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    plt = _mpl()
    _, ax = plt.subplots(figsize=figsize)
    return ax


def _finish_seq_axes(
    ax: Axes,
    length: int,
    lo: float,
    hi: float,
    title: str | None,
    ylabel: str | None,
    handles: list[Any],
    xlabel: str | None = None,
    ylim: tuple[float, float] | None = None,
) -> None:
    ax.axhline(0, color="k", lw=0.5, zorder=1)
    ax.set_xlim(-0.5, length - 0.5)
    if ylim is None:
        pad = 0.05 * max(hi - lo, 1e-12)
        ax.set_ylim(min(lo, 0.0) - pad, max(hi, 0.0) + pad)
    else:
        ax.set_ylim(*ylim)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    if handles:
        ax.legend(
            handles=handles,
            fontsize=7,
            frameon=False,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=len(handles),
            borderaxespad=0.1,
        )


def sequence_logo(
    scores: ArrayLike,
    onehot: ArrayLike | None = None,
    *,
    hypothetical: bool | None = None,
    ax: Axes | None = None,
    alphabet: str = "ACGT",
    colors: Mapping[str, str] | None = None,
    highlight: Highlight | None = None,
    title: str | None = None,
    ylabel: str | None = "score",
    xlabel: str | None = "position",
    ylim: tuple[float, float] | None = None,
    width: float = 0.95,
    alphabet_axis: int = -1,
) -> Axes:
    """A sequence logo of contributions: at each position the letters are drawn with height
    equal to their score, positive scores stacked above the axis, negative ones below (the
    largest magnitudes farthest from it).

    With ``onehot``, the logo shows the present-base projection (:func:`present_base`,
    tangermeme's default): one letter per position, the base present, its height the
    position's total, ``sum_b contributions[i, b]`` = ``hypothetical[i, present]``; the
    heights of a sequence sum to its contributions' sum (``f(x) - mean f(ref)``). Say which
    kind the scores are with ``hypothetical`` when they are nonzero on absent bases
    (DeepLIFT-SHAP against shuffled references); ``contributions * onehot`` would drop
    ``-sum_{b != p} m_b r_b``. Without ``onehot`` the scores are drawn as given: every
    letter of a hypothetical-contribution or CWM logo.

    Args:
      scores: (length, len(alphabet)) scores of one sequence.
      onehot: optional one-hot sequence of the same shape: draw the present-base projection.
      hypothetical: with ``onehot``: True for hypothetical contributions, False for
        contributions; None (default) for scores zero off the present base (one-reference
        one-hot DeepLIFT, gradient×input), where both agree, and an error otherwise.
      ax: axes to draw on; a new (12 x 2 inch) figure when None.
      alphabet: the letters of the last axis.
      colors: letter -> colour (default :data:`BASE_COLORS`).
      highlight: name -> bool mask (length,) or list of (start, stop) spans to shade, e.g.
        the true motif positions.
      title: axes title.
      ylabel: y-axis label (None: none).
      xlabel: x-axis label (None: none).
      ylim: y-limits (default: fit the letters); give several logos the same limits to
        compare their heights.
      width: letter width in positions.
      alphabet_axis: the alphabet axis of ``scores`` and ``onehot``: ``-1`` (default) for
        (length, 4), ``0`` for a PyTorch model's (4, length).

    Returns:
      The matplotlib Axes.

    Raises:
      DeepLiftError: (a ``ValueError``) scores not shaped (length, len(alphabet)),
        non-finite, or a mismatched onehot or highlight; scores on absent bases with
        ``onehot`` and ``hypothetical=None``.

    Example:
      >>> x = np.eye(4)[[2, 0, 3, 0]]  # GATA
      >>> hyp = np.array([[0.1, 0.0, 0.9, -0.2]] * 4)  # hypothetical contributions
      >>> ax = sequence_logo(hyp, x, hypothetical=True)  # one letter a position
      >>> [round(float(p.get_path().get_extents().height), 2) for p in ax.patches]
      [0.1, 0.9, 0.2]
    """
    _mpl()
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    s = _as_scores(_bases_last(scores, alphabet_axis), alphabet)
    x = _check_onehot(_bases_last(onehot, alphabet_axis), s.shape)
    if x is not None:
        s = present_base(s, x, hypothetical=hypothetical)
    length, k = s.shape
    ax = _new_ax(ax, (12, 2))
    glyphs = [_glyph(a) for a in alphabet]
    pieces: list[list[Any]] = [[] for _ in range(k)]
    for i in range(length):
        row = s[i]
        for sign in (1.0, -1.0):
            idx = [j for j in np.argsort(np.abs(row)) if sign * row[j] > 0]  # small first
            base = 0.0
            for j in idx:
                h = abs(row[j])
                verts = glyphs[j].vertices * [width, h] + [
                    i - width / 2,
                    base if sign > 0 else -base - h,
                ]
                pieces[j].append(Path(verts, glyphs[j].codes))
                base += h
    cols = _colors(alphabet, colors)
    for j in range(k):
        if pieces[j]:
            ax.add_patch(
                PathPatch(
                    Path.make_compound_path(*pieces[j]),
                    facecolor=cols[j],
                    edgecolor="none",
                    zorder=2,
                )
            )
    handles = _draw_highlight(ax, highlight, length)
    hi = np.clip(s, 0, None).sum(1).max()
    lo = np.clip(s, None, 0).sum(1).min()
    _finish_seq_axes(ax, length, lo, hi, title, ylabel, handles, xlabel, ylim)
    return ax


def sequence_bars(
    scores: ArrayLike,
    onehot: ArrayLike | None = None,
    *,
    hypothetical: bool | None = None,
    ax: Axes | None = None,
    alphabet: str = "ACGT",
    colors: Mapping[str, str] | None = None,
    highlight: Highlight | None = None,
    title: str | None = None,
    ylabel: str | None = "score",
    xlabel: str | None = "position",
    ylim: tuple[float, float] | None = None,
    alphabet_axis: int = -1,
) -> Axes:
    """Per-position scores as bars coloured by base (the paper's Fig. 3 style).

    With ``onehot`` the bar at position i is the present-base projection (see
    :func:`sequence_logo`), coloured by the present base; without ``onehot``,
    ``sum_b scores[i, b]`` coloured by the base of largest ``|score|``.

    Args:
      scores: (length, len(alphabet)) scores of one sequence.
      onehot: optional one-hot sequence of the same shape.
      hypothetical: with ``onehot``, as in :func:`sequence_logo`.
      ax: axes to draw on; a new (12 x 2 inch) figure when None.
      alphabet: the letters of the last axis.
      colors: letter -> colour (default :data:`BASE_COLORS`).
      highlight: name -> bool mask (length,) or list of (start, stop) spans to shade.
      title: axes title.
      ylabel: y-axis label (None: none).
      xlabel: x-axis label (None: none).
      ylim: y-limits (default: fit the bars).
      alphabet_axis: the alphabet axis of ``scores`` and ``onehot``: ``-1`` (default) for
        (length, 4), ``0`` for a PyTorch model's (4, length).

    Returns:
      The matplotlib Axes.

    Raises:
      DeepLiftError: (a ``ValueError``) as in :func:`sequence_logo`.
    """
    _mpl()
    from matplotlib.patches import Patch

    s = _as_scores(_bases_last(scores, alphabet_axis), alphabet)
    x = _check_onehot(_bases_last(onehot, alphabet_axis), s.shape)
    if x is not None:
        height, base = present_base(s, x, hypothetical=hypothetical).sum(1), x.argmax(1)
    else:
        height, base = s.sum(1), np.abs(s).argmax(1)
    length = s.shape[0]
    ax = _new_ax(ax, (12, 2))
    cols = np.array(_colors(alphabet, colors))
    ax.bar(np.arange(length), height, width=1.0, color=cols[base], lw=0, zorder=2)
    handles = _draw_highlight(ax, highlight, length)
    present = sorted(set(base.tolist()))
    handles = [Patch(color=cols[j], label=alphabet[j]) for j in present] + handles
    _finish_seq_axes(
        ax,
        length,
        float(height.min()),
        float(height.max()),
        title,
        ylabel,
        handles,
        xlabel,
        ylim,
    )
    return ax


def _as_image(attr: ArrayLike, channel_axis: int | None, name: str = "attribution") -> np.ndarray:
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim == 3:
        if channel_axis is None:
            raise error(
                f"{name} is 3-D {a.shape}.",
                "pass channel_axis (e.g. -1) to sum the scores over the channels.",
            )
        a = a.sum(axis=channel_axis)  # the paper's Fig. 2: scores summed over channels
    if a.ndim != 2 or 0 in a.shape:
        raise error(
            f"{name} must be an image (H, W) or (H, W, C) with channel_axis=-1, got shape "
            f"{np.shape(attr)}.",
            "pass one image (index a batch first, e.g. scores[i]); method_panels draws a batch.",
        )
    if not np.isfinite(a).all():
        raise error(f"{name} holds NaN or infinite values.", _NONFINITE_HINT)
    return a


def image_heatmap(
    attribution: ArrayLike,
    *,
    ax: Axes | None = None,
    positive_only: bool = False,
    channel_axis: int | None = -1,
    image: ArrayLike | None = None,
    cmap: str | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = False,
    colorbar_label: str | None = "score",
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Axes:
    """An image attribution as a heatmap, channels summed as in the paper's Fig. 2.

    Signed scores use a diverging map centred on zero (red positive, blue negative);
    ``positive_only`` keeps ``max(score, 0)`` on a sequential map (brighter = more
    important), like the paper's panels of positive gradient×input and DeepLIFT.

    Args:
      attribution: (H, W) or (H, W, C) scores of one image (C on ``channel_axis``).
      ax: axes to draw on; a new 3 x 3 inch figure when None.
      positive_only: show only positive scores.
      channel_axis: the channel axis of a 3-D attribution (summed); None forbids 3-D input.
      image: optional (H, W) or (H, W, C) input, drawn as a contour at half its range.
      cmap: colour map (default "RdBu_r"; "hot" with ``positive_only`` or when no score is
        negative).
      vmax: colour scale limit (default: the largest magnitude of this attribution).
      title: axes title.
      colorbar: add a colour bar.
      colorbar_label: the colour bar's label (what the colours measure).
      xlabel, ylabel: axis labels (e.g. "input feature", "example" for a table of scores).

    Returns:
      The matplotlib Axes.

    Raises:
      DeepLiftError: (a ``ValueError``) a shape other than (H, W) or (H, W, C), non-finite
        scores, or an image of another height and width.
    """
    plt = _mpl()
    a = _as_image(attribution, channel_axis)
    if positive_only:
        a = np.clip(a, 0.0, None)
    ax = _new_ax(ax, (3, 3))
    top = float(np.abs(a).max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    if positive_only or a.min() >= 0:  # e.g. |gradient|: nothing to centre
        kw = dict(cmap=cmap or "hot", vmin=0.0, vmax=top)
    else:
        kw = dict(cmap=cmap or "RdBu_r", vmin=-top, vmax=top)
    im = ax.imshow(a, interpolation="nearest", **kw)
    if image is not None:
        img = _as_image(image, channel_axis, "image")
        if img.shape != a.shape:
            raise error(
                f"image is {img.shape}, attribution is {a.shape}.",
                "pass the image the attribution was computed on, with the same channel_axis.",
            )
        if img.max() > img.min():  # the input's outline at half its range
            level = 0.5 * (img.min() + img.max())
            ax.contour(img, levels=[level], colors="k", linewidths=0.8, alpha=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    if colorbar:
        cb = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if colorbar_label:
            cb.set_label(colorbar_label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    return ax


def _panel_arrays(
    attributions: Mapping[str, ArrayLike],
    inputs: ArrayLike | None,
    kind: str,
    alphabet: str,
    row_titles: Sequence[str] | None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """`method_panels`' arguments checked and as float arrays.

    Returns:
      (method name -> scores, in the given order; the inputs or None).
    """
    if kind not in ("image", "logo", "bars"):
        raise error(
            f"kind must be 'image', 'logo' or 'bars', got {kind!r}.",
            "'image' for (N, H, W[, C]) scores, 'logo' or 'bars' for one-hot sequences.",
        )
    if not attributions:
        raise error("attributions is empty.", "pass {method name: scores}.")
    names = list(attributions)
    arrs = {k: np.asarray(v, dtype=np.float64) for k, v in attributions.items()}
    shapes = {k: v.shape for k, v in arrs.items()}
    if len(set(shapes.values())) != 1:
        raise error(
            f"every method's scores must have one shape, got {shapes}.",
            "pass every method's scores for the same batch of inputs.",
        )
    shape = shapes[names[0]]
    want = "(N, H, W) or (N, H, W, C)" if kind == "image" else f"(N, length, {len(alphabet)})"
    if len(shape) not in ((3, 4) if kind == "image" else (3,)):
        raise error(
            f"method_panels takes a batch: scores shaped {want}, got {shape}.",
            "for one example use scores[None].",
        )
    n = arrs[names[0]].shape[0]
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.shape[0] != n:
            raise error(
                f"inputs hold {inputs.shape[0]} examples, scores hold {n}.",
                "pass the inputs the scores were computed on, one row per example.",
            )
    if row_titles is not None and len(row_titles) != n:
        raise error(
            f"row_titles has {len(row_titles)} entries for {n} examples.",
            "pass one title per example, or none.",
        )
    return arrs, inputs


def _image_panels(
    plt: Any,
    arrs: Mapping[str, np.ndarray],
    inputs: np.ndarray | None,
    *,
    positive_only: bool | Mapping[str, bool],
    channel_axis: int | None,
    row_titles: Sequence[str] | None,
    panel_size: tuple[float, float] | None,
    shared_scale: bool,
    colorbar: bool,
    colorbar_label: str,
) -> Figure:
    """`method_panels` with ``kind="image"``: one row per example, the input (if given)
    then each method's heatmap."""
    names = list(arrs)
    n = arrs[names[0]].shape[0]
    pos = (
        {k: bool(positive_only.get(k, False)) for k in names}
        if isinstance(positive_only, Mapping)
        else dict.fromkeys(names, bool(positive_only))
    )
    cols = len(names) + (inputs is not None)
    pw, ph = panel_size or (2.0, 2.0)
    fig, axes = plt.subplots(
        n,
        cols,
        figsize=(pw * cols + (0.8 if colorbar else 0.0), ph * n + 0.3),
        squeeze=False,
        layout="constrained",
    )
    for i in range(n):
        c = 0
        if inputs is not None:
            img = _as_image(inputs[i], channel_axis, "inputs")
            axes[i, 0].imshow(img, cmap="gray_r", interpolation="nearest")
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
            if i == 0:
                axes[i, 0].set_title("input", fontsize=9)
            if row_titles is not None:
                axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
            c = 1
        shown = {
            k: np.clip(a, 0.0, None) if pos[k] else a
            for k, a in ((k, _as_image(arrs[k][i], channel_axis)) for k in names)
        }
        signed = {k: bool(a.min() < 0) for k, a in shown.items()}
        one_bar = shared_scale and len(set(signed.values())) == 1
        top = max(float(np.abs(a).max()) for a in shown.values()) if shared_scale else None
        for j, k in enumerate(names):
            label = k + (" (positive)" if pos[k] else "")
            image_heatmap(
                arrs[k][i],
                ax=axes[i, c + j],
                positive_only=pos[k],
                channel_axis=channel_axis,
                vmax=top,
                title=label if i == 0 else None,
                colorbar=colorbar and not one_bar,
                colorbar_label=colorbar_label,
            )
        if colorbar and one_bar:
            cb = fig.colorbar(axes[i, -1].images[-1], ax=list(axes[i, c:]), shrink=0.9, pad=0.02)
            cb.set_label(colorbar_label, fontsize=8)
            cb.ax.tick_params(labelsize=7)
        if inputs is None and row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    return fig


def _sequence_panels(
    plt: Any,
    arrs: Mapping[str, np.ndarray],
    inputs: np.ndarray | None,
    *,
    kind: str,
    row_titles: Sequence[str] | None,
    highlight: Highlight | Sequence[Highlight] | None,
    alphabet: str,
    panel_size: tuple[float, float] | None,
    shared_scale: bool,
    ylabel: str,
    hypothetical: bool | None = None,
) -> Figure:
    """`method_panels` with ``kind="logo"`` or ``"bars"``: one row per method and example,
    sharing the position axis."""
    names = list(arrs)
    n = arrs[names[0]].shape[0]
    if isinstance(highlight, Mapping) or highlight is None:
        hls: list[Highlight | None] = [highlight] * n
    else:
        hls = list(highlight)
        if len(hls) != n:
            raise error(
                f"highlight has {len(hls)} entries for {n} examples.",
                "pass one highlight mapping for all examples, or a list with one per example.",
            )
    if inputs is not None and inputs.shape != arrs[names[0]].shape:
        raise error(
            f"inputs are {inputs.shape}, scores are {arrs[names[0]].shape}.",
            "pass the one-hot inputs the scores were computed on.",
        )
    pw, ph = panel_size or (12.0, 1.6)
    rows = n * len(names)
    fig, axes = plt.subplots(rows, 1, figsize=(pw, ph * rows + 0.3), sharex=True, squeeze=False)
    draw = sequence_logo if kind == "logo" else sequence_bars
    for i in range(n):
        row_axes = []
        for j, k in enumerate(names):
            ax = axes[i * len(names) + j, 0]
            title = row_titles[i] if (row_titles is not None and j == 0) else None
            draw(
                arrs[k][i],
                None if inputs is None else inputs[i],
                hypothetical=hypothetical,
                ax=ax,
                alphabet=alphabet,
                highlight=hls[i],
                title=title,
                ylabel=f"{k}\n{ylabel}" if ylabel else k,
                xlabel=None,
            )
            if j > 0 and ax.get_legend() is not None:
                ax.get_legend().remove()
            row_axes.append(ax)
        if shared_scale:  # one y-scale for every method of this example
            lo = min(a.get_ylim()[0] for a in row_axes)
            hi = max(a.get_ylim()[1] for a in row_axes)
            for a in row_axes:
                a.set_ylim(lo, hi)
    axes[-1, 0].set_xlabel("position", fontsize=8)
    fig.tight_layout()
    return fig


def method_panels(
    attributions: Mapping[str, ArrayLike],
    inputs: ArrayLike | None = None,
    *,
    kind: str = "image",
    positive_only: bool | Mapping[str, bool] = False,
    channel_axis: int | None = -1,
    row_titles: Sequence[str] | None = None,
    highlight: Highlight | Sequence[Highlight] | None = None,
    alphabet: str = "ACGT",
    panel_size: tuple[float, float] | None = None,
    shared_scale: bool = True,
    colorbar: bool = True,
    colorbar_label: str = "score",
    ylabel: str = "score",
    hypothetical: bool | None = None,
    alphabet_axis: int = -1,
) -> Figure:
    """Side-by-side panels of several methods' attributions for the same examples.

    ``kind="image"``: one row per example, columns the input (if given) then each method;
    by default the methods of a row share one colour scale, shown by one colour bar at the
    row's end. ``kind="logo"`` or ``"bars"``: one row per method and example, sharing the
    position axis; by default the methods of one example share one y-scale, so their
    heights compare directly.

    Args:
      attributions: method name -> scores of a batch: images (N, H, W) or (N, H, W, C),
        sequences (N, length, len(alphabet)); every method must have the same shape.
      inputs: the inputs, same leading shape: images (N, H, W[, C]) or one-hot sequences
        (N, length, len(alphabet)): sequences are drawn as their present-base projection
        (see :func:`sequence_logo`).
      kind: "image", "logo" or "bars".
      positive_only: images: show only positive scores, for all methods or per method name.
      channel_axis: images: the channel axis of one (H, W, C) example (summed).
      row_titles: a title per example.
      highlight: sequences: spans to shade, one mapping for all examples or one per example.
      alphabet: sequences: the letters of the last axis.
      panel_size: (width, height) of one panel in inches.
      shared_scale: one colour scale per image row / one y-scale per sequence example
        (False: each panel scaled to its own maximum).
      colorbar: images: add colour bars (one per row with ``shared_scale``, else one per
        panel).
      colorbar_label: images: the colour bars' label.
      ylabel: sequences: the y-axis quantity, shown under each method's name.
      hypothetical: sequences with inputs: as in :func:`sequence_logo`, for every method.
      alphabet_axis: sequences: the alphabet axis of one example, ``-1`` (default) for
        (length, 4), ``0`` for a PyTorch model's (4, length).

    Returns:
      The matplotlib Figure.

    Raises:
      DeepLiftError: (a ``ValueError``) an unknown kind, no methods, or shapes that differ
        between methods or do not match the inputs.
    """
    plt = _mpl()
    if kind != "image":
        attributions = {k: _bases_last(v, alphabet_axis, True) for k, v in attributions.items()}
        inputs = _bases_last(inputs, alphabet_axis, True)
    arrs, inputs = _panel_arrays(attributions, inputs, kind, alphabet, row_titles)
    if kind == "image":
        return _image_panels(
            plt,
            arrs,
            inputs,
            positive_only=positive_only,
            channel_axis=channel_axis,
            row_titles=row_titles,
            panel_size=panel_size,
            shared_scale=shared_scale,
            colorbar=colorbar,
            colorbar_label=colorbar_label,
        )
    return _sequence_panels(
        plt,
        arrs,
        inputs,
        kind=kind,
        row_titles=row_titles,
        highlight=highlight,
        alphabet=alphabet,
        panel_size=panel_size,
        shared_scale=shared_scale,
        ylabel=ylabel,
        hypothetical=hypothetical,
    )
