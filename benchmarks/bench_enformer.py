"""DeepLIFT-SHAP on an Enformer-style model vs a plain gradient: time and peak memory.

Measured on CPU at growing lengths for a small Enformer (time: median of repeats after
compilation; memory: XLA's buffer assignment of the compiled program, ``memory_analysis``,
arguments + outputs + temporaries, which does not depend on the machine's load). Then the
full-size Enformer (1,536 channels, 11 transformer blocks, 6 tower stages) at 196,608 bp
is compiled, not run, for one reference and for the gradient, to read off its memory and
FLOPs: the extrapolation to one GPU.

Run: ``nice -n 10 python benchmarks/bench_enformer.py [--full] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from deepliftjax import deeplift_shap, deeplift_vjp, dinuc_shuffle
from deepliftjax.genomics.enformer import Enformer

SMALL = dict(channels=64, num_heads=4, transformer_layers=2, tower_layers=5, crop=4)
FULL = dict(channels=1536, num_heads=8, transformer_layers=11, tower_layers=6, crop=320)


def _mem(compiled) -> float:
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return total / 2**20


def _flops(compiled) -> float:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list) else c
    return float(c.get("flops", float("nan")))


def _time(fn, *args, repeats=3) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def target(model, variables, x):
    out = model.apply(variables, x)
    c = out.shape[0] // 2
    return jnp.sum(out[c - 2 : c + 2, 0])


def measure(length: int, num_refs: int = 8, chunk: int = 2) -> dict:
    model = Enformer(**SMALL)
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (length,), 0, 4), 4)
    variables = model.init(jax.random.key(1), x)
    f = functools.partial(target, model, variables)
    refs = dinuc_shuffle(jax.random.key(2), x, num_shuffles=num_refs)
    grad = jax.jit(jax.grad(f)).lower(x).compile()
    t0 = time.perf_counter()
    # references traced: closed over, XLA would constant-fold the reference pass
    shap = jax.jit(
        lambda s, r: deeplift_shap(f, r, reference_chunk_size=chunk, return_residuals=True)(s)
    )
    shap = shap.lower(x, refs).compile()
    row = {"length": length, "refs": num_refs, "chunk": chunk}
    row["shap_compile_s"] = time.perf_counter() - t0
    one = jax.jit(lambda s, r: deeplift_shap(f, r)(s)).lower(x, refs[:1]).compile()
    row["residual"] = float(shap(x, refs).residuals)
    row["grad_s"] = _time(grad, x)
    row["deeplift_1ref_s"] = _time(one, x, refs[:1])
    row["shap_s"] = _time(shap, x, refs, repeats=1)
    row["grad_mb"] = _mem(grad)
    row["deeplift_1ref_mb"] = _mem(one)
    row["shap_mb"] = _mem(shap)
    return row


def full_size(length: int = 196_608) -> dict:
    """Compile (not run) the full-size model at ``length``: memory and FLOPs per reference."""
    model = Enformer(**FULL, num_outputs=1)
    x = jax.ShapeDtypeStruct((length, 4), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def f(v, s):
        return target(model, v, s)

    def dl(v, s, r):
        out, out_ref, pullback = deeplift_vjp(f, r, v, s, argnums=1)
        return pullback(jnp.ones_like(out))[0] * (s - r)

    grad = jax.jit(jax.grad(f, argnums=1)).lower(variables, x).compile()
    deep = jax.jit(dl).lower(variables, x, x).compile()
    params_mb = sum(a.size * 4 for a in jax.tree_util.tree_leaves(variables)) / 2**20
    return {
        "length": length,
        "params_mb": params_mb,
        "grad_mb": _mem(grad),
        "deeplift_mb": _mem(deep),
        "grad_gflop": _flops(grad) / 1e9,
        "deeplift_gflop": _flops(deep) / 1e9,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="*", default=[2048, 8192, 16384])
    p.add_argument("--full", action="store_true", help="also compile the full-size model")
    p.add_argument("--full-only", action="store_true", help="only the full-size model")
    args = p.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, small model {SMALL}")
    for length in [] if args.full_only else args.lengths:
        r = measure(length)
        print(
            f"L={r['length']:>6}  grad {r['grad_s'] * 1e3:8.1f} ms {r['grad_mb']:8.1f} MiB | "
            f"DeepLIFT 1 ref {r['deeplift_1ref_s'] * 1e3:8.1f} ms {r['deeplift_1ref_mb']:8.1f} MiB "
            f"| SHAP {r['refs']} refs (chunk {r['chunk']}) {r['shap_s']:.2f} s "
            f"{r['shap_mb']:8.1f} MiB, compile {r['shap_compile_s']:.1f} s, "
            f"residual {r['residual']:.2e}",
            flush=True,
        )
    if args.full or args.full_only:
        r = full_size()
        print(
            f"full size at {r['length']} bp (compiled, not run): params {r['params_mb']:.0f} MiB; "
            f"gradient {r['grad_mb']:.0f} MiB, {r['grad_gflop']:.0f} GFLOP; DeepLIFT 1 ref "
            f"{r['deeplift_mb']:.0f} MiB, {r['deeplift_gflop']:.0f} GFLOP",
            flush=True,
        )


if __name__ == "__main__":
    main()
