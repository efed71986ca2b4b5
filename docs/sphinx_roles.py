"""A griffe extension for the docs build: the package's docstrings, read as Markdown.

The docstrings are Google style with a few habits from Sphinx that mkdocstrings would
render badly or warn about; each docstring is rewritten before it is parsed:

- Sphinx roles (``:func:`deeplift```) become code spans, linked (mkdocs-autorefs) when the
  target is one of the objects ``docs/api.md`` renders;
- an ``Args:`` entry naming several parameters (``f, ref, x: as for ...``) becomes one entry
  per parameter, so each is checked against the signature;
- a doctest becomes a fenced ``pycon`` block (griffe reads ``Example:``, singular, as an
  admonition, where ``>>>`` would render as nested quotes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`")
_ARGS = re.compile(
    r"^(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$"
)
_ITEM = re.compile(r"^(\s+)(\**[\w]+(?:\s*,\s*\**\w+)+)\s*:(.*)$")
_API = Path(__file__).with_name("api.md")


def _documented() -> set[str]:
    """The names ``docs/api.md`` renders with ``::: deepliftjax.NAME``."""
    text = _API.read_text(encoding="utf-8")
    return set(re.findall(r"^::: deepliftjax\.(\w+)\s*$", text, flags=re.MULTILINE))


def split_params(text: str) -> str:
    """One ``Args:`` entry per parameter where an entry names several."""
    lines, out, i, in_args = text.split("\n"), [], 0, False
    while i < len(lines):
        line = lines[i]
        if not line.startswith((" ", "\t")) and line.strip():
            in_args = bool(_ARGS.match(line))
        m = _ITEM.match(line) if in_args else None
        if not m:
            out.append(line)
            i += 1
            continue
        indent, names, first = m.group(1), m.group(2), m.group(3)
        body = []
        i += 1
        while (
            i < len(lines)
            and lines[i].strip()
            and len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        for name in (n.strip() for n in names.split(",")):
            out += [f"{indent}{name}:{first}", *body]
    return "\n".join(out)


def fence_doctests(text: str) -> str:
    """Doctests (``>>>`` and their output, up to a blank line) as fenced ``pycon`` blocks."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._public = _documented()

    def _role(self, m: re.Match[str]) -> str:
        target = m.group(2).strip().removesuffix("()")
        name = target.removeprefix("deepliftjax.")
        shown = name.rsplit(".", 1)[-1] if m.group(1) else target
        if "." not in name and name in self._public:
            return f"[`{shown}`][deepliftjax.{name}]"
        return f"`{shown}`"

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(self._role, obj.docstring.value)
            obj.docstring.value = fence_doctests(split_params(text))
