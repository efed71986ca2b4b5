"""Lab-scale jobs through ``attribute(out_dir=...)``: throughput and peak memory against N.

Model: a small genomics CNN on 1,000-bp one-hot DNA, random weights (the §3.2
architecture of :mod:`deepliftjax.genomics`, :class:`GenomicsCNN`: Conv 20 x 15 VALID,
PReLU, max pool 50/50, Dense 200, PReLU, Dense 200, PReLU, Dense 1). Two jobs:

* plain DeepLIFT (one all-zero reference) on up to 100,000 sequences;
* DeepLIFT-SHAP with 20 dinucleotide shuffles per sequence (drawn on device inside the
  compiled chunk) on up to 10,000 sequences.

Inputs are a uint8 ``.npy`` file opened with ``mmap_mode="r"`` (as a user would), outputs
go to ``out_dir`` (chunk files, then memory-mapped final files). Each (job, N) runs in a
fresh subprocess, so peak memory is per job. Reported per run:

* steady seq/s: sequences per second between the first and the last computed chunk
  (compilation excluded); end-to-end seq/s includes tracing, compilation, hashing the
  inputs and writing the final files;
* peak RSS (``VmHWM``: every resident page, including the pages of a memory-mapped input
  file the job has read, which the kernel may drop at any time) and peak anonymous RSS
  (``RssAnon`` sampled every 20 ms: the process's own memory). The anonymous peak must
  stay flat in N; with ``--read blocks`` (inputs an iterable of blocks read from the file,
  nothing of it mapped) so must ``VmHWM``.

Usage::

    nice -n 10 python benchmarks/bench_scale.py                   # the recorded sizes
    python benchmarks/bench_scale.py --plain 2000 --shap 200      # a quick look
    nice -n 10 python benchmarks/bench_scale.py --read blocks --shap  # inputs from file reads
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

L = 1000


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _model():
    import jax
    import jax.numpy as jnp

    from deepliftjax.genomics._model import GenomicsCNN

    model = GenomicsCNN()
    params = model.init(jax.random.key(0), jnp.zeros((1, L, 4)))
    return lambda x: model.apply(params, x[None])[0]


def _make_inputs(path: str, n: int) -> None:
    """Random one-hot uint8 sequences (n, L, 4), written block by block."""
    import numpy as np

    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, L, 4))
    rng = np.random.default_rng(0)
    eye = np.eye(4, dtype=np.uint8)
    for lo in range(0, n, 5000):
        hi = min(n, lo + 5000)
        out[lo:hi] = eye[rng.integers(0, 4, (hi - lo, L))]
    out.flush()
    del out


def _blocks(path: str, n: int, rows: int):
    """The first ``n`` rows of an ``.npy`` file in blocks, read with plain file reads (no
    page of the file stays mapped in this process)."""
    import numpy as np

    mm = np.load(path, mmap_mode="r")
    offset, dtype, row_shape = mm.offset, mm.dtype, mm.shape[1:]
    del mm
    row_items = int(np.prod(row_shape))
    with open(path, "rb") as fh:
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            fh.seek(offset + lo * row_items * dtype.itemsize)
            block = np.fromfile(fh, dtype, (hi - lo) * row_items)
            yield block.reshape(hi - lo, *row_shape)


def worker(
    job: str, n: int, inputs: str, out_dir: str, chunk: int, ref_chunk: int, read: str = "mmap"
) -> dict:
    """Run one job in this process; return timings and memory."""
    import functools

    import jax
    import numpy as np

    from deepliftjax._runner import attribute
    from deepliftjax._shuffle import dinuc_shuffle

    peak_anon = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kib("RssAnon"))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    fn = _model()
    xs = np.load(inputs, mmap_mode="r")[:n] if read == "mmap" else _blocks(inputs, n, chunk)
    refs = None if job == "plain" else functools.partial(dinuc_shuffle, num_shuffles=20)
    stamps: list[float] = []
    t0 = time.perf_counter()
    res = attribute(
        fn,
        xs,
        refs,
        key=jax.random.key(1),
        chunk_size=chunk,
        reference_chunk_size=ref_chunk,
        out_dir=out_dir,
        progress=False,
        callback=lambda c, r: stamps.append(time.perf_counter()),
    )
    total = time.perf_counter() - t0
    max_resid = float(np.max(res.residuals))
    stop.set()
    steady = (n - chunk) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    return {
        "job": job,
        "read": read,
        "n": n,
        "steady": steady,
        "e2e": n / total,
        "total_s": total,
        "first_chunk_s": stamps[0] - t0,
        "max_residual": max_resid,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "peak_anon_mib": max(peak_anon[0], _status_kib("RssAnon")) / 1024,
        "out_mib": size / 2**20,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plain", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    p.add_argument("--shap", type=int, nargs="*", default=[2_000, 5_000, 10_000])
    p.add_argument("--chunk-size", type=int, default=512, help="plain DeepLIFT chunk")
    p.add_argument("--shap-chunk-size", type=int, default=64)
    p.add_argument("--ref-chunk", type=int, default=20)
    p.add_argument(
        "--read",
        choices=["mmap", "blocks"],
        default="mmap",
        help="inputs as a memory-mapped array, or as an iterable of blocks read from the file",
    )
    p.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        job, n, inputs, out_dir = args.worker
        chunk = args.chunk_size if job == "plain" else args.shap_chunk_size
        out = worker(job, int(n), inputs, out_dir, chunk, args.ref_chunk, args.read)
        print(json.dumps(out))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "seqs.npy")
        _make_inputs(inputs, max([*args.plain, *args.shap, 1]))
        for job, sizes in (("plain", args.plain), ("shap", args.shap)):
            for n in sizes:
                out_dir = os.path.join(tmp, f"{job}_{n}")
                cmd = [sys.executable, __file__, "--worker", job, str(n), inputs, out_dir]
                cmd += ["--chunk-size", str(args.chunk_size)]
                cmd += ["--shap-chunk-size", str(args.shap_chunk_size)]
                cmd += ["--ref-chunk", str(args.ref_chunk), "--read", args.read]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if out.returncode:
                    sys.exit(f"worker failed:\n{out.stderr}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], file=sys.stderr, flush=True)
                subprocess.run(["rm", "-rf", out_dir], check=True)
    load = os.getloadavg()[0]
    print(
        f"\nGenomics CNN (GenomicsCNN, PReLU), {L}-bp one-hot uint8 inputs "
        + ("memory-mapped from .npy" if args.read == "mmap" else "read from .npy in blocks")
        + f"; plain DeepLIFT: all-zero reference, chunk {args.chunk_size}; DeepLIFT-SHAP: 20 "
        f"dinucleotide shuffles per sequence, chunk {args.shap_chunk_size} x "
        f"{args.ref_chunk} references per step; {os.cpu_count()} CPU cores (shared), load "
        f"average {load:.1f} at the end.\n"
    )
    print(
        "| job | inputs | N sequences | steady seq/s | end-to-end seq/s | total s | "
        "first chunk s | peak RSS MiB (VmHWM) | peak anonymous RSS MiB | output MiB | "
        "max residual |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['job']} | {r['read']} | {r['n']:,} | {r['steady']:.0f} | {r['e2e']:.0f} | "
            f"{r['total_s']:.0f} | {r['first_chunk_s']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_anon_mib']:.0f} | {r['out_mib']:.0f} | {r['max_residual']:.1e} |"
        )


if __name__ == "__main__":
    main()
