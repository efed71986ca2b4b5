"""Parity of DeepLIFT-SHAP on BPNet and ChromBPNet with bpnet-lite and tangermeme (float64).

The same random weights (a bpnet-lite model ported with ``bpnet_params_from_torch``) and
the same dinucleotide-shuffled references on both sides. Where the definitions match, the
scores agree to <= 1e-5 relative (in practice ~1e-14):

* counts: tangermeme's ``deep_lift_shap`` and bpnet-lite's wrapper vs ``counts_shap``.
* profile: bpnet-lite's wrapper (which registers ``logits * softmax(logits)`` as an
  elementwise nonlinearity) vs ``profile_shap(weighting="bpnet-lite")``.
* ChromBPNet: bpnet-lite's wrapper (``log``/``exp`` registered) for both targets.

Where they differ by definition, the tests show how: tangermeme's ``deep_lift_shap`` on
``ProfileWrapper`` without bpnet-lite's registration takes the plain gradient of that
product, so its scores do not sum to delta; the "fixed" (chrombpnet's reading of
``stop_gradient``) and "exact" weightings split the change differently from bpnet-lite's.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
pytest.importorskip("bpnetlite")
pytest.importorskip("tangermeme")

from bpnetlite.attribute import deep_lift_shap as bpnet_lite_dls  # noqa: E402
from bpnetlite.bpnet import BPNet as TorchBPNet  # noqa: E402
from bpnetlite.bpnet import CountWrapper, ProfileWrapper  # noqa: E402
from bpnetlite.chrombpnet import ChromBPNet as TorchChromBPNet  # noqa: E402
from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls  # noqa: E402

from deepliftjax import dinuc_shuffle  # noqa: E402
from deepliftjax.genomics import targets  # noqa: E402
from deepliftjax.genomics.models import (  # noqa: E402
    BPNet,
    ChromBPNet,
    bpnet_params_from_torch,
    chrombpnet_params_from_torch,
)

L, N, K = 260, 2, 3
TOL = 1e-5


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def _random_torch(module, seed, std=0.3):
    torch.manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.eye(4)[rng.integers(0, 4, (N, L))]  # (N, L, 4)
    ctl = rng.poisson(1.0, (N, L, 2)).astype(np.float64)
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(1), N)
        refs = np.stack(
            [
                np.asarray(dinuc_shuffle(k, jnp.asarray(xi), num_shuffles=K))
                for k, xi in zip(keys, x, strict=True)
            ]
        )  # (N, K, L, 4)
    return x, ctl, refs


def _torch_scores(fn, wrapped, x, refs, args=None):
    """(hypothetical, projected) from a torch DeepLIFT-SHAP function, channels last."""
    xt = torch.tensor(x.transpose(0, 2, 1))
    rt = torch.tensor(refs.transpose(0, 1, 3, 2))
    targs = None if args is None else tuple(torch.tensor(a.transpose(0, 2, 1)) for a in args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hyp = fn(wrapped, xt, args=targs, references=rt, device="cpu", hypothetical=True)
    hyp = hyp.detach().numpy().transpose(0, 2, 1)
    return hyp, hyp * x


def _ours(shap_fn, x, refs, args=()):
    """(hypothetical, projected, contributions) per example, float64."""
    hyp, con = [], []
    for i in range(len(x)):
        s = shap_fn(jnp.asarray(refs[i]))(jnp.asarray(x[i]), *(jnp.asarray(a[i]) for a in args))
        hyp.append(np.asarray(s.hypothetical))
        con.append(np.asarray(s.contributions))
    hyp = np.stack(hyp)
    return hyp, hyp * x, np.stack(con)


@pytest.fixture(scope="module")
def bpnet():
    tm = _random_torch(
        TorchBPNet(n_filters=8, n_layers=2, n_outputs=2, n_control_tracks=2, verbose=False), 0
    )
    net = BPNet(n_filters=8, n_layers=2, n_outputs=2, n_control_tracks=2)
    return tm, net


def test_bpnet_forward_matches(bpnet, data):
    tm, net = bpnet
    x, ctl, _ = data
    with jax.enable_x64(True):
        params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        p, c = net.apply(params, jnp.asarray(x), jnp.asarray(ctl))
        with torch.no_grad():
            tp, tc = tm(torch.tensor(x.transpose(0, 2, 1)), torch.tensor(ctl.transpose(0, 2, 1)))
        assert _rel(p, tp.numpy().transpose(0, 2, 1)) < 1e-12
        assert _rel(c, tc.numpy()) < 1e-12


def test_counts_parity_tangermeme_and_bpnet_lite(bpnet, data):
    tm, net = bpnet
    x, ctl, refs = data
    t_hyp, t_proj = _torch_scores(tangermeme_dls, CountWrapper(tm), x, refs, (ctl,))
    b_hyp, b_proj = _torch_scores(bpnet_lite_dls, CountWrapper(tm), x, refs, (ctl,))
    with jax.enable_x64(True):
        params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        model = lambda s, c: net.apply(params, s, c)  # noqa: E731
        shap = lambda r: targets.counts_shap(model, r, hypothetical=True)  # noqa: E731
        hyp, proj, _ = _ours(shap, x, refs, (ctl,))
    for theirs in (t_hyp, b_hyp):
        assert _rel(hyp, theirs) <= TOL
    for theirs in (t_proj, b_proj):
        assert _rel(proj, theirs) <= TOL


def test_profile_parity_bpnet_lite(bpnet, data):
    tm, net = bpnet
    x, ctl, refs = data
    b_hyp, b_proj = _torch_scores(bpnet_lite_dls, ProfileWrapper(tm), x, refs, (ctl,))
    with jax.enable_x64(True):
        params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        model = lambda s, c: net.apply(params, s, c)  # noqa: E731
        shap = lambda r: targets.profile_shap(  # noqa: E731
            model, r, weighting="bpnet-lite", hypothetical=True
        )
        hyp, proj, con = _ours(shap, x, refs, (ctl,))
        assert _rel(hyp, b_hyp) <= TOL
        assert _rel(proj, b_proj) <= TOL
        # and bpnet-lite's convention is exact: each reference's scores sum to T(x) - T(r)
        target = targets.profile_target(lambda s: model(s, jnp.asarray(ctl[0])))
        one = targets.profile_shap(
            lambda s: model(s, jnp.asarray(ctl[0])), refs[0][:1], weighting="bpnet-lite"
        )(jnp.asarray(x[0]))
        delta = target(jnp.asarray(x[0])) - target(jnp.asarray(refs[0][0]))
        assert abs(float(one.sum() - delta)) <= 1e-10 * max(1.0, abs(float(delta)))


def test_profile_differs_by_definition(bpnet, data):
    """Where the definitions differ, the scores do; this is how.

    * tangermeme's ``deep_lift_shap`` on bpnet-lite's ``ProfileWrapper``, without
      bpnet-lite's registration of ``_ProfileLogitScaling``, back-propagates the plain
      gradient through ``logits * softmax(logits)``: its scores do not sum to delta.
    * "fixed" (chrombpnet's target with the softmax weights held at the input, our
      ``stop_gradient="constant"``) and "exact" (the whole target, ``"pass"``) are other
      splits of the change than bpnet-lite's elementwise secant.
    """
    tm, net = bpnet
    x, ctl, refs = data
    t_hyp, _ = _torch_scores(tangermeme_dls, ProfileWrapper(tm), x, refs, (ctl,))
    b_hyp, _ = _torch_scores(bpnet_lite_dls, ProfileWrapper(tm), x, refs, (ctl,))
    assert _rel(t_hyp, b_hyp) > 1e-2
    with jax.enable_x64(True):
        params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        model = lambda s, c: net.apply(params, s, c)  # noqa: E731
        for weighting in ("fixed", "exact", "chrombpnet"):
            shap = lambda r, w=weighting: targets.profile_shap(  # noqa: E731
                model, r, weighting=w, hypothetical=True
            )
            hyp, _, _ = _ours(shap, x, refs, (ctl,))
            assert _rel(hyp, b_hyp) > 1e-3, weighting


def test_chrombpnet_parity_bpnet_lite(data):
    x, _, refs = data
    bias = _random_torch(TorchBPNet(4, 1, n_outputs=1, n_control_tracks=0, verbose=False), 1)
    acc = _random_torch(TorchBPNet(6, 2, n_outputs=1, n_control_tracks=0, verbose=False), 2)
    tm = TorchChromBPNet(bias, acc).double().eval()
    net = ChromBPNet(BPNet(4, 1, 1, 0), BPNet(6, 2, 1, 0))
    with jax.enable_x64(True):
        params = chrombpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        model = lambda s: net.apply(params, s)  # noqa: E731
        with torch.no_grad():
            tp, tc = tm(torch.tensor(x.transpose(0, 2, 1)))
        p, c = jax.vmap(model)(jnp.asarray(x))
        assert _rel(p, tp.numpy().transpose(0, 2, 1)) < 1e-12 and _rel(c, tc.numpy()) < 1e-12
        for wrapper, shap in (
            (CountWrapper, lambda r: targets.counts_shap(model, r, hypothetical=True)),
            (
                ProfileWrapper,
                lambda r: targets.profile_shap(model, r, weighting="bpnet-lite", hypothetical=True),
            ),
        ):
            b_hyp, b_proj = _torch_scores(bpnet_lite_dls, wrapper(tm), x, refs)
            hyp, proj, _ = _ours(shap, x, refs)
            assert _rel(hyp, b_hyp) <= TOL, wrapper.__name__
            assert _rel(proj, b_proj) <= TOL, wrapper.__name__
