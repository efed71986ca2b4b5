"""Results across training seeds: mean ± sd per method and motif, and paired comparisons.

Every seed trains its own model on the same data, then scores its own correctly predicted
test positives with every method, so within a seed the methods are compared on the same
sequences (a paired comparison), and across seeds the spread shows how much of a difference
is the training run rather than the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepliftjax._errors import error

Row = Mapping[str, Any]

METRICS: dict[str, tuple[str, bool]] = {
    "auprc_core": ("auPRC, informative positions", True),
    "auprc_motif": ("auPRC, whole motif", True),
    "top_window": ("top window", True),
    "top_window_alone": ("top window, other motif masked", True),
    "n_missed": ("missed instances", False),
    "frac_missed": ("fraction missed", False),
    "top_window_alone_any": ("top window on a planted or chance match", True),
    "n_missed_any": ("missed, chance matches counted as found", False),
    "frac_missed_any": ("fraction missed, chance matches counted as found", False),
}
"""metric -> (label, higher is better). The ``_any`` metrics count a top window on an
unlabelled chance match of the motif (``_scan``) as found; the others planted instances
only. A table without them (an older run) is summarised on the others."""

PAIRED_METRICS = (
    "auprc_core",
    "auprc_motif",
    "top_window",
    "top_window_alone",
    "frac_missed",
    "frac_missed_any",
)
"""The metrics compared seed by seed (missed as a fraction: each seed scores its own count of
correctly predicted positives)."""

COUNTS = {"frac_missed": "n_missed", "frac_missed_any": "n_missed_any"}
"""A fraction's count, shown in findings."""


def _sd(v: np.ndarray) -> float | None:
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def summarize_seeds(tables: Sequence[Sequence[Row]]) -> list[dict[str, Any]]:
    """Mean, sample sd (ddof 1) and per-seed values of each metric, per method and motif.

    Args:
      tables: one motif-recovery table per seed (rows with method, motif and the metrics of
        :data:`METRICS`).

    Returns:
      One row per (method, motif), in the first table's order, with ``<metric>_mean``,
      ``<metric>_sd`` (None for one seed) and ``<metric>_values``, and ``n_seeds``.
    """
    if not tables:
        raise error("no seeds to summarize.", "pass one results table per seed.")
    keys = [(r["method"], r["motif"]) for r in tables[0]]
    index = [{(r["method"], r["motif"]): r for r in t} for t in tables]
    out = []
    for method, motif in keys:
        rows = [ix[(method, motif)] for ix in index]
        rec: dict[str, Any] = {"method": method, "motif": motif, "n_seeds": len(rows)}
        for m in METRICS:
            if not all(m in r for r in rows):
                continue
            v = np.array([r[m] for r in rows], dtype=np.float64)
            rec[f"{m}_mean"] = float(v.mean())
            rec[f"{m}_sd"] = _sd(v)
            rec[f"{m}_values"] = [int(x) if m.startswith("n_") else float(x) for x in v]
        out.append(rec)
    return out


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven with a fair coin.

    Args:
      wins: seeds favouring one method.
      losses: seeds favouring the other (ties left out).

    Returns:
      The p-value (1.0 when no seed decides).
    """
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def paired_comparison(
    tables: Sequence[Sequence[Row]],
    a: str = "DeepLIFT",
    b: str = "gradient×input",
    *,
    tol: float = 1e-12,
) -> list[dict[str, Any]]:
    """Seed-by-seed comparison of two methods on each motif and metric.

    Args:
      tables: one motif-recovery table per seed.
      a, b: the two methods.
      tol: differences at most this large count as ties.

    Returns:
      One row per (motif, metric) of :data:`PAIRED_METRICS`: ``diff_values`` (a - b per
      seed), ``diff_mean``, ``diff_sd``, ``favour_a``, ``favour_b``, ``ties`` (seeds where a
      is better, b is better, neither; "better" respects the metric's direction) and
      ``sign_p`` (:func:`sign_test_p`).
    """
    if not tables:
        raise error("no seeds to compare.", "pass one results table per seed.")
    motifs = list(dict.fromkeys(r["motif"] for r in tables[0] if r["method"] in (a, b)))
    present = [m for m in PAIRED_METRICS if all(m in r for t in tables for r in t)]
    out = []
    for motif in motifs:
        for m in present:
            diffs = []
            for t in tables:
                ix = {(r["method"], r["motif"]): r for r in t}
                if (a, motif) not in ix or (b, motif) not in ix:
                    raise error(
                        f"a seed's table lacks {a!r} or {b!r} on {motif!r}.",
                        "compare methods that every seed ran (the same methods= for all seeds).",
                    )
                diffs.append(float(ix[(a, motif)][m]) - float(ix[(b, motif)][m]))
            d = np.array(diffs)
            higher = METRICS[m][1]
            good = d > tol if higher else d < -tol
            bad = d < -tol if higher else d > tol
            fa, fb = int(good.sum()), int(bad.sum())
            out.append(
                {
                    "motif": motif,
                    "metric": m,
                    "a": a,
                    "b": b,
                    "diff_values": [float(x) for x in d],
                    "diff_mean": float(d.mean()),
                    "diff_sd": _sd(d),
                    "favour_a": fa,
                    "favour_b": fb,
                    "ties": len(d) - fa - fb,
                    "sign_p": sign_test_p(fa, fb),
                }
            )
    return out


def _pm(mean: float, sd: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def _strength(fa: int, fb: int, n: int, a: str, b: str) -> str:
    """How strongly the seeds support a difference, in words."""
    ties = n - fa - fb
    tie = "" if ties == 0 else f", {ties} tied"
    if fa == n:
        return f"{a} better in all {n} seeds"
    if fb == n:
        return f"{b} better in all {n} seeds"
    if fa > fb:
        return f"{a} better in {fa} of {n} seeds, {b} in {fb}{tie}: not consistent"
    if fb > fa:
        return f"{b} better in {fb} of {n} seeds, {a} in {fa}{tie}: not consistent"
    return f"no winner ({fa} seeds each{tie})"


def seed_findings(
    summary: Sequence[Row],
    paired: Sequence[Row],
    n_seeds: int,
    a: str = "DeepLIFT",
    b: str = "gradient×input",
    *,
    heading: bool = True,
    caveat: bool = True,
) -> list[str]:
    """Plain-language findings across seeds, no stronger than the seeds allow.

    Args:
      summary: :func:`summarize_seeds` rows.
      paired: :func:`paired_comparison` rows for methods a and b (rows of other pairs
        are left out).
      n_seeds: the number of seeds.
      a, b: the two methods.
      heading: start with the section heading.
      caveat: end with the sign test's caveat.

    Returns:
      Markdown lines (a heading, one bullet per motif and a closing caveat).
    """
    rows = {(r["method"], r["motif"]): r for r in summary}
    paired = [p for p in paired if (p["a"], p["b"]) == (a, b)]
    motifs = list(dict.fromkeys(p["motif"] for p in paired))
    out = [f"## Findings across {n_seeds} training seeds", ""] if heading else []
    b_major: list[str] = []
    b_minor: list[str] = []
    for motif in motifs:
        ra, rb = rows[(a, motif)], rows[(b, motif)]
        parts = []
        for p in (p for p in paired if p["motif"] == motif):
            m = p["metric"]
            label = METRICS[m][0]
            if m in COUNTS:
                n_key = COUNTS[m]
                va = _pm(ra[f"{n_key}_mean"], ra[f"{n_key}_sd"], 0)
                vb = _pm(rb[f"{n_key}_mean"], rb[f"{n_key}_sd"], 0)
                label = METRICS[n_key][0]
            else:
                va, vb = _pm(ra[f"{m}_mean"], ra[f"{m}_sd"]), _pm(rb[f"{m}_mean"], rb[f"{m}_sd"])
            parts.append(
                f"{label} {va} vs {vb} ({_strength(p['favour_a'], p['favour_b'], n_seeds, a, b)})"
            )
            item = f"{motif} {label} ({p['favour_b']} of {n_seeds})"
            if p["favour_b"] > p["favour_a"]:
                b_major.append(item)
            elif p["favour_b"] > 0:
                b_minor.append(item)
        out.append(f"- {motif} ({a} vs {b}, mean ± sd over seeds): " + "; ".join(parts) + ".")
    if b_major or b_minor:
        text = f"- Where {b} does better: "
        if b_major:
            text += "in most seeds on " + "; ".join(b_major)
        if b_minor:
            text += ("; and " if b_major else "") + "in some seeds on " + "; ".join(b_minor)
        out.append(text + ".")
    else:
        out.append(f"- {b} does better in no metric on any seed.")
    return out + [caveat_line(n_seeds)] if caveat else out


def caveat_line(n_seeds: int) -> str:
    """What a count of seeds can and cannot show (the sign test's best p)."""
    best = sign_test_p(n_seeds, 0)
    return (
        f"- Strength: with {n_seeds} seeds, even a unanimous split has a two-sided sign-test "
        f"p of {best:.2g}; read 'all {n_seeds} seeds' as consistent across these training runs "
        "on one simulated data set, not as a significance test, and a mixed split as no "
        "established difference."
    )


def headline(paired: Sequence[Row], n_seeds: int) -> str:
    """One sentence per motif on auPRC (informative positions) and missed instances: which
    method is better in every seed, or that neither is.

    Args:
      paired: :func:`paired_comparison` rows.
      n_seeds: the number of seeds.

    Returns:
      Markdown text.
    """
    parts = []
    pair = (paired[0]["a"], paired[0]["b"]) if paired else None
    paired = [p for p in paired if (p["a"], p["b"]) == pair]  # the first pair's rows
    for motif in dict.fromkeys(p["motif"] for p in paired):
        rows = {p["metric"]: p for p in paired if p["motif"] == motif}
        au, mi = rows["auprc_core"], rows["frac_missed"]
        a, b = au["a"], au["b"]
        if au["favour_a"] == mi["favour_a"] == n_seeds:
            parts.append(f"{motif}: {a} better in all {n_seeds} seeds (auPRC and missed)")
        elif au["favour_b"] == mi["favour_b"] == n_seeds:
            parts.append(f"{motif}: {b} better in all {n_seeds} seeds (auPRC and missed)")
        else:
            parts.append(
                f"{motif}: no consistent winner (higher auPRC: {a} in {au['favour_a']}, {b} in "
                f"{au['favour_b']} of {n_seeds} seeds; fewer missed: {a} in {mi['favour_a']}, "
                f"{b} in {mi['favour_b']})"
            )
    return "; ".join(parts) + "."


def best_counts(
    tables: Sequence[Sequence[Row]], methods: Sequence[str], motif: str, metric: str
) -> dict[str, int]:
    """In how many seeds each method is the best of ``methods`` on ``motif`` and ``metric``
    (alone: a seed where two share the best value counts for neither)."""
    higher = METRICS[metric][1]
    out = dict.fromkeys(methods, 0)
    for t in tables:
        ix = {(r["method"], r["motif"]): r for r in t}
        vals = {m: float(ix[(m, motif)][metric]) for m in methods if (m, motif) in ix}
        if not vals:
            continue
        best = (max if higher else min)(vals.values())
        winners = [m for m, v in vals.items() if abs(v - best) <= 1e-12]
        if len(winners) == 1:
            out[winners[0]] += 1
    return out


def ranking_lines(
    tables: Sequence[Sequence[Row]], methods: Sequence[str], motifs: Sequence[str]
) -> list[str]:
    """One bullet per motif: which method is best, in how many seeds, on auPRC (informative
    positions), missed instances and missed counting chance matches."""
    n = len(tables)
    out = []
    for motif in motifs:
        parts = []
        for metric, label in (
            ("auprc_core", "highest auPRC"),
            ("frac_missed", "fewest missed"),
            ("frac_missed_any", "fewest missed, chance matches counted as found"),
        ):
            if not all(metric in r for t in tables for r in t):
                continue
            counts = best_counts(tables, methods, motif, metric)
            ranked = sorted(((c, m) for m, c in counts.items() if c), reverse=True)
            if not ranked:
                parts.append(f"{label}: no method alone in any seed")
                continue
            lead = ranked[0]
            what = f"{lead[1]} in {lead[0]} of {n} seeds"
            rest = ", ".join(f"{m} in {c}" for c, m in ranked[1:])
            parts.append(f"{label}: {what}" + (f" ({rest})" if rest else ""))
        out.append(f"- {motif}: " + "; ".join(parts) + ".")
    return out
