"""Read-only memory-mapped storage shared by every artefact: arrays and string tables.

Worker processes that map the same files share one copy through the page cache, and loading
costs no parsing: the index is usable as soon as the files are mapped.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def load_array(path: Path) -> npt.NDArray[Any]:
    """Memory-map an .npy file read-only, as a plain ndarray.

    ``np.memmap`` implements indexing in Python; on the hot path that costs more than the
    search itself, so the mapping is viewed as a base ndarray (which keeps the map alive).
    """
    return np.load(path, mmap_mode="r").view(np.ndarray)


class StringTable:
    """UTF-8 strings in one memory-mapped blob with an offsets array."""

    def __init__(self, blob: Path, offsets: Path) -> None:
        with open(blob, "rb") as fh:
            size = fh.seek(0, 2)
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self._off = load_array(offsets)

    def __len__(self) -> int:
        return int(self._off.shape[0]) - 1

    def __getitem__(self, i: int) -> str:
        a, b = self._off[i : i + 2].tolist()
        return self._mm[a:b].decode("utf-8")

    def many(self, ids: list[int]) -> list[str]:
        """Several strings with two vectorised offset lookups instead of 2 per string."""
        idx = np.array(ids, dtype=np.int64)
        starts = self._off[idx].tolist()
        ends = self._off[idx + 1].tolist()
        mm = self._mm
        return [mm[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]

    @staticmethod
    def write(strings: list[str], blob: Path, offsets: Path) -> list[Path]:
        encoded = [s.encode("utf-8") for s in strings]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=off[1:])
        blob.write_bytes(b"".join(encoded))
        np.save(offsets, off)
        return [blob, offsets]
