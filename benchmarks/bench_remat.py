"""What ``jax.checkpoint`` inside a model saves under DeepLIFT: compiled memory and time.

A residual MLP block (``h + tanh(gelu(h W1)^2) W2``, width 256 -> 1,024 -> 256, batch 256),
stacked ``depth`` times either by ``jax.lax.scan`` or by a Python loop, with and without
``jax.checkpoint`` around the block. Memory is XLA's buffer assignment of the compiled
program (``memory_analysis().temp_size_in_bytes``), which does not depend on the machine's
load; time is the median of repeats after compilation. DeepLIFT and the plain gradient are
measured side by side, and the scores with and without the checkpoint are compared.

Run: ``nice -n 10 python benchmarks/bench_remat.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import deepliftjax as dl

WIDTH, BATCH = 256, 256


def _block(h: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
    u = jax.nn.gelu(h @ w1)
    return h + jnp.tanh(u * u) @ w2


def model(depth: int, checkpoint: bool, scan: bool):
    k1, k2 = jax.random.split(jax.random.key(0))
    w1 = jax.random.normal(k1, (depth, WIDTH, 4 * WIDTH)) / np.sqrt(WIDTH)
    w2 = jax.random.normal(k2, (depth, 4 * WIDTH, WIDTH)) / np.sqrt(4 * WIDTH)
    block = jax.checkpoint(_block) if checkpoint else _block

    def f(x: jax.Array) -> jax.Array:
        if scan:
            h, _ = jax.lax.scan(lambda h, w: (block(h, *w), None), x, (w1, w2))
        else:
            h = x
            for i in range(depth):
                h = block(h, w1[i], w2[i])
        return jnp.sum(h**2)

    return f


def _median_s(fn, x, repeats: int = 5) -> float:
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(depth: int, scan: bool) -> str:
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    ref = jnp.zeros_like(x)
    cells, scores = [], {}
    for ck in (False, True):
        f = model(depth, ck, scan)
        for name, g in (("deeplift", dl.deeplift(f, ref)), ("grad", jax.grad(f))):
            fn = jax.jit(g)
            mib = fn.lower(x).compile().memory_analysis().temp_size_in_bytes / 2**20
            cells.append(f"{mib:.0f} MiB, {1e3 * _median_s(fn, x):.0f} ms")
            if name == "deeplift":
                scores[ck] = np.asarray(fn(x))
    diff = float(np.abs(scores[True] - scores[False]).max())
    stack = "scan" if scan else "loop"
    return f"| {stack} | {depth} | " + " | ".join(cells) + f" | {diff:.1e} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="append the table to this file")
    args = p.parse_args()
    lines = [
        f"jax {jax.__version__}, {jax.devices()[0].platform}; batch {BATCH}, width {WIDTH}",
        "",
        "| stack | depth | DeepLIFT | gradient | DeepLIFT + checkpoint | gradient + checkpoint "
        "| max score difference |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for scan in (True, False):
        for depth in (6, 12, 24):
            lines.append(row(depth, scan))
            print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
