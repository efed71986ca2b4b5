"""Keyed, jit- and vmap-able sequence shuffles for DNA references.

Two shuffles of one sequence, each a permutation of its positions:

* :func:`shuffle` -- a uniformly random permutation of the positions.
* :func:`dinuc_shuffle` -- a uniformly random sequence with exactly the same
  dinucleotide (adjacent pair) counts, the same first and the same last letter,
  drawn with the Eulerian-path method of Altschul & Erickson (1985) as refined by
  Kandel et al. (1996): a random "last-edge" spanning arborescence (Wilson's
  loop-erased random walk, which samples it with the exact weights), then the other
  edges out of each letter in random order, then the walk that uses them.

Both take a single sequence, either one-hot ``(L, A)`` (channels last, the JAX/Flax
convolution layout; all-zero rows such as ``N`` are kept as their own letter), one-hot
``(A, L)`` with ``alphabet_axis=0`` (the PyTorch layout), or integer tokens ``(L,)``, and
return the same kind. Batch them with :func:`jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from deepliftjax._errors import DeepLiftError, error
from deepliftjax._hypothetical import check_onehot

__all__ = ["dinuc_shuffle", "shuffle", "dinucleotide_counts"]


class TokenDtypeError(DeepLiftError, TypeError):
    """A 1-D sequence that does not hold integer tokens (a wrong type: also a TypeError)."""


def _split_keys(key: jax.Array, num_shuffles: int | None):
    if num_shuffles is None:
        return None
    if not isinstance(num_shuffles, int) or isinstance(num_shuffles, bool) or num_shuffles < 1:
        raise error(
            f"num_shuffles must be a positive int or None, got {num_shuffles!r}.",
            "None draws one shuffle shaped like x; K >= 1 draws K of them, stacked as "
            "(K, *x.shape).",
        )
    return jax.random.split(key, num_shuffles)


def _to_tokens(x: jax.Array) -> tuple[jax.Array, int, bool]:
    """Return (tokens (L,), number of letters incl. the all-zero letter, was_onehot)."""
    if x.ndim == 1:
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise error(
                f"A 1-D sequence must hold integer tokens, got dtype {x.dtype}.",
                "pass one-hot sequences as (L, A) arrays, or tokens as integers (x.astype(int)).",
                cls=TokenDtypeError,
            )
        return x.astype(jnp.int32), -1, False
    if x.ndim != 2:
        raise error(
            f"Expected one sequence, one-hot (L, A) or tokens (L,), got shape {x.shape}.",
            "use jax.vmap for a batch; pass alphabet_axis=0 for (A, L) data.",
        )
    a = x.shape[1]
    tok = jnp.where(jnp.any(x != 0, axis=1), jnp.argmax(x, axis=1), a)
    return tok.astype(jnp.int32), a + 1, True


def _from_tokens(tok: jax.Array, x: jax.Array, onehot: bool) -> jax.Array:
    if not onehot:
        return tok.astype(x.dtype)
    # one_hot of the extra letter index A gives an all-zero row, as in the input.
    return jax.nn.one_hot(tok, x.shape[1], dtype=x.dtype)


def _alphabet_first(x: jax.Array, alphabet_axis: int) -> bool:
    """Whether one-hot ``x`` is ``(A, L)``; checks ``alphabet_axis``."""
    if alphabet_axis not in (-1, 0, 1, -2) or (x.ndim != 2 and alphabet_axis != -1):
        raise error(
            f"alphabet_axis={alphabet_axis!r} does not fit one sequence of shape {x.shape}.",
            "one-hot sequences are (L, A) (alphabet_axis=-1, the default) or (A, L) "
            "(alphabet_axis=0); use jax.vmap for a batch.",
        )
    return x.ndim == 2 and alphabet_axis in (0, -2)


def shuffle(
    key: jax.Array, x: ArrayLike, num_shuffles: int | None = None, *, alphabet_axis: int = -1
) -> jax.Array:
    """Uniformly random permutation of a sequence's positions.

    Args:
      key: a PRNG key.
      x: one sequence, one-hot ``(L, A)`` or tokens ``(L,)``.
      num_shuffles: ``None`` for one shuffle of shape ``x.shape``, or ``K`` for ``K``
        independent shuffles stacked as ``(K, *x.shape)``.
      alphabet_axis: ``-1`` (default) for one-hot ``(L, A)``, ``0`` for ``(A, L)``.

    Returns:
      The shuffled sequence(s), same dtype as ``x``.

    Raises:
      DeepLiftError: ``x`` is not one sequence, or a 2-D ``x`` is not one-hot along
        ``alphabet_axis`` (checked as by :func:`dinuc_shuffle`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.nn.one_hot(jnp.array([0, 1, 2, 3, 3]), 4)
      >>> shuffle(jax.random.key(0), x, num_shuffles=3).shape
      (3, 5, 4)
    """
    x = jnp.asarray(x)
    first = _alphabet_first(x, alphabet_axis)
    if x.ndim == 2:
        check_onehot(x, alphabet_axis, what="shuffle")
    if first:
        return jnp.swapaxes(_shuffle(key, x.T, num_shuffles), -1, -2)
    return _shuffle(key, x, num_shuffles)


def _shuffle(key: jax.Array, x: jax.Array, num_shuffles: int | None) -> jax.Array:
    """:func:`shuffle` of a checked ``(L, A)`` or ``(L,)`` sequence."""
    keys = _split_keys(key, num_shuffles)
    if keys is not None:
        return jax.vmap(lambda k: _shuffle(k, x, None))(keys)
    if x.ndim not in (1, 2):
        raise error(
            f"Expected one sequence, one-hot (L, A) or tokens (L,), got shape {x.shape}.",
            "use jax.vmap for a batch.",
        )
    return jax.random.permutation(key, x, axis=0, independent=False)


def dinucleotide_counts(x: ArrayLike, alphabet_size: int | None = None) -> jax.Array:
    """Counts of adjacent letter pairs ``counts[a, b] = #{i : x[i] = a, x[i+1] = b}``.

    Args:
      x: one sequence, one-hot ``(L, A)`` (all-zero rows count as letter ``A``) or
        tokens ``(L,)``.
      alphabet_size: number of token values for token input (default ``max + 1``,
        which is not jit-able; pass it under jit).

    Returns:
      ``(A + 1, A + 1)`` int32 counts for one-hot input, ``(alphabet_size,) * 2`` for
      tokens.

    Example:
      >>> import jax.numpy as jnp
      >>> dinucleotide_counts(jnp.array([0, 1, 0, 1]), 2).tolist()
      [[0, 2], [1, 0]]
    """
    x = jnp.asarray(x)
    if x.ndim == 2:
        check_onehot(x, -1, what="dinucleotide_counts", keyword=None)
    tok, n, _ = _to_tokens(x)
    if n < 0:
        n = int(alphabet_size if alphabet_size is not None else int(tok.max()) + 1)
    pair = tok[:-1] * n + tok[1:]
    return jnp.zeros(n * n, jnp.int32).at[pair].add(1).reshape(n, n)


def _wilson_tree(key: jax.Array, counts: jax.Array, root: jax.Array, present: jax.Array):
    """Random last-edge arborescence toward ``root``: ``nxt[v]`` for each letter v.

    Wilson's algorithm with edge weights = dinucleotide counts (self-loops dropped:
    they are erased loops). The tree T is drawn with probability proportional to
    prod_v counts[v, T(v)], which makes the final sequence uniform among those with
    the same dinucleotide counts and end letters.
    """
    n = counts.shape[0]
    w = counts * (1 - jnp.eye(n, dtype=counts.dtype))
    idx = jnp.arange(n)
    in_tree0 = (idx == root) | ~present

    def first_free(in_tree):
        return jnp.argmin(in_tree)  # first False; only used while one exists

    def cond(state):
        return ~jnp.all(state[0])

    def body(state):
        in_tree, nxt, cur, start, key = state
        key, sub = jax.random.split(key)

        # A walk reached the tree: retrace start -> ... along the (loop-erased)
        # pointers, add the path to the tree, and start from the next free letter.
        def retrace(_, carry):
            tree, p = carry
            tree = tree.at[p].set(True)
            return tree, jnp.where(tree[nxt[p]], p, nxt[p])

        traced, _ = lax.fori_loop(0, n, retrace, (in_tree, start))
        new_start = first_free(traced)
        # Otherwise take one step of the walk out of `cur`.
        logits = jnp.where(
            w[cur] > 0, jnp.log(jnp.maximum(w[cur], 1).astype(jnp.float32)), -jnp.inf
        )
        step = jax.random.categorical(sub, logits).astype(jnp.int32)  # int64 under x64
        hit = in_tree[cur]
        in_tree = jnp.where(hit, traced, in_tree)
        nxt = jnp.where(hit, nxt, nxt.at[cur].set(step))
        cur = jnp.where(hit, new_start, step)
        start = jnp.where(hit, new_start, start)
        return in_tree, nxt, cur, start, key

    s0 = first_free(in_tree0)
    state = (in_tree0, jnp.full((n,), -1, jnp.int32), s0, s0, key)
    return lax.while_loop(cond, body, state)[1]


def _edge_counts(tok: jax.Array, n: int) -> jax.Array:
    """Flattened dinucleotide counts ``(n * n,)`` of a token sequence."""
    return jnp.zeros((n * n,), jnp.int32).at[tok[:-1] * n + tok[1:]].add(1)


def _dinuc_sample(key: jax.Array, tok: jax.Array, counts: jax.Array, n: int) -> jax.Array:
    """One dinucleotide shuffle of ``tok`` given its flattened edge ``counts``.

    After the random last-edge tree, the walk leaves each letter v along a uniformly
    random arrangement of v's out-edges with v's tree edge reserved for last, drawn
    without replacement as the walk goes (no sort, which is slow on CPU).
    """
    length = tok.shape[0]
    root = tok[-1]
    k_tree, k_walk = jax.random.split(key)
    counts2 = counts.reshape(n, n)
    nxt = _wilson_tree(k_tree, counts2, root, counts2.sum(1) > 0)
    u = jax.random.uniform(k_walk, (length - 1,))
    idx = jnp.arange(n)

    def step(carry, ui):
        cur, rem = carry
        row = lax.dynamic_slice(rem, (cur * n,), (n,))
        reserved = nxt[cur]
        avail = row - ((idx == reserved) & (cur != root))
        tot = avail.sum()
        thr = jnp.minimum((ui * tot).astype(jnp.int32), tot - 1)
        nxt_letter = jnp.where(tot > 0, jnp.sum(jnp.cumsum(avail) <= thr), reserved)
        nxt_letter = nxt_letter.astype(jnp.int32)
        return (nxt_letter, rem.at[cur * n + nxt_letter].add(-1)), nxt_letter

    _, rest = lax.scan(step, (tok[0], counts), u)
    return jnp.concatenate([tok[:1], rest])


def dinuc_shuffle(
    key: jax.Array,
    x: ArrayLike,
    num_shuffles: int | None = None,
    *,
    alphabet_size: int | None = None,
    alphabet_axis: int = -1,
    batched: bool = False,
) -> jax.Array:
    """Dinucleotide-preserving shuffle of one sequence (jit- and vmap-able).

    The result is a permutation of ``x``'s positions with exactly the same counts of
    every adjacent letter pair, the same first and last letter, and is drawn
    uniformly among all such sequences (Altschul-Erickson / Kandel et al. Eulerian
    path method, with the last-edge tree drawn by Wilson's algorithm). Shapes are
    fixed, so it runs under :func:`jax.jit` and :func:`jax.vmap`.

    Args:
      key: a PRNG key.
      x: one sequence: one-hot ``(L, A)`` (all-zero rows, e.g. ``N``, are kept as a
        letter of their own) or integer tokens ``(L,)``.
      num_shuffles: ``None`` for one shuffle of shape ``x.shape``, or ``K`` for
        ``(K, *x.shape)``. ``functools.partial(dinuc_shuffle, num_shuffles=K)`` is a
        reference generator ``(key, example) -> (K, ...)`` for :func:`deeplift_shap`.
      alphabet_axis: ``-1`` (default) for one-hot ``(L, A)``, ``0`` for
        ``(A, L)`` (the PyTorch layout); the result has ``x``'s layout.
      alphabet_size: for token input, the number of token values (tokens must lie in
        ``[0, alphabet_size)``); without it tokens are relabelled, which is slower.
      batched: ``x`` is a batch of sequences on its first axis (``(N, L, A)``, ``(N, A, L)``
        with ``alphabet_axis=1``, or tokens ``(N, L)``); each gets its own key
        (``jax.random.split(key, N)``), so the result equals ``jax.vmap`` of the unbatched
        call over those keys: ``(N, *x.shape[1:])`` or ``(N, K, *x.shape[1:])``.

    Returns:
      The shuffled sequence(s), same dtype as ``x``.

    Raises:
      DeepLiftError: ``x`` is not one ``(L, A)`` or integer ``(L,)`` sequence, or not
        one-hot along ``alphabet_axis`` (0/1 values, at most one 1 per position; all-zero
        positions are a letter of their own). A traced ``x`` is checked when it runs: under
        ``jit`` the call then fails with the same message.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (50,), 0, 4), 4)
      >>> s = dinuc_shuffle(jax.random.key(0), x)
      >>> bool((dinucleotide_counts(s) == dinucleotide_counts(x)).all())
      True
    """
    x = jnp.asarray(x)
    if batched:
        return _batched(key, x, num_shuffles, alphabet_size, alphabet_axis)
    first = _alphabet_first(x, alphabet_axis)
    if x.ndim == 2:
        check_onehot(x, alphabet_axis, what="dinuc_shuffle")
    if first:
        return jnp.swapaxes(_dinuc_shuffle(key, x.T, num_shuffles, alphabet_size), -1, -2)
    return _dinuc_shuffle(key, x, num_shuffles, alphabet_size)


def _batched(key, x, num_shuffles, alphabet_size, alphabet_axis) -> jax.Array:
    """:func:`dinuc_shuffle` of each sequence of a batch, one split key each."""
    if x.ndim not in (2, 3):
        raise error(
            f"batched=True takes a batch of sequences (N, L, A), (N, A, L) or tokens (N, L); "
            f"got shape {x.shape}.",
            "pass one sequence with batched=False (the default).",
        )
    if x.ndim == 3 and alphabet_axis not in (-1, 2, 1, -2):
        raise error(
            f"alphabet_axis={alphabet_axis!r} does not fit a batch of shape {x.shape}.",
            "with batched=True the axis is of the batch: -1 for (N, L, A), 1 for (N, A, L).",
        )
    axis = -1 if alphabet_axis in (-1, 2) else 0  # the axis of one sequence
    keys = jax.random.split(key, x.shape[0])
    one = lambda k, s: dinuc_shuffle(  # noqa: E731
        k, s, num_shuffles, alphabet_size=alphabet_size, alphabet_axis=axis
    )
    return jax.vmap(one)(keys, x)


def _dinuc_shuffle(
    key: jax.Array, x: jax.Array, num_shuffles: int | None, alphabet_size: int | None
) -> jax.Array:
    """:func:`dinuc_shuffle` of a checked ``(L, A)`` or ``(L,)`` sequence."""
    keys = _split_keys(key, num_shuffles)
    tok, n, onehot = _to_tokens(x)
    if not onehot:
        if alphabet_size is None:
            # Relabel token values 0..L-1 with fixed shapes (jit-able, slower).
            vals, tok = jnp.unique(tok, return_inverse=True, size=tok.shape[0], fill_value=0)
            tok, n = tok.reshape(-1).astype(jnp.int32), x.shape[0]
        else:
            vals, n = None, int(alphabet_size)
    if tok.shape[0] < 3:  # nothing to shuffle: the only such sequence is x itself
        return x if keys is None else jnp.broadcast_to(x, (num_shuffles, *x.shape))
    counts = _edge_counts(tok, n)  # shared by all shuffles of this sequence
    if keys is None:
        out = _dinuc_sample(key, tok, counts, n)
    else:
        out = jax.vmap(lambda k: _dinuc_sample(k, tok, counts, n))(keys)
    if onehot:
        return _from_tokens(out, x, True)
    return (out if vals is None else vals[out]).astype(x.dtype)
