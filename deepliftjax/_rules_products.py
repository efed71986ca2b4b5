"""Alternative rules for products of two varying operands (``product_rule=``).

The default, ``"midpoint"``, is the paper's rule (§2.3.5) and lives with the other
elementwise rules. The rules here are selected with ``deeplift(..., product_rule=...)``.
"""

from __future__ import annotations

from typing import Any

PRODUCT_RULES = ("midpoint",)


def product_rule(prim: Any, ctx: Any, a: Any, b: Any, **params: Any) -> Any:
    raise NotImplementedError(ctx.options.product_rule)  # filled in by issue 15, class 8
