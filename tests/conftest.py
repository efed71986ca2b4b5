import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import deepliftjax  # noqa: E402

# the library's own rules, before any test module registers one of its own
_BUILTIN_RULES = frozenset(deepliftjax.rules.RULES)


@pytest.fixture(scope="session")
def builtin_rules() -> frozenset:
    """The primitives deepliftjax itself registers rules for."""
    return _BUILTIN_RULES


# The default suite's time budget (10 minutes on 2 cores): tests listed in
# tests/extended_tests.txt (each with its measured seconds) are marked "extended": CI runs
# them (`python -m pytest -m extended`), the default command does not.
_EXTENDED = pathlib.Path(__file__).with_name("extended_tests.txt")


def _extended_ids() -> set[str]:
    ids = set()
    for line in _EXTENDED.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            ids.add(line.split(maxsplit=1)[1].strip())
    return ids


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    extended = _extended_ids()
    for item in items:
        if item.nodeid in extended:
            item.add_marker(pytest.mark.extended)
    if config.option.keyword or config.args != config.getini("testpaths"):
        return  # a partial collection
    # a renamed or removed test must not linger in the list
    missing = sorted(extended - {i.nodeid for i in items})
    if missing:
        raise pytest.UsageError(
            f"tests/extended_tests.txt lists tests that do not exist: {missing[:5]}; "
            "remove or rename them there"
        )
