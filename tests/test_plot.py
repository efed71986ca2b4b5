"""The plot helpers draw non-empty PNGs and reject bad shapes with clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deepliftjax import DeepLiftError, plot  # noqa: E402

RNG = np.random.default_rng(0)
X = np.eye(4, dtype=np.float32)[RNG.integers(0, 4, 60)]
S = RNG.standard_normal((60, 4))


def _png(fig) -> np.ndarray:
    """Renders fig to PNG; checks size and content; returns the pixels."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500
    buf.seek(0)
    px = plt.imread(buf)
    assert px.std() > 0.01  # not blank
    return px


def test_logo_present_base_and_hypothetical() -> None:
    ax = plot.sequence_logo(
        S,
        X,
        hypothetical=True,
        highlight={"GATA": (10, 20), "E-box": X[:, 0] > 0},
        title="t",
        ylabel="score",
    )
    assert ax.get_xlim() == (-0.5, 59.5)
    # one compound letter patch per base present
    from matplotlib.patches import PathPatch

    assert sum(isinstance(p, PathPatch) for p in ax.patches) == 4
    lo, hi = ax.get_ylim()
    sx = (S * X).sum(1)
    assert lo <= sx.min() and hi >= sx.max()
    _png(ax.figure)
    ax = plot.sequence_logo(S)  # hypothetical: all four letters, stacked
    lo, hi = ax.get_ylim()
    assert hi >= np.clip(S, 0, None).sum(1).max() and lo <= np.clip(S, None, 0).sum(1).min()
    _png(ax.figure)


def test_logo_letter_heights_match_scores() -> None:
    s = np.zeros((3, 4))
    s[0, 0], s[1, 2], s[2, 3] = 2.0, -1.0, 0.5
    ax = plot.sequence_logo(s)
    ext = {round(p.get_path().get_extents().height, 3) for p in ax.patches}
    assert ext == {2.0, 1.0, 0.5}
    plt.close(ax.figure)


def test_bars_and_existing_axes() -> None:
    fig, axes = plt.subplots(2, 1)
    out = plot.sequence_bars(
        S, X, hypothetical=True, ax=axes[0], highlight={"m": [(3, 9), (30, 40)]}
    )
    assert out is axes[0]
    heights = sorted(round(p.get_height(), 6) for p in axes[0].patches if p.get_width() == 1.0)
    assert heights == sorted(np.round((S * X).sum(1), 6).tolist())
    plot.sequence_bars(S, ax=axes[1])
    _png(fig)


def test_image_heatmap() -> None:
    a = RNG.standard_normal((8, 8, 3))
    ax = plot.image_heatmap(a, positive_only=True, colorbar=True, title="DeepLIFT")
    im = ax.images[-1]
    np.testing.assert_allclose(im.get_array(), np.clip(a.sum(-1), 0, None))  # channels summed
    assert im.get_clim()[0] == 0.0
    _png(ax.figure)
    ax = plot.image_heatmap(a[..., 0], image=np.abs(a[..., 0]))
    lo, hi = ax.images[-1].get_clim()
    assert lo == -hi  # signed scores: centred on zero
    _png(ax.figure)


def test_method_panels_images_and_sequences() -> None:
    imgs = RNG.random((3, 8, 8))
    attrs = {"|gradient|": imgs, "gradient×input": imgs - 0.5, "DeepLIFT": imgs - 0.4}
    fig = plot.method_panels(
        attrs,
        imgs,
        positive_only={"gradient×input": True, "DeepLIFT": True},
        row_titles=["0", "1", "2"],
    )
    assert len(fig.axes) == 3 * 4 + 3  # and one colour bar per row
    _png(fig)
    fig = plot.method_panels(
        {"a": S[None], "b": -S[None]},
        X[None],
        hypothetical=True,
        kind="logo",
        highlight={"m": (5, 15)},
        row_titles=["seq"],
    )
    assert len(fig.axes) == 2
    _png(fig)
    fig = plot.method_panels(
        {"a": np.stack([S, S])},
        np.stack([X, X]),
        hypothetical=True,
        kind="bars",
        highlight=[{"m": (1, 4)}, {"m": (7, 9)}],
    )
    assert len(fig.axes) == 2
    _png(fig)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: plot.sequence_logo(np.zeros((10, 3))), r"\(length, 4\)"),
        (lambda: plot.sequence_logo(np.zeros((2, 10, 4))), r"index a batch"),
        (lambda: plot.sequence_logo(np.zeros((0, 4))), "empty"),
        (lambda: plot.sequence_logo(np.full((3, 4), np.nan)), "NaN"),
        (lambda: plot.sequence_logo(S, X[:10]), "onehot must have"),
        (lambda: plot.sequence_bars(S, highlight={"m": np.ones(5, bool)}), r"mask of shape"),
        (lambda: plot.sequence_bars(S, highlight={"m": [(1, 2, 3)]}), r"\(start, stop\)"),
        (lambda: plot.image_heatmap(np.zeros(5)), r"\(H, W\)"),
        (lambda: plot.image_heatmap(np.zeros((2, 3, 4, 5))), r"\(H, W\)"),
        (lambda: plot.image_heatmap(np.zeros((4, 4, 3)), channel_axis=None), "channel_axis"),
        (lambda: plot.image_heatmap(np.zeros((4, 4)), image=np.zeros((5, 5))), "image is"),
        (lambda: plot.method_panels({}), "empty"),
        (lambda: plot.method_panels({"a": np.zeros((2, 8, 8))}, kind="pie"), "kind"),
        (
            lambda: plot.method_panels({"a": np.zeros((2, 8, 8)), "b": np.zeros((2, 8, 7))}),
            "one shape",
        ),
        (lambda: plot.method_panels({"a": np.zeros((8, 8))}), r"scores\[None\]"),
        (lambda: plot.method_panels({"a": np.zeros((2, 8, 8))}, np.zeros((3, 8, 8))), "3 examples"),
        (lambda: plot.method_panels({"a": S}, kind="logo"), r"\(N, length, 4\)"),
        (lambda: plot.method_panels({"a": S[None]}, X, kind="logo"), "examples"),
    ],
)
def test_bad_shapes(call, match: str) -> None:
    with pytest.raises(DeepLiftError, match=match) as e:  # a ValueError too
        call()
    assert "\nHint: " in str(e.value), e.value
    plt.close("all")


def test_sequence_axes_are_labelled() -> None:
    ax = plot.sequence_logo(S, X, hypothetical=True)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("position", "score")
    plt.close(ax.figure)
    ax = plot.sequence_bars(
        S, X, hypothetical=False, ylabel="DeepLIFT score", xlabel=None, ylim=(-5.0, 5.0)
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("", "DeepLIFT score")
    assert ax.get_ylim() == (-5.0, 5.0)
    plt.close(ax.figure)


def test_sequence_panels_share_one_y_scale_per_example() -> None:
    from matplotlib.patches import PathPatch

    big = {"a": np.stack([S, S]), "b": np.stack([10 * S, S])}
    fig = plot.method_panels(
        big, np.stack([X, X]), kind="logo", highlight={"m": (5, 15)}, hypothetical=True
    )
    a0, b0, a1, b1 = fig.axes
    assert a0.get_ylim() == b0.get_ylim() and a1.get_ylim() == b1.get_ylim()
    assert b0.get_ylim()[1] >= (10 * S * X).sum(1).max()
    assert a1.get_ylim() != a0.get_ylim()  # examples keep their own scale
    assert [ax.get_ylabel() for ax in fig.axes] == ["a\nscore", "b\nscore"] * 2
    assert fig.axes[-1].get_xlabel() == "position"
    assert all(any(isinstance(p, PathPatch) for p in ax.patches) for ax in fig.axes)
    plt.close(fig)
    fig = plot.method_panels(
        big, np.stack([X, X]), kind="bars", shared_scale=False, hypothetical=True
    )
    assert fig.axes[0].get_ylim() != fig.axes[1].get_ylim()
    plt.close(fig)


def test_image_panels_share_one_colour_scale_per_row() -> None:
    imgs = RNG.random((2, 8, 8))
    attrs = {"small": imgs * 0.1, "large": imgs * 3.0}
    fig = plot.method_panels(attrs, imgs, colorbar_label="score (logit)")
    heat = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 and all(b.get_ylabel() == "score (logit)" for b in bars)
    for i in range(2):
        small, large = heat[3 * i + 1].images[0], heat[3 * i + 2].images[0]
        assert small.get_clim() == large.get_clim() == (0.0, pytest.approx(3.0 * imgs[i].max()))
    plt.close(fig)
    fig = plot.method_panels(attrs, shared_scale=False)
    heat = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert heat[0].images[0].get_clim() != heat[1].images[0].get_clim()
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 4  # one per panel
    plt.close(fig)


def test_heatmap_colour_bar_and_axis_labels() -> None:
    ax = plot.image_heatmap(
        S[:8], channel_axis=None, colorbar=True, xlabel="input feature", ylabel="example"
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("input feature", "example")
    bar = [a for a in ax.figure.axes if a.get_label() == "<colorbar>"]
    assert len(bar) == 1 and bar[0].get_ylabel() == "score"
    plt.close(ax.figure)


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"deepliftjax\[plot\]"):
        plot.sequence_logo(S)


# ---------------------------------------------------------------- present-base projection


def _drawn_heights(ax, length: int) -> np.ndarray:
    """Signed letter height per position of a logo with one letter a position."""
    from matplotlib.colors import to_hex
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    letter = {v.lower(): k for k, v in plot.BASE_COLORS.items()}
    out = np.zeros(length)
    for p in ax.patches:
        if not isinstance(p, PathPatch):
            continue
        glyph = plot._glyph(letter[to_hex(p.get_facecolor())])
        v = p.get_path().vertices
        for k in range(0, len(v), len(glyph.vertices)):  # one piece per position
            ext = Path(v[k : k + len(glyph.vertices)], glyph.codes).get_extents()
            out[int(round((ext.x0 + ext.x1) / 2))] += ext.y0 + ext.y1  # 0 to h, or -h to 0
    return out


@pytest.fixture(scope="module")
def shap_scores():
    """DeepLIFT-SHAP against one-hot references (as shuffles are): (x, contributions,
    hypothetical, delta)."""
    import jax
    import jax.numpy as jnp

    import deepliftjax as dl

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    length = 24
    x = jax.nn.one_hot(jax.random.randint(k1, (length,), 0, 4), 4)
    w1 = jax.random.normal(k2, (length * 4, 16))
    w2 = jax.random.normal(k3, (16,))

    def f(s):
        return jnp.tanh(s.reshape(-1) @ w1) @ w2

    refs = jax.nn.one_hot(jax.random.randint(jax.random.key(5), (8, length), 0, 4), 4)
    out = jax.jit(dl.deeplift_shap(f, refs, hypothetical=True))(x)
    delta = float(f(x) - jax.vmap(f)(refs).mean())
    return (
        np.asarray(x, np.float64),
        np.asarray(out.contributions, np.float64),
        np.asarray(out.hypothetical, np.float64),
        delta,
    )


def test_present_base_projection_sums_to_delta(shap_scores) -> None:
    x, contrib, hyp, delta = shap_scores
    from_contrib = plot.present_base(contrib, x, hypothetical=False)
    from_hyp = plot.present_base(hyp, x, hypothetical=True)
    np.testing.assert_allclose(from_contrib, from_hyp, atol=1e-5)  # one projection
    assert np.all(from_hyp[x == 0] == 0)  # only the present base
    assert from_hyp.sum() == pytest.approx(delta, rel=1e-4)  # summation to delta
    assert contrib.sum() == pytest.approx(delta, rel=1e-4)
    own = contrib * x  # the present base's own term only: loses -sum_{b != p} m_b r_b
    assert np.abs(own.sum(-1) - from_hyp.sum(-1)).max() > 0.05 * np.abs(from_hyp).max()
    with pytest.raises(ValueError, match="hypothetical=True"):
        plot.present_base(contrib, x)  # scores on absent bases: say which kind they are


def test_logo_and_bars_draw_the_projection(shap_scores) -> None:
    x, contrib, hyp, _ = shap_scores
    want = plot.present_base(hyp, x, hypothetical=True).sum(-1)
    own = (contrib * x).sum(-1)
    for scores, kind in ((contrib, False), (hyp, True)):
        ax = plot.sequence_logo(scores, x, hypothetical=kind)
        got = _drawn_heights(ax, len(x))
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.abs(got - own).max() > 0.05 * np.abs(want).max()
        plt.close(ax.figure)
        ax = plot.sequence_bars(scores, x, hypothetical=kind)
        bars = [p.get_height() for p in ax.patches if p.get_width() == 1.0]
        np.testing.assert_allclose(bars, want, atol=1e-5)
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="hypothetical=False"):
        plot.sequence_logo(contrib, x)
    plt.close("all")
    # scores zero off the present base (one-reference one-hot DeepLIFT): no flag needed
    ax = plot.sequence_logo(contrib * x, x)
    np.testing.assert_allclose(_drawn_heights(ax, len(x)), own, atol=1e-4)
    plt.close(ax.figure)
