"""Dinucleotide-preserving and plain shuffles: exact counts, permutations, uniformity."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax._shuffle import dinuc_shuffle, dinucleotide_counts, shuffle


def _onehot(tokens, a=4):
    tokens = np.asarray(tokens)
    out = np.zeros((*tokens.shape, a), np.float32)
    idx = np.nonzero(tokens < a)
    out[(*idx, tokens[idx])] = 1.0  # token a (= N) stays an all-zero row
    return out


def _pairs(tok):
    return collections.Counter(zip(tok[:-1], tok[1:], strict=True))


def _tokens(x):
    x = np.asarray(x)
    return np.where(x.any(-1), x.argmax(-1), x.shape[-1])


SEQS = [
    "ACGTACGTTTGACAAAGCT" * 10,  # 190 bp, mixed
    "A" * 60 + "C",  # one letter dominates: the tree edge A->C must come last
    "AC" * 40 + "G",  # strongly connected pair with a single exit
    "GATTACA",
    "ACGNNNACGTNA",  # N (all-zero rows) is a letter of its own
    "AAAA",
    "ACG",
]


def _encode(s):
    return _onehot(["ACGTN".index(c) for c in s])


@pytest.mark.parametrize("seq", SEQS)
def test_dinuc_shuffle_keeps_counts_and_is_permutation(seq):
    x = _encode(seq)
    f = jax.jit(jax.vmap(lambda k: dinuc_shuffle(k, x)))
    out = np.asarray(f(jax.random.split(jax.random.key(0), 64)))
    tok = _tokens(x)
    for s in out:
        st = _tokens(s)
        assert _pairs(st) == _pairs(tok)
        assert sorted(st) == sorted(tok)  # a permutation of the positions' letters
        assert st[0] == tok[0] and st[-1] == tok[-1]
        assert set(np.unique(s)) <= {0.0, 1.0} and s.dtype == x.dtype
    if seq == SEQS[0]:
        assert len({s.tobytes() for s in out}) > 32  # shuffles actually differ
    if seq in (SEQS[1], SEQS[5]):  # only one sequence has these pair counts
        assert all(np.array_equal(s, x) for s in out)


def test_dinuc_shuffle_batched_random_sequences_and_counts_helper():
    x = jnp.asarray(_onehot(np.random.default_rng(0).integers(0, 5, (16, 200))))
    keys = jax.random.split(jax.random.key(1), 16)
    out = jax.jit(jax.vmap(lambda k, s: dinuc_shuffle(k, s, 5)))(keys, x)
    assert out.shape == (16, 5, 200, 4)
    want = jax.vmap(dinucleotide_counts)(x)
    got = jax.vmap(jax.vmap(dinucleotide_counts))(out)
    np.testing.assert_array_equal(got, np.broadcast_to(want[:, None], got.shape))
    assert int(want.sum()) == 16 * 199


@pytest.mark.parametrize("seq", [[0, 1, 0, 0, 1, 1, 0, 1, 0], [0, 1, 2, 0, 2, 1, 1, 0, 2]])
def test_dinuc_shuffle_is_uniform(seq):
    """Every sequence with the same pair counts and first letter is drawn equally often."""
    t = jnp.asarray(seq)
    n = 12000
    out = np.asarray(jax.jit(lambda k: dinuc_shuffle(k, t, n, alphabet_size=3))(jax.random.key(3)))
    seen = collections.Counter(map(tuple, out.tolist()))
    want = {
        p for p in set(itertools.permutations(seq)) if _pairs(p) == _pairs(seq) and p[0] == seq[0]
    }
    assert len(want) > 5
    assert set(seen) == want
    expect = n / len(want)
    counts = np.array(list(seen.values()))
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < len(want) + 6 * np.sqrt(2 * len(want))  # ~6 sigma above the mean of chi2


def test_dinuc_shuffle_tokens_without_alphabet_size_and_short_sequences():
    t = jnp.asarray([7, 3, 3, 7, 9, 3, 7, 7, 9])
    s = np.asarray(dinuc_shuffle(jax.random.key(0), t))
    assert _pairs(s) == _pairs(np.asarray(t)) and s.dtype == t.dtype
    for short in ([2], [1, 2]):
        np.testing.assert_array_equal(dinuc_shuffle(jax.random.key(0), jnp.asarray(short)), short)


def test_shuffle_is_a_keyed_permutation():
    x = _encode("ACGTTGCAAACCGGTTN" * 4)
    a = np.asarray(shuffle(jax.random.key(0), x, 8))
    b = np.asarray(jax.jit(lambda k: shuffle(k, x, 8))(jax.random.key(0)))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8, *x.shape)
    for s in a:
        assert sorted(_tokens(s)) == sorted(_tokens(x))
    assert len({s.tobytes() for s in a}) == 8
    assert not np.array_equal(a[0], np.asarray(shuffle(jax.random.key(1), x)))


def test_shuffle_errors():
    with pytest.raises(ValueError, match="one sequence"):
        dinuc_shuffle(jax.random.key(0), jnp.zeros((2, 10, 4)))
    with pytest.raises(TypeError, match="integer tokens"):
        dinuc_shuffle(jax.random.key(0), jnp.zeros(10))
    with pytest.raises(ValueError, match="num_shuffles"):
        shuffle(jax.random.key(0), jnp.zeros((10, 4)), 0)
