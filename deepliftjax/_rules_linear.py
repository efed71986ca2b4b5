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
from deepliftjax._discrete import convert_score
from deepliftjax._interpreter import Context, register_rule
from deepliftjax._pair import Pair
from deepliftjax._rulekit import linear_rule, rescale_rule


def deflinear(prim: Any, **traits: Any) -> None:
    """Register the linear rule for ``prim``, with its traits (see ``register_rule``)."""
    register_rule(prim, partial(linear_rule, prim), **traits)


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
deflinear(primitive("neg_p"), elementwise=True, exact=True)
deflinear(primitive("add_p"), elementwise=True, unit_linear=True)
deflinear(primitive("sub_p"), elementwise=True)
deflinear(primitive("add_jaxvals_p"), elementwise=True, unit_linear=True)

# ---- type and copies --------------------------------------------------------------------
register_rule(convert_element_type_p, _convert_rule, elementwise=True, score=convert_score)
deflinear(primitive("copy_p"), elementwise=True, moves="first")
deflinear(primitive("device_put_p"), moves="first")
deflinear(primitive("sharding_constraint_p"), moves="first")
deflinear(primitive("optimization_barrier_p"), moves="all")

# ---- shape ------------------------------------------------------------------------------
deflinear(primitive("reshape_p"), moves="first")
deflinear(primitive("squeeze_p"), moves="first")
deflinear(primitive("expand_dims_p"), moves="first")
deflinear(primitive("broadcast_in_dim_p"), moves="first")
deflinear(primitive("transpose_p"), moves="first")
deflinear(primitive("rev_p"), moves="first")
deflinear(primitive("concatenate_p"), moves="all")
deflinear(primitive("pad_p"), moves="all")
deflinear(primitive("split_p"), moves="first")
deflinear(primitive("tile_p"), moves="first")
deflinear(primitive("stack_p"), unit_linear=True)
deflinear(primitive("unstack_p"), unit_linear=True)

# ---- indexing with constant indices ----------------------------------------------------
deflinear(primitive("slice_p"), moves="first")
deflinear(primitive("dynamic_slice_p"), moves="first")
deflinear(primitive("dynamic_update_slice_p"), unit_linear=True)
deflinear(primitive("gather_p"), moves="first")
deflinear(primitive("scatter_p"), unit_linear=True)
deflinear(primitive("scatter_add_p"), unit_linear=True)
deflinear(primitive("scatter_sub_p"))

# ---- reductions and windows -------------------------------------------------------------
deflinear(primitive("reduce_sum_p"), unit_linear=True)
deflinear(primitive("reduce_window_sum_p"), unit_linear=True)
deflinear(primitive("cumsum_p"), unit_linear=True)
