"""Training with optax Adam and early stopping on validation loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from deepliftjax._errors import error
from deepliftjax._progress import tqdm

from ._metrics import auroc

Params = Any


@dataclasses.dataclass
class TrainResult:
    """Attributes:
    params: the parameters of the best epoch (lowest validation loss).
    best_epoch: 1-based epoch of those parameters.
    history: per-epoch dicts with train_loss, val_loss, val_auroc.
    """

    params: Params
    best_epoch: int
    history: list[dict[str, float]]


def predict(
    model: nn.Module, params: Params, x: ArrayLike, *, batch_size: int = 1024
) -> np.ndarray:
    """Logits of `model` on `x`, in batches.

    Args:
      model: a module mapping (batch, length, 4) to (batch,) logits.
      params: its parameters.
      x: (n, length, 4) inputs.
      batch_size: batch size.

    Returns:
      (n,) float32 logits.
    """
    apply = _jitted_apply(model)
    x = np.asarray(x)
    out = [np.asarray(apply(params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


_APPLY_CACHE: dict[nn.Module, Callable] = {}


def _jitted_apply(model: nn.Module) -> Callable:
    if model not in _APPLY_CACHE:
        _APPLY_CACHE[model] = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return _APPLY_CACHE[model]


def _bce(logits: jax.Array, y: jax.Array) -> jax.Array:
    import optax  # the genomics extra; imported here so the package imports without it

    return optax.sigmoid_binary_cross_entropy(logits, y).mean()


def train(
    model: nn.Module,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike,
    y_val: ArrayLike,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    patience: int = 3,
    min_epochs: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Trains `model` with Adam on sigmoid cross-entropy; stops early on validation loss.

    Args:
      model: a module mapping (batch, length, 4) to (batch,) logits.
      x_train, y_train: training inputs (n, length, 4) and 0/1 labels (n,).
      x_val, y_val: validation inputs and labels.
      epochs: maximum number of epochs.
      batch_size: minibatch size.
      learning_rate: Adam learning rate.
      patience: stop after this many epochs without a lower validation loss.
      min_epochs: never stop before this many epochs (the loss can plateau at first).
      seed: seed of the initialisation and the shuffling.
      progress: show a tqdm progress bar.

    Returns:
      A TrainResult holding the best parameters.
    """
    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float32)
    x_val, y_val = np.asarray(x_val, np.float32), np.asarray(y_val, np.float32)
    if len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise error("inputs and labels differ in length.", "pass one label row per input sequence.")
    if len(x_train) < batch_size:
        raise error(
            f"{len(x_train)} training sequences are fewer than batch {batch_size}.",
            "pass a smaller batch_size or more training sequences.",
        )
    if epochs < 1 or patience < 1 or min_epochs < 1:
        raise error(
            "epochs, patience and min_epochs must be >= 1.",
            f"got epochs={epochs}, patience={patience}, min_epochs={min_epochs}; pass "
            "positive ints.",
        )
    key = jax.random.key(seed)
    params = model.init(key, jnp.asarray(x_train[:1]))["params"]
    import optax  # the genomics extra (see _experiment.main's check)

    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, g = jax.value_and_grad(lambda p: _bce(model.apply({"params": p}, xb), yb))(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    n_batches = len(x_train) // batch_size
    best = (np.inf, params, 0)
    history: list[dict[str, float]] = []
    bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not progress)
    for epoch in range(1, epochs + 1):
        perm = rng.permutation(len(x_train))
        losses = []
        for b in range(n_batches):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
            losses.append(loss)
        val_logits = predict(model, params, x_val)
        val_loss = float(_bce(jnp.asarray(val_logits), jnp.asarray(y_val)))
        rec = {
            "epoch": epoch,
            "train_loss": float(np.mean(jax.device_get(losses))),
            "val_loss": val_loss,
            "val_auroc": auroc(y_val, val_logits),
        }
        history.append(rec)
        if val_loss < best[0]:
            best = (val_loss, params, epoch)
        bar.set_postfix(
            loss=f"{rec['train_loss']:.3f}",
            val_loss=f"{val_loss:.3f}",
            val_auroc=f"{rec['val_auroc']:.3f}",
            refresh=False,
        )
        bar.update(1)
        if epoch >= min_epochs and epoch - best[2] >= patience:
            break
    if len(history) < epochs:  # stopped early: the bar ends at "n/n", not "n/epochs"
        bar.total = len(history)
        bar.set_description(f"training (early stop, best epoch {best[2]})", refresh=False)
        bar.refresh()
    bar.close()
    return TrainResult(best[1], best[2], history)
