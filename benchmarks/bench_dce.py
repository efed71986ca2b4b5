"""Dead-code elimination before interpretation: what it drops and what it costs (issue 25).

The interpreter's walk (``deepliftjax._walk``) evaluates only equations whose results are
read (or that have effects), in every nested jaxpr. For models converted from PyTorch this
is what makes them attributable at all: torchax's max pooling also computes argmax indices
through a ``reduce_window`` with a custom reducer that nothing reads and that has no
DeepLIFT rule. Measured: equations in the model's jaxpr (recursively), how many are dead,
the time of the liveness pass, and the time to trace ``deeplift`` with it and (where it can
run) without it.

Run: ``python benchmarks/bench_dce.py`` (needs the torch extra).
"""

from __future__ import annotations

import statistics
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F
from torch import nn

import deepliftjax
from deepliftjax import _walk
from deepliftjax.torch import from_torch

sys.path.insert(0, "tests")


def equations(jaxpr):
    """All equations, nested ones included, and the dead ones at each level."""
    total = dead = 0
    stack = [jaxpr]
    while stack:
        j = stack.pop()
        live = _walk.live_equations(j)
        total += len(j.eqns)
        dead += live.count(False)
        for e in j.eqns:
            for v in e.params.values():
                inner = getattr(v, "jaxpr", v)
                if hasattr(inner, "eqns"):
                    stack.append(inner)
    return total, dead


def median_time(fn, repeats: int = 5) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 32, 9, padding=4), nn.Conv1d(32, 32, 5, padding=2)
        self.fc = nn.Linear(32 * 25, 1)

    def forward(self, x):
        h = F.max_pool1d(F.relu(self.c1(x)), 4)
        return self.fc(F.max_pool1d(F.relu(self.c2(h)), 4).flatten(1))


def measure(name, module, example):
    fn, params = from_torch(module, example)
    x = jnp.asarray(example.numpy())
    f = lambda s: fn(params, s).reshape(-1)[0]  # noqa: E731
    jaxpr = jax.make_jaxpr(f)(x).jaxpr
    total, dead = equations(jaxpr)
    t_live = median_time(lambda: _walk.live_equations(jaxpr), 20)
    trace = lambda: jax.make_jaxpr(deepliftjax.deeplift(f, jnp.zeros_like(x)))(x)  # noqa: E731
    trace()
    t_with = median_time(trace)
    everything = lambda j: [True] * len(j.eqns)  # noqa: E731
    with mock.patch.object(_walk, "live_equations", everything):
        try:
            trace()
            t_without = f"{median_time(trace):.3f} s"
        except deepliftjax.DeepLiftError as e:
            t_without = "DeepLiftError: " + str(e).splitlines()[0][:60]
    print(
        f"| {name} | {total} | {dead} | {t_live * 1e3:.2f} ms | {t_with:.3f} s | {t_without} |",
        flush=True,
    )


def main() -> None:
    from test_torch import ResNet18

    torch.manual_seed(0)
    print(f"jax {jax.__version__}, torch {torch.__version__}\n")
    print("| model | equations (nested) | dead | liveness pass | trace deeplift | without DCE |")
    print("|---|---:|---:|---:|---:|---|")
    measure("CNN with F.relu / F.max_pool1d, 400 bp", CNN().eval(), torch.randn(4, 400))
    measure("ResNet-18, 64 x 64", ResNet18().eval(), torch.randn(3, 64, 64))


if __name__ == "__main__":
    main()
