"""The one loop that evaluates a jaxpr equation by equation.

Used by the interpreter (``_interpreter.eval_jaxpr``: pairs of input and reference) and by
the split-precision products (``_precision``: products rebound as float32-accurate sums).
Like JAX's own evaluator it skips equations whose results nothing reads (unless they have
effects, such as the summation guard's report) and drops each value after its last use, so
a long model holds only the values still needed while it is traced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deepliftjax._compat import DropVar, Literal

Step = Callable[[Any, list[Any]], Sequence[Any]]
"""``step(eqn, invals) -> outs``: one equation's results (a sequence, one per outvar)."""


def live_equations(jaxpr: Any) -> list[bool]:
    """Per equation: whether a result is read downstream (or by the outputs), or it has
    effects. Computed backwards, so a chain feeding only dead equations is dead too."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    live = [False] * len(jaxpr.eqns)
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if getattr(eqn, "effects", None) or any(v in needed for v in eqn.outvars):
            live[i] = True
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    return live


def walk(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], step: Step) -> list[Any]:
    """Evaluate ``jaxpr`` on ``consts`` and ``args``, each live equation by ``step``."""
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts, strict=True):
        env[v] = val
    for v, val in zip(jaxpr.invars, args, strict=True):
        env[v] = val
    live = live_equations(jaxpr)
    keep = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    last: dict[Any, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        if live[i]:
            for v in eqn.invars:
                if not isinstance(v, Literal):
                    last[v] = i
    for i, eqn in enumerate(jaxpr.eqns):
        if not live[i]:
            continue
        outs = step(eqn, [read(v) for v in eqn.invars])
        for v, val in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, DropVar):
                env[v] = val
        for v in eqn.invars:
            if not isinstance(v, Literal) and last.get(v) == i and v not in keep:
                env.pop(v, None)
    return [read(v) for v in jaxpr.outvars]
