"""Scoring methods for one-hot sequences, and batched application.

A method maps a scalar function of one sequence, f: (length, 4) -> (), to a function that
returns per-base scores (length, 4) for one sequence. `METHODS` holds the built-in ones; pass
any name -> method dict to `attribute` (or to the experiment) to compare more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from deepliftjax._errors import error
from deepliftjax._progress import tqdm

ScalarFn = Callable[[jax.Array], jax.Array]
ScoreFn = Callable[[jax.Array], jax.Array]
Method = Callable[[ScalarFn], ScoreFn]

UNIFORM_REFERENCE = 0.25


def deeplift_onehot(f: ScalarFn, rule: str = "rescale") -> ScoreFn:
    """DeepLIFT as in the paper's §3.2: zero reference after the §2.6 weight normalisation.

    Equals the uniform reference 0.25 with input multipliers mean-centred over the base axis;
    the score of base b at position i is m[i, b] * x[i, b], so only the present base scores.

    Args:
      f: scalar function of one (length, 4) one-hot sequence (e.g. the logit).

    Returns:
      A function (length, 4) -> (length, 4) scores.
    """
    from deepliftjax import deeplift  # the core transform

    multipliers = deeplift(
        f, UNIFORM_REFERENCE, onehot_axis=-1, multiply_by_inputs=False, rule=rule
    )
    return lambda x: multipliers(x) * x


def reveal_cancel_onehot(f: ScalarFn) -> ScoreFn:
    """:func:`deeplift_onehot` with the RevealCancel rule (Shrikumar et al. 2017)."""
    return deeplift_onehot(f, rule="reveal_cancel")


DENSE_RC_CONV_RS = {"dot_general": "reveal_cancel", "conv_general_dilated": "rescale"}
"""Shrikumar et al. (2017)'s best variant on genomics models: RevealCancel at the dense
layers' nonlinearities, Rescale at the convolutions'."""


def dense_rc_conv_rs_onehot(f: ScalarFn) -> ScoreFn:
    """:func:`deeplift_onehot` with RevealCancel on the dense layers and Rescale on the
    convolutions (:data:`DENSE_RC_CONV_RS`)."""
    return deeplift_onehot(f, rule=DENSE_RC_CONV_RS)


SHAP_SHUFFLES = 20


def deeplift_shap_onehot(f: ScalarFn, shuffles: int = SHAP_SHUFFLES, seed: int = 0) -> ScoreFn:
    """DeepLIFT-SHAP with ``shuffles`` dinucleotide-shuffled references per sequence
    (the field's practice: Shrikumar et al. 2017, tangermeme, BPNet). A position's score is
    its contributions summed over the bases, on the base present (the present-base
    projection of the hypothetical scores), so it sums to the mean ``f(x) - f(ref_k)``.

    The shuffles of every sequence are drawn with the same key (``seed``): different
    sequences still get different shuffles, and a sequence's scores do not depend on the
    batch it is scored in.
    """
    import functools

    from deepliftjax import deeplift_shap, dinuc_shuffle

    shap = deeplift_shap(
        f,
        functools.partial(dinuc_shuffle, num_shuffles=shuffles),
        key=jax.random.key(seed),
    )
    return lambda x: shap(x).sum(-1, keepdims=True) * x


def integrated_gradients_onehot(f: ScalarFn, steps: int = 32) -> ScoreFn:
    """Integrated gradients from the uniform reference, multipliers mean-centred over bases
    like :func:`deeplift_onehot`, scores of the present base."""
    from deepliftjax import integrated_gradients

    ig = integrated_gradients(f, UNIFORM_REFERENCE, steps=steps)

    def scores(x):
        m = ig(x) / jnp.where(x == UNIFORM_REFERENCE, 1.0, x - UNIFORM_REFERENCE)
        return (m - m.mean(-1, keepdims=True)) * x

    return scores


def gradient_x_input(f: ScalarFn) -> ScoreFn:
    """Gradient times input (``deepliftjax.gradient_x_input`` on one sequence)."""
    from deepliftjax import gradient_x_input as gxi

    return gxi(f)


def guided_backprop_x_input(f: ScalarFn) -> ScoreFn:
    """Guided backpropagation times input."""
    from deepliftjax import guided_backprop

    return guided_backprop(f, multiply_by_inputs=True)


RESCALE = "DeepLIFT"
MIXED = "DeepLIFT (RevealCancel dense, Rescale conv)"
SHAP = f"DeepLIFT-SHAP ({SHAP_SHUFFLES} dinucleotide shuffles)"
GRADIENT = "gradient×input"

METHODS: dict[str, Method] = {
    RESCALE: deeplift_onehot,
    MIXED: dense_rc_conv_rs_onehot,
    SHAP: deeplift_shap_onehot,
    GRADIENT: gradient_x_input,
}

MORE_METHODS: dict[str, Method] = {
    "DeepLIFT RevealCancel": reveal_cancel_onehot,
    "integrated gradients": integrated_gradients_onehot,
    "guided backprop×input": guided_backprop_x_input,
}
"""The other methods of the comparison (``--all-methods`` on the command line)."""


def attribute(
    methods: Mapping[str, Method],
    f: ScalarFn,
    x: ArrayLike,
    *,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Scores a batch of sequences with each method, in jitted, vmapped chunks.

    Args:
      methods: name -> method.
      f: scalar function of one (length, 4) sequence.
      x: (n, length, 4) sequences.
      batch_size: chunk size.
      progress: show a tqdm progress bar.

    Returns:
      name -> (n, length, 4) float32 scores.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise error(
            f"expected (n, length, 4) sequences, got shape {x.shape}.",
            "pass a batch of one-hot DNA, channels last (x[None] for one sequence).",
        )
    if batch_size < 1:
        raise error(
            f"batch_size must be >= 1, got {batch_size}.", "pass a positive int such as 64."
        )
    batch_size = max(1, min(batch_size, len(x)))
    out = {}
    for name, method in methods.items():
        fn = jax.jit(jax.vmap(method(f)))
        chunks = []
        for i in tqdm(range(0, len(x), batch_size), desc=f"scoring: {name}", disable=not progress):
            xb = x[i : i + batch_size]
            pad = batch_size - len(xb)  # pad the last chunk: one compilation per method
            xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)]) if pad else xb
            chunks.append(np.asarray(fn(jnp.asarray(xb)))[: batch_size - pad])
        out[name] = np.concatenate(chunks) if chunks else np.zeros_like(x)
    return out
