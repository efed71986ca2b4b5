"""PyTorch modules attributed as they are: ``deepliftjax.torch.from_torch``.

Parity with Captum where its module hooks are correct (``nn.ReLU`` modules, float64), exact
where they are not (``F.relu``/``F.max_pool1d`` in ``forward``: Captum's sums are off),
bpnet-lite's BPNet and ChromBPNet equal to the hand-written port and to tangermeme/bpnet-lite
(float64), a ResNet-18 (torchvision's architecture, random weights, 64 x 64) exact.
"""

from __future__ import annotations

import doctest
import importlib.util
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None:  # imported by deepliftjax.torch, not here
    pytest.skip("needs torchax (the torch extra)", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import deepliftjax.torch as dltorch  # noqa: E402
from deepliftjax import DeepLiftError, deeplift, deeplift_shap, dinuc_shuffle  # noqa: E402
from deepliftjax.torch import from_torch  # noqa: E402

L, N, K = 40, 3, 4


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _random(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Random weights and BatchNorm statistics, so no layer is an identity."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


def _onehot(seed: int, n: int, length: int = L) -> np.ndarray:
    """(n, 4, length) channels-first one-hot DNA, as PyTorch genomics models take it."""
    rng = np.random.default_rng(seed)
    return np.eye(4)[rng.integers(0, 4, (n, length))].transpose(0, 2, 1)


def _summation(f, c, x, r) -> float:
    """Worst relative |sum(C) - Δf| over a batch."""
    delta = jax.vmap(f)(x) - jax.vmap(f)(r) if r.ndim == x.ndim else jax.vmap(f)(x) - f(r)
    total = np.asarray(c).reshape(len(x), -1).sum(1)
    return float(np.max(np.abs(total - np.asarray(delta)) / np.maximum(np.abs(delta), 1e-12)))


def test_docstring_example():
    result = doctest.testmod(dltorch, raise_on_error=False, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


# ---------------------------------------------------------------- Captum where it is correct
def _module_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(4, 6, 5, padding=2),
        nn.ReLU(),
        nn.AvgPool1d(2),
        nn.Conv1d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * L // 2, 3),
    )


def test_equals_captum_deeplift_and_deepliftshap_on_module_relus():
    from captum.attr import DeepLift, DeepLiftShap

    model = _random(_module_cnn(), 0).double()
    x = _onehot(1, N)
    refs = _onehot(2, K)
    ref = np.full((4, L), 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xt = torch.tensor(x, requires_grad=True)
        theirs = DeepLift(model).attribute(xt, baselines=torch.tensor(ref[None]), target=1)
        theirs_shap = DeepLiftShap(model).attribute(xt, baselines=torch.tensor(refs), target=1)
    with jax.enable_x64(True):
        fn, params = from_torch(model, torch.tensor(x[0]))
        f = lambda s: fn(params, s)[1]  # noqa: E731
        ours = jax.jit(jax.vmap(deeplift(f, jnp.asarray(ref))))(jnp.asarray(x))
        ours_shap = jax.vmap(deeplift_shap(f, jnp.asarray(refs)))(jnp.asarray(x))
        assert ours.dtype == jnp.float64
        assert _rel(ours, theirs.detach().numpy()) < 1e-10
        assert _rel(ours_shap, theirs_shap.detach().numpy()) < 1e-10
        assert _summation(f, ours, jnp.asarray(x), jnp.asarray(ref)) < 1e-10


# ---------------------------------------------------------------- functional calls
class _FunctionalCNN(nn.Module):
    """The same kind of CNN with ``F.relu``/``F.max_pool1d`` in ``forward``: no hooks see them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * L // 4, 2)

    def forward(self, x):
        h = F.max_pool1d(F.relu(self.conv1(x)), 2)
        h = F.max_pool1d(F.relu(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


def test_functional_calls_exact_where_captum_is_not():
    from captum.attr import DeepLift

    model = _random(_FunctionalCNN(), 3)
    x = _onehot(4, 8).astype(np.float32)
    ref = np.zeros((4, L), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, delta = DeepLift(model).attribute(
            torch.tensor(x, requires_grad=True),
            baselines=torch.tensor(ref[None]),
            target=0,
            return_convergence_delta=True,
        )
    with torch.no_grad():
        d_f = (model(torch.tensor(x)) - model(torch.tensor(ref[None])))[:, 0].numpy()
    captum_rel = np.abs(delta.detach().numpy()) / np.maximum(np.abs(d_f), 1e-12)
    assert captum_rel.max() > 1e-2  # Captum's hooks miss F.relu: its sums are off

    fn, params = from_torch(model, torch.tensor(x[0]))
    f = lambda s: fn(params, s)[0]  # noqa: E731
    xj, rj = jnp.asarray(x), jnp.asarray(ref)
    for g in (jax.vmap(deeplift(f, rj)), jax.jit(jax.vmap(deeplift(f, rj)))):
        assert _summation(f, g(xj), xj, rj) <= 1e-5
    plain = deeplift(f, rj)(xj[0])
    assert abs(float(plain.sum()) - float(f(xj[0]) - f(rj))) <= 1e-5 * abs(float(f(xj[0]) - f(rj)))
    # jax.grad of the converted function is torch's gradient
    xt = torch.tensor(x[:1], requires_grad=True)
    model(xt)[0, 0].backward()
    assert _rel(jax.grad(f)(xj[0]), xt.grad[0].numpy()) < 1e-5


# ---------------------------------------------------------------- conventions and errors
def test_batched_convention_eval_mode_and_module_untouched():
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model = _random(model, 5).train()
    x = torch.randn(6, 5)
    fn, params = from_torch(model, x, batched=True)
    assert model.training  # the user's module keeps its mode
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    assert _rel(fn(params, jnp.asarray(x.numpy())), want) < 1e-5  # BN statistics, no dropout
    one, params1 = from_torch(model, x[0])
    assert _rel(jax.vmap(lambda s: one(params1, s))(jnp.asarray(x.numpy())), want) < 1e-5


def test_errors_are_clear():
    model = nn.Sequential(nn.Conv1d(4, 2, 3))
    with pytest.raises(DeepLiftError, match="torch.nn.Module"):
        from_torch(lambda x: x, torch.ones(4, 10))
    with pytest.raises(DeepLiftError, match="(?s)fails on example_input of shape.*Hint: pass"):
        from_torch(model, torch.ones(3, 4, 10))  # a batch given as one example
    fn, params = from_torch(model, torch.ones(3, 4, 10), batched=True)
    assert fn(params, jnp.ones((3, 4, 10))).shape == (3, 2, 8)


# ---------------------------------------------------------------- bpnet-lite's models
def test_several_inputs_sequence_and_control_track():
    pytest.importorskip("bpnetlite")
    from bpnetlite.bpnet import BPNet as TorchBPNet

    tm = _random(TorchBPNet(8, 2, n_outputs=2, n_control_tracks=2, verbose=False), 6)
    x = _onehot(7, 2, 120).astype(np.float32)
    ctl = np.random.default_rng(8).poisson(1.0, (2, 2, 120)).astype(np.float32)
    fn, params = from_torch(tm, (torch.tensor(x[0]), torch.tensor(ctl[0])))
    with torch.no_grad():
        want = tm(torch.tensor(x), torch.tensor(ctl))[1].numpy()
    f = lambda s, c: fn(params, s, c)[1][0]  # noqa: E731 - log counts of strand-summed reads
    assert _rel(jax.vmap(f)(jnp.asarray(x), jnp.asarray(ctl)), want[:, 0]) < 1e-5
    ref = jnp.full((4, 120), 0.25)
    c = jax.jit(jax.vmap(deeplift(f, ref), in_axes=(0, 0)))(jnp.asarray(x), jnp.asarray(ctl))
    delta = jax.vmap(lambda s, k: f(s, k) - f(ref, k))(jnp.asarray(x), jnp.asarray(ctl))
    assert c.shape == x.shape
    np.testing.assert_allclose(c.sum((1, 2)), delta, rtol=1e-5, atol=1e-6)


def _bpnet_parity_data():
    x = np.eye(4)[np.random.default_rng(0).integers(0, 4, (2, 260))]  # (N, L, 4)
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(1), len(x))
        refs = np.stack(
            [
                np.asarray(dinuc_shuffle(k, jnp.asarray(xi), 3))
                for k, xi in zip(keys, x, strict=True)
            ]
        )
    return x, refs


def _channels_last(fn, params):
    """A channels-first (4, L) -> (profile (strands, L'), counts) model as the port's layout."""

    def model(s):
        p, c = fn(params, s.T)
        return p.T, c

    return model


def _compare_targets(tm, port_model, x, refs):
    from deepliftjax.genomics import targets

    fn, params = from_torch(tm, torch.tensor(x[0].T))
    ours_model = _channels_last(fn, params)
    for shap in (
        lambda m, r: targets.counts_shap(m, r, hypothetical=True),
        lambda m, r: targets.profile_shap(m, r, weighting="bpnet-lite", hypothetical=True),
    ):
        for xi, ri in zip(x, refs, strict=True):
            a = shap(ours_model, jnp.asarray(ri))(jnp.asarray(xi))
            b = shap(port_model, jnp.asarray(ri))(jnp.asarray(xi))
            assert a.contributions.dtype == jnp.float64
            assert _rel(a.contributions, b.contributions) <= 1e-10
            assert _rel(a.hypothetical, b.hypothetical) <= 1e-10
    return ours_model


def test_bpnet_lite_bpnet_equals_port_and_tangermeme():
    pytest.importorskip("bpnetlite")
    pytest.importorskip("tangermeme")
    from bpnetlite.bpnet import BPNet as TorchBPNet
    from bpnetlite.bpnet import CountWrapper
    from tangermeme.deep_lift_shap import deep_lift_shap

    from deepliftjax.genomics import targets
    from deepliftjax.genomics.models import BPNet, bpnet_params_from_torch

    tm = _random(TorchBPNet(8, 2, n_outputs=2, n_control_tracks=0, verbose=False), 0).double()
    x, refs = _bpnet_parity_data()
    with jax.enable_x64(True):
        params = bpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        net = BPNet(n_filters=8, n_layers=2, n_outputs=2, n_control_tracks=0)
        ours = _compare_targets(tm, lambda s: net.apply(params, s), x, refs)
        hyp = np.stack(
            [
                np.asarray(
                    targets.counts_shap(ours, jnp.asarray(r), hypothetical=True)(
                        jnp.asarray(s)
                    ).hypothetical
                )
                for s, r in zip(x, refs, strict=True)
            ]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = deep_lift_shap(
            CountWrapper(tm),
            torch.tensor(x.transpose(0, 2, 1)),
            references=torch.tensor(refs.transpose(0, 1, 3, 2)),
            device="cpu",
            hypothetical=True,
        )
    assert _rel(hyp, theirs.detach().numpy().transpose(0, 2, 1)) <= 1e-10


def test_bpnet_lite_chrombpnet_equals_port():
    pytest.importorskip("bpnetlite")
    from bpnetlite.bpnet import BPNet as TorchBPNet
    from bpnetlite.chrombpnet import ChromBPNet as TorchChromBPNet

    from deepliftjax.genomics.models import BPNet, ChromBPNet, chrombpnet_params_from_torch

    bias = _random(TorchBPNet(4, 1, n_outputs=1, n_control_tracks=0, verbose=False), 1)
    acc = _random(TorchBPNet(6, 2, n_outputs=1, n_control_tracks=0, verbose=False), 2)
    tm = TorchChromBPNet(bias, acc).double().eval()
    x, refs = _bpnet_parity_data()
    with jax.enable_x64(True):
        params = chrombpnet_params_from_torch(tm.state_dict(), dtype=jnp.float64)
        net = ChromBPNet(BPNet(4, 1, 1, 0), BPNet(6, 2, 1, 0))
        _compare_targets(tm, lambda s: net.apply(params, s), x, refs)


# ---------------------------------------------------------------- ResNet-18
class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18`` architecture (torchvision itself has no CPU build for torch
    2.13 on this project's registry: its wheel fails to load its operators)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, layers, cin = (64, 128, 256, 512), [], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_BasicBlock(cin, w, stride), _BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _assert_exact_on_images(model: nn.Module, shape: tuple[int, ...], output: int) -> None:
    """DeepLIFT of one output of a converted image model, against a zero reference, sums to
    delta to 1e-5 (float32) under jit(vmap) on two random images."""
    x = torch.randn(2, *shape)
    fn, params = from_torch(model, x[0])
    f = lambda s: fn(params, s)[output]  # noqa: E731
    ref = jnp.zeros(shape)
    xj = jnp.asarray(x.numpy())
    c = jax.jit(jax.vmap(deeplift(f, ref)))(xj)
    assert _summation(f, c, xj, ref) <= 1e-5
    assert float(jnp.abs(c).sum()) > 0


def test_resnet18_exact():
    model = ResNet18()
    torch.manual_seed(0)
    for m in model.modules():  # random BatchNorm statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    _assert_exact_on_images(model.eval(), (3, 64, 64), output=3)


# ---------------------------------------------------------------- enformer-pytorch
def test_enformer_pytorch_small_deeplift_shap_sums_to_delta():
    pytest.importorskip("enformer_pytorch")
    from enformer_pytorch import Enformer as TorchEnformer

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm = TorchEnformer.from_hparams(
            dim=48, depth=1, heads=2, output_heads={"human": 4}, target_length=4,
            num_downsamples=3, dim_divisible_by=8,
        )  # fmt: skip
    # attention pooling, relative positional attention, GELU, BatchNorm, softplus
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (256,), 0, 4), 4)  # (L, 4)
    refs = dinuc_shuffle(jax.random.key(1), x, num_shuffles=8)
    for dtype, tol in ((None, 1e-5), (torch.float64, 1e-10)):
        with jax.enable_x64(dtype is not None):
            dt = jnp.float32 if dtype is None else jnp.float64
            xd, rd = x.astype(dt), refs.astype(dt)
            fn, params = from_torch(tm, torch.tensor(np.asarray(xd)), dtype=dtype)
            f = lambda s: fn(params, s)["human"][1:3, 0].sum()  # noqa: E731, B023
            s = jax.jit(deeplift_shap(f, rd, return_residuals=True))(xd)
            delta = f(xd) - jax.vmap(f)(rd)
            assert s.contributions.dtype == xd.dtype
            assert float(s.residuals) <= tol * max(1.0, float(jnp.abs(f(xd))))
            np.testing.assert_allclose(s.contributions.sum(), delta.mean(), rtol=0, atol=tol)


# ---------------------------------------------------------------- errors name the torch line
class _Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        return self.fc(torch.sort(x, dim=-1).values)  # no DeepLIFT rule for sort


def test_unsupported_op_names_the_primitive_and_the_forward_line():
    fn, params = from_torch(_Sorted(), torch.ones(6))
    with pytest.raises(DeepLiftError) as info:
        deeplift(lambda x: fn(params, x)[0], jnp.zeros(6))(jnp.arange(6.0))
    message = str(info.value)
    assert "'sort'" in message and "Hint:" in message
    line = _Sorted.forward.__code__.co_firstlineno + 1
    assert f"test_torch.py:{line} (_Sorted.forward)" in message


# ---------------------------------------------------------------- the CLI takes a torch module
def test_cli_takes_a_torch_module_channels_first(tmp_path):
    from deepliftjax._cli import main

    (tmp_path / "tmodel.py").write_text(
        "import torch\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 5, padding=2), torch.nn.ReLU(),\n"
        f"    torch.nn.Flatten(), torch.nn.Linear(6 * {L}, 2))\n"
        "def load():\n"
        "    return model\n"
    )
    x = _onehot(9, 5).astype(np.float32)  # (N, 4, L)
    np.save(tmp_path / "x.npy", x)
    for name in ("model", "load"):  # the module, or a function of no arguments returning it
        out = tmp_path / name
        argv = [f"{tmp_path / 'tmodel.py'}:{name}", str(tmp_path / "x.npy"), "-o", str(out)]
        argv += ["--alphabet-axis", "0", "--shuffles", "3", "-t", "1", "--hypothetical"]
        assert main([*argv, "--no-progress"]) == 0
    import runpy

    module = runpy.run_path(str(tmp_path / "tmodel.py"))["model"]
    fn, params = from_torch(module, torch.tensor(x[0]))
    f = lambda s: fn(params, s)[1]  # noqa: E731
    keys = jax.random.split(jax.random.key(0), len(x))
    refs = jax.vmap(lambda k, s: dinuc_shuffle(k, s, 3, alphabet_axis=0))(keys, jnp.asarray(x))
    want = jax.vmap(lambda s, r: deeplift_shap(f, r)(s))(jnp.asarray(x), refs)
    for name in ("model", "load"):
        got = np.load(tmp_path / name / "contributions.npy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.load(tmp_path / name / "hypothetical.npy").shape == x.shape


# ---------------------------------------------------------------- VGG-16
def test_vgg16_exact():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, cin = [], 3
    for v in cfg:  # torchvision's vgg16 features
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    torch.manual_seed(0)
    model = nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d((7, 7)),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, 256),  # torchvision's classifier, narrower (4096 there)
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(256, 10),
    ).eval()
    for m in model.modules():  # torchvision's initialisation (torch's default fades out)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.normal_(m.bias, 0.0, 0.01)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.normal_(m.bias, 0.0, 0.01)
    _assert_exact_on_images(model, (3, 32, 32), output=4)


def test_bfloat16_copy_and_input_equal_to_reference():
    """``dtype=torch.bfloat16`` converts (NumPy has no bfloat16: the check compares in
    float32) and sums to delta within bfloat16's rounding; an input equal to the reference
    scores exactly 0."""
    model = _random(_FunctionalCNN(), 11)
    x = jnp.asarray(_onehot(12, 1)[0], jnp.float32)
    ref = jnp.full((4, L), 0.25)
    fn, params = from_torch(model, torch.tensor(np.asarray(x)))
    f = lambda s: fn(params, s)[0]  # noqa: E731
    assert float(jnp.abs(jax.jit(deeplift(f, x))(x)).max()) == 0.0
    fnb, pb = from_torch(model, torch.tensor(np.asarray(x)), dtype=torch.bfloat16)
    fb = lambda s: fnb(pb, s)[0]  # noqa: E731
    xb, rb = x.astype(jnp.bfloat16), ref.astype(jnp.bfloat16)
    c = jax.jit(deeplift(fb, rb))(xb)
    assert c.dtype == jnp.bfloat16
    delta = float(fb(xb)) - float(fb(rb))
    scale = max(abs(float(fb(xb))), abs(float(fb(rb))))
    assert abs(float(c.astype(jnp.float32).sum()) - delta) <= 2 * 2**-8 * scale  # 2 ulp
    assert abs(float(fb(xb)) - float(f(x))) <= 0.05 * max(abs(float(f(x))), 1.0)
