"""The notebooks run top to bottom and draw their figures.

Each notebook's source of truth is its jupytext percent-format ``notebooks/<name>.py``; it
runs here as a script in a fresh interpreter (``DEEPLIFTJAX_QUICK=1``: small settings,
``DEEPLIFTJAX_FIGURES``: where the figures go). The paired ``.ipynb`` must be stored without
outputs and, where jupytext is installed, hold the same cells as the ``.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deepliftjax.genomics._attribute import MIXED

pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = {
    "quickstart": ["quickstart_fig1.png", "quickstart_flax.png"],
    "genomics": [
        "genomics_motifs.png",
        "genomics_logo.png",
        "genomics_zoom.png",
        "genomics_shap.png",
    ],
    "images": ["digits_fig2.png", "digits_compare.png", "digits_signed.png"],
}
NEEDS = {"images": ["sklearn"]}
BUDGET_S = 240  # each notebook takes well under two minutes on 2 cores; headroom for load


def _env(figures: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DEEPLIFTJAX_QUICK": "1",
        "DEEPLIFTJAX_FIGURES": str(figures),
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }


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
    env = _env(out)
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


def test_genomics_notebook_numbers_equal_the_command(tmp_path: Path) -> None:
    """The genomics notebook, run up to its motif-recovery table in the quick setting, prints
    the numbers of the command line it names (same data, split, training seed)."""
    jupytext = pytest.importorskip("jupytext")
    from deepliftjax.genomics import main

    code = []
    for cell in jupytext.read(NOTEBOOKS / "genomics.py").cells:
        if cell.cell_type != "code":
            continue
        code.append(cell.source)
        if "g.format_table(table)" in cell.source:
            break
    else:
        raise AssertionError("genomics.py has no cell printing g.format_table(table)")
    script = tmp_path / "head.py"
    script.write_text("\n\n".join(code), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(tmp_path / "figures"),
        capture_output=True,
        text=True,
        timeout=BUDGET_S,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    nb = proc.stdout
    cmd = re.search(r"the numbers below are those of: (deepliftjax-genomics .*)", nb)
    assert cmd, nb[-2000:]
    argv = shlex.split(cmd.group(1))[1:]
    out = tmp_path / "cmd"
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    heads = ("| DeepLIFT |", f"| {MIXED} |", "| gradient×input |")
    rows = [ln for ln in nb.splitlines() if ln.startswith(heads)]
    assert len(rows) == 6, nb[-2000:]
    keys = ("auprc_core", "auprc_motif", "top_window", "top_window_alone", "top_window_alone_any")
    for row in rows:
        method, motif, *vals = [v.strip() for v in row.strip("|").split("|")]
        ref = next(x for x in r["table"] if (x["method"], x["motif"]) == (method, motif))
        want = [ref[k] for k in keys]
        assert vals == [f"{v:.3f}" for v in want], (row, want)
    assert f"{r['n_scored']} correctly predicted positives" in nb or "all test positives" in str(
        r["findings"]
    )
    missed = dict(re.findall(r"missed (GATA|E-box \(CAGATG\)): DeepLIFT (\d+)", nb))
    key = {"GATA": "GATA_disc1", "E-box (CAGATG)": "TAL1_known1"}
    for label, n in missed.items():
        ref = next(x for x in r["table"] if (x["method"], x["motif"]) == ("DeepLIFT", key[label]))
        assert int(n) == ref["n_missed"]
    assert len(missed) == 2


_NO_WIDGETS_KERNEL = textwrap.dedent(
    """
    import sys, types, warnings
    sys.modules["ipywidgets"] = None  # a Jupyter kernel without ipywidgets
    sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {"config": {}})()
    sys.modules["IPython"] = ipython
    {pre}
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        {imports}
    print("WARNINGS:", [str(w.message) for w in caught if "IProgress" in str(w.message)])
    """
)


def _kernel_warnings(imports: str, pre: str = "") -> str:
    code = _NO_WIDGETS_KERNEL.replace("{imports}", imports).replace("{pre}", pre)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_genomics_progress_bars_do_not_warn_in_a_kernel_without_ipywidgets() -> None:
    # deepliftjax itself is imported first (console mode); then, in the fake kernel, a
    # genomics bar must not re-import tqdm.auto (which would warn)
    out = _kernel_warnings(
        pre="import deepliftjax",
        imports="for m in ('tqdm.auto', 'tqdm.autonotebook'): sys.modules.pop(m, None)\n"
        "    from deepliftjax import _progress; _progress.tqdm(total=1).close()\n"
        "    import tqdm.std; assert _progress.pick_tqdm() is tqdm.std.tqdm",
    )
    assert "WARNINGS: []" in out, out


def test_first_notebook_cell_does_not_warn_without_ipywidgets() -> None:
    """The notebooks' first cell imports deepliftjax and deepliftjax.genomics: no
    'TqdmWarning: IProgress not found' in a kernel without ipywidgets."""
    out = _kernel_warnings("import deepliftjax; from deepliftjax import genomics, plot")
    assert "WARNINGS: []" in out, out
