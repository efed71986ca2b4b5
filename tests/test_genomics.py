"""Tests of the §3.2 genomics experiment: simulator, metrics, model, §2.6 equivalence, CLI,
results across training seeds, Fig. 3 and the training progress bar."""

from __future__ import annotations

import json
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax.genomics import (
    GATA,
    TAL1,
    Config,
    GenomicsCNN,
    auprc,
    auroc,
    gradient_x_input,
    load_motifs,
    main,
    motif_auprc,
    parse_motifs,
    per_position,
    simulate,
    split,
    top_window_hit,
    window_max,
)
from deepliftjax.genomics._attribute import GRADIENT, METHODS, MIXED, RESCALE, SHAP
from deepliftjax.genomics._experiment import PAIRS

# ---------------------------------------------------------------- motifs


def test_load_motifs_shipped_pwms():
    m = load_motifs()
    assert list(m) == [GATA, TAL1]
    assert m[GATA].length == 10 and m[TAL1].length == 16
    for motif in m.values():
        np.testing.assert_allclose(motif.pwm.sum(1), 1.0, atol=1e-12)
    assert "GATA" in m[GATA].consensus
    assert "CAGATG" in m[TAL1].consensus
    # informative positions: GATAAG of GATA_disc1; CAGATG plus the A/T after it in TAL1_known1
    assert "".join(np.array(list(m[GATA].consensus))[m[GATA].informative()]) == "GATAAG"
    assert m[TAL1].informative().sum() == 7
    ic = m[GATA].information_content
    assert ic[3] == pytest.approx(2.0) and 0 <= ic.min() and ic.max() <= 2.0 + 1e-12


def test_parse_motifs_renormalises_and_rejects_bad_input():
    m = parse_motifs("# c\n>X d\nA 2 0 0 0\nN 1 1 1 1\n")
    np.testing.assert_allclose(m["X"].pwm, [[1, 0, 0, 0], [0.25] * 4])
    with pytest.raises(ValueError, match="before any"):
        parse_motifs("A 1 0 0 0\n")
    with pytest.raises(ValueError, match="expected"):
        parse_motifs(">X\nA 1 0 0\n")
    with pytest.raises(ValueError, match="non-numeric"):
        parse_motifs(">X\nA 1 0 0 z\n")
    with pytest.raises(ValueError, match="no rows"):
        parse_motifs(">X\n>Y\nA 1 0 0 0\n")


# ---------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def sim():
    return simulate(3000, seed=3)


def test_simulate_shapes_and_onehot(sim):
    assert sim.x.shape == (3000, 200, 4) and sim.x.dtype == np.float32
    assert sim.y.shape == (3000,)
    np.testing.assert_array_equal(sim.x.sum(-1), 1.0)
    assert set(np.unique(sim.x)) == {0.0, 1.0}
    assert sim.y.sum() == 1500
    for name in (GATA, TAL1):
        assert sim.masks[name].shape == (3000, 200)
        assert sim.starts[name].shape == (3000, 2)
        assert not (sim.core_masks[name] & ~sim.masks[name]).any()


def test_simulate_motif_placement(sim):
    motifs = load_motifs()
    present = {k: (sim.starts[k] >= 0).sum(1) for k in (GATA, TAL1)}
    pos, neg = sim.y == 1, sim.y == 0
    # positives: exactly one instance of each motif
    assert (present[GATA][pos] == 1).all() and (present[TAL1][pos] == 1).all()
    # negatives: one motif type only, once or twice; both types and both counts occur
    only_g = (present[GATA] > 0) & (present[TAL1] == 0)
    only_t = (present[TAL1] > 0) & (present[GATA] == 0)
    assert (only_g | only_t)[neg].all()
    assert only_g[neg].mean() == pytest.approx(0.5, abs=0.05)
    counts = np.maximum(present[GATA], present[TAL1])[neg]
    assert set(np.unique(counts)) == {1, 2}
    # masks agree with the recorded starts; instances never overlap
    total = np.zeros((len(sim), 200), int)
    for k in (GATA, TAL1):
        L = motifs[k].length
        mask = np.zeros((len(sim), 200), bool)
        for i, j in zip(*np.nonzero(sim.starts[k] >= 0), strict=True):
            s = sim.starts[k][i, j]
            assert 0 <= s <= 200 - L
            mask[i, s : s + L] = True
            total[i, s : s + L] += 1
        np.testing.assert_array_equal(mask, sim.masks[k])
        assert sim.masks[k].sum() == L * (sim.starts[k] >= 0).sum()
    assert total.max() == 1
    # deterministic PWM columns hold their base: GAT of GATA_disc1, CAG and TG of TAL1_known1
    seq = sim.x.argmax(-1)
    for k, cols, bases in ((GATA, [3, 4, 5], [2, 0, 3]), (TAL1, [5, 6, 7, 9, 10], [1, 0, 2, 3, 2])):
        i, j = np.nonzero(sim.starts[k] >= 0)
        s = sim.starts[k][i, j]
        np.testing.assert_array_equal(
            seq[i[:, None], s[:, None] + np.array(cols)],
            np.broadcast_to(bases, (len(i), len(cols))),
        )


def test_simulate_base_frequencies_follow_pwm_and_background(sim):
    motifs = load_motifs()
    seq = sim.x.argmax(-1)
    i, j = np.nonzero(sim.starts[TAL1] >= 0)
    s = sim.starts[TAL1][i, j]
    inst = seq[i[:, None], s[:, None] + np.arange(16)]
    freq = np.stack([(inst == b).mean(0) for b in range(4)], 1)
    se = np.sqrt(0.25 / len(i))
    np.testing.assert_allclose(freq, motifs[TAL1].pwm, atol=5 * se)
    bg = sim.x[~(sim.masks[GATA] | sim.masks[TAL1])].mean(0)
    np.testing.assert_allclose(bg, 0.25, atol=0.005)


def test_simulate_seeded():
    a, b, c = simulate(50, seed=1), simulate(50, seed=1), simulate(50, seed=2)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.starts[GATA], b.starts[GATA])
    assert not np.array_equal(a.x, c.x)


def test_simulate_and_split_errors(sim):
    with pytest.raises(ValueError, match="n must be"):
        simulate(0)
    with pytest.raises(ValueError, match="too short"):
        simulate(5, seq_len=20)
    with pytest.raises(ValueError, match="unknown motif"):
        simulate(5, names=(GATA, "nope"))
    parts = split(sim, (0.5, 0.3, 0.2))
    assert [len(p) for p in parts] == [1500, 900, 600]
    np.testing.assert_array_equal(parts[1].x, sim.x[1500:2400])
    with pytest.raises(ValueError, match="sum to 1"):
        split(sim, (0.5, 0.2))


# ---------------------------------------------------------------- metrics


def test_auroc_hand_computed():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([1, 1, 0], [3, 2, 1]) == pytest.approx(1.0)
    assert auroc([1, 0, 0, 1], [0.2, 0.2, 0.9, 0.5]) == pytest.approx(0.375)  # (0.5+0+1+0)/4
    with pytest.raises(ValueError, match="one positive and one negative"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="entries"):
        auroc([0, 1], [0.1])


def test_auprc_hand_computed():
    # thresholds 0.8 (P=1, R=.5), 0.4 (P=.5), 0.35 (P=2/3, R=1), 0.1
    assert auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties enter together: {1, 1}: P=1/2, R=1/2; {0}: P=2/3, R=1
    assert auprc([1, 0, 1], [1, 1, 0]) == pytest.approx(0.25 + 0.5 * 2 / 3)
    assert auprc([1, 0, 0], [5, 1, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one positive"):
        auprc([0, 0], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        auprc([0, 1], [0.0, np.nan])


def test_metrics_agree_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        s = np.round(rng.standard_normal(300) + y, 1)  # rounded: many ties
        assert auroc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        assert auprc(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


def test_motif_metrics():
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    sc = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(per_position(sc, x), [0, 5, 10, 15])
    scores = np.array([[0.0, 3, 2, 0, 0, 1], [1.0, 0, 0, 0, 0, 0]])
    mask = np.array([[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
    out = motif_auprc(scores, mask)
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1])
    starts = np.array([[1, -1], [4, -1]])
    # windows of 2: row 0 best at 1 (sum 5) -> hit; row 1 best at 0 -> miss at 4
    np.testing.assert_array_equal(top_window_hit(scores, starts, 2), [True, False])
    # excluding positions 1-2 in row 0 moves its best window away from the motif
    excl = np.zeros_like(mask)
    excl[0, 1:3] = True
    np.testing.assert_array_equal(top_window_hit(scores, starts, 2, exclude=excl), [False, False])
    with pytest.raises(ValueError, match="width"):
        top_window_hit(scores, starts, 0)


# ---------------------------------------------------------------- model


def test_model_shapes_and_errors():
    model = GenomicsCNN()
    x = jnp.asarray(simulate(3, seed=0).x)
    params = jax.jit(model.init)(jax.random.key(0), x)
    apply = jax.jit(model.apply)
    assert apply(params, x).shape == (3,)
    assert apply(params, x[0]).shape == ()
    assert params["params"]["conv"]["kernel"].shape == (15, 4, 20)
    assert params["params"]["dense_1"]["kernel"].shape == (4 * 20, 200)
    with pytest.raises(ValueError, match="one-hot"):
        model.apply(params, x[..., :3])
    h = jnp.arange(2 * 186 * 3, dtype=jnp.float32).reshape(2, 186, 3)
    pooled = window_max(h, 50)
    assert pooled.shape == (2, 4, 3)
    np.testing.assert_array_equal(pooled[:, 3], h[:, 185])  # the 36-wide last window


# ---------------------------------------------------------------- §2.6 equivalence


def _small_model_and_inputs():
    model = GenomicsCNN(filters=4, kernel=5, pool=10, hidden=8)
    x = jnp.asarray(simulate(6, seq_len=40, seed=5).x)

    @jax.jit
    def init(key):
        params = model.init(key, x)["params"]
        # random non-zero biases and slopes, so the reference activations are not trivial
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=1)]
        return jax.tree_util.tree_unflatten(tree, leaves)

    return model, init(jax.random.key(1)), x


def test_weight_normalisation_equals_uniform_reference():
    deeplift = pytest.importorskip("deepliftjax").deeplift
    model, params, x = _small_model_and_inputs()
    f = lambda p: lambda xi: model.apply({"params": p}, xi)

    # §2.6: W <- W - mean over the base axis, b <- b + sum of the means (c = 1 per column)
    w, b = params["conv"]["kernel"], params["conv"]["bias"]  # (kernel, 4, filters), (filters,)
    mu = w.mean(axis=1, keepdims=True)
    norm = {**params, "conv": {"kernel": w - mu, "bias": b + mu.sum(axis=(0, 1))}}

    @jax.jit
    def run(x):
        one = lambda xi: deeplift(f(params), 0.25, onehot_axis=-1, multiply_by_inputs=False)(xi)
        return {
            "f": jax.vmap(f(params))(x),
            "f_norm": jax.vmap(f(norm))(x),
            "f_ref": f(params)(jnp.full(x.shape[1:], 0.25)),
            "normalised": jax.vmap(deeplift(f(norm), 0.0))(x),  # zero reference: m * x
            "onehot": jax.vmap(one)(x) * x,
            "plain": jax.vmap(deeplift(f(params), 0.25))(x),
        }

    r = run(x)
    np.testing.assert_allclose(r["f_norm"], r["f"], rtol=1e-5, atol=1e-5)
    onehot = r["onehot"]
    assert float(jnp.abs(onehot).max()) > 1e-3  # not trivially zero
    np.testing.assert_allclose(onehot, r["normalised"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(onehot.sum(-1), r["plain"].sum(-1), rtol=1e-5, atol=1e-6)
    # the plain scores differ per base, the normalised ones only score the present base
    assert float(jnp.abs(r["plain"] * (1 - x)).max()) > 1e-3
    assert float(jnp.abs(onehot * (1 - x)).max()) == 0.0
    # both sum to f(x) - f(uniform reference)
    np.testing.assert_allclose(onehot.sum(axis=(1, 2)), r["f"] - r["f_ref"], rtol=1e-4, atol=1e-5)


def test_gradient_x_input_matches_grad():
    model, params, x = _small_model_and_inputs()
    f = lambda xi: model.apply({"params": params}, xi)
    got = jax.jit(gradient_x_input(f))(x[0])
    np.testing.assert_allclose(got, jax.jit(jax.grad(f))(x[0]) * x[0], rtol=1e-6)
    assert float(jnp.abs(got * (1 - x[0])).max()) == 0.0 and float(jnp.abs(got).max()) > 0


# ---------------------------------------------------------------- end to end


def _check_results(out, r):
    for name in ("report.md", "fig3.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"]["test_auroc"] == pytest.approx(r["model"]["test_auroc"])
    assert 0.0 <= r["model"]["test_auroc"] <= 1.0 and 0.0 <= r["model"]["test_auprc"] <= 1.0
    assert r["n_scored"] >= 1
    assert {row["method"] for row in r["table"]} == {*METHODS, "random"}
    assert len(r["table"]) == 2 * (len(METHODS) + 1)
    for row in r["table"]:
        for k in ("auprc_core", "auprc_motif", "top_window", "top_window_alone"):
            assert math.isfinite(row[k]) and 0.0 <= row[k] <= 1.0, (row, k)
        assert 0 <= row["n_missed_any"] <= row["n_missed"] <= r["n_scored"]
        assert row["top_window_alone_any"] >= row["top_window_alone"]
    # eq. (1) for every DeepLIFT method: the two single-reference rule sets against the
    # uniform reference, DeepLIFT-SHAP against the mean over its shuffles
    assert set(r["summation"]) == {RESCALE, MIXED, SHAP}
    for v in r["summation"].values():
        assert v < 1e-3 * max(1.0, abs(r["occlusion_drop"][GATA]))
    assert r["figure_examples"]["methods"] == [RESCALE, MIXED, GRADIENT]
    report = (out / "report.md").read_text()
    assert "auROC" in report and "| DeepLIFT | GATA_disc1 |" in report


def test_tiny_end_to_end(tmp_path, capsys):
    """``--seeds 2`` in a tiny setting: the first seed is the single-seed run, the
    across-seed numbers are computed from the per-seed tables, and metrics.json records the
    package version and the seeds."""
    pytest.importorskip("matplotlib")
    from deepliftjax.genomics._experiment import package_version

    out = tmp_path / "run"
    t = time.perf_counter()
    tiny = ["--tiny", "--n-train", "256", "--n-val", "64", "--n-test", "64", "--epochs", "1"]
    assert main([*tiny, "--out", str(out), "--no-progress", "--seed", "1", "--seeds", "2"]) == 0
    assert time.perf_counter() - t < 240  # ~30 s on an idle 2-core machine; slack for load
    printed = capsys.readouterr().out
    assert "Test auROC" in printed and "| gradient×input | TAL1_known1 |" in printed
    assert "Across 2 training seeds" in printed and "seeds favouring DeepLIFT" in printed
    assert f"seeds favouring {MIXED}" in printed and f"seeds favouring {SHAP}" in printed
    assert str(out) in printed
    r = json.loads((out / "metrics.json").read_text())
    _check_results(out, r)
    assert r["package"] == {"name": "deepliftjax", "version": package_version()}
    assert r["seeds"] == {"data_seed": 1, "train_seeds": [1, 2]}
    assert r["config"]["seeds"] == 2 and [x["train_seed"] for x in r["runs"]] == [1, 2]
    assert r["runs"][0]["table"] == r["table"]  # the report's main tables: the first seed
    assert r["runs"][0]["test_auroc"] == r["model"]["test_auroc"]
    # the across-seed summary and the paired counts, recomputed from the per-seed tables
    s = r["across_seeds"]
    assert s["n_seeds"] == 2
    for row in s["summary"]:
        per = [
            next(
                x
                for x in run["table"]
                if (x["method"], x["motif"]) == (row["method"], row["motif"])
            )
            for run in r["runs"]
        ]
        for m in ("auprc_core", "top_window", "top_window_alone", "n_missed", "n_missed_any"):
            v = np.array([p[m] for p in per], float)
            assert row[f"{m}_values"] == pytest.approx(v.tolist())
            assert row[f"{m}_mean"] == pytest.approx(v.mean())
            assert row[f"{m}_sd"] == pytest.approx(v.std(ddof=1))
    assert s["pairs"] == [list(p) for p in PAIRS]
    assert len(s["paired"]) == len(PAIRS) * 2 * 6  # pairs x 2 motifs x 6 metrics
    for p in s["paired"]:
        rows = [{(x["method"], x["motif"]): x for x in run["table"]} for run in r["runs"]]
        d = [
            t[(p["a"], p["motif"])][p["metric"]] - t[(p["b"], p["motif"])][p["metric"]]
            for t in rows
        ]
        assert p["diff_values"] == pytest.approx(d)
        sign = -1 if p["metric"].startswith("frac_missed") else 1
        assert p["favour_a"] == sum(sign * x > 1e-12 for x in d)
        assert p["favour_b"] == sum(sign * x < -1e-12 for x in d)
        assert p["favour_a"] + p["favour_b"] + p["ties"] == 2
    report = (out / "report.md").read_text()
    assert "## Across 2 training seeds" in report
    assert "## Findings across 2 training seeds" in report
    assert "**In brief, across 2 training seeds**" in report
    assert f"deepliftjax {package_version()}" in report
    assert "training seed 1 (one run)" in report


# ---------------------------------------------------------------- motif discovery (--motifs)


def _stub_modisco(monkeypatch, calls):
    """A modisco-lite stand-in returning three patterns: GATA_disc1 with flanks, the
    reverse complement of TAL1_known1, and a flat one; records its arguments."""
    import sys
    import types

    m = load_motifs()
    flank = np.full((4, 4), 0.25)

    def pattern(ppm, n):
        p = types.SimpleNamespace(sequence=ppm, seqlets=[None] * n)
        p.contrib_scores = p.hypothetical_contribs = ppm - 0.25
        return p

    def tfmodisco(one_hot, hypothetical_contribs, **options):
        calls.append((one_hot, hypothetical_contribs, options))
        return [
            pattern(np.vstack([flank, m[GATA].pwm, flank]), 40),
            pattern(m[TAL1].pwm[::-1, ::-1], 30),
            pattern(np.full((12, 4), 0.25) + np.eye(4)[np.arange(12) % 4] * 0.01, 12),
        ], None

    pkg, sub = types.ModuleType("modiscolite"), types.ModuleType("modiscolite.tfmodisco")
    sub.TFMoDISco = tfmodisco
    monkeypatch.setitem(sys.modules, "modiscolite", pkg)
    monkeypatch.setitem(sys.modules, "modiscolite.tfmodisco", sub)


def test_single_seed_motif_step_with_stubbed_modisco(tmp_path, capsys, monkeypatch):
    """One training seed (no across-seed section) with --motifs: DeepLIFT-SHAP on the
    scored positives, the three .npy files (projected = hypothetical × one-hot, summing per
    position to the contributions' sum), modisco-lite handed exactly those scores, the
    matches in metrics.json, report.md and the printed summary."""
    pytest.importorskip("matplotlib")
    calls = []
    _stub_modisco(monkeypatch, calls)
    out = tmp_path / "run"
    small = ["--tiny", "--n-train", "256", "--n-val", "64", "--n-test", "64", "--epochs", "1"]
    assert main([*small, "--out", str(out), "--no-progress", "--motifs", "--shuffles", "3"]) == 0
    r = json.loads((out / "metrics.json").read_text())
    _check_results(out, r)
    assert "across_seeds" not in r and r["seeds"]["train_seeds"] == [0] and len(r["runs"]) == 1
    rec = r["motifs"]
    contrib, hyp, proj = (
        np.load(out / f"{k}.npy") for k in ("contributions", "hypothetical", "projected")
    )
    ((onehot, hyp_given, options),) = calls
    assert contrib.shape == hyp.shape == proj.shape == onehot.shape == (r["n_scored"], 200, 4)
    np.testing.assert_array_equal(hyp_given, hyp)
    np.testing.assert_array_equal(proj, hyp * onehot)  # the present-base projection
    np.testing.assert_allclose(proj.sum(-1), contrib.sum(-1), atol=1e-5)
    assert np.abs(contrib * (1 - onehot)).max() > 1e-3  # scores on absent bases: shuffles
    assert rec["projection_check"] < 1e-5 and rec["summation_residual"] < 1e-3
    from deepliftjax.genomics._motifs import TINY_MODISCO

    assert options == TINY_MODISCO  # --tiny: the tiny modisco-lite settings
    assert rec["n_sequences"] == r["n_scored"] and rec["shuffles"] == 3
    assert rec["matches"]["GATA_disc1"]["patterns"] == ["pos_0"]
    assert rec["matches"]["TAL1_known1"]["patterns"] == ["pos_1"]  # the reverse complement
    assert rec["matches"]["GATA_disc1"]["similarity"] == pytest.approx(1.0)
    assert rec["matches"]["TAL1_known1"]["similarity"] == pytest.approx(1.0)
    assert rec["matches"]["TAL1_known1"]["num_seqlets"] == 30
    sims = {p["name"]: p["similarity"] for p in rec["patterns"]}
    assert max(sims["pos_2"].values()) < 0.8 and sims["pos_0"]["TAL1_known1"] < 0.8
    assert 0 < rec["attribute_s"] + rec["modisco_s"] <= rec["time_s"] == r["timing"]["motifs_s"]
    assert r["timing"]["motifs_s"] < r["timing"]["total_s"]
    assert (out / "motifs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "Across" not in report
    assert "## Motif discovery (modisco-lite)" in report and "![discovered patterns]" in report
    assert "**GATA_disc1: found**, as pos_0 (40 seqlets)" in report
    assert "| pos_1 | 30 | " in report and f"Motif step: {rec['time_s']:.0f} s" in report
    printed = capsys.readouterr().out
    assert "Motif discovery" in printed and "| pos_0 | 40 | 1.000 |" in printed


def test_motifs_without_modisco_is_one_clear_line(capsys, monkeypatch):
    import sys

    from deepliftjax._errors import DeepLiftError
    from deepliftjax.genomics import run_experiment

    monkeypatch.setitem(sys.modules, "modiscolite", None)
    monkeypatch.setitem(sys.modules, "modiscolite.tfmodisco", None)
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as e:
        main(["--tiny", "--motifs"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--motifs" in err and "modisco-lite" in err and "deepliftjax[motifs]" in err
    t = time.perf_counter()
    with pytest.raises(DeepLiftError, match="modisco-lite"):
        run_experiment(Config(motifs=True), progress=False)
    assert time.perf_counter() - t < 5  # refused before any training


@pytest.mark.slow
def test_motif_step_finds_gata_and_ebox(tmp_path):
    """The main command's default setting with --motifs and the real modisco-lite: one
    discovered pattern matches GATA_disc1 and another the E-box (TAL1_known1)."""
    pytest.importorskip("modiscolite")
    pytest.importorskip("matplotlib")
    from deepliftjax.genomics import run_experiment

    r = run_experiment(Config(motifs=True), tmp_path, progress=False, command="slow test")
    rec = r["motifs"]
    gata, ebox = rec["matches"][GATA], rec["matches"][TAL1]
    assert gata["patterns"] and ebox["patterns"], rec["patterns"]
    assert not set(gata["patterns"]) & set(ebox["patterns"])
    assert gata["similarity"] >= 0.95 and ebox["similarity"] >= 0.95
    assert gata["num_seqlets"] >= 100 and ebox["num_seqlets"] >= 100
    assert rec["summation_residual"] < 1e-3 and rec["projection_check"] < 1e-4


# ---------------------------------------------------------------- across seeds


def _table(vals):
    """A table from {(method, motif): (auprc_core, top_window, n_missed)}."""
    out = []
    for (method, motif), (a, tw, miss) in vals.items():
        out.append(
            {
                "method": method,
                "motif": motif,
                "auprc_core": a,
                "auprc_motif": a / 2,
                "top_window": tw,
                "top_window_alone": tw,
                "n_missed": miss,
                "frac_missed": miss / 100,
            }
        )
    return out


def test_summarize_and_paired_by_hand():
    from deepliftjax.genomics._seeds import paired_comparison, sign_test_p, summarize_seeds

    dl, gx = "DeepLIFT", "gradient×input"
    tables = [
        _table({(dl, "G"): (0.8, 0.5, 10), (gx, "G"): (0.6, 0.6, 30)}),
        _table({(dl, "G"): (0.7, 0.4, 20), (gx, "G"): (0.7, 0.3, 20)}),
        _table({(dl, "G"): (0.9, 0.2, 30), (gx, "G"): (0.5, 0.4, 10)}),
    ]
    s = {(r["method"], r["motif"]): r for r in summarize_seeds(tables)}
    assert s[(dl, "G")]["auprc_core_mean"] == pytest.approx(0.8)
    assert s[(dl, "G")]["auprc_core_sd"] == pytest.approx(0.1)  # sample sd of .8 .7 .9
    assert s[(gx, "G")]["n_missed_values"] == [30, 20, 10]
    assert s[(gx, "G")]["n_missed_mean"] == pytest.approx(20.0)
    assert s[(gx, "G")]["n_missed_sd"] == pytest.approx(10.0)
    p = {r["metric"]: r for r in paired_comparison(tables)}
    assert p["auprc_core"]["diff_values"] == pytest.approx([0.2, 0.0, 0.4])
    assert (p["auprc_core"]["favour_a"], p["auprc_core"]["favour_b"]) == (2, 0)
    assert p["auprc_core"]["ties"] == 1
    assert (p["top_window"]["favour_a"], p["top_window"]["favour_b"]) == (1, 2)
    # fewer missed is better: seed 0 favours DeepLIFT, seed 2 gradient×input
    assert (p["frac_missed"]["favour_a"], p["frac_missed"]["favour_b"]) == (1, 1)
    assert p["top_window"]["sign_p"] == pytest.approx(1.0)
    assert sign_test_p(5, 0) == pytest.approx(1 / 16)  # two-sided: 2 / 2**5
    assert sign_test_p(4, 1) == pytest.approx(12 / 32)
    assert sign_test_p(0, 0) == 1.0
    assert summarize_seeds(tables[:1])[0]["auprc_core_sd"] is None
    with pytest.raises(ValueError, match="no seeds"):
        summarize_seeds([])


def test_seed_findings_say_how_strong():
    from deepliftjax.genomics._seeds import paired_comparison, seed_findings, summarize_seeds

    dl, gx = "DeepLIFT", "gradient×input"
    tables = [
        _table({(dl, "G"): (0.8 + i / 100, 0.3, 10), (gx, "G"): (0.6, 0.5 if i < 3 else 0.1, 30)})
        for i in range(5)
    ]
    lines = seed_findings(summarize_seeds(tables), paired_comparison(tables), 5)
    text = "\n".join(lines)
    assert lines[0] == "## Findings across 5 training seeds"
    assert "DeepLIFT better in all 5 seeds" in text  # auPRC
    assert "gradient×input better in 3 of 5 seeds, DeepLIFT in 2: not consistent" in text
    assert "Where gradient×input does better: in most seeds on G top window (3 of 5)" in text
    assert "p of 0.062" in text  # even 5 of 5 is no significance test
    from deepliftjax.genomics._seeds import headline

    assert headline(paired_comparison(tables), 5) == (
        "G: DeepLIFT better in all 5 seeds (auPRC and missed)."
    )
    tables[0][0]["auprc_core"] = 0.1  # one seed now favours gradient×input on auPRC
    assert headline(paired_comparison(tables), 5) == (
        "G: no consistent winner (higher auPRC: DeepLIFT in 4, gradient×input in 1 of 5 seeds; "
        "fewer missed: DeepLIFT in 5, gradient×input in 0)."
    )


# ---------------------------------------------------------------- Fig. 3


def test_fig3_letter_logos_shared_scale_labels():
    pytest.importorskip("matplotlib")
    from matplotlib.patches import PathPatch

    from deepliftjax.genomics import plot_scores

    rng = np.random.default_rng(0)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, 60))]
    scores = {"DeepLIFT": rng.standard_normal((3, 60, 4)), "gradient×input": rng.random((3, 60, 4))}
    scores["gradient×input"][1] *= 10  # a different scale in one sequence
    masks = {GATA: np.zeros((3, 60), bool), TAL1: np.zeros((3, 60), bool)}
    masks[GATA][:, 5:15] = True
    masks[TAL1][:, 30:46] = True
    fig = plot_scores(None, x, scores, masks, titles=["a", "b", "c: methods disagree"])
    axes = fig.axes
    assert len(axes) == 6
    for i in range(3):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        assert top.get_ylim() == bottom.get_ylim()  # one y-scale per sequence
        s = (scores["gradient×input"][i] * x[i]).sum(1)
        assert bottom.get_ylim()[1] >= s.max()
        assert top.get_ylabel().startswith("DeepLIFT") and "score" in top.get_ylabel()
        assert bottom.get_ylabel().startswith("gradient×input")
        for ax in (top, bottom):
            glyphs = [p for p in ax.patches if isinstance(p, PathPatch)]
            assert glyphs, "no letter glyphs"
            spans = [p for p in ax.patches if not isinstance(p, PathPatch)]
            assert len(spans) == 2  # one shaded span per motif instance
    assert axes[-1].get_xlabel() == "position"
    assert axes[4].get_title(loc="left") == "c: methods disagree"
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels == [f"{GATA} instance", f"{TAL1} instance"]
    assert "score of the base present" in fig._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_pick_examples_includes_a_disagreement():
    from deepliftjax.genomics._experiment import _pick_examples

    dl, gx = "DeepLIFT", "gradient×input"
    n = 6
    hits = {(m, k): np.ones(n, bool) for m in (dl, gx) for k in (GATA, TAL1)}
    core = {(m, k): np.full(n, 0.5) for m in (dl, gx) for k in (GATA, TAL1)}
    hits[(gx, GATA)][4] = False  # gradient×input misses GATA in sequence 4
    core[(dl, TAL1)][5] = 0.9  # a bigger auPRC gap, but no disagreement on found / missed
    idx, j, what = _pick_examples(3, hits, core, (GATA, TAL1))
    assert idx == [0, 1, 4] and j == 4
    assert what == f"methods disagree: gradient×input misses {GATA}, DeepLIFT finds it"
    hits[(gx, GATA)][4] = True
    idx, j, what = _pick_examples(3, hits, core, (GATA, TAL1))
    assert idx == [0, 1, 5] and "differ most" in what


# ---------------------------------------------------------------- training progress


@pytest.mark.parametrize("epochs, patience", [(40, 1), (2, 5)])
def test_progress_bar_total_is_epochs_run(capsys, epochs, patience):
    from deepliftjax.genomics import train

    model = GenomicsCNN(filters=4, kernel=5, pool=10, hidden=8)
    d = simulate(160, seq_len=40, seed=0)
    res = train(
        model,
        d.x[:128],
        d.y[:128],
        d.x[128:],
        d.y[128:],
        epochs=epochs,
        batch_size=64,
        learning_rate=0.05,
        patience=patience,
        progress=True,
    )
    err = capsys.readouterr().err
    n = len(res.history)
    last = re.findall(r"(\d+)/(\d+) \[", err)[-1]
    assert last == (str(n), str(n)), err[-400:]
    if n < epochs:
        assert f"early stop, best epoch {res.best_epoch}" in err
    assert "TqdmWarning" not in err


def test_cli_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--n-train", "0"])
    assert "n_train" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size"):
        Config(n_train=10)


@pytest.mark.slow
def test_default_run_reaches_paper_auroc(tmp_path):
    """The main command's default setting: auROC >= 0.90 and DeepLIFT summation to delta."""
    pytest.importorskip("matplotlib")
    from deepliftjax.genomics import run_experiment

    r = run_experiment(Config(), tmp_path, progress=False)
    assert r["model"]["test_auroc"] >= 0.90
    _check_results(tmp_path, r)
    assert r["timing"]["total_s"] < 300


def test_summation_covers_every_deeplift_method_and_integrated_gradients():
    """Eq. (1) per method: the single-reference rule sets against the uniform reference,
    DeepLIFT-SHAP against the mean over its own shuffles, integrated gradients (with
    ``--all-methods``) as its completeness error; a wrong reference would show."""
    from deepliftjax.genomics._attribute import MORE_METHODS, attribute
    from deepliftjax.genomics._experiment import _summation

    m = GenomicsCNN(filters=4, kernel=5, pool=10, hidden=8)
    x = np.asarray(jax.nn.one_hot(jax.random.randint(jax.random.key(0), (5, 40), 0, 4), 4))
    params = m.init(jax.random.key(1), x[0])["params"]

    def f(s):
        return m.apply({"params": params}, s)

    methods = {
        **METHODS,
        **{k: MORE_METHODS[k] for k in ("DeepLIFT RevealCancel", "integrated gradients")},
    }
    scores = attribute(methods, f, x, progress=False)
    logits = np.asarray(jax.vmap(f)(x))
    out = _summation(scores, f, logits, x)
    assert set(out) == {RESCALE, MIXED, SHAP, "DeepLIFT RevealCancel", "integrated gradients"}
    scale = float(np.abs(logits - f(jnp.full((40, 4), 0.25))).max())
    for k in (RESCALE, MIXED, SHAP, "DeepLIFT RevealCancel"):
        assert out[k] < 1e-5 * max(scale, 1.0), (k, out[k])
    assert np.isfinite(out["integrated gradients"])
    # against the uniform reference, DeepLIFT-SHAP's sums would be far off
    uniform = np.abs(scores[SHAP].sum((1, 2)) - (logits - float(f(jnp.full((40, 4), 0.25)))))
    assert uniform.max() > 100 * out[SHAP]
