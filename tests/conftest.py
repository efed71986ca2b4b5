import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

FAST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
    """The default suite compiles a few thousand small programs, and XLA's backend
    optimisation passes take most of that time (about 30% of the suite's CPU). They change
    no DeepLIFT rule (rules act on the jaxpr), so the default suite skips them. The slow
    suite (``-m slow``) and ``DEEPLIFTJAX_TEST_XLA_OPT=1`` compile with the settings users
    get. Set before any test module runs a computation (XLA reads the flags when the CPU
    backend starts); subprocesses started by tests inherit them."""
    fast = (config.option.markexpr or "") == "not slow"
    if fast and os.environ.get("DEEPLIFTJAX_TEST_XLA_OPT") != "1":
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_XLA_FLAGS}".strip()
