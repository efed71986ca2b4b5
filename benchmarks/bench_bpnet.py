"""DeepLIFT-SHAP throughput on BPNet: deepliftjax against its JAX floor, tangermeme and bpnet-lite.

Model: bpnet-lite's ``BPNet`` (default 64 filters, 8 dilated residual layers, 2 stranded
outputs, 2 control tracks), float32, torch's default initialisation (seed ``--seed``), and
the same weights in :class:`deepliftjax.genomics.models.BPNet` through
``bpnet_params_from_torch``. The output window is cropped by ``--trimming`` per side
(default: bpnet-lite's, 557 for 8 layers, capped at a quarter of the length, so 1,000 bp
keeps a 500-bp window and 2,000 bp the field's 1,000-bp one).

Job: N random one-hot sequences (and Poisson(1) control tracks), K dinucleotide shuffles
per sequence drawn once with :func:`deepliftjax.dinuc_shuffle`; every method gets these
same references. Targets, as in tests/test_bpnet_parity.py:

* counts: the predicted log counts (``targets.counts_target``; bpnet-lite's ``CountWrapper``).
* profile: ``sum(softmax(z) * z)`` of the mean-normalised profile logits, bpnet-lite's
  convention (``targets.profile_shap(weighting="bpnet-lite")``; bpnet-lite's
  ``ProfileWrapper``, whose ``logits * softmax`` bpnet-lite's wrapper registers as a
  nonlinearity).

Methods, interleaved round by round (the order rotated every round), medians of the
timed rounds; JAX compilation (the first call) and the peers' calibration calls come
first, untimed:

* ours: ``jax.jit(jax.vmap(...))`` over ``--batch`` sequences of
  ``deepliftjax.deeplift_shap(counts_target(model), refs, reference_chunk_size=...,
  hypothetical=True)`` (the profile head: ``targets.profile_shap``, which pulls the
  weights back through ``deeplift_vjp`` in the same chunks), the N sequences in N / batch
  calls. ``--batch`` x ``--ref-chunk`` (sequence, reference) pairs are in flight at once.
  The default chunk is all K references, so ``deeplift_shap`` runs no ``lax.scan`` over
  chunks (on CPU a scan was measured up to 1.5x slower; ``--ref-chunk 10`` times it);
  ``profile_shap`` maps its references with ``lax.map(batch_size=chunk)``, a scan even
  of one step.
* JAX floors: ``jax.grad(target)`` at the *input*, evaluated once per (sequence,
  reference) pair (the input is handed in tiled K times, so nothing can share the work
  across references), times ``(x - ref)``, averaged over references: K x N gradients,
  one forward and one backward pass each, in the same batches and reference chunks as
  ours (``lax.scan`` over the chunks where there is more than one). Two ways: "floor",
  one batched gradient per chunk (``jit`` of ``grad`` of the target summed over the
  batch x chunk pairs, the usual way to batch a gradient), and "floor (vmap)", written
  per example as ours is (``jit(vmap)`` over the sequences of ``vmap(grad)`` over the
  references); the ratio targets are judged against the faster of the two.
* tangermeme's ``deep_lift_shap`` and bpnet-lite's ``deep_lift_shap`` (a wrapper of it
  that registers bpnet-lite's nonlinearities) on the torch model the JAX weights came
  from, ``references=`` the same shuffles, ``hypothetical=True``, on ``--threads`` torch
  threads (default: the cores this process may use, as XLA): at batch size = our pairs
  in flight, and at the best of ``--peer-batches`` and that (picked by one timed call
  per size on ``--calib-n`` sequences before the rounds). Their ``batch_size`` counts
  (sequence, reference) pairs; they run input and reference as one torch batch of
  2 x batch_size.

Checks, so that no method is fast by being wrong: our float32 summation residual on the
last round's outputs; our float32 hypothetical scores against the peers' float32 ones
from the same round, all N sequences; the same in float64 on ``--check-n`` sequences
(ours under jax x64, the peers on a double copy of the torch model), where the
definitions agree to ~1e-10 (tests/test_bpnet_parity.py). The report explains the
tolerances; the script exits with an error if a check fails.

Usage::

    python benchmarks/bench_bpnet.py                      # 1 kb and 2 kb, both heads, N = 64
    python benchmarks/bench_bpnet.py --lengths 200 --n 4 --shuffles 3 --rounds 2 \\
        --filters 8 --layers 2 --batch 2 --ref-chunk 2 --peer-batches 4 --calib-n 2  # smoke
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _models import cpu_name  # benchmarks/, the script's folder, is on sys.path
from bpnetlite.attribute import deep_lift_shap as bpnet_lite_dls
from bpnetlite.bpnet import BPNet as TorchBPNet
from bpnetlite.bpnet import CountWrapper, ProfileWrapper
from jax import lax
from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls

import deepliftjax
from deepliftjax.genomics import targets
from deepliftjax.genomics.models import BPNet, bpnet_params_from_torch, default_trimming

HEADS = ("counts", "profile")
PEERS = {"tangermeme": tangermeme_dls, "bpnet-lite": bpnet_lite_dls}
WRAPPERS = {"counts": CountWrapper, "profile": ProfileWrapper}
FLOOR_TARGET = 1.2  # ours / JAX floor time, at most
PEER_TARGET = 2.0  # tangermeme / ours time at equal batch size, at least


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- setup
def trimming_for(length: int, layers: int, trimming: int | None) -> int:
    if trimming is not None:
        return trimming
    return min(default_trimming(layers), length // 4)


def make_torch_model(args) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    tm = TorchBPNet(
        n_filters=args.filters,
        n_layers=args.layers,
        n_outputs=2,
        n_control_tracks=args.control_tracks,
        verbose=False,
    )
    return tm.float().eval()


def make_data(length: int, args) -> dict[str, np.ndarray]:
    """One-hot sequences (N, L, 4), control tracks (N, L, C), shuffles (N, K, L, 4)."""
    rng = np.random.default_rng(args.seed + length)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (args.n, length))]
    ctl = rng.poisson(1.0, (args.n, length, args.control_tracks)).astype(np.float32)
    shuffle = jax.jit(
        jax.vmap(lambda k, s: deepliftjax.dinuc_shuffle(k, s, num_shuffles=args.shuffles))
    )
    keys = jax.random.split(jax.random.key(args.seed + 1), args.n)
    refs = np.asarray(shuffle(keys, jnp.asarray(x)))
    return {"x": x, "ctl": ctl, "refs": refs}


def jax_model(net: BPNet, params, control_tracks: int) -> Callable:
    if control_tracks:
        return lambda s, c: net.apply(params, s, c)
    return lambda s, c: net.apply(params, s)


def jax_target(head: str, model: Callable) -> Callable:
    if head == "counts":
        return targets.counts_target(model)
    return targets.profile_target(model)


# ----------------------------------------------------------------------------- methods
def build_ours(net, head, args) -> Callable:
    def one(params, x, c, refs):
        model = jax_model(net, params, args.control_tracks)
        if head == "counts":
            fn = deepliftjax.deeplift_shap(
                targets.counts_target(model),
                refs,
                reference_chunk_size=args.ref_chunk,
                hypothetical=True,
            )
        else:
            fn = targets.profile_shap(
                model,
                refs,
                weighting=args.profile_weighting,
                reference_chunk_size=args.ref_chunk,
                hypothetical=True,
            )
        s = fn(x, c)
        return s.contributions, s.hypothetical

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def _over_chunks(part, x, x_tiled, refs, chunk: int, axis: int):
    """mean_k of part(x_tiled chunk, refs chunk), summed chunk by chunk along ``axis`` (the
    reference axis): the tail chunk first, full chunks under ``lax.scan``."""
    k = refs.shape[axis]
    n_full, rest = divmod(k, chunk)
    acc = jnp.zeros_like(x)
    if rest:
        tail = lambda a: lax.slice_in_dim(a, n_full * chunk, k, axis=axis)  # noqa: E731
        acc = acc + part(tail(x_tiled), tail(refs))
    if n_full == 1:
        head = lambda a: lax.slice_in_dim(a, 0, chunk, axis=axis)  # noqa: E731
        acc = acc + part(head(x_tiled), head(refs))
    elif n_full > 1:

        def body(a, i):
            cut = lambda v: lax.dynamic_slice_in_dim(v, i * chunk, chunk, axis=axis)  # noqa: E731
            return a + part(cut(x_tiled), cut(refs)), None

        acc = lax.scan(body, acc, jnp.arange(n_full))[0]
    return acc / k


def build_floor(net, head, args) -> Callable:
    """The floor: mean_k grad(T)(x) * (x - r_k) for a batch of sequences, the gradient taken
    once per (sequence, reference) pair (x tiled K times) as one batched gradient,
    ``jax.grad`` of the target summed over the chunk's batch x chunk pairs."""

    def floor(params, x, c, x_tiled, refs):  # x (B, L, 4), x_tiled and refs (B, K, L, 4)
        t = jax_target(head, jax_model(net, params, args.control_tracks))

        def part(xs, rs):  # (B, chunk, L, 4)
            b, ch = xs.shape[:2]
            flat = xs.reshape(b * ch, *xs.shape[2:])
            cs = jnp.repeat(c, ch, axis=0)
            g = jax.grad(lambda v: jnp.sum(jax.vmap(t)(v, cs)))(flat).reshape(xs.shape)
            return jnp.sum(g * (x[:, None] - rs), axis=1)

        return _over_chunks(part, x, x_tiled, refs, min(args.ref_chunk, refs.shape[1]), 1)

    return jax.jit(floor)


def build_floor_vmap(net, head, args) -> Callable:
    """The same as ``jit(vmap(...))`` over the sequences of ``vmap(grad(T))`` over each
    chunk of references: ours' layout, written per example."""

    def one(params, x, c, x_tiled, refs):  # x (L, 4), x_tiled and refs (K, L, 4)
        grad = jax.grad(jax_target(head, jax_model(net, params, args.control_tracks)))

        def part(xs, rs):
            return jnp.sum(jax.vmap(grad, in_axes=(0, None))(xs, c) * (x - rs), axis=0)

        return _over_chunks(part, x, x_tiled, refs, min(args.ref_chunk, refs.shape[0]), 0)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))


def jax_runner(fn, params, batches) -> Callable[[], list]:
    def run():
        out = [fn(params, *b) for b in batches]
        return jax.block_until_ready(out)

    return run


def peer_runner(peer: str, head: str, tm, tdata: dict, batch: int, n: int | None = None):
    """``peer``'s deep_lift_shap of the first ``n`` sequences, hypothetical scores."""
    fn, wrapper = PEERS[peer], WRAPPERS[head](tm)
    x, refs = tdata["x"][:n], tdata["refs"][:n]
    extra = None if tdata["ctl"] is None else (tdata["ctl"][:n],)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(
                wrapper,
                x,
                args=extra,
                references=refs,
                batch_size=batch,
                hypothetical=True,
                device="cpu",
            )

    return run


def pairs_in_flight(args) -> int:
    """Our (sequence, reference) pairs per step: batch x reference chunk."""
    return args.batch * min(args.ref_chunk, args.shuffles)


def timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- one config
def run_config(length: int, head: str, tm, d: dict[str, np.ndarray], args) -> dict:
    t_start = time.perf_counter()
    trim = trimming_for(length, args.layers, args.trimming)
    tm.trimming = trim
    net = BPNet(
        n_filters=args.filters,
        n_layers=args.layers,
        n_outputs=2,
        n_control_tracks=args.control_tracks,
        trimming=trim,
    )
    params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float32)
    n, b, k = args.n, args.batch, args.shuffles
    pairs = pairs_in_flight(args)

    xj, cj, rj = jnp.asarray(d["x"]), jnp.asarray(d["ctl"]), jnp.asarray(d["refs"])
    xt = jnp.asarray(np.repeat(d["x"][:, None], k, axis=1))
    sl = [slice(i, i + b) for i in range(0, n, b)]
    ours_batches = [(xj[s], cj[s], rj[s]) for s in sl]
    floor_batches = [(xj[s], cj[s], xt[s], rj[s]) for s in sl]
    tdata = torch_data(d, torch.float32)

    calls: dict[str, Callable] = {
        "ours": jax_runner(build_ours(net, head, args), params, ours_batches),
        "floor": jax_runner(build_floor(net, head, args), params, floor_batches),
        "floor_vmap": jax_runner(build_floor_vmap(net, head, args), params, floor_batches),
    }
    first = {}
    for m in ("ours", "floor", "floor_vmap"):
        first[m], _ = timed(calls[m])  # compilation included
        for _ in range(args.warmup - 1):
            calls[m]()
    log(
        f"[{length} bp, {head}] compile+first call: ours {first['ours']:.1f} s, "
        f"floor {first['floor']:.1f} s, floor (vmap) {first['floor_vmap']:.1f} s"
    )

    # peers: warm up, then pick the best batch size on a subset of the sequences
    best: dict[str, int] = {}
    calib: dict[str, dict[int, float]] = {}
    cn = min(args.calib_n, n)
    for peer in args.peers:
        peer_runner(peer, head, tm, tdata, pairs, n=min(2, n))()  # warm-up
        sizes = sorted(set(args.peer_batches) | {pairs})
        calib[peer] = {}
        for bs in sizes:
            t, _ = timed(peer_runner(peer, head, tm, tdata, bs, n=cn))
            calib[peer][bs] = t / cn
        best[peer] = min(calib[peer], key=calib[peer].get)
        log(
            f"[{length} bp, {head}] {peer} calibration on {cn} sequences, s/seq by batch: "
            + ", ".join(f"{bs}: {v:.3g}" for bs, v in calib[peer].items())
            + f" -> best {best[peer]}"
        )
        calls[f"{peer}@equal"] = peer_runner(peer, head, tm, tdata, pairs)
        if best[peer] != pairs:
            calls[f"{peer}@best"] = peer_runner(peer, head, tm, tdata, best[peer])
        for _ in range(args.warmup - 1):  # the calibration calls warmed it up
            calls[f"{peer}@equal"]()

    names = list(calls)
    times: dict[str, list[float]] = {m: [] for m in names}
    last: dict[str, object] = {}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for m in order:
            t, last[m] = timed(calls[m])
            times[m].append(t)
        log(
            f"[{length} bp, {head}] round {r + 1}/{args.rounds}: "
            + "  ".join(f"{m} {times[m][-1]:.2f}s" for m in names)
        )
    med = {m: statistics.median(v) / n for m, v in times.items()}  # s per sequence
    for peer in args.peers:
        if f"{peer}@best" not in med:
            med[f"{peer}@best"] = med[f"{peer}@equal"]

    checks = check_outputs(net, params, tm, head, d, last, args)
    log(f"[{length} bp, {head}] done in {(time.perf_counter() - t_start) / 60:.1f} min")
    return {
        "length": length,
        "head": head,
        "trim": trim,
        "pairs": pairs,
        "best": best,
        "calib": calib,
        "first": first,
        "med": med,
        "rounds": {m: len(v) for m, v in times.items()},
        "checks": checks,
    }


# ----------------------------------------------------------------------------- checks
def torch_data(d: dict[str, np.ndarray], dtype, n: int | None = None) -> dict:
    """Channels-first torch tensors of the first ``n`` sequences."""
    conv = lambda a, axes: torch.from_numpy(a[:n].transpose(*axes).copy()).to(dtype)  # noqa: E731
    return {
        "x": conv(d["x"], (0, 2, 1)),
        "ctl": conv(d["ctl"], (0, 2, 1)) if d["ctl"].shape[-1] else None,
        "refs": conv(d["refs"], (0, 1, 3, 2)),
    }


def max_rel(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def l2_rel(a, b) -> float:
    """||a - b|| / ||b|| over all entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_outputs(net, params, tm, head, d, last, args) -> dict:
    """Residual and agreement with the peers of the last round's (float32) outputs, and
    float64 parity with the peers on the first ``--check-n`` sequences."""
    contrib = np.concatenate([np.asarray(c) for c, _ in last["ours"]])
    hyp = np.concatenate([np.asarray(h) for _, h in last["ours"]])
    t = jax_target(head, jax_model(net, params, args.control_tracks))
    deltas = jax.jit(
        jax.vmap(lambda x, c, refs: t(x, c) - jax.vmap(t, in_axes=(0, None))(refs, c))
    )(jnp.asarray(d["x"]), jnp.asarray(d["ctl"]), jnp.asarray(d["refs"]))
    deltas = np.asarray(deltas, np.float64)  # (N, K)
    resid = np.abs(contrib.astype(np.float64).sum((1, 2)) - deltas.mean(1))
    scale = np.maximum(np.abs(deltas).mean(1), 1e-30)
    theirs32 = {p: last[f"{p}@equal"].detach().numpy().transpose(0, 2, 1) for p in args.peers}
    out = {
        "resid_abs": float(resid.max()),
        "resid_rel": float((resid / scale).max()),
        "delta_scale": float(np.median(scale)),
        "f32": {p: max_rel(hyp, theirs32[p]) for p in args.peers},
        "f32_l2": {p: l2_rel(hyp, theirs32[p]) for p in args.peers},
        # the two floors compute the same numbers; a cheap check that they did the work
        "floor_agree": max_rel(
            np.concatenate([np.asarray(v) for v in last["floor"]]),
            np.concatenate([np.asarray(v) for v in last["floor_vmap"]]),
        ),
    }
    # float64: the same code at the first check_n sequences, against the peers in double
    cn = min(args.check_n, args.n)
    tm64 = copy.deepcopy(tm).double()
    with jax.enable_x64(True):
        params64 = bpnet_params_from_torch(tm64.state_dict(), dtype=jnp.float64)
        fn = build_ours(net, head, args)
        inputs = [jnp.asarray(d[k][:cn], jnp.float64) for k in ("x", "ctl", "refs")]
        hyp64 = np.asarray(fn(params64, *inputs)[1])
        # profile logits that barely change (|Δz| < 1e-6): there bpnet-lite's rule falls
        # back to a gradient, which differs from ours (see the report)
        out["tiny_dz"] = 0
        if head == "profile":
            model64 = jax_model(net, params64, args.control_tracks)
            z = lambda s, c: targets.mean_normalize(model64(s, c)[0])  # noqa: E731
            dz = jax.jit(
                jax.vmap(lambda x, c, rr: z(x, c) - jax.vmap(z, in_axes=(0, None))(rr, c))
            )(*inputs)
            out["tiny_dz"] = int((np.abs(np.asarray(dz)) < 1e-6).sum())
    td64 = torch_data(d, torch.float64, cn)
    out["f64"], out["peer32_err"] = {}, {}
    for p in args.peers:
        theirs64 = peer_runner(p, head, tm64, td64, pairs_in_flight(args))()
        out["f64"][p] = max_rel(hyp64, theirs64.numpy().transpose(0, 2, 1))
        out["peer32_err"][p] = max_rel(theirs32[p][:cn], hyp64)
    out["ours32_err"] = max_rel(hyp[:cn], hyp64)
    return out


def compared(head: str, peer: str, weighting: str) -> bool:
    """Whether ``peer``'s scores should equal ours (the same definition)."""
    if head == "counts":
        return True
    return peer == "bpnet-lite" and weighting == "bpnet-lite"


# ----------------------------------------------------------------------------- report
def machine(args) -> list[str]:
    cpu = cpu_name()

    def ver(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return [
        f"- cpu: {cpu}, {os.cpu_count()} cores, {usable} usable by this process (affinity)",
        f"- python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}, {jax.devices()[0].device_kind}), jaxlib {ver('jaxlib')}, "
        f"flax {ver('flax')}, deepliftjax {deepliftjax.__version__}",
        f"- torch {torch.__version__} on {torch.get_num_threads()} threads "
        f"(interop {torch.get_num_interop_threads()}), tangermeme {ver('tangermeme')}, "
        f"bpnet-lite {ver('bpnet-lite')}",
    ]


def fmt(s: float) -> str:
    return f"{s:.3g}"


def report(rows: list[dict], args, info: list[str], load0, elapsed: float) -> tuple[str, bool]:
    ok = True
    lines = [
        f"## DeepLIFT-SHAP on BPNet ({args.filters} filters, {args.layers} layers), "
        f"{args.shuffles} dinucleotide shuffles per sequence",
        "",
        *info,
        f"- load average before: {' '.join(f'{v:.2f}' for v in load0)}; after: "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; {elapsed / 60:.1f} min in all",
        f"- N = {args.n} sequences, float32; ours and the floors: {args.batch} sequences per "
        f"jitted call, reference_chunk_size {args.ref_chunk}; median of {args.rounds} "
        f"interleaved rounds after {args.warmup} warm-up call(s); profile weighting "
        f"{args.profile_weighting!r}",
        "- floor: jax.grad of the same target at the input, once per (sequence, reference) "
        "pair, times (x - ref), mean over references, in the same chunks: as one batched "
        "gradient (jit of grad of the target summed over the batch x chunk pairs: floor), and "
        "written per example as ours is (jit(vmap) over the sequences of vmap(grad) over the "
        "references: floor (vmap)); the targets below are judged against the faster of the two",
        "",
        "Seconds per sequence (all K references). B = pairs in flight: ours' batch x "
        "reference chunk, and the peers' batch_size at equal batch; best: the fastest of "
        f"{sorted(set(args.peer_batches))} and B.",
        "",
    ]
    peers = list(args.peers)
    head = (
        "| length bp (window) | head | B | ours s/seq | ours seq/s | floor s/seq "
        "| floor (vmap) s/seq | ours / floor | ours / floor (vmap) |"
    )
    sep = "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for p in peers:
        head += f" {p} @B s/seq | {p} best s/seq (batch) | {p} / ours @B | {p} best / ours |"
        sep += "---:|---:|---:|---:|"
    lines += [head, sep]
    for r in rows:
        m = r["med"]
        line = (
            f"| {r['length']:,} ({r['length'] - 2 * r['trim']}) | {r['head']} | {r['pairs']} | "
            f"{fmt(m['ours'])} | {1 / m['ours']:.3g} | {fmt(m['floor'])} | "
            f"{fmt(m['floor_vmap'])} | {m['ours'] / m['floor']:.2f} | "
            f"{m['ours'] / m['floor_vmap']:.2f} |"
        )
        for p in peers:
            line += (
                f" {fmt(m[p + '@equal'])} | {fmt(m[p + '@best'])} ({r['best'][p]}) | "
                f"{m[p + '@equal'] / m['ours']:.2f} | {m[p + '@best'] / m['ours']:.2f} |"
            )
        lines.append(line)

    lines += [""]
    for r in rows:
        m = r["med"]
        rf = m["ours"] / min(m["floor"], m["floor_vmap"])
        s = (
            f"- {r['length']:,} bp, {r['head']}: ours / floor {rf:.2f} "
            f"(target <= {FLOOR_TARGET}: {'met' if rf <= FLOOR_TARGET else 'missed'})"
        )
        if "tangermeme" in peers:
            rt = m["tangermeme@equal"] / m["ours"]
            rb = m["tangermeme@best"] / m["ours"]
            s += (
                f"; tangermeme / ours at B = {r['pairs']}: {rt:.2f} "
                f"(target >= {PEER_TARGET}: {'met' if rt >= PEER_TARGET else 'missed'}), "
                f"at tangermeme's best batch {r['best']['tangermeme']}: {rb:.2f}"
            )
        s += (
            f"; first call (compile) ours {r['first']['ours']:.1f} s, floor "
            f"{r['first']['floor']:.1f} s, floor (vmap) {r['first']['floor_vmap']:.1f} s"
        )
        lines.append(s)

    lines += [
        "",
        "Checks (float32: the last timed round's outputs, all N sequences; float64: the first "
        f"{args.check_n} sequences, ours under jax x64 and the peers on the double torch "
        "model):",
        "",
        "- residual: max |sum(C) - mean_k ΔT_k| / mean_k |ΔT_k| of ours in float32, "
        f"tolerance {args.resid_tol:g}.",
        "- f32 / f64 vs peer: max |ours - theirs| / max |theirs| of the hypothetical scores "
        "(f32 also ||ours - theirs|| / ||theirs||, in brackets). Tolerances: f32 counts "
        f"{args.score_tol:g} (max), f32 profile {args.profile_f32_tol:g} (L2); f64 "
        f"{args.f64_tol:g}, or {args.f64_fallback_tol:g} where a profile logit changes by "
        "less than 1e-6 (tiny Δz, counted over the float64 pairs).",
        "- the two floors agree to 1e-3 (max-relative): both did the work.",
        "- f32 err: float32 scores (ours, and each peer's) against ours in float64 "
        "(max-relative, the float64 sequences), not checked: the float32 rounding of each tool.",
        "",
        "| length bp | head | median mean_k abs ΔT | residual | "
        + " | ".join(f"f32 vs {p}" for p in peers)
        + " | tiny Δz | "
        + " | ".join(f"f64 vs {p}" for p in peers)
        + " | f32 err ours | "
        + " | ".join(f"f32 err {p}" for p in peers)
        + " | pass |",
        "|---:|---|---:|---:|" + "---:|" * (3 * len(peers) + 2) + "---|",
    ]
    for r in rows:
        c = r["checks"]
        good = c["resid_rel"] <= args.resid_tol and c["floor_agree"] <= 1e-3
        f64_tol = args.f64_tol if c["tiny_dz"] == 0 else args.f64_fallback_tol
        f32, f64, err = [], [], []
        for p in peers:
            cells = (
                f"{c['f32'][p]:.1e} [{c['f32_l2'][p]:.1e}]",
                f"{c['f64'][p]:.1e}",
                f"{c['peer32_err'][p]:.1e}",
            )
            if compared(r["head"], p, args.profile_weighting):
                if r["head"] == "counts":
                    good &= c["f32"][p] <= args.score_tol
                else:
                    good &= c["f32_l2"][p] <= args.profile_f32_tol
                good &= c["f64"][p] <= f64_tol
            else:  # not the same definition: shown, not checked
                cells = tuple(f"({v})" for v in cells)
            f32.append(cells[0])
            f64.append(cells[1])
            err.append(cells[2])
        ok &= good
        lines.append(
            f"| {r['length']:,} | {r['head']} | {c['delta_scale']:.3g} | {c['resid_rel']:.1e} | "
            + " | ".join(f32)
            + f" | {c['tiny_dz'] if r['head'] == 'profile' else '-'} | "
            + " | ".join(f64)
            + f" | {c['ours32_err']:.1e} | "
            + " | ".join(err)
            + f" | {'yes' if good else 'NO'} |"
        )
    lines += [
        "",
        "In parentheses, not checked: tangermeme's own deep_lift_shap on bpnet-lite's "
        "ProfileWrapper takes the plain gradient through logits * softmax(logits) (bpnet-lite's "
        "wrapper registers the rescale rule for it), so it differs from bpnet-lite's "
        "convention and ours by definition.",
        "",
        "Profile head: bpnet-lite's weight of logit i is the secant "
        "s_i(x) + z_i(r) (s_i(x) - s_i(r)) / (z_i(x) - z_i(r)), which grows as 1 / Δz_i where "
        "logit i barely changes while the softmax does; in float32 both tools' scores are "
        "then inexact (the f32 err columns), hence the L2 tolerance. Where |Δz_i| < 1e-6 "
        "tangermeme (in bpnet-lite's wrapper) substitutes the gradient of the registered "
        "module, which flows through tangermeme's own Softmax rule; deepliftjax substitutes "
        "the plain derivative at x, so the float64 scores then differ slightly.",
    ]
    return "\n".join(lines), ok


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1000, 2000])
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    p.add_argument("--n", type=int, default=64, help="sequences")
    p.add_argument("--shuffles", type=int, default=20, help="K references per sequence")
    p.add_argument("--batch", type=int, default=4, help="sequences per jitted call (ours)")
    p.add_argument(
        "--ref-chunk",
        type=int,
        default=20,
        help="reference_chunk_size (ours); >= --shuffles: all references at once, no scan",
    )
    p.add_argument(
        "--peer-batches",
        type=int,
        nargs="+",
        default=[8, 16, 32, 64],
        help="batch sizes (pairs) tried for the peers' best",
    )
    p.add_argument("--calib-n", type=int, default=8, help="sequences timed to pick the best")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before the rounds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--control-tracks", type=int, default=2)
    p.add_argument("--trimming", type=int, default=None, help="default: see the docstring")
    p.add_argument("--profile-weighting", default="bpnet-lite", choices=["bpnet-lite", "exact"])
    p.add_argument("--check-n", type=int, default=2, help="sequences checked in float64")
    p.add_argument("--resid-tol", type=float, default=1e-3)
    p.add_argument("--score-tol", type=float, default=1e-4, help="float32, counts head")
    p.add_argument("--profile-f32-tol", type=float, default=0.5, help="float32, profile head")
    p.add_argument("--f64-tol", type=float, default=1e-6)
    p.add_argument(
        "--f64-fallback-tol",
        type=float,
        default=1e-3,
        help="float64, profile head, where a logit changes by < 1e-6",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.n % args.batch:
        p.error(f"--n ({args.n}) must be a multiple of --batch ({args.batch})")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    load0 = os.getloadavg()
    info = machine(args)
    for line in info:
        log(line)
    t0 = time.perf_counter()
    tm = make_torch_model(args)
    rows = []
    for length in args.lengths:
        data = make_data(length, args)
        for head in args.heads:
            rows.append(run_config(length, head, tm, data, args))
    text, ok = report(rows, args, info, load0, time.perf_counter() - t0)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    if not ok:
        sys.exit("a correctness check failed (see the table above)")


if __name__ == "__main__":
    main()
