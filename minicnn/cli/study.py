"""minicnn prune / sweep / plot / report: pruning studies and what they found."""

from __future__ import annotations

from pathlib import Path

import click

from minicnn import paper
from minicnn.cli.common import (backend_option, data_options, load_result_rows, progress, refuse_overwrite,
                                results_base, sgd_options, split_list)
from minicnn.errors import MiniCNNError

_AMOUNTS = ",".join(f"{a:g}".lstrip("0") or "0" for a in paper.AMOUNTS)
_CRITERION_HELP = "What ranks the weights, lowest pruned first: magnitude, random or gradmag (see prune --help)."

_PRUNE_HELP = """Prune a trained model step by step, fine-tuning after every step, and record the results.

\b
Semantics (exactly as the paper's PyTorch pruning):
- Prunable: the weights of every conv and linear layer; unstructured pruning never prunes biases.
- Amounts are cumulative targets: the fraction of each prunable tensor pruned after the step.
  The count is round(amount * n), Python's round (half to even), as torch.nn.utils.prune;
  n counts entries (unstructured) or dim-0 slices (structured).
- oneshot: every amount is applied to the trained baseline directly (each restarts from it, so
  its masks need not nest from amount to amount; in every other schedule masks only shrink).
- iterative: step k prunes the smallest still-unpruned entries up to the new count; masks only
  shrink (torch's repeated pruning with integer amounts new - previous).
- agp (Zhu & Gupta 2017): one continuous fine-tuning run; for each amount s_f in turn, --epochs
  epochs during which the sparsity follows s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 from the
  previous amount s_i (0 first), t0 = 0 at the ramp's start, t in batches: n = --agp-steps mask
  updates, dt = --agp-interval batches apart (updates past the budget happen at its end); each
  update prunes round(s_t * n) among the still-unpruned. One row per amount. No compaction.
- lth (Frankle & Carbin 2019): iterative pruning, but after each step every weight goes back to
  its --rewind value (init: the baseline's initial weights, rebuilt from its seed; EPOCH: its
  weights after that epoch, saved when this run trains the baseline), masks kept, then --epochs
  epochs of training. test before: the pruned model's accuracy, before the rewind.
- Rows also record compression_ratio (total / nonzero parameters), theoretical_speedup (dense /
  effective forward FLOPs), epochs_spent and train_flops_spent: fine-tuning epochs, and training
  FLOPs per image x images summed over them, spent to reach the row (cumulative over the steps but
  for oneshot; the baseline's training is not counted).
- --unstructured: L1, smallest |w| per tensor (--scope global ranks all weights together).
- --structured: whole conv filters / hidden neurons by L2 norm (ln_structured n=2, dim=0); the
  output layer's rows (the classes) are never removed. A removed filter's bias is masked too
  (torch keeps it, leaving a constant ReLU(b) map), and the next layer's weights that read only
  dead inputs count as removed in the effective parameter and FLOP counts.
- Masks hold through fine-tuning: pruned weights get no gradient, momentum or weight decay and
  stay exactly 0.
- --criterion ranks the weights (lowest first) with the rules above: magnitude (the default,
  the L1 / L2 just described), random (uniform scores seeded by --seed and the step), gradmag
  (sum of |w * g| over the first 8 training batches; structured: summed per slice).

Without --baseline, the paper's baseline (lr 0.8, batch 512, 10 epochs, same seed and data) is
trained into OUT/baseline.h5 first, or reused if it is there. Every step writes OUT/steps/*.h5 and
OUT/results.csv/.h5; rerunning with the same OUT resumes at the first unfinished step.

Each step measures test accuracy right after pruning and, after fine-tuning, train and test accuracy
on the full splits; the test split is not evaluated between fine-tuning epochs (as in the paper).
"""


@click.command(help=_PRUNE_HELP)
@click.option("--schedule", type=click.Choice(paper.ALL_SCHEDULES), required=True,
              help="oneshot: each amount from the baseline; iterative: each step from the previous one; "
                   "agp: gradual ramps in one run; lth: iterative with rewinding.")
@click.option("--rewind", default=None, metavar="init|EPOCH",
              help="lth only: reset the surviving weights to the baseline's initial ones or its weights after "
                   "EPOCH epochs  [default: init]")
@click.option("--agp-steps", type=int, default=None,
              help="agp only: mask updates per amount (n)  [default: 10]")
@click.option("--agp-interval", type=int, default=None,
              help="agp only: training batches between mask updates (dt)  [default: a tenth of an epoch's "
                   "batches, at least 1]")
@click.option("--structured/--unstructured", "structured", default=None, required=True,
              help="L2 filter-level structured or L1 unstructured pruning.")
@click.option("--lr", type=float, required=True,
              help="Fine-tuning learning rate, > 0 (the paper uses 0.8, 0.01 and 0.0001).")
@click.option("--amounts", default=_AMOUNTS, show_default=True,
              help="Cumulative fractions pruned, comma-separated, increasing, within [0, 1].")
@click.option("--epochs", type=click.IntRange(min=0), default=paper.FINE_TUNE_EPOCHS, show_default=True,
              help="Fine-tuning epochs per step.")
@click.option("--scope", type=click.Choice(paper.SCOPES), default="layer", show_default=True,
              help="Rank weights per tensor (as the paper) or across all prunable weights (unstructured only).")
@click.option("--criterion", default="magnitude", show_default=True, help=_CRITERION_HELP)
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Trained checkpoint to prune (default: train the paper's baseline into OUT).")
@click.option("--arch", default=paper.ARCH, show_default=True, help="Architecture of the baseline.")
@sgd_options
@data_options
@backend_option
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory [default: runs/prune-SCHEDULE-METHOD[-CRITERION]-lrLR, the criterion when not "
                   "magnitude].")
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Fine-tune structured-pruned models with removed filters physically dropped (same "
                   "results, faster); checkpoints stay full-size.")
@click.option("--force", is_flag=True, help="Start over even if OUT holds a run with other settings.")
def prune(schedule, rewind, agp_steps, agp_interval, structured, lr, amounts, epochs, scope, criterion, baseline, arch,
          batch_size, momentum, weight_decay, seed, data_path, normalize, train_limit, test_limit, backend, out,
          compact, force):
    from minicnn.pruning.masks import parse_amounts
    from minicnn.study.config import PruneConfig, criterion_tag
    from minicnn.study.runs import format_table, run_prune

    method = "structured" if structured else "unstructured"
    config = PruneConfig(arch=arch, schedule=schedule, method=method, scope=scope, criterion=criterion, lr=lr,
                         amounts=tuple(parse_amounts(amounts)), epochs=epochs, batch_size=batch_size,
                         momentum=momentum, weight_decay=weight_decay, seed=seed, normalize=normalize,
                         train_limit=train_limit, test_limit=test_limit, baseline=baseline, compact=compact,
                         rewind=rewind, agp_steps=agp_steps, agp_interval=agp_interval)
    out = out or f"runs/prune-{schedule}-{method}{criterion_tag(criterion)}-lr{config.lr:g}"
    rows = run_prune(config, out, data_path=data_path, backend=backend, force=force, echo=click.echo,
                     progress_factory=progress)
    click.echo("")
    click.echo(format_table(rows))
    diverged = sum(r.diverged for r in rows)
    click.echo(f"\nresults: {out}/results.csv, checkpoints: {out}/steps/"
               + (f"; {diverged} step(s) DIVERGED (NaN/inf loss or weights)" if diverged else ""))


@click.command()
@click.option("--schedules", default=",".join(paper.SCHEDULES), show_default=True,
              help=f"Comma-separated schedules, of {', '.join(paper.ALL_SCHEDULES)} (agp with its default ramps, "
                   f"lth rewinding as --rewind says: see `minicnn prune --help`).")
@click.option("--methods", default=",".join(paper.METHODS), show_default=True, help="Comma-separated methods.")
@click.option("--lrs", default=",".join(f"{lr:g}" for lr in paper.LRS), show_default=True,
              help="Fine-tuning learning rates, comma-separated, each > 0 and given once.")
@click.option("--amounts", default=_AMOUNTS, show_default=True,
              help="Cumulative fractions pruned (see `minicnn prune --help`).")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated seeds (integers in 0 ... 2**32-1, each once): one baseline per seed.")
@click.option("--epochs", type=click.IntRange(min=0), default=paper.FINE_TUNE_EPOCHS, show_default=True,
              help="Fine-tuning epochs per step.")
@click.option("--scope", type=click.Choice(paper.SCOPES), default="layer", show_default=True,
              help="Unstructured ranking scope (structured is always layerwise).")
@click.option("--criteria", "--criterion", "criteria", default="magnitude", show_default=True,
              help="Comma-separated criteria, each a grid axis. " + _CRITERION_HELP + " A run of a criterion "
                   "other than magnitude goes to OUT/runs/SCHEDULE-METHOD-CRITERION-lrLR-seedS.")
@click.option("--rewind", default=None, metavar="init|EPOCH",
              help="Where the lth runs rewind the survivors: init or a baseline epoch.  [default: init; only "
                   "with lth among --schedules]")
@click.option("--arch", default=paper.ARCH, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=paper.BATCH_SIZE, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; the cores (or NUMBA_NUM_THREADS) are split between them.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on a Dask cluster instead: tcp://HOST:PORT (a running `dask scheduler`) or local:N "
                   "(N one-thread worker processes here). Needs the distributed extra.")
@data_options
@backend_option
@click.option("--out", type=click.Path(file_okay=False), default="runs/sweep", show_default=True)
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Fine-tune structured-pruned models compacted (see `minicnn prune --help`).")
@click.option("--force", is_flag=True, help="Start over even if OUT holds a sweep with other settings.")
def sweep(schedules, methods, lrs, amounts, seeds, epochs, scope, criteria, rewind, arch, batch_size, jobs, scheduler,
          data_path, normalize, train_limit, test_limit, backend, out, compact, force):
    """Run a grid: schedules x methods x criteria x learning rates x amounts x seeds (the paper's by default).

    One baseline per seed (the paper's: lr 0.8, batch 512, 10 epochs) is trained first and shared by
    every configuration of that seed. Each configuration is a `minicnn prune` run in OUT/runs/...;
    all rows are merged into OUT/results.csv and OUT/results.h5 as configurations finish. Rerunning
    with the same OUT resumes where it stopped; rerunning with more --seeds adds those seeds.

    With --scheduler the tasks (one per baseline, one per configuration and seed) run on a Dask
    cluster; the workers need minicnn and CIFAR-10 (their own MINICNN_DATA or cache), not OUT: this
    machine writes every file, the same files as --jobs. Same seeds and threads per task give the
    same bits.
    """
    from minicnn.pruning.masks import parse_amounts
    from minicnn.study.config import SweepConfig
    from minicnn.study.runs import format_table
    from minicnn.study.sweep import run_sweep

    config = SweepConfig(schedules=split_list(schedules, "--schedules"), methods=split_list(methods, "--methods"),
                         lrs=split_list(lrs, "--lrs", float), amounts=tuple(parse_amounts(amounts)),
                         seeds=split_list(seeds, "--seeds", int), epochs=epochs, scope=scope,
                         criteria=split_list(criteria, "--criteria"), rewind=rewind, batch_size=batch_size,
                         normalize=normalize, train_limit=train_limit, test_limit=test_limit, arch=arch,
                         compact=compact)
    if scheduler is None:
        rows = run_sweep(config, out, jobs=jobs, data_path=data_path, backend=backend, force=force, echo=click.echo)
    else:
        from minicnn.study.distributed import run_sweep_dask

        if jobs != 1:
            raise MiniCNNError("--jobs and --scheduler exclude each other: the cluster's workers run the tasks")
        rows = run_sweep_dask(config, out, scheduler, data_path=data_path, backend=backend, force=force,
                              echo=click.echo)
    click.echo(format_table(rows))
    diverged = sum(r.diverged for r in rows)
    click.echo(f"\nresults: {out}/results.csv" + (f"; {diverged} row(s) DIVERGED" if diverged else ""))


@click.command("plot")
@click.argument("results", type=click.Path(), metavar="RESULTS...", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Folder for the figures.  [default: RESULTS_DIR/figures, of the first RESULTS]")
def plot_cmd(results, out_dir):
    """Draw the paper's figures from a results table.

    RESULTS is the --out folder of `minicnn prune` / `minicnn sweep` (holding results.csv) or the CSV
    itself; several are merged into one table (a run found in two counts once, from the first). Writes
    PNG and SVG files and prints their paths:

    \b
      <schedule>_<method>_lr<lr>   one per configuration, the paper's Figures 2-13:
                                   test accuracy after and before fine-tuning and
                                   train accuracy (%) against the fraction of
                                   parameters remaining (x axis from 1.0 to 0.0);
                                   mean line and +-std band over seeds, red crosses
                                   where a run diverged
      summary_schedules            one-shot vs iterative, per method and lr
      summary_lrs                  the learning rates compared, per schedule and method
      summary_methods              structured vs unstructured, per schedule and lr
      summary_flops                test accuracy vs effective training FLOPs per
                                   image (log scale)
      accuracy_vs_compression,     with rows beyond the paper (criteria, agp, lth):
      accuracy_vs_speedup,         accuracy vs compression / speedup (log2, 1x-128x)
      schedules_equal_compute      and vs epochs spent, one line per criterion/schedule

    Figures without data are skipped, so a partial sweep plots what it has. Existing
    files are replaced atomically.
    """
    from plots.figures import make_figures

    rows = load_result_rows(results)
    out = Path(out_dir) if out_dir else results_base(results[0]) / "figures"
    paths = make_figures(rows, out)
    if not paths:
        raise MiniCNNError(f"{', '.join(results)} has no accuracy values to plot")
    for path in paths:
        click.echo(str(path))


def _is_report(path: Path) -> bool:
    """Whether a file is a report `minicnn report` wrote (then it may be replaced)."""
    from minicnn.study.report import REPORT_TITLE

    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\n") == REPORT_TITLE
    except (OSError, UnicodeDecodeError):
        return False


@click.command("report")
@click.argument("results", type=click.Path(), metavar="RESULTS...", nargs=-1, required=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Markdown file to write.  [default: RESULTS_DIR/REPORT.md, of the first RESULTS]")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Figures to link (drawn first if the folder holds none).  [default: RESULTS_DIR/figures, of "
                   "the first RESULTS]")
@click.option("--force", is_flag=True, help="Replace --out even if it is not a minicnn report.")
def report_cmd(results, out_file, figures_dir, force):
    """Write a markdown report of a results table and check the paper's claims.

    RESULTS is the --out folder of `minicnn prune` / `minicnn sweep` (holding results.csv) or the CSV
    itself; several (e.g. the paper's study and an extended one) are merged into one table, a run found
    in two counted once, from the first. The report holds: what was run (rows, seeds, epochs, fine-tuning time), the setup next to
    the paper's, one table per schedule x method x lr (amount, remaining, effective parameters and
    FLOPs, test accuracy before and after fine-tuning, train accuracy; mean +- std over seeds), links
    to the figures, and a Claims section: every result the paper states, each with its tolerance, our
    measurement and a verdict (confirmed, partly, not confirmed, or not testable when the rows it needs
    are missing). A table with rows beyond the paper (criteria random/gradmag, schedules agp/lth) adds
    a "Beyond the paper" section (random and gradmag vs magnitude, AGP and LTH vs iterative at equal
    epochs, the most sensitive layer from the first RESULTS_DIR/sensitivity there is, mask agreement
    from the step checkpoints under every RESULTS_DIR/runs).

    Figures are drawn with `minicnn plot` when the figures folder has none; run `minicnn plot` again
    to refresh them after the results change. An existing --out is replaced only if it is a minicnn
    report (or with --force).
    """
    from minicnn.study.claims import VERDICTS, evaluate_claims
    from minicnn.study.curves import preferred_scope
    from minicnn.study.report import write_report

    rows = load_result_rows(results)
    bases = [results_base(path) for path in results]
    out = Path(out_file) if out_file else bases[0] / "REPORT.md"
    figures = Path(figures_dir) if figures_dir else bases[0] / "figures"
    refuse_overwrite(out, force, _is_report)
    if not (figures.is_dir() and any(figures.glob("*.png"))):
        from plots.figures import make_figures

        for path in make_figures(rows, figures):
            click.echo(str(path))
    write_report(rows, out, figures, sweep_dirs=bases)
    claims = evaluate_claims(rows, preferred_scope(rows))
    tally = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS)
    click.echo(f"{out}: {len(claims)} claims: {tally}")
