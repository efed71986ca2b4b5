"""Rules for linear (and affine) primitives: the ordinary VJP is the multiplier (§2.3.1).

A primitive is linear here when it is linear in its varying operands jointly for
fixed constant operands, e.g. ``add``, ``concatenate``, ``dot_general`` with one
constant operand, ``gather`` with constant indices.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax.numpy as jnp

from deepliftjax._compat import primitive
from deepliftjax._interpreter import Context, register_rule
from deepliftjax._pair import ELEMENTWISE, Pair
from deepliftjax._rulekit import linear_rule, rescale_rule


def deflinear(prim: Any) -> None:
    """Register the linear rule for ``prim``."""
    register_rule(prim, partial(linear_rule, prim))


def _stop_gradient_rule(ctx: Context, operand: Pair, **params: Any) -> Pair:
    # Every difference must be attributed, or the sum breaks: pass the multiplier through.
    return Pair(operand.x, operand.r)


def _convert_rule(ctx: Context, operand: Any, *, new_dtype: Any, **params: Any) -> Pair:
    """Widening float casts are linear; a narrowing cast rounds, so it gets Rescale."""
    params = dict(params, new_dtype=new_dtype)
    old = jnp.dtype(operand.dtype)
    new = jnp.dtype(new_dtype)
    if operand.is_float and jnp.issubdtype(new, jnp.inexact) and new.itemsize < old.itemsize:
        return rescale_rule(convert_element_type_p, False, ctx, operand, **params)
    return linear_rule(convert_element_type_p, ctx, operand, **params)


convert_element_type_p = primitive("convert_element_type_p")

# ---- arithmetic -------------------------------------------------------------------------
deflinear(primitive("neg_p"))
deflinear(primitive("add_p"))
deflinear(primitive("sub_p"))
deflinear(primitive("add_jaxvals_p"))

ELEMENTWISE.update(primitive(n) for n in ("neg_p", "add_p", "sub_p", "add_jaxvals_p"))

# ---- type and copies --------------------------------------------------------------------
register_rule(primitive("convert_element_type_p"), _convert_rule)
deflinear(primitive("copy_p"))
ELEMENTWISE.update((convert_element_type_p, primitive("copy_p")))
deflinear(primitive("device_put_p"))
deflinear(primitive("sharding_constraint_p"))
deflinear(primitive("optimization_barrier_p"))
register_rule(primitive("stop_gradient_p"), _stop_gradient_rule)

# ---- shape ------------------------------------------------------------------------------
deflinear(primitive("reshape_p"))
deflinear(primitive("squeeze_p"))
deflinear(primitive("expand_dims_p"))
deflinear(primitive("broadcast_in_dim_p"))
deflinear(primitive("transpose_p"))
deflinear(primitive("rev_p"))
deflinear(primitive("concatenate_p"))
deflinear(primitive("pad_p"))
deflinear(primitive("split_p"))
deflinear(primitive("tile_p"))
deflinear(primitive("stack_p"))
deflinear(primitive("unstack_p"))

# ---- indexing with constant indices ----------------------------------------------------
deflinear(primitive("slice_p"))
deflinear(primitive("dynamic_slice_p"))
deflinear(primitive("dynamic_update_slice_p"))
deflinear(primitive("gather_p"))
deflinear(primitive("scatter_p"))
deflinear(primitive("scatter_add_p"))
deflinear(primitive("scatter_sub_p"))

# ---- reductions and windows -------------------------------------------------------------
deflinear(primitive("reduce_sum_p"))
deflinear(primitive("reduce_window_sum_p"))
deflinear(primitive("cumsum_p"))
