"""A batch of stored uint8 images, normalised by whoever reads it: the rows of a dataset and a table.

Before a training step the batch's images are gathered (``images[rows]``) and scaled to float32; for the
paper's model, whose step takes about 3 ms on two cores, that took 0.8 ms more (a 1.5 MB gather and two
passes over the 6.3 MB of floats, on one thread). Every normalisation (io.data.normalize) maps a pixel
value of channel c to one float, so a table (C, 256) holds all of it, and the whole-model op
(fast/convnet.py) reads the uint8 pixels by rows and looks them up as it unpacks them: no gathered copy,
no float batch. Any other op gets ``floats()``, the very values normalize gives.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class PixelBatch(NamedTuple):
    """Images ``images[rows]``, pixel value v of channel c standing for ``table[c, v]``.

    images: (M, C, H, W) uint8, C-contiguous (a dataset split); rows: (N,) int64 in [0, M);
    table: (C, 256) float32 or float64; convert: None, or the function of a uint8 batch that the table
    was made from (io.data.Normalizer): floats() then computes the values with it (NumPy's lookups
    in the table took 5x as long as its arithmetic, 6 against 0.8 ms for 512 images); offsets:
    affine_offsets(table), (C,) or (0,).
    """

    images: np.ndarray
    rows: np.ndarray
    table: np.ndarray
    convert: Callable[[np.ndarray], np.ndarray] | None = None
    offsets: np.ndarray | None = None

    @classmethod
    def of(cls, images: np.ndarray, rows, table: np.ndarray, convert=None, offsets=None) -> PixelBatch:
        """The batch images[rows] through ``table``, checked: ValueError for any other layout. offsets:
        affine_offsets(table) if the caller has it (a Normalizer, once), else computed here."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim != 4 or not images.flags.c_contiguous:
            raise ValueError(f"a PixelBatch needs C-contiguous (M, C, H, W) uint8 images, got {images.dtype} "
                             f"{images.shape}")
        if table.shape != (images.shape[1], 256) or table.dtype not in (np.float32, np.float64):
            raise ValueError(f"a PixelBatch needs a float ({images.shape[1]}, 256) table, got {table.dtype} "
                             f"{table.shape}")
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(images))):
            raise ValueError(f"a PixelBatch's rows must be indices in [0, {len(images)})")
        table = np.ascontiguousarray(table)
        return cls(images, rows, table, convert, affine_offsets(table) if offsets is None else offsets)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) of the float batch it stands for."""
        return (self.rows.size,) + self.images.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.table.dtype

    def floats(self) -> np.ndarray:
        """(N, C, H, W) of table's dtype: out[n, c, y, x] = table[c, images[rows[n], c, y, x]]."""
        gathered = self.images[self.rows]
        if self.convert is not None:
            return self.convert(gathered)
        out = np.empty(gathered.shape, dtype=self.table.dtype)
        for c in range(gathered.shape[1]):
            np.take(self.table[c], gathered[:, c], out=out[:, c])
        return out


def affine_offsets(table: np.ndarray) -> np.ndarray:
    """(C,): offsets b such that table[c, v] is v / 255 - b[c] for every channel c and value v, the
    division and the subtraction each rounded once in the table's dtype, bit for bit (io.data's 'unit'
    and 'center' tables: b = 0 and 0.5); else (0,). The paper model's op computes such a table's values
    as it unpacks an image instead of looking them up (fast/images.py: 2.4x faster)."""
    dtype = table.dtype.type
    offsets = -table[:, 0]  # value 0: 0 / 255 - b
    computed = (np.arange(256, dtype=table.dtype) / dtype(255.0))[None, :] - offsets[:, None]
    bits = np.dtype(f"u{table.dtype.itemsize}")
    if np.array_equal(computed.view(bits), np.ascontiguousarray(table).view(bits)):
        return np.ascontiguousarray(offsets)
    return np.zeros(0, dtype=table.dtype)


def as_floats(x) -> np.ndarray:
    """x itself, or a PixelBatch's floats(): for every op that takes only a float batch."""
    return x.floats() if isinstance(x, PixelBatch) else x
