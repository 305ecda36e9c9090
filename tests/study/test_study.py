"""Pruning runs end to end: resume after interruption (between steps and mid-step) reproduces the
uninterrupted table; settings are guarded; compaction is exact; sweep + plot + report smoke test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.errors import MiniCNNError
from minicnn.io.checkpoint import load_checkpoint
from minicnn.io.data import load_cifar10
from minicnn.nn.model import build_model
from minicnn.pruning.compact import compact, expand_into, removed_units
from minicnn.pruning.masks import prune_model
from minicnn.study.config import PruneConfig, SweepConfig, TrainConfig
from minicnn.study.results import load_results
from minicnn.study.rundir import step_path
from minicnn.study.runs import run_prune

TABLE_KEYS = ("step", "amount", "params_effective", "flops_effective", "test_acc_before", "test_acc_after",
              "train_acc", "train_loss", "test_loss", "diverged")


class Interrupt(Exception):
    pass


def prune_config(**over) -> PruneConfig:
    settings = {"schedule": "iterative", "method": "structured", "lr": 0.05, "amounts": (0.0, 0.3, 0.6, 0.9),
                "epochs": 2, "batch_size": 64, "seed": 3, **over}
    return PruneConfig(**settings)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, make_synthetic_cache):
    """A baseline trained briefly on synthetic data, shared by the runs of this module."""
    from minicnn.study.training import run_training

    data_path = make_synthetic_cache(384, 128, seed=5)
    path = tmp_path_factory.mktemp("baseline") / "baseline.h5"
    config = TrainConfig(epochs=1, lr=0.05, batch_size=64, seed=3)
    run_training(config, path, data_path=str(data_path), echo=lambda *_: None)
    return str(path), str(data_path)


def table(rows):
    return [tuple(round(getattr(r, k), 6) if isinstance(getattr(r, k), float) else getattr(r, k) for k in TABLE_KEYS)
            for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, baseline):
    path, data_path = baseline
    out = tmp_path_factory.mktemp("full")
    run_prune(prune_config(baseline=path), out, data_path=data_path, echo=lambda *_: None)
    return table(load_results(out))


def test_resume_between_steps_gives_the_same_table(tmp_path, baseline, uninterrupted):
    path, data_path = baseline

    def stop_after_two(done, total):
        if done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_prune(prune_config(baseline=path), tmp_path, data_path=data_path, echo=lambda *_: None,
                  step_progress=stop_after_two)
    assert len(load_results(tmp_path)) == 2
    run_prune(prune_config(baseline=path), tmp_path, data_path=data_path, echo=lambda *_: None)
    assert table(load_results(tmp_path)) == uninterrupted


def test_resume_mid_step_gives_the_same_table(tmp_path, baseline, uninterrupted):
    import contextlib

    path, data_path = baseline
    calls = {"epochs": 0}

    @contextlib.contextmanager
    def progress(label, n):
        calls["epochs"] += 1
        seen = {"batches": 0}

        def update(k, loss, ips):
            seen["batches"] += 1
            if calls["epochs"] == 6 and seen["batches"] == 3:  # step 2, epoch 2, third batch
                raise Interrupt

        yield update

    with pytest.raises(Interrupt):
        run_prune(prune_config(baseline=path), tmp_path, data_path=data_path, echo=lambda *_: None,
                  progress_factory=progress)
    finished = load_results(tmp_path)
    assert [r.step for r in finished] == [0, 1]
    assert not step_path(tmp_path, 2, 0.6).exists()
    run_prune(prune_config(baseline=path), tmp_path, data_path=data_path, echo=lambda *_: None)
    assert table(load_results(tmp_path)) == uninterrupted


def test_recorded_accuracies_are_those_of_the_saved_full_size_model(tmp_path, baseline):
    """A step measures its result on the compacted model (faster); the row must still be exactly the
    accuracy of the full-size model it saves."""
    from minicnn.io.data import make_normalizer
    from minicnn.nn.train import evaluate

    path, data_path = baseline
    rows = run_prune(prune_config(baseline=path, amounts=[0.0, 0.5], epochs=1), tmp_path, data_path=data_path,
                     echo=lambda *_: None)
    data = load_cifar10(data_path)
    normalizer = make_normalizer("center", data)
    for row in rows:
        model, _ = load_checkpoint(step_path(tmp_path, row.step, row.amount))
        assert evaluate(model, data.x_test, data.y_test, normalizer)["acc"] == row.test_acc_after
        assert evaluate(model, data.x_train, data.y_train, normalizer)["acc"] == row.train_acc
    assert rows[1].params_effective < rows[0].params_effective  # filters were really removed


def test_finished_run_is_not_redone(tmp_path, baseline):
    path, data_path = baseline
    config = prune_config(baseline=path, amounts=[0.0, 0.5], epochs=1)
    run_prune(config, tmp_path, data_path=data_path, echo=lambda *_: None)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "steps").iterdir()}
    said = []
    run_prune(config, tmp_path, data_path=data_path, echo=said.append)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "steps").iterdir()} == before
    assert any("already finished" in s for s in said)


def test_other_settings_are_refused_and_force_starts_over(tmp_path, baseline):
    path, data_path = baseline
    run_prune(prune_config(baseline=path, amounts=[0.0, 0.5], epochs=1), tmp_path, data_path=data_path,
              echo=lambda *_: None)
    csv_before = (tmp_path / "results.csv").read_bytes()
    with pytest.raises(MiniCNNError, match="other settings.*lr"):
        run_prune(prune_config(baseline=path, amounts=[0.0, 0.5], epochs=1, lr=0.01), tmp_path, data_path=data_path,
                  echo=lambda *_: None)
    assert (tmp_path / "results.csv").read_bytes() == csv_before
    rows = run_prune(prune_config(baseline=path, amounts=[0.0, 0.5], epochs=1, lr=0.01), tmp_path,
                     data_path=data_path, force=True, echo=lambda *_: None)
    assert [r.lr for r in rows] == [0.01, 0.01]


def test_baseline_of_another_architecture_is_refused(tmp_path, baseline):
    path, data_path = baseline
    with pytest.raises(MiniCNNError, match="not 'conv2'"):
        run_prune(prune_config(baseline=path, arch="conv2"), tmp_path, data_path=data_path, echo=lambda *_: None)


def test_masks_hold_and_shrink_across_iterative_steps(tmp_path, baseline):
    path, data_path = baseline
    config = prune_config(baseline=path, method="unstructured", amounts=[0.2, 0.5, 0.8], epochs=1)
    run_prune(config, tmp_path, data_path=data_path, echo=lambda *_: None)
    previous = None
    for step, amount in enumerate(config.amounts):
        model, _ = load_checkpoint(step_path(tmp_path, step, amount), backend="ref")
        for layer in model.prunable_layers():
            mask = layer.masks["weight"]
            assert np.all(layer.params["weight"][mask == 0] == 0.0)
            assert int((mask == 0).sum()) == round(amount * mask.size)
            if previous is not None:
                assert np.all(mask <= previous[layer.name])
        previous = {layer.name: layer.masks["weight"] for layer in model.prunable_layers()}


@pytest.mark.parametrize("backend", ["ref", "fast"])
@pytest.mark.parametrize("spec", ["paper", "conv8,relu,pool2,conv6,relu,pool2,flatten,linear12,relu,linear10"])
@pytest.mark.parametrize("amount", [0.3, 0.6, 0.99])
def test_compaction_is_exact_and_expand_is_its_inverse(backend, spec, amount):
    rng = np.random.default_rng(0)
    model = build_model(spec, np.random.default_rng(1), backend=backend)
    prune_model(model, amount, "structured")
    small, kept = compact(model)
    n_removed = sum(int(removed_units(layer).sum()) for layer in model.prunable_layers()[:-1])
    assert n_removed > 0
    assert small.num_params() < model.num_params()
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(small.forward(x), model.forward(x), rtol=1e-5, atol=1e-5)
    for layer in small.param_layers():  # change the compact model, write it back: same function again
        for name, p in layer.params.items():
            p += 0.01 * layer.masks.get(name, np.ones_like(p))
    expand_into(model, small, kept)
    np.testing.assert_allclose(model.forward(x), small.forward(x), rtol=1e-5, atol=1e-5)
    for layer in model.prunable_layers():  # removed entries are still exactly 0
        for name, mask in layer.masks.items():
            assert np.all(layer.params[name][mask == 0] == 0.0)


def test_compact_and_full_fine_tuning_agree(tmp_path, baseline):
    path, data_path = baseline
    rows = {}
    for flag in (True, False):
        out = tmp_path / str(flag)
        rows[flag] = run_prune(prune_config(baseline=path, amounts=[0.5], epochs=1, compact=flag), out,
                               data_path=data_path, echo=lambda *_: None)
    a, b = rows[True][0], rows[False][0]
    assert a.params_effective == b.params_effective and a.flops_effective == b.flops_effective
    assert abs(a.test_acc_after - b.test_acc_after) <= 0.02
    assert abs(a.train_loss - b.train_loss) <= 1e-3


def test_compact_command(tmp_path, baseline):
    path, data_path = baseline
    run_prune(prune_config(baseline=path, amounts=[0.5], epochs=1), tmp_path / "run", data_path=data_path,
              echo=lambda *_: None)
    ckpt = step_path(tmp_path / "run", 0, 0.5)
    result = CliRunner().invoke(cli, ["compact", str(ckpt), "--out", str(tmp_path / "small.h5")])
    assert result.exit_code == 0, result.output
    assert "conv1 (8, 3, 3, 3)->(4, 3, 3, 3)" in result.output
    small, _ = load_checkpoint(tmp_path / "small.h5")
    assert small.layers[0].params["weight"].shape == (4, 3, 3, 3)
    bad = CliRunner().invoke(cli, ["compact", str(tmp_path / "nope.h5")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and bad.output.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--amounts", "0.5,0.2"], "increasing"),
    (["--amounts", "-0.1"], "[0, 1]"),
    (["--amounts", "1.5"], "[0, 1]"),
    (["--amounts", "0.1,0.1"], "repeated"),
    (["--amounts", "abc"], "number"),
    (["--schedule", "sometimes"], "sometimes"),
    (["--lr", "-1"], "--lr"),
    (["--unstructured", "--scope", "global", "--structured"], None),
])
def test_prune_cli_bad_input(tmp_path, baseline, args, message):
    path, data_path = baseline
    base = ["prune", "--schedule", "oneshot", "--structured", "--lr", "0.01", "--baseline", path, "--data", data_path,
            "--out", str(tmp_path / "out"), "--epochs", "1"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    if message is not None:
        assert message.lower() in result.output.lower()
    assert not (tmp_path / "out" / "results.csv").exists()


def test_prune_cli_structured_global_is_refused(tmp_path, baseline):
    path, data_path = baseline
    result = CliRunner().invoke(cli, ["prune", "--schedule", "oneshot", "--structured", "--scope", "global", "--lr",
                                      "0.01", "--baseline", path, "--data", data_path, "--out", str(tmp_path)])
    assert result.exit_code != 0 and "layerwise" in result.output and "Traceback" not in result.output


def test_prune_cli_runs_and_prints_the_table(tmp_path, baseline):
    path, data_path = baseline
    result = CliRunner().invoke(cli, ["prune", "--schedule", "iterative", "--unstructured", "--lr", "0.01",
                                      "--amounts", "0,.5,.9", "--epochs", "1", "--baseline", path, "--data", data_path,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "test before" in result.output and "0.900" in result.output
    assert len(load_results(tmp_path)) == 3 and (tmp_path / "results.h5").exists()


def _sweep_plot_report(out, data_path) -> list:
    """Sweep a small grid into ``out`` through the CLI, then plot and report it; returns the rows."""
    runner = CliRunner()
    result = runner.invoke(cli, ["sweep", "--train-limit", "2000", "--test-limit", "1000", "--epochs", "1",
                                 "--amounts", "0,.5,.9", "--lrs", "0.01", "--out", str(out), "--data", str(data_path)])
    assert result.exit_code == 0, result.output
    rows = load_results(out)
    assert len(rows) == 2 * 2 * 3
    assert {(r.schedule, r.method) for r in rows} == {(s, m) for s in ("oneshot", "iterative")
                                                           for m in ("unstructured", "structured")}
    result = runner.invoke(cli, ["plot", str(out)])
    assert result.exit_code == 0, result.output
    pngs = list((out / "figures").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "REPORT.md").read_text()
    assert "## Claims" in report and "### Iterative structured pruning, lr 0.01" in report
    assert "| 0.9 | 0.1 |" in report  # the 90% row of a results table
    return rows


def test_sweep_plot_report_smoke(tmp_path, make_synthetic_cache):
    """Sweep, then plot and report produce their files, on a synthetic stand-in for CIFAR-10 (the same
    everywhere, whatever MINICNN_DATA says)."""
    _sweep_plot_report(tmp_path / "D", make_synthetic_cache(2000, 1000, seed=9))


@pytest.mark.slow
def test_sweep_plot_report_on_real_cifar10(tmp_path, real_data):
    """The same on the first 2,000 / 1,000 images of real CIFAR-10: the unpruned models learn."""
    rows = _sweep_plot_report(tmp_path / "D", real_data)
    assert all(r.test_acc_after > 0.2 for r in rows if r.amount == 0.0), [r.test_acc_after for r in rows]


def test_sweep_adds_seeds_and_refuses_other_changes(tmp_path, make_synthetic_cache):
    data_path = str(make_synthetic_cache(256, 128, seed=4))
    out = tmp_path / "S"
    base = ["sweep", "--schedules", "oneshot", "--methods", "unstructured", "--lrs", "0.01", "--amounts", "0,.5",
            "--epochs", "1", "--batch-size", "64", "--out", str(out), "--data", data_path]
    runner = CliRunner()
    assert runner.invoke(cli, base + ["--seeds", "0"]).exit_code == 0
    first = (out / "runs" / "oneshot-unstructured-lr0.01-seed0" / "results.csv").read_bytes()
    result = runner.invoke(cli, base + ["--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert sorted({r.seed for r in load_results(out)}) == [0, 1]
    assert (out / "runs" / "oneshot-unstructured-lr0.01-seed0" / "results.csv").read_bytes() == first
    refused = runner.invoke(cli, base + ["--seeds", "0,1", "--lrs", "0.02"])  # the later --lrs wins
    assert refused.exit_code != 0 and "other settings" in refused.output and "Traceback" not in refused.output


def test_sweep_submits_methods_interleaved(tmp_path):
    """Every configuration is submitted once, alternating methods, so that the first ones to finish are
    a fair sample for the time-left estimate."""
    from pathlib import Path

    from minicnn.study.sweep import submission_order

    sweep = SweepConfig(seeds=(0, 1), amounts=(0.0, 0.5), epochs=1, batch_size=8)
    grid = sweep.runs(Path(tmp_path))
    order = submission_order(grid)
    assert sorted(str(d) for _, d in order) == sorted(str(d) for _, d in grid)
    assert [cfg.method for cfg, _ in order] == ["unstructured", "structured"] * (len(grid) // 2)
    assert [cfg.method for cfg, _ in grid[:2]] == ["unstructured", "unstructured"]  # the grid's own order


def test_sweep_over_criteria_with_lth_rewinding_to_an_epoch_then_one_report_of_two_folders(tmp_path,
                                                                                         make_synthetic_cache):
    """--criteria is a grid axis (a run folder per criterion, rows keep their criterion); --rewind EPOCH
    makes the sweep's baselines save that epoch; plot and report merge two study folders, a run found
    in both counted once."""
    data_path = str(make_synthetic_cache(256, 128, seed=5))
    common = ["--methods", "unstructured", "--lrs", "0.01", "--amounts", "0,.5", "--epochs", "1",
              "--batch-size", "64", "--data", data_path]
    runner = CliRunner()
    paper = runner.invoke(cli, ["sweep", "--schedules", "iterative", "--out", str(tmp_path / "P")] + common)
    assert paper.exit_code == 0, paper.output
    ext = runner.invoke(cli, ["sweep", "--schedules", "iterative,lth", "--criteria", "magnitude,random",
                              "--rewind", "2", "--out", str(tmp_path / "E")] + common)
    assert ext.exit_code == 0, ext.output
    assert (tmp_path / "E" / "baselines" / "seed0.epoch2.h5").is_file()
    assert sorted(p.name for p in (tmp_path / "E" / "runs").iterdir()) == [
        "iterative-unstructured-lr0.01-seed0", "iterative-unstructured-random-lr0.01-seed0",
        "lth-unstructured-lr0.01-seed0", "lth-unstructured-random-lr0.01-seed0"]
    rows = load_results(tmp_path / "E")
    assert {(r.schedule, r.criterion) for r in rows} == {(s, c) for s in ("iterative", "lth")
                                                          for c in ("magnitude", "random")}
    ours = load_results(tmp_path / "P")
    same = [r for r in rows if (r.schedule, r.criterion) == ("iterative", "magnitude")]
    assert [dataclasses.replace(r, seconds=0) for r in same] == [dataclasses.replace(r, seconds=0) for r in ours]

    out = tmp_path / "R" / "REPORT.md"
    result = runner.invoke(cli, ["report", str(tmp_path / "P"), str(tmp_path / "E"), "--out", str(out),
                                 "--figures", str(tmp_path / "F")])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "- rows: 8 (4 schedule x method x scope x lr x criterion configurations)" in text  # P's 2 counted once
    assert "## Beyond the paper" in text and "| B3 | Do AGP and LTH beat iterative" in text
    assert (tmp_path / "R" / "mask_agreement.csv").is_file()
    assert (tmp_path / "F" / "accuracy_vs_compression.png").is_file()
