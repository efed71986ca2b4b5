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


def _full_model(length: int, remat: bool) -> tuple[Enformer, dict]:
    """The published configuration at ``length`` (crop scaled with the number of bins)."""
    bins = length // 128
    crop = FULL["crop"] * bins // 1536
    model = Enformer(**{**FULL, "crop": crop}, num_outputs=1, remat=remat)
    x = jax.ShapeDtypeStruct((length, 4), jnp.float32)
    return model, jax.eval_shape(model.init, jax.random.key(0), x)


def _programs(model, variables, length: int, chunks: tuple[int, ...], refs: int) -> dict:
    """Lowered programs (not compiled) for the gradient, one reference and DeepLIFT-SHAP."""
    x = jax.ShapeDtypeStruct((length, 4), jnp.float32)
    r = jax.ShapeDtypeStruct((refs, length, 4), jnp.float32)

    def f(v, s):
        return target(model, v, s)

    def dl(v, s, r1):
        out, out_ref, pullback = deeplift_vjp(f, r1, v, s, argnums=1)
        return pullback(jnp.ones_like(out))[0] * (s - r1)

    def shap(chunk, v, s, rs):
        return deeplift_shap(functools.partial(f, v), rs, reference_chunk_size=chunk)(s)

    progs = {
        "gradient": jax.jit(jax.grad(f, argnums=1)).lower(variables, x),
        "deeplift_1ref": jax.jit(dl).lower(variables, x, x),
    }
    for c in chunks:
        progs[f"shap_chunk{c}"] = jax.jit(functools.partial(shap, c)).lower(variables, x, r)
    return progs


def full_size(
    length: int = 196_608, remat: bool = False, chunks: tuple[int, ...] = (2, 4), refs: int = 8
) -> dict:
    """Compile (not run) the full-size model at ``length``: memory (MiB) and GFLOP of each.

    DeepLIFT-SHAP programs take ``refs`` references in chunks of ``chunk``.
    """
    model, variables = _full_model(length, remat)
    row = {
        "length": length,
        "remat": remat,
        "params_mb": sum(a.size * 4 for a in jax.tree_util.tree_leaves(variables)) / 2**20,
    }
    for name, lowered in _programs(model, variables, length, chunks, refs).items():
        t0 = time.perf_counter()
        compiled = lowered.compile()
        row[f"{name}_compile_s"] = time.perf_counter() - t0
        row[f"{name}_mb"] = _mem(compiled)
        row[f"{name}_gflop"] = _flops(compiled) / 1e9
        print(
            f"  L={length} remat={remat} {name}: {row[f'{name}_mb']:.0f} MiB, "
            f"{row[f'{name}_gflop']:.0f} GFLOP, compile {row[f'{name}_compile_s']:.0f} s",
            flush=True,
        )
        del compiled
    return row


def run_full(length: int, remat: bool = True) -> dict:
    """Run (not only compile) DeepLIFT with one reference on the full-width model at ``length``.

    Returns XLA's compiled memory, the process's peak RSS (``ru_maxrss``, which includes
    the parameters, the Python process and compilation), time and the summation residual.
    Meant to run in a fresh process per length (see ``--run``), so the peak is this length's.
    """
    import resource

    model, shapes = _full_model(length, remat)
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (length,), 0, 4), 4)
    variables = jax.jit(model.init)(jax.random.key(1), x)
    r = dinuc_shuffle(jax.random.key(2), x, num_shuffles=1)[0]

    def f(v, s):
        return target(model, v, s)

    def dl(v, s, r1):
        out, out_ref, pullback = deeplift_vjp(f, r1, v, s, argnums=1)
        scores = pullback(jnp.ones_like(out))[0] * (s - r1)
        return scores, jnp.abs(jnp.sum(scores) - (out - out_ref)), out - out_ref

    compiled = jax.jit(dl).lower(variables, x, r).compile()
    t0 = time.perf_counter()
    _, residual, delta = jax.block_until_ready(compiled(variables, x, r))
    seconds = time.perf_counter() - t0
    return {
        "length": length,
        "remat": remat,
        "xla_mb": _mem(compiled),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
        "residual": float(residual),
        "delta": float(delta),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="*", default=[2048, 8192, 16384])
    p.add_argument("--full", action="store_true", help="also compile the full-size model")
    p.add_argument("--full-only", action="store_true", help="only the full-size model")
    p.add_argument("--full-length", type=int, default=196_608)
    p.add_argument(
        "--run", type=int, nargs="*", default=[], help="run the full-width model at these lengths"
    )
    p.add_argument("--no-remat", action="store_true", help="--run without checkpointing")
    args = p.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, small model {SMALL}")
    for length in [] if (args.full_only or args.run) else args.lengths:
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
        for remat in (False, True):
            r = full_size(args.full_length, remat=remat)
            print(f"full size (compiled, not run): {r}", flush=True)
    for length in args.run:
        print(f"run: {run_full(length, remat=not args.no_remat)}", flush=True)


if __name__ == "__main__":
    main()
