"""Cost of the product rules (``product_rule=``) on a small transformer.

A two-block pre-LayerNorm encoder (multi-head attention, GELU MLP, mean pooling, final
LayerNorm), attributed against the all-zero embedding (a reference at which every
LayerNorm sees zero variance) under ``jit(vmap(...))``. Each method is timed after a
warm-up call (compilation), as the median of ``--repeats`` calls; the methods are interleaved over
``--rounds`` rounds and the median of the round medians is reported. The gradient×input
of the same model is the floor (compiled first, so that it absorbs one-time costs of the
first compilation). Flax initialises biases to zero, so at the zero reference every
LayerNorm of this untrained model sees zero variance, and the midpoint rule's
conditioning compounds from one to the next. Also reported: the worst float32 residual against Δf in
float64 and the median Σ|C| / |Δf|.

    python benchmarks/bench_products.py [--batch 32] [--tokens 16] [--dim 32] \
        [--repeats 7] [--rounds 3] [--out benchmarks/RESULTS_products.md]
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

RULES = ("midpoint", "guarded", "balanced")


class Block(nn.Module):
    heads: int
    dim: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True)(h, h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(h)))


class Encoder(nn.Module):
    dim: int
    heads: int = 4
    blocks: int = 2

    @nn.compact
    def __call__(self, emb):  # (T, dim) token embeddings -> scalar logit
        x = emb
        for _ in range(self.blocks):
            x = Block(self.heads, self.dim)(x)
        return nn.Dense(1)(nn.LayerNorm()(jnp.mean(x, axis=0)))[0]


# ---- the norm table of tests/test_products.py (same draws) ------------------------------

D = 16
NORM_CASES = [
    (kind, ref_name, eps)
    for kind in ("layer", "rms", "group")
    for ref_name in ("zero", "constant")
    for eps in (1e-5, 1e-6)
]
READOUT_LIMIT = 10.0


def norm_table(rules=RULES):
    """Per norm, reference and ε: over 32 draws, float32 under jit(vmap), against Δf in
    float64: the worst residual and Σ|C|/|Δf| on the draws whose readout ``w·y`` does not
    itself cancel more than 10x, and the worst (Σ|C|/|Δf|) / (Σ_i|w_i Δy_i|/|Δf|) on all."""
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, D).astype(np.float32)
    bias = (0.1 * rng.normal(size=D)).astype(np.float32)
    readout = rng.normal(size=D).astype(np.float32)
    xs = rng.normal(size=(32, D)).astype(np.float32)
    refs = {"zero": np.zeros(D, np.float32), "constant": np.full(D, 0.5, np.float32)}
    rows = []
    for kind, ref_name, eps in NORM_CASES:
        if kind == "layer":
            mod, p = nn.LayerNorm(epsilon=eps), {"scale": scale, "bias": bias}
        elif kind == "rms":
            mod, p = nn.RMSNorm(epsilon=eps), {"scale": scale}
        else:
            mod, p = nn.GroupNorm(num_groups=4, epsilon=eps), {"scale": scale, "bias": bias}

        def y(x, mod=mod, p=p):
            return mod.apply({"params": jax.tree_util.tree_map(lambda v: v.astype(x.dtype), p)}, x)

        def f(x, y=y):
            return jnp.dot(y(x), readout.astype(x.dtype))

        ref = refs[ref_name]
        with jax.enable_x64(True):
            x64, r64 = jnp.asarray(xs, jnp.float64), jnp.asarray(ref, jnp.float64)
            d = np.asarray(jax.vmap(f)(x64)) - float(f(r64))
            dy = np.asarray(jax.vmap(y)(x64)) - np.asarray(y(r64))
        own = np.abs(dy * readout).sum(1) / np.abs(d)
        kept = own <= READOUT_LIMIT
        row = [kind, ref_name, eps, int(kept.sum())]
        for rule in rules:
            c = jax.jit(jax.vmap(dl.deeplift(f, ref, product_rule=rule)))(xs)
            c = np.asarray(c, np.float64)
            res = np.abs(c.sum(1) - d) / np.abs(d)
            cond = np.abs(c).sum(1) / np.abs(d)
            worst = (res[kept].max(), cond[kept].max())
            row.append((*worst, np.median(cond[kept]), (cond / own).max()))
        rows.append(row)
    return rows


def norm_lines(rows, rules=RULES):
    head = "| norm | reference | ε | kept |" + "".join(
        f" {r}: residual | {r}: Σ\\|C\\|/\\|Δf\\| max (median) | {r}: vs readout |" for r in rules
    )
    lines = [head, "|---|---|---|---:|" + "---:|---:|---:|" * len(rules)]
    for kind, ref_name, eps, kept, *cells in rows:
        line = f"| {kind} | {ref_name} | {eps:g} | {kept} |"
        for res, cmax, cmed, vs in cells:
            line += f" {res:.1e} | {cmax:.1f} ({cmed:.1f}) | {vs:.1f} |"
        lines.append(line)
    return lines


def _time(fn, x, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-norms", action="store_true", help="timings only")
    args = ap.parse_args(argv)

    model = Encoder(dim=args.dim)
    shape = (args.tokens, args.dim)
    xs = jax.random.normal(jax.random.PRNGKey(0), (args.batch, *shape))
    params = model.init(jax.random.PRNGKey(1), xs[0])
    f = lambda v: model.apply(params, v)
    ref = jnp.zeros(shape)

    methods = {"gradient×input (floor)": jax.jit(jax.vmap(lambda v: jax.grad(f)(v) * v))}
    methods |= {
        f"deepliftjax, product_rule={r!r}": jax.jit(jax.vmap(dl.deeplift(f, ref, product_rule=r)))
        for r in RULES
    }

    first = {}
    for name, fn in methods.items():  # warm-up: compilation
        t = time.perf_counter()
        jax.block_until_ready(fn(xs))
        first[name] = time.perf_counter() - t
    rounds = {name: [] for name in methods}
    names = list(methods)
    for k in range(args.rounds):  # interleaved, the order rotated each round
        for name in names[k % len(names) :] + names[: k % len(names)]:
            rounds[name].append(_time(methods[name], xs, args.repeats))
    med = {name: float(np.median(ts)) for name, ts in rounds.items()}

    with jax.enable_x64(True):  # the true Δf
        p64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
        g = jax.jit(jax.vmap(lambda v: model.apply(p64, v)))
        d = np.asarray(g(jnp.asarray(xs, jnp.float64))) - float(
            model.apply(p64, jnp.zeros(shape, jnp.float64))
        )
    quality = {}
    for r in RULES:
        c = np.asarray(methods[f"deepliftjax, product_rule={r!r}"](xs), np.float64)
        c = c.reshape(len(xs), -1)
        quality[r] = (
            float(np.max(np.abs(c.sum(1) - d) / np.abs(d))),
            float(np.median(np.abs(c).sum(1) / np.abs(d))),
        )

    base = med["deepliftjax, product_rule='midpoint'"]
    floor = med["gradient×input (floor)"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"### Product rules on a {model.blocks}-block transformer "
        f"({args.tokens} tokens × {args.dim}, {model.heads} heads), batch {args.batch}, "
        "zero-embedding reference",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"backend {jax.default_backend()}; load average {load:.2f} at the end. Medians of "
        f"{args.repeats} timed calls after warm-up, median over {args.rounds} interleaved "
        "rounds.",
        "",
        "| method | first call (s) | time per batch (ms) | vs midpoint | vs floor "
        "| max residual | median Σ\\|C\\|/\\|Δf\\| |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in methods:
        rule = name.split("'")[1] if "'" in name else None
        res, cond = quality[rule] if rule else (float("nan"), float("nan"))
        q = f"{res:.1e} | {cond:.1f}" if rule else "— | —"
        lines.append(
            f"| {name} | {first[name]:.1f} | {1e3 * med[name]:.1f} | "
            f"{med[name] / base:.2f}× | {med[name] / floor:.2f}× | {q} |"
        )
    if not args.skip_norms:
        lines += [
            "",
            "### Flax LayerNorm / RMSNorm / GroupNorm (4 groups) on 16 features, f = w·norm(x)",
            "",
            "32 draws x ~ N(0, 1) per row, float32 under jit(vmap), residual |ΣC − Δf|/|Δf| "
            "against Δf in float64. *kept*: the draws whose readout does not itself cancel "
            f"more than {READOUT_LIMIT:g}x (Σ_i\\|w_i Δy_i\\| ≤ {READOUT_LIMIT:g}\\|Δf\\|); "
            "residual and Σ\\|C\\|/\\|Δf\\| are the worst (median) over those. *vs readout*: "
            "the worst ratio of Σ\\|C\\| to Σ_i\\|w_i Δy_i\\| over all 32 draws.",
            "",
            *norm_lines(norm_table()),
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
