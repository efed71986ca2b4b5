"""The notebooks run top to bottom and draw their figures.

Each notebook's source of truth is its jupytext percent-format ``notebooks/<name>.py``; it
runs here as a script in a fresh interpreter (``DEEPLIFTJAX_QUICK=1``: small settings,
``DEEPLIFTJAX_FIGURES``: where the figures go). The paired ``.ipynb`` must be stored without
outputs and, where jupytext is installed, hold the same cells as the ``.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = {
    "quickstart": ["quickstart_fig1.png", "quickstart_flax.png"],
    "genomics": [
        "genomics_motifs.png",
        "genomics_logo.png",
        "genomics_bars.png",
        "genomics_zoom.png",
        "genomics_shap.png",
    ],
    "images": ["digits_fig2.png", "digits_signed.png"],
}
NEEDS = {"images": ["sklearn"]}
BUDGET_S = 240  # each notebook takes well under two minutes on 2 cores; headroom for load


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file(), f"{path.name} was not written"
    assert path.stat().st_size > 5_000, f"{path.name} is only {path.stat().st_size} bytes"
    px = mpimg.imread(path)
    assert px.ndim == 3 and min(px.shape[:2]) > 100, f"{path.name}: shape {px.shape}"
    assert px[..., :3].std() > 0.02, f"{path.name} is blank"


@pytest.mark.slow  # about 3 CPU-minutes together; the default suite stays under 10 minutes
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    for mod in NEEDS.get(name, []):
        pytest.importorskip(mod)
    out = tmp_path / "figures"
    env = {
        **os.environ,
        "DEEPLIFTJAX_QUICK": "1",
        "DEEPLIFTJAX_FIGURES": str(out),
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / f"{name}.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUDGET_S,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, (
        f"notebooks/{name}.py failed after {elapsed:.0f} s:\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-5000:]}"
    )
    for fig in FIGURES[name]:
        _check_png(out / fig)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_pair_is_stripped_and_in_sync(name: str) -> None:
    ipynb = NOTEBOOKS / f"{name}.ipynb"
    nb = json.loads(ipynb.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{ipynb.name} holds outputs: strip them (jupytext --to ipynb {name}.py)"
            )
    jupytext = pytest.importorskip("jupytext")
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    cells = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert cells(jupytext.reads(ipynb.read_text(encoding="utf-8"), fmt="ipynb")) == cells(py), (
        f"{ipynb.name} differs from {name}.py: run jupytext --sync notebooks/{name}.py"
    )
