"""deepliftjax on an accelerator: throughput against the gradient floor, and matmul precision.

Run from the repository root on a machine with a GPU (or TPU)::

    python benchmarks/bench_accel.py --out benchmarks/RESULTS_accel.md

Two parts, each on ``jax.devices()[0]``:

1. Speed and exactness. ``jit(vmap(deeplift(f, ref)))`` against the jitted gradient x
   input of the same Flax model (the floor), on the genomics CNN and the VGG16-style CNN of
   ``bench_speed.py``. GPUs may run float32 matrix products and convolutions in TF32
   (10-bit mantissa) under JAX's default precision, which breaks summation to delta at
   about 1e-3; deepliftjax binds them at ``HIGHEST`` by default. Both settings are timed,
   each against the floor at the same precision, and each one's largest summation residual
   is given. Methods interleave repeat by repeat; compilation and warm-up are excluded;
   each cell is the median.
2. DeepLIFT-SHAP with 20 dinucleotide shuffles (``attribute``), sequences per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _models import make_pair  # noqa: E402

import deepliftjax  # noqa: E402

BATCHES = {"genomics": [512, 4096], "vgg16": [16, 128]}


def _fns(pair, batch: int):
    x = jnp.asarray(np.moveaxis(pair.data(batch), 1, -1))
    ref = jnp.asarray(np.moveaxis(pair.reference(), 0, -1))
    f = pair.scalar_fn()

    def gxi_at(prec):
        def g(xs):
            with jax.default_matmul_precision(prec):
                return jax.vmap(jax.grad(f))(xs) * xs

        return jax.jit(g)

    calls = {
        "deepliftjax": jax.jit(jax.vmap(deepliftjax.deeplift(f, ref))),
        "deepliftjax_fast": jax.jit(jax.vmap(deepliftjax.deeplift(f, ref, precision=None))),
        "floor_highest": gxi_at("highest"),
        "floor": gxi_at("default"),
    }
    return x, ref, f, calls


def _time(calls: dict, x, repeats: int) -> dict[str, float]:
    for c in calls.values():  # compile + warm up
        c(x).block_until_ready()
        c(x).block_until_ready()
    times = {m: [] for m in calls}
    for _ in range(repeats):
        for m, c in calls.items():
            t0 = time.perf_counter()
            c(x).block_until_ready()
            times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def speed(repeats: int) -> list[str]:
    """Throughput, and each method's summation residual against Δf at highest precision."""
    rows = [
        "| model | batch | deepliftjax ex/s | deepliftjax `precision=None` ex/s | "
        "floor ex/s | time vs floor, both highest | time vs floor, both JAX default | "
        "residual, highest | residual, `precision=None` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, batches in BATCHES.items():
        pair = make_pair(name)
        for b in batches:
            x, ref, f, calls = _fns(pair, b)
            med = _time(calls, x, repeats)
            scores = {m: calls[m](x) for m in ("deepliftjax", "deepliftjax_fast")}
            # Δf at highest precision; the scores were computed outside this context (a jitted
            # function called inside it would be retraced at highest precision)
            with jax.default_matmul_precision("highest"):
                res = {
                    m: float(np.max(deepliftjax.summation_residual(f, ref, x, c, batched=True)))
                    for m, c in scores.items()
                }
            rows.append(
                f"| {name} | {b} | {b / med['deepliftjax']:,.0f} | "
                f"{b / med['deepliftjax_fast']:,.0f} | {b / med['floor']:,.0f} | "
                f"{med['deepliftjax'] / med['floor_highest']:.2f} | "
                f"{med['deepliftjax_fast'] / med['floor']:.2f} | "
                f"{res['deepliftjax']:.1e} | {res['deepliftjax_fast']:.1e} |"
            )
            print(rows[-1], flush=True)
    return rows


def shap(ns: list[int], chunk: int) -> list[str]:
    from bench_shap import run_job

    fn = make_pair("genomics").scalar_fn()
    rows = [
        "| N sequences | chunk | steady seq/s | end-to-end seq/s | compile s | max residual |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in ns:
        r = run_job(fn, n, chunk, ref_chunk=20, shuffles=20)
        rows.append(
            f"| {n} | {chunk} | {r['steady']:,.0f} | {r['e2e']:,.0f} | {r['compile_s']:.1f} | "
            f"{r['max_residual']:.1e} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--shap-n", type=int, nargs="+", default=[32768, 131072])
    p.add_argument("--shap-chunk", type=int, default=2048)
    p.add_argument("--parts", default="speed,shap")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny batches")
    args = p.parse_args(argv)
    if args.quick:
        BATCHES.update(genomics=[16], vgg16=[2])
    dev = jax.devices()[0]
    lines = [
        f"Device: {getattr(dev, 'device_kind', dev.platform)} ({dev.platform}); "
        f"jax {jax.__version__}. Median of {args.repeats} interleaved repeats after warm-up.",
        "",
    ]
    parts = args.parts.split(",")
    if "speed" in parts:
        lines += [
            "### Throughput against the gradient floor, and summation residuals",
            "",
            "deepliftjax binds float32 products at `HIGHEST` precision by default; "
            "`precision=None` leaves them to JAX (TF32 on this GPU). The floor is the jitted "
            "gradient x input at the stated precision. Residual: the largest per-example "
            "|sum(C) - Δf| / |Δf| of the batch, Δf at highest precision.",
            "",
            *speed(args.repeats),
            "",
        ]
    if "shap" in parts:
        lines += [
            "### DeepLIFT-SHAP, 20 dinucleotide shuffles per sequence (genomics CNN)",
            "",
            *shap(args.shap_n, args.shap_chunk),
            "",
        ]
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
