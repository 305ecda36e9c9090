"""Pruning runs: a schedule of amounts applied to a trained baseline, fine-tuned after every step,
measured, checkpointed and resumable.

A run lives in one directory:
    run.json             the run's settings; a rerun with other settings is refused
    baseline.h5          the trained baseline (unless --baseline points elsewhere)
    steps/NNN_amount_A.h5   the model after step NNN (pruned to A, fine-tuned)
    results.csv / .h5    one row per finished step (minicnn.study.results.ResultRow)
Each step's checkpoint and the results are written atomically after the step finishes; a rerun
skips finished steps and redoes an unfinished one from the previous step's checkpoint. Fine-tuning
is deterministic for a given seed and thread count, so a resumed run reproduces the uninterrupted
one's table (wall times aside).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from minicnn.errors import MiniCNNError

#: The paper's baseline: lr 0.8, batch 512, plain SGD, 10 epochs.
BASELINE_DEFAULTS = {"arch": "paper", "epochs": 10, "lr": 0.8, "batch_size": 512, "momentum": 0.0,
                     "weight_decay": 0.0, "normalize": "center"}
#: Settings that define a pruning run; a rerun into the same directory must match them.
PRUNE_KEYS = ("arch", "schedule", "method", "scope", "lr", "amounts", "epochs", "batch_size", "momentum",
              "weight_decay", "seed", "normalize", "train_limit", "test_limit", "baseline", "compact")


def baseline_config(seed: int, normalize: str, train_limit, test_limit, arch: str = "paper") -> dict:
    """The training config of the paper's baseline for this seed and data selection."""
    return {**BASELINE_DEFAULTS, "arch": arch, "seed": seed, "normalize": normalize, "train_limit": train_limit,
            "test_limit": test_limit}


def step_path(out_dir: Path, step: int, amount: float) -> Path:
    return out_dir / "steps" / f"{step:03d}_amount_{amount:.4f}.h5"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj) -> None:
    from minicnn.io.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def claim_dir(out_dir: Path, settings_name: str, config: dict, keys: tuple, force: bool, outputs: tuple,
              what: str) -> None:
    """Make ``out_dir`` hold the run described by ``config``, recorded in ``out_dir/settings_name``.

    Settings that differ in any of ``keys`` from the recorded ones are refused (MiniCNNError naming
    them), as are ``outputs`` lying there without a record; with ``force`` the record and those
    outputs are deleted first, so the run starts over.
    """
    from minicnn.io.files import check_writable

    if out_dir.exists() and not out_dir.is_dir():
        raise MiniCNNError(f"--out {out_dir} is a file; pass a directory")
    stored = _read_json(out_dir / settings_name)
    if not force:
        if stored is not None:
            diffs = [f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in keys if stored.get(k) != config.get(k)]
            if diffs:
                raise MiniCNNError(f"{out_dir} holds {what} with other settings ({'; '.join(diffs)}); "
                                   f"choose another --out or pass --force to start over")
        elif any((out_dir / name).exists() for name in outputs):
            raise MiniCNNError(f"{out_dir} holds results without {settings_name}; choose another --out "
                               f"or pass --force to start over")
    else:
        for name in outputs + (settings_name,):
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    check_writable(out_dir / settings_name)
    _write_json(out_dir / settings_name, config)


def prepare_run_dir(out_dir: Path, config: dict, force: bool) -> list[dict]:
    """Create or reopen a run directory; returns the rows already finished there.

    A directory holding a run with other settings is refused (MiniCNNError) unless ``force``, which
    deletes that run's steps and results first.
    """
    from minicnn.study.results import load_results

    out_dir = Path(out_dir)
    claim_dir(out_dir, "run.json", config, PRUNE_KEYS, force, ("steps", "results.csv", "results.h5"),
              "a pruning run")
    rows = load_results(out_dir) if (out_dir / "results.csv").exists() else []
    return [r for r in rows if step_path(out_dir, r.step, r.amount).exists()]


def measure(model, dataset, normalizer, run_model=None) -> dict:
    """Accuracy and loss on both splits and the parameter/FLOP counts of ``model``. ``run_model``, if
    given, computes the same function faster (the compacted model) and is the one evaluated."""
    from minicnn.pruning.flops import count
    from minicnn.nn.train import evaluate

    totals = count(model)["totals"]
    run_model = model if run_model is None else run_model
    train_m = evaluate(run_model, dataset.x_train, dataset.y_train, normalizer)
    test_m = evaluate(run_model, dataset.x_test, dataset.y_test, normalizer)
    return {"params_total": totals["params"], "params_nonzero": totals["params_nonzero"],
            "params_effective": totals["params_effective"],
            "remaining_effective": totals["params_effective"] / totals["params"],
            "flops_dense": totals["flops_dense"], "flops_effective": totals["flops_effective"],
            "training_flops_effective": totals["training_flops_effective"],
            "train_acc": train_m["acc"], "train_loss": train_m["loss"],
            "test_acc_after": test_m["acc"], "test_loss": test_m["loss"]}


def run_prune(config: dict, out_dir, *, data_path=None, dataset=None, backend: str = "fast", force: bool = False,
              echo=print, progress_factory=None, step_progress=None) -> list[dict]:
    """Run (or resume) one pruning schedule; returns all result rows.

    config: {'arch', 'schedule', 'method', 'scope', 'lr', 'amounts' (list), 'epochs', 'batch_size', 'momentum',
    'weight_decay', 'seed', 'normalize', 'train_limit', 'test_limit', 'baseline' (path or None),
    'compact' (bool: fine-tune structured-pruned models with removed units physically dropped)}.
    Without a baseline path, the paper's baseline is trained into ``out_dir/baseline.h5`` (or reused
    if it is already there with the same settings).
    ``step_progress(done, total)`` is called as steps finish.
    """
    from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
    from minicnn.study.results import ResultRow, save_results
    from minicnn.pruning.compact import compact, expand_into
    from minicnn.io.data import load_cifar10
    from minicnn.nn.model import resolve_arch
    from minicnn.pruning.masks import METHODS, SCHEDULES, SCOPES, prune_model
    from minicnn.io.data import make_normalizer
    from minicnn.nn.train import Optimizer, SGDConfig, evaluate, fit
    from minicnn.study.training import run_training

    if config["schedule"] not in SCHEDULES:
        raise MiniCNNError(f"unknown schedule {config['schedule']!r}; choose one of: {', '.join(SCHEDULES)}")
    if config["method"] not in METHODS:
        raise MiniCNNError(f"unknown method {config['method']!r}; choose one of: {', '.join(METHODS)}")
    if config["scope"] not in SCOPES:
        raise MiniCNNError(f"unknown scope {config['scope']!r}; choose one of: {', '.join(SCOPES)}")
    if config["method"] == "structured" and config["scope"] == "global":
        raise MiniCNNError("structured pruning is layerwise; drop --scope global or use --unstructured")

    out_dir = Path(out_dir)
    rows = prepare_run_dir(out_dir, config, force)
    amounts = list(config["amounts"])
    done = {r.step for r in rows}
    if len(done) == len(amounts):
        echo(f"{out_dir}: all {len(amounts)} steps already finished")
        return sorted(rows, key=lambda r: r.step)

    if dataset is None:
        dataset = load_cifar10(data_path, train_limit=config["train_limit"], test_limit=config["test_limit"])
    normalizer = make_normalizer(config["normalize"], dataset)

    baseline = config["baseline"]
    if baseline is None:
        baseline = out_dir / "baseline.h5"
        base_cfg = baseline_config(config["seed"], config["normalize"], config["train_limit"], config["test_limit"],
                                   config["arch"])
        echo(f"baseline: {baseline} (arch {config['arch']}, lr {base_cfg['lr']}, {base_cfg['epochs']} epochs)")
        run_training(base_cfg, baseline, dataset=dataset, backend=backend, progress_factory=progress_factory,
                     echo=echo)
    base_model, base_info = load_checkpoint(baseline, backend=backend)
    if base_model.spec != resolve_arch(config["arch"])[1]:
        its_arch = base_model.arch if base_model.arch != "custom" else repr(base_model.spec)
        raise MiniCNNError(f"baseline {baseline} is a {base_model.arch!r} model ({base_model.spec}), not "
                           f"{config['arch']!r}; pass --arch {its_arch} or another --baseline")
    if base_info["config"].get("normalize", config["normalize"]) != config["normalize"]:
        raise MiniCNNError(f"baseline {baseline} was trained with --normalize "
                           f"{base_info['config'].get('normalize')}; pass the same --normalize")

    for step, amount in enumerate(amounts):
        if step in done:
            continue
        t0 = time.perf_counter()
        if config["schedule"] == "oneshot" or step == 0:
            model, _ = load_checkpoint(baseline, backend=backend)
        else:
            model, _ = load_checkpoint(step_path(out_dir, step - 1, amounts[step - 1]), backend=backend)
        if model.arch != base_model.arch or model.spec != base_model.spec:
            raise MiniCNNError("a step checkpoint does not match the baseline's architecture; pass --force")
        prune_model(model, amount, config["method"], config["scope"])
        optimizer = Optimizer(SGDConfig(config["lr"], config["momentum"], config["weight_decay"]))
        # fine-tune the compact model (removed filters physically dropped: faster, same function),
        # then write it back into the full-size model that checkpoints and masks describe
        trained, kept = compact(model) if config["compact"] else (model, None)
        before = evaluate(trained, dataset.x_test, dataset.y_test, normalizer)["acc"]
        step_bar = None
        if progress_factory is not None:  # the epoch bars also say which step of the schedule this is
            prefix = f"step {step + 1}/{len(amounts)} (amount {amount:g}),"
            step_bar = lambda label, n, prefix=prefix: progress_factory(f"{prefix} {label}", n)  # noqa: E731
        history = fit(trained, optimizer, dataset, epochs=config["epochs"], batch_size=config["batch_size"],
                      normalizer=normalizer, seed=config["seed"] * 1000 + step + 1, progress_factory=step_bar,
                      test_every_epoch=False)  # the paper measures before and after fine-tuning: below
        if kept is not None:
            expand_into(model, trained, kept)
            optimizer = None  # its buffers have the compact shapes
        measured = measure(model, dataset, normalizer, run_model=trained)
        row = ResultRow(schedule=config["schedule"], method=config["method"], scope=config["scope"],
                        lr=config["lr"], seed=config["seed"], step=step, amount=amount, remaining=1 - amount,
                        test_acc_before=before, epochs=config["epochs"],
                        diverged=bool(history and history[-1]["diverged"]), **measured,
                        seconds=time.perf_counter() - t0)
        save_checkpoint(step_path(out_dir, step, amount), model, optimizer, config={**config, "step": step},
                        epoch=len(history), history=history, extra={"row": row.to_dict()})
        rows = sorted([r for r in rows if r.step != step] + [row], key=lambda r: r.step)
        save_results(rows, out_dir / "results.csv", out_dir / "results.h5")
        echo(format_row(row))
        if step_progress is not None:
            step_progress(len(rows), len(amounts))
    return rows


def format_row(row: dict) -> str:
    return (f"{row.schedule:9s} {row.method:12s} lr {row.lr:<7g} amount {row.amount:5.3f}  "
            f"params {row.params_effective:6d}  FLOPs {row.flops_effective:8d}  "
            f"test before {row.test_acc_before:6.2%}  after {row.test_acc_after:6.2%}  "
            f"train {row.train_acc:6.2%}{'  DIVERGED' if row.diverged else ''}")


def format_table(rows: list[dict]) -> str:
    """The results as an aligned text table."""
    head = (f"{'schedule':9s} {'method':12s} {'lr':>7s} {'seed':>4s} {'amount':>6s} {'params':>7s} {'FLOPs':>9s} "
            f"{'test before':>11s} {'test after':>10s} {'train':>7s} {'time s':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.schedule:9s} {r.method:12s} {r.lr:7g} {r.seed:4d} {r.amount:6.3f} "
                     f"{r.params_effective:7d} {r.flops_effective:9d} {r.test_acc_before:11.2%} "
                     f"{r.test_acc_after:10.2%} {r.train_acc:7.2%} {r.seconds:7.1f}"
                     f"{'  diverged' if r.diverged else ''}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ sweeps
SWEEP_KEYS = ("schedules", "methods", "lrs", "amounts", "seeds", "epochs", "scope", "batch_size", "momentum",
              "weight_decay", "normalize", "train_limit", "test_limit", "arch", "compact")


def sweep_configs(sweep: dict, out_dir: Path) -> list[tuple[dict, Path]]:
    """Every (pruning config, run directory) of the grid, seeds outermost."""
    grid = []
    for seed in sweep["seeds"]:
        for schedule in sweep["schedules"]:
            for method in sweep["methods"]:
                for lr in sweep["lrs"]:
                    config = {"arch": sweep["arch"], "schedule": schedule, "method": method, "scope": sweep["scope"],
                              "lr": lr, "amounts": sweep["amounts"], "epochs": sweep["epochs"],
                              "batch_size": sweep["batch_size"], "momentum": sweep["momentum"],
                              "weight_decay": sweep["weight_decay"], "seed": seed, "normalize": sweep["normalize"],
                              "train_limit": sweep["train_limit"], "test_limit": sweep["test_limit"],
                              "baseline": str(out_dir / "baselines" / f"seed{seed}.h5"),
                              "compact": sweep.get("compact", True)}
                    grid.append((config, out_dir / "runs" / f"{schedule}-{method}-lr{lr:g}-seed{seed}"))
    return grid


def _worker_init(threads: int) -> None:
    """Runs first in each sweep worker process: its share of the cores, before any kernel runs."""
    import os

    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if threads == 1:  # pinning one-thread workers would put them all on the first core
        os.environ["OMP_PROC_BIND"] = "false"
    import numba

    numba.set_num_threads(threads)


def _train_baseline_job(args):
    config, path, data_path, backend = args
    from minicnn.study.training import run_training

    result = run_training(config, path, data_path=data_path, backend=backend, echo=lambda *_: None)
    return config["seed"], result["test_acc"]


def _prune_job(args):
    config, run_dir, data_path, backend = args
    t0 = time.perf_counter()
    rows = run_prune(config, run_dir, data_path=data_path, backend=backend, echo=lambda *_: None)
    return str(run_dir), rows, time.perf_counter() - t0


def collect_rows(grid) -> list:
    """All finished rows of a sweep's runs, in grid order."""
    from minicnn.study.results import load_results

    rows = []
    for _, run_dir in grid:
        if (run_dir / "results.csv").exists():
            rows.extend(load_results(run_dir))
    return rows


def submission_order(grid):
    """The grid with its methods interleaved (unstructured, structured, unstructured, ...). The first
    configurations to finish are then a fair sample for the estimate of the time left: unstructured
    steps take about 1.7x as long as compacted structured ones, and the grid lists them first."""
    import itertools

    by_method: dict[str, list] = {}
    for item in grid:
        by_method.setdefault(item[0]["method"], []).append(item)
    return [item for group in itertools.zip_longest(*by_method.values()) for item in group if item is not None]


def run_sweep(sweep: dict, out_dir, *, jobs: int = 1, data_path=None, backend: str = "fast", force: bool = False,
              echo=print) -> list[dict]:
    """Run (or resume) a whole grid: one baseline per seed, then every configuration in ``jobs`` worker
    processes that split the cores between them. Writes out_dir/results.csv/.h5 (all rows) after every
    configuration; returns the rows."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from minicnn.study.results import save_results
    from minicnn.io.data import load_cifar10

    out_dir = Path(out_dir)
    stored = _read_json(out_dir / "sweep.json")
    keys = SWEEP_KEYS
    if stored is not None and set(stored.get("seeds", [])) <= set(sweep["seeds"]):
        keys = tuple(k for k in SWEEP_KEYS if k != "seeds")  # more seeds extend a sweep; its runs are kept
    claim_dir(out_dir, "sweep.json", sweep, keys, force, ("runs", "baselines", "results.csv", "results.h5"),
              "a sweep")
    load_cifar10(data_path, train_limit=1, test_limit=1)  # fail early (and build the cache once) if data is missing

    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs, cores))
    threads = max(1, cores // jobs)
    grid = sweep_configs(sweep, out_dir)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        base_jobs = []
        for seed in sweep["seeds"]:
            cfg = baseline_config(seed, sweep["normalize"], sweep["train_limit"], sweep["test_limit"], sweep["arch"])
            base_jobs.append((cfg, str(out_dir / "baselines" / f"seed{seed}.h5"), data_path, backend))
        echo(f"sweep: {len(grid)} configurations x {len(sweep['amounts'])} amounts, {jobs} worker(s) x "
             f"{threads} thread(s); baselines first")
        for seed, acc in pool.map(_train_baseline_job, base_jobs):
            echo(f"baseline seed {seed}: test acc {acc:.2%}")

        t0 = time.perf_counter()
        futures = [pool.submit(_prune_job, (cfg, run_dir, data_path, backend))
                   for cfg, run_dir in submission_order(grid)]
        finished, worked = 0, 0  # worked: configurations that ran steps now (not finished earlier)
        with click_progress(len(grid), "configurations") as advance:
            for fut in as_completed(futures):
                run_dir, rows, seconds = fut.result()
                finished += 1
                worked += seconds > 1.0
                save_results(collect_rows(grid), out_dir / "results.csv", out_dir / "results.h5")
                eta = (time.perf_counter() - t0) / max(worked, 1) * (len(grid) - finished)
                last = rows[-1] if rows else None
                echo(f"\n{Path(run_dir).name}: {seconds:.0f} s"
                     + (f", at amount {last.amount:g}: test acc {last.test_acc_after:.2%}" if last else "")
                     + f"; {finished}/{len(grid)} done" + (f", about {eta / 60:.1f} min left" if worked else ""))
                advance(1)
    rows = collect_rows(grid)
    save_results(rows, out_dir / "results.csv", out_dir / "results.h5")
    echo(f"sweep finished in {(time.perf_counter() - t0) / 60:.1f} min (after baselines): {len(rows)} rows")
    return rows


def click_progress(total: int, label: str):
    """A click progress bar over ``total`` items; the context value advances it."""
    import contextlib

    import click

    @contextlib.contextmanager
    def bar():
        with click.progressbar(length=total, label=label) as b:
            yield b.update

    return bar()
