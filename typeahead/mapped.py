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


def view(arr: npt.NDArray[Any]) -> memoryview:
    """A flat memoryview over an array's memory (same pages, no copy).

    Indexing a memoryview yields a Python number in tens of nanoseconds, several times faster
    than a numpy scalar access; the hot path reads single elements, so it uses these."""
    fmt = {"i8": "q", "i4": "i", "f4": "f", "f8": "d", "u8": "Q"}[arr.dtype.str[1:]]
    raw: Any = np.ascontiguousarray(arr)
    return memoryview(raw).cast("B").cast(fmt)  # type: ignore[call-overload]


class StringTable:
    """UTF-8 strings in one memory-mapped blob with an offsets array."""

    def __init__(self, blob: Path, offsets: Path) -> None:
        with open(blob, "rb") as fh:
            size = fh.seek(0, 2)
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self._off = view(load_array(offsets))

    def __len__(self) -> int:
        return len(self._off) - 1

    def check(self) -> None:
        """Raise ValueError unless the offsets are int64, start at 0, never decrease and end
        at the blob's size: a crafted table must fail at load, not on the keystroke that
        reads a bad slice."""
        off = np.frombuffer(self._off, dtype=np.int64) if self._off.format == "q" else None
        if off is None or len(off) < 1:
            raise ValueError("string offsets must be a non-empty int64 array")
        if off[0] != 0 or off[-1] != len(self._mm) or bool((np.diff(off) < 0).any()):
            raise ValueError("string offsets do not describe the blob")

    def __getitem__(self, i: int) -> str:
        return self._mm[self._off[i] : self._off[i + 1]].decode("utf-8")

    def many(self, ids: list[int]) -> list[str]:
        off, mm = self._off, self._mm
        return [mm[off[i] : off[i + 1]].decode("utf-8") for i in ids]

    @staticmethod
    def write(strings: list[str], blob: Path, offsets: Path) -> list[Path]:
        encoded = [s.encode("utf-8") for s in strings]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=off[1:])
        blob.write_bytes(b"".join(encoded))
        np.save(offsets, off)
        return [blob, offsets]
