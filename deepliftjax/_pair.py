"""The value the interpreter carries for everything that depends on the attributed input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from deepliftjax._registry import DOMAIN_EDGE, ELEMENTWISE, EXACT, MOVES_ALL, MOVES_FIRST  # noqa: F401


class Pair:
    """A value that depends on the attributed input: ``x`` (actual) and ``r`` (reference).

    A boolean or integer pair also carries ``s``, its *switch score*: a float :class:`Pair`
    of the same shape whose difference ``s.x - s.r`` is finite and non-zero wherever the two
    sides differ (``a - b`` for ``a > b``). Where input and reference take different cases
    of a ``select``/``cond``, or an integer operand moves, the jump is credited through
    ``s``; every discrete pair gets one (see :mod:`deepliftjax._discrete`).
    """

    __slots__ = ("x", "r", "s", "exact", "rule")

    def __init__(self, x: Any, r: Any, s: Pair | None = None, exact: bool = False):
        self.x = x
        self.r = r
        self.s = s
        self.exact = exact
        """True for the attributed inputs and what structural maps make of them: values
        no arithmetic has rounded, so differences of them carry no upstream rounding."""
        self.rule: str | None = None
        """With rule sets per equation (``_rulemap``): the one that computed this value."""

    @property
    def dtype(self):
        return jnp.result_type(self.x)

    @property
    def is_float(self) -> bool:
        return jnp.issubdtype(self.dtype, jnp.inexact)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Pair(x={self.x!r}, r={self.r!r})"


class Accounts:
    """Per call: the *accounted difference* of each computed float pair, ``Σ_i m_i Δx_i``
    with ``m`` its DeepLIFT multipliers (what the scores upstream of it actually credit),
    carried forward beside ``x - r``.

    The two differ by the rounding of every value upstream: ``-1 + 1e-6 + 1`` rounds to
    1.0013e-6 in float32, while its multipliers account for exactly the 1e-6 its inputs
    moved. A jump divided by the float change of such a margin would be off by that ratio,
    so switch scores use the accounted difference. Kept only for the results of
    ``equations``, those upstream of a jump that could amplify it (found by the
    interpreter). Pairs are keyed by identity: a pair the table does not know (one rebuilt
    by a scan or a checkpoint) has none. NaN marks elements whose accounted difference is
    not known (a Rescale step too small for its secant); it spreads to what they feed.
    """

    __slots__ = ("equations", "on", "table", "paused")

    def __init__(self, equations: frozenset[int] = frozenset()):
        self.equations = equations
        """Ids of the equations whose results are recorded (``_discrete.accounted_equations``)."""
        self.on = bool(equations)
        self.table: dict[int, tuple[Pair, Any]] = {}
        self.paused = 0

    def get(self, v: Pair) -> Any:
        entry = self.table.get(id(v))
        return entry[1] if entry is not None and entry[0] is v else None

    def put(self, v: Pair, d: Any) -> None:
        # Held for the DeepLIFT pullback (no multiplier through it), but an outer
        # derivative w.r.t. the reference (or weights) sees that of -v.r, as d ≈ x - r does;
        # v.r does not depend on the input, so the pullback's multipliers are unchanged.
        r = jnp.asarray(v.r, jnp.result_type(d))
        held = lax.stop_gradient(d) - (r - lax.stop_gradient(r))
        self.table[id(v)] = (v, held)  # the pair is held: ids stay unique


def carried(v: Any, accounts: Accounts | None) -> Any:
    """``v``'s accounted difference as carried forward (NaN where not known), or None.

    Exact pairs (inputs and structural maps of them) account for ``x - r`` itself, rounded
    as the scores round ``Δx``; constants for 0; a pair in ``accounts`` for its entry; any
    other pair is not known (None).
    """
    if not isinstance(v, Pair):
        return jnp.zeros((), jnp.result_type(v))
    d = accounts.get(v) if accounts is not None else None
    if d is not None:
        return d
    return lax.stop_gradient(v.x) - v.r if v.exact else None


def accounted(v: Any, accounts: Accounts | None) -> tuple[Any, Any]:
    """``(D, known)``: ``v``'s accounted difference where known (``known`` True, or a mask),
    else its float difference ``x - r``, whose rounding upstream is unknown."""
    d = carried(v, accounts)
    if d is None:
        return lax.stop_gradient(v.x) - v.r, False
    if not isinstance(v, Pair) or v.exact:
        return d, True
    unknown = jnp.isnan(d)
    return jnp.where(unknown, lax.stop_gradient(v.x) - v.r, d), ~unknown


def is_pair(v: Any) -> bool:
    return isinstance(v, Pair)


def xs(vals: Sequence[Any]) -> list[Any]:
    return [v.x if isinstance(v, Pair) else v for v in vals]


def rs(vals: Sequence[Any]) -> list[Any]:
    return [v.r if isinstance(v, Pair) else v for v in vals]


def bind_both(prim, vals: Sequence[Any], params: dict[str, Any]) -> Any:
    """Bind ``prim`` on both sides: the actual side keeps ordinary autodiff.

    A reference side known at trace time (a closed-over reference and weights) is computed
    now, once, instead of being staged out for XLA to constant-fold, which interprets it
    slowly at compile time. Only the values are: the rules' own arrays (``ones_like``
    masks and multipliers) stay staged, where XLA fuses them, rather than becoming
    activation-sized constants of the program.
    """
    ox = prim.bind(*xs(vals), **params)
    with jax.ensure_compile_time_eval():
        orf = prim.bind(*rs(vals), **params)
    exact = prim in EXACT and all(v.exact for v in vals if isinstance(v, Pair))
    if prim.multiple_results:
        return [Pair(a, b, exact=exact) for a, b in zip(ox, orf, strict=True)]
    return Pair(ox, orf, exact=exact)
