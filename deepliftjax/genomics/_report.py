"""The Fig. 3-style figure and the Markdown report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BASE_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
MOTIF_COLORS = ("#7E57C2", "#26A69A", "#8D6E63", "#EC407A")


def plot_scores(
    path: str | os.PathLike,
    x: np.ndarray,
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    titles: Sequence[str] | None = None,
) -> None:
    """Writes a Fig. 3-style PNG: per-position scores of the present base, as bars coloured by
    base, one panel per method (in `scores` order) for each sequence, motif positions shaded.

    Args:
      path: output PNG path.
      x: (k, length, 4) one-hot sequences.
      scores: method -> (k, length, 4) scores.
      masks: motif name -> (k, length) bool motif positions.
      titles: optional title per sequence.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    x = np.asarray(x)
    k, length, _ = x.shape
    if k == 0:
        raise ValueError("no sequences to plot")
    names = list(scores)
    base = x.argmax(-1)
    colors = np.array(list(BASE_COLORS.values()))[base]
    fig, axes = plt.subplots(
        k * len(names), 1, figsize=(12, 1.6 * k * len(names) + 0.6), sharex=True, squeeze=False
    )
    for i in range(k):
        for j, name in enumerate(names):
            ax = axes[i * len(names) + j, 0]
            s = (np.asarray(scores[name][i]) * x[i]).sum(-1)
            for c, mask in enumerate(masks.values()):
                m = np.asarray(mask[i], dtype=bool)
                edges = np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0]))
                for a, b in zip(edges[::2], edges[1::2], strict=True):
                    ax.axvspan(
                        a - 0.5,
                        b - 0.5,
                        color=MOTIF_COLORS[c % len(MOTIF_COLORS)],
                        alpha=0.18,
                        lw=0,
                    )
            ax.bar(np.arange(length), s, width=1.0, color=colors[i], lw=0)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0 and titles is not None:
                ax.set_title(titles[i], fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("position")
    axes[-1, 0].set_xlim(-0.5, length - 0.5)
    handles = [Patch(color=c, label=b) for b, c in BASE_COLORS.items()]
    handles += [
        Patch(color=MOTIF_COLORS[c % len(MOTIF_COLORS)], alpha=0.3, label=f"{m} instance")
        for c, m in enumerate(masks)
    ]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
    """Formats the motif-recovery rows as a Markdown table.

    Args:
      table: rows with keys method, motif, auprc_core, auprc_motif, top_window,
        top_window_alone.

    Returns:
      The table as Markdown text.
    """
    lines = [
        "| method | motif | auPRC, informative positions | auPRC, whole motif | top window "
        "| top window, other motif masked |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['motif']} | {r['auprc_core']:.3f} | {r['auprc_motif']:.3f} "
            f"| {r['top_window']:.3f} | {r['top_window_alone']:.3f} |"
        )
    return "\n".join(lines)


def format_missed(table: Sequence[Mapping[str, Any]]) -> str:
    """Formats the missed-instance diagnostics as a Markdown table.

    Args:
      table: rows with keys method, motif, n_missed, drop_missed, drop_found.

    Returns:
      The table as Markdown text.
    """

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        "| method | motif | missed | logit drop on occlusion, missed | logit drop, found |",
        "|---|---|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['motif']} | {r['n_missed']} | {f(r['drop_missed'])} "
            f"| {f(r['drop_found'])} |"
        )
    return "\n".join(lines)


def write_report(path: str | os.PathLike, results: Mapping[str, Any]) -> None:
    """Writes the Markdown report.

    Args:
      path: output path.
      results: the experiment's results (as written to metrics.json).
    """
    cfg, data, model = results["config"], results["data"], results["model"]
    lines = [
        "# DeepLIFT on simulated genomics data (paper §3.2)",
        "",
        f"Command: `{results['command']}`",
        "",
        "## Data and model",
        "",
        f"- {data['n_train']} training, {data['n_val']} validation and {data['n_test']} test "
        f"sequences of length {cfg['seq_len']}, uniform background, seed {cfg['seed']}. "
        "Positives hold one GATA_disc1 and one TAL1_known1 (CAGATG) instance sampled from the "
        "ENCODE PWMs; negatives hold one or two instances of one of them. Forward strand only; "
        "instances never overlap.",
        "- Model: Conv(20 filters x 15, stride 1, VALID) - PReLU - max pool 50/50 (last window "
        "36 wide) - Dense 200 - PReLU - Dense 200 - PReLU - Dense 1; sigmoid cross-entropy, "
        f"Adam (lr {cfg['learning_rate']}), early stopping on validation loss "
        f"(best epoch {model['best_epoch']} of {model['epochs_run']}).",
        "",
        f"**Test auROC: {model['test_auroc']:.3f}** (auPRC {model['test_auprc']:.3f}; the paper "
        "reports auROC 0.907).",
        "",
        "## Motif recovery",
        "",
        f"Scores target the pre-sigmoid logit, on the {results['n_scored']} correctly predicted "
        "test positives. DeepLIFT uses the paper's reference: all zeros after the §2.6 weight "
        "normalisation of the first conv layer (= the uniform reference 0.25 with multipliers "
        "mean-centred over the base axis). A position's score is the score of the base present.",
        "",
        "- *auPRC*: per sequence, the auPRC of the per-position scores against the motif "
        "instance's positions (the motif's informative positions, information content >= "
        f"{cfg['min_bits']:g} bit, or all of its positions), averaged over sequences.",
        "- *top window*: fraction of sequences whose top-scoring window of the motif's length "
        "(sum of per-position scores) overlaps the motif instance by at least half its length. "
        "With both motifs present this asks which motif dominates; *other motif masked* "
        "leaves out windows touching the other motif's instance and so asks whether the "
        "motif is found at all.",
        "- *random*: the same metrics for i.i.d. Gaussian scores (the chance level).",
        "",
        format_table(results["table"]),
        "",
    ]
    if results.get("summation"):
        lines += [
            "Summation to delta (eq. 1), max over scored sequences of "
            "|sum of scores - (logit(x) - logit(reference))|: "
            + ", ".join(f"{k}: {v:.2e}" for k, v in results["summation"].items())
            + ".",
            "",
        ]
    lines += results.get("findings", [])
    lines += [
        "",
        "*Missed* instances are those whose top window, other motif masked, is not on the motif. "
        "The logit drop on occlusion (the motif's positions replaced by the reference 0.25) "
        "shows whether the model relies on the motif in those sequences:",
        "",
        format_missed(results["table"]),
    ]
    lines += [
        "",
        "## Figure",
        "",
        f"![Fig. 3]({results['figure']})",
        "",
        "Per-position scores of the base present (bars coloured by base), one panel per method, "
        "for the first correctly predicted test positives; shaded: the motif instances.",
        "",
        f"Wall time: {results['timing']['total_s']:.0f} s "
        + "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["timing"].items() if k != "total_s")
        + ").",
        "",
    ]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
