"""minicnn export / import: ONNX Runtime runs the exported (compacted) model as minicnn does; the torch
and safetensors files rebuild the model in torch.nn with the masks holding through training; import
reads plain and pruning-layout state_dicts, round-trips bit for bit, and refuses bad ones in one line.

The export packages are optional (pip install -e ".[export]"): tests needing one skip without it.
"""

from __future__ import annotations

import json
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_clean_error, invoke

from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
from minicnn.io.data import load_cifar10, normalize
from minicnn.nn.model import build_model
from minicnn.pruning.masks import prune_model

SMALL_SPEC = "conv6,relu,conv5s2,relu,pool2,flatten,linear12,relu,linear10"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch, tmp_path):
    """Only the tests that ask for real data read it; nothing builds the user's cache."""
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "cache"))


def assert_ok(result):
    assert result.exit_code == 0, result.output


def pruned_model(arch: str, how: str, seed: int = 0):
    """A freshly initialised model, dense or pruned ('unstructured' 70 %, 'structured' half the filters)."""
    model = build_model(arch, np.random.default_rng(seed))
    if how != "dense":
        prune_model(model, 0.7 if how == "unstructured" else 0.5, how)
    return model


def save(model, path, normalize_mode="center") -> Path:
    return save_checkpoint(path, model, config={"arch": model.arch, "normalize": normalize_mode}, epoch=1)


def minicnn_logits(checkpoint, x_uint8, mode="center", stats=(None, None)) -> np.ndarray:
    model, _ = load_checkpoint(checkpoint)  # the full-size model, fast kernels
    return model.forward(normalize(x_uint8, mode, *stats), for_backward=False)


def needs_onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def onnx_session(path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(path):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto, {p.key: p.value for p in proto.metadata_props}


def assert_same_predictions(got, want, atol):
    assert got.shape == want.shape
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


# ------------------------------------------------------------------------ ONNX on real CIFAR-10
@pytest.fixture(scope="module")
def real_checkpoints(real_data, tmp_path_factory):
    """Dense, unstructured-pruned (70 %) and structured-pruned (4 of 8 filters) paper models trained one
    epoch on the first 2,000 CIFAR-10 training images; and the first 2,000 test images."""
    from minicnn.study.config import TrainConfig
    from minicnn.study.training import run_training

    folder = tmp_path_factory.mktemp("real-export")
    dataset = load_cifar10(real_data, train_limit=2000, test_limit=2000)
    config = TrainConfig(epochs=1, train_limit=2000, test_limit=2000)
    run_training(config, folder / "dense.h5", dataset=dataset, echo=lambda *a: None)
    paths = {"dense": folder / "dense.h5"}
    for how in ("unstructured", "structured"):
        model, info = load_checkpoint(paths["dense"])
        prune_model(model, 0.7 if how == "unstructured" else 0.5, how)
        paths[how] = save_checkpoint(folder / f"{how}.h5", model, config=info["config"], epoch=info["epoch"])
    return paths, dataset.x_test


@pytest.mark.slow
@pytest.mark.parametrize("how", ["dense", "unstructured", "structured"])
def test_onnx_runtime_matches_minicnn_on_cifar10(real_checkpoints, how, tmp_path):
    """Every predicted class equal and logits within 1e-4 on 2,000 real test images; the checker passes;
    a structured-pruned model is exported compacted (4 filters, fc1 reading 4 of 8 channels)."""
    needs_onnx()
    paths, x_test = real_checkpoints
    out = tmp_path / f"{how}.onnx"
    assert_ok(invoke("export", paths[how], "--format", "onnx", "--out", out))
    proto, meta = check_onnx(out)
    assert meta["normalize"] == "center" and meta["spec"] == "conv8,relu,pool2,flatten,linear10"
    got = onnx_session(out).run(["logits"], {"input": normalize(x_test, "center")})[0]
    assert_same_predictions(got, minicnn_logits(paths[how], x_test), atol=1e-4)
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    filters = 4 if how == "structured" else 8
    assert shapes["conv1.weight"] == (filters, 3, 3, 3) and shapes["fc1.weight"] == (10, filters * 256)


# ------------------------------------------------------------------------ ONNX without real data
def test_onnx_compacts_a_deeper_model_and_keeps_its_outputs(tmp_path, rng):
    """Two convs, a strided one, a hidden linear layer, structured-pruned: the compact graph is smaller
    and computes minicnn's logits; the batch dimension is dynamic."""
    needs_onnx()
    dense = save(pruned_model(SMALL_SPEC, "dense"), tmp_path / "d.h5")
    pruned = save(pruned_model(SMALL_SPEC, "structured"), tmp_path / "p.h5")
    for ckpt in (dense, pruned):
        assert_ok(invoke("export", ckpt, "--out", ckpt.with_suffix(".onnx")))
        check_onnx(ckpt.with_suffix(".onnx"))
    assert pruned.with_suffix(".onnx").stat().st_size < 0.5 * dense.with_suffix(".onnx").stat().st_size
    session = onnx_session(pruned.with_suffix(".onnx"))
    for n in (1, 7):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        got = session.run(None, {"input": normalize(x, "center")})[0]
        assert_same_predictions(got, minicnn_logits(pruned, x), atol=1e-4)


@pytest.mark.parametrize("mode", ["center", "unit", "standard"])
def test_onnx_with_preprocessing_takes_uint8_images(mode, make_synthetic_cache, tmp_path, rng):
    """--include-preprocessing: input 'image' uint8, the checkpoint's normalisation in the graph (for
    'standard' the data's channel statistics, also written in the metadata)."""
    needs_onnx()
    cache = make_synthetic_cache(64, 16)
    ckpt = save(pruned_model("paper", "structured"), tmp_path / "m.h5", mode)
    out = tmp_path / "m.onnx"
    assert_ok(invoke("export", ckpt, "--include-preprocessing", "--data", cache, "--out", out))
    _, meta = check_onnx(out)
    assert meta["normalize"] == mode and "uint8" in meta["input"]
    stats = (None, None)
    if mode == "standard":
        dataset = load_cifar10(cache)
        stats = (dataset.channel_mean, dataset.channel_std)
        assert json.loads(meta["channel_mean"]) == list(dataset.channel_mean)
    x = rng.integers(0, 256, (32, 3, 32, 32), dtype=np.uint8)
    got = onnx_session(out).run(None, {"image": x})[0]
    assert_same_predictions(got, minicnn_logits(ckpt, x, mode, stats), atol=1e-4)


def test_standard_normalisation_without_data_is_one_line(tmp_path):
    needs_onnx()
    ckpt = save(pruned_model("paper", "dense"), tmp_path / "m.h5", "standard")
    assert_clean_error(invoke("export", ckpt, "--out", tmp_path / "m.onnx"), "CIFAR-10 not found")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------- torch / safetensors: back into torch.nn
def read_export(path) -> tuple[dict, dict]:
    """(state_dict of torch tensors, metadata) of an exported .pt or .safetensors file."""
    torch = pytest.importorskip("torch")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    saved = torch.load(path, weights_only=True)
    return saved["state_dict"], saved["metadata"]


def torch_model_with_masks(state: dict, meta: dict):
    """README's recipe: nn.Sequential from the layer list, masks attached, state loaded."""
    from torch import nn
    from torch.nn.utils import prune

    make = {"conv": lambda c: nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"],
                                        c["padding"]),
            "linear": lambda c: nn.Linear(c["in_features"], c["out_features"]), "relu": lambda c: nn.ReLU(),
            "pool": lambda c: nn.MaxPool2d(c["kernel_size"], c["stride"]), "flatten": lambda c: nn.Flatten()}
    model = nn.Sequential(OrderedDict((c["name"], make[c["kind"]](c)) for c in json.loads(meta["layers"])))
    for name, module in model.named_children():
        for p in ("weight", "bias"):
            if f"{name}.{p}_mask" in state:
                prune.custom_from_mask(module, p, state[f"{name}.{p}_mask"])
    model.load_state_dict(state)
    return model


def needs(fmt: str):
    pytest.importorskip("torch")
    if fmt == "safetensors":
        pytest.importorskip("safetensors")


@pytest.mark.parametrize("how", ["unstructured", "structured"])
@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_state_dict_export_continues_training_in_torch(fmt, how, tmp_path, rng):
    """The export loads into the equivalent torch.nn model with prune.custom_from_mask: logits within
    1e-5 of minicnn's, masks equal to minicnn's, and one SGD step keeps every pruned weight at 0."""
    needs(fmt)
    import torch

    model = pruned_model(SMALL_SPEC, how)
    ckpt = save(model, tmp_path / "m.h5")
    out = tmp_path / f"m.{'pt' if fmt == 'torch' else 'safetensors'}"
    assert_ok(invoke("export", ckpt, "--format", fmt, "--out", out))
    net = torch_model_with_masks(*read_export(out))
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    logits = net(torch.from_numpy(normalize(x, "center")))
    np.testing.assert_allclose(logits.detach().numpy(), minicnn_logits(ckpt, x), rtol=0, atol=1e-5)
    masks = {(layer.name, p): m for layer in model.param_layers() for p, m in layer.masks.items()}
    assert masks and all(np.array_equal(getattr(net, n).get_buffer(f"{p}_mask").numpy(), m)
                         for (n, p), m in masks.items())
    assert (how == "structured") == any(p == "bias" for _, p in masks)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(rng.integers(0, 10, 16))).backward()
    opt.step()
    net(torch.zeros(1, 3, 32, 32))  # the forward pre-hook recomputes weight = weight_orig * weight_mask
    for (n, p), m in masks.items():
        value, orig = getattr(getattr(net, n), p), getattr(net, n).get_parameter(f"{p}_orig")
        assert np.all(value.detach().numpy()[m == 0] == 0) and np.all(orig.detach().numpy()[m == 0] == 0)
        assert not torch.equal(orig, before[f"{n}.{p}_orig"])  # the step did change the kept weights


def test_readme_recipe_runs(tmp_path, rng, monkeypatch):
    """The PyTorch lines in README's 'Exporting a pruned model' run as written on an export and give
    minicnn's logits."""
    needs("safetensors")
    import torch

    block = re.search(r"## Exporting a pruned model.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    ckpt = save(pruned_model("paper", "structured"), tmp_path / "m.h5")
    assert_ok(invoke("export", ckpt, "--format", "safetensors", "--out", tmp_path / "pruned.safetensors"))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    x = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    got = scope["model"](torch.from_numpy(normalize(x, "center"))).detach().numpy()
    np.testing.assert_allclose(got, minicnn_logits(ckpt, x), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ import
@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_import_then_export_is_bit_identical(fmt, tmp_path):
    """export -> import -> export gives the same bytes, and the imported checkpoint holds the original
    parameters and masks exactly."""
    needs(fmt)
    suffix = ".pt" if fmt == "torch" else ".safetensors"
    model = pruned_model(SMALL_SPEC, "structured")
    ckpt = save(model, tmp_path / "m.h5")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / f"m{suffix}", tmp_path / "b" / f"m{suffix}"
    assert_ok(invoke("export", ckpt, "--format", fmt, "--out", first))
    assert_ok(invoke("import", first, "--out", tmp_path / "imported.h5"))
    assert_ok(invoke("export", tmp_path / "imported.h5", "--format", fmt, "--out", second))
    assert first.read_bytes() == second.read_bytes()
    back, info = load_checkpoint(tmp_path / "imported.h5")
    assert info["config"]["normalize"] == "center" and back.spec == SMALL_SPEC
    for a, b in zip(model.param_layers(), back.param_layers()):
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
        assert a.masks.keys() == b.masks.keys() and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)


def torch_paper_net(seed=0):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2048, 10))


@pytest.mark.parametrize("pruned", [False, True])
def test_import_of_a_model_trained_in_torch(pruned, tmp_path, rng):
    """A state_dict saved by PyTorch (nn.Sequential index keys; pruned with torch's own l1_unstructured,
    whose weight_orig keeps the pruned values) becomes a checkpoint with torch's logits and masks, which
    `minicnn flops` reads."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune

    net = torch_paper_net()
    if pruned:
        prune.l1_unstructured(net[0], "weight", amount=0.5)
        prune.l1_unstructured(net[4], "weight", amount=0.9)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    assert_ok(invoke("import", tmp_path / "net.pt", "--arch", "paper", "--out", tmp_path / "net.h5"))
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    want = net(torch.from_numpy(normalize(x, "center"))).detach().numpy()
    np.testing.assert_allclose(minicnn_logits(tmp_path / "net.h5", x), want, rtol=0, atol=1e-5)
    model, _ = load_checkpoint(tmp_path / "net.h5")
    if pruned:
        for layer, module in zip(model.param_layers(), (net[0], net[4])):
            assert np.array_equal(layer.masks["weight"], module.weight_mask.numpy())
            assert np.all(layer.params["weight"][layer.masks["weight"] == 0] == 0)
    else:
        assert all(not layer.masks for layer in model.layers)
    result = invoke("flops", "--checkpoint", tmp_path / "net.h5", "--json")
    assert_ok(result)
    assert json.loads(result.output)["totals"]["params_nonzero"] < (20_714 if pruned else 20_715)


def _bad_state(kind: str) -> dict:
    net = torch_paper_net()
    state = dict(net.state_dict())
    if kind == "wrong shape":
        state["0.weight"] = state["0.weight"][:, :, :2, :2].clone()
    elif kind == "missing key":
        del state["4.bias"]
    elif kind == "unknown layer":
        state["7.weight"] = state["4.weight"].clone()
    elif kind == "not a mask":
        weight = state.pop("0.weight")
        state["0.weight_orig"], state["0.weight_mask"] = weight, weight.clone()
    return state


@pytest.mark.parametrize("kind, fragments", [
    ("wrong shape", ("0.weight (conv1.weight)", "(8, 3, 2, 2)", "(8, 3, 3, 3)")),
    ("missing key", ("missing key", "'4.bias'")),
    ("unknown layer", ("'7.weight'", "names no layer")),
    ("not a mask", ("0.weight_mask", "other than 0 and 1")),
])
def test_import_refuses_a_bad_state_dict_in_one_line(kind, fragments, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(_bad_state(kind), tmp_path / "bad.pt")
    assert_clean_error(invoke("import", tmp_path / "bad.pt", "--arch", "paper", "--out", tmp_path / "x.h5"),
                       *fragments)
    assert not (tmp_path / "x.h5").exists()


def test_import_needs_an_architecture_for_foreign_files(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch_paper_net().state_dict(), tmp_path / "net.pt")
    assert_clean_error(invoke("import", tmp_path / "net.pt"), "--arch")
    (tmp_path / "junk.pt").write_text("not a torch file")
    assert_clean_error(invoke("import", tmp_path / "junk.pt", "--arch", "paper"), "junk.pt")


# -------------------------------------------------------------------------- files and packages
def test_export_never_overwrites_without_force(tmp_path):
    needs_onnx()
    ckpt = save(pruned_model("paper", "dense"), tmp_path / "m.h5")
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    assert_clean_error(invoke("export", ckpt), "m.onnx", "--force")  # the default --out is m.onnx
    assert out.read_text() == "keep me"
    assert_ok(invoke("export", ckpt, "--force"))
    check_onnx(out)
    assert_clean_error(invoke("import", out, "--out", ckpt), "--force")  # nor an import's --out
    assert_clean_error(invoke("export", ckpt, "--format", "torch", "--include-preprocessing"), "onnx only")


@pytest.mark.parametrize("fmt, package, hint", [
    ("onnx", "onnx", 'pip install -e ".[export]"'),
    ("safetensors", "safetensors", 'pip install -e ".[export]"'),
    ("torch", "torch", "pip install torch"),
])
def test_a_missing_package_is_one_line(fmt, package, hint, tmp_path, monkeypatch):
    ckpt = save(pruned_model("paper", "dense"), tmp_path / "m.h5")
    monkeypatch.setitem(sys.modules, package, None)  # import now raises ImportError
    assert_clean_error(invoke("export", ckpt, "--format", fmt), package, hint)
    assert list(tmp_path.iterdir()) == [ckpt]
