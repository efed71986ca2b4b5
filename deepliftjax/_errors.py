"""Errors raised by deepliftjax."""

from __future__ import annotations

import re
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class DeepLiftError(ValueError):
    """Raised when a function or its inputs cannot be attributed exactly.

    The message names what was wrong and ends with a ``Hint:`` saying how to fix it.
    """


def error(what: str, hint: str, *, cls: type[DeepLiftError] = DeepLiftError) -> DeepLiftError:
    """The error every check raises: what was wrong, then ``Hint:`` and how to fix it.

    ``cls`` picks a subclass of :class:`DeepLiftError` (one that is also a ``TypeError``,
    say), so that callers can catch the kind of mistake as well as the package's error.
    """
    return cls(f"{what}\nHint: {hint}")


def eqn_str(eqn: Any, limit: int = 600) -> str:
    """The equation as JAX prints it, shortened for error messages."""
    try:
        text = str(eqn)
    except Exception:  # pragma: no cover - printing must never mask the real error
        text = f"{eqn.primitive.name} ..."
    text = _ANSI.sub("", text)  # JAX colours jaxprs on a terminal (and in notebooks)
    return text if len(text) <= limit else text[:limit] + " ..."


def at_user_line(eqn: Any) -> str:
    """``"\n  at file:line (function)"``: where the user's code made ``eqn`` (or "")."""
    from deepliftjax._compat import user_location

    where = user_location(eqn)
    return f"\n  at {where}" if where else ""


def unsupported_primitive(eqn: Any) -> DeepLiftError:
    name = eqn.primitive.name
    return error(
        f"DeepLIFT rule for primitive '{name}' not implemented, and one of its inputs "
        f"depends on the attributed input:\n    {eqn_str(eqn)}{at_user_line(eqn)}",
        f"register a rule with deepliftjax.rules.register_rule(<the {name} primitive>, "
        "rule) (deepliftjax.rules.deflinear / defrescale cover the common cases), rewrite this "
        "step with supported operations, or pass fallback='gradient' to use the plain "
        "gradient here (not exact: summation to delta no longer holds).",
    )
