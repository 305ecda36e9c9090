"""Fetch, verify and convert CIFAR-10 into the minicnn HDF5 cache.

    python data_tools/fetch_cifar10.py                       # download the official binary archive
    python data_tools/fetch_cifar10.py --source cifar-10-binary.tar.gz
    python data_tools/fetch_cifar10.py --source https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz
    python data_tools/fetch_cifar10.py --dest /scratch/minicnn --no-download

The work is done by minicnn.io.cache.prepare: every batch file is checked against the official md5 before
it is decoded, and the cache (cifar10.h5) is written atomically. Without --source the environment
variable MINICNN_DATA is used, then an archive already in the destination folder, then a download.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import minicnn  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minicnn.io import cache  # noqa: E402
from minicnn.errors import MiniCNNError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download (if needed), verify and convert CIFAR-10 to the minicnn HDF5 cache.",
        epilog="The default destination is $MINICNN_CACHE, else $XDG_CACHE_HOME/minicnn, "
               "else ~/.cache/minicnn. The default source is $MINICNN_DATA.",
    )
    parser.add_argument("--dest", metavar="DIR",
                        help="folder for cifar10.h5 (and for a downloaded archive)")
    parser.add_argument("--source", metavar="PATH|URL",
                        help="official archive, unpacked cifar-10-batches-* folder, http(s) URL or .h5 cache")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading when nothing local is found")
    parser.add_argument("--quiet", action="store_true", help="print only the cache path")
    args = parser.parse_args(argv)

    target = Path(args.dest).expanduser() / cache.CACHE_NAME if args.dest else None
    start = time.perf_counter()
    try:
        path = cache.prepare(args.source, download=not args.no_download, progress=not args.quiet,
                             cache=target)
        facts = cache.info(path)
    except MiniCNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.quiet:
        print(path)
        return 0
    print(f"cache:   {path} ({facts['file_bytes'] / 1e6:.1f} MB), ready in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"images:  {facts['n_train']} train, {facts['n_test']} test")
    print("mean:    " + " ".join(f"{v:.8f}" for v in facts["channel_mean"]))
    print("std:     " + " ".join(f"{v:.8f}" for v in facts["channel_std"]))
    print(f"official md5s: {'all match' if facts['official'] else 'NOT matched'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
