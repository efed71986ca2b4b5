"""DeepLIFT-SHAP throughput and memory on the paper's genomics CNN.

Model: the §3.2 CNN, ReLU version (Conv 20 x 15 VALID, ReLU, max pool 50/50, Dense 200,
ReLU, Dense 200, ReLU, Dense 1) on 200-bp one-hot DNA, random weights. Job: DeepLIFT-SHAP
with 20 dinucleotide shuffles per sequence (drawn on device inside the compiled chunk),
through :func:`deepliftjax._runner.attribute` writing to disk, with inputs streamed from a
generator, so nothing held in memory grows with the number of sequences.

Each configuration runs in a fresh subprocess (peak RSS is per process). Reported:

* steady seq/s: sequences per second between the first and the last finished chunk
  (compilation excluded); end-to-end seq/s includes compilation and the final files.
* peak RSS at two job sizes: it should not grow with N.

Usage::

    python benchmarks/bench_shap.py                       # N = 2048 and 8192
    python benchmarks/bench_shap.py --n 1024 4096 --pool reduce_window reshape
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _model(pool: str):
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp

    class GenomicsReLU(fnn.Module):
        @fnn.compact
        def __call__(self, x):  # (B, 200, 4)
            h = fnn.relu(fnn.Conv(20, (15,), padding="VALID")(x))
            if pool == "reduce_window":
                h = fnn.max_pool(h, (50,), (50,))  # lax.reduce_window max: 3 windows of 50
            else:  # the same function as reshape + max (non-overlapping windows)
                h = h[:, :150].reshape(h.shape[0], 3, 50, h.shape[-1]).max(axis=2)
            h = h.reshape(h.shape[0], -1)
            h = fnn.relu(fnn.Dense(200)(h))
            h = fnn.relu(fnn.Dense(200)(h))
            return fnn.Dense(1)(h)

    model = GenomicsReLU()
    params = model.init(jax.random.key(0), jnp.zeros((1, 200, 4)))
    return lambda x: model.apply(params, x[None])[0, 0]


def run_job(fn, n: int, chunk: int, ref_chunk: int, shuffles: int) -> dict:
    """DeepLIFT-SHAP of ``n`` random sequences through ``attribute``; times and residual."""
    import functools

    import jax
    import numpy as np

    from deepliftjax._runner import attribute
    from deepliftjax._shuffle import dinuc_shuffle

    rng = np.random.default_rng(0)

    def batches():  # one-hot uint8, generated as needed (as if read from a FASTA stream)
        for lo in range(0, n, chunk):
            tok = rng.integers(0, 4, (min(chunk, n - lo), 200))
            yield np.eye(4, dtype=np.uint8)[tok]

    stamps: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        res = attribute(
            fn,
            batches(),
            functools.partial(dinuc_shuffle, num_shuffles=shuffles),
            key=jax.random.key(1),
            chunk_size=chunk,
            reference_chunk_size=ref_chunk,
            out_dir=out_dir,
            progress=False,
            callback=lambda c, r: stamps.append(time.perf_counter()),
        )
        total = time.perf_counter() - t0
        max_resid = float(np.max(res.residuals))
    steady = (n - chunk) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {
        "n": n,
        "steady": steady,
        "e2e": n / total,
        "compile_s": stamps[0] - t0,
        "max_residual": max_resid,
    }


def worker(args) -> dict:
    pool = args.pool[0]
    out = run_job(_model(pool), args.worker, args.chunk_size, args.ref_chunk, args.shuffles)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {**out, "pool": pool, "rss_mib": rss}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[2048, 8192])
    p.add_argument(
        "--pool", nargs="+", default=["reduce_window"], choices=["reduce_window", "reshape"]
    )
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--ref-chunk", type=int, default=20)
    p.add_argument("--shuffles", type=int, default=20)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return
    rows = []
    for pool in args.pool:
        for n in args.n:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                str(n),
                "--pool",
                pool,
                "--chunk-size",
                str(args.chunk_size),
                "--ref-chunk",
                str(args.ref_chunk),
                "--shuffles",
                str(args.shuffles),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                sys.exit(f"worker failed:\n{out.stderr}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    load = os.getloadavg()[0]
    print(
        f"\nDeepLIFT-SHAP, {args.shuffles} dinucleotide shuffles/sequence, genomics CNN (ReLU), "
        f"200 bp; chunk {args.chunk_size} sequences x {args.ref_chunk} references per step; "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end.\n"
    )
    print(
        "| max pool written as | N sequences | steady seq/s | end-to-end seq/s | "
        "compile s | peak RSS MiB | max residual |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['pool']} | {r['n']} | {r['steady']:.0f} | {r['e2e']:.0f} | "
            f"{r['compile_s']:.1f} | {r['rss_mib']:.0f} | {r['max_residual']:.1e} |"
        )


if __name__ == "__main__":
    main()
