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
# # deepliftjax: quick start
#
# `deepliftjax.deeplift(f, ref)` is a function transform, like `jax.grad`: it takes a pure
# JAX function returning a scalar and returns a function that gives DeepLIFT contribution
# scores (Shrikumar et al., *Not Just A Black Box*, 2016) for its input. The scores sum to
# `f(x) - f(ref)` ("summation to delta"), and the transform composes with `jit`, `vmap`
# and `grad`, with no change to the model code.
#
# Figures are written to the folder named by `DEEPLIFTJAX_FIGURES` (a temporary folder if
# unset).

# %%
import os
import tempfile
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import deepliftjax as dl
from deepliftjax import plot

FIGURES = os.environ.get("DEEPLIFTJAX_FIGURES") or tempfile.mkdtemp(prefix="deepliftjax_")
os.makedirs(FIGURES, exist_ok=True)
print("figures go to", FIGURES)

# %% [markdown]
# ## A three-line function
#
# A scalar function of a vector, a reference (here all zeros) and an input. The scores are
# shaped like the input.

# %%
def f(x):
    h = jnp.tanh(x * jnp.array([1.0, -2.0, 0.5]))
    return jnp.sum(h**2) + x[0] * x[1]


x = jnp.array([1.0, 0.5, -2.0])
ref = jnp.zeros(3)
scores = dl.deeplift(f, ref)(x)
print("scores         ", scores)
print("sum of scores  ", float(scores.sum()))
print("f(x) - f(ref)  ", float(f(x) - f(ref)))
assert jnp.allclose(scores.sum(), f(x) - f(ref), atol=1e-5)

# %% [markdown]
# ## The network of the paper's Fig. 1
#
# `y = 0.2 * relu(x1 + 2 x2 + 2) + 0.1`. At `x = (-1, -1)` the ReLU is off, so the gradient
# (and gradient × input) is zero, although the output differs from its value at the
# reference `(0, 0)`. DeepLIFT gives the difference, `0.1 - 0.5 = -0.4`, to the inputs in
# proportion to their weights: `(-0.133, -0.267)`.

# %%
fig1 = lambda x: 0.2 * jax.nn.relu(x[0] + 2 * x[1] + 2) + 0.1
x1 = jnp.array([-1.0, -1.0])
print("gradient        ", jax.grad(fig1)(x1))
print("gradient × input", dl.gradient_x_input(fig1)(x1))
print("DeepLIFT        ", dl.deeplift(fig1, jnp.zeros(2))(x1))
print("f(x) - f(ref)   ", float(fig1(x1) - fig1(jnp.zeros(2))))

# %% [markdown]
# Along the straight line from the reference to the input, the output saturates: the
# gradient at the end point sees none of the change, DeepLIFT's secant slope sees all of it.

# %%
t = jnp.linspace(0, 1, 101)
path = jax.vmap(lambda a: fig1(a * x1))(t)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(t, path, label="f(ref + t (x - ref))")
ax.plot([0, 1], [path[0], path[-1]], "--", label="secant (DeepLIFT)")
ax.set_xlabel("t")
ax.set_ylabel("f")
ax.legend(frameon=False)
ax.set_title("Fig. 1: the gradient is zero at t = 1")
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "quickstart_fig1.png"), dpi=100)

# %% [markdown]
# ## Summation to delta, on random inputs
#
# The rules are exact: for any input, the scores add up to the change in output.

# %%
w = jax.random.normal(jax.random.key(0), (5, 16))
g = lambda x: jnp.sum(jax.nn.gelu(x @ w) * jax.nn.sigmoid(x @ w))  # a product of two branches
xs = jax.random.normal(jax.random.key(1), (4, 5))
for xi in xs:
    c = dl.deeplift(g, 0.0)(xi)
    print(f"sum {float(c.sum()):+.6f}   delta {float(g(xi) - g(jnp.zeros(5))):+.6f}")

# %% [markdown]
# ## jit and vmap over a batch
#
# `deeplift(f, ref)` returns an ordinary JAX function: `vmap` it over a batch and `jit`
# the result. The reference's forward pass is shared by the whole batch.

# %%
batched = jax.jit(jax.vmap(dl.deeplift(g, 0.0)))
xb = jax.random.normal(jax.random.key(2), (256, 5))
cb = batched(xb)
print(cb.shape, "max |sum - delta| =",
      float(jnp.abs(cb.sum(1) - (jax.vmap(g)(xb) - g(jnp.zeros(5)))).max()))

# %% [markdown]
# ## A Flax model
#
# Attribute one logit of a Flax module: wrap `model.apply` in a scalar function. No hooks,
# no layer lists, no conversion.

# %%
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(3)(x)


model = MLP()
params = model.init(jax.random.key(0), jnp.zeros(5))
xm = jax.random.normal(jax.random.key(3), (8, 5))
logit1 = lambda x: model.apply(params, x)[1]
scores_m = jax.jit(jax.vmap(dl.deeplift(logit1, jnp.zeros(5))))(xm)
print(scores_m.round(3))
print("max |sum - delta| =", float(jnp.abs(
    scores_m.sum(1) - (jax.vmap(logit1)(xm) - logit1(jnp.zeros(5)))).max()))

# %% [markdown]
# The same scores as a picture: one column per input feature, one row per example.

# %%
fig, ax = plt.subplots(figsize=(4, 3.5))
plot.image_heatmap(scores_m, ax=ax, channel_axis=None, colorbar=True,
                   title="DeepLIFT, logit 1", xlabel="input feature", ylabel="example",
                   colorbar_label="DeepLIFT score")
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "quickstart_flax.png"), dpi=100)

# %% [markdown]
# ## A vector output: `deeplift_vjp`
#
# `deeplift_vjp(f, ref, x)` returns the outputs at the input and the reference and a
# pullback: any linear combination of the outputs gets its multipliers without re-tracing.
# Contributions are `m * (x - ref)`; each sums to the change of that combination.

# %%
x0 = xm[0]
out, out_ref, pullback = dl.deeplift_vjp(lambda x: model.apply(params, x), jnp.zeros(5), x0)
for name, cot in [("logit 0", jnp.eye(3)[0]), ("logit 2", jnp.eye(3)[2]),
                  ("logit 0 - logit 2", jnp.eye(3)[0] - jnp.eye(3)[2])]:
    (m,) = pullback(cot)
    c = m * (x0 - 0.0)
    print(f"{name:18s} sum {float(c.sum()):+.5f}  delta {float(cot @ (out - out_ref)):+.5f}")

# %% [markdown]
# ## Gradients of scores
#
# The scores are differentiable (e.g. for attribution priors during training).

# %%
penalty = lambda p: jnp.sum(dl.deeplift(lambda x: model.apply(p, x)[1], jnp.zeros(5))(x0) ** 2)
grads = jax.grad(penalty)(params)
print(jax.tree_util.tree_map(jnp.shape, grads))

# %% [markdown]
# ## An unsupported primitive
#
# A primitive without a DeepLIFT rule (here `sort`) raises `DeepLiftError` at trace time,
# naming the primitive, showing the equation and saying how to register a rule.
# `fallback="gradient"` uses the derivative there instead, with a warning: then the scores
# no longer sum to delta. Here the largest entry is the first one in the reference and the
# second one in the input; the derivative at the input credits the second entry with the
# whole value, although the maximum did not change at all (delta is 0).

# %%
top = lambda x: 2.0 * jnp.sort(x)[-1]
x_top, ref_top = jnp.array([1.0, 3.0, 2.0]), jnp.array([3.0, 0.0, 0.0])
try:
    dl.deeplift(top, ref_top)(x_top)
    raise AssertionError("expected DeepLiftError")
except dl.DeepLiftError as err:
    print(err)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fallback_scores = dl.deeplift(top, ref_top, fallback="gradient")(x_top)
print("warning:", str(caught[0].message).splitlines()[0])
print("scores        ", fallback_scores)
print("sum of scores ", float(fallback_scores.sum()))
print("f(x) - f(ref) ", float(top(x_top) - top(ref_top)))
assert abs(float(fallback_scores.sum()) - float(top(x_top) - top(ref_top))) > 1.0
