"""Motif discovery (genomics._motifs): the similarity score, and modisco-lite on planted
GATA_disc1 / TAL1_known1 scores recovering both (tiny setting; modisco-lite's numba
compilation makes it slow, so it is marked slow)."""

from __future__ import annotations

import numpy as np
import pytest

from deepliftjax.genomics import load_motifs
from deepliftjax.genomics._motifs import TINY_MODISCO, discover_motifs, similarity


def test_similarity_alignment_and_strand():
    m = load_motifs()
    gata, tal1 = m["GATA_disc1"].pwm, m["TAL1_known1"].pwm
    flank = np.full((5, 4), 0.25)
    assert similarity(np.vstack([flank, gata, flank]), gata) == pytest.approx(1.0)
    assert similarity(np.vstack([flank, gata[::-1, ::-1]]), gata) == pytest.approx(1.0)
    assert similarity(gata[3:], gata) == pytest.approx(1.0)  # 70% of the motif inside
    assert similarity(np.vstack([flank, gata, flank]), tal1) < 0.8


@pytest.mark.slow
def test_discover_planted_motifs_tiny():
    pytest.importorskip("modiscolite")
    m = load_motifs()
    rng = np.random.default_rng(0)
    n, length = 200, 100
    toks = rng.integers(0, 4, (n, length))
    hyp = rng.normal(0, 0.05, (n, length, 4))
    for i in range(n):
        pwm = m[list(m)[i % 2]].pwm
        k = len(pwm)
        p = rng.integers(5, length - k - 5)
        toks[i, p : p + k] = [rng.choice(4, p=row) for row in pwm]
        hyp[i, p : p + k] += 0.5 * np.log2(pwm / 0.25 + 1e-3)
    patterns = discover_motifs(np.eye(4)[toks], hyp, m, **TINY_MODISCO)
    best = {name: max(p.similarity[name] for p in patterns) for name in m}
    assert best["GATA_disc1"] > 0.9 and best["TAL1_known1"] > 0.9, best
    assert {p.best_match[0] for p in patterns if p.num_seqlets >= 50} == set(m)
