"""Command line: parses options and calls the library. Heavy modules are imported inside commands so
that `minicnn --help` starts fast."""

from __future__ import annotations

import contextlib

import click

from minicnn.errors import MiniCNNError


class _CleanErrors(click.Group):
    """A click group that turns library errors (MiniCNNError) into one-line `Error: ...` messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MiniCNNError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_CleanErrors)
@click.version_option(package_name="minicnn")
def cli():
    """minicnn: train, prune and measure a small CNN on CIFAR-10, from scratch in NumPy/Numba."""


# --------------------------------------------------------------------------------------------- data
@cli.group(cls=_CleanErrors)
def data():
    """Locate, verify and cache CIFAR-10."""


@data.command("prepare")
@click.option("--source", "source", metavar="PATH|URL",
              help="Official archive (cifar-10-binary.tar.gz or cifar-10-python.tar.gz), unpacked "
                   "cifar-10-batches-bin/ or cifar-10-batches-py/ folder (or its parent), http(s) "
                   "URL of an archive, or a .h5 cache. Default: $MINICNN_DATA.")
@click.option("--data", "data_path", metavar="PATH", help="Same as --source.")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Download the official binary archive (about 170 MB) when nothing local is found.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the cache path.")
def data_prepare(source, data_path, download, quiet):
    """Build the HDF5 cache of CIFAR-10 once and print where it is.

    \b
    Where the data comes from, first match wins:
      1. --source / --data PATH
      2. the environment variable MINICNN_DATA
      3. the existing cache, if valid (then nothing is read again)
      4. an official archive or unpacked folder in the cache folder
      5. a download of the official binary archive into the cache folder

    \b
    The cache is $MINICNN_CACHE/cifar10.h5, else $XDG_CACHE_HOME/minicnn/cifar10.h5,
    else ~/.cache/minicnn/cifar10.h5. Every batch file is checked against the md5 of
    the official file before it is converted.
    """
    import time

    from minicnn.io import data as data_lib

    if source and data_path and source != data_path:
        raise click.UsageError("give the data location once: --source or --data, not both")
    start = time.perf_counter()
    path = data_lib.prepare(data_lib.resolve_source(source or data_path), download=download,
                            progress=not quiet)
    elapsed = time.perf_counter() - start
    if quiet:
        click.echo(str(path))
        return
    facts = data_lib.info(path)
    click.echo(f"CIFAR-10 cache: {path}")
    click.echo(f"{facts['n_train']} train and {facts['n_test']} test images, ready in {elapsed:.1f} s")


@data.command("info")
@click.option("--data", "data_path", metavar="PATH",
              help="Archive, unpacked folder or .h5 cache. Default: $MINICNN_DATA, else the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
def data_info(data_path, as_json):
    """Print counts, shapes, channel statistics and checksums of the CIFAR-10 cache.

    \b
    Reads --data PATH, else MINICNN_DATA, else the cache ($MINICNN_CACHE/cifar10.h5,
    else $XDG_CACHE_HOME/minicnn/cifar10.h5, else ~/.cache/minicnn/cifar10.h5).
    An archive or folder is converted to the cache first; nothing is downloaded
    (use `minicnn data prepare` for that).
    """
    import json

    from minicnn.io import data as data_lib

    path = data_lib.prepare(data_lib.resolve_source(data_path), download=False)
    facts = data_lib.info(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    shape = "x".join(str(s) for s in facts["image_shape"])
    source = facts["source"] or "unknown"
    if facts["source_format"]:
        source += f" ({facts['source_format']})"
    verified = ("yes: every batch file matched its official md5" if facts["official"]
                else "no: not built from the official CIFAR-10 files")
    click.echo(f"cache:        {facts['path']} ({facts['file_bytes'] / 1e6:.1f} MB, "
               f"format {facts['format_version']})")
    click.echo(f"built from:   {source}")
    click.echo(f"official:     {verified}")
    click.echo(f"train:        {facts['n_train']} images, {shape} uint8")
    click.echo(f"test:         {facts['n_test']} images, {shape} uint8")
    click.echo("channel mean: " + " ".join(f"{v:.8f}" for v in facts["channel_mean"])
               + "  (R G B, [0, 1] units, training set)")
    click.echo("channel std:  " + " ".join(f"{v:.8f}" for v in facts["channel_std"])
               + "  (population)")
    click.echo("per class:    label  name        train   test")
    for label, name in enumerate(facts["classes"]):
        click.echo(f"              {label:5d}  {name:<10s} {facts['train_class_counts'][name]:6d} "
                   f"{facts['test_class_counts'][name]:6d}")
    click.echo("md5:")
    for member, md5 in sorted(facts["member_md5"].items()):
        click.echo(f"              {md5}  {member}")


# ------------------------------------------------------------------------------- shared options
def _data_options(f):
    """--data, --normalize, --train-limit, --test-limit: how images are found and preprocessed."""
    f = click.option("--test-limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use only the first N test images (quick runs).")(f)
    f = click.option("--train-limit", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use only the first N training images (quick runs).")(f)
    f = click.option("--normalize", type=click.Choice(["center", "unit", "standard"]), default="center",
                     show_default=True,
                     help="Pixel preprocessing: center = x/255-0.5 (lets the paper's lr 0.8 train), "
                          "unit = x/255, standard = per-channel (x/255-mean)/std.")(f)
    f = click.option("--data", "data_path", metavar="PATH", default=None,
                     help="CIFAR-10 archive, unpacked folder or HDF5 cache (default: $MINICNN_DATA, "
                          "then the cache, then download).")(f)
    return f


def _backend_option(f):
    return click.option("--backend", type=click.Choice(["fast", "ref"]), default="fast", show_default=True,
                        help="fast = Numba kernels; ref = the plain NumPy reference (slow, for checking).")(f)


@contextlib.contextmanager
def _progress(label: str, n_images: int):
    """A click progress bar over images; yields update(n_images, running_loss, images_per_s)."""
    with click.progressbar(length=n_images, label=label, item_show_func=lambda s: s, width=24) as bar:
        def update(n, loss, ips):
            bar.update(n, f"loss {loss:.4f}  {ips:,.0f} img/s")
        yield update


def _load_dataset(data_path, train_limit, test_limit):
    from minicnn.io.data import load_cifar10

    return load_cifar10(data_path, train_limit=train_limit, test_limit=test_limit)


def _print_epoch(record: dict) -> None:
    status = "  DIVERGED (loss is NaN/inf)" if record["diverged"] else ""
    click.echo(f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  "
               f"train acc {record['train_acc']:6.2%}  test acc {record['test_acc']:6.2%}  "
               f"{record['images_per_s']:8,.0f} img/s{status}")


# -------------------------------------------------------------------------------------- train
@cli.command()
@click.option("--arch", default="paper", show_default=True,
              help="Preset (paper, conv2, conv4) or a spec string such as 'conv8,relu,pool2,flatten,linear10'.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.8, show_default=True,
              help="SGD learning rate (the paper's baseline uses 0.8).")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation and shuffling.")
@_data_options
@_backend_option
@click.option("--out", type=click.Path(dir_okay=False), default="runs/baseline.h5", show_default=True,
              help="HDF5 checkpoint, rewritten after every epoch. Rerunning with the same settings resumes it.")
@click.option("--force", is_flag=True, help="Start over even if --out holds a run with other settings.")
def train(arch, epochs, lr, batch_size, momentum, weight_decay, seed, data_path, normalize, train_limit,
          test_limit, backend, out, force):
    """Train a model on CIFAR-10 with plain SGD and save an HDF5 checkpoint.

    Prints train and test accuracy after every epoch. A NaN/inf loss stops the run and is recorded as
    diverged (at high learning rates that is a result, not a crash). An interrupted run resumes from
    its last finished epoch when rerun with the same --out and settings.
    """
    from minicnn.study.training import run_training

    config = {"arch": arch, "epochs": epochs, "lr": lr, "batch_size": batch_size, "momentum": momentum,
              "weight_decay": weight_decay, "seed": seed, "normalize": normalize, "train_limit": train_limit,
              "test_limit": test_limit}
    result = run_training(config, out, data_path=data_path, backend=backend, force=force,
                          progress_factory=_progress, on_epoch=_print_epoch, echo=click.echo)
    click.echo(f"final: train acc {result['train_acc']:.2%}  test acc {result['test_acc']:.2%}"
               f"{'  (diverged)' if result['diverged'] else ''}  -> {out}")


# --------------------------------------------------------------------------------------- eval
@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@_data_options
@_backend_option
def eval_cmd(checkpoint, data_path, normalize, train_limit, test_limit, backend):
    """Print the train and test accuracy of a checkpoint.

    The normalisation stored in the checkpoint is used unless --normalize is given explicitly.
    """
    from minicnn.io.checkpoint import load_checkpoint
    from minicnn.io.data import make_normalizer
    from minicnn.nn.train import evaluate

    model, info = load_checkpoint(checkpoint, backend=backend)
    source = click.get_current_context().get_parameter_source("normalize")
    if source == click.core.ParameterSource.DEFAULT:
        normalize = info["config"].get("normalize", normalize)
    dataset = _load_dataset(data_path, train_limit, test_limit)
    norm = make_normalizer(normalize, dataset)
    train_m = evaluate(model, dataset.x_train, dataset.y_train, norm)
    test_m = evaluate(model, dataset.x_test, dataset.y_test, norm)
    click.echo(f"{checkpoint}: {model.arch}, {model.num_params():,} parameters, epoch {info['epoch']}")
    click.echo(f"train acc {train_m['acc']:.2%} (loss {train_m['loss']:.4f}) on {len(dataset.y_train):,} images")
    click.echo(f"test acc  {test_m['acc']:.2%} (loss {test_m['loss']:.4f}) on {len(dataset.y_test):,} images")


# -------------------------------------------------------------------------------------- flops
@cli.command("flops")
@click.option("--arch", default=None, metavar="NAME|SPEC",
              help="Preset (paper, conv2, conv4) or a spec string such as "
                   "'conv8,relu,pool2,flatten,linear10'. Default: paper.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Count a saved model instead, with its pruning masks.")
@click.option("--json", "as_json", is_flag=True, help="Print per-layer numbers and totals as JSON.")
def flops_cmd(arch, checkpoint, as_json):
    """Print parameters and FLOPs per layer, dense and effective (mask-aware), per image.

    \b
    Convention:
      1 multiply-add = 2 FLOPs
      conv:     2*C*KH*KW*OH*OW*F + OH*OW*F (bias)
      linear:   2*in*out + out
      ReLU:     1 per element; max-pool: k*k-1 comparisons per output; flatten: 0
      softmax cross-entropy: 4K per image for K classes, shown apart from the totals
      training: 3 x forward (backward ~ 2 x forward), a convention
    Dense FLOPs are what a dense kernel executes; effective FLOPs count only
    unmasked weights between live units and ReLU/pooling on live channels.
    Parameters: total, nonzero, effective (nonzero and not dead).
    """
    import json

    from minicnn.pruning import flops

    if arch is not None and checkpoint is not None:
        raise MiniCNNError("give --arch or --checkpoint, not both")
    if checkpoint is not None:
        from minicnn.io.checkpoint import load_checkpoint

        model, _info = load_checkpoint(checkpoint, backend="ref")
    else:
        import numpy as np

        from minicnn.nn.model import build_model

        model = build_model(arch or "paper", rng=np.random.default_rng(0), backend="ref")
    counts = flops.count(model)
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        click.echo(f"model: {model.arch} ({model.spec})")
        click.echo(flops.format_table(counts))


# -------------------------------------------------------------------------------------- prune
_PRUNE_HELP = """Prune a trained model step by step, fine-tuning after every step, and record the results.

\b
Semantics (exactly as the paper's PyTorch pruning):
- Prunable: the weights of every conv and linear layer; unstructured pruning never prunes biases.
- Amounts are cumulative targets: the fraction of each prunable tensor pruned after the step.
  The count is round(amount * n), Python's round (half to even), as torch.nn.utils.prune;
  n counts entries (unstructured) or dim-0 slices (structured).
- oneshot: every amount is applied to the trained baseline directly.
- iterative: step k prunes the smallest still-unpruned entries up to the new count; masks only
  shrink (torch's repeated pruning with integer amounts new - previous).
- --unstructured: L1, smallest |w| per tensor (--scope global ranks all weights together).
- --structured: whole conv filters / hidden neurons by L2 norm (ln_structured n=2, dim=0); the
  output layer's rows (the classes) are never removed. A removed filter's bias is masked too
  (torch keeps it, leaving a constant ReLU(b) map), and the next layer's weights that read only
  dead inputs count as removed in the effective parameter and FLOP counts.
- Masks hold through fine-tuning: pruned weights get no gradient, momentum or weight decay and
  stay exactly 0.

Without --baseline, the paper's baseline (lr 0.8, batch 512, 10 epochs, same seed and data) is
trained into OUT/baseline.h5 first, or reused if it is there. Every step writes OUT/steps/*.h5 and
OUT/results.csv/.h5; rerunning with the same OUT resumes at the first unfinished step.

Each step measures test accuracy right after pruning and, after fine-tuning, train and test accuracy
on the full splits; the test split is not evaluated between fine-tuning epochs (as in the paper).
"""


@cli.command(help=_PRUNE_HELP)
@click.option("--schedule", type=click.Choice(["oneshot", "iterative"]), required=True,
              help="oneshot: each amount from the baseline; iterative: each step from the previous one.")
@click.option("--structured/--unstructured", "structured", default=None, required=True,
              help="L2 filter-level structured or L1 unstructured pruning.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Fine-tuning learning rate (the paper uses 0.8, 0.01 and 0.0001).")
@click.option("--amounts", default="0,.1,.2,.3,.4,.5,.6,.7,.8,.9,.95,.99", show_default=True,
              help="Cumulative fractions pruned, comma-separated, increasing, within [0, 1].")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="Fine-tuning epochs per step.")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="Rank weights per tensor (as the paper) or across all prunable weights (unstructured only).")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Trained checkpoint to prune (default: train the paper's baseline into OUT).")
@click.option("--arch", default="paper", show_default=True, help="Architecture of the baseline.")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_data_options
@_backend_option
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory [default: runs/prune-SCHEDULE-METHOD-lrLR].")
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Fine-tune structured-pruned models with removed filters physically dropped (same "
                   "results, faster); checkpoints stay full-size.")
@click.option("--force", is_flag=True, help="Start over even if OUT holds a run with other settings.")
def prune(schedule, structured, lr, amounts, epochs, scope, baseline, arch, batch_size, momentum, weight_decay,
          seed, data_path, normalize, train_limit, test_limit, backend, out, compact, force):
    from minicnn.pruning.masks import parse_amounts
    from minicnn.study.runs import format_table, run_prune

    method = "structured" if structured else "unstructured"
    out = out or f"runs/prune-{schedule}-{method}-lr{lr:g}"
    config = {"arch": arch, "schedule": schedule, "method": method, "scope": scope, "lr": lr,
              "amounts": parse_amounts(amounts), "epochs": epochs, "batch_size": batch_size, "momentum": momentum,
              "weight_decay": weight_decay, "seed": seed, "normalize": normalize, "train_limit": train_limit,
              "test_limit": test_limit, "baseline": baseline, "compact": compact}
    rows = run_prune(config, out, data_path=data_path, backend=backend, force=force, echo=click.echo,
                     progress_factory=_progress)
    click.echo("")
    click.echo(format_table(rows))
    click.echo(f"\nresults: {out}/results.csv, checkpoints: {out}/steps/")


# -------------------------------------------------------------------------------------- sweep
def _float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MiniCNNError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise MiniCNNError(f"{name} must be positive numbers, got {text!r}")
    return values


def _choice_list(text: str, choices: tuple, name: str) -> list[str]:
    values = [t.strip() for t in text.split(",") if t.strip()]
    bad = [v for v in values if v not in choices]
    if not values or bad:
        raise MiniCNNError(f"{name}: unknown {', '.join(bad) or 'empty list'}; choose from {', '.join(choices)}")
    return values


@cli.command()
@click.option("--schedules", default="oneshot,iterative", show_default=True, help="Comma-separated schedules.")
@click.option("--methods", default="unstructured,structured", show_default=True, help="Comma-separated methods.")
@click.option("--lrs", default="0.8,0.01,0.0001", show_default=True, help="Fine-tuning learning rates.")
@click.option("--amounts", default="0,.1,.2,.3,.4,.5,.6,.7,.8,.9,.95,.99", show_default=True,
              help="Cumulative fractions pruned (see `minicnn prune --help`).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds: one baseline per seed.")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="Fine-tuning epochs per step.")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
              help="Unstructured ranking scope (structured is always layerwise).")
@click.option("--arch", default="paper", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; the cores are split between them (no oversubscription).")
@_data_options
@_backend_option
@click.option("--out", type=click.Path(file_okay=False), default="runs/sweep", show_default=True)
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Fine-tune structured-pruned models compacted (see `minicnn prune --help`).")
@click.option("--force", is_flag=True, help="Start over even if OUT holds a sweep with other settings.")
def sweep(schedules, methods, lrs, amounts, seeds, epochs, scope, arch, batch_size, jobs, data_path, normalize,
          train_limit, test_limit, backend, out, compact, force):
    """Run the paper's whole ablation grid: schedules x methods x learning rates x amounts x seeds.

    One baseline per seed (the paper's: lr 0.8, batch 512, 10 epochs) is trained first and shared by
    every configuration of that seed. Each configuration is a `minicnn prune` run in OUT/runs/...;
    all rows are merged into OUT/results.csv and OUT/results.h5 as configurations finish. Rerunning
    with the same OUT resumes where it stopped; rerunning with more --seeds adds those seeds.
    """
    from minicnn.pruning.masks import METHODS, SCHEDULES, parse_amounts
    from minicnn.study.runs import format_table, run_sweep

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise MiniCNNError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if not seed_list:
        raise MiniCNNError("--seeds is empty; pass e.g. --seeds 0,1,2")
    config = {"schedules": _choice_list(schedules, SCHEDULES, "--schedules"),
              "methods": _choice_list(methods, METHODS, "--methods"), "lrs": _float_list(lrs, "--lrs"),
              "amounts": parse_amounts(amounts), "seeds": seed_list, "epochs": epochs, "scope": scope,
              "batch_size": batch_size, "momentum": 0.0, "weight_decay": 0.0, "normalize": normalize,
              "train_limit": train_limit, "test_limit": test_limit, "arch": arch, "compact": compact}
    if scope == "global" and "structured" in config["methods"]:
        raise MiniCNNError("--scope global applies to unstructured pruning only; pass --methods unstructured")
    rows = run_sweep(config, out, jobs=jobs, data_path=data_path, backend=backend, force=force, echo=click.echo)
    click.echo(format_table(rows))
    click.echo(f"\nresults: {out}/results.csv")


# ------------------------------------------------------------------------------------ compact
@cli.command("compact")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the compact checkpoint [default: CHECKPOINT with suffix .compact.h5].")
def compact_cmd(checkpoint, out):
    """Physically drop the filters and neurons that structured pruning removed (and the next layer's
    inputs that read them). The compact model computes exactly the same outputs, faster."""
    from pathlib import Path

    from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
    from minicnn.pruning.compact import compact, compact_summary

    model, info = load_checkpoint(checkpoint, backend="ref")
    small, _ = compact(model)
    out = out or str(Path(checkpoint).with_suffix(".compact.h5"))
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise MiniCNNError("--out must differ from CHECKPOINT (the full-size checkpoint is kept)")
    save_checkpoint(out, small, config={**info["config"], "compacted_from": str(checkpoint)}, epoch=info["epoch"],
                    history=info["history"], extra=info["extra"])
    click.echo(f"{checkpoint}: {compact_summary(model, small)}; "
               f"{model.num_params():,} -> {small.num_params():,} parameters -> {out}")


# ------------------------------------------------------------------------------- plot / report
def _results_base(results):
    """The folder a results argument lives in (the argument itself when it is a folder)."""
    from pathlib import Path

    path = Path(results)
    return path if path.is_dir() else path.parent


def _load_result_rows(results) -> list:
    from minicnn.study.results import load_results

    rows = load_results(results)
    if not rows:
        raise MiniCNNError(f"{results} holds no result rows yet; let `minicnn prune` or `minicnn sweep` "
                           f"finish at least one amount")
    return rows


@cli.command("plot")
@click.argument("results", type=click.Path(), metavar="RESULTS")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Folder for the figures.  [default: RESULTS_DIR/figures]")
def plot_cmd(results, out_dir):
    """Draw the paper's figures from a results table.

    RESULTS is the --out folder of `minicnn prune` / `minicnn sweep` (holding results.csv) or the CSV
    itself. Writes PNG and SVG files and prints their paths:

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

    Figures without data are skipped, so a partial sweep plots what it has. Existing
    files are replaced atomically.
    """
    from pathlib import Path

    from plots.figures import make_figures

    rows = _load_result_rows(results)
    out = Path(out_dir) if out_dir else _results_base(results) / "figures"
    paths = make_figures(rows, out)
    if not paths:
        raise MiniCNNError(f"{results} has no accuracy values to plot")
    for path in paths:
        click.echo(str(path))


@cli.command("report")
@click.argument("results", type=click.Path(), metavar="RESULTS")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Markdown file to write.  [default: RESULTS_DIR/REPORT.md]")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Figures to link (drawn first if the folder holds none).  [default: RESULTS_DIR/figures]")
def report_cmd(results, out_file, figures_dir):
    """Write a markdown report of a results table and check the paper's claims.

    RESULTS is the --out folder of `minicnn prune` / `minicnn sweep` (holding results.csv) or the CSV
    itself. The report holds: what was run (rows, seeds, epochs, fine-tuning time), the setup next to
    the paper's, one table per schedule x method x lr (amount, remaining, effective parameters and
    FLOPs, test accuracy before and after fine-tuning, train accuracy; mean +- std over seeds), links
    to the figures, and a Claims section: every result the paper states, each with its tolerance, our
    measurement and a verdict (confirmed, partly, not confirmed, or not testable when the rows it needs
    are missing).

    Figures are drawn with `minicnn plot` when the figures folder has none; run `minicnn plot` again
    to refresh them after the results change.
    """
    from pathlib import Path

    from minicnn.study.claims import VERDICTS, evaluate_claims
    from minicnn.study.curves import preferred_scope
    from minicnn.study.report import write_report

    rows = _load_result_rows(results)
    base = _results_base(results)
    out = Path(out_file) if out_file else base / "REPORT.md"
    figures = Path(figures_dir) if figures_dir else base / "figures"
    if not (figures.is_dir() and any(figures.glob("*.png"))):
        from plots.figures import make_figures

        for path in make_figures(rows, figures):
            click.echo(str(path))
    write_report(rows, out, figures)
    claims = evaluate_claims(rows, preferred_scope(rows))
    tally = ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS)
    click.echo(f"{out}: {len(claims)} claims: {tally}")
