"""deepliftjax on an accelerator: each matmul precision against the gradient x input floor.

One prepared run, from the repository root::

    python benchmarks/bench_accel.py --out benchmarks/RESULTS_accel.md         # GPU / TPU
    python benchmarks/bench_accel.py --smoke --out /tmp/RESULTS_accel.md       # CPU check

Parts (``--parts``, default ``tests,speed,shap``; ``--smoke`` drops ``tests``):

1. ``tests``: ``pytest tests/test_precision.py`` on this backend (pass/fail line recorded).
2. ``speed``: genomics CNN (batch 512, 4,096) and VGG16 (16, 128) of ``_models.py``.
   ``jit(vmap(deeplift(f, ref, precision=p)))`` for p in ``highest``, ``split_tf32``,
   ``split_bf16`` and ``None`` (plus ``split_tf32`` with the portable split for every
   product where this backend takes algorithm presets for dot_general), against the jitted
   gradient x input of the same model at JAX's default precision (TF32 on GPUs: the
   floor) and at ``highest``, and the gradient x input with split products (the cost of
   the split alone). Calls interleave repeat by repeat after compile and warm-up; each
   cell is the median. Residual: the largest per-example |sum(C) - Δf| / |Δf| of the
   batch, Δf at highest precision.
3. ``shap``: DeepLIFT-SHAP with 20 dinucleotide shuffles (``attribute``) at each precision.
4. ``--profile-dir DIR``: a ``jax.profiler`` trace of the slowest split call of the
   genomics CNN at its largest batch, as ``DIR/profile_<mode>.tgz``.

Rows are written to ``--out`` as they come, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _models import make_pair  # noqa: E402

import deepliftjax  # noqa: E402
from deepliftjax import _compat, _precision  # noqa: E402

MODES: list[str | None] = ["highest", "split_tf32", "split_bf16", None]
BATCHES = {"genomics": [4096, 512], "vgg16": [128, 16]}  # the target first
SMOKE_BATCHES = {"genomics": [64], "vgg16": [2]}


def _rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:.2g}"


def _label(mode: str | None) -> str:
    return "None" if mode is None else mode


class Report:
    """Markdown lines, rewritten to ``path`` after every addition."""

    def __init__(self, path: Path | None):
        self.path, self.lines = path, []

    def add(self, *lines: str) -> None:
        self.lines += lines
        for line in lines:
            print(line, flush=True)
        if self.path is not None:
            self.path.write_text("\n".join(self.lines) + "\n")


def _presets_used() -> bool:
    return any(_compat.dot_algorithm_supported(m.preset) for m in _precision.SPLIT_MODES.values())


def _calls(f: Callable, ref: jax.Array) -> dict[str, Callable]:
    """Every timed call: deepliftjax at each precision, then the floors."""

    def dl(mode: str | None) -> Callable:
        return jax.jit(jax.vmap(deepliftjax.deeplift(f, ref, precision=mode)))

    def gxi(prec: str) -> Callable:
        def g(xs):
            with jax.default_matmul_precision(prec):
                return jax.vmap(jax.grad(f))(xs) * xs

        return jax.jit(g)

    def gxi_split(mode: str) -> Callable:
        fs = _precision.split_products(f, mode)
        return jax.jit(lambda xs: jax.vmap(jax.grad(fs))(xs) * xs)

    calls = {f"deepliftjax {_label(m)}": dl(m) for m in MODES}
    if _presets_used():
        with _precision.portable():
            calls["deepliftjax split_tf32, portable dots"] = dl("split_tf32")  # traced in _compile
    calls["floor: grad x input, JAX default (TF32)"] = gxi("default")
    calls["floor: grad x input, highest"] = gxi("highest")
    for m in ("split_tf32", "split_bf16"):
        calls[f"grad x input, {m}"] = gxi_split(m)
    return calls


def _compile(calls: dict[str, Callable], x: jax.Array) -> tuple[dict[str, float], dict]:
    """Compile and warm up each call: seconds to the first result, and the calls that failed
    (removed from ``calls``, so that one refusal does not stop the run)."""
    secs, failed = {}, {}
    for name, c in list(calls.items()):
        t0 = time.perf_counter()
        try:
            if "portable" in name:
                with _precision.portable():  # the split is chosen at trace time
                    c(x).block_until_ready()
            else:
                c(x).block_until_ready()
            secs[name] = time.perf_counter() - t0
            c(x).block_until_ready()
        except Exception as err:  # noqa: BLE001 - reported in the table
            failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
            del calls[name]
    return secs, failed


def _time(calls: dict[str, Callable], x: jax.Array, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {m: [] for m in calls}
    for _ in range(repeats):
        for m, c in calls.items():
            t0 = time.perf_counter()
            c(x).block_until_ready()
            times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def speed(report: Report, batches: dict[str, list[int]], repeats: int) -> None:
    report.add(
        "### Speed and summation residuals against the gradient x input floor",
        "",
        "Each row: median seconds per call over interleaved repeats, throughput, time against "
        "the TF32 floor (jitted gradient x input at JAX's default precision) and against the "
        "floor at `highest`, and the largest per-example |sum(C) - Δf| / |Δf| "
        "(Δf at highest precision). `grad x input, split_*` is the floor with its products "
        "split: the cost of the split passes alone.",
        "",
        "| model | batch | call | ex/s | × TF32 floor | × highest floor | residual | compile s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    )
    for name, bs in batches.items():
        pair = make_pair(name)
        f = pair.scalar_fn()
        ref = jnp.asarray(np.moveaxis(pair.reference(), 0, -1))
        for b in bs:
            x = jnp.asarray(np.moveaxis(pair.data(b), 1, -1))
            calls = _calls(f, ref)
            comp, failed = _compile(calls, x)
            for m, why in failed.items():
                report.add(f"| {name} | {b} | {m} | failed: {why} | | | | |")
            med = _time(calls, x, repeats)
            t_tf32 = med["floor: grad x input, JAX default (TF32)"]
            t_high = med["floor: grad x input, highest"]
            for m, c in calls.items():
                res = "—"
                if m.startswith("deepliftjax"):
                    scores = c(x)
                    with jax.default_matmul_precision("highest"):
                        r = deepliftjax.summation_residual(f, ref, x, scores, batched=True)
                    res = f"{float(np.max(r)):.1e}"
                report.add(
                    f"| {name} | {b} | {m} | {_rate(b / med[m])} | {med[m] / t_tf32:.2f} | "
                    f"{med[m] / t_high:.2f} | {res} | {comp[m]:.1f} |"
                )
    report.add("")


def _shap_job(fn: Callable, n: int, chunk: int, shuffles: int, precision: str | None) -> dict:
    from deepliftjax._runner import attribute
    from deepliftjax._shuffle import dinuc_shuffle

    rng = np.random.default_rng(0)

    def batches():
        for lo in range(0, n, chunk):
            yield np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (min(chunk, n - lo), 200))]

    stamps: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        res = attribute(
            fn,
            batches(),
            functools.partial(dinuc_shuffle, num_shuffles=shuffles),
            key=jax.random.key(1),
            chunk_size=chunk,
            reference_chunk_size=shuffles,
            out_dir=out_dir,
            progress=False,
            callback=lambda c, r: stamps.append(time.perf_counter()),
            precision=precision,
        )
        resid = float(np.max(res.residuals))
    steady = (n - chunk) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"steady": steady, "e2e": n / (time.perf_counter() - t0), "resid": resid}


def shap(report: Report, n: int, chunk: int, shuffles: int) -> None:
    fn = make_pair("genomics").scalar_fn()
    report.add(
        f"### DeepLIFT-SHAP, {shuffles} dinucleotide shuffles per sequence (genomics CNN, "
        f"{n:,} sequences, chunks of {chunk:,})",
        "",
        "| precision | steady seq/s | end-to-end seq/s | max residual |",
        "|---|---:|---:|---:|",
    )
    for mode in MODES:
        try:
            r = _shap_job(fn, n, chunk, shuffles, mode)
        except Exception as err:  # noqa: BLE001 - reported in the table
            report.add(f"| {_label(mode)} | failed: {type(err).__name__}: {err!s:.150} | | |")
            continue
        report.add(
            f"| {_label(mode)} | {_rate(r['steady'])} | {_rate(r['e2e'])} | {r['resid']:.1e} |"
        )
    report.add("")


def tests(report: Report, timeout: int, workers: int) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    if workers > 1:
        cmd += ["-n", str(workers)]  # pytest-xdist
    cmd.append("tests/test_precision.py")
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text = out.stdout + out.stderr
    except subprocess.TimeoutExpired as err:
        text = f"TIMEOUT after {timeout} s\n{err.stdout or ''}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    report.add(
        "### tests/test_precision.py on this backend",
        "",
        f"`{' '.join(cmd[1:])}` ({time.perf_counter() - t0:.0f} s): "
        f"{lines[-1] if lines else 'no output'}",
        *[f"- {ln}" for ln in failed[:20]],
        "",
    )


def profile(report: Report, out_dir: Path, batch: int, repeats: int) -> None:
    """A profiler trace of each split mode's deepliftjax call on the genomics CNN."""
    pair = make_pair("genomics")
    f = pair.scalar_fn()
    ref = jnp.asarray(np.moveaxis(pair.reference(), 0, -1))
    x = jnp.asarray(np.moveaxis(pair.data(batch), 1, -1))
    for mode in ("split_tf32", "split_bf16"):
        call = jax.jit(jax.vmap(deepliftjax.deeplift(f, ref, precision=mode)))
        call(x).block_until_ready()
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp):
                for _ in range(repeats):
                    call(x).block_until_ready()
            tgz = out_dir / f"profile_{mode}.tgz"
            with tarfile.open(tgz, "w:gz") as tar:
                tar.add(tmp, arcname=f"profile_{mode}")
        report.add(f"Profile of `{mode}` (genomics, batch {batch}): `{tgz.name}`.")
    report.add("")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=None, help="comma list of tests,speed,shap")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--shap-n", type=int, default=32768)
    p.add_argument("--shap-chunk", type=int, default=2048)
    p.add_argument("--shuffles", type=int, default=20)
    p.add_argument("--tests-timeout", type=int, default=240)
    p.add_argument("--tests-workers", type=int, default=1)
    p.add_argument("--batches", default=None, help="e.g. genomics=512,4096;vgg16=2")
    p.add_argument("--profile-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--title", default=None, help="heading of the report")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CPU")
    args = p.parse_args(argv)
    parts = (args.parts or ("speed,shap" if args.smoke else "tests,speed,shap")).split(",")
    batches = SMOKE_BATCHES if args.smoke else BATCHES
    if args.batches:
        batches = {
            k: [int(b) for b in v.split(",")]
            for k, v in (item.split("=") for item in args.batches.split(";"))
        }
    if args.smoke:
        args.repeats, args.shap_n, args.shap_chunk = min(args.repeats, 3), 64, 32
    dev = jax.devices()[0]
    report = Report(args.out)
    report.add(
        f"## {args.title or 'Matmul precision on ' + getattr(dev, 'device_kind', dev.platform)}",
        "",
        f"Device: {getattr(dev, 'device_kind', dev.platform)} ({dev.platform}); "
        f"jax {jax.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Median of {args.repeats} interleaved repeats after warm-up. dot_general algorithm "
        f"presets used: {_presets_used()} (else every product takes the portable split).",
        "",
    )
    t0 = time.perf_counter()
    if "tests" in parts:
        tests(report, args.tests_timeout, args.tests_workers)
    if "speed" in parts:
        speed(report, batches, args.repeats)
    if "shap" in parts:
        shap(report, args.shap_n, args.shap_chunk, args.shuffles)
    if args.profile_dir is not None:
        try:
            profile(report, args.profile_dir, max(batches["genomics"]), 3)
        except Exception as err:  # noqa: BLE001 - the measurements above are kept
            report.add(f"Profile failed: {type(err).__name__}: {err!s:.200}", "")
    report.add(f"Total {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
