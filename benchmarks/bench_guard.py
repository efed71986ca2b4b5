"""Cost of the summation guard (``check="warn"``, the default) against ``check=None``.

Two models, each attributed under ``jit(vmap(deeplift(...)))``: the genomics CNN of the
§3.2 experiment (``genomics.GenomicsCNN``, 200 bp one-hot) and a two-block pre-LayerNorm
transformer encoder (``bench_products.Encoder``: 16 tokens of dimension 32, a small random
reference). Both variants are compiled first; then they are
timed interleaved, ``--repeats`` calls each per round over ``--rounds`` rounds, and the
reported cost is the median over rounds of (median guarded time / median unguarded
time) - 1. Also reported: XLA's compiled flop count of both programs (machine-independent),
the time to trace and compile each program anew (median of 3), and that the scores are
bitwise equal.

The guard's compiled work is a few reductions; its wall-time cost is mostly fixed per call
(a program holding a host callback, even one never taken, leaves JAX's C++ dispatch fast
path), so each model is measured at a small and at a batch-job batch size.

    python benchmarks/bench_guard.py [--repeats 9] [--rounds 7] [--cnn-batches 256 1024]
        [--transformer-batches 32 256] [--out benchmarks/RESULTS_guard.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import deepliftjax as dl  # noqa: E402
from deepliftjax.genomics import GenomicsCNN  # noqa: E402


def genomics_case(batch=256):
    model = GenomicsCNN()
    rng = np.random.default_rng(0)
    xs = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (batch, 200))]
    params = model.init(jax.random.key(0), xs[0])
    ref = np.full((200, 4), 0.25, np.float32)
    return (lambda x: model.apply(params, x)), ref, xs


def transformer_case(batch=32):
    from bench_products import Encoder

    model = Encoder(dim=32)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(batch, 16, 32)).astype(np.float32)
    params = model.init(jax.random.key(1), xs[0])
    ref = (0.1 * rng.normal(size=(16, 32))).astype(np.float32)
    return (lambda x: model.apply(params, x)), ref, xs


def _time(fn, xs, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(xs))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _flops(fn, xs):
    cost = jax.jit(fn).lower(xs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def _compile_seconds(f, ref, xs, check, times=3):
    """Median wall time of tracing, lowering and compiling the attribution program anew."""
    ts = []
    for _ in range(times):
        fn = jax.jit(jax.vmap(dl.deeplift(f, ref, check=check)))
        t0 = time.perf_counter()
        fn.lower(xs).compile()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure(name, f, ref, xs, repeats, rounds):
    fns = {check: jax.jit(jax.vmap(dl.deeplift(f, ref, check=check))) for check in (None, "warn")}
    out = {c: np.asarray(fn(xs)) for c, fn in fns.items()}  # compile
    equal = bool(np.array_equal(out[None], out["warn"]))
    ratios, times = [], {None: [], "warn": []}
    for k in range(rounds):
        for c in (None, "warn") if k % 2 == 0 else ("warn", None):  # alternate who goes first
            times[c].append(_time(fns[c], xs, repeats))
        ratios.append(times["warn"][-1] / times[None][-1])
    flops = {c: _flops(jax.vmap(dl.deeplift(f, ref, check=c)), xs) for c in (None, "warn")}
    for c in (None, "warn"):
        _compile_seconds(f, ref, xs, c, times=1)  # warm JAX's tracing caches for both
    compile_s = {c: _compile_seconds(f, ref, xs, c) for c in (None, "warn")}
    return {
        "model": name,
        "batch": xs.shape[0],
        "off_ms": 1e3 * float(np.median(times[None])),
        "on_ms": 1e3 * float(np.median(times["warn"])),
        "cost": float(np.median(ratios)) - 1.0,
        "fixed_ms": 1e3 * (float(np.median(times["warn"])) - float(np.median(times[None]))),
        "cost_min": float(np.min(times["warn"])) / float(np.min(times[None])) - 1.0,
        "ratios": ratios,
        "flops_cost": flops["warn"] / flops[None] - 1.0,
        "compile_off_s": compile_s[None],
        "compile_on_s": compile_s["warn"],
        "equal": equal,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cnn-batches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--transformer-batches", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = [
        measure("genomics CNN (200 bp)", *genomics_case(b), args.repeats, args.rounds)
        for b in args.cnn_batches
    ] + [
        measure("transformer (2 blocks, 16x32)", *transformer_case(b), args.repeats, args.rounds)
        for b in args.transformer_batches
    ]
    lines = [
        '## Cost of the summation guard (`check="warn"` vs `check=None`)',
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax "
        f"{jax.__version__}, {jax.default_backend()}; `jit(vmap(deeplift))`, median over "
        f"{args.rounds} interleaved rounds of {args.repeats} calls.",
        "",
        "| model | batch | check=None ms | check='warn' ms | difference ms | time cost "
        "| time cost (fastest rounds) | flop cost | compile s (None / warn) | scores equal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['off_ms']:.2f} | {r['on_ms']:.2f} | "
            f"{r['fixed_ms']:+.2f} | {100 * r['cost']:+.1f}% | {100 * r['cost_min']:+.1f}% | "
            f"{100 * r['flops_cost']:+.3f}% | "
            f"{r['compile_off_s']:.2f} / {r['compile_on_s']:.2f} | {r['equal']} |"
        )
    lines.append("")
    lines.append(
        "Per-round time ratios: "
        + "; ".join(
            f"{r['model']} ({r['batch']}): " + ", ".join(f"{v:.3f}" for v in r["ratios"])
            for r in rows
        )
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
