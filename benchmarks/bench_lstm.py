"""DeepLIFT on an LSTM over length-200 sequences against a jitted gradient×input.

Issue target: the attribution costs at most 2.5x a jitted gradient×input of the same model.
Both are measured side by side in one process, after warm-up, as medians of repeats.

    python benchmarks/bench_lstm.py [--batch 64] [--repeats 7] [--out benchmarks/RESULTS_lstm.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import deepliftjax as dl


class LSTMModel(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):  # (T, F) -> scalar logit
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x[None])
        return nn.Dense(1)(h[0, -1])[0]


def _median_time(fn, x, repeats):
    jax.block_until_ready(fn(x))  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    model = LSTMModel()
    key = jax.random.PRNGKey(0)
    x = jax.nn.one_hot(jax.random.randint(key, (args.batch, args.length), 0, 4), 4)
    params = model.init(jax.random.PRNGKey(1), x[0])
    f = lambda v: model.apply(params, v)
    ref = jnp.full((args.length, 4), 0.25)

    methods = {
        "deepliftjax (jit, vmap)": jax.jit(jax.vmap(dl.deeplift(f, ref))),
        "gradient×input (jit, vmap)": jax.jit(jax.vmap(lambda v: jax.grad(f)(v) * v)),
    }
    # interleave the two a few times so load changes hit both alike
    rounds = {name: [] for name in methods}
    for _ in range(3):
        for name, fn in methods.items():
            rounds[name].append(_median_time(fn, x, args.repeats))
    t = {name: float(np.median(v)) for name, v in rounds.items()}
    ratio = t["deepliftjax (jit, vmap)"] / t["gradient×input (jit, vmap)"]
    c = methods["deepliftjax (jit, vmap)"](x)
    resid = np.abs(np.asarray(c).reshape(args.batch, -1).sum(1) - (jax.vmap(f)(x) - f(ref)))

    lines = [
        f"### LSTM ({model.hidden} units, OptimizedLSTMCell) over length-{args.length} one-hot "
        f"sequences, batch {args.batch}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, backend {jax.default_backend()}; load average "
        f"{os.getloadavg()[0]:.2f} at the end. Medians of {args.repeats} timed calls after "
        "warm-up, median over 3 interleaved rounds.",
        "",
        "| method | time per batch (ms) | sequences/s |",
        "|---|---:|---:|",
    ]
    for name, v in t.items():
        lines.append(f"| {name} | {1e3 * v:.1f} | {args.batch / v:.0f} |")
    lines += [
        "",
        f"DeepLIFT / gradient×input time: **{ratio:.2f}×** (target ≤ 2.5×). "
        f"Max |sum(C) − Δf|: {resid.max():.2e}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
