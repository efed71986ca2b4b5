"""One out_dir, many writers: the lock, its holder's record, stale locks, temporary files.

Processes started together on one out_dir (released by a gate file at the same instant):
two of different jobs -> one finishes, the other stops at once with an error naming the
holder's pid and host; two of the same job -> both return the right scores, the second
having waited and reused every chunk. No call removes another's temporary files, and no
row is ever wrong. The lock itself: threads, a holder in another process, a holder killed
with SIGKILL, file systems without POSIX locks (exclusive lock file, stale when its pid is
dead on this host).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax import _store
from deepliftjax._errors import DeepLiftError
from deepliftjax._shap import deeplift_shap
from deepliftjax._store import DirLock, DiskStore

L, N, CHUNK = 6, 12, 4  # 3 chunks
W = np.random.default_rng(0).normal(size=(L, 4)).astype(np.float32)
JOB_A, JOB_B = "a" * 40, "b" * 40
HOST = socket.gethostname().replace(".", "_")


def model(scale: float):
    w = jnp.asarray(W * scale)

    @jax.jit  # weights inside a jitted closure: the identity must see them
    def predict(x):
        return jnp.tanh(jnp.sum(x * w) + 0.1) + 0.3 * jnp.sum(jnp.tanh(x * w))

    return predict


def xs() -> np.ndarray:
    return np.eye(4, dtype=np.float32)[np.random.default_rng(1).integers(0, 4, (N, L))]


def expected(scale: float) -> np.ndarray:
    f = model(scale)
    ref = jnp.zeros((1, L, 4))
    return np.asarray(jax.jit(jax.vmap(lambda x: deeplift_shap(f, ref)(x)))(xs()))


ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

# ---- two processes, one out_dir -----------------------------------------------------------

JOB_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {tests!r})
    import numpy as np
    out, scale, gate = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    from test_locking import model, xs, CHUNK
    from deepliftjax._errors import DeepLiftError
    from deepliftjax._runner import attribute

    removed, remove = [], os.remove
    def logged_remove(path, *args, **kwargs):  # temporary files of other processes removed?
        name = os.path.basename(os.fspath(path))
        if ".tmp." in name and f".{{os.getpid()}}." not in name:
            removed.append(name)
        return remove(path, *args, **kwargs)
    os.remove = logged_remove
    computed = []
    def callback(c, _):
        computed.append(c)
        time.sleep(0.2)  # a job of about a second: the other process arrives meanwhile
    f = model(scale)
    open(f"{{gate}}.{{os.getpid()}}", "w").close()  # ready: wait for the gate
    while not os.path.exists(gate):
        time.sleep(0.005)
    try:
        res = attribute(f, xs(), chunk_size=CHUNK, out_dir=out, progress=False,
                        callback=callback, conditioning_threshold=None)
        np.save(f"{{out}}.{{os.getpid()}}.npy", np.asarray(res.contributions))
        print("result", json.dumps({{"pid": os.getpid(), "computed": computed,
                                     "removed": removed}}), flush=True)
    except DeepLiftError as e:
        print("error", json.dumps({{"pid": os.getpid(), "message": str(e),
                                    "computed": computed, "removed": removed}}), flush=True)
""")


def _pair(tmp_path, name: str, scales: tuple[float, float]):
    script = JOB_SCRIPT.format(tests=os.path.dirname(__file__))
    out, gate = tmp_path / name, tmp_path / f"{name}.gate"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(out), str(s), str(gate)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in scales
    ]
    return out, gate, procs


def _run_pairs(tmp_path, repetitions: int):
    """Start every pair at once; open each pair's gate when both its processes are ready."""
    pairs = {}
    for r in range(repetitions):
        pairs[f"same{r}"] = _pair(tmp_path, f"same{r}", (1.0, 1.0))
        pairs[f"different{r}"] = _pair(tmp_path, f"different{r}", (1.0, 3.0))
    waiting = set(pairs)
    deadline = time.monotonic() + 600
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            _, gate, procs = pairs[name]
            ready = [os.path.exists(f"{gate}.{p.pid}") for p in procs]
            if all(ready) or any(p.poll() is not None for p in procs):
                gate.touch()
                waiting.discard(name)
        time.sleep(0.02)
    results = {}
    for name, (out, _, procs) in pairs.items():
        outs = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, f"{name}: a crash\n{stderr[-3000:]}"  # never a crash
            kind, _, payload = stdout.strip().splitlines()[-1].partition(" ")
            outs.append((kind, json.loads(payload)))
        results[name] = (out, outs)
    return results


def _check_pairs(results) -> None:
    want = {1.0: expected(1.0), 3.0: expected(3.0)}
    for name, (out, outs) in results.items():
        for _, r in outs:
            assert r["removed"] == [], f"{name}: removed another call's temporary files"
        assert not [f for f in out.rglob("*") if ".tmp." in f.name]  # none left behind
        if name.startswith("same"):  # both return the right scores; one computed them all
            assert [k for k, _ in outs] == ["result", "result"], outs
            for _, r in outs:
                got = np.load(f"{out}.{r['pid']}.npy")
                np.testing.assert_allclose(got, want[1.0], rtol=1e-5, atol=1e-6)
            assert sorted(len(r["computed"]) for _, r in outs) == [0, N // CHUNK]
            final = want[1.0]
        else:  # one finishes, the other stops at once naming the holder
            kinds = sorted(k for k, _ in outs)
            assert kinds == ["error", "result"], outs
            (winner,) = [r for k, r in outs if k == "result"]
            (loser,) = [r for k, r in outs if k == "error"]
            holder = f"locked by process {winner['pid']} on host {HOST}"
            assert "is in use by another job" in loser["message"] and holder in loser["message"]
            assert "Hint:" in loser["message"] and loser["computed"] == []
            scale = 1.0 if outs[0][0] == "result" else 3.0
            got = np.load(f"{out}.{winner['pid']}.npy")
            np.testing.assert_allclose(got, want[scale], rtol=1e-5, atol=1e-6)
            final = want[scale]
        # the final files hold exactly the finished job's rows
        np.testing.assert_allclose(np.load(out / "contributions.npy"), final, rtol=1e-5, atol=1e-6)
        assert json.loads((out / "manifest.json").read_text())["complete"]


def test_two_processes_on_one_out_dir(tmp_path):
    t0 = time.perf_counter()
    _check_pairs(_run_pairs(tmp_path, 1))
    print(f"2 pairs of processes: {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow  # 5 repetitions of each: 20 processes
def test_two_processes_on_one_out_dir_5_times(tmp_path):
    t0 = time.perf_counter()
    _check_pairs(_run_pairs(tmp_path, 5))
    print(f"10 pairs of processes: {time.perf_counter() - t0:.1f} s")


# ---- the lock on its own --------------------------------------------------------------------

# Another process holding the lock as DirLock does (a POSIX lock on out_dir/lock and its
# record), in plain Python: it starts in milliseconds, where importing jax takes seconds.
HOLD_SCRIPT = textwrap.dedent("""
    import fcntl, json, os, socket, sys, time
    fd = os.open(os.path.join(sys.argv[1], "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    record = {"host": socket.gethostname().replace(".", "_"), "pid": os.getpid(),
              "job": sys.argv[2], "started": time.time(), "token": "holder"}
    os.ftruncate(fd, 0)  # a killed holder's longer record may still be there
    os.pwrite(fd, json.dumps(record).encode(), 0)
    print("held", flush=True)
    sys.stdin.readline()  # hold until told (or killed)
    os.ftruncate(fd, 0)
    fcntl.lockf(fd, fcntl.LOCK_UN)
""")


def _holder(out, job):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(out), job],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_held_by_another_process_then_killed(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    p = _holder(out, JOB_A)
    try:
        with pytest.raises(DeepLiftError, match="in use by another job") as e:
            DirLock(out, JOB_B).acquire()
        message = str(e.value)
        assert f"locked by process {p.pid} on host {HOST}" in message
        assert f"for job {JOB_A[:12]}" in message and f"this call is job {JOB_B[:12]}" in message
        assert "Hint:" in message
    finally:
        p.kill()
        p.wait()
    # a holder killed with SIGKILL leaves its record, but the kernel frees its lock
    p = _holder(out, JOB_A)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert json.loads((out / "lock").read_text())["pid"] == p.pid  # the stale record
    t0 = time.perf_counter()
    with DirLock(out, JOB_B):
        assert json.loads((out / "lock").read_text())["job"] == JOB_B
    assert time.perf_counter() - t0 < 2 and (out / "lock").read_text() == ""


def test_same_job_waits_for_the_holder_in_another_process(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    p = _holder(out, JOB_A)
    said, done = [], threading.Event()

    def wait_for_it():
        with DirLock(out, JOB_A, said.append):
            done.set()

    t = threading.Thread(target=wait_for_it)
    t.start()
    time.sleep(0.6)
    assert not done.is_set() and len(said) == 1
    assert f"(process {p.pid} on {HOST})" in said[0]
    p.stdin.write("\n")
    p.stdin.flush()
    t.join(timeout=30)
    assert done.is_set()
    p.wait(timeout=30)


def test_threads_of_one_process(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    errors, entered = [], threading.Event()

    def other_job():
        try:
            DirLock(out, JOB_B).acquire()
        except DeepLiftError as e:
            errors.append(str(e))

    def same_job():
        with DirLock(out, JOB_A):
            entered.set()

    with DirLock(out, JOB_A):
        t = threading.Thread(target=other_job)
        t.start()
        t.join(timeout=30)
        assert len(errors) == 1 and f"process {os.getpid()}" in errors[0]
        assert "(thread MainThread)" in errors[0]
        same = threading.Thread(target=same_job)
        same.start()
        time.sleep(0.5)
        assert not entered.is_set()  # the same job waits for this thread
    same.join(timeout=30)
    assert entered.is_set() and not _store._HELD


@pytest.fixture
def no_posix_locks(monkeypatch):
    """A file system that refuses POSIX locks (NFS without lockd: ENOLCK)."""

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", refuse)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_exclusive_lock_file_without_posix_locks(tmp_path, no_posix_locks):
    out = tmp_path / "job"
    out.mkdir()
    held = out / "lock.held"
    with DirLock(out, JOB_A):
        assert json.loads(held.read_text())["job"] == JOB_A
        with pytest.raises(DeepLiftError, match=f"locked by process {os.getpid()} on host"):
            DirLock(out, JOB_B).acquire()
    assert not held.exists()
    record = {"host": HOST, "pidns": _store._pid_namespace(), "job": JOB_B, "token": "t"}
    # a record of a dead process of this host is stale: removed, and the lock taken
    held.write_text(json.dumps({**record, "pid": _dead_pid()}))
    with DirLock(out, JOB_A):
        assert json.loads(held.read_text())["job"] == JOB_A
    assert not held.exists() and not list(out.glob("lock.held.stale.*"))
    # a live process of this host, or any process of another host, holds it
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held.write_text(json.dumps({**record, "pid": sleeper.pid, "start": None}))
        with pytest.raises(DeepLiftError, match=f"locked by process {sleeper.pid} on host"):
            DirLock(out, JOB_A).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    held.write_text(json.dumps({**record, "pid": 1, "host": "elsewhere"}))
    with pytest.raises(DeepLiftError, match="on host elsewhere") as e:
        DirLock(out, JOB_A).acquire()
    assert "lock.held if it exists" in str(e.value)


def test_lock_verify_detects_a_second_holder(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    with DirLock(out, JOB_A) as lock:
        lock.verify()
        (out / "lock").write_text(json.dumps({"pid": 7, "host": "other", "token": "x"}))
        with pytest.raises(DeepLiftError, match=r"taken by another process \(pid 7 on other\)"):
            lock.verify()


# ---- temporary files --------------------------------------------------------------------------


def test_temporary_files_of_live_writers_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store = DiskStore(tmp_path / "job", {"format": "3"}, ["residuals"])
        store.put(0, "k0", {"residuals": np.zeros(2, np.float32)})
        chunks = tmp_path / "job" / "chunks"
        live = chunks / f"chunk_000001.npz.tmp.{HOST}.{sleeper.pid}.abcd1234"
        mine = chunks / f"chunk_000002.npz.tmp.{HOST}.{os.getpid()}.abcd1234"
        dead = chunks / f"chunk_000003.npz.tmp.{HOST}.{_dead_pid()}.abcd1234"
        remote_new = chunks / "chunk_000004.npz.tmp.otherhost.12.abcd1234"
        remote_old = chunks / "chunk_000005.npz.tmp.otherhost.13.abcd1234"
        for f in (live, mine, dead, remote_new, remote_old):
            f.write_bytes(b"partial")
        os.utime(remote_old, (time.time() - 2 * 3600,) * 2)
        final_tmp = tmp_path / "job" / f"residuals.npy.tmp.{HOST}.{_dead_pid()}.abcd1234"
        final_tmp.write_bytes(b"partial")
        store.finish(["k0"])
        left = sorted(f.name for f in chunks.iterdir())
        assert left == sorted(f.name for f in (live, mine, remote_new))  # chunk 0 removed
        assert not final_tmp.exists()
        # resume=False clears the old job, not a live writer's temporary files
        DiskStore(tmp_path / "job", {"format": "3"}, ["residuals"], resume=False)
        assert sorted(f.name for f in chunks.iterdir()) == left
    finally:
        sleeper.kill()
        sleeper.wait()
