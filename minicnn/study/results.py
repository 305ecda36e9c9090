"""The results schema: one ``ResultRow`` per (schedule, method, scope, lr, seed, amount), and its CSV and
HDF5 files. The columns of both files are the dataclass's fields, in order; nothing else lists them.

    results.csv   one header line, one line per row; floats with 6 significant digits, booleans 0/1
    results.h5    one dataset per column (text columns as strings, the others as float64);
                  attrs: format "minicnn-results", version
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn.errors import MiniCNNError
from minicnn.io.files import atomic_path, write_hdf5

FORMAT = "minicnn-results"
VERSION = 1


@dataclass(frozen=True)
class ResultRow:
    """One pruning step of one run, measured after fine-tuning (and, for test_acc_before, right after
    pruning). Accuracies are fractions; FLOPs are per image (minicnn.pruning.flops)."""

    schedule: str
    method: str
    scope: str
    lr: float
    seed: int
    step: int
    amount: float                    # cumulative fraction pruned of each prunable tensor
    remaining: float                 # 1 - amount
    params_total: int
    params_nonzero: int
    params_effective: int            # nonzero and not dead
    remaining_effective: float       # params_effective / params_total
    flops_dense: int                 # forward FLOPs of a dense kernel
    flops_effective: int             # forward FLOPs of unmasked weights on live channels
    training_flops_effective: int
    test_acc_before: float           # right after pruning, before fine-tuning
    test_acc_after: float
    train_acc: float
    train_loss: float
    test_loss: float
    epochs: int                      # fine-tuning epochs of the step
    seconds: float
    diverged: bool                   # a non-finite loss or weight was seen
    # columns added after the first tables: a table without them reads them as their default
    criterion: str = "magnitude"    # what ranked the weights (minicnn.pruning.criteria)
    compression_ratio: float = math.nan    # params_total / params_nonzero (NaN in a table: computed)
    theoretical_speedup: float = math.nan  # flops_dense / flops_effective, forward (NaN in a table: computed)
    epochs_spent: int = -1           # fine-tuning epochs trained to reach the row, the baseline's excluded
    train_flops_spent: int = -1      # sum over those epochs of training FLOPs per image x images (-1: not recorded)

    def __post_init__(self):
        # the two ratios follow from the counts; a table written before them gets them computed
        if math.isnan(self.compression_ratio):
            object.__setattr__(self, "compression_ratio", _ratio(self.params_total, self.params_nonzero))
        if math.isnan(self.theoretical_speedup):
            object.__setattr__(self, "theoretical_speedup", _ratio(self.flops_dense, self.flops_effective))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ResultRow":
        return cls(**{name: values[name] for name in COLUMNS if name in values or name in REQUIRED_COLUMNS})

    def config_key(self) -> tuple:
        """(schedule, method, scope, lr): the run configuration the row belongs to."""
        return (self.schedule, self.method, self.scope, self.lr)


def _ratio(total, part) -> float:
    """total / part as a float; inf when nothing is left (part 0)."""
    return total / part if part else math.inf


COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))
_TYPES = {f.name: f.type for f in dataclasses.fields(ResultRow)}
TEXT_COLUMNS = tuple(c for c in COLUMNS if _TYPES[c] == "str")
INT_COLUMNS = tuple(c for c in COLUMNS if _TYPES[c] == "int")
REQUIRED_COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow) if f.default is dataclasses.MISSING)


def _csv_value(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def save_results(rows: list[ResultRow], csv_path, h5_path=None) -> None:
    """Write the rows as CSV (and as HDF5, one dataset per column), each file atomically."""
    write_table(rows, COLUMNS, TEXT_COLUMNS, csv_path, h5_path, {"format": FORMAT, "version": VERSION})


def write_table(rows: list, columns: tuple, text_columns: tuple, csv_path, h5_path=None, attrs=None) -> None:
    """Rows (objects with an attribute per column) as a CSV file (floats with 6 significant digits,
    booleans 0/1) and, if ``h5_path``, an HDF5 file with one dataset per column (text columns as strings,
    the others as float64) and ``attrs``; each file written atomically. Any table of dataclass rows."""
    import csv

    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_csv_value(getattr(row, c)) for c in columns])
    if h5_path is not None:
        import h5py

        def fill(f):
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            for col in columns:
                values = [getattr(row, col) for row in rows]
                if col in text_columns:
                    f.create_dataset(col, data=np.array([str(v) for v in values], dtype=h5py.string_dtype()))
                else:
                    f.create_dataset(col, data=np.array(values, dtype=np.float64))

        write_hdf5(h5_path, fill)


def parse_cell(kind: str, column: str, text: str, where: str,
               fix: str = "rerun `minicnn prune` or `minicnn sweep` with the same --out to rewrite it"):
    """One CSV cell as its column's type ``kind`` ('str', 'bool', 'int' or 'float', as a row dataclass
    annotates it); MiniCNNError naming the cell, and ``fix``, when it is not one."""
    if kind == "str":
        return text
    if kind == "bool":
        if text in ("0", "1", "True", "False", "true", "false"):
            return text in ("1", "True", "true")
    elif kind == "int":
        try:
            return int(text)
        except ValueError:
            pass
    else:
        try:
            return float(text) if text != "" else math.nan
        except ValueError:
            pass
    raise MiniCNNError(f"{where}: column {column!r} holds {text!r}, not a {kind}; the file is damaged, {fix}")


def read_table(path, row_type, fix: str) -> list:
    """The rows of a CSV that ``write_table`` wrote for the dataclass ``row_type``, each cell typed as its
    field (``parse_cell``; ``fix`` tells the user how to rewrite a damaged file). Columns the dataclass
    lacks are ignored."""
    import csv

    types = {f.name: f.type for f in dataclasses.fields(row_type)}
    with open(path, newline="", encoding="utf-8") as fh:
        return [row_type(**{k: parse_cell(types[k], k, v, f"{path}, line {number}", fix)
                            for k, v in row.items() if k in types})
                for number, row in enumerate(csv.DictReader(fh), start=2)]


def load_results(path) -> list[ResultRow]:
    """Rows of a results CSV (or of a directory holding results.csv)."""
    import csv

    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise MiniCNNError(f"no results at {path}; pass the --out directory of `minicnn prune` or `minicnn sweep`")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error):
        raise MiniCNNError(f"{path} is not a minicnn results table (not a text CSV file); pass the results.csv "
                           f"written by `minicnn prune` or `minicnn sweep`") from None
    if not lines or "amount" not in lines[0]:
        raise MiniCNNError(f"{path} is not a minicnn results table (no 'amount' column); pass the results.csv "
                           f"written by `minicnn prune` or `minicnn sweep`")
    header = lines[0]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MiniCNNError(f"{path} lacks the column(s) {', '.join(missing)}; pass a results.csv written by "
                           f"`minicnn prune` or `minicnn sweep`")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise MiniCNNError(f"{path}, line {number}: {len(cells)} cells where the header has {len(header)} "
                               f"(the file was cut short); rerun with the same --out to rewrite it")
        raw = dict(zip(header, cells))
        rows.append(ResultRow(**{c: parse_cell(_TYPES[c], c, raw[c], f"{path}, line {number}")
                                 for c in COLUMNS if c in raw}))
    return rows


def merge_tables(tables) -> list[ResultRow]:
    """Several tables' rows as one table, in order. A row whose run and amount (schedule, method, scope, lr,
    criterion, seed, amount) an earlier row already holds is left out: the same configuration run in two
    study folders (the extended study repeats the paper's magnitude runs at lr 0.01) counts once."""
    seen, merged = set(), []
    for rows in tables:
        for row in rows:
            key = (*row.config_key(), row.criterion, row.seed, row.amount)
            if key not in seen:
                seen.add(key)
                merged.append(row)
    return merged
