"""attribute() under jax.distributed: 2 processes on localhost (CPU, 2 devices each).

Each process computes only its share of the chunks (chunk c goes to process c % 2, counted
through the per-chunk callback), the scores assembled in the shared out_dir equal a
one-process run, and a job whose second process is killed mid-run resumes, when both are
rerun, without recomputing any finished chunk. Processes that hold different jobs (other
weights in a jitted model; other input rows) stop together with one error and write
nothing to the final files.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np

from deepliftjax._runner import attribute

N, CHUNK = 40, 4  # 10 chunks: 0, 2, ... to process 0; 1, 3, ... to process 1
CHUNKS = set(range(N // CHUNK))

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    pid, port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    import jax
    jax.distributed.initialize(f"127.0.0.1:{{port}}", num_processes=2, process_id=pid)
    assert jax.local_device_count() == 2 and jax.device_count() == 4
    sys.path.insert(0, {tests!r})
    import jax.numpy as jnp
    import numpy as np
    from test_runner import W, model, _x
    from deepliftjax._errors import DeepLiftError
    from deepliftjax._runner import attribute
    xs = _x({n}, seed=2 if mode == "rows" and pid == 1 else 1)  # process 1: other rows
    if mode == "weights":  # a jitted model; process 1 holds other weights
        w = jnp.asarray(W * (3.0 if pid == 1 else 1.0))
        model = jax.jit(lambda x: jnp.tanh(jnp.einsum("la,lao->o", x, w) + 0.1))
    computed = []
    marker = os.path.join(out, "process0_done")

    def callback(c, _):
        computed.append(c)
        print("computed", c, flush=True)
        if mode == "kill" and pid == 0 and len(computed) == 5:
            open(marker, "w").close()  # process 0 has done its whole share
        if mode == "kill" and pid == 1 and len(computed) == 2:
            while not os.path.exists(marker):
                time.sleep(0.05)
            os._exit(9)  # process 1 dies with 3 of its 5 chunks to go

    try:
        res = attribute(model, xs, np.zeros((2, 10, 4), np.float32), target=1,
                        chunk_size={chunk}, out_dir=out, progress=False, callback=callback)
    except DeepLiftError as e:
        print("error", json.dumps({{"message": str(e), "computed": computed}}), flush=True)
        sys.exit(3)
    print("result", json.dumps({{"computed": computed, "shape": list(res.contributions.shape),
          "sum": float(np.asarray(res.contributions, np.float64).sum())}}), flush=True)
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out, mode):
    script = SCRIPT.format(tests=os.path.dirname(__file__), n=N, chunk=CHUNK)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    port = str(_port())
    return [
        subprocess.Popen(
            [sys.executable, "-c", script, str(pid), port, str(out), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]


def _computed(stdout: str) -> list[int]:
    """The chunks a process reported (its other lines: the runtime's own, e.g. Gloo's)."""
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("computed")]


def _finish(procs, timeout=300):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.split("result ", 1)[1]) for out, _ in outs]


def _one_process(tmp_path):
    from test_runner import _x, model

    res = attribute(
        model,
        _x(N),
        np.zeros((2, 10, 4), np.float32),
        target=1,
        chunk_size=CHUNK,
        out_dir=tmp_path / "single",
        progress=False,
        conditioning_threshold=None,
    )
    return np.asarray(res.contributions)


def test_two_processes_share_the_chunks_and_resume_after_a_kill(tmp_path):
    out = tmp_path / "shared"
    t0 = time.perf_counter()
    # first run: process 1 is killed after 2 of its chunks (once process 0 has done its 5)
    procs = _start(out, "kill")
    procs[1].wait(timeout=300)
    assert procs[1].returncode == 9, procs[1].stderr.read()[-3000:]
    procs[0].kill()  # it waits for process 1 at the barrier before assembly
    first0, first1 = _computed(procs[0].communicate()[0]), _computed(procs[1].stdout.read())
    assert sorted(first0) == [0, 2, 4, 6, 8] and sorted(first1) == [1, 3]  # shares only
    on_disk = {int(f[6:12]) for f in os.listdir(out / "chunks") if f.endswith(".npz")}
    assert on_disk == {0, 1, 2, 3, 4, 6, 8}
    # rerun both: only the missing chunks are computed, each by its own process
    again = _finish(_start(out, "go"))
    assert again[0]["computed"] == [] and sorted(again[1]["computed"]) == [5, 7, 9]
    assert set(first0 + first1 + again[1]["computed"]) == CHUNKS
    took = time.perf_counter() - t0
    want = _one_process(tmp_path)
    got = np.load(out / "contributions.npy")
    assert got.shape == want.shape == (N, 10, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for r in again:  # both processes return the assembled scores
        assert r["shape"] == [N, 10, 4]
        assert abs(r["sum"] - float(want.astype(np.float64).sum())) < 1e-4
    print(f"two 2-process runs took {took:.1f} s")


def test_two_processes_clean_run(tmp_path):
    out = tmp_path / "shared"
    results = _finish(_start(out, "go"))
    assert sorted(results[0]["computed"]) == [0, 2, 4, 6, 8]
    assert sorted(results[1]["computed"]) == [1, 3, 5, 7, 9]
    np.testing.assert_allclose(
        np.load(out / "contributions.npy"), _one_process(tmp_path), rtol=1e-6, atol=1e-6
    )
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_processes_holding_different_jobs_stop_together(tmp_path):
    """Process 1 has other weights in a jitted model (found before anything is written), or
    other input rows (found before the final files are written): both processes raise the
    same error, naming what differs."""
    runs = {mode: _start(tmp_path / mode, mode) for mode in ("weights", "rows")}
    errors = {}
    for mode, procs in runs.items():
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 3, err[-3000:]
        found = [json.loads(out.split("error ", 1)[1]) for out, _ in outs]
        assert found[0]["message"] == found[1]["message"]  # one error, the same everywhere
        assert "Hint:" in found[0]["message"]
        errors[mode] = found
        out_dir = tmp_path / mode
        assert not (out_dir / "contributions.npy").exists()  # nothing in the final files
        assert not (out_dir / "residuals.npy").exists()
    message = errors["weights"][0]["message"]
    assert "hold different jobs" in message and "weights (the model's constants)" in message
    assert "process(es) 1 differ from process 0" in message
    assert not (tmp_path / "weights").exists()  # found before anything was written
    assert all(f["computed"] == [] for f in errors["weights"])
    message = errors["rows"][0]["message"]
    assert "hold different inputs" in message and "row digests" in message
    assert "from chunk 0 on" in message  # every row of process 1 differs
    assert not json.loads((tmp_path / "rows" / "manifest.json").read_text())["complete"]
