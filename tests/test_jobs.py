"""Content-addressed batch jobs: what a rerun reuses, recomputes or refuses.

Every test runs a 3-chunk job (24 rows, chunk 8) into an out_dir, changes one thing, and
checks which chunks were computed again (through the per-chunk callback) and which chunk
files were rewritten (a rewrite is an atomic rename: a new inode), then that the scores
equal a fresh run of the changed job: never stale, never mixed.
"""

import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from deepliftjax._batch_references import classify_references
from deepliftjax._errors import DeepLiftError
from deepliftjax._runner import _Progress, attribute
from deepliftjax._shap import deeplift_shap
from deepliftjax._shuffle import dinuc_shuffle, shuffle

L = 8
N, CHUNK = 24, 8
W1 = np.random.default_rng(0).normal(size=(L, 4)).astype(np.float32)
W2 = W1 + 0.5


def make_model(w):
    def predict(x):  # the same name and code for every weight: only the weights differ
        return jnp.tanh(jnp.sum(x * w) + 0.1) + 0.3 * jnp.sum(jnp.tanh(x * w))

    return predict


MODEL = make_model(W1)


def _x(n=N, seed=1):
    return np.eye(4, dtype=np.float32)[np.random.default_rng(seed).integers(0, 4, (n, L))]


def run(out, xs, refs=None, fn=MODEL, **kw):
    """The job; returns (result, chunks computed, inode of every chunk file)."""
    computed = []
    kw = {"chunk_size": CHUNK, "progress": False, "keep_chunks": True, **kw}
    res = attribute(fn, xs, refs, out_dir=out, callback=lambda c, _: computed.append(c), **kw)
    chunks = out / "chunks"
    inodes = {f: os.stat(chunks / f).st_ino for f in os.listdir(chunks)} if chunks.exists() else {}
    return res, computed, inodes


def rewritten(before, after):
    return sorted(int(f[6:12]) for f in after if before.get(f) != after[f])


def fresh(tmp_path, xs, refs=None, fn=MODEL, **kw):
    out = tmp_path / f"fresh{len(os.listdir(tmp_path))}"
    return np.asarray(run(out, xs, refs, fn, **kw)[0].contributions)


def test_unchanged_rerun_computes_nothing_and_rewrites_nothing(tmp_path):
    out = tmp_path / "job"
    _, first, files = run(out, _x())
    res, again, files2 = run(out, _x())
    assert first == [0, 1, 2] and again == [] and rewritten(files, files2) == []
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, _x()))


def test_other_weights_same_function_name_are_refused(tmp_path):
    out = tmp_path / "job"
    old = np.asarray(run(out, _x())[0].contributions)
    with pytest.raises(DeepLiftError, match=r"different job \(differs: weights\)") as e:
        run(out, _x(), fn=make_model(W2))
    assert "resume=False" in str(e.value) and "--no-resume" in str(e.value)
    res, computed, _ = run(out, _x(), fn=make_model(W2), resume=False)
    assert computed == [0, 1, 2]
    want = fresh(tmp_path, _x(), fn=make_model(W2))
    np.testing.assert_array_equal(res.contributions, want)
    assert not np.allclose(want, old)
    # a different lambda doing the same thing with the same weights is the same job
    _, computed, _ = run(out, _x(), fn=lambda x: make_model(W2)(x))
    assert computed == []


def test_edited_input_row_recomputes_its_chunk_only(tmp_path):
    out = tmp_path / "job"
    _, _, files = run(out, _x())
    xs = _x()
    xs[11] = xs[11, ::-1]  # row 11: chunk 1
    res, computed, files2 = run(out, xs)
    assert computed == [1] and rewritten(files, files2) == [1]
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, xs))
    # fewer rows: the last chunk holds other rows now; more rows: new chunks only
    res, computed, _ = run(out, xs[:20])
    assert computed == [2] and res.contributions.shape[0] == 20
    res, computed, _ = run(out, np.concatenate([xs, _x(9, seed=5)]))
    assert computed == [2, 3, 4] and res.contributions.shape[0] == 33


def test_edited_row_of_a_complete_job_without_chunk_files(tmp_path):
    out = tmp_path / "job"
    run(out, _x(), keep_chunks=False)
    assert not (out / "chunks").exists()
    xs = _x()
    xs[3] = xs[3, ::-1]
    res, computed, _ = run(out, xs, keep_chunks=False)
    assert computed == [0]  # chunks 1 and 2 come from the final files
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, xs))
    _, computed, _ = run(out, xs, keep_chunks=False)
    assert computed == []


def test_edited_references(tmp_path):
    refs = np.random.default_rng(2).uniform(size=(3, L, 4)).astype(np.float32)
    out = tmp_path / "shared"
    run(out, _x(), refs)
    edited = refs.copy()
    edited[1, 0, 0] += 0.25
    with pytest.raises(DeepLiftError, match=r"differs: references"):
        run(out, _x(), edited)
    # per-example references: an edited row recomputes its chunk
    per = np.random.default_rng(3).uniform(size=(N, 2, L, 4)).astype(np.float32)
    out = tmp_path / "per"
    _, _, files = run(out, _x(), per)
    per2 = per.copy()
    per2[17, 1] += 0.25  # example 17: chunk 2
    res, computed, files2 = run(out, _x(), per2)
    assert computed == [2] and rewritten(files, files2) == [2]
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, _x(), per2))


# ---- weights hidden from the top-level jaxpr: jit, Flax, checkpoint, scan ------------------


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(3)(x.reshape(-1)))[1]


def _flax_params(seed=0, edit=False):
    params = _Net().init(jax.random.key(seed), jnp.zeros((L, 4)))
    if edit:  # one weight edited
        params = jax.tree_util.tree_map(lambda p: p.at[(0,) * p.ndim].add(0.5), params)
    return params


def _jit_closure(w):
    return jax.jit(lambda x: make_model(w)(x))


def _flax_apply_jit(params):
    apply = jax.jit(_Net().apply)
    return lambda x: apply(params, x)


def _nn_jit(params):
    net = nn.jit(_Net)()
    return lambda x: net.apply(params, x)


def _checkpoint_scan(w):
    step = jax.checkpoint(lambda c, xw: (c + jnp.tanh(jnp.sum(xw[0] * xw[1])), None))
    return jax.jit(lambda x: lax.scan(step, 0.0, (x, jnp.asarray(w)))[0])


JITTED = {  # (model of weights, weights of the first run, of the second): built lazily
    "jit closure, weights x3": (_jit_closure, lambda: W1, lambda: W1 * 3),
    "Flax apply under jax.jit, one weight edited": (
        _flax_apply_jit,
        _flax_params,
        lambda: _flax_params(edit=True),
    ),
    "Flax nn.jit, new params": (_nn_jit, _flax_params, lambda: _flax_params(1)),
    "checkpoint inside scan, under jit": (_checkpoint_scan, lambda: W1, lambda: W2),
}


@pytest.mark.parametrize("kind", list(JITTED))
def test_jitted_models_with_new_weights_are_refused(tmp_path, kind):
    make, old, new = JITTED[kind]
    out, kw = tmp_path / "job", {"conditioning_threshold": None}
    run(out, _x(), fn=make(old()), **kw)
    with pytest.raises(DeepLiftError, match=r"different job \(differs: weights\)"):
        run(out, _x(), fn=make(new()), **kw)
    _, computed, _ = run(out, _x(), fn=make(old()), **kw)  # the same weights, re-created
    assert computed == []


def test_jitted_model_recomputed_with_new_weights(tmp_path):
    out = tmp_path / "job"
    old = np.asarray(run(out, _x(), fn=_jit_closure(W1))[0].contributions)
    res, computed, _ = run(out, _x(), fn=_jit_closure(W1 * 3), resume=False)
    assert computed == [0, 1, 2]
    f = make_model(W1 * 3)
    want = jax.jit(jax.vmap(lambda x: deeplift_shap(f, jnp.zeros((1, L, 4)))(x)))(_x())
    np.testing.assert_allclose(res.contributions, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(res.contributions, old, atol=1e-3)  # never the old scores


def test_jitted_reference_generator_with_new_weights_is_refused(tmp_path):
    def generator(w):  # references around a weight: a jitted closure over it
        return jax.jit(lambda key, x: w * 0.1 + 0.01 * jax.random.normal(key, (2, L, 4)))

    out = tmp_path / "job"
    run(out, _x(), generator(W1))
    with pytest.raises(DeepLiftError, match=r"differs: references"):
        run(out, _x(), generator(W2))


@pytest.mark.parametrize(
    "change",
    ["count", "kind", "key"],
)
def test_changed_shuffles_are_refused(tmp_path, change):
    gen = functools.partial(dinuc_shuffle, num_shuffles=3)
    out = tmp_path / "job"
    run(out, _x(), gen, key=jax.random.key(1))
    other = {
        "count": (functools.partial(dinuc_shuffle, num_shuffles=4), 1),
        "kind": (functools.partial(shuffle, num_shuffles=3), 1),
        "key": (gen, 2),
    }[change]
    with pytest.raises(DeepLiftError, match=r"differs: references"):
        run(out, _x(), other[0], key=jax.random.key(other[1]))
    _, computed, _ = run(out, _x(), gen, key=jax.random.key(1))
    assert computed == []


@pytest.mark.parametrize(
    "change, part",
    [
        ({"target": lambda y: -y}, "model"),
        ({"hypothetical": True}, "options"),
        ({"reference_chunk_size": 2}, "options"),
        ({"max_rule": "gradient"}, "options"),
        ({"chunk_size": 4}, "chunk_size"),
    ],
)
def test_changed_options_are_refused(tmp_path, change, part):
    gen = functools.partial(dinuc_shuffle, num_shuffles=3)
    out = tmp_path / "job"
    run(out, _x(), gen)
    with pytest.raises(DeepLiftError, match=rf"differs: {part}"):
        run(out, _x(), gen, **change)


def test_iterable_inputs(tmp_path):
    out = tmp_path / "job"
    xs = _x()
    _, computed, files = run(out, iter([xs[:5], xs[5:24]]))
    assert computed == [0, 1, 2]
    edited = xs.copy()
    edited[20] = edited[20, ::-1]
    res, computed, files2 = run(out, iter([edited[:13], edited[13:]]))
    assert computed == [2] and rewritten(files, files2) == [2]
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, edited))
    more = np.concatenate([edited, _x(16, seed=7)])  # 40 rows: the old 24 plus 2 chunks
    res, computed, _ = run(out, iter([more[:30], more[30:]]))
    assert computed == [3, 4] and res.contributions.shape[0] == 40
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, more))


def _interrupted(out, xs, after=2):
    def stop(c, _):
        if c + 1 == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="interrupted after chunk"):
        attribute(MODEL, xs, out_dir=out, chunk_size=CHUNK, progress=False, callback=stop)


def test_damaged_chunks_are_recomputed_with_a_warning(tmp_path):
    out = tmp_path / "job"
    _interrupted(out, _x())
    c0, c1 = out / "chunks" / "chunk_000000.npz", out / "chunks" / "chunk_000001.npz"
    c0.write_bytes(c0.read_bytes()[: c0.stat().st_size // 2])  # truncated
    with np.load(c1) as z:  # a changed number under the old checksum
        arrays = {k: z[k] for k in z.files}
    arrays["contributions"] = arrays["contributions"] + 1e-3
    np.savez(c1, **arrays)
    with pytest.warns(UserWarning) as record:
        res, computed, _ = run(out, _x())
    messages = [str(w.message) for w in record]
    # once per run each (run with -W error::ResourceWarning: the damaged file is closed)
    assert sum("chunk_000000.npz is damaged" in m for m in messages) == 1, messages
    assert sum("chunk_000001.npz fails its checksum" in m for m in messages) == 1, messages
    assert computed == [0, 1, 2]
    np.testing.assert_array_equal(res.contributions, fresh(tmp_path, _x()))
    # a damaged chunk file whose rows the final files hold: served from them, warned once
    # (the chunk is read three times: to resume, to list the chunks, to assemble)
    (out / "chunks" / "chunk_000002.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning) as record:
        again, computed, _ = run(out, _x())
    messages = [str(w.message) for w in record]
    assert sum("chunk_000002.npz is damaged" in m for m in messages) == 1, messages
    assert computed == []
    np.testing.assert_array_equal(again.contributions, res.contributions)


def test_deleted_or_damaged_final_file_is_recomputed_with_a_warning(tmp_path):
    out = tmp_path / "job"
    run(out, _x(), keep_chunks=False)
    os.remove(out / "residuals.npy")
    with pytest.warns(UserWarning, match=r"residuals.npy is missing or damaged"):
        res, computed, _ = run(out, _x(), keep_chunks=False)
    assert computed == [0, 1, 2]
    want = fresh(tmp_path, _x())
    np.testing.assert_array_equal(res.contributions, want)
    mm = np.load(out / "contributions.npy", mmap_mode="r+")
    mm[10, 0, 0] += 1.0  # a changed row of chunk 1 in the final file
    mm.flush()
    del mm
    with pytest.warns(UserWarning, match=r"rows of chunk 1 in the final files .* checksum"):
        res, computed, _ = run(out, _x(), keep_chunks=False)
    assert computed == [1]
    np.testing.assert_array_equal(res.contributions, want)


def test_out_dir_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeepLiftError, match="is a file, not a directory"):
        run(tmp_path / "file", _x())


# ---- references: shared, per example, ambiguous ---------------------------------------------


def test_per_example_references_match_f_x_minus_f_b():
    xs = _x()
    base = np.random.default_rng(4).uniform(size=(N, L, 4)).astype(np.float32)
    res = attribute(
        MODEL, xs, base, reference_layout="per_example", chunk_size=CHUNK, progress=False
    )
    want = jax.vmap(MODEL)(xs) - jax.vmap(MODEL)(base)
    sums = np.asarray(res.contributions).reshape(N, -1).sum(1)
    np.testing.assert_allclose(sums, want, atol=2e-5)
    # (N, 1, ...) is the same job; shared (K = N) references are another
    same = attribute(MODEL, xs, base[:, None], chunk_size=CHUNK, progress=False)
    np.testing.assert_allclose(same.contributions, res.contributions, rtol=1e-6, atol=1e-7)
    shared = attribute(MODEL, xs, base, reference_layout="shared", chunk_size=CHUNK, progress=False)
    assert not np.allclose(shared.contributions, res.contributions)


def test_ambiguous_references_raise_with_a_hint():
    with pytest.raises(DeepLiftError, match=r"ambiguous for 24 inputs") as e:
        attribute(MODEL, _x(), np.zeros((N, L, 4), np.float32), progress=False)
    assert "reference_layout='per_example'" in str(e.value)
    # shapes that cannot be confused need no layout
    ex = (L, 4)
    assert classify_references(np.zeros((3, L, 4)), ex, N, np.float32).kind == "shared"
    assert classify_references(np.zeros((N, 2, L, 4)), ex, N, np.float32).kind == "per_example"
    assert classify_references(np.zeros((1, L, 4)), ex, 1, np.float32).kind == "shared"
    assert classify_references(np.zeros((N, L, 4)), ex, None, np.float32).kind == "shared"
    with pytest.raises(DeepLiftError, match="reference_layout='shared' needs"):
        classify_references(np.zeros((N, 2, L, 4)), ex, N, np.float32, "shared")
    with pytest.raises(DeepLiftError, match="reference_layout must be"):
        classify_references(np.zeros((3, L, 4)), ex, N, np.float32, "each")


def test_progress_rate_counts_computed_rows_only():
    bar = _Progress(1000, True)
    bar.skip(900)  # found on disk
    time.sleep(0.15)
    bar.done(100)
    rate = bar.bar.format_dict["rate"] or 0.0
    overall = (bar.bar.n - bar.bar.initial) / bar.bar.format_dict["elapsed"]
    bar.close()
    assert bar.bar.n == 1000 and rate < 1000 and overall < 1000


# ---- kill -9 at random points -----------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import numpy as np
    from test_jobs import MODEL, _x
    from deepliftjax._runner import attribute
    def callback(c, _):
        print("chunk", c, flush=True)
        time.sleep(0.03)  # a job of seconds, not milliseconds: kills land inside it

    res = attribute(MODEL, _x({n}), np.zeros((2, 8, 4), np.float32), chunk_size=4,
                    out_dir={out!r}, progress=False, conditioning_threshold=None,
                    callback=callback)
    print("done", flush=True)
""")


@pytest.mark.slow  # ~40 kills, each after a new process has started and computed a little
def test_kill_9_at_random_points_never_loses_or_mixes_a_row(tmp_path):
    n, out = 320, tmp_path / "job"  # 80 chunks of 4
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), n=n, out=str(out))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    rng, kills, processes, resets = random.Random(0), 0, 0, 0
    while True:
        p = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        processes += 1
        line = ""
        for _ in range(rng.randint(1, 3)):  # let it compute a chunk or a few, then kill it
            line = p.stdout.readline()
            if not line.startswith("chunk"):
                break
        if line.startswith("done") or p.poll() is not None:
            p.wait()
            if kills >= 20:
                break
            shutil.rmtree(out)  # finished after too few kills: start the job over
            kills, resets = 0, resets + 1
            assert resets < 3, "the job keeps finishing before 20 kills"
            continue
        time.sleep(rng.uniform(0, 0.06))  # anywhere: computing, writing, renaming, waiting
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
    assert p.returncode == 0 and kills >= 20  # >= 20 kills of this one job, then it finished
    print(f"{kills} kills with SIGKILL over one job ({processes} processes in all)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = attribute(
            MODEL, _x(n), np.zeros((2, 8, 4), np.float32), chunk_size=4, progress=False
        )
    got = np.load(out / "contributions.npy")
    np.testing.assert_allclose(got, want.contributions, rtol=1e-6, atol=1e-7)
    assert not [f for f in out.rglob("*") if ".tmp." in f.name]  # no temporary file left
