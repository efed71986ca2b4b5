"""The gradient-based comparison methods of the paper, as public transforms.

Gradient, gradient × input and integrated gradients are plain JAX; guided backpropagation
and ε-LRP run through the DeepLIFT interpreter with their own rule sets
(:mod:`deepliftjax._rulesets`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from deepliftjax._api import _transform
from deepliftjax._errors import error
from deepliftjax._interpreter import Options


def gradient(
    f: Callable[..., Any],
    *,
    argnums: int | Sequence[int] = 0,
    absolute: bool = False,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """Saliency (Simonyan et al. 2013): the gradient, or its absolute value.

    Not exact: gradients do not sum to ``f(x) - f(ref)``. Cost: one gradient.

    Example:
      >>> import jax.numpy as jnp, deepliftjax as dl
      >>> dl.gradient(lambda x: jnp.sum(x**2), absolute=True)(jnp.array([-1.0, 2.0]))
      Array([2., 4.], dtype=float32)
    """
    g = jax.grad(f, argnums=argnums, has_aux=has_aux)

    @functools.wraps(f)
    def saliency(*args, **kwargs):
        out = g(*args, **kwargs)
        if not absolute:
            return out
        if has_aux:
            return jax.tree_util.tree_map(jnp.abs, out[0]), out[1]
        return jax.tree_util.tree_map(jnp.abs, out)

    return saliency


def gradient_x_input(
    f: Callable[..., Any], *, argnums: int | Sequence[int] = 0
) -> Callable[..., Any]:
    """Gradient × input (a first-order Taylor term against zero). Not exact; one gradient.

    Example:
      >>> import jax.numpy as jnp, deepliftjax as dl
      >>> dl.gradient_x_input(lambda x: jnp.sum(x**2))(jnp.array([-1.0, 2.0]))
      Array([2., 8.], dtype=float32)
    """
    g = jax.grad(f, argnums=argnums)

    @functools.wraps(f)
    def scores(*args, **kwargs):
        grads = g(*args, **kwargs)
        nums = argnums if isinstance(argnums, Sequence) else (argnums,)
        xs = tuple(args[i] for i in nums)
        if not isinstance(argnums, Sequence):
            return jax.tree_util.tree_map(lambda a, b: a * b, grads, xs[0])
        return jax.tree_util.tree_map(lambda a, b: a * b, grads, xs)

    return scores


def guided_backprop(
    f: Callable[..., Any], *, argnums: int | Sequence[int] = 0, multiply_by_inputs: bool = False
) -> Callable[..., Any]:
    """Guided backpropagation (Springenberg et al. 2014): at every ReLU (``max(x, 0)``),
    only positive gradients flow, and only where the unit is active. Not exact.

    Runs through the same interpreter as :func:`deeplift`, with a modified rule for ``max``.

    Example:
      >>> import jax, jax.numpy as jnp, deepliftjax as dl
      >>> f = lambda x: jnp.sum(-jax.nn.relu(x))
      >>> dl.guided_backprop(f)(jnp.array([1.0, -1.0]))
      Array([0., 0.], dtype=float32)
    """
    post = (lambda m, x: m * x) if multiply_by_inputs else None
    options = Options(method="guided_backprop")
    return _transform(f, 0.0, argnums, False, False, None, options, post)


def lrp_epsilon(
    f: Callable[..., Any],
    *,
    epsilon: float = 1e-9,
    bias: bool = True,
    argnums: int | Sequence[int] = 0,
) -> Callable[..., Any]:
    """ε-LRP (Bach et al. 2015) as a modified gradient times the input.

    Every nonlinearity passes ``y / (z + ε sign z)`` of the relevance back (the rule for
    relevance ratios of ε-LRP); with ``bias=False`` a bias add passes all relevance to its
    other operand, so biases absorb none. For piecewise-linear networks with
    ``bias=True`` and ε → 0 this equals gradient × input (§3.4 of the paper). Not exact.

    Example:
      >>> import jax, jax.numpy as jnp, deepliftjax as dl
      >>> f = lambda x: jnp.sum(jax.nn.relu(x @ jnp.ones((2, 2)) + 1.0))
      >>> dl.lrp_epsilon(f)(jnp.array([1.0, -0.5]))
      Array([ 2., -1.], dtype=float32)
    """
    options = Options(method="lrp", epsilon=epsilon, bias=bias)
    return _transform(f, 0.0, argnums, False, False, None, options, lambda m, x: m * x)


def integrated_gradients(
    f: Callable[..., Any],
    ref: Any,
    *,
    steps: int = 50,
    argnums: int = 0,
    return_error: bool = False,
) -> Callable[..., Any]:
    """Integrated gradients (Sundararajan et al. 2017) along the straight path from ``ref``.

    The path integral is approximated by the trapezoidal rule on ``steps`` intervals, all
    gradients computed in one batched (vmapped) call. Its completeness error
    ``|sum(IG) - (f(x) - f(ref))|`` shrinks as steps grow; ``return_error=True`` returns it.

    Example:
      >>> import jax.numpy as jnp, deepliftjax as dl
      >>> ig = dl.integrated_gradients(lambda x: jnp.sum(x**2), 0.0, steps=8)
      >>> ig(jnp.array([1.0, 2.0]))
      Array([1., 4.], dtype=float32)
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise error(
            f"integrated_gradients needs steps >= 1 (an int); got {steps!r}.",
            "50 is the default; the completeness error shrinks as steps grow "
            "(return_error=True reports it).",
        )
    grad = jax.grad(f, argnums=argnums)

    @functools.wraps(f)
    def scores(*args):
        x = args[argnums]
        r = jnp.broadcast_to(jnp.asarray(ref, x.dtype), x.shape)
        alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)
        weights = jnp.full((steps + 1,), 1.0 / steps, x.dtype).at[jnp.array([0, -1])].mul(0.5)

        def at(alpha):
            a = list(args)
            a[argnums] = r + alpha * (x - r)
            return grad(*a)

        g = jax.vmap(at)(alphas)
        ig = jnp.tensordot(weights, g, axes=1) * (x - r)
        if not return_error:
            return ig
        a_ref = list(args)
        a_ref[argnums] = r
        return ig, jnp.abs(jnp.sum(ig) - (f(*args) - f(*a_ref)))

    return scores


__all__ = ["gradient", "gradient_x_input", "guided_backprop", "integrated_gradients",
           "lrp_epsilon"]  # fmt: skip
