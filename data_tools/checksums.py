"""Print and check the checksums of a CIFAR-10 archive or unpacked folder.

    python data_tools/checksums.py /work/shared/datasets/cifar10/cifar-10-binary.tar.gz

For an archive file it prints the container's md5 (and whether it is one of the official archives),
then the md5 and sha256 of each CIFAR-10 member with OK / MISMATCH / (no official md5) against the
official table in minicnn.io.archive.MEMBER_MD5. Exit status 1 when any member does not match.
A re-packed archive may show a different container md5 while every member matches: the members are
what minicnn verifies.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

try:
    import minicnn  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minicnn.io import archive  # noqa: E402
from minicnn.errors import MiniCNNError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check CIFAR-10 member files against the official md5s.")
    parser.add_argument("source", help="cifar-10-binary.tar.gz, cifar-10-python.tar.gz or an unpacked folder")
    args = parser.parse_args(argv)
    source = Path(args.source).expanduser()

    if source.is_file():
        md5 = archive.file_md5(source)
        official = {v: k for k, v in archive.ARCHIVE_MD5.items()}
        note = f"official ({official[md5].rsplit('/', 1)[-1]})" if md5 in official else \
            "not an official container (fine if every member below is OK)"
        print(f"{md5}  {source.name}  [{note}]")

    bad = 0
    try:
        members = list(archive.iter_members(source))
    except MiniCNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not members:
        print(f"error: {source} holds no CIFAR-10 member files", file=sys.stderr)
        return 1
    for name, blob in members:
        md5 = hashlib.md5(blob).hexdigest()
        sha256 = hashlib.sha256(blob).hexdigest()
        expected = archive.MEMBER_MD5.get(name)
        if expected is None:
            status = "(no official md5)"
        elif md5 == expected:
            status = "OK"
        else:
            status = f"MISMATCH (expected {expected})"
            bad += 1
        print(f"{md5}  {sha256}  {name:<17s} {len(blob):>10,d} bytes  {status}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
