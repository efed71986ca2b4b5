"""The deepliftjax-attribute command on array files."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepliftjax._cli import main
from deepliftjax._references import deeplift_shap

L = 16

MODEL = textwrap.dedent(f"""
    import jax.numpy as jnp, numpy as np
    W = np.random.default_rng(0).normal(size=({L}, 4, 3)).astype(np.float32) * 0.3
    def predict(x):
        return jnp.tanh(jnp.einsum("la,lao->o", x, W))
    def scalar(x):
        return predict(x)[0]
    broken = 3
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
    assert _run(tmp_path, "-r", str(tmp_path / "refs.npy"), "-t", "2") == 0
    assert "wrote contributions.npy" in capsys.readouterr().err
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "9"], r"target=9 is not an output index"),
        ([], r"returns shape \(3,\) per example, not a scalar"),
        (["-t", "x"], r"--target must be an output index"),
        (["-r", "missing.npy", "-t", "0"], r"references file not found"),
        (["-r", "BAD", "-t", "0"], r"references .* have shape \(5, 3\)"),
        (["--shuffles", "2", "-t", "0", "-i"], None),
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
    names = {"BAD": str(tmp_path / "BAD.npy"), "EMPTY": str(tmp_path / "EMPTY.npy")}
    args = [names.get(a, a) for a in args]
    if message is None:  # unknown option: argparse's own error, also exit status 2
        with pytest.raises(SystemExit) as e:
            _run(tmp_path, *args)
        assert e.value.code == 2
        return
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepliftjax-attribute: error:")
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
    ]
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "cont.npy", np.random.default_rng(0).normal(size=(3, L, 4)))
    for argv, message in cases:
        code = main([*argv, "-o", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0, err
        else:
            assert code == 2 and message in err, (argv, err)
