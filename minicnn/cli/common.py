"""Options and helpers the commands share."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from minicnn import paper
from minicnn.errors import MiniCNNError


def data_options(f):
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


def backend_option(f):
    return click.option("--backend", type=click.Choice(["fast", "ref"]), default="fast", show_default=True,
                        help="fast = Numba kernels; ref = the plain NumPy reference (slow, for checking).")(f)


def sgd_options(f):
    """--batch-size, --momentum, --weight-decay, --seed: the optimiser's fixed settings and the seed."""
    f = click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds initialisation and shuffling (an integer in 0 ... 2**32-1).")(f)
    f = click.option("--weight-decay", type=float, default=0.0, show_default=True, help="L2 weight decay, >= 0.")(f)
    f = click.option("--momentum", type=float, default=0.0, show_default=True, help="SGD momentum, in [0, 1).")(f)
    return click.option("--batch-size", type=click.IntRange(min=1), default=paper.BATCH_SIZE, show_default=True)(f)


@contextlib.contextmanager
def progress(label: str, n_images: int):
    """A click progress bar over images; yields update(n_images, running_loss, images_per_s)."""
    with click.progressbar(length=n_images, label=label, item_show_func=lambda s: s, width=24) as bar:
        def update(n, loss, ips):
            bar.update(n, f"loss {loss:.4f}  {ips:,.0f} img/s")
        yield update


def split_list(text: str, name: str, parse=str) -> tuple:
    """'a,b' -> (parse('a'), parse('b')); MiniCNNError naming the option for an item parse refuses."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise MiniCNNError(f"{name} is empty; give comma-separated values")
    if not all(items):
        raise MiniCNNError(f"{name} {text!r} has an empty item; give comma-separated values")
    try:
        return tuple(parse(t) for t in items)
    except ValueError:
        kind = {int: "integers", float: "numbers"}.get(parse, "values")
        raise MiniCNNError(f"{name} must be comma-separated {kind}, got {text!r}") from None


def results_base(results) -> Path:
    """The folder a results argument lives in (the argument itself when it is a folder)."""
    path = Path(results)
    return path if path.is_dir() else path.parent


def load_result_rows(results) -> list:
    """The rows of one results folder or CSV, or of several merged (``results.merge_tables``)."""
    from minicnn.study.results import load_results, merge_tables

    tables = []
    for path in [results] if isinstance(results, (str, Path)) else results:
        tables.append(load_results(path))
        if not tables[-1]:
            raise MiniCNNError(f"{path} holds no result rows yet; let `minicnn prune` or `minicnn sweep` "
                               f"finish at least one amount")
    return merge_tables(tables)


def refuse_overwrite(path: Path, force: bool, ours) -> None:
    """Refuse to replace an existing ``path`` that this command did not write for the same input
    (``ours(path)`` says whether it did), unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise MiniCNNError(f"--out {path} is a directory; pass a file name")
    if path.exists() and not force and not ours(path):
        raise MiniCNNError(f"{path} exists and was not written by this command for the same input; "
                           f"choose another --out or pass --force to replace it")
