"""The job runner: chunks without retracing, devices, files, resume, errors."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax._errors import DeepLiftError
from deepliftjax._runner import attribute
from deepliftjax._shap import deeplift_shap
from deepliftjax._shuffle import dinuc_shuffle

L = 10
W = np.random.default_rng(0).normal(size=(L, 4, 3)).astype(np.float32) * 0.4
TRACES = {"n": 0}


def model(x):
    """One example (L, 4) -> 3 outputs."""
    TRACES["n"] += 1
    return jnp.tanh(jnp.einsum("la,lao->o", x, W) + 0.1)


def _x(n, seed=1):
    return np.eye(4, dtype=np.float32)[np.random.default_rng(seed).integers(0, 4, (n, L))]


def _direct(xs, refs, t):
    f = lambda x: model(x)[t]
    return np.asarray(jax.jit(jax.vmap(lambda x: deeplift_shap(f, refs)(x)))(xs))


def test_matches_direct_and_compiles_once_across_chunks():
    xs = _x(23)
    refs = np.random.default_rng(2).uniform(size=(5, L, 4)).astype(np.float32)

    def traced_run(n):
        count = [0]

        def fresh_model(x):  # a new function each run: no trace caches shared between runs
            count[0] += 1
            return model(x)

        res = attribute(
            fresh_model, xs[:n], refs, target=1, chunk_size=8, hypothetical=True, progress=False
        )
        return res, count[0]

    one, per_run = traced_run(4)  # one chunk
    res, traces = traced_run(23)  # three chunks, the last one padded
    assert traces == per_run <= 3  # no retracing per chunk
    np.testing.assert_allclose(res.contributions, _direct(xs, refs, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.contributions, res.contributions[:4], rtol=1e-6, atol=1e-7)
    assert res.contributions.shape == res.hypothetical.shape == (23, L, 4)
    assert res.residuals.shape == (23,) and float(res.residuals.max()) < 1e-5
    np.testing.assert_allclose(
        (res.hypothetical * xs).sum(-1), res.contributions.sum(-1), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(res.projected, res.hypothetical * xs)


@pytest.mark.slow  # ~45 s: every reference/target form compiles its own job
def test_reference_and_target_forms():
    xs = _x(9)
    rng = np.random.default_rng(3)
    per_ex = rng.uniform(size=(9, 2, L, 4)).astype(np.float32)
    targets = np.arange(9) % 3
    res = attribute(model, xs, per_ex, target=targets, chunk_size=4, progress=False)
    for i in (0, 5, 8):
        f = lambda x, t=targets[i]: model(x)[t]
        want = deeplift_shap(f, per_ex[i])(xs[i])
        np.testing.assert_allclose(res.contributions[i], want, rtol=1e-5, atol=1e-6)
    # one reference of the example's shape == (1, ...) shared; None == zeros
    single = attribute(model, xs, per_ex[0, 0], target=0, chunk_size=4, progress=False)
    np.testing.assert_allclose(
        single.contributions, _direct(xs, per_ex[0, :1], 0), rtol=1e-5, atol=1e-6
    )
    zeros = attribute(model, xs, None, target=lambda y: y.sum(), chunk_size=4, progress=False)
    f = lambda x: model(x).sum()
    want = jax.jit(jax.vmap(lambda x: deeplift_shap(f, jnp.zeros((1, L, 4)))(x)))(xs)
    np.testing.assert_allclose(zeros.contributions, want, rtol=1e-5, atol=1e-6)
    # generated references are keyed per example: same result whatever the chunking,
    # and for batches streamed from an iterator
    gen = functools.partial(dinuc_shuffle, num_shuffles=3)
    a = attribute(model, xs, gen, target=2, key=jax.random.key(7), chunk_size=4, progress=False)
    b = attribute(
        model,
        iter([xs[:2], xs[2:7], xs[7:]]),
        gen,
        target=2,
        key=jax.random.key(7),
        chunk_size=3,
        progress=False,
    )
    np.testing.assert_allclose(a.contributions, b.contributions, rtol=1e-6, atol=1e-7)
    c = attribute(model, xs, gen, target=2, key=jax.random.key(8), chunk_size=4, progress=False)
    assert not np.allclose(a.contributions, c.contributions)


def test_resume_after_interruption_recomputes_nothing(tmp_path):
    xs = _x(40, seed=4)
    gen = functools.partial(dinuc_shuffle, num_shuffles=3)
    kw = dict(target=0, chunk_size=8, hypothetical=True, progress=False)
    clean = attribute(model, xs, gen, out_dir=tmp_path / "clean", **kw)
    done = []

    def crash_after_two(c, _):
        done.append(c)
        if len(done) == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        attribute(model, xs, gen, out_dir=tmp_path / "job", callback=crash_after_two, **kw)
    assert sorted(os.listdir(tmp_path / "job" / "chunks")) == [
        "chunk_000000.npz",
        "chunk_000001.npz",
    ]
    again = []
    res = attribute(
        model, xs, gen, out_dir=tmp_path / "job", callback=lambda c, _: again.append(c), **kw
    )
    assert again == [2, 3, 4]  # chunks 0 and 1 were not recomputed
    for name in ("contributions", "hypothetical", "residuals"):
        a = (tmp_path / "clean" / f"{name}.npy").read_bytes()
        b = (tmp_path / "job" / f"{name}.npy").read_bytes()
        assert a == b, name
    np.testing.assert_array_equal(res.contributions, clean.contributions)
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_examples"] == 40
    # a finished job is returned from disk; a different job in the same folder is refused
    third = []
    attribute(model, xs, gen, out_dir=tmp_path / "job", callback=lambda c, _: third.append(c), **kw)
    assert third == []
    with pytest.raises(DeepLiftError, match="different job.*chunk_size"):
        attribute(model, xs, gen, out_dir=tmp_path / "job", **{**kw, "chunk_size": 16})
    attribute(
        model,
        xs,
        gen,
        out_dir=tmp_path / "job",
        resume=False,
        callback=lambda c, _: third.append(c),
        **kw,
    )
    assert third == [0, 1, 2, 3, 4]


def test_killed_subprocess_resumes(tmp_path):
    """A process killed hard (os._exit) mid-job: the rerun only computes missing chunks."""
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_runner import model, _x
        from deepliftjax._runner import attribute
        done = []
        def cb(c, _):
            done.append(c)
            if sys.argv[1] == "kill" and len(done) == 3:
                os._exit(9)
        attribute(model, _x(30), np.zeros((1, 10, 4), np.float32), target=1, chunk_size=8,
                  out_dir={str(tmp_path)!r}, progress=False, callback=cb)
        print("computed", done)
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    first = subprocess.run(
        [sys.executable, "-c", script, "kill"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 9, first.stderr
    second = subprocess.run(
        [sys.executable, "-c", script, "run"], env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert "computed [3]" in second.stdout
    want = _direct(_x(30), np.zeros((1, L, 4), np.float32), 1)
    np.testing.assert_allclose(np.load(tmp_path / "contributions.npy"), want, rtol=1e-5, atol=1e-6)


def test_sharding_over_four_host_devices_matches_one(tmp_path):
    script = textwrap.dedent(f"""
        import sys, functools, numpy as np, jax
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_runner import model, _x
        from deepliftjax._runner import attribute
        from deepliftjax._shuffle import dinuc_shuffle
        assert jax.local_device_count() == 4, jax.devices()
        gen = functools.partial(dinuc_shuffle, num_shuffles=3)
        kw = dict(target=2, chunk_size=6, hypothetical=True, progress=False)
        seen = []
        many = attribute(model, _x(21), gen, callback=lambda c, r: seen.append(c), **kw)
        one = attribute(model, _x(21), gen, devices=jax.devices()[:1], **kw)
        np.save({str(tmp_path / "many.npy")!r}, many.contributions)
        np.save({str(tmp_path / "one.npy")!r}, one.contributions)
        print("chunks", len(seen))
    """)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "chunks 3" in out.stdout  # chunk 6 rounded up to 8 = 2 per device
    many, one = np.load(tmp_path / "many.npy"), np.load(tmp_path / "one.npy")
    assert many.shape == (21, L, 4)
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-7)


def _iter_empty():
    return iter([np.zeros((0, L, 4), np.float32)] * 2)


def _no_refs(key, x):
    return jnp.zeros((0, *x.shape), x.dtype)


# case -> (positional args after fn (a function: iterators are used up), keyword args, regex)
RUNNER_ERRORS = {
    "not a scalar": (lambda: (_x(4),), {}, r"returns shape \(3,\) per example, not a scalar"),
    "target index": (lambda: (_x(4),), {"target": 5}, r"target=5 is not an output index"),
    "per-example target": (
        lambda: (_x(4),),
        {"target": np.zeros(3, int)},
        r"per-example target.*\(4,\)",
    ),
    "target range": (
        lambda: (_x(4),),
        {"target": np.array([0, 1, 2, 3])},
        r"target values must lie",
    ),
    "target fn": (lambda: (_x(4),), {"target": lambda y: y[:2]}, r"target\(output\) must return"),
    "reference shape": (
        lambda: (_x(4), np.zeros((2, L, 5))),
        {"target": 0},
        r"references must be shaped",
    ),
    "zero shared references": (
        lambda: (_x(4), np.zeros((0, L, 4), np.float32)),
        {"target": 0},
        r"hold no references \(K = 0\)",
    ),
    "zero per-example references": (
        lambda: (_x(4), np.zeros((4, 0, L, 4), np.float32)),
        {"target": 0},
        r"hold no references \(K = 0\)",
    ),
    "zero generated references": (
        lambda: (_x(4), _no_refs),
        {"target": 0},
        r"no references: K = 0",
    ),
    "per-example references, wrong N": (
        lambda: (_x(4), np.zeros((3, 1, L, 4), np.float32)),
        {"target": 0},
        r"same N",
    ),
    "chunk_size 0": (
        lambda: (_x(4),),
        {"target": 0, "chunk_size": 0},
        r"chunk_size must be an int >= 1",
    ),
    "chunk_size -1": (
        lambda: (_x(4),),
        {"target": 0, "chunk_size": -1},
        r"chunk_size must be an int",
    ),
    "chunk_size 2.5": (
        lambda: (_x(4),),
        {"target": 0, "chunk_size": 2.5},
        r"chunk_size must be an int",
    ),
    "reference_chunk_size 0": (
        lambda: (_x(4),),
        {"target": 0, "reference_chunk_size": 0},
        r"reference_chunk_size must be an int >= 1 or None, got 0",
    ),
    "no devices": (lambda: (_x(4),), {"target": 0, "devices": []}, r"devices is an empty list"),
    "no inputs": (
        lambda: (np.zeros((0, L, 4), np.float32),),
        {"target": 0},
        r"non-empty \(N, ...\)",
    ),
    "empty iterable": (lambda: (iter([]),), {"target": 0}, r"empty iterable"),
    "empty batches": (lambda: (_iter_empty(),), {"target": 0}, r"no examples"),
    "scalar batch": (
        lambda: (iter([np.float32(1.0)]),),
        {"target": 0},
        r"each batch must be \(B, ...\)",
    ),
    "not an array": (lambda: (3.0,), {"target": 0}, r"array or an iterable"),
    "dtype": (lambda: (_x(4).astype(complex),), {"target": 0}, r"numeric"),
    "iterable with per-example target": (
        lambda: (iter([_x(4)]),),
        {"target": np.zeros(4, int)},
        r"needs array inputs",
    ),
    "model fails": (
        lambda: (_x(4),),
        {"target": 0, "fn": lambda x: x @ np.ones(3)},
        r"model failed",
    ),
    "check": (lambda: (_x(4),), {"target": 0, "check": "loud"}, r"check='loud' is not one of"),
}


@pytest.mark.parametrize("case", sorted(RUNNER_ERRORS))
def test_errors_name_the_problem_and_the_fix(case):
    args, kwargs, message = RUNNER_ERRORS[case]
    kwargs = dict(kwargs)
    fn = kwargs.pop("fn", model)
    with pytest.raises(DeepLiftError, match=message) as e:
        attribute(fn, *args(), progress=False, **kwargs)
    assert "\nHint: " in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)


def test_residual_warning():
    with pytest.warns(UserWarning, match=r"4 example\(s\) break DeepLIFT's summation"):
        attribute(model, _x(4), target=0, residual_threshold=-1.0, progress=False)
