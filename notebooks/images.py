# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Images: the paper's Fig. 2 on handwritten digits
#
# A small CNN is trained on the 8×8 digits that ship with scikit-learn (1797 images,
# nothing downloaded), in well under a minute on a CPU. For a few test digits we draw the
# panels of the paper's Fig. 2: the absolute gradient (saliency), positive gradient×input,
# and positive DeepLIFT, each against the all-zero (blank) reference, scores summed over
# channels.
#
# Figures are written to `DEEPLIFTJAX_FIGURES` (a temporary folder if unset);
# `DEEPLIFTJAX_QUICK=1` trains for fewer epochs (CI).

# %%
import os
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import deepliftjax as dl
from deepliftjax import plot

QUICK = os.environ.get("DEEPLIFTJAX_QUICK", "0") == "1"
EPOCHS = 8 if QUICK else 20
FIGURES = os.environ.get("DEEPLIFTJAX_FIGURES") or tempfile.mkdtemp(prefix="deepliftjax_")
os.makedirs(FIGURES, exist_ok=True)
print("figures go to", FIGURES, "| quick" if QUICK else "")

# %% [markdown]
# ## Data
#
# Pixel values 0..16 are scaled to [0, 1]; images get a channel axis, `(n, 8, 8, 1)`.

# %%
digits = load_digits()
x_all = (digits.images / 16.0).astype(np.float32)[..., None]
y_all = digits.target.astype(np.int32)
perm = np.random.default_rng(0).permutation(len(x_all))
x_all, y_all = x_all[perm], y_all[perm]
n_train = 1400
x_train, y_train = x_all[:n_train], y_all[:n_train]
x_test, y_test = x_all[n_train:], y_all[n_train:]
print(x_train.shape, x_test.shape)

# %% [markdown]
# ## A small CNN, trained with optax

# %%
class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(*x.shape[:-3], -1)
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


model = CNN()
params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
opt = optax.adam(3e-3)
opt_state = opt.init(params)


@jax.jit
def step(params, opt_state, xb, yb):
    def loss_fn(p):
        logits = model.apply(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


rng = np.random.default_rng(1)
for _ in range(EPOCHS):
    order = rng.permutation(n_train)
    for b in range(0, n_train - 63, 64):
        idx = order[b : b + 64]
        params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
pred = np.asarray(model.apply(params, x_test)).argmax(-1)
accuracy = float((pred == y_test).mean())
print(f"{EPOCHS} epochs, last batch loss {float(loss):.3f}, test accuracy {accuracy:.3f}")
assert accuracy > 0.8

# %% [markdown]
# ## Scores for the true class
#
# Each method maps a scalar function of one image to scores shaped like the image. We
# attribute the logit of the digit's true class (§2.5: logits, not softmax outputs), and
# `vmap` over the examples, `jit` the lot.

# %%
shown = [int(np.flatnonzero((y_test == d) & (pred == d))[0]) for d in (0, 3, 5, 8)]
xs, ys = x_test[shown], y_test[shown]
ref = jnp.zeros((8, 8, 1))  # the blank image


def attributions(method):
    """Scores of each shown digit for its own class, with `method(f)` for a scalar f."""
    def one(x, y):
        return method(lambda v: model.apply(params, v)[y])(x)

    return np.asarray(jax.jit(jax.vmap(one))(xs, ys))


scores = {
    "|gradient|": attributions(lambda f: dl.gradient(f, absolute=True)),
    "gradient×input": attributions(dl.gradient_x_input),
    "DeepLIFT": attributions(lambda f: dl.deeplift(f, ref)),
}
logit = jax.vmap(lambda x, y: model.apply(params, x)[y])
delta = np.asarray(logit(xs, ys) - logit(jnp.zeros_like(xs), ys))
print("DeepLIFT sums:", scores["DeepLIFT"].sum((1, 2, 3)).round(4))
print("f(x) - f(ref):", delta.round(4))
assert np.allclose(scores["DeepLIFT"].sum((1, 2, 3)), delta, atol=1e-3 * np.abs(delta).max())

# %% [markdown]
# ## The paper's Fig. 2 panels
#
# Left to right: the digit, |gradient|, positive gradient×input, positive DeepLIFT
# (brighter = more important).

# %%
fig = plot.method_panels(scores, xs, positive_only={"gradient×input": True, "DeepLIFT": True},
                         row_titles=[f"digit {y}" for y in ys])
fig.savefig(os.path.join(FIGURES, "digits_fig2.png"), dpi=110)

# %% [markdown]
# ## Signed scores
#
# Without the positive-only mask, DeepLIFT also shows which pixels argue against the class
# (blue). The scores of each digit sum to its logit minus the logit of the blank image.

# %%
fig, axes = plt.subplots(1, len(shown), figsize=(2.4 * len(shown), 2.6))
for ax, s, x, y, d in zip(axes, scores["DeepLIFT"], xs, ys, delta, strict=True):
    plot.image_heatmap(s, ax=ax, image=x, title=f"{y}: sum {s.sum():.2f} = Δ {d:.2f}")
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "digits_signed.png"), dpi=100)
