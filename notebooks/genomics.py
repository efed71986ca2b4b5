# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Genomics: the paper's §3.2 experiment, in small
#
# Simulated DNA of length 200 holds instances of two motifs sampled from their ENCODE
# position weight matrices: GATA (GATA_disc1) and the CAGATG E-box (TAL1_known1). Positives
# hold both motifs, negatives one of them. We train the paper's CNN for a few epochs, then
# look at what DeepLIFT and gradient×input credit in a correctly predicted positive, score
# it with DeepLIFT-SHAP against dinucleotide-shuffled references, and draw the hypothetical
# contributions that TF-MoDISco takes as input.
#
# The full experiment, with the motif-recovery metrics of the paper, is one command:
# `deepliftjax-genomics`. Here everything runs in about a minute on 2 CPU cores
# (`DEEPLIFTJAX_QUICK=1`: smaller, for CI). Figures are written to `DEEPLIFTJAX_FIGURES`
# (a temporary folder if unset).

# %%
import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import deepliftjax as dl
from deepliftjax import genomics as g
from deepliftjax import plot

QUICK = os.environ.get("DEEPLIFTJAX_QUICK", "0") == "1"
N_SEQUENCES, EPOCHS = (4000, 6) if QUICK else (8000, 10)
FIGURES = os.environ.get("DEEPLIFTJAX_FIGURES") or tempfile.mkdtemp(prefix="deepliftjax_")
os.makedirs(FIGURES, exist_ok=True)
print("figures go to", FIGURES, "| quick" if QUICK else "")

# %% [markdown]
# ## The motifs
#
# The package ships the two position weight matrices. A motif logo scales each letter by
# its probability times the position's information content (bits); the same function draws
# contribution scores below.

# %%
motifs = g.load_motifs()
names = {g.GATA: "GATA", g.TAL1: "E-box (CAGATG)"}
fig, axes = plt.subplots(1, 2, figsize=(10, 2.2))
for ax, (key, label) in zip(axes, names.items(), strict=True):
    m = motifs[key]
    plot.sequence_logo(m.pwm * m.information_content[:, None], ax=ax, ylabel="bits",
                       title=f"{label}: {m.consensus}")
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "genomics_motifs.png"), dpi=100)

# %% [markdown]
# ## Simulate and train
#
# `simulate` returns one-hot sequences `(n, 200, 4)`, labels, and the true motif positions.
# The model is the paper's: conv 20×15, PReLU, max pool 50/50, two dense layers of 200 with
# PReLU, and a logit.

# %%
data = g.simulate(N_SEQUENCES, seed=0)
train, val, test = g.split(data, (0.75, 0.125, 0.125))
model = g.GenomicsCNN()
result = g.train(model, train.x, train.y, val.x, val.y, epochs=EPOCHS, batch_size=64,
                 learning_rate=3e-3, min_epochs=3, progress=False)
params = result.params
logits = g.predict(model, params, test.x)
print(f"{len(train)} training sequences, {len(result.history)} epochs; "
      f"test auROC {g.auroc(test.y, logits):.3f}")

# %% [markdown]
# ## DeepLIFT and gradient×input on one positive
#
# We attribute the logit (before the sigmoid, §2.5). `g.deeplift_onehot` is the paper's
# setting: a zero reference after the weight normalisation of §2.6, i.e. the uniform
# reference 0.25 with multipliers mean-centred over the four bases; the score of a position
# is that of the base present.

# %%
def logit_fn(x):
    return model.apply({"params": params}, x)


correct = np.flatnonzero((test.y == 1) & (logits > 0))
pos = test.subset(correct)
deeplift_scores = jax.jit(jax.vmap(g.deeplift_onehot(logit_fn)))
gxi_scores = jax.jit(jax.vmap(g.gradient_x_input(logit_fn)))
scores = {"DeepLIFT": np.asarray(deeplift_scores(pos.x)),
          "gradient×input": np.asarray(gxi_scores(pos.x))}
delta = logits[correct] - logit_fn(jnp.full((200, 4), 0.25))
print(f"{len(pos)} correctly predicted positives; DeepLIFT max |sum - delta| = "
      f"{np.abs(scores['DeepLIFT'].sum((1, 2)) - delta).max():.2e}")

i = 0  # the first correctly predicted test positive
marks = {label: pos.masks[key][i] for key, label in names.items()}
fig = plot.method_panels({k: v[i : i + 1] for k, v in scores.items()}, pos.x[i : i + 1],
                         kind="logo", highlight=marks,
                         row_titles=[f"test positive, logit {logits[correct][i]:.2f}"])
fig.savefig(os.path.join(FIGURES, "genomics_logo.png"), dpi=110)

# %% [markdown]
# The same as bars coloured by base (the paper's Fig. 3), and zoomed on each motif
# instance.

# %%
fig, axes = plt.subplots(2, 1, figsize=(12, 3.6), sharex=True)
for ax, (k, v) in zip(axes, scores.items(), strict=True):
    plot.sequence_bars(v[i], pos.x[i], ax=ax, highlight=marks, ylabel=k)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "genomics_bars.png"), dpi=100)


def zoom_windows(masks):
    """(start, stop) windows of 30 positions around each marked instance."""
    out = []
    for m in masks.values():
        edges = np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            c = (a + b) // 2
            out.append((max(0, c - 15), min(len(m), c + 15)))
    return sorted(out)


windows = zoom_windows(marks)
fig, axes = plt.subplots(2, len(windows), figsize=(4.5 * len(windows), 3.6), squeeze=False)
for r, (k, v) in enumerate(scores.items()):
    for c, (a, b) in enumerate(windows):
        ax = axes[r, c]
        plot.sequence_logo(v[i], pos.x[i], ax=ax, highlight=marks, ylabel=k if c == 0 else None)
        ax.set_xlim(a - 0.5, b - 0.5)
        if r or c:
            ax.get_legend().remove()
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "genomics_zoom.png"), dpi=100)

# %% [markdown]
# Over all correctly predicted positives: how well do the per-position scores pick out
# the motifs' informative positions (auPRC, the mean over sequences)? With this brief
# training the numbers move from run to run; `deepliftjax-genomics` measures them after full
# training on 4000 test sequences, with the paper's other metrics.

# %%
for k, v in scores.items():
    s = g.per_position(v, pos.x)
    row = [f"{label} {np.nanmean(g.motif_auprc(s, pos.core_masks[key])):.3f}"
           for key, label in names.items()]
    print(f"{k:15s}", "  ".join(row))

# %% [markdown]
# Scores are a way of sharing out one number, `f(x) - f(ref)`, among the positions. When
# the model needs both motifs (an AND), occluding either one (setting it to the reference
# 0.25) costs more of the logit than its share: the drops add up to more than the delta, and
# how the rules divide the shared part depends on the reference. Per motif, averaged over
# the positives:

# %%
print(f"{'':15s} {'occlusion drop':>15s} {'DeepLIFT sum':>13s} {'grad×input sum':>15s}")
for key, label in names.items():
    occluded = np.where(pos.masks[key][..., None], 0.25, pos.x)
    drop = (logits[correct] - g.predict(model, params, occluded)).mean()
    sums = [(v.sum(-1) * pos.masks[key]).sum(1).mean() for v in scores.values()]
    print(f"{label:15s} {drop:15.2f} {sums[0]:13.2f} {sums[1]:15.2f}")
print(f"{'delta':15s} {'':15s} {delta.mean():13.2f}")

# %% [markdown]
# ## DeepLIFT-SHAP with dinucleotide-shuffled references
#
# One reference is arbitrary; a common choice for DNA is to average DeepLIFT over many
# shuffles of the sequence itself that keep its dinucleotide counts. `deeplift_shap` takes
# a reference generator `(key, x) -> (K, ...)`, and with `hypothetical=True` also returns
# the hypothetical contributions: the score each base *would* get at each position (the
# input of TF-MoDISco's motif discovery). Projected on the base present they give back the
# contributions.

# %%
shuffles = functools.partial(dl.dinuc_shuffle, num_shuffles=10 if QUICK else 20)
shap = jax.jit(dl.deeplift_shap(logit_fn, shuffles, key=jax.random.key(0), hypothetical=True,
                                return_residuals=True))
out = shap(jnp.asarray(pos.x[i]))
assert np.allclose(dl.project_hypothetical(out.hypothetical, pos.x[i]),
                   out.contributions.sum(-1), atol=1e-4)
print(f"max summation residual over references: {float(out.residuals):.2e}")

# per position, the contributions summed over the four bases, drawn as the base present
per_base = np.asarray(out.contributions).sum(-1, keepdims=True) * pos.x[i]
fig, axes = plt.subplots(3, len(windows), figsize=(4.5 * len(windows), 5.2), squeeze=False)
for c, (a, b) in enumerate(windows):
    plot.sequence_logo(scores["DeepLIFT"][i], pos.x[i], ax=axes[0, c], highlight=marks,
                       ylabel="DeepLIFT\n(uniform ref.)" if c == 0 else None)
    plot.sequence_logo(per_base, ax=axes[1, c], highlight=marks,
                       ylabel="DeepLIFT-SHAP\n(shuffles)" if c == 0 else None)
    plot.sequence_logo(out.hypothetical, ax=axes[2, c], highlight=marks,
                       ylabel="hypothetical" if c == 0 else None)
    for r in range(3):
        axes[r, c].set_xlim(a - 0.5, b - 0.5)
        if r or c:
            axes[r, c].get_legend().remove()
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "genomics_shap.png"), dpi=100)

# %% [markdown]
# For many sequences, `deepliftjax.attribute` runs this in jitted chunks with a progress
# bar, and `deepliftjax.export_modisco` writes the one-hot sequences and hypothetical scores
# in modisco-lite's layout.
