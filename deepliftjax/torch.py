"""PyTorch modules as pure JAX functions, attributed exactly with no port.

:func:`from_torch` converts a ``torch.nn.Module`` once, through torchax, into a pure JAX
function of its weights and input. DeepLIFT then sees the model's jaxpr, so functional
calls (``F.relu``, ``F.max_pool1d``, ``torch.exp`` in ``forward``) get their rules just as
modules do: module hooks, which the PyTorch attribution tools rely on, never see them.

Install with ``pip install "deepliftjax[torch]"`` (PyTorch's CPU build and torchax; see
the README for the versions tested together).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepliftjax._errors import error

__all__ = ["from_torch"]

_HINT = 'install the extra: pip install "deepliftjax[torch]"'


@contextlib.contextmanager
def _missing_overloads_tolerated() -> Iterator[list[str]]:
    """Let torchax name operator overloads this torch no longer has.

    torch 2.13 removed the named-tensor overloads (``aten.prod.dim_Dimname``,
    ``aten.all.dimname``, ``aten.norm.names_*``, ...); torchax 0.0.10-0.0.13 lists them in
    its cast-policy and decomposition tables while importing, and fails. They can never be
    called on a tensor without names, so a placeholder that matches no call stands in.
    The names are collected in the yielded list.
    """
    import torch._ops as ops

    original = ops.OpOverloadPacket.__getattr__
    missing: list[str] = []

    def getattr_(self: Any, key: str) -> Any:
        try:
            return original(self, key)
        except AttributeError:
            if key.startswith("_"):
                raise
            missing.append(f"{self._qualified_op_name}.{key}")
            return type("RemovedOverload", (), {"name": lambda _s: key})()

    ops.OpOverloadPacket.__getattr__ = getattr_
    try:
        yield missing
    finally:
        ops.OpOverloadPacket.__getattr__ = original


def _torchax() -> Any:
    """torchax with its default environment built (which loads its operator tables)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise error(f"deepliftjax.torch needs PyTorch ({e}).", _HINT) from e
    try:
        with _missing_overloads_tolerated():
            import torchax

            torchax.default_env()
    except ImportError as e:
        raise error(f"deepliftjax.torch needs torchax ({e}).", _HINT) from e
    return torchax


def from_torch(
    module: Any,
    example_input: Any,
    *,
    batched: bool = False,
    dtype: Any = None,
    check: bool = True,
) -> tuple[Callable[..., Any], dict[str, jax.Array]]:
    """A PyTorch module as a pure JAX function ``fn(params, *inputs)`` and its weights.

    The module is copied and put in inference mode (``module.eval()``: BatchNorm uses its
    running statistics, dropout is off); the user's module is left as it was. Weights and
    buffers are converted to JAX arrays once. The function runs the module's ``forward``
    through torchax, so it is traced, jitted, vmapped and differentiated like any JAX
    function, and ``deeplift``, ``deeplift_shap``, ``attribute`` and ``jax.grad`` accept it.

    Args:
      module: a ``torch.nn.Module``.
      example_input: one input as the module takes it (a torch tensor or array, batch axis
        included when ``batched``; without it when not), or a tuple of them for a module
        whose ``forward`` takes several (BPNet's sequence and control track); used to
        check the conversion.
      batched: the convention of ``fn``. ``False`` (default): ``fn(params, x)`` takes one
        example, without the batch axis the module expects, and returns the module's output
        for it without a batch axis (the module is called on ``x[None]``), so it composes
        with :func:`jax.vmap` and :func:`deepliftjax.deeplift`. ``True``: ``fn`` takes and
        returns batches exactly as ``module`` does.
      dtype: convert the copy's floating weights to this dtype (``torch.float64``: needs
        ``jax.config.update("jax_enable_x64", True)``); default: as they are.
      check: run the copy and ``fn`` on ``example_input`` and raise if they differ.

    Returns:
      ``(fn, params)``: ``fn(params, x)`` returns the module's output (a pytree of JAX
      arrays where ``forward`` returns a tuple or dict).

    Raises:
      DeepLiftError: torch or torchax is not installed, an input is not a tensor/array, or
        the converted function's output differs from the module's on ``example_input``.

    Example:
      >>> import jax.numpy as jnp, torch, deepliftjax
      >>> from deepliftjax.torch import from_torch
      >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
      >>> fn, params = from_torch(net, torch.ones(3))
      >>> f = lambda x: fn(params, x)[0]
      >>> x = jnp.array([1.0, -2.0, 0.5])
      >>> c = deepliftjax.deeplift(f, jnp.zeros(3))(x)
      >>> bool(jnp.isclose(c.sum(), f(x) - f(jnp.zeros(3)), atol=1e-6))
      True
    """
    torchax = _torchax()
    import torch

    if not isinstance(module, torch.nn.Module):
        raise error(
            f"from_torch takes a torch.nn.Module, got {type(module).__name__}.",
            "pass the model object (for a function of tensors, write it in JAX).",
        )
    model = copy.deepcopy(module).eval()
    if dtype is not None:
        model = model.to(dtype)
    states, call = torchax.extract_jax(model)
    params = dict(states)

    def fn(p: dict[str, jax.Array], *xs: Any) -> Any:
        if batched:
            return call(p, xs)
        out = call(p, jax.tree_util.tree_map(lambda a: a[None], xs))
        return jax.tree_util.tree_map(lambda a: a[0], out)

    fn.__doc__ = f"{type(module).__name__}.forward as a JAX function (batched={batched})."
    if check:
        _check(model, fn, params, example_input, batched)
    return fn, params


def _numpy(t: Any) -> np.ndarray:
    """A torch tensor as a NumPy array; half types (which NumPy lacks) as float32."""
    import torch

    t = t.detach().cpu()
    return t.float().numpy() if t.dtype in (torch.bfloat16, torch.float16) else t.numpy()


def _check(model: Any, fn: Callable, params: dict, example: Any, batched: bool) -> None:
    """Raise unless ``fn`` and the torch module agree on ``example``."""
    import torch

    examples = example if isinstance(example, tuple | list) else (example,)
    dt = next((p.dtype for p in model.parameters()), torch.float32)
    xts = []
    for e in examples:
        a = _numpy(e) if isinstance(e, torch.Tensor) else e
        try:
            a = np.asarray(a)
        except Exception as err:  # noqa: BLE001 - any failure is the same user error
            raise error(
                f"example_input must be a tensor or array, got {type(e).__name__}.",
                "pass one input of the module (a torch tensor), or a tuple of them.",
            ) from err
        xts.append(torch.as_tensor(a).to(dt if np.issubdtype(a.dtype, np.floating) else None))
    shape_hint = (
        "pass example_input as the module takes it: with its batch axis for batched=True, "
        "without it for batched=False (the default: fn takes one example)."
    )
    try:
        with torch.no_grad():
            want = model(*(xts if batched else [t[None] for t in xts]))
    except Exception as e:  # noqa: BLE001 - the module's own error, shown with the fix
        raise error(
            f"from_torch: the module fails on example_input of shape "
            f"{', '.join(str(tuple(t.shape)) for t in xts)} "
            f"(batched={batched}): {type(e).__name__}: {e}",
            shape_hint,
        ) from e
    want = jax.tree_util.tree_map(_numpy, want, is_leaf=lambda t: isinstance(t, torch.Tensor))
    if not batched:
        want = jax.tree_util.tree_map(lambda a: a[0], want)
    inputs = [jnp.asarray(_numpy(t), dtype=str(t.dtype).removeprefix("torch.")) for t in xts]
    got = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), fn(params, *inputs))
    # float64, float32, and the 8-bit-mantissa half types (bfloat16, float16)
    tol = {torch.float64: 1e-10, torch.bfloat16: 3e-2, torch.float16: 3e-2}.get(dt, 1e-4)
    for w, g in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got), strict=True):
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1.0)
        if w.shape != g.shape or not np.allclose(g, w, rtol=tol, atol=tol * scale):
            err = np.max(np.abs(g - w)) if w.shape == g.shape else "shapes differ"
            raise error(
                f"from_torch: the converted function differs from the module on example_input "
                f"(module: {w.shape}, converted: {g.shape}; max |difference| {err}).",
                "report the module: torchax converts one of its operations differently. "
                "Until then, write that part in JAX.",
            )
