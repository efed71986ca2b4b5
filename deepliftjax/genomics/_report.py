"""The Fig. 3-style figure and the Markdown report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from deepliftjax._errors import error

from ._seeds import METRICS, headline

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def plot_scores(
    path: str | os.PathLike | None,
    x: np.ndarray,
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    titles: Sequence[str] | None = None,
    chance: Mapping[str, np.ndarray] | None = None,
) -> Figure | None:
    """Fig. 3 in the field's style: for each sequence, one letter logo per method (the letter
    of the present base, height = the position's score: the present-base projection of
    :func:`deepliftjax.plot.present_base`), all methods on one y-scale, the planted motif
    instances shaded, and the unlabelled chance matches of the motifs in other colours.

    Args:
      path: output PNG path; None returns the figure instead of writing it.
      x: (k, length, 4) one-hot sequences.
      scores: method -> (k, length, 4) scores.
      masks: motif name -> (k, length) bool motif positions.
      titles: optional title per sequence.
      chance: motif name -> (k, length) bool positions of chance matches (not planted).

    Returns:
      None after writing ``path``; the Figure when ``path`` is None.
    """
    from deepliftjax import plot

    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] == 0:
        raise error(
            f"no sequences to plot (x has shape {x.shape}).",
            "pass a non-empty batch of one-hot sequences, (n, length, 4).",
        )
    k = x.shape[0]
    highlight = [
        {f"{m} instance": np.asarray(v[i], bool) for m, v in masks.items()}
        | {f"{m} chance match": np.asarray(v[i], bool) for m, v in (chance or {}).items()}
        for i in range(k)
    ]
    fig = plot.method_panels(
        {m: np.asarray(v) for m, v in scores.items()},
        x,
        kind="logo",
        hypothetical=False,  # contributions: each position's sum, on the present base
        highlight=highlight,
        row_titles=list(titles) if titles is not None else None,
        panel_size=(12.0, 1.35),
        ylabel="score (logit)",
    )
    handles = []
    for ax in fig.axes:
        if ax.get_legend() is not None:
            handles = handles or ax.get_legend().legend_handles
            ax.get_legend().remove()
    fig.suptitle(
        "Letter height: score of the base present (contribution to the logit); one y-scale per "
        "sequence; shaded: planted motif instances"
        + (" and unlabelled chance matches of the motifs (PWM scan)" if chance else ""),
        fontsize=9,
        x=0.01,
        ha="left",
    )
    h = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / h))
    if handles:  # a line of its own under the title: four entries with chance matches
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0.0, 1 - 0.3 / h),
            ncol=len(handles),
            fontsize=8,
            frameon=False,
        )
    if path is None:
        return fig
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _bits(ppm: np.ndarray) -> np.ndarray:
    """A PPM scaled by information content per position (a motif logo's letter heights)."""
    p = np.clip(np.asarray(ppm, float), 1e-9, 1.0)
    p = p / p.sum(1, keepdims=True)
    return p * (2.0 + (p * np.log2(p)).sum(1, keepdims=True))


def plot_patterns(
    path: str | os.PathLike | None,
    patterns: Sequence[Any],
    motifs: Mapping[str, Any],
    *,
    max_patterns: int = 8,
) -> Figure | None:
    """The motif step's figure: the known motifs' logos, then per discovered pattern its CWM
    (mean present-base contributions of its seqlets) and its sequence logo (bits).

    Args:
      path: output PNG path; None returns the figure instead.
      patterns: :class:`~deepliftjax.genomics.DiscoveredPattern` list (the first
        ``max_patterns`` are drawn).
      motifs: name -> motif with ``.pwm`` (or a PWM), the ground truth.
      max_patterns: most patterns drawn.

    Returns:
      None after writing ``path``; the Figure when ``path`` is None.
    """
    import matplotlib.pyplot as plt

    from deepliftjax import plot

    shown = list(patterns)[:max_patterns]
    rows = 1 + max(len(shown), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 1.7 * rows), squeeze=False)
    for ax, (name, m) in zip(axes[0], motifs.items(), strict=False):
        plot.sequence_logo(
            _bits(getattr(m, "pwm", m)), ax=ax, ylabel="bits", xlabel="position in motif"
        )
        ax.set_title(f"ground truth: {name}", fontsize=9, loc="left")
    for r, p in enumerate(shown, start=1):
        best, sim = p.best_match
        sims = ", ".join(f"{k} {v:.3f}" for k, v in p.similarity.items())
        where = "position in pattern"
        plot.sequence_logo(p.cwm, ax=axes[r, 0], ylabel="CWM", xlabel=where)
        axes[r, 0].set_title(
            f"{p.name}: {p.num_seqlets} seqlets; similarity {sims}", fontsize=9, loc="left"
        )
        plot.sequence_logo(_bits(p.ppm), ax=axes[r, 1], ylabel="bits", xlabel=where)
        axes[r, 1].set_title(f"{p.name} sequence logo (best match {best})", fontsize=9, loc="left")
    if not shown:
        axes[1, 0].set_title("modisco-lite found no pattern", fontsize=9, loc="left")
        axes[1, 1].set_axis_off()
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def format_motif_matches(record: Mapping[str, Any]) -> str:
    """Formats the motif step's patterns as a Markdown table: seqlets, similarity to each
    known motif, and the motif matched (if any).

    Args:
      record: the ``motifs`` entry of metrics.json.

    Returns:
      The table as Markdown text.
    """
    names = list(record["matches"])
    matched = {p: m for m, v in record["matches"].items() for p in v["patterns"]}
    lines = [
        "| pattern | seqlets | " + " | ".join(f"similarity to {m}" for m in names) + " | matches |",
        "|---|---:|" + "---:|" * len(names) + "---|",
    ]
    for p in record["patterns"]:
        sims = " | ".join(f"{p['similarity'][m]:.3f}" for m in names)
        lines.append(
            f"| {p['name']} | {p['num_seqlets']} | {sims} | {matched.get(p['name'], '-')} |"
        )
    return "\n".join(lines)


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
    """Formats the motif-recovery rows as a Markdown table.

    Args:
      table: rows with keys method, motif, auprc_core, auprc_motif, top_window,
        top_window_alone.

    Returns:
      The table as Markdown text.
    """
    anyc = all("top_window_alone_any" in r for r in table)
    lines = [
        "| method | motif | auPRC, informative positions | auPRC, whole motif | top window "
        "| top window, other motif masked |" + (" same, planted or chance match |" if anyc else ""),
        "|---|---|---:|---:|---:|---:|" + ("---:|" if anyc else ""),
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['motif']} | {r['auprc_core']:.3f} | {r['auprc_motif']:.3f} "
            f"| {r['top_window']:.3f} | {r['top_window_alone']:.3f} |"
            + (f" {r['top_window_alone_any']:.3f} |" if anyc else "")
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

    anyc = all("n_missed_any" in r for r in table)
    lines = [
        "| method | motif | missed |"
        + (" missed, chance matches counted as found |" if anyc else "")
        + " logit drop on occlusion, missed | logit drop, found |",
        "|---|---|---:|" + ("---:|" if anyc else "") + "---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['motif']} | {r['n_missed']} |"
            + (f" {r['n_missed_any']} |" if anyc else "")
            + f" {f(r['drop_missed'])} | {f(r['drop_found'])} |"
        )
    return "\n".join(lines)


def _pm(mean: float, sd: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def format_seed_summary(
    summary: Sequence[Mapping[str, Any]], paired: Sequence[Mapping[str, Any]]
) -> str:
    """Formats the across-seed results as two Markdown tables: mean ± sd per method and
    motif, and the seed-by-seed comparison of the two methods.

    Args:
      summary: rows of :func:`deepliftjax.genomics._seeds.summarize_seeds`.
      paired: rows of :func:`deepliftjax.genomics._seeds.paired_comparison` (may be empty).

    Returns:
      The tables as Markdown text.
    """
    anyc = all("n_missed_any_mean" in r for r in summary)
    lines = [
        "| method | motif | auPRC, informative positions | auPRC, whole motif | top window "
        "| top window, other motif masked | missed |"
        + (" missed, chance matches counted as found |" if anyc else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if anyc else ""),
    ]
    for r in summary:
        cells = [
            _pm(r[f"{m}_mean"], r[f"{m}_sd"])
            for m in ("auprc_core", "auprc_motif", "top_window", "top_window_alone")
        ]
        cells.append(_pm(r["n_missed_mean"], r["n_missed_sd"], 0))
        if anyc:
            cells.append(_pm(r["n_missed_any_mean"], r["n_missed_any_sd"], 0))
        lines.append(f"| {r['method']} | {r['motif']} | " + " | ".join(cells) + " |")
    for a, b in dict.fromkeys((p["a"], p["b"]) for p in paired):
        rows = [p for p in paired if (p["a"], p["b"]) == (a, b)]
        n = len(rows[0]["diff_values"])
        lines += [
            "",
            f"| motif | metric | {a} − {b}, mean ± sd | seeds favouring {a} "
            f"| seeds favouring {b} | ties | sign test p |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for p in rows:
            label = METRICS[p["metric"]][0]
            lines.append(
                f"| {p['motif']} | {label} | {_pm(p['diff_mean'], p['diff_sd'])} "
                f"| {p['favour_a']} of {n} | {p['favour_b']} of {n} | {p['ties']} "
                f"| {p['sign_p']:.2g} |"
            )
    return "\n".join(lines)


def format_per_seed(runs: Sequence[Mapping[str, Any]], *methods: str) -> str:
    """Formats one line per training seed: the model, and the methods' auPRC (informative
    positions) and missed instances per motif.

    Args:
      runs: the per-seed records of metrics.json (``runs``).
      *methods: the methods to show, in this order (those every seed scored).

    Returns:
      The table as Markdown text.
    """
    motifs = list(dict.fromkeys(r["motif"] for r in runs[0]["table"]))
    names = " / ".join(methods)
    head = "| training seed | test auROC | epochs (best) | scored |"
    for m in motifs:
        head += f" {m} auPRC, {names} | {m} missed, {names} |"
    lines = [head, "|---:|---:|---:|---:|" + "---:|---:|" * len(motifs)]
    for run in runs:
        ix = {(r["method"], r["motif"]): r for r in run["table"]}
        cells = [
            str(run["train_seed"]),
            f"{run['test_auroc']:.3f}",
            f"{run['epochs_run']} ({run['best_epoch']})",
            str(run["n_scored"]),
        ]
        for m in motifs:
            if all((a, m) in ix for a in methods):
                cells.append(" / ".join(f"{ix[(a, m)]['auprc_core']:.3f}" for a in methods))
                cells.append(" / ".join(str(ix[(a, m)]["n_missed"]) for a in methods))
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _methods_of(results: Mapping[str, Any]) -> set[str]:
    """The methods every seed scored."""
    return set.intersection(*({r["method"] for r in run["table"]} for run in results["runs"]))


def _intro_lines(results: Mapping[str, Any], seeds: Sequence[int]) -> list[str]:
    """The report's title, command, data and model, test auROC, versions and (with several
    seeds) the one-line summary across seeds."""
    cfg, data, model = results["config"], results["data"], results["model"]
    version = results.get("package", {}).get("version", "?")
    lines = [
        "# DeepLIFT on simulated genomics data (paper §3.2)",
        "",
        f"Command: `{results['command']}`",
        "",
        "## Data and model",
        "",
        f"- {data['n_train']} training, {data['n_val']} validation and {data['n_test']} test "
        f"sequences of length {cfg['seq_len']}, uniform background, data seed {cfg['seed']}. "
        "Positives hold one GATA_disc1 and one TAL1_known1 (CAGATG) instance sampled from the "
        "ENCODE PWMs; negatives hold one or two instances of one of them. Forward strand only; "
        "instances never overlap.",
        "- Model: Conv(20 filters x 15, stride 1, VALID) - PReLU - max pool 50/50 (last window "
        "36 wide) - Dense 200 - PReLU - Dense 200 - PReLU - Dense 1; sigmoid cross-entropy, "
        f"Adam (lr {cfg['learning_rate']}), early stopping on validation loss "
        f"(best epoch {model['best_epoch']} of {model['epochs_run']}).",
        "",
        f"**Test auROC: {model['test_auroc']:.3f}** (auPRC {model['test_auprc']:.3f}; the paper "
        f"reports auROC 0.907), training seed {seeds[0]}.",
        "",
        f"deepliftjax {version}, jax {results['jax']['version']} ({results['jax']['backend']}).",
        "",
    ]
    across = results.get("across_seeds")
    if across and across.get("paired"):
        n = across["n_seeds"]
        pairs = dict.fromkeys((p["a"], p["b"]) for p in across["paired"])
        lines += [f"**In brief, across {n} training seeds** (details below):", ""]
        for a, b in pairs:
            rows = [p for p in across["paired"] if (p["a"], p["b"]) == (a, b)]
            lines.append(f"- {a} vs {b}: " + headline(rows, n))
        lines.append("")
    return lines


def _recovery_lines(results: Mapping[str, Any], seeds: Sequence[int]) -> list[str]:
    """The first seed's motif recovery: the metrics explained, the table, the summation
    check, the run's findings and the missed instances with their occlusion drop."""
    cfg = results["config"]
    lines = [
        f"## Motif recovery, training seed {seeds[0]} (one run)",
        "",
        f"Scores target the pre-sigmoid logit, on the {results['n_scored']} correctly predicted "
        "test positives. DeepLIFT uses the paper's reference: all zeros after the §2.6 weight "
        "normalisation of the first conv layer (= the uniform reference 0.25 with multipliers "
        "mean-centred over the base axis), with the paper's Rescale rule; *RevealCancel dense, "
        "Rescale conv* is Shrikumar et al. (2017)'s best variant on genomics models "
        "(`rule={'dot_general': 'reveal_cancel', 'conv_general_dilated': 'rescale'}`), same "
        "reference; DeepLIFT-SHAP averages DeepLIFT (Rescale) over dinucleotide-shuffled "
        "references of each sequence. A position's score is the score of the base present "
        "(for DeepLIFT-SHAP: its contributions summed over the bases).",
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
    ]
    ch = results.get("chance_matches")
    if ch:
        counts = "; ".join(
            f"{m}: {c['matches']} in {c['sequences']} of the {results['n_scored']} sequences"
            for m, c in ch["counts"].items()
        )
        lines.append(
            "- *planted or chance match*: the background is uniform, so it holds chance copies "
            "of the motifs that the simulator did not plant and the labels do not mark. Each "
            "scored sequence is scanned with the PWMs on both strands: a window whose log-odds "
            "score against the uniform background, summed over the motif's informative "
            f"positions (>= {ch['min_bits']:g} bit), reaches {ch['threshold']:g} of the "
            "consensus's is a match; matches overlapping no planted instance of the motif are "
            f"chance matches ({counts}). The metric counts a top window on one as found; "
            "the other metrics count planted instances only."
        )
    lines += ["", format_table(results["table"]), ""]
    if results.get("summation"):
        lines += [
            "Summation to delta (eq. 1), max over scored sequences of "
            "|sum of scores - (logit(x) - logit(reference))|: "
            + ", ".join(
                f"{k}: {v:.2e}" + (" (its completeness error)" if "integrated" in k else "")
                for k, v in results["summation"].items()
            )
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
    return lines


def _across_seeds_lines(results: Mapping[str, Any], seeds: Sequence[int]) -> list[str]:
    """The section across training seeds (none with a single seed)."""
    across = results.get("across_seeds")
    if not across:
        return []
    aurocs = ", ".join(f"{r['test_auroc']:.3f}" for r in results["runs"])
    scored = ", ".join(str(r["n_scored"]) for r in results["runs"])
    lines = [
        "",
        f"## Across {across['n_seeds']} training seeds",
        "",
        f"The same data, {across['n_seeds']} models trained with seeds "
        + ", ".join(str(s) for s in seeds)
        + f" (test auROC {aurocs}; correctly predicted positives scored: {scored}). "
        "Mean ± sd (sample sd) over seeds; each seed's methods are compared on that "
        "seed's sequences, so the second table is a paired comparison (missed compared "
        "as a fraction of the sequences scored).",
        "",
        format_seed_summary(across["summary"], across["paired"]),
        "",
        "Per seed:",
        "",
        format_per_seed(
            results["runs"],
            *[m for m in results["methods"] if m != "random" and m in _methods_of(results)],
        ),
        "",
    ]
    return lines + across.get("findings", [])


def _motif_lines(results: Mapping[str, Any]) -> list[str]:
    """The motif-discovery section (``--motifs``; none without it)."""
    rec = results.get("motifs")
    if not rec:
        return []
    lines = [
        "",
        "## Motif discovery (modisco-lite)",
        "",
        f"DeepLIFT-SHAP of the logit with {rec['shuffles']} dinucleotide-shuffled references "
        f"per sequence, on {rec['n_sequences']} correctly predicted test positives (training "
        f"seed {results['seeds']['train_seeds'][0]}); the hypothetical contributions and the "
        "one-hot sequences go to modisco-lite ("
        + ", ".join(f"{k}={v}" for k, v in rec["modisco_options"].items())
        + "; otherwise its defaults). Max summation residual over sequences and references "
        f"{rec['summation_residual']:.1e}; the present-base projection (`projected.npy` = "
        "hypothetical × one-hot) sums per position to the contributions' sum within "
        f"{rec['projection_check']:.1e}. Similarity: the best-alignment Pearson correlation "
        "of a pattern's position probability matrix with the motif's PWM, both strands "
        f"(a match: best match with similarity >= {rec['match_threshold']}).",
        "",
    ]
    for m, v in rec["matches"].items():
        if v["patterns"]:
            lines.append(
                f"- **{m}: found**, as {', '.join(v['patterns'])} ({v['num_seqlets']} "
                f"seqlets); best similarity {v['similarity']:.3f} ({v['best']})."
            )
        else:
            best = "no pattern" if v["best"] is None else f"{v['best']}, {v['similarity']:.3f}"
            lines.append(f"- **{m}: not found** (most similar: {best}).")
    lines += [
        "",
        format_motif_matches(rec),
        "",
        f"![discovered patterns]({rec['figure']})",
        "",
        "Top row: the ground-truth PWMs (bits). Then per pattern: its CWM (mean present-base "
        "contributions of its seqlets, drawn with `plot.sequence_logo`) and its sequence logo.",
        "",
        f"Motif step: {rec['time_s']:.0f} s (DeepLIFT-SHAP {rec['attribute_s']:.0f} s, "
        f"modisco-lite {rec['modisco_s']:.0f} s including its numba compilation, figure "
        f"{rec['figure_s']:.0f} s). Written beside this report: "
        + ", ".join(f"`{f}`" for f in rec["files"])
        + " (`(N, L, 4)` float32) and `motifs.png`.",
    ]
    return lines


def _figure_lines(results: Mapping[str, Any], seeds: Sequence[int]) -> list[str]:
    """The figure, its caption and the wall time."""
    ex = results.get("figure_examples", {})
    lines = [
        "",
        "## Figure",
        "",
        f"![Fig. 3]({results['figure']})",
        "",
        f"Fig. 3 (training seed {seeds[0]}): for each of "
        f"{len(ex.get('test_index', [])) or 'the first'} correctly predicted test positives, "
        "letter logos of the scores of "
        + ", ".join(ex.get("methods", ["DeepLIFT", "gradient×input"]))
        + " (top to bottom): at each "
        "position the letter of the base present, its height the position's score (its "
        "contribution to the logit, the present-base projection; below the axis when "
        "negative). The methods of a sequence share one "
        "y-scale; shaded: the planted motif instances and, in other colours, the chance "
        "matches of the motifs found by the PWM scan.",
    ]
    if ex.get("disagreement") is not None:
        lines[-1] += (
            f" The last one (test sequence {ex['disagreement']}) is the positive where the "
            f"methods disagree most: {ex['disagreement_note'].removeprefix('methods disagree: ')}"
            " (top window, other motif masked)."
        )
    lines += [
        "",
        f"Wall time: {results['timing']['total_s']:.0f} s "
        + "("
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["timing"].items() if k != "total_s")
        + ").",
        "",
    ]
    return lines


def write_report(path: str | os.PathLike, results: Mapping[str, Any]) -> None:
    """Writes the Markdown report.

    Args:
      path: output path.
      results: the experiment's results (as written to metrics.json).
    """
    seeds = results.get("seeds", {}).get("train_seeds", [results["config"]["seed"]])
    lines = [
        *_intro_lines(results, seeds),
        *_recovery_lines(results, seeds),
        *_across_seeds_lines(results, seeds),
        *_motif_lines(results),
        *_figure_lines(results, seeds),
    ]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
