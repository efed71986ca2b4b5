"""The PWM scanner that finds chance matches of the motifs (``genomics._scan``)."""

from __future__ import annotations

import numpy as np
import pytest

from deepliftjax.genomics import GATA, TAL1, chance_matches, load_motifs, match_starts, simulate
from deepliftjax.genomics._scan import log_odds, window_scores

MOTIFS = load_motifs()
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def _onehot(seq: str) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[["ACGT".index(c) for c in seq]]


def _revcomp(seq: str) -> str:
    return "".join(COMPLEMENT[c] for c in reversed(seq))


def test_a_planted_consensus_is_found_at_its_position_on_either_strand():
    """A background with no match (all C: GATA's core GATAAG has no C) holds the consensus
    at 17 and its reverse complement at 60: the scan finds exactly those two starts."""
    m = MOTIFS[GATA]
    seq = ["C"] * 100
    seq[17 : 17 + m.length] = m.consensus
    seq[60 : 60 + m.length] = _revcomp(m.consensus)
    x = _onehot("".join(seq))[None]
    assert [list(s) for s in match_starts(x, m)] == [[17, 60]]
    # the consensus scores the motif's maximal log-odds (over its informative positions)
    best = log_odds(m).max(axis=1).sum()
    assert window_scores(x, m)[0, 17] == pytest.approx(best)
    assert window_scores(x, m)[0, 60] == pytest.approx(best)


def test_chance_matches_leave_out_the_planted_instances_and_keep_an_extra_copy():
    """The planted instance at 17 is not a chance match; an extra copy planted at 70 (that
    the labels do not record) is, and its positions are marked."""
    m = MOTIFS[TAL1]
    seq = ["A"] * 120
    for start in (17, 70):
        seq[start : start + m.length] = m.consensus
    x = _onehot("".join(seq))[None]
    starts, mask = chance_matches(x, m, np.array([[17, -1]]))
    assert starts.tolist() == [[70]]
    assert np.flatnonzero(mask[0]).tolist() == list(range(70, 70 + m.length))
    starts, mask = chance_matches(x, m, np.array([[17, 70]]))  # both planted: no chance match
    assert starts.tolist() == [[-1]] and not mask.any()


def test_simulated_instances_are_found_where_the_simulator_put_them():
    """On the simulator's data, the scan finds most planted instances at their recorded
    starts (the PWM samples weak ones too: 81% of GATA, 84% of TAL1 at the threshold 0.8
    on 4000 sequences), and a chance match never overlaps a planted instance."""
    d = simulate(600, seed=3)
    for name, least in ((GATA, 0.7), (TAL1, 0.7)):
        m = MOTIFS[name]
        found = [set(s) for s in match_starts(d.x, m)]
        planted = [(i, int(q)) for i, row in enumerate(d.starts[name]) for q in row if q >= 0]
        hit = np.mean([q in found[i] for i, q in planted])
        assert hit >= least, (name, hit)
        starts, mask = chance_matches(d.x, m, d.starts[name])
        assert not (mask & d.masks[name]).any()
        for i, row in enumerate(starts):
            for q in row[row >= 0]:
                assert q in found[i]


def test_bad_input_raises():
    m = MOTIFS[GATA]
    with pytest.raises(ValueError, match="one-hot sequences of shape"):
        window_scores(np.zeros((3, 10)), m)
    with pytest.raises(ValueError, match="shorter than"):
        window_scores(np.zeros((1, 4, 4)), m)
    with pytest.raises(ValueError, match="threshold must be in"):
        match_starts(np.zeros((1, 20, 4)), m, threshold=1.5)
