"""The deepliftjax-attribute command on array files."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax._cli import _parser, _version, main
from deepliftjax._shap import deeplift_shap

L = 16

MODEL = textwrap.dedent(f"""
    import jax.numpy as jnp, numpy as np
    W = np.random.default_rng(0).normal(size=({L}, 4, 3)).astype(np.float32) * 0.3
    def predict(x):
        return jnp.tanh(jnp.einsum("la,lao->o", x, W))
    def scalar(x):
        return predict(x)[0]
    def predict_args(*xs):
        return predict(xs[0])
    broken = 3
    def fails(x):
        raise RuntimeError("the model's own error")
""")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "mymodel.py").write_text(MODEL)
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(1).integers(0, 4, (11, L))]
    np.save(tmp_path / "x.npy", x)
    return tmp_path, x


def _run(tmp_path, *args):
    return main(
        [
            str(tmp_path / "mymodel.py") + ":predict",
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
            "--chunk-size",
            "4",
            *args,
        ]
    )


def test_references_file_and_target(files, capsys):
    tmp_path, x = files
    refs = np.random.default_rng(2).uniform(size=(3, L, 4)).astype(np.float32)
    np.save(tmp_path / "refs.npy", refs)
    assert _run(tmp_path, "-r", str(tmp_path / "refs.npy"), "-t", "2", "--check", "raise") == 0
    err = capsys.readouterr().err
    assert "wrote contributions.npy" in err and "max absolute summation residual" in err
    ns = {}
    exec(MODEL, ns)
    f = lambda v: ns["predict"](v)[2]
    want = jax.vmap(lambda v: deeplift_shap(f, jnp.asarray(refs))(v))(x)
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "contributions.npy"), want, rtol=1e-5, atol=1e-6
    )
    assert np.load(tmp_path / "out" / "residuals.npy").shape == (11,)
    # conditioning: sum|C| / sum|Δf| over the references, per example
    cond = np.load(tmp_path / "out" / "conditioning.npy")
    assert cond.shape == (11,) and np.all(np.isfinite(cond)) and np.all(cond > 0.5)


def test_shuffles_hypothetical_and_modisco_files(files):
    tmp_path, x = files
    assert _run(tmp_path, "--shuffles", "4", "-t", "0", "--modisco", "--seed", "3") == 0
    out = tmp_path / "out"
    contrib, hyp = np.load(out / "contributions.npy"), np.load(out / "hypothetical.npy")
    ohe, shap = np.load(out / "ohe.npy"), np.load(out / "shap.npy")
    assert ohe.shape == shap.shape == (11, 4, L)
    np.testing.assert_array_equal(ohe, x.transpose(0, 2, 1))
    np.testing.assert_array_equal(shap, hyp.transpose(0, 2, 1))
    np.testing.assert_allclose((hyp * x).sum(-1), contrib.sum(-1), rtol=1e-5, atol=1e-6)
    assert float(np.abs(contrib).max()) > 1e-3
    # the present-base projection: hypothetical x one-hot, summing like the contributions
    projected = np.load(out / "projected.npy")
    np.testing.assert_array_equal(projected, hyp * x)
    np.testing.assert_allclose(projected.sum(-1), contrib.sum(-1), rtol=1e-5, atol=1e-6)
    assert float(np.abs(contrib - projected).max()) > 1e-3  # they differ off the sum


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "9"], r"target=9 is not an output index"),
        ([], r"returns shape \(3,\) per example, not a scalar"),
        (["-t", "x"], r"--target must be an output index"),
        (["-r", "missing.npy", "-t", "0"], r"references file not found"),
        (["-r", "BAD", "-t", "0"], r"references must be shaped .*got \(5, 3\)"),
        (["-r", "PER", "-t", "0"], r"ambiguous for 11 inputs.*--reference-layout"),
        (["--shuffles", "3", "--shuffle-kind", "plain", "-t", "0", "-o", "DONE"], r"differs: ref"),
        (["--shuffles", "4", "-t", "0", "-o", "DONE"], r"differs: references"),
        (["--shuffles", "3", "--seed", "1", "-t", "0", "-o", "DONE"], r"differs: references"),
        (["-t", "0", "-o", "FILE"], r"is a file, not a directory"),
        (["--shuffles", "2", "-t", "0", "-i"], None),
        (["-t", "0", "--check", "loud"], None),
        # bad sizes reach attribute(), whose DeepLiftError (message and hint) is printed
        (["-t", "0", "--chunk-size", "0"], r"chunk_size must be an int >= 1(.|\n)*Hint: "),
        (["-t", "0", "--reference-chunk-size", "0"], r"reference_chunk_size must be(.|\n)*Hint:"),
        (["-r", "EMPTY", "-t", "0"], r"hold no references \(K = 0\)(.|\n)*Hint: "),
    ],
)
def test_errors(files, capsys, args, message):
    tmp_path, _ = files
    np.save(tmp_path / "BAD", np.zeros((5, 3)))
    np.save(tmp_path / "EMPTY", np.zeros((0, L, 4), np.float32))
    np.save(tmp_path / "PER", np.zeros((11, L, 4), np.float32))
    (tmp_path / "FILE").write_text("not a directory")
    names = {k: str(tmp_path / f"{k}.npy") for k in ("BAD", "EMPTY", "PER")}
    names |= {"FILE": str(tmp_path / "FILE"), "DONE": str(tmp_path / "done")}
    if "DONE" in args:  # a finished --shuffles 3 job, then the same out_dir with a change
        assert _run(tmp_path, "--shuffles", "3", "-t", "0", "-o", names["DONE"]) == 0
        capsys.readouterr()
    args = [names.get(a, a) for a in args]
    if message is None:  # unknown option: argparse's own error, also exit status 2
        with pytest.raises(SystemExit) as e:
            _run(tmp_path, *args)
        assert e.value.code == 2
        return
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepliftjax-attribute: error:") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err


def test_input_file_errors(files, capsys):
    tmp_path, _ = files
    model = str(tmp_path / "mymodel.py") + ":scalar"
    cases = [
        ([model, str(tmp_path / "nope.npy")], "inputs file not found"),
        ([model, str(tmp_path / "mymodel.py")], "must be .npy or .npz"),
        ([str(tmp_path / "mymodel.py") + ":missing", str(tmp_path / "x.npy")], "no attribute"),
        ([str(tmp_path / "mymodel.py") + ":broken", str(tmp_path / "x.npy")], "not callable"),
        (["no_such_module_xyz:f", str(tmp_path / "x.npy")], "cannot import model module"),
        ([model, str(tmp_path / "s.npy")], "must be numeric"),
        ([model, str(tmp_path / "x.npy"), "--shuffles", "2"], None),
        ([model, str(tmp_path / "cont.npy"), "--shuffles", "2"], "needs one-hot inputs"),
        ([model, str(tmp_path / "obj.npz")], "cannot read inputs file"),
        ([model, str(tmp_path / "trunc.npy")], "cannot read inputs file"),
        ([str(tmp_path / "mymodel.py") + ":fails", str(tmp_path / "x.npy")], "RuntimeError"),
    ]
    np.savez(tmp_path / "obj.npz", a=np.array([{"a": 1}], dtype=object))
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:100])
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "cont.npy", np.random.default_rng(0).normal(size=(3, L, 4)))
    for argv, message in cases:
        code = main([*argv, "-o", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0, err
        else:
            assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_per_example_references_file_and_module_model(files, monkeypatch):
    tmp_path, x = files
    base = np.random.default_rng(5).uniform(size=x.shape).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    monkeypatch.chdir(tmp_path)  # MODEL as module:function, importable from here
    monkeypatch.delitem(sys.modules, "mymodel", raising=False)
    args = ["-r", "base.npy", "--reference-layout", "per-example", "-t", "1", "-o", "out"]
    assert main(["mymodel:predict", "x.npy", "--no-progress", "--chunk-size", "4", *args]) == 0
    monkeypatch.delitem(sys.modules, "mymodel", raising=False)
    ns = {}
    exec(MODEL, ns)
    f = jax.vmap(lambda v: ns["predict"](v)[1])
    sums = np.load(tmp_path / "out" / "contributions.npy").reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(sums, f(x) - f(base), atol=2e-5)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"deepliftjax-attribute {_version()}"
    parser = _parser()
    for action in parser._actions:
        assert action.help, action.option_strings or action.dest
    text = parser.format_help()
    assert "`" not in text and "--reference-layout" in text and "130" in text
    # the default reference, and which residual the files hold, are stated
    text = " ".join(text.split())  # argparse wraps lines
    assert "ONE ALL-ZERO reference" in text and "--shuffles: one all-zero reference" in text
    assert "ABSOLUTE summation residual" in text and "RELATIVE" in text
    assert "--check {warn,raise,none}" in text


def test_ctrl_c_and_file_model_resume_in_new_processes(files):
    """A job interrupted by Ctrl-C (rc 130, one line saying how far it got), then the same
    command in a new process: file.py:function is the same job there, and only the
    missing chunk is computed."""
    tmp_path, x = files
    script = textwrap.dedent("""
        import sys
        from deepliftjax import _store
        from deepliftjax._cli import _parser, _version, main
        put = _store.DiskStore.put
        def logged(self, c, key, arrays):
            if sys.argv[1] == "stop" and c == 2:
                raise KeyboardInterrupt  # as Ctrl-C while chunk 2 is stored
            put(self, c, key, arrays)
            print("computed", c, flush=True)
        _store.DiskStore.put = logged
        sys.exit(main(sys.argv[2:]))
    """)
    argv = [str(tmp_path / "mymodel.py") + ":predict", str(tmp_path / "x.npy"), "-t", "1"]
    argv += ["-o", str(tmp_path / "out"), "--chunk-size", "4", "--no-progress"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, mode, *argv],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        for mode in ("stop", "go")
    ]
    assert runs[0].returncode == 130, runs[0].stderr
    assert runs[0].stderr.strip().splitlines()[-1] == (
        "deepliftjax-attribute: interrupted after chunk 2/3; rerun the same command to resume"
    )
    assert runs[0].stdout.split() == ["computed", "0", "computed", "1"]
    assert runs[1].returncode == 0, runs[1].stderr
    assert runs[1].stdout.split() == ["computed", "2"]
    ns = {}
    exec(MODEL, ns)
    want = jax.vmap(lambda v: deeplift_shap(lambda u: ns["predict"](u)[1], jnp.zeros((1, L, 4)))(v))
    got = np.load(tmp_path / "out" / "contributions.npy")
    np.testing.assert_allclose(got, want(x), rtol=1e-5, atol=1e-6)


JITTED_MODELS = textwrap.dedent(f"""
    import os
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
    from jax import lax
    W = np.load(os.path.join(os.path.dirname(__file__), "w.npy"))  # ({L}, 4, 3), read per run

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.tanh(nn.Dense(3)(x.reshape(-1)))

    PARAMS = {{"params": {{"Dense_0": {{"kernel": W.reshape(-1, 3), "bias": np.zeros(3)}}}}}}
    _apply = jax.jit(Net().apply)
    _net = nn.jit(Net)()

    @jax.jit
    def jit_closure(x):
        return jnp.tanh(jnp.einsum("la,lao->o", x, W))

    def flax_jit_apply(x):
        return _apply(PARAMS, x)

    def flax_nn_jit(x):
        return _net.apply(PARAMS, x)

    @jax.jit
    def scan_checkpoint(x):
        step = jax.checkpoint(lambda c, xw: (c + jnp.tanh(jnp.einsum("a,ao->o", *xw)), None))
        return lax.scan(step, jnp.zeros(3), (x, W))[0]
""")
KINDS = ["jit_closure", "flax_jit_apply", "flax_nn_jit", "scan_checkpoint"]

RERUN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from deepliftjax._cli import main
    tmp, kinds = sys.argv[1], sys.argv[2:]
    w = np.load(os.path.join(tmp, "w.npy"))
    edited = w.copy()
    edited[0, 0, 0] += 0.5  # one weight edited
    report = {}
    for kind in kinds:
        argv = [os.path.join(tmp, "jmodels.py") + ":" + kind, os.path.join(tmp, "x.npy"),
                "-t", "1", "-o", os.path.join(tmp, kind), "--chunk-size", "4", "--no-progress"]
        final = os.path.join(tmp, kind, "contributions.npy")
        np.save(os.path.join(tmp, "w.npy"), edited)
        changed = main(argv)
        np.save(os.path.join(tmp, "w.npy"), w)
        inode = os.stat(final).st_ino
        same = main(argv)  # the old weights again: resumed, nothing rewritten
        report[kind] = [changed, same, os.stat(final).st_ino == inode]
    print("report", json.dumps(report), flush=True)
""")


def test_jitted_models_with_new_weights_in_a_new_process(files, capsys):
    """Jitted closures, Flax apply under jax.jit, nn.jit and a checkpointed scan read their
    weights from w.npy: after one weight is edited, a new process refuses the job (exit 2,
    'differs: weights') instead of returning the old scores; with the old weights back it
    resumes and rewrites nothing."""
    tmp_path, x = files
    (tmp_path / "jmodels.py").write_text(JITTED_MODELS)
    w = np.random.default_rng(3).normal(size=(L, 4, 3)).astype(np.float32) * 0.3
    np.save(tmp_path / "w.npy", w)
    first = {}
    for kind in KINDS:  # the first runs, in this process
        argv = [str(tmp_path / "jmodels.py") + f":{kind}", str(tmp_path / "x.npy"), "-t", "1"]
        argv += ["-o", str(tmp_path / kind), "--chunk-size", "4", "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
        first[kind] = np.load(tmp_path / kind / "contributions.npy")
    capsys.readouterr()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.run(
        [sys.executable, "-c", RERUN_SCRIPT, str(tmp_path), *KINDS],
        env=env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.split("report ", 1)[1])
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(errors) == len(KINDS), p.stderr[-3000:]
    for kind, line in zip(KINDS, errors, strict=True):
        assert report[kind] == [2, 0, True], (kind, p.stderr[-3000:])
        assert "differs: weights" in line and str(tmp_path / kind) in line
        np.testing.assert_array_equal(np.load(tmp_path / kind / "contributions.npy"), first[kind])


def test_channels_first_inputs_give_the_channels_last_scores(files):
    """PyTorch's (N, 4, L) with --alphabet-axis 0: shuffles, scores, hypothetical scores and
    the modisco files equal those of the (N, L, 4) run, transposed."""
    tmp_path, x = files
    (tmp_path / "cf.py").write_text(MODEL + "\ndef predict_cf(x):\n    return predict(x.T)\n")
    np.save(tmp_path / "x_cf.npy", x.transpose(0, 2, 1))
    common = ["--shuffles", "3", "-t", "1", "--modisco", "--no-progress", "--chunk-size", "4"]

    def run(model, inputs, out, *extra):
        return main([str(tmp_path / model), str(tmp_path / inputs), "-o", str(tmp_path / out)]
                    + common + list(extra))  # fmt: skip

    assert run("cf.py:predict", "x.npy", "last") == 0
    assert run("cf.py:predict_cf", "x_cf.npy", "first", "--alphabet-axis", "0") == 0
    for name in ("contributions", "hypothetical", "projected"):
        last, first = (np.load(tmp_path / d / f"{name}.npy") for d in ("last", "first"))
        np.testing.assert_allclose(first.transpose(0, 2, 1), last, rtol=1e-6, atol=1e-7)
    ohe, shap = (
        {d: np.load(tmp_path / d / f"{n}.npy") for d in ("last", "first")} for n in ("ohe", "shap")
    )
    np.testing.assert_array_equal(ohe["first"], ohe["last"])  # modisco's (N, 4, L) either way
    np.testing.assert_allclose(shap["first"], shap["last"], rtol=1e-6, atol=1e-7)
    # the alphabet axis is checked to be one-hot: axis 1 of (4, L) examples is not
    assert run("cf.py:predict_cf", "x_cf.npy", "bad", "--alphabet-axis", "1") == 2


def test_a_model_of_variable_arguments_is_not_called_as_a_loader(files):
    """Only a function of no parameters is called to load a torch module; a model written
    ``def predict(*xs)`` is returned as it is, never called without its input."""
    from deepliftjax._cli import _load_model

    tmp_path, x = files
    fn = _load_model(str(tmp_path / "mymodel.py") + ":predict_args")
    assert fn.__name__ == "predict_args"
    np.testing.assert_array_equal(fn(x[0]), _load_model(str(tmp_path / "mymodel.py:predict"))(x[0]))
