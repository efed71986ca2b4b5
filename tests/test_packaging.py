"""Packaging: what the sdist and the wheel carry, one version, a light import,
and a documentation site that builds with warnings as errors.

The sdist and the wheel are built once per module, with ``python -m build --no-isolation``
(sdist first, then the wheel from the sdist, so a file missing from the sdist is missing
from the wheel too) from a copy of the project's packaging files in a temporary folder: no
network, and nothing written into the checkout.
"""

from __future__ import annotations

import ast
import email.parser
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import deepliftjax
from deepliftjax import _version

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: the metadata, the files it names and the package
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"]


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "deepliftjax",
        src / "deepliftjax",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def _sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as t:
        # drop the top folder, deepliftjax-X.Y.Z/
        return {n.split("/", 1)[1] for n in t.getnames() if "/" in n}


def _metadata(dists) -> email.message.Message:
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_wheel_carries_license_and_py_typed(dists):
    names = _wheel_names(dists[0])
    assert "deepliftjax/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert "deepliftjax/_version.py" in names
    assert "deepliftjax/genomics/data/motifs_sec3.2.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


def test_sdist_carries_license_py_typed_and_changelog(dists):
    # CHANGELOG.md is in the sdist only: a wheel installs packages and metadata, and has no
    # place for a project's top-level documents other than its licence files.
    names = _sdist_names(dists[1])
    for name in ["LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "deepliftjax/py.typed"]:
        assert name in names, (name, sorted(names))


def test_license_is_the_apache_text_the_metadata_names(dists):
    meta = _metadata(dists)
    assert meta["License-Expression"] == "Apache-2.0"
    with zipfile.ZipFile(dists[0]) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        text = z.read(name).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_built_version_is_the_package_version(dists):
    meta = _metadata(dists)
    assert meta["Version"] == deepliftjax.__version__ == _version.__version__
    assert dists[0].name.startswith(f"deepliftjax-{deepliftjax.__version__}-")
    assert dists[1].name == f"deepliftjax-{deepliftjax.__version__}.tar.gz"


def test_dependencies(dists):
    requires = _metadata(dists).get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    names = [r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip() for r in plain]
    assert "optax" not in names and "matplotlib" not in names, plain
    for pkg in ("jax", "jaxlib"):
        (req,) = [r for r in plain if r.split("<")[0].split(">")[0].strip() == pkg]
        assert "<0.12" in req, req  # the shims read jaxpr internals
    genomics = [r.split(";")[0] for r in requires if 'extra == "genomics"' in r]
    assert any(r.startswith("optax") for r in genomics), genomics
    assert any(r.startswith("matplotlib") for r in genomics), genomics
    torch = [r.split(";")[0] for r in requires if r.startswith("torch")]
    assert torch and all("==" not in r for r in torch), torch


def test_version_is_written_once():
    """`deepliftjax/__init__.py` takes `__version__` from `_version.py` (one source)."""
    tree = ast.parse((ROOT / "deepliftjax" / "__init__.py").read_text(encoding="utf-8"))
    assigned = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "__version__" for t in n.targets)
    ]
    assert not assigned, "deepliftjax/__init__.py assigns __version__; import it from _version"
    imports = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        and n.module in ("deepliftjax._version", "_version")
        and any(a.name == "__version__" for a in n.names)
    ]
    assert imports


def _run(code: str, tmp_path: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
    )


def test_import_is_light(tmp_path):
    """`import deepliftjax` loads neither optax, matplotlib, nor the genomics or plot modules."""
    proc = _run(
        """
        import sys
        import deepliftjax
        heavy = sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("optax", "matplotlib")
            or m == "deepliftjax.plot" or m.startswith("deepliftjax.genomics")
        )
        print("HEAVY:" + ",".join(heavy))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY:")]
    assert line == "HEAVY:", line


# A finder first on sys.meta_path that makes optax look not installed, both to `import optax`
# and to importlib.util.find_spec.
_NO_OPTAX = """
import sys

class NoOptax:
    def find_spec(self, name, path=None, target=None):
        if name == "optax" or name.startswith("optax."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOptax())
"""


def test_genomics_command_names_its_extra_before_training(tmp_path):
    """Without optax, `deepliftjax-genomics` names the extra to install and trains nothing."""
    out = tmp_path / "out"
    proc = _run(
        _NO_OPTAX
        + f"""
from deepliftjax.genomics._experiment import main
raise SystemExit(main(["--tiny", "--no-progress", "--out", {str(out)!r}]))
""",
        tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-4000:]
    assert "deepliftjax[genomics]" in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert not out.exists(), "the command started the experiment before naming the extra"


def test_import_without_optax(tmp_path):
    """optax is an extra: the core API imports and runs without it."""
    proc = _run(
        _NO_OPTAX
        + """
import jax.numpy as jnp
import deepliftjax
c = deepliftjax.deeplift(lambda x: jnp.tanh(x).sum(), 0.0)(jnp.array([1.0, -2.0]))
print("OK", float(c.sum()))
""",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "OK" in proc.stdout


def test_docs_build_strict(tmp_path):
    """The site (mkdocs.yml: pages under docs/, the API reference from the docstrings) builds
    with ``mkdocs build --strict``: a docstring griffe cannot read, a reference to a name
    that is gone or a broken link fails it. ``.ci/run`` builds it too."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the two lists against the docs: every user name on the API page, every extension name
    # on the Extending page (mkdocstrings leaves out members without a docstring)
    site = tmp_path / "site"
    # every page rendered its snippets (a mangled marker passes --strict but shows literally)
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"--8\s*(<|&lt;)\s*--", html), f"unrendered snippet in {page}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    extending = (site / "extending" / "index.html").read_text(encoding="utf-8")
    user = sorted(set(deepliftjax.__all__) - {"__version__"})
    assert [n for n in user if f'id="deepliftjax.{n}"' not in api] == []
    rules = importlib.import_module("deepliftjax.rules")
    assert [n for n in rules.__all__ if f'id="deepliftjax.rules.{n}"' not in extending] == []


def test_api_page_lists_the_user_api():
    """``docs/api.md`` renders exactly ``deepliftjax.__all__`` (one ``::: deepliftjax.NAME``
    line each), so a name added to or dropped from the namespace is added to or dropped
    from the reference."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^::: deepliftjax\.(\w+)\s*$", text, flags=re.MULTILINE)
    assert len(documented) == len(set(documented)), documented
    assert set(documented) - {"plot"} == set(deepliftjax.__all__) - {"__version__"}
