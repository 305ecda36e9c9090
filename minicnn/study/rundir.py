"""Run folders: a folder holds one run (or one sweep), recorded with its settings in a JSON file; a
rerun into the same folder with other settings is refused, so results of different runs never mix.

    run.json / sweep.json   the settings (a config's ``to_dict``)
    steps/NNN_amount_A.h5   a pruning run's model after step NNN (pruned to A, fine-tuned)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from minicnn.errors import MiniCNNError
from minicnn.io.files import atomic_path, check_writable


def step_path(out_dir: Path, step: int, amount: float) -> Path:
    return Path(out_dir) / "steps" / f"{step:03d}_amount_{amount:.4f}.h5"


def read_settings(path: Path) -> dict | None:
    """The settings recorded in ``path``, or None when it is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_settings(path: Path, settings: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))


def claim_dir(out_dir: Path, settings_name: str, config, force: bool, outputs: tuple, what: str,
              extendable: tuple = ()) -> None:
    """Make ``out_dir`` hold the run described by ``config`` (a study config), recorded in
    ``out_dir/settings_name``.

    Settings that differ from the recorded ones (but those in ``extendable``) are refused
    (MiniCNNError naming them), as are ``outputs`` lying there without a record; with ``force`` the
    record and those outputs are deleted first, so the run starts over.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise MiniCNNError(f"--out {out_dir} is a file; pass a directory")
    stored = read_settings(out_dir / settings_name)
    if not force:
        if stored is not None:
            diffs = config.differences(stored, ignore=extendable)
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
    write_settings(out_dir / settings_name, config.to_dict())
