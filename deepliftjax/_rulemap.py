"""Rule sets per equation: ``deeplift(f, ref, rule={...})``.

Shrikumar, Greenside & Kundaje (2017) found RevealCancel on the dense layers with Rescale
on the convolutions the best of their variants on genomics models. Both rule sets are
exact, so any mixture sums to delta: each equation's rule splits its own output's change
exactly, whatever rule produced its operands.

A layer's rule set governs its nonlinearity too (RevealCancel acts at nonlinearities, on
the positive and negative parts a linear map keeps apart). So an equation that no key
names takes the rule set of the equations its varying operands came from (a bias add, an
activation, pooling, a reshape follow the layer before them), except a layer itself
(``dot_general``, ``conv_general_dilated``), which starts over from the default.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from deepliftjax._compat import Primitive, current_scope
from deepliftjax._errors import error

EXACT_METHODS = ("rescale", "reveal_cancel")
"""The DeepLIFT rule sets (exact: summation to delta); the others are modified gradients."""

DEFAULT_KEY = "*"
"""The mapping key for equations no other key names (default: ``"rescale"``)."""


@dataclasses.dataclass(frozen=True)
class RuleSite:
    """Where a rule set is picked: an equation's primitive and the named scopes it was
    traced under (``jax.named_scope``; Flax modules add their names: ``("CNN", "Dense_0")``).

    A function passed as ``rule=`` gets one and returns a rule-set name, or None to let
    the equation follow its operands (or the default).
    """

    primitive: Primitive
    scope: tuple[str, ...]

    @property
    def name(self) -> str:
        """The primitive's name as jaxprs print it (``"dot_general"``)."""
        return self.primitive.name

    @property
    def path(self) -> str:
        """The scope as a path: ``"CNN/Dense_0"``."""
        return "/".join(self.scope)


def _layer_names() -> frozenset[str]:
    from deepliftjax import _precision

    twins = {p.name for p in _precision.SPLIT_PRIMS.values()}
    return frozenset({"dot_general", "conv_general_dilated"} | twins)


def _primitive_names() -> frozenset[str]:
    from deepliftjax._registry import CALLS, RULES

    return frozenset(p.name for p in (*RULES, *CALLS))


@dataclasses.dataclass(frozen=True)
class RuleMap:
    """A checked ``rule=`` mapping or function (built by :func:`rule_map`)."""

    default: str
    primitives: tuple[tuple[str, str], ...] = ()
    """(primitive name, rule set), in the mapping's order."""
    scopes: tuple[tuple[tuple[str, ...], str], ...] = ()
    """(pattern components, rule set): ``"Block_*/Dense_0"`` → ``("Block_*", "Dense_0")``."""
    pick: Callable[[RuleSite], str | None] | None = None
    keys: tuple[Any, ...] = ()
    """The user's keys, for the message when one names nothing in ``f``."""

    def methods(self, known: tuple[str, ...]) -> frozenset[str]:
        """Every rule set this map can choose (all of ``known`` with a function)."""
        if self.pick is not None:
            return frozenset(known)
        return frozenset({self.default, *(m for _, m in self.primitives + self.scopes)})

    def choose(self, prim: Primitive, inherited: str | None, seen: RuleUse) -> str:
        """The rule set for an equation of ``prim`` under the current named scope;
        ``inherited`` is its operands' (None where they disagree or have none)."""
        scope = current_scope()
        seen.saw(prim.name, scope)
        if self.pick is not None:
            m = self.pick(RuleSite(prim, scope))
            if m is not None:
                return _checked(
                    m,
                    f"rule function {self.pick!r} returned {m!r} for "
                    f"{prim.name!r} under {'/'.join(scope) or 'no scope'}",
                )
        best = None
        for k, (pattern, m) in enumerate(self.scopes):
            end = _match_end(pattern, scope)
            if end is not None and (best is None or (end, len(pattern)) > best[0]):
                best = ((end, len(pattern)), k, m)
        if best is not None:
            seen.used(self.keys[len(self.primitives) + best[1]])
            return best[2]
        for k, (name, m) in enumerate(self.primitives):
            if prim.name == name:
                seen.used(self.keys[k])
                return m
        if inherited is not None and prim.name not in _layer_names():
            return inherited
        return self.default


def _match_end(pattern: tuple[str, ...], scope: tuple[str, ...]) -> int | None:
    """Where the deepest run of ``scope``'s components matching ``pattern`` ends."""
    n = len(pattern)
    for end in range(len(scope), n - 1, -1):
        if all(
            fnmatch.fnmatchcase(s, p) for s, p in zip(scope[end - n : end], pattern, strict=True)
        ):
            return end
    return None


class RuleUse:
    """Per call: which keys chose a rule, and which primitives and scopes were seen."""

    def __init__(self) -> None:
        self.keys: set[Any] = set()
        self.names: set[str] = set()
        self.paths: set[str] = set()

    def saw(self, name: str, scope: tuple[str, ...]) -> None:
        self.names.add(name)
        for k in range(1, len(scope) + 1):
            self.paths.add("/".join(scope[:k]))

    def used(self, key: Any) -> None:
        self.keys.add(key)

    def check(self, rules: RuleMap) -> None:
        """Raise for a key that chose no equation: a misspelt layer would otherwise leave
        the default in place without a word."""
        if rules.pick is not None:
            return
        unused = [k for k in rules.keys if k not in self.keys]
        if unused:
            raise error(
                f"rule= keys {unused!r} name no equation of f that depends on the "
                "attributed input.",
                "a key is a primitive's name as the jaxpr prints it, or a jax.named_scope "
                "(Flax module) path, '*' wildcards allowed. Here f has the primitives "
                f"{sorted(self.names)} and the scopes {sorted(self.paths) or 'none'}.",
            )


def _checked(method: Any, where: str) -> str:
    if method not in EXACT_METHODS:
        raise error(
            f"{where}: {method!r} is not a DeepLIFT rule set.",
            f"use one of {EXACT_METHODS} (mixtures of them are exact).",
        )
    return method


def rule_map(rule: Mapping[Any, str] | Callable[[RuleSite], str | None]) -> RuleMap:
    """Check a ``rule=`` mapping or function (see :func:`deepliftjax.deeplift`).

    Raises:
      DeepLiftError: for a value that is not a DeepLIFT rule set or a key that is neither
        a primitive nor a string.
    """
    if callable(rule) and not isinstance(rule, Mapping):
        return RuleMap(default="rescale", pick=rule)
    if not isinstance(rule, Mapping):
        raise error(
            f"rule={rule!r} is neither a rule-set name, a mapping nor a function.",
            "pass 'rescale', 'reveal_cancel', a mapping such as {'dot_general': "
            "'reveal_cancel', 'conv_general_dilated': 'rescale'}, or a function of a "
            "deepliftjax.RuleSite returning a rule-set name.",
        )
    default, prims, scopes, keys = "rescale", [], [], []
    known = _primitive_names()
    for key, method in rule.items():
        where = f"rule[{key!r}]"
        _checked(method, where)
        if key == DEFAULT_KEY:
            default = method
        elif isinstance(key, Primitive):
            prims.append((key.name, method))
            keys.insert(len(prims) - 1, key)
            continue
        elif not isinstance(key, str) or not key.strip("/"):
            raise error(
                f"{where}: a key must be a primitive, its name, or a named-scope path; got "
                f"{key!r}.",
                "e.g. {'dot_general': 'reveal_cancel'} or {'Dense_*': 'reveal_cancel'}.",
            )
        elif key in known:
            prims.append((key, method))
            keys.insert(len(prims) - 1, key)
            continue
        else:
            scopes.append((tuple(key.strip("/").split("/")), method))
            keys.append(key)
    return RuleMap(default, tuple(prims), tuple(scopes), keys=tuple(keys))
