"""minicnn data prepare / info: locate, verify and cache CIFAR-10."""

from __future__ import annotations

import click


@click.group()
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
@click.option("--compile/--no-compile", "compile_kernels", default=True, show_default=True,
              help="Also compile the kernels a paper-model training run uses (a child process, while the "
                   "cache is built), so that the first `minicnn train` starts at once.")
def data_prepare(source, data_path, download, quiet, compile_kernels):
    """Build the HDF5 cache of CIFAR-10 once and print where it is.

    \b
    Where the data comes from, first match wins:
      1. --source / --data PATH
      2. the environment variable MINICNN_DATA
      3. the existing cache, if valid (then nothing is read again)
      4. an official archive or unpacked folder in the cache folder
      5. a download of the official binary archive into the cache folder
    A source named in 1 or 2 is used or refused, never skipped: the cache
    stands for it only if it was built from exactly that file.

    \b
    The cache is $MINICNN_CACHE/cifar10.h5, else $XDG_CACHE_HOME/minicnn/cifar10.h5,
    else ~/.cache/minicnn/cifar10.h5. Every batch file is checked against the md5 of
    the official file before it is converted.

    Meanwhile a child process compiles the kernels of a paper-model training run into
    Numba's cache (about 30 s on 2 cores, once per install and machine; --no-compile
    leaves it to the first run).
    """
    import time

    from minicnn.io import cache
    from minicnn.study import warmup

    if source and data_path and source != data_path:
        raise click.UsageError("give the data location once: --source or --data, not both")
    start = time.perf_counter()
    compiling = warmup.start() if compile_kernels else None
    try:
        path = cache.prepare(cache.resolve_source(source or data_path), download=download,
                             progress=not quiet)
    except BaseException:
        if compiling is not None:
            compiling.terminate()
        raise
    if compiling is not None:
        if not quiet:
            click.echo("compiling the training kernels (once per install) ...")
        if not warmup.finish(compiling) and not quiet:
            click.echo("the kernels were not compiled ahead; the first run compiles them")
    elapsed = time.perf_counter() - start
    if quiet:
        click.echo(str(path))
        return
    facts = cache.info(path)
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
    An archive or folder is verified and converted to the cache first (unless the
    cache was built from exactly that file); nothing is downloaded (use
    `minicnn data prepare` for that).
    """
    import json

    from minicnn.io import cache

    path = cache.prepare(cache.resolve_source(data_path), download=False)
    facts = cache.info(path)
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
