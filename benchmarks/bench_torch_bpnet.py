"""A PyTorch BPNet as it is: ``from_torch`` + ``deeplift_shap`` against tangermeme and Captum.

Model: bpnet-lite's ``BPNet`` (64 filters, 8 dilated residual layers, 2 stranded outputs,
2 control tracks), float32, torch's default initialisation. Job: the counts head of N
random one-hot sequences of ``--length`` bp (channels first, ``(4, L)``, as the torch model
takes them) with Poisson(1) control tracks, against K dinucleotide shuffles per sequence
drawn once; every method gets the same references.

Methods, interleaved round by round (order rotated), medians of the timed rounds after an
untimed first call each:

* from_torch: ``deepliftjax.torch.from_torch(model, (x, ctl))`` and
  ``jax.jit(jax.vmap(deeplift_shap(counts, refs, alphabet_axis=0, hypothetical=True)))``
  over ``--batch`` sequences, all K references at once (``reference_chunk_size=None``: on
  XLA's CPU the ``lax.scan`` over chunks of the default 10 ran this channels-first model
  11x slower, 17 s against 1.5 s for 4 sequences; the channels-last port 1.7x).
* port: the same job on the hand-written Flax port (``genomics.models.BPNet``, channels
  last) with the same weights: what the conversion costs.
* tangermeme: ``deep_lift_shap(CountWrapper(model), ..., hypothetical=True)`` at
  ``batch_size`` = our pairs in flight (batch x K).
* Captum: ``DeepLiftShap(CountWrapper(model)).attribute`` one sequence at a time (its
  baselines are shared by the inputs of a call, so per-sequence shuffles take one call
  per sequence: K pairs in flight), contributions only.

Checks: our summation residual, and max-relative differences of the hypothetical scores
(tangermeme) and of the contributions (Captum) against ours, in float32.

Usage::

    python benchmarks/bench_torch_bpnet.py                   # 1 kb, N = 8, K = 20, 5 rounds
    python benchmarks/bench_torch_bpnet.py --length 200 --n 2 --shuffles 3 --rounds 1 \\
        --filters 8 --layers 2 --batch 2                     # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import jax
import numpy as np
import torch
from _models import cpu_name  # benchmarks/, the script's folder, is on sys.path
from bench_bpnet import max_rel, trimming_for
from bpnetlite.bpnet import BPNet as TorchBPNet
from bpnetlite.bpnet import CountWrapper
from captum.attr import DeepLiftShap
from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls

import deepliftjax
from deepliftjax.genomics import targets
from deepliftjax.genomics.models import BPNet, bpnet_params_from_torch
from deepliftjax.torch import from_torch


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def setup(args) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(args.seed)
    tm = TorchBPNet(args.filters, args.layers, n_outputs=2, n_control_tracks=2, verbose=False)
    tm.trimming = trimming_for(args.length, args.layers, None)
    tm = tm.float().eval()
    rng = np.random.default_rng(args.seed)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (args.n, args.length))]  # (N, L, 4)
    ctl = rng.poisson(1.0, (args.n, args.length, 2)).astype(np.float32)
    shuffle = jax.jit(
        jax.vmap(lambda k, s: deepliftjax.dinuc_shuffle(k, s, num_shuffles=args.shuffles))
    )
    refs = np.asarray(shuffle(jax.random.split(jax.random.key(args.seed), args.n), x))
    return tm, {"x": x, "ctl": ctl, "refs": refs}


def build_from_torch(tm, d, args):
    """jit(vmap) DeepLIFT-SHAP of the converted module, channels first."""
    x0, c0 = d["x"][0].T, d["ctl"][0].T
    fn, params = from_torch(tm, (torch.tensor(x0), torch.tensor(c0)))

    def one(p, s, c, refs):
        counts = lambda s_, c_: fn(p, s_, c_)[1][0]  # noqa: E731 - bpnet-lite's counts output
        out = deepliftjax.deeplift_shap(
            counts, refs, alphabet_axis=0, hypothetical=True, reference_chunk_size=None
        )(s, c)
        return out.contributions, out.hypothetical

    run = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))
    xs = np.ascontiguousarray(d["x"].transpose(0, 2, 1))
    cs = np.ascontiguousarray(d["ctl"].transpose(0, 2, 1))
    rs = np.ascontiguousarray(d["refs"].transpose(0, 1, 3, 2))
    batches = [
        (xs[i : i + args.batch], cs[i : i + args.batch], rs[i : i + args.batch])
        for i in range(0, args.n, args.batch)
    ]

    def call():
        out = jax.block_until_ready([run(params, *b) for b in batches])
        c = np.concatenate([np.asarray(o[0]) for o in out]).transpose(0, 2, 1)
        h = np.concatenate([np.asarray(o[1]) for o in out]).transpose(0, 2, 1)
        return c, h  # channels last, as the others

    return call, (fn, params)


def build_port(tm, d, args):
    """The same job on the hand-written Flax port, channels last."""
    params = bpnet_params_from_torch(tm.state_dict())
    net = BPNet(args.filters, args.layers, 2, 2, trimming=tm.trimming)

    def one(p, s, c, refs):
        model = lambda s_, c_: net.apply(p, s_, c_)  # noqa: E731
        out = deepliftjax.deeplift_shap(
            targets.counts_target(model), refs, hypothetical=True, reference_chunk_size=None
        )
        o = out(s, c)
        return o.contributions, o.hypothetical

    run = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))
    batches = [
        (d["x"][i : i + args.batch], d["ctl"][i : i + args.batch], d["refs"][i : i + args.batch])
        for i in range(0, args.n, args.batch)
    ]

    def call():
        out = jax.block_until_ready([run(params, *b) for b in batches])
        return np.concatenate([np.asarray(o[0]) for o in out]), None

    return call


def torch_inputs(d):
    t = lambda a, axes: torch.from_numpy(np.ascontiguousarray(a.transpose(*axes)))  # noqa: E731
    return t(d["x"], (0, 2, 1)), t(d["ctl"], (0, 2, 1)), t(d["refs"], (0, 1, 3, 2))


def build_tangermeme(tm, d, args):
    x, ctl, refs = torch_inputs(d)
    batch = args.batch * args.shuffles

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = tangermeme_dls(
                CountWrapper(tm),
                x,
                args=(ctl,),
                references=refs,
                batch_size=batch,
                hypothetical=True,
                device="cpu",
            )
        h = h.detach().numpy().transpose(0, 2, 1)
        return h * d["x"], h

    return call


def build_captum(tm, d, args):
    x, ctl, refs = torch_inputs(d)
    explainer = DeepLiftShap(CountWrapper(tm))

    def call():
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(len(x)):
                c = explainer.attribute(
                    x[i : i + 1].clone().requires_grad_(True),
                    baselines=refs[i],
                    target=0,
                    additional_forward_args=(ctl[i : i + 1],),
                )
                out.append(c.detach().numpy()[0].transpose(1, 0))
        return np.stack(out), None

    return call


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--length", type=int, default=1000)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--shuffles", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA uses
    tm, d = setup(args)
    calls = {}
    calls["from_torch"], (fn, params) = build_from_torch(tm, d, args)
    calls["port"] = build_port(tm, d, args)
    calls["tangermeme"] = build_tangermeme(tm, d, args)
    calls["captum"] = build_captum(tm, d, args)
    first, times, outs = {}, {k: [] for k in calls}, {}
    for k, call in calls.items():
        t0 = time.perf_counter()
        outs[k] = call()
        first[k] = time.perf_counter() - t0
        log(f"first call {k}: {first[k]:.1f} s")
    names = list(calls)
    for r in range(args.rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            outs[k] = calls[k]()
            times[k].append(time.perf_counter() - t0)
        log(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in names))
    per_seq = {k: statistics.median(v) / args.n for k, v in times.items()}

    c_ours, h_ours = outs["from_torch"]
    counts = jax.jit(jax.vmap(lambda s, c: fn(params, s, c)[1][0]))
    xs, cs = d["x"].transpose(0, 2, 1), d["ctl"].transpose(0, 2, 1)
    fx = np.asarray(counts(xs, cs))
    k = args.shuffles
    fr = np.stack(
        [
            np.asarray(counts(d["refs"][i].transpose(0, 2, 1), np.repeat(cs[i : i + 1], k, 0)))
            for i in range(args.n)
        ]
    )
    delta = (fx[:, None] - fr).mean(1)
    resid = np.abs(c_ours.reshape(args.n, -1).sum(1) - delta) / np.abs(fx[:, None] - fr).mean(1)
    checks = {
        "residual (ours)": float(resid.max()),
        "ours vs port (contributions)": max_rel(c_ours, outs["port"][0]),
        "ours vs tangermeme (hypothetical)": max_rel(h_ours, outs["tangermeme"][1]),
        "ours vs Captum (contributions)": max_rel(c_ours, outs["captum"][0]),
    }
    print(
        f"### BPNet from PyTorch ({args.filters} filters, {args.layers} layers), "
        f"{args.length} bp, counts head, {k} dinucleotide shuffles\n"
    )
    print(
        f"- cpu: {cpu_name()}; jax {jax.__version__}, torch {torch.__version__} "
        f"on {torch.get_num_threads()} threads"
    )
    print(
        f"- N = {args.n} sequences, float32; ours and the port: {args.batch} sequences per "
        f"jitted call, all {k} references at once (B = {args.batch * k} pairs in flight); "
        f"tangermeme batch_size B; Captum one sequence per call ({k} pairs); median of "
        f"{args.rounds} interleaved rounds after one untimed call each\n"
    )
    print("| method | s/seq | seq/s | time / from_torch | first call s |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        t = per_seq[name]
        ratio = t / per_seq["from_torch"]
        print(f"| {name} | {t:.4g} | {1 / t:.3g} | {ratio:.2f} | {first[name]:.1f} |")
    print()
    for name, v in checks.items():
        print(f"- {name}: {v:.2e}")


if __name__ == "__main__":
    main()
