"""Progress bars that never warn: the notebook bar where ipywidgets is installed, else plain
(the batch runner and the genomics experiment).

``tqdm.auto`` inside a Jupyter kernel without ipywidgets warns ``TqdmWarning: IProgress not
found`` and falls back to the text bar; choosing the text bar ourselves gives the same bar
without the warning.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _in_kernel() -> bool:
    return "ipykernel.zmqshell" in sys.modules


def pick_tqdm() -> Any:
    """The tqdm class to use: ``tqdm.auto.tqdm`` in a kernel with ipywidgets, else ``tqdm.std``."""
    if _in_kernel() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm as auto

        return auto
    from tqdm.std import tqdm as std

    return std


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """A progress bar (see :func:`pick_tqdm`); arguments as for ``tqdm.tqdm``."""
    return pick_tqdm()(*args, **kwargs)
