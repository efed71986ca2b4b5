"""The paper's §3.2 experiment end to end, and the `deepliftjax-genomics` command."""

from __future__ import annotations

import argparse
import dataclasses
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

from ._attribute import METHODS, MORE_METHODS, UNIFORM_REFERENCE, Method, attribute
from ._metrics import auprc, auroc, motif_auprc, per_position, top_window_hit
from ._model import GenomicsCNN
from ._report import format_missed, format_table, plot_scores, write_report
from ._simulate import GATA, TAL1, load_motifs, simulate, split
from ._train import predict, train


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the experiment (defaults: the main command's full run)."""

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
    n_plot: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("n_train", "n_val", "n_test", "epochs", "batch_size", "patience", "min_epochs"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.n_train < self.batch_size:
            raise ValueError(f"n_train ({self.n_train}) must be >= batch_size ({self.batch_size})")
        if self.n_val < 2 or self.n_test < 2:
            raise ValueError("n_val and n_test must be >= 2")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.n_plot < 1:
            raise ValueError(f"n_plot must be >= 1, got {self.n_plot}")


TINY = dict(n_train=1500, n_val=300, n_test=300, epochs=4, n_plot=2)


def _findings(table: Sequence[Mapping[str, Any]], names: Sequence[str], n: int) -> list[str]:
    """Plain-language comparison of DeepLIFT and gradient×input, computed from the table."""
    rows = {(r["method"], r["motif"]): r for r in table}
    a, b = "DeepLIFT", "gradient×input"
    out = ["## Findings", ""]
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
        out.append(
            f"- {motif}: {b} misses it in {rb['n_missed']} of {n} sequences, {how} {a} "
            f"({ra['n_missed']}). auPRC on informative positions {ra['auprc_core']:.3f} ({a}) "
            f"vs {rb['auprc_core']:.3f} ({b}); top window, other motif masked, "
            f"{ra['top_window_alone']:.3f} vs {rb['top_window_alone']:.3f}."
        )
        if rb["drop_missed"] is not None:
            out.append(
                f"  Where {b} misses it, occluding the motif lowers the logit by "
                f"{rb['drop_missed']:.2f} on average (where it finds it: "
                + ("-" if rb["drop_found"] is None else f"{rb['drop_found']:.2f}")
                + "): the model relies on motifs the gradient does not show."
                if rb["drop_missed"] > 0.5
                else f"  Where {b} misses it, occluding the motif lowers the logit by only "
                f"{rb['drop_missed']:.2f} on average: the model barely uses those instances."
            )
    return out if len(out) > 2 else []


def run_experiment(
    config: Config = Config(),
    out_dir: str | os.PathLike = "genomics_out",
    *,
    methods: Mapping[str, Method] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Simulates data, trains the §3.2 CNN, scores correctly predicted test positives with each
    method, measures motif recovery and writes report.md, fig3.png and metrics.json.

    Args:
      config: the settings.
      out_dir: output folder (created if missing).
      methods: name -> scoring method; defaults to `METHODS` (DeepLIFT, gradient×input).
      progress: show progress bars.
      command: the command line to record in the report.

    Returns:
      The results, as written to metrics.json.
    """
    methods = dict(METHODS if methods is None else methods)
    if not methods:
        raise ValueError("methods must not be empty")
    os.makedirs(out_dir, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()

    motifs = load_motifs()
    names = (GATA, TAL1)
    n_all = config.n_train + config.n_val + config.n_test
    data = simulate(
        n_all,
        seq_len=config.seq_len,
        motifs=motifs,
        names=names,
        min_bits=config.min_bits,
        seed=config.seed,
    )
    fr = np.array([config.n_train, config.n_val, config.n_test]) / n_all
    tr, va, te = split(data, tuple(fr))
    timing["simulate_s"] = time.perf_counter() - t0

    t = time.perf_counter()
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
        seed=config.seed,
        progress=progress,
    )
    logits = predict(model, res.params, te.x)
    timing["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    correct = (te.y == 1) & (logits > 0)
    note = None
    if not correct.any():
        correct = te.y == 1
        note = "No test positive was predicted correctly; all test positives were scored."
    sel = te.subset(np.flatnonzero(correct))
    params = res.params

    def logit_fn(x: jax.Array) -> jax.Array:
        return model.apply({"params": params}, x)

    scores = attribute(methods, logit_fn, sel.x, progress=progress)
    # eq. (1) check for DeepLIFT: scores sum to logit(x) - logit(reference)
    summation = {}
    if "DeepLIFT" in scores:
        ref_logit = float(logit_fn(jnp.full(sel.x.shape[1:], UNIFORM_REFERENCE, jnp.float32)))
        delta = logits[correct] - ref_logit
        err = np.abs(scores["DeepLIFT"].sum(axis=(1, 2)) - delta)
        summation["DeepLIFT"] = float(err.max())
    timing["attribute_s"] = time.perf_counter() - t

    t = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    per_pos = {k: per_position(v, sel.x) for k, v in scores.items()}
    per_pos["random"] = rng.standard_normal(per_pos[next(iter(per_pos))].shape)
    # occlusion: logit drop when a motif's instances are replaced by the reference 0.25
    drop = {
        m: logits[correct]
        - predict(model, params, np.where(sel.masks[m][..., None], UNIFORM_REFERENCE, sel.x))
        for m in names
    }
    table = []
    for method, s in per_pos.items():
        for motif in names:
            other = sel.masks[names[1 - names.index(motif)]]
            width = motifs[motif].length
            alone = top_window_hit(s, sel.starts[motif], width, exclude=other)
            table.append(
                {
                    "method": method,
                    "motif": motif,
                    "auprc_core": float(np.nanmean(motif_auprc(s, sel.core_masks[motif]))),
                    "auprc_motif": float(np.nanmean(motif_auprc(s, sel.masks[motif]))),
                    "top_window": float(top_window_hit(s, sel.starts[motif], width).mean()),
                    "top_window_alone": float(alone.mean()),
                    "n_missed": int((~alone).sum()),
                    "drop_missed": float(drop[motif][~alone].mean()) if (~alone).any() else None,
                    "drop_found": float(drop[motif][alone].mean()) if alone.any() else None,
                }
            )
    k = min(config.n_plot, len(sel))
    titles = [
        f"test positive {i}: logit {float(lg):.2f}"
        for i, lg in zip(np.flatnonzero(correct)[:k], logits[correct][:k], strict=True)
    ]
    fig_path = os.path.join(out_dir, "fig3.png")
    shown = [m for m in METHODS if m in scores] or list(scores)  # Fig. 3: DeepLIFT, grad×input
    plot_scores(
        fig_path,
        sel.x[:k],
        {m: scores[m][:k] for m in shown},
        {m: sel.masks[m][:k] for m in names},
        titles=titles,
    )
    timing["report_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0

    results: dict[str, Any] = {
        "command": command or "run_experiment(...)",
        "config": dataclasses.asdict(config),
        "data": {
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(te),
            "test_positives": int(te.y.sum()),
        },
        "model": {
            "test_auroc": auroc(te.y, logits),
            "test_auprc": auprc(te.y, logits),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            "history": res.history,
        },
        "n_scored": int(correct.sum()),
        "methods": list(scores),
        "table": table,
        "summation": summation,
        "occlusion_drop": {m: float(v.mean()) for m, v in drop.items()},
        "findings": _findings(table, names, int(correct.sum())) + ([f"- {note}"] if note else []),
        "figure": "fig3.png",
        "timing": timing,
        "jax": {"version": jax.__version__, "backend": jax.default_backend()},
    }
    write_report(os.path.join(out_dir, "report.md"), results)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, ensure_ascii=False)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the §3.2 experiment from the command line (`deepliftjax-genomics`)."""
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
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="a small, fast setting for tests (runs in seconds; no accuracy goal)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--all-methods",
        action="store_true",
        help="also score with RevealCancel, integrated gradients and guided "
        "backprop×input (adds about a minute)",
    )
    args = p.parse_args(argv)

    kw: dict[str, Any] = dict(TINY) if args.tiny else {}
    for k in ("n_train", "n_val", "n_test", "epochs"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    try:
        config = Config(seed=args.seed, **kw)
    except ValueError as e:
        p.error(str(e))
    cmd = shlex.join(["deepliftjax-genomics", *(sys.argv[1:] if argv is None else argv)])
    methods = {**METHODS, **MORE_METHODS} if args.all_methods else None
    r = run_experiment(
        config, args.out, methods=methods, progress=not args.no_progress, command=cmd
    )
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
    out = os.path.abspath(args.out)
    print(
        f"\nWrote {os.path.join(out, 'report.md')}, fig3.png and metrics.json in {out} "
        f"({r['timing']['total_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
