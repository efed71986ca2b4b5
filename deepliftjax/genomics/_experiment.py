"""The paper's §3.2 experiment end to end, and the `deepliftjax-genomics` command."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax._errors import DeepLiftError, error

from ._attribute import (
    GRADIENT,
    METHODS,
    MIXED,
    MORE_METHODS,
    RESCALE,
    SHAP,
    SHAP_SHUFFLES,
    UNIFORM_REFERENCE,
    Method,
    attribute,
)
from ._metrics import auprc, auroc, motif_auprc, per_position, top_window_hit
from ._model import GenomicsCNN
from ._motifs import MODISCO, TINY_MODISCO, motif_step, require_modisco
from ._report import (
    format_missed,
    format_motif_matches,
    format_seed_summary,
    format_table,
    plot_patterns,
    plot_scores,
    write_report,
)
from ._scan import MATCH_THRESHOLD, chance_matches
from ._seeds import (
    caveat_line,
    paired_comparison,
    ranking_lines,
    seed_findings,
    summarize_seeds,
)
from ._simulate import GATA, TAL1, Motif, SimulatedData, load_motifs, simulate, split
from ._train import TrainResult, predict, train


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the experiment (defaults: the main command's full run).

    ``seed`` seeds the simulated data and the first training run; with ``seeds`` = N > 1,
    N models are trained on the same data with training seeds ``seed``, ``seed + 1``, ...
    (the first of them is the single-seed run). ``motifs`` adds the motif-discovery step
    (DeepLIFT-SHAP with ``shuffles`` dinucleotide shuffles on the first seed's correctly
    predicted test positives, then modisco-lite; ``tiny_modisco``: its small settings).
    """

    n_train: int = 16000
    n_val: int = 2000
    n_test: int = 4000
    seq_len: int = 200
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    patience: int = 4
    min_epochs: int = 8
    min_bits: float = 1.0
    n_plot: int = 4
    seed: int = 0
    seeds: int = 1
    motifs: bool = False
    shuffles: int = 20
    tiny_modisco: bool = False

    def __post_init__(self) -> None:
        for k in (
            "n_train",
            "n_val",
            "n_test",
            "epochs",
            "batch_size",
            "patience",
            "min_epochs",
            "seeds",
            "shuffles",
        ):
            if getattr(self, k) < 1:
                raise error(f"{k} must be >= 1, got {getattr(self, k)}.", "pass a positive int.")
        if self.n_train < self.batch_size:
            raise error(
                f"n_train ({self.n_train}) must be >= batch_size ({self.batch_size}).",
                "pass a smaller batch_size or a larger n_train.",
            )
        if self.n_val < 2 or self.n_test < 2:
            raise error(
                "n_val and n_test must be >= 2.",
                "the validation and test metrics need at least two sequences each.",
            )
        if self.learning_rate <= 0:
            raise error(f"learning_rate must be > 0, got {self.learning_rate}.", "pass e.g. 1e-3.")
        if self.n_plot < 1:
            raise error(f"n_plot must be >= 1, got {self.n_plot}.", "pass a positive int.")


TINY = dict(n_train=1500, n_val=300, n_test=300, epochs=4, n_plot=2, tiny_modisco=True)

NAMES = (GATA, TAL1)
A, B = RESCALE, GRADIENT
PAIRS = ((RESCALE, GRADIENT), (MIXED, GRADIENT), (SHAP, GRADIENT), (MIXED, RESCALE))
"""The paired comparisons across seeds: each DeepLIFT variant against gradient×input, and
the 2017 remedy against the paper's rules."""
FIGURE_METHODS = {
    RESCALE: "DeepLIFT\nRescale",
    MIXED: "DeepLIFT RC\ndense",
    GRADIENT: "gradient\n×input",
}
"""Fig. 3's rows per sequence, with their (short) axis labels."""
SINGLE_REFERENCE = (RESCALE, MIXED, "DeepLIFT RevealCancel", "integrated gradients")
"""The methods whose scores sum to logit(x) - logit(uniform reference): exactly, and for
integrated gradients up to its completeness error (``--all-methods``)."""


def package_version() -> str:
    """The installed deepliftjax version (the package's ``__version__`` if not installed)."""
    try:
        return importlib.metadata.version("deepliftjax")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        from deepliftjax import __version__

        return __version__


def training_seeds(config: Config) -> list[int]:
    """The training seeds of a run: ``seed, seed + 1, ..., seed + seeds - 1``."""
    return [config.seed + k for k in range(config.seeds)]


def make_data(
    config: Config,
) -> tuple[dict[str, Motif], SimulatedData, SimulatedData, SimulatedData]:
    """The motifs and the train / validation / test split of the simulated data.

    Args:
      config: the settings (sizes, sequence length, ``min_bits``, ``seed``).

    Returns:
      (motifs, train, validation, test).
    """
    motifs = load_motifs()
    n_all = config.n_train + config.n_val + config.n_test
    data = simulate(
        n_all,
        seq_len=config.seq_len,
        motifs=motifs,
        names=NAMES,
        min_bits=config.min_bits,
        seed=config.seed,
    )
    fr = np.array([config.n_train, config.n_val, config.n_test]) / n_all
    tr, va, te = split(data, tuple(fr))
    return motifs, tr, va, te


def fit(
    config: Config,
    tr: SimulatedData,
    va: SimulatedData,
    *,
    seed: int | None = None,
    progress: bool = True,
) -> tuple[GenomicsCNN, TrainResult]:
    """Trains the §3.2 CNN as the command does.

    Args:
      config: the settings.
      tr, va: training and validation data.
      seed: the training seed (default ``config.seed``).
      progress: show a progress bar.

    Returns:
      (model, training result).
    """
    model = GenomicsCNN()
    res = train(
        model,
        tr.x,
        tr.y,
        va.x,
        va.y,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.patience,
        min_epochs=min(config.min_epochs, config.epochs),
        seed=config.seed if seed is None else seed,
        progress=progress,
    )
    return model, res


def _single_findings(
    table: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    n: int,
    seed: int,
    n_seeds: int = 1,
) -> list[str]:
    """Plain-language comparison of each pair of :data:`PAIRS` in one run, every metric."""
    rows = {(r["method"], r["motif"]): r for r in table}
    out = [f"## Findings of this run (training seed {seed})", ""]
    for a, b in PAIRS:
        lines = _pair_findings(rows, names, n, a, b)
        if lines:
            out += [f"### {a} vs {b}", "", *lines, ""]
    if len(out) == 2:
        return []
    out.append(
        "- This is one training run; the differences move with the training seed. "
        + (
            f"The {n_seeds} seeds below show by how much."
            if n_seeds > 1
            else "`--seeds N` trains N models on the same data and reports mean ± sd and how "
            "many seeds favour each method."
        )
    )
    return out


def _pair_findings(
    rows: Mapping[tuple[str, str], Mapping[str, Any]],
    names: Sequence[str],
    n: int,
    a: str,
    b: str,
) -> list[str]:
    out: list[str] = []
    b_better = []
    for motif in names:
        if (a, motif) not in rows or (b, motif) not in rows:
            continue
        ra, rb = rows[(a, motif)], rows[(b, motif)]
        diff = rb["n_missed"] - ra["n_missed"]
        how = (
            "more often than"
            if diff > 0.02 * n
            else "less often than"
            if diff < -0.02 * n
            else "about as often as"
        )
        line = (
            f"- {motif}: {b} misses it in {rb['n_missed']} of {n} sequences, {how} {a} "
            f"({ra['n_missed']})"
        )
        if "n_missed_any" in ra:
            line += (
                f"; counting a top window on a chance match as found, {rb['n_missed_any']} vs "
                f"{ra['n_missed_any']}"
            )
        out.append(
            line + f". auPRC on informative positions {ra['auprc_core']:.3f} ({a}) "
            f"vs {rb['auprc_core']:.3f} ({b}), whole motif {ra['auprc_motif']:.3f} vs "
            f"{rb['auprc_motif']:.3f}; top window {ra['top_window']:.3f} vs "
            f"{rb['top_window']:.3f}; top window, other motif masked, "
            f"{ra['top_window_alone']:.3f} vs {rb['top_window_alone']:.3f}."
        )
        for k, label in (
            ("auprc_core", "auPRC on informative positions"),
            ("auprc_motif", "auPRC on the whole motif"),
            ("top_window", "top window (both motifs present: which one dominates)"),
            ("top_window_alone", "top window, other motif masked"),
        ):
            if rb[k] > ra[k]:
                b_better.append(f"{motif} {label}, {rb[k]:.3f} vs {ra[k]:.3f}")
        if rb["drop_missed"] is not None:
            out.append(
                f"  Where {b} misses it, occluding the motif lowers the logit by "
                f"{rb['drop_missed']:.2f} on average (where it finds it: "
                + ("-" if rb["drop_found"] is None else f"{rb['drop_found']:.2f}")
                + f"): the model relies on motifs {b} does not show."
                if rb["drop_missed"] > 0.5
                else f"  Where {b} misses it, occluding the motif lowers the logit by only "
                f"{rb['drop_missed']:.2f} on average: the model barely uses those instances."
            )
    if not out:
        return []
    out.append(
        f"- Where {b} scores higher in this run: "
        + ("; ".join(b_better) if b_better else "no metric")
        + "."
    )
    return out


def _pick_examples(
    n_plot: int,
    hits: Mapping[tuple[str, str], np.ndarray],
    core: Mapping[tuple[str, str], np.ndarray],
    names: Sequence[str],
) -> tuple[list[int], int | None, str]:
    """The sequences of Fig. 3: the first ``n_plot - 1`` scored positives and the one where
    DeepLIFT and gradient×input disagree most (one finds a motif the other misses).

    Returns:
      (indices, index of the disagreement example or None, its description).
    """
    n = len(next(iter(core.values())))
    first = list(range(min(n_plot - 1, n)))
    if (A, names[0]) not in hits or (B, names[0]) not in hits:
        return list(range(min(n_plot, n))), None, ""
    gap = sum(np.nan_to_num(np.abs(core[(A, m)] - core[(B, m)])) for m in names)
    differ = np.zeros(n, bool)
    for m in names:
        differ |= hits[(A, m)] != hits[(B, m)]
    cand = gap + np.where(differ, 10.0, 0.0)  # |auPRC gaps| sum to <= 2: disagreements first
    cand[first] = -np.inf
    if n <= len(first):
        return first, None, ""
    j = int(np.argmax(cand))
    parts = []
    for m in names:
        if hits[(A, m)][j] != hits[(B, m)][j]:
            found, missed = (A, B) if hits[(A, m)][j] else (B, A)
            parts.append(f"{missed} misses {m}, {found} finds it")
    what = "; ".join(parts) if parts else "the methods' auPRCs differ most here"
    return [*first, j], j, "methods disagree: " + what


def _summation(
    scores: Mapping[str, np.ndarray], logit_fn: Any, logits: np.ndarray, x: np.ndarray
) -> dict[str, float]:
    """Eq. (1) per method, max over sequences of |sum of scores - Δ logit|: the
    single-reference DeepLIFT methods against the uniform reference, DeepLIFT-SHAP against
    the mean over its shuffled references (drawn again with the same key)."""
    out = {}
    ref_logit = float(logit_fn(jnp.full(x.shape[1:], UNIFORM_REFERENCE, jnp.float32)))
    for m in SINGLE_REFERENCE:
        if m in scores:
            out[m] = float(np.abs(scores[m].sum(axis=(1, 2)) - (logits - ref_logit)).max())
    if SHAP in scores:
        from deepliftjax import dinuc_shuffle

        @jax.jit
        def mean_ref_logit(xb):
            def one(xi):
                refs = dinuc_shuffle(jax.random.key(0), xi, num_shuffles=SHAP_SHUFFLES)
                return jax.vmap(logit_fn)(refs).mean()

            return jax.vmap(one)(xb)

        ref = np.concatenate(
            [np.asarray(mean_ref_logit(x[i : i + 256])) for i in range(0, len(x), 256)]
        )
        out[SHAP] = float(np.abs(scores[SHAP].sum(axis=(1, 2)) - (logits - ref)).max())
    return out


def _recovery_table(
    per_pos: Mapping[str, np.ndarray],
    motifs: Mapping[str, Motif],
    sel: SimulatedData,
    chance: Mapping[str, tuple[np.ndarray, np.ndarray]],
    drop: Mapping[str, np.ndarray],
) -> tuple[list[dict[str, Any]], dict, dict]:
    """The motif-recovery rows per method and motif (planted instances, and planted or
    chance matches), and each method's per-sequence hits and auPRCs for Fig. 3."""
    table: list[dict[str, Any]] = []
    hits: dict = {}
    core: dict = {}
    for method, s in per_pos.items():
        for motif in NAMES:
            other = sel.masks[NAMES[1 - NAMES.index(motif)]]
            width = motifs[motif].length
            alone = top_window_hit(s, sel.starts[motif], width, exclude=other)
            either = np.concatenate([sel.starts[motif], chance[motif][0]], axis=1)
            alone_any = top_window_hit(s, either, width, exclude=other)
            core[(method, motif)] = motif_auprc(s, sel.core_masks[motif])
            hits[(method, motif)] = alone
            table.append(
                {
                    "method": method,
                    "motif": motif,
                    "auprc_core": float(np.nanmean(core[(method, motif)])),
                    "auprc_motif": float(np.nanmean(motif_auprc(s, sel.masks[motif]))),
                    "top_window": float(top_window_hit(s, sel.starts[motif], width).mean()),
                    "top_window_alone": float(alone.mean()),
                    "n_missed": int((~alone).sum()),
                    "frac_missed": float((~alone).mean()),
                    "top_window_alone_any": float(alone_any.mean()),
                    "n_missed_any": int((~alone_any).sum()),
                    "frac_missed_any": float((~alone_any).mean()),
                    "drop_missed": float(drop[motif][~alone].mean()) if (~alone).any() else None,
                    "drop_found": float(drop[motif][alone].mean()) if alone.any() else None,
                }
            )
    return table, hits, core


def _score_run(
    config: Config,
    motifs: Mapping[str, Motif],
    te: SimulatedData,
    model: GenomicsCNN,
    res: TrainResult,
    methods: Mapping[str, Method],
    *,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Scores one trained model's correctly predicted test positives and measures recovery."""
    logits = predict(model, res.params, te.x)
    correct = (te.y == 1) & (logits > 0)
    note = None
    if not correct.any():
        correct = te.y == 1
        note = "No test positive was predicted correctly; all test positives were scored."
    sel = te.subset(np.flatnonzero(correct))
    params = res.params

    def logit_fn(x: jax.Array) -> jax.Array:
        return model.apply({"params": params}, x)

    t = time.perf_counter()
    scores = attribute(methods, logit_fn, sel.x, progress=progress)
    attribute_s = time.perf_counter() - t
    summation = _summation(scores, logit_fn, logits[correct], sel.x)

    rng = np.random.default_rng(seed)
    per_pos = {k: per_position(v, sel.x) for k, v in scores.items()}
    per_pos["random"] = rng.standard_normal(per_pos[next(iter(per_pos))].shape)
    # occlusion: logit drop when a motif's instances are replaced by the reference 0.25
    drop = {
        m: logits[correct]
        - predict(model, params, np.where(sel.masks[m][..., None], UNIFORM_REFERENCE, sel.x))
        for m in NAMES
    }
    n = int(correct.sum())
    # chance matches: PWM matches of the motif's core in the background, not planted
    chance = {
        m: chance_matches(sel.x, motifs[m], sel.starts[m], MATCH_THRESHOLD, config.min_bits)
        for m in NAMES
    }
    table, hits, core = _recovery_table(per_pos, motifs, sel, chance, drop)
    return {
        "logit_fn": logit_fn,
        "logits": logits,
        "correct": correct,
        "sel": sel,
        "scores": scores,
        "hits": hits,
        "core": core,
        "n_scored": n,
        "note": note,
        "table": table,
        "chance": chance,
        "chance_counts": {
            m: {
                "sequences": int((v[0] >= 0).any(axis=1).sum()),
                "matches": int((v[0] >= 0).sum()),
            }
            for m, v in chance.items()
        },
        "summation": summation,
        "occlusion_drop": {m: float(v.mean()) for m, v in drop.items()},
        "attribute_s": attribute_s,
        "model": {
            "test_auroc": auroc(te.y, logits),
            "test_auprc": auprc(te.y, logits),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            "history": res.history,
        },
    }


def _train_and_score(
    config: Config,
    data: tuple[Mapping[str, Motif], SimulatedData, SimulatedData, SimulatedData],
    methods: Mapping[str, Method],
    seeds: Sequence[int],
    timing: dict[str, float],
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trains and scores one model per training seed, adding to ``timing``.

    Returns:
      (one summary per seed, the first seed's full `_score_run` result).
    """
    motifs, tr, va, te = data
    runs: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    timing["train_s"] = timing["attribute_s"] = timing["measure_s"] = 0.0
    for k, seed in enumerate(seeds):
        if progress and len(seeds) > 1:
            print(f"training seed {seed} ({k + 1} of {len(seeds)})", file=sys.stderr)
        t = time.perf_counter()
        model, res = fit(config, tr, va, seed=seed, progress=progress)
        timing["train_s"] += time.perf_counter() - t
        t = time.perf_counter()
        run = _score_run(config, motifs, te, model, res, methods, seed=seed, progress=progress)
        timing["attribute_s"] += run["attribute_s"]
        timing["measure_s"] += time.perf_counter() - t - run["attribute_s"]
        runs.append(
            {
                "train_seed": seed,
                "test_auroc": run["model"]["test_auroc"],
                "test_auprc": run["model"]["test_auprc"],
                "best_epoch": run["model"]["best_epoch"],
                "epochs_run": run["model"]["epochs_run"],
                "n_scored": run["n_scored"],
                "summation": run["summation"],
                "table": run["table"],
            }
        )
        if k == 0:  # the first seed's arrays make the figure
            first = run
    return runs, first


def _write_figure(config: Config, out_dir: str | os.PathLike, first: Mapping[str, Any]) -> dict:
    """Draws Fig. 3 (fig3.png) from the first seed's scores.

    Returns:
      The ``figure_examples`` entry of the results: the test indices shown, the
      disagreement example's test index (or None) and its description.
    """
    sel, scores = first["sel"], first["scores"]
    idx, disagree, what = _pick_examples(config.n_plot, first["hits"], first["core"], NAMES)
    test_ids = np.flatnonzero(first["correct"])
    titles = []
    for i in idx:
        title = f"test sequence {test_ids[i]}: logit {float(first['logits'][test_ids[i]]):.2f}"
        titles.append(title + (f"; {what}" if i == disagree else ""))
    shown = [m for m in FIGURE_METHODS if m in scores] or list(scores)
    plot_scores(
        os.path.join(out_dir, "fig3.png"),
        sel.x[idx],
        {FIGURE_METHODS.get(m, m): scores[m][idx] for m in shown},
        {m: sel.masks[m][idx] for m in NAMES},
        titles=titles,
        chance={m: first["chance"][m][1][idx] for m in NAMES},
    )
    return {
        "methods": shown,
        "test_index": [int(test_ids[i]) for i in idx],
        "disagreement": None if disagree is None else int(test_ids[disagree]),
        "disagreement_note": what,
    }


def _motif_discovery(
    config: Config,
    motifs: Mapping[str, Motif],
    first: Mapping[str, Any],
    out_dir: str | os.PathLike,
    progress: bool,
) -> dict[str, Any]:
    """The ``--motifs`` step on the first seed's scored positives: DeepLIFT-SHAP, the
    ``.npy`` files, modisco-lite, the matches and ``motifs.png``.

    Returns:
      The ``motifs`` entry of the results (see :func:`~deepliftjax.genomics._motifs.motif_step`),
      with the figure and the step's wall time ``time_s``.
    """
    t = time.perf_counter()
    known = {m: motifs[m] for m in NAMES}
    patterns, rec = motif_step(
        first["logit_fn"],
        first["sel"].x,
        known,
        out_dir,
        shuffles=config.shuffles,
        seed=config.seed,
        modisco_options=TINY_MODISCO if config.tiny_modisco else MODISCO,
        progress=progress,
    )
    t_fig = time.perf_counter()
    plot_patterns(os.path.join(out_dir, "motifs.png"), patterns, known)
    rec["figure"] = "motifs.png"
    rec["figure_s"] = time.perf_counter() - t_fig
    rec["time_s"] = time.perf_counter() - t
    return rec


def _across_seeds(runs: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """The ``across_seeds`` entry: mean ± sd of every seed's table and, when both were
    scored, the paired DeepLIFT / gradient×input comparison and its findings."""
    tables = [r["table"] for r in runs]
    summary = summarize_seeds(tables)
    pairs = [(a, b) for a, b in PAIRS if {a, b} <= set(methods)]
    paired = [row for a, b in pairs for row in paired_comparison(tables, a, b)]
    findings: list[str] = []
    if pairs:
        n = len(runs)
        scored = [m for m in methods if m != "random"]
        findings = [
            f"## Findings across {n} training seeds",
            "",
            "The best of the " + ", ".join(scored) + ", seed by seed (a seed where two "
            "methods share the best value counts for neither):",
            "",
            *ranking_lines(tables, scored, NAMES),
        ]
        for a, b in pairs:
            findings += ["", f"### {a} vs {b}", ""]
            findings += seed_findings(summary, paired, n, a, b, heading=False, caveat=False)
        findings += ["", caveat_line(n)]
    return {
        "n_seeds": len(runs),
        "summary": summary,
        "pairs": [list(p) for p in pairs],
        "paired": paired,
        "findings": findings,
    }


def _results(
    config: Config,
    data: tuple[Mapping[str, Motif], SimulatedData, SimulatedData, SimulatedData],
    seeds: Sequence[int],
    runs: list[dict[str, Any]],
    first: Mapping[str, Any],
    figure_examples: dict,
    timing: dict[str, float],
    command: str | None,
) -> dict[str, Any]:
    """The results of a run, as written to metrics.json and rendered in report.md."""
    _, tr, va, te = data
    n = first["n_scored"]
    results: dict[str, Any] = {
        "command": command or "run_experiment(...)",
        "package": {"name": "deepliftjax", "version": package_version()},
        "config": dataclasses.asdict(config),
        "seeds": {"data_seed": config.seed, "train_seeds": list(seeds)},
        "data": {
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(te),
            "test_positives": int(te.y.sum()),
        },
        "model": first["model"],
        "n_scored": n,
        "methods": list(first["scores"]),
        "table": first["table"],
        "summation": first["summation"],
        "occlusion_drop": first["occlusion_drop"],
        "chance_matches": {
            "threshold": MATCH_THRESHOLD,
            "min_bits": config.min_bits,
            "counts": first["chance_counts"],
        },
        "findings": _single_findings(first["table"], NAMES, n, seeds[0], len(seeds))
        + ([f"- {first['note']}"] if first["note"] else []),
        "figure": "fig3.png",
        "figure_examples": figure_examples,
        "runs": runs,
        "timing": timing,
        "jax": {"version": jax.__version__, "backend": jax.default_backend()},
    }
    if len(seeds) > 1:
        results["across_seeds"] = _across_seeds(runs, list(first["scores"]))
    return results


def run_experiment(
    config: Config = Config(),
    out_dir: str | os.PathLike = "genomics_out",
    *,
    methods: Mapping[str, Method] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Simulates data, trains the §3.2 CNN (``config.seeds`` times, same data), scores
    correctly predicted test positives with each method, measures motif recovery and writes
    report.md, fig3.png and metrics.json.

    The report's main tables, Fig. 3 and the top-level metrics are those of the first
    training seed (``config.seed``); with more seeds, ``runs`` holds every seed's table and
    ``across_seeds`` the mean ± sd and the paired DeepLIFT / gradient×input comparison.

    With ``config.motifs``, the motif step also writes contributions.npy, hypothetical.npy,
    projected.npy and motifs.png and adds ``motifs`` to the results.

    Args:
      config: the settings.
      out_dir: output folder (created if missing).
      methods: name -> scoring method; defaults to `METHODS` (DeepLIFT, gradient×input).
      progress: show progress bars.
      command: the command line to record in the report.

    Returns:
      The results, as written to metrics.json.

    Raises:
      DeepLiftError: ``config.motifs`` without modisco-lite installed.
    """
    methods = dict(METHODS if methods is None else methods)
    if not methods:
        raise error(
            "methods must not be empty.",
            "pass {name: attribution function}, or None for the default methods.",
        )
    if config.motifs:
        require_modisco()  # before training, not after
    os.makedirs(out_dir, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()

    data = make_data(config)
    timing["simulate_s"] = time.perf_counter() - t0
    seeds = training_seeds(config)
    runs, first = _train_and_score(config, data, methods, seeds, timing, progress)

    t = time.perf_counter()
    figure_examples = _write_figure(config, out_dir, first)
    timing["report_s"] = time.perf_counter() - t
    motif_record = None
    if config.motifs:
        motif_record = _motif_discovery(config, data[0], first, out_dir, progress)
        timing["motifs_s"] = motif_record["time_s"]
    timing["total_s"] = time.perf_counter() - t0

    results = _results(config, data, seeds, runs, first, figure_examples, timing, command)
    if motif_record is not None:
        results["motifs"] = motif_record
    write_report(os.path.join(out_dir, "report.md"), results)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, ensure_ascii=False)
    return results


def _importable(name: str) -> bool:
    """Whether ``name`` imports (the genomics extra's packages)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    """The `deepliftjax-genomics` command line."""
    d = Config()
    p = argparse.ArgumentParser(
        prog="deepliftjax-genomics",
        description="Reproduce the DeepLIFT paper's genomics experiment (§3.2): simulate "
        "GATA + CAGATG sequences, train the paper's CNN, score with DeepLIFT and "
        "gradient×input, and measure motif recovery.",
    )
    p.add_argument("--out", default="genomics_out", help="output folder (default: %(default)s)")
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help=f"training sequences (default: {d.n_train}; tiny: {TINY['n_train']})",
    )
    p.add_argument("--n-val", type=int, default=None, help=f"validation sequences ({d.n_val})")
    p.add_argument("--n-test", type=int, default=None, help=f"test sequences ({d.n_test})")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"maximum epochs, early stopping on validation loss ({d.epochs})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the data and of the first training run (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=d.seeds,
        help="train this many models (training seeds SEED, SEED+1, ...) on the same data and "
        "report mean ± sd and paired comparisons across them (default: %(default)s)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a small, fast setting for tests (runs in seconds; no accuracy goal)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--motifs",
        action="store_true",
        help="also discover motifs: DeepLIFT-SHAP with dinucleotide-shuffled references on "
        "the correctly predicted test positives, modisco-lite on the hypothetical scores, "
        "patterns matched to GATA_disc1 and TAL1_known1; writes contributions.npy, "
        "hypothetical.npy, projected.npy and motifs.png (needs modisco-lite)",
    )
    p.add_argument(
        "--shuffles",
        type=int,
        default=d.shuffles,
        help="dinucleotide-shuffled references per sequence for --motifs (default: %(default)s)",
    )
    p.add_argument(
        "--all-methods",
        action="store_true",
        help="also score with RevealCancel, integrated gradients and guided "
        "backprop×input (adds about a minute)",
    )
    return p


def _config_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    """The `Config` of the parsed command line (``--tiny`` first, then explicit sizes);
    invalid settings end the command with a usage error."""
    kw: dict[str, Any] = dict(TINY) if args.tiny else {}
    for k in ("n_train", "n_val", "n_test", "epochs"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    try:
        return Config(
            seed=args.seed, seeds=args.seeds, motifs=args.motifs, shuffles=args.shuffles, **kw
        )
    except ValueError as e:
        p.error(str(e))


def _print_summary(r: Mapping[str, Any], out_dir: str) -> None:
    """Prints the command's summary of the results ``r`` written to ``out_dir``."""
    m = r["model"]
    print(
        f"\nTest auROC: {m['test_auroc']:.3f} (paper: 0.907); auPRC {m['test_auprc']:.3f}; "
        f"{r['data']['n_test']} test sequences"
    )
    print(f"Motif recovery on {r['n_scored']} correctly predicted test positives:\n")
    print(format_table(r["table"]))
    print()
    print(format_missed(r["table"]))
    for line in r["findings"][2:]:
        print(line)
    if "across_seeds" in r:
        s = r["across_seeds"]
        aurocs = ", ".join(f"{x['test_auroc']:.3f}" for x in r["runs"])
        print(f"\nAcross {s['n_seeds']} training seeds (test auROC {aurocs}):\n")
        print(format_seed_summary(s["summary"], s["paired"]))
        print()
        for line in s["findings"][2:]:
            print(line)
    if "motifs" in r:
        rec = r["motifs"]
        print(
            f"\nMotif discovery (DeepLIFT-SHAP, {rec['shuffles']} dinucleotide shuffles, "
            f"modisco-lite) on {rec['n_sequences']} positives, {rec['time_s']:.0f} s:\n"
        )
        print(format_motif_matches(rec))
    out = os.path.abspath(out_dir)
    extra = ", motifs.png, contributions.npy, hypothetical.npy, projected.npy" * ("motifs" in r)
    print(
        f"\nWrote {os.path.join(out, 'report.md')}, fig3.png{extra} and metrics.json in {out} "
        f"({r['timing']['total_s']:.0f} s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the §3.2 experiment from the command line (`deepliftjax-genomics`)."""
    p = _parser()
    args = p.parse_args(argv)
    missing = [m for m in ("optax", "matplotlib") if not _importable(m)]
    if missing:
        p.error(
            f"needs {' and '.join(missing)}: install the genomics extra, "
            "pip install 'deepliftjax[genomics]'"
        )
    if args.motifs:
        try:
            require_modisco()
        except DeepLiftError as e:
            p.exit(2, f"{p.prog}: error: --motifs: {e}\n")
    config = _config_from_args(p, args)
    cmd = shlex.join(["deepliftjax-genomics", *(sys.argv[1:] if argv is None else argv)])
    methods = {**METHODS, **MORE_METHODS} if args.all_methods else None
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    r = run_experiment(
        config, args.out, methods=methods, progress=not args.no_progress, command=cmd
    )
    _print_summary(r, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
