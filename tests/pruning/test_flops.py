"""FLOP and parameter counts: hand-counted networks, and the effect of pruning on effective counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from minicnn import paper
from minicnn.pruning import flops, masks as prune
from minicnn.cli import cli
from minicnn.nn.model import build_model


def _model(arch="paper", seed=0):
    return build_model(arch, np.random.default_rng(seed), backend="ref")


def _rows(counts):
    return {r["name"]: r for r in counts["layers"]}


# ------------------------------------------------------------------------------- dense, by hand
def test_paper_model_by_hand():
    counts = flops.count(_model())
    rows = _rows(counts)
    assert list(rows) == ["conv1", "relu1", "pool1", "flatten1", "fc1"]
    # conv1: 3 -> 8 channels, 3x3, pad 1, output 8x32x32
    assert rows["conv1"]["output_shape"] == [8, 32, 32]
    assert rows["conv1"]["params"] == 8 * 3 * 3 * 3 + 8 == 224
    assert rows["conv1"]["flops_dense"] == 2 * 3 * 9 * 32 * 32 * 8 + 32 * 32 * 8 == 450_560
    assert rows["relu1"]["flops_dense"] == 8 * 32 * 32 == 8_192
    assert rows["pool1"]["output_shape"] == [8, 16, 16]
    assert rows["pool1"]["flops_dense"] == (2 * 2 - 1) * 8 * 16 * 16 == 6_144
    assert rows["flatten1"]["flops_dense"] == 0 and rows["flatten1"]["output_shape"] == [2048]
    assert rows["fc1"]["params"] == 2048 * 10 + 10 == 20_490
    assert rows["fc1"]["flops_dense"] == 2 * 2048 * 10 + 10 == 40_970
    t = counts["totals"]
    assert t["params"] == t["params_nonzero"] == t["params_effective"] == 20_714
    assert t["flops_dense"] == t["flops_effective"] == 450_560 + 8_192 + 6_144 + 40_970 == 505_866
    assert t["training_flops_dense"] == 3 * 505_866
    assert t["softmax_ce_flops"] == 4 * 10
    for r in counts["layers"]:
        assert r["flops_effective"] == r["flops_dense"]
        assert r["params_effective"] == r["params_nonzero"] == r["params"]


def _conv(c, f, k, h, w):
    """(params, flops) of a conv with output F x H x W: 2*C*K*K*OH*OW*F + OH*OW*F."""
    return f * c * k * k + f, 2 * c * k * k * h * w * f + h * w * f


def _linear(d, o):
    return d * o + o, 2 * d * o + o


def test_deeper_net_by_hand():
    spec = "conv4,relu,pool2,conv6k3,relu,pool2,flatten,linear12,relu,linear10"
    rows = _rows(flops.count(_model(spec)))
    # 3x32x32 -conv4-> 4x32x32 -pool-> 4x16x16 -conv6-> 6x16x16 -pool-> 6x8x8 -> 384 -> 12 -> 10
    expected = {
        "conv1": _conv(3, 4, 3, 32, 32),    # (112, 225_280)
        "relu1": (0, 4 * 32 * 32),
        "pool1": (0, 3 * 4 * 16 * 16),
        "conv2": _conv(4, 6, 3, 16, 16),    # (222, 112_128)
        "relu2": (0, 6 * 16 * 16),
        "pool2": (0, 3 * 6 * 8 * 8),
        "flatten1": (0, 0),
        "fc1": _linear(384, 12),            # (4_620, 9_228)
        "relu3": (0, 12),
        "fc2": _linear(12, 10),             # (130, 250)
    }
    assert expected["conv1"] == (112, 225_280) and expected["conv2"] == (222, 112_128)
    assert expected["fc1"] == (4_620, 9_228) and expected["fc2"] == (130, 250)
    assert {name: (r["params"], r["flops_dense"]) for name, r in rows.items()} == expected
    assert rows["pool2"]["output_shape"] == [6, 8, 8] and rows["flatten1"]["output_shape"] == [384]


def test_strided_unpadded_net_by_hand():
    spec = "conv5k5s2p0,relu,pool3s2,flatten,linear10"
    counts = flops.count(_model(spec))
    rows = _rows(counts)
    # conv: (32 - 5) // 2 + 1 = 14 -> 5x14x14; pool 3 stride 2: (14 - 3) // 2 + 1 = 6 -> 5x6x6 = 180
    assert rows["conv1"]["output_shape"] == [5, 14, 14] and rows["pool1"]["output_shape"] == [5, 6, 6]
    assert (rows["conv1"]["params"], rows["conv1"]["flops_dense"]) == _conv(3, 5, 5, 14, 14) == (380, 147_980)
    assert rows["relu1"]["flops_dense"] == 980
    assert rows["pool1"]["flops_dense"] == (3 * 3 - 1) * 5 * 6 * 6 == 1_440
    assert rows["fc1"]["flops_dense"] == 2 * 180 * 10 + 10 == 3_610
    assert counts["totals"]["flops_dense"] == 147_980 + 980 + 1_440 + 3_610


# ---------------------------------------------------------------------------- effective, pruned
@pytest.mark.parametrize("amount,k", list(zip(paper.AMOUNTS, [0, 1, 2, 2, 3, 4, 5, 6, 6, 7, 8, 8])))
def test_structured_pruning_of_conv1_lowers_effective_counts_exactly(amount, k):
    model = _model(seed=3)
    prune.prune_model(model, amount, "structured")
    counts = flops.count(model)
    rows = _rows(counts)
    live = 8 - k
    assert rows["conv1"]["units_active"] == live
    assert rows["conv1"]["flops_effective"] * 8 == live * 450_560          # weights and bias
    assert rows["conv1"]["params_effective"] == live * 28
    assert rows["conv1"]["params_nonzero"] == live * 28
    assert rows["relu1"]["flops_effective"] == live * 32 * 32
    assert rows["pool1"]["flops_effective"] == live * 3 * 16 * 16
    # each dead channel is 16*16 = 256 flattened features, read by 10 weights each
    assert rows["fc1"]["flops_effective"] == 40_970 - 2 * 10 * 256 * k
    assert rows["fc1"]["params_effective"] == 20_490 - 10 * 256 * k
    assert rows["fc1"]["params_nonzero"] == 20_490   # fc1 itself is untouched
    for r in counts["layers"]:
        assert r["flops_dense"] == _rows(flops.count(_model()))[r["name"]]["flops_dense"]
    t = counts["totals"]
    assert t["flops_effective"] == 505_866 - k * (56_320 + 1_024 + 768 + 5_120)
    assert t["training_flops_effective"] == 3 * t["flops_effective"]


def test_all_pruned_paper_model_keeps_only_output_bias():
    model = _model()
    prune.prune_model(model, 1.0, "structured")
    t = flops.count(model)["totals"]
    assert t["flops_effective"] == 10 and t["params_effective"] == 10


def test_dead_filter_depends_on_its_bias():
    """A filter with all-zero weights is dead when its bias is masked (or zero, or negative before a
    ReLU); with a positive unmasked bias it is a live constant map ReLU(b)."""
    def with_filter0(bias_value, masked):
        model = _model(seed=4)
        conv = model.layer("conv1")
        mask = np.ones_like(conv.params["weight"])
        mask[0] = 0
        conv.masks["weight"] = mask
        conv.params["weight"][0] = 0.0
        conv.params["bias"][0] = bias_value
        if masked:
            conv.masks["bias"] = np.array([0] + [1] * 7, np.float32)
            conv.params["bias"][0] = 0.0
        return _rows(flops.count(model))

    dense = _rows(flops.count(_model(seed=4)))
    for rows in (with_filter0(0.3, True), with_filter0(0.0, False), with_filter0(-0.3, False)):
        assert rows["conv1"]["units_active"] == 7
        assert rows["conv1"]["flops_effective"] == 7 * 56_320
        assert rows["relu1"]["flops_effective"] == 7 * 1_024
        assert rows["fc1"]["flops_effective"] == 40_970 - 2 * 10 * 256
        assert rows["fc1"]["params_effective"] == 20_490 - 2_560
    rows = with_filter0(0.3, False)  # torch's way: weights pruned, bias kept
    assert rows["conv1"]["units_active"] == 8
    assert rows["conv1"]["flops_effective"] == 7 * 56_320 + 32 * 32   # its bias still runs
    assert rows["conv1"]["params_effective"] == 7 * 28 + 1
    assert rows["relu1"]["flops_effective"] == dense["relu1"]["flops_effective"]
    assert rows["fc1"]["flops_effective"] == dense["fc1"]["flops_effective"]


def test_unit_read_by_nobody_is_dead():
    """Backward liveness: a conv channel whose every fc1 weight is zero does no useful work."""
    model = _model(seed=5)
    fc = model.layer("fc1")
    mask = np.ones_like(fc.params["weight"])
    mask[:, 3 * 256:4 * 256] = 0       # channel 3 of (8, 16, 16) is features 768 ... 1023
    fc.masks["weight"] = mask
    fc.params["weight"] *= mask
    rows = _rows(flops.count(model))
    assert rows["conv1"]["units_active"] == 7
    assert rows["conv1"]["flops_effective"] == 7 * 56_320
    assert rows["conv1"]["params_effective"] == 7 * 28 and rows["conv1"]["params_nonzero"] == 224
    assert rows["pool1"]["flops_effective"] == 7 * 768
    assert rows["fc1"]["flops_effective"] == 40_970 - 5_120


def test_flatten_maps_channel_to_its_own_features():
    """Channel c of (8, 16, 16) is features c*256 ... c*256 + 255: masking exactly the fc1 columns of
    a dead channel changes no effective count, masking other columns would."""
    model = _model(seed=9)
    conv, fc = model.layer("conv1"), model.layer("fc1")
    conv.masks["weight"] = np.ones_like(conv.params["weight"])
    conv.masks["weight"][2] = 0
    conv.masks["bias"] = np.array([1, 1, 0, 1, 1, 1, 1, 1], np.float32)
    conv.params["weight"][2] = 0.0
    conv.params["bias"][2] = 0.0
    before = _rows(flops.count(model))
    fc.masks["weight"] = np.ones_like(fc.params["weight"])
    fc.masks["weight"][:, 512:768] = 0
    fc.params["weight"][:, 512:768] = 0.0
    after = _rows(flops.count(model))
    assert after["fc1"]["params_nonzero"] == 20_490 - 2_560
    for key in ("params_effective", "flops_effective"):
        assert after["fc1"][key] == before["fc1"][key]
    assert after["fc1"]["params_effective"] == 20_490 - 2_560
    assert after["conv1"]["units_active"] == 7


def test_hidden_neuron_pruning_in_deeper_net():
    spec = "conv4,relu,pool2,flatten,linear12,relu,linear10"   # fc1: 1024 -> 12, fc2: 12 -> 10
    model = _model(spec, seed=6)
    summary = prune.prune_model(model, 0.5, "structured")      # 2 of 4 filters, 6 of 12 neurons
    assert summary["conv1"]["pruned"] == 2 and summary["fc1"]["pruned"] == 6
    rows = _rows(flops.count(model))
    assert rows["conv1"]["flops_effective"] == 2 * (2 * 27 * 1024 + 1024)
    assert rows["relu1"]["flops_effective"] == 2 * 1024 and rows["pool1"]["flops_effective"] == 2 * 3 * 256
    # fc1: 6 live neurons read 2 live channels * 256 features each, plus 6 biases
    assert rows["fc1"]["params_effective"] == 6 * 512 + 6
    assert rows["fc1"]["flops_effective"] == 2 * 6 * 512 + 6
    assert rows["relu2"]["flops_effective"] == 6
    assert rows["fc2"]["params_effective"] == 10 * 6 + 10
    assert rows["fc2"]["flops_effective"] == 2 * 10 * 6 + 10


def test_unstructured_effective_counts_follow_nonzeros():
    model = _model(seed=7)
    prune.prune_model(model, 0.5, "unstructured")
    rows = _rows(flops.count(model))
    nnz_conv = 216 - round(0.5 * 216)
    nnz_fc = 20_480 - round(0.5 * 20_480)
    assert rows["conv1"]["params_effective"] == rows["conv1"]["params_nonzero"] == nnz_conv + 8
    assert rows["conv1"]["flops_effective"] == 2 * nnz_conv * 1024 + 8 * 1024
    assert rows["fc1"]["flops_effective"] == 2 * nnz_fc + 10
    assert rows["relu1"]["flops_effective"] == 8_192


def test_format_table_lists_layers_and_totals():
    text = flops.format_table(flops.count(_model()))
    for word in ("conv1", "relu1", "pool1", "flatten1", "fc1", "total", "505,866", "20,714", "1 multiply-add"):
        assert word in text
    table = text.split("\n\n")[0].splitlines()   # header, rule, 5 layers, rule, total
    assert len(table) == 9
    assert len({len(line) for line in table}) == 1    # every column aligned to one width
    assert table[-1].startswith("total") and table[-1].endswith("505,866")


# ------------------------------------------------------------------------------------------- CLI
def test_cli_flops_json():
    result = CliRunner().invoke(cli, ["flops", "--arch", "paper", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["flops_dense"] == 505_866
    assert data["totals"]["params"] == 20_714
    assert [r["name"] for r in data["layers"]] == ["conv1", "relu1", "pool1", "flatten1", "fc1"]


def test_cli_flops_table_and_help():
    result = CliRunner().invoke(cli, ["flops"])
    assert result.exit_code == 0, result.output
    assert "505,866" in result.output
    help_text = CliRunner().invoke(cli, ["flops", "--help"]).output
    assert "1 multiply-add = 2 FLOPs" in help_text and "3 x forward" in help_text


def test_cli_flops_checkpoint_counts_its_masks(tmp_path):
    from minicnn.io.checkpoint import save_checkpoint

    model = _model(seed=8)
    prune.prune_model(model, 0.3, "structured")          # 2 of 8 conv1 filters
    path = save_checkpoint(tmp_path / "pruned.h5", model)
    result = CliRunner().invoke(cli, ["flops", "--checkpoint", str(path), "--json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.output)["totals"]
    assert totals["flops_dense"] == 505_866
    assert totals["flops_effective"] == 505_866 - 2 * (56_320 + 1_024 + 768 + 5_120)


@pytest.mark.parametrize("args", [["--arch", "resnet50"], ["--arch", "paper", "--checkpoint", "x.h5"],
                                  ["--checkpoint", "no/such/file.h5"]])
def test_cli_flops_user_errors_are_one_line(args):
    result = CliRunner().invoke(cli, ["flops", *args])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)   # a clean exit, not an escaped exception


# ------------------------------------------------------------------- specs sized before allocating
@pytest.mark.parametrize("spec", ["paper", "conv2", "conv4", "conv8k5s2p0,relu,pool3s2,linear10",
                                  "conv4k1p0,pool2,conv6k3s3p2,relu,flatten,linear32,relu,linear10"])
def test_spec_plan_matches_the_built_layers(spec):
    """plan_spec computes every shape and the parameter count without building anything; the built
    model's layers agree with it."""
    from minicnn.nn.footprint import parameter_count, training_bytes
    from minicnn.nn.model import plan_spec, resolve_arch

    plan = plan_spec(resolve_arch(spec)[1])
    model = _model(spec)
    assert [row[0] for row in plan] == [layer.kind for layer in model.layers]
    shape = (3, 32, 32)
    for (kind, _args, in_shape, out_shape), layer in zip(plan, model.layers):
        assert in_shape == shape and out_shape == layer.output_shape(shape)
        shape = out_shape
    assert parameter_count(plan) == model.num_params()
    params, activations = training_bytes(plan, 512)
    assert params == 16 * model.num_params() and activations > 512 * 2 * 3 * 32 * 32 * 4


@pytest.mark.parametrize("spec, message", [
    ("conv8s0,relu,pool2,flatten,linear10", "stride must be positive"),
    ("conv0,relu,pool2,flatten,linear10", "must be positive"),
    ("conv8k0,relu,pool2,flatten,linear10", "must be positive"),
    ("conv8,relu,pool2s0,flatten,linear10", "stride must be positive"),
    ("conv8,relu,pool64,flatten,linear10", "to nothing"),
    ("conv8k40p0,relu,flatten,linear10", "to nothing"),
    ("conv8,relu,pool2,flatten,linear10,conv8", "after flatten"),
    ("conv99999999,relu,pool2,flatten,linear10", "too large"),
    ("conv8p99999,relu,pool2,flatten,linear10", "too large"),
])
def test_degenerate_and_huge_specs_are_refused(spec, message):
    from minicnn.errors import MiniCNNError
    from minicnn.nn.model import check_arch

    with pytest.raises(MiniCNNError, match=message):
        check_arch(spec, 512)
    with pytest.raises(MiniCNNError, match=message):
        _model(spec)


def test_a_batch_too_large_for_memory_is_refused_with_its_size(monkeypatch):
    from minicnn.errors import MiniCNNError
    from minicnn.nn import footprint
    from minicnn.nn.model import check_arch

    monkeypatch.setattr(footprint, "available_memory", lambda: 10**9)
    check_arch("conv4", 64)
    with pytest.raises(MiniCNNError, match=r"'conv4' is too large: training it at batch 4096 needs about "
                                           r"[0-9.]+ GB .* 1.0 GB of memory"):
        check_arch("conv4", 4096)
    check_arch("conv4", None)  # its parameters alone fit


@pytest.mark.parametrize("arch", ["paper", "conv2", "conv4"])
def test_training_matmul_flops_equal_pytorchs_flop_counter(arch):
    """What benchmarks divide by time: a training step's FLOPs as torch.utils.flop_counter counts them on
    the same model (forward, loss, backward from one image; the image needs no gradient)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from torch import nn

    model = build_model(arch, np.random.default_rng(0), backend="ref")
    twin = {"conv": lambda c: nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"],
                                        c["padding"]),
            "linear": lambda c: nn.Linear(c["in_features"], c["out_features"]), "relu": lambda c: nn.ReLU(),
            "pool": lambda c: nn.MaxPool2d(c["kernel_size"], c["stride"]), "flatten": lambda c: nn.Flatten()}
    net = nn.Sequential(*[twin[layer.config()["kind"]](layer.config()) for layer in model.layers])
    x = torch.zeros((1, 3, 32, 32))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(x), torch.zeros(1, dtype=torch.long)).backward()
    assert flops.training_matmul_flops(model) == counter.get_total_flops()
