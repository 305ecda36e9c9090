"""The schedules beyond the paper's (agp, lth) and the budget columns of every schedule: AGP's sparsity after
each mask update is the cubic ramp's, rounded as amounts are; LTH's rewound weights are the saved ones on kept
entries and 0 elsewhere; masks only shrink; an interrupted run resumes to the same rows; the new columns are
right on hand-checkable cases; bad input gets one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.errors import MiniCNNError
from minicnn.io.checkpoint import load_checkpoint
from minicnn.nn.model import build_model
from minicnn.pruning import schedules
from minicnn.study import runs
from minicnn.study.config import PruneConfig, SweepConfig, TrainConfig
from minicnn.study.results import ResultRow, load_results, save_results
from minicnn.study.rundir import step_path
from minicnn.study.runs import run_prune
from minicnn.study.training import snapshot_path

N_TRAIN, BATCH = 384, 64  # 6 batches an epoch
AMOUNTS = (0.0, 0.5, 0.8)
KEYS = ("step", "amount", "params_nonzero", "test_acc_before", "test_acc_after", "train_loss", "compression_ratio",
        "theoretical_speedup", "epochs_spent", "train_flops_spent")


def quiet(*_):
    pass


class Interrupt(Exception):
    pass


def config(schedule, baseline=None, **over) -> PruneConfig:
    settings = {"schedule": schedule, "method": "unstructured", "lr": 0.05, "amounts": AMOUNTS, "epochs": 2,
                "batch_size": BATCH, "seed": 3, "baseline": baseline, **over}
    return PruneConfig(**settings)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, make_synthetic_cache):
    from minicnn.study.training import run_training

    data_path = make_synthetic_cache(N_TRAIN, 128, seed=5)
    path = tmp_path_factory.mktemp("baseline") / "baseline.h5"
    run_training(TrainConfig(epochs=2, lr=0.05, batch_size=BATCH, seed=3), path, data_path=str(data_path),
                 echo=quiet, snapshots=(1,))
    return str(path), str(data_path)


def table(rows):
    """The rows' values (NaN as text: agp's test_acc_before is NaN, and NaN != NaN)."""
    return [tuple(repr(v) if v != v else v for v in (getattr(r, k) for k in KEYS)) for r in rows]


SETTINGS = {"agp": {"agp_steps": 4, "agp_interval": 2, "criterion": "random"}, "lth": {"rewind": "1"},
            "iterative": {}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, baseline):
    """{schedule: (config, out dir, rows)} of uninterrupted runs."""
    path, data_path = baseline
    done = {}
    for schedule, over in SETTINGS.items():
        out = tmp_path_factory.mktemp(schedule)
        cfg = config(schedule, path, **over)
        done[schedule] = (cfg, out, run_prune(cfg, out, data_path=data_path, echo=quiet))
    return done


def masks_of_steps(cfg, out):
    models = [load_checkpoint(step_path(out, s, a), backend="ref")[0] for s, a in enumerate(cfg.amounts)]
    return [{lay.name: lay.masks.get("weight", np.ones_like(lay.params["weight"])) for lay in m.prunable_layers()}
            for m in models], models


# ------------------------------------------------------------------------------------------------ AGP
def test_agp_ramp_is_the_cubic_formula_with_updates_dt_apart():
    inside, after = schedules.agp_updates(0.2, 0.8, 4, 3, 10)
    expected = [0.8 + (0.2 - 0.8) * (1 - i / 4) ** 3 for i in (1, 2, 3, 4)]
    assert list(inside) == [3, 6, 9] and list(inside.values()) + after == pytest.approx(expected, abs=0)
    assert after == [0.8]  # t = 12 is past the 10-batch budget: at its end, so the row sits at s_f
    assert schedules.agp_interval(6) == 1 and schedules.agp_interval(50) == 5 and schedules.agp_interval(50, 7) == 7


def test_agp_sparsity_after_each_update_equals_the_formula(tmp_path, baseline, monkeypatch):
    path, data_path = baseline
    seen = []
    original = runs.prune_model

    def spy(model, amount, *args):
        original(model, amount, *args)
        seen.append((amount, [int((lay.masks["weight"] == 0).sum()) if "weight" in lay.masks else 0
                              for lay in model.prunable_layers()],
                     [lay.params["weight"].size for lay in model.prunable_layers()]))

    monkeypatch.setattr(runs, "prune_model", spy)
    run_prune(config("agp", path, agp_steps=4, agp_interval=2), tmp_path, data_path=data_path, echo=quiet)
    ramps = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.8)]
    expected = [s_f + (s_i - s_f) * (1 - i / 4) ** 3 for s_i, s_f in ramps for i in range(1, 5)]
    assert [a for a, _, _ in seen] == pytest.approx(expected, abs=1e-15)
    for amount, pruned, sizes in seen:
        assert pruned == [round(amount * n) for n in sizes]


# ------------------------------------------------------------------------------------------------ LTH
@pytest.mark.parametrize("rewind", ["init", "1"])
def test_lth_rewinds_to_the_saved_weights_on_kept_entries_and_zero_elsewhere(tmp_path, baseline, monkeypatch,
                                                                             rewind):
    path, data_path = baseline
    if rewind == "init":
        saved = build_model("paper", np.random.default_rng(3))
    else:
        saved = load_checkpoint(snapshot_path(path, 1), backend="ref")[0]
    rewound = []
    original = runs.rewind

    def spy(model, values):
        original(model, values)
        rewound.append({lay.name: ({k: p.copy() for k, p in lay.params.items()}, dict(lay.masks))
                        for lay in model.param_layers()})

    monkeypatch.setattr(runs, "rewind", spy)
    run_prune(config("lth", path, rewind=rewind, epochs=1), tmp_path, data_path=data_path, echo=quiet)
    assert len(rewound) == len(AMOUNTS)
    for state, amount in zip(rewound, AMOUNTS):
        for lay in saved.param_layers():
            params, masks = state[lay.name]
            for name, value in lay.params.items():
                mask = masks.get(name, np.ones_like(value))
                assert np.array_equal(params[name][mask == 1], value[mask == 1])
                assert np.all(params[name][mask == 0] == 0.0)
        pruned = sum(int((m["weight"] == 0).sum()) for _, m in state.values() if "weight" in m)
        assert pruned == sum(round(amount * lay.params["weight"].size) for lay in saved.prunable_layers())


def test_lth_own_baseline_saves_the_epoch_it_rewinds_to(tmp_path, make_synthetic_cache):
    data_path = str(make_synthetic_cache(256, 64, seed=7))
    cfg = config("lth", None, rewind="2", amounts=(0.0, 0.5), epochs=1, batch_size=128, train_limit=256)
    rows = run_prune(cfg, tmp_path, data_path=data_path, echo=quiet)
    assert (tmp_path / "baseline.epoch2.h5").is_file() and len(rows) == 2
    assert load_checkpoint(tmp_path / "baseline.epoch2.h5")[1]["epoch"] == 2


# ------------------------------------------------------------------------------------ every schedule
@pytest.mark.parametrize("schedule", list(SETTINGS))
def test_masks_only_shrink_and_pruned_weights_stay_zero(finished, schedule):
    cfg, out, _ = finished[schedule]
    masks, models = masks_of_steps(cfg, out)
    for amount, step_masks, model in zip(cfg.amounts, masks, models):
        for lay in model.prunable_layers():
            mask = step_masks[lay.name]
            assert int((mask == 0).sum()) == round(amount * mask.size)
            assert np.all(lay.params["weight"][mask == 0] == 0.0)
    for earlier, later in zip(masks, masks[1:]):
        assert all(np.all(later[name] <= earlier[name]) for name in earlier)


@pytest.mark.parametrize("schedule", list(SETTINGS))
def test_resume_after_an_interruption_gives_the_same_rows(tmp_path, baseline, finished, schedule):
    path, data_path = baseline
    cfg, _, rows = finished[schedule]

    def stop_after_one(done, total):
        if done == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_prune(cfg, tmp_path, data_path=data_path, echo=quiet, step_progress=stop_after_one)
    assert len(load_results(tmp_path)) == 1
    resumed = run_prune(cfg, tmp_path, data_path=data_path, echo=quiet)
    assert table(resumed) == table(rows)


def test_budget_columns_on_a_hand_checkable_case(tmp_path, baseline, finished):
    """Unstructured 0 / 50% / 80% of the paper's model, 384 images, 2 epochs a step: the ratios from the
    counts, epochs cumulative but for oneshot, training FLOPs = 3 x forward FLOPs x images x epochs, summed."""
    path, data_path = baseline
    oneshot = run_prune(config("oneshot", path), tmp_path, data_path=data_path, echo=quiet)
    iterative = finished["iterative"][2]
    dense = iterative[0].flops_dense
    assert dense == 505866 and iterative[0].training_flops_effective == 3 * dense
    for r in oneshot + iterative:
        assert r.compression_ratio == r.params_total / r.params_nonzero
        assert r.theoretical_speedup == r.flops_dense / r.flops_effective
    assert [r.epochs_spent for r in oneshot] == [2, 2, 2]
    assert [r.epochs_spent for r in iterative] == [2, 4, 6] == [r.epochs_spent for r in finished["lth"][2]]
    per_step = [r.training_flops_effective * N_TRAIN * 2 for r in iterative]
    assert [r.train_flops_spent for r in oneshot] == [r.training_flops_effective * N_TRAIN * 2 for r in oneshot]
    assert [r.train_flops_spent for r in iterative] == list(np.cumsum(per_step))
    assert iterative[0].compression_ratio == 1.0 and iterative[1].compression_ratio == 20714 / 10366
    agp = finished["agp"][2]
    assert [r.epochs_spent for r in agp] == [2, 4, 6]
    assert agp[0].train_flops_spent == 3 * dense * N_TRAIN * 2  # the first ramp is to 0: dense throughout
    ramp = agp[1].train_flops_spent - agp[0].train_flops_spent  # the masks shrink batch after batch
    assert agp[1].training_flops_effective * N_TRAIN * 2 < ramp < agp[0].train_flops_spent


def test_a_table_without_the_new_columns_still_loads(tmp_path, finished):
    rows = finished["iterative"][2]
    save_results(rows, tmp_path / "results.csv")
    lines = (tmp_path / "results.csv").read_text().splitlines()
    cut = lines[0].split(",").index("compression_ratio")
    (tmp_path / "results.csv").write_text("\n".join(",".join(line.split(",")[:cut]) for line in lines) + "\n")
    old = load_results(tmp_path)
    assert [r.compression_ratio for r in old] == pytest.approx([r.compression_ratio for r in rows])
    assert [r.epochs_spent for r in old] == [-1, -1, -1] and old[0].train_flops_spent == -1
    assert ResultRow.from_dict(rows[1].to_dict()) == rows[1]


# ------------------------------------------------------------------------------------------ settings
def test_sweep_accepts_the_new_schedules_and_old_run_settings_stay_valid(tmp_path):
    sweep = SweepConfig(schedules=("agp", "lth"), methods=("unstructured",), lrs=(0.01,), amounts=(0.0, 0.5))
    configs = [c for c, _ in sweep.runs(tmp_path)]
    assert [(c.schedule, c.rewind) for c in configs] == [("agp", None), ("lth", "init")]
    old = {k: v for k, v in config("iterative").to_dict().items() if k not in ("rewind", "agp_steps", "agp_interval")}
    assert config("iterative").differences(old) == []


@pytest.mark.parametrize("args, message", [
    (["--schedule", "iterative", "--rewind", "init"], "--rewind applies only to the lth schedule"),
    (["--schedule", "lth", "--rewind", "soon"], "--rewind must be init or a baseline epoch"),
    (["--schedule", "lth", "--rewind", "2"], "saved no weights after epoch 2"),
    (["--schedule", "lth", "--rewind", "7"], "choose --rewind init or an epoch up to 2"),
    (["--schedule", "oneshot", "--agp-steps", "5"], "--agp-steps applies only to --schedule agp"),
    (["--schedule", "agp", "--agp-interval", "0"], "--agp-interval must be an integer >= 1"),
])
def test_bad_schedule_input_gives_one_line_errors(tmp_path, baseline, args, message):
    path, data_path = baseline
    result = CliRunner().invoke(cli, ["prune", "--unstructured", "--lr", "0.01", "--baseline", path, "--data",
                                      data_path, "--out", str(tmp_path / "out"), "--epochs", "1"] + args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_the_issue_commands_run_and_print_the_new_columns(tmp_path, baseline):
    path, data_path = baseline
    for schedule in (["agp", "--criterion", "random"], ["lth", "--rewind", "init"]):
        out = tmp_path / schedule[0]
        result = CliRunner().invoke(cli, ["prune", "--schedule", *schedule, "--unstructured", "--lr", "0.01",
                                          "--amounts", "0,.5,.9", "--epochs", "1", "--baseline", path, "--data",
                                          data_path, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "compr" in result.output and "speedup" in result.output
        header = (out / "results.csv").read_text().splitlines()[0].split(",")
        assert header[-4:] == ["compression_ratio", "theoretical_speedup", "epochs_spent", "train_flops_spent"]
        assert [r.amount for r in load_results(out)] == [0.0, 0.5, 0.9]


def test_rewind_without_a_saved_epoch_is_refused_in_the_library_too(tmp_path, baseline):
    path, data_path = baseline
    with pytest.raises(MiniCNNError, match="saved no weights after epoch 2"):
        run_prune(config("lth", path, rewind="2"), tmp_path, data_path=data_path, echo=quiet)
